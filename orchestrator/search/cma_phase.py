"""CMA-ES on one tree's pruned coefficient vector, as ask/tell with a JSON state (never pickle).

pycma's `CMAEvolutionStrategy` is not serializable as plain data, but it is deterministic given
its seed and the values it is told.  So the state we store is the seed, the options and the
history of every iteration (asked solutions, told fitnesses), and `from_json` rebuilds the
strategy by replaying it; a batch asked but not fully told is asked again and comes out
identical.  Format: {"glo_cma_state": 1, ...} (see `to_json`).

pycma draws from numpy's *global* RNG.  Several strategies run side by side and results arrive
in any order, so each strategy keeps its own copy of that RNG state and swaps it in around every
pycma call (`_isolated_rng`): its stream never depends on how the calls interleave.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import cma
import numpy as np

from orchestrator.search.candidate import Candidate
from orchestrator.search.config import CMAConfig
from worker.lossexpr.coefficients import apply_pruned, kept_slots
from worker.lossexpr.tree import Node

STATE_VERSION = 1


class StateError(ValueError):
    """A stored state cannot be restored (wrong version, or a replay that diverges)."""


def default_popsize(n: int) -> int:
    """pycma's default population 4 + floor(3 ln N)."""
    return 4 + int(math.floor(3 * math.log(n)))


class CMAPhase:
    """CMA-ES over the pruned coefficients of `base.tree`, started at x0 = (cfg.x0, ...).

    Ask hands out one full batch of lambda candidates per iteration, ids f"c{index}-{it}-{j}";
    the strategy is told (minimizing -fitness) once the whole batch has results.  Done after
    `cfg.iterations` iterations or when pycma's own stop criteria fire.
    """

    def __init__(self, index: int, base: Candidate, cfg: CMAConfig, seed: int, drop_scale: bool = False) -> None:
        """`drop_scale`: the run trains calibrated losses, so the overall scale slot is not tuned
        (`coefficients.kept_slots`); a plain flag, kept in the state, so the phase stays pure."""
        self.index = index
        self.drop_scale = bool(drop_scale)
        self.base = base
        self.cfg = cfg
        self.seed = int(seed)
        self.skeleton: Node = base.tree
        self.n = len(kept_slots(self.skeleton, self.drop_scale))
        self.popsize = cfg.popsize if cfg.popsize is not None else default_popsize(self.n)
        self.options: dict[str, Any] = {
            **{k: v for k, v in cfg.options},
            "seed": self.seed,
            "popsize": self.popsize,
            "maxiter": cfg.iterations,
            "verbose": -9,
            "verb_log": 0,
            "verb_disp": 0,
        }
        self.iteration = 0
        self.history: list[dict[str, list]] = []
        self.pending: list[list[float]] | None = None
        self.told: dict[int, float] = {}
        self.stop_reason: dict[str, Any] = {}
        self.best: tuple[Candidate, float] | None = None
        self.reissue = False  # hand the outstanding batch out again on the next ask (after a crash)
        saved = np.random.get_state()
        try:
            self.es = cma.CMAEvolutionStrategy([float(cfg.x0)] * self.n, float(cfg.sigma0), dict(self.options))
            self._rng_state = np.random.get_state()
        finally:
            np.random.set_state(saved)

    @contextmanager
    def _isolated_rng(self) -> Iterator[None]:
        saved = np.random.get_state()
        np.random.set_state(self._rng_state)
        try:
            yield
        finally:
            self._rng_state = np.random.get_state()
            np.random.set_state(saved)

    # -- ask/tell ------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.pending is None and (self.iteration >= self.cfg.iterations or bool(self.stop_reason))

    def candidate(self, j: int) -> Candidate:
        """The j-th candidate of the current batch."""
        assert self.pending is not None
        return Candidate(
            id=f"c{self.index}-{self.iteration}-{j}",
            tree=apply_pruned(self.skeleton, self.pending[j], self.drop_scale),
            origin="cma",
            generation=self.iteration,
            parents=(self.base.id,),
            phase="cma",
        )

    def ask(self) -> list[Candidate]:
        """A new batch when none is outstanding and the strategy is not done; else []."""
        if self.pending is not None and self.reissue:
            self.reissue = False
            return self.outstanding()
        if self.pending is not None or self.done:
            return []
        with self._isolated_rng():
            xs = self.es.ask()
        self.pending = [[float(v) for v in x] for x in xs]
        self.told = {}
        return [self.candidate(j) for j in range(len(self.pending))]

    def outstanding(self) -> list[Candidate]:
        """Candidates of the current batch still waiting for a result."""
        if self.pending is None:
            return []
        return [self.candidate(j) for j in range(len(self.pending)) if j not in self.told]

    def tell(self, iteration: int, j: int, fitness: float) -> Candidate:
        """Record one result; tells pycma when the batch is complete.  Returns the candidate."""
        cid = f"c{self.index}-{iteration}-{j}"
        if 0 <= iteration < self.iteration and 0 <= j < self.popsize:
            raise ValueError(f"candidate {cid} was already told")
        if self.pending is None or iteration != self.iteration or not 0 <= j < len(self.pending):
            raise KeyError(cid)
        if j in self.told:
            raise ValueError(f"candidate {cid} was already told")
        cand = self.candidate(j)
        self.told[j] = fitness
        if self.best is None or fitness > self.best[1]:
            self.best = (cand, fitness)
        if len(self.told) == len(self.pending):
            fits = [self.told[k] for k in range(len(self.pending))]
            self._tell_es(self.pending, fits)
            self.history.append({"solutions": self.pending, "fitness": fits})
            self.pending = None
            self.told = {}
        return cand

    def _tell_es(self, solutions: list[list[float]], fitness: list[float]) -> None:
        with self._isolated_rng():
            self.es.tell([np.array(x, dtype=float) for x in solutions], [-f for f in fitness])
            self.iteration += 1
            stop = self.es.stop()
        self.stop_reason = {str(k): v for k, v in dict(stop).items()} if stop else {}

    # -- state ---------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """Plain data; `from_json` replays `history` through a fresh, identically seeded pycma."""
        return {
            "glo_cma_state": STATE_VERSION,
            "index": self.index,
            "base": self.base.to_json(),
            "seed": self.seed,
            "config": {"sigma0": self.cfg.sigma0, "x0": self.cfg.x0, "popsize": self.cfg.popsize,
                       "iterations": self.cfg.iterations, "options": dict(self.cfg.options)},
            "history": self.history,
            "pending": self.pending,
            "told": {str(j): f for j, f in sorted(self.told.items())},
            "best": None if self.best is None else {"candidate": self.best[0].to_json(), "fitness": self.best[1]},
            **({"drop_scale": True} if self.drop_scale else {}),  # only when set: older states stay as they were
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> "CMAPhase":
        if data.get("glo_cma_state") != STATE_VERSION:
            raise StateError(f"unsupported CMA-ES state version {data.get('glo_cma_state')!r}")
        c = data["config"]
        cfg = CMAConfig(top_k=1, sigma0=c["sigma0"], x0=c["x0"], popsize=c["popsize"],
                        iterations=c["iterations"], options=c["options"])
        phase = CMAPhase(int(data["index"]), Candidate.from_json(data["base"]), cfg, int(data["seed"]),
                         drop_scale=bool(data.get("drop_scale", False)))
        for step in data["history"]:
            with phase._isolated_rng():
                xs = phase.es.ask()
            if [[float(v) for v in x] for x in xs] != step["solutions"]:
                raise StateError(f"CMA-ES replay of strategy {phase.index} diverged at iteration {phase.iteration}")
            phase._tell_es(step["solutions"], [float(f) for f in step["fitness"]])
            phase.history.append({"solutions": step["solutions"], "fitness": [float(f) for f in step["fitness"]]})
        if data["pending"] is not None:
            phase.ask()
            if phase.pending != data["pending"]:
                raise StateError(f"CMA-ES replay of strategy {phase.index}: pending batch differs")
            phase.told = {int(j): float(f) for j, f in data["told"].items()}
        if data.get("best") is not None:
            phase.best = (Candidate.from_json(data["best"]["candidate"]), float(data["best"]["fitness"]))
        return phase
