"""`glo evaluate` as ask/tell: a fixed grid of full trainings, driven by the same scheduler as a search.

An evaluation trains every loss at every training-set fraction with every seed of the run's seed list
(the same seeds for every loss, so repeats are paired), measuring test accuracy, at the run's [task]
learning rate.  Each cell's training settings differ from the run's [task] only in what `task_overrides`
says (so the cache keys each cell by loss, task, budget, fraction, seed and rate, and asking again trains
nothing new).

With a learning-rate grid (`learning_rates`), every loss also gets a rate of its own, chosen fairly:

1. *selection*: each loss trains at every rate of the grid with the `selection_seeds` -- seeds kept apart
   from the test seeds -- measuring validation accuracy only (test accuracy is not even computed);
2. the rate with the highest mean validation accuracy is the loss's chosen rate (`choose_rate`);
3. *test*: the loss trains at its chosen rate with the test seeds (unless that rate is the task's own,
   whose test cells exist already), and the report compares losses at their chosen rates, paired by seed.

So the test set never picks a rate, and "beats ce" can be asked against ce at its best rate.  Why
separate selection seeds rather than choosing on the test runs' own validation accuracy: a lucky
training seed raises validation and test accuracy together, so choosing on the same runs would
favour whichever loss's grid holds the luckiest run; fresh seeds make the test figure an unbiased one.

Pure and deterministic like the search: no I/O, the state is plain JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.search.candidate import AlreadyToldError, Candidate, UnknownCandidateError
from worker.lossexpr import Node

PHASE = "evaluate"
#: The selection seeds when a grid is given without any: far from the test seeds (0..K-1) and from the
#: search's own training seeds (task.seed and the next few), so that no training is shared by accident.
DEFAULT_SELECTION_SEEDS = (1000, 1001)
#: Two rates closer than this (relative) are the same rate (a grid value and the task's rate written apart).
SAME_RATE = 1e-9


@dataclass(frozen=True)
class EvaluateConfig:
    """What to train: labelled losses (tree JSON), the test seeds (paired across losses), the fractions, and
    optionally a learning-rate grid with the seeds that choose each loss's rate on it."""

    losses: tuple[tuple[str, dict[str, Any]], ...]
    seeds: tuple[int, ...]
    fractions: tuple[float, ...] = (1.0,)
    curve_every: int | None = None
    learning_rates: tuple[float, ...] = ()  # ascending; () = only the task's rate
    selection_seeds: tuple[int, ...] = ()  # with a grid: whose validation accuracy picks the rate

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"losses": [{"label": label, "tree": tree} for label, tree in self.losses],
                               "seeds": list(self.seeds), "fractions": list(self.fractions),
                               "curve_every": self.curve_every}
        if self.learning_rates:  # only with a grid, so that every config stored before grids existed reads the same
            out["learning_rates"] = list(self.learning_rates)
            out["selection_seeds"] = list(self.selection_seeds)
        return out

    @staticmethod
    def from_dict(data: dict[str, Any]) -> EvaluateConfig:
        return EvaluateConfig(tuple((d["label"], d["tree"]) for d in data["losses"]), tuple(data["seeds"]),
                              tuple(float(f) for f in data.get("fractions", [1.0])), data.get("curve_every"),
                              tuple(float(r) for r in data.get("learning_rates") or ()),
                              tuple(int(s) for s in data.get("selection_seeds") or ()))


def same_rate(a: float, b: float) -> bool:
    return abs(a - b) <= SAME_RATE * max(abs(a), abs(b))


@dataclass(frozen=True)
class RateChoice:
    """A loss's chosen rate on the grid: its index, the rate, whether it lies at the grid's edge (the best
    rate may lie beyond: extend the grid), and the mean validation accuracy at each rate (None: not all
    selection trainings told yet)."""

    index: int
    rate: float
    edge: bool
    means: tuple[float | None, ...]


def choose_rate(grid: Sequence[float], validation: Mapping[int, Sequence[float]]) -> RateChoice | None:
    """The selection rule: the grid rate whose selection trainings have the highest mean validation
    accuracy (a training that went non-finite or collapsed counts 0, as in the search); a tie goes to the
    smaller rate.  `validation[k]`: the selection seeds' validation accuracies at grid[k].  None while any
    rate has no result yet.  The test set plays no part: it is not measured in a selection training."""
    means: list[float | None] = []
    for k in range(len(grid)):
        values = [float(v) for v in validation.get(k, ())]
        means.append(math.fsum(values) / len(values) if values else None)
    if not grid or any(m is None for m in means):
        return None
    best = max(range(len(grid)), key=lambda k: (means[k], -k))
    edge = len(grid) > 1 and best in (0, len(grid) - 1)
    return RateChoice(best, float(grid[best]), edge, tuple(means))


def cell_id(loss_index: int, fraction_index: int, seed: int, rate_index: int | None = None) -> str:
    """`e{loss}-f{fraction}-s{seed}` at the task's rate; `...-l{k}` at the grid's k-th rate."""
    base = f"e{loss_index}-f{fraction_index}-s{seed}"
    return base if rate_index is None else f"{base}-l{rate_index}"


def parse_cell_id(cid: str) -> tuple[int, int, int, int | None]:
    """(loss index, fraction index, seed, rate index or None) of a cell id; ValueError for anything else."""
    parts = cid.split("-")
    if len(parts) not in (3, 4) or [p[:1] for p in parts] != ["e", "f", "s", "l"][:len(parts)]:
        raise ValueError(f"not an evaluation cell id: {cid!r}")
    numbers = [int(p[1:]) for p in parts]
    return numbers[0], numbers[1], numbers[2], numbers[3] if len(parts) == 4 else None


class EvaluationPlan:
    """The grid loss x fraction x seed (and, with a rate grid, the selection trainings and the test
    trainings at each loss's chosen rate), finished when every cell is told."""

    def __init__(self, config: EvaluateConfig, key_fn: Any = None, base_rate: float | None = None) -> None:
        self.config = config
        self.base_rate = base_rate  # the task's learning rate: a chosen rate equal to it reuses its test cells
        self._asked: set[str] = set()
        self._told: dict[str, float] = {}
        self._cells: dict[str, Candidate] = {}
        self._nodes = [Node.from_json(tree) for _label, tree in config.losses]
        for i in range(len(config.losses)):
            for j in range(len(config.fractions)):
                for seed in config.seeds:
                    self._add(cell_id(i, j, seed))
                for k in range(len(config.learning_rates)):
                    for seed in config.selection_seeds:
                        self._add(cell_id(i, j, seed, k))

    def _add(self, cid: str) -> None:
        i = parse_cell_id(cid)[0]
        label = self.config.losses[i][0]
        self._cells.setdefault(cid, Candidate(cid, self._nodes[i], origin=f"evaluate:{label}", generation=0,
                                              phase=PHASE))

    # -- the rate choice --------------------------------------------------------------------------------
    def choice(self, loss_index: int, fraction_index: int) -> RateChoice | None:
        """The chosen rate of one loss at one fraction, once its selection trainings are all told."""
        grid = self.config.learning_rates
        validation = {k: [self._told[c] for s in self.config.selection_seeds
                          if (c := cell_id(loss_index, fraction_index, s, k)) in self._told]
                      for k in range(len(grid))}
        if any(len(v) < len(self.config.selection_seeds) for v in validation.values()):
            return None
        return choose_rate(grid, validation)

    def _chosen_cells(self) -> list[str]:
        """The test cells at each chosen rate that differs from the task's (added as choices are made)."""
        out = []
        for i in range(len(self.config.losses)):
            for j in range(len(self.config.fractions)):
                ch = self.choice(i, j)
                if ch is None or (self.base_rate is not None and same_rate(ch.rate, self.base_rate)):
                    continue
                out += [cell_id(i, j, seed, ch.index) for seed in self.config.seeds]
        return out

    # -- ask / tell -------------------------------------------------------------------------------------
    def ask(self) -> list[Candidate]:
        for cid in self._chosen_cells():
            self._add(cid)
        new = [c for cid, c in self._cells.items() if cid not in self._asked]
        self._asked.update(c.id for c in new)
        return new

    def tell(self, candidate_id: str, fitness: float) -> None:
        if candidate_id not in self._asked:
            raise UnknownCandidateError(candidate_id)
        if candidate_id in self._told:
            raise AlreadyToldError(f"candidate {candidate_id} was told already")
        self._told[candidate_id] = float(fitness)

    @property
    def finished(self) -> bool:
        return (bool(self._asked) and len(self._told) == len(self._cells)
                and all(cid in self._cells for cid in self._chosen_cells()))

    def task_overrides(self, candidate_id: str) -> dict[str, Any]:
        """The cell's training settings that differ from the run's [task]: its seed and fraction, and on the
        grid its rate; a selection training measures validation accuracy only (no test set, no curve)."""
        _i, j, seed, k = parse_cell_id(candidate_id)
        fraction = self.config.fractions[j]
        out: dict[str, Any] = {"seed": seed, "train_fraction": None if fraction >= 1.0 else fraction}
        if k is not None:
            out["learning_rate"] = self.config.learning_rates[k]
            if seed in self.config.selection_seeds:
                out |= {"test_accuracy": False, "curve_interval": None}
        return out

    # -- what the scheduler reads -------------------------------------------------------------------------
    @property
    def phase(self) -> str:
        return "done" if self.finished else PHASE

    @property
    def generation(self) -> int:
        return 0

    def outstanding(self) -> list[Candidate]:
        return [c for cid, c in self._cells.items() if cid in self._asked and cid not in self._told]

    def resolved_without_training(self, since: int = 0) -> list[Any]:
        return []  # every loss of an evaluation is trained, valid or not: the user asked for it

    def best(self) -> tuple[Candidate, float] | None:
        if not self._told:
            return None
        order = list(self._cells)
        cid = max(self._told, key=lambda c: (self._told[c], -order.index(c)))
        return self._cells[cid], self._told[cid]

    def top_trees(self) -> list[tuple[Candidate, float]]:
        return sorted(((self._cells[c], f) for c, f in self._told.items()), key=lambda cf: -cf[1])

    def population(self) -> list[tuple[Candidate, float | None]]:
        return [(c, self._told.get(cid)) for cid, c in self._cells.items()]

    def history(self) -> list[dict[str, Any]]:
        return []

    def stats(self) -> dict[str, Any]:
        return {"handed_out": len(self._asked), "told": len(self._told), "cells": len(self._cells)}

    # -- state --------------------------------------------------------------------------------------------
    def export_state(self) -> dict[str, Any]:
        return {"kind": "evaluation", "config": self.config.to_dict(), "base_rate": self.base_rate,
                "asked": sorted(self._asked, key=list(self._cells).index), "told": dict(self._told)}

    @staticmethod
    def import_state(data: dict[str, Any], key_fn: Any = None, base_rate: float | None = None) -> EvaluationPlan:
        """The plan a state describes.  A state written before rate grids held `asked` as one flag for the
        whole grid (every cell of which was handed out at once)."""
        stored_rate = data.get("base_rate")
        plan = EvaluationPlan(EvaluateConfig.from_dict(data["config"]),
                              base_rate=base_rate if stored_rate is None else float(stored_rate))
        plan._told = {k: float(v) for k, v in data["told"].items()}
        asked = data["asked"]
        if isinstance(asked, bool):
            plan._asked = set(plan._cells) if asked else set()
        else:
            for cid in asked:
                plan._add(cid)
            plan._asked = set(asked)
        return plan
