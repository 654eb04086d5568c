"""`glo evaluate` as ask/tell: a fixed grid of full trainings, driven by the same scheduler as a search.

An evaluation trains every loss at every training-set fraction with every seed of the run's seed list
(the same seeds for every loss, so repeats are paired), measuring test accuracy.  Nothing here breeds:
the plan hands out the whole grid at once and is finished once every cell has been told.  Each cell's
training settings differ from the run's [task] only in `seed` and `train_fraction`, which the
scheduler asks for with `task_overrides` (so the cache keys each cell by loss, task, budget, fraction
and seed, and asking again trains nothing new).

Pure and deterministic like the search: no I/O, the state is plain JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.search.candidate import Candidate, UnknownCandidateError
from worker.lossexpr import Node

PHASE = "evaluate"


@dataclass(frozen=True)
class EvaluateConfig:
    """What to train: labelled losses (tree JSON), the seeds (paired across losses), the fractions."""

    losses: tuple[tuple[str, dict[str, Any]], ...]
    seeds: tuple[int, ...]
    fractions: tuple[float, ...] = (1.0,)
    curve_every: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"losses": [{"label": label, "tree": tree} for label, tree in self.losses],
                "seeds": list(self.seeds), "fractions": list(self.fractions), "curve_every": self.curve_every}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> EvaluateConfig:
        return EvaluateConfig(tuple((d["label"], d["tree"]) for d in data["losses"]), tuple(data["seeds"]),
                              tuple(float(f) for f in data.get("fractions", [1.0])), data.get("curve_every"))


def cell_id(loss_index: int, fraction_index: int, seed: int) -> str:
    return f"e{loss_index}-f{fraction_index}-s{seed}"


def parse_cell_id(cid: str) -> tuple[int, int, int]:
    """(loss index, fraction index, seed) of a cell id; ValueError for anything else."""
    parts = cid.split("-")
    if len(parts) != 3 or parts[0][:1] != "e" or parts[1][:1] != "f" or parts[2][:1] != "s":
        raise ValueError(f"not an evaluation cell id: {cid!r}")
    return int(parts[0][1:]), int(parts[1][1:]), int(parts[2][1:])


class EvaluationPlan:
    """The grid loss x fraction x seed, handed out once, finished when every cell is told."""

    def __init__(self, config: EvaluateConfig, key_fn: Any = None) -> None:
        self.config = config
        self._asked = False
        self._told: dict[str, float] = {}
        self._cells: dict[str, Candidate] = {}
        for i, (label, tree) in enumerate(config.losses):
            node = Node.from_json(tree)
            for j, _fraction in enumerate(config.fractions):
                for seed in config.seeds:
                    cid = cell_id(i, j, seed)
                    self._cells[cid] = Candidate(cid, node, origin=f"evaluate:{label}", generation=0, phase=PHASE)

    # -- ask / tell -------------------------------------------------------------------------------------
    def ask(self) -> list[Candidate]:
        if self._asked:
            return []
        self._asked = True
        return list(self._cells.values())

    def tell(self, candidate_id: str, fitness: float) -> None:
        if candidate_id not in self._cells:
            raise UnknownCandidateError(candidate_id)
        self._told[candidate_id] = float(fitness)

    @property
    def finished(self) -> bool:
        return self._asked and len(self._told) == len(self._cells)

    def task_overrides(self, candidate_id: str) -> dict[str, Any]:
        """The cell's training settings that differ from the run's [task]: its seed and fraction."""
        _i, j, seed = parse_cell_id(candidate_id)
        fraction = self.config.fractions[j]
        return {"seed": seed, "train_fraction": None if fraction >= 1.0 else fraction}

    # -- what the scheduler reads -------------------------------------------------------------------------
    @property
    def phase(self) -> str:
        return "done" if self.finished else PHASE

    @property
    def generation(self) -> int:
        return 0

    def outstanding(self) -> list[Candidate]:
        return [c for cid, c in self._cells.items() if cid not in self._told] if self._asked else []

    def resolved_without_training(self, since: int = 0) -> list[Any]:
        return []  # every loss of an evaluation is trained, valid or not: the user asked for it

    def best(self) -> tuple[Candidate, float] | None:
        if not self._told:
            return None
        cid = max(self._told, key=lambda c: (self._told[c], -list(self._cells).index(c)))
        return self._cells[cid], self._told[cid]

    def top_trees(self) -> list[tuple[Candidate, float]]:
        return sorted(((self._cells[c], f) for c, f in self._told.items()), key=lambda cf: -cf[1])

    def population(self) -> list[tuple[Candidate, float | None]]:
        return [(c, self._told.get(cid)) for cid, c in self._cells.items()]

    def history(self) -> list[dict[str, Any]]:
        return []

    def stats(self) -> dict[str, Any]:
        return {"handed_out": len(self._cells) if self._asked else 0, "told": len(self._told),
                "cells": len(self._cells)}

    # -- state --------------------------------------------------------------------------------------------
    def export_state(self) -> dict[str, Any]:
        return {"kind": "evaluation", "config": self.config.to_dict(), "asked": self._asked, "told": dict(self._told)}

    @staticmethod
    def import_state(data: dict[str, Any], key_fn: Any = None) -> EvaluationPlan:
        plan = EvaluationPlan(EvaluateConfig.from_dict(data["config"]))
        plan._asked = bool(data["asked"])
        plan._told = {k: float(v) for k, v in data["told"].items()}
        return plan
