"""CMA-ES phase: recovers BaikalCMA's coefficients from Baikal, pycma defaults, JSON state."""

from __future__ import annotations

import json

import numpy as np
import pytest

from orchestrator.search import Candidate, CMAConfig, CMAPhase, StateError
from orchestrator.search.cma_phase import default_popsize
from tests.bench.search_synthetic import X_GRID, Y_GRID, make_fitness
from worker.lossexpr import named_loss, parse
from worker.lossexpr.coefficients import kept_slots
from worker.lossexpr.numeric import evaluate

TARGET = named_loss("baikal_cma")
FIT = make_fitness(TARGET)


def base(text: str = "log(y) - x / y") -> Candidate:
    return Candidate("g3-7", parse(text), "crossover", 3)


def step(phase: CMAPhase, fitness=FIT) -> list[Candidate]:
    batch = phase.ask()
    for c in reversed(batch):  # any order inside a batch
        _, it, j = c.id.split("-")
        phase.tell(int(it), int(j), fitness(c.tree))
    return batch


def test_recovers_baikal_cma_from_baikal_within_1e_3():
    phase = CMAPhase(0, Candidate("g0-0", named_loss("baikal"), "init", 0), CMAConfig(iterations=300), seed=7)
    assert phase.n == 3 and phase.popsize == 7  # 4 + floor(3 ln 3)
    assert np.array_equal(phase.es.mean, [1.0, 1.0, 1.0]) and phase.es.sigma0 == 1.5
    while not phase.done:
        step(phase)
    best, fitness = phase.best
    err = float(np.max(np.abs(evaluate(best.tree, X_GRID, Y_GRID) - evaluate(TARGET, X_GRID, Y_GRID))))
    print(f"iterations {phase.iteration}, stop {phase.stop_reason}, coefficients {best.coefficients}, max error {err:.3g}")
    assert err < 1e-3
    assert best.origin == "cma" and best.phase == "cma" and best.parents == ("g0-0",)
    assert best.tree.without_coefficients() == named_loss("baikal")


def test_options_are_numbers_and_defaults_are_pycmas():
    phase = CMAPhase(1, base(), CMAConfig(options={"tolx": 1e-9}), seed=3)
    assert all(isinstance(v, (int, float)) for v in phase.options.values())
    assert phase.options["popsize"] == default_popsize(3) == 7
    assert phase.es.opts["CMA_active"] in (True, "True")  # untouched pycma defaults
    assert default_popsize(10) == 10 and default_popsize(1) == 4
    batch = phase.ask()
    assert [c.id for c in batch] == [f"c1-0-{j}" for j in range(7)]
    assert phase.ask() == []  # one batch at a time
    assert len(kept_slots(batch[0].tree)) == len(batch[0].coefficients) == 3


def test_state_round_trip_resumes_exactly_mid_batch():
    cfg = CMAConfig(iterations=20)
    a = CMAPhase(0, base(), cfg, seed=11)
    for _ in range(4):
        step(a)
    batch = a.ask()
    a.tell(4, 2, FIT(batch[2].tree))
    data = json.loads(json.dumps(a.to_json()))
    assert data["glo_cma_state"] == 1
    b = CMAPhase.from_json(data)
    assert b.outstanding() == a.outstanding() and len(b.outstanding()) == 6
    for p in (a, b):
        for c in p.outstanding():
            p.tell(4, int(c.id.split("-")[2]), FIT(c.tree))
    while not a.done:
        assert step(a) == step(b)
    assert b.done and a.to_json() == b.to_json()


def test_strategies_do_not_share_random_streams():
    """Interleaving two strategies (and other numpy use) does not change either one's solutions."""
    alone = CMAPhase(0, base(), CMAConfig(iterations=5), seed=5)
    solo = [c.tree for _ in range(5) for c in step(alone)]
    x = CMAPhase(0, base(), CMAConfig(iterations=5), seed=5)
    y = CMAPhase(1, base("x * log(y)"), CMAConfig(iterations=5), seed=6)
    mixed = []
    for _ in range(5):
        np.random.seed(123)
        step(y)
        mixed.extend(c.tree for c in step(x))
    assert mixed == solo


def test_tell_errors_and_bad_state():
    phase = CMAPhase(0, base(), CMAConfig(iterations=3), seed=1)
    phase.ask()
    with pytest.raises(KeyError):
        phase.tell(0, 99, 0.5)
    phase.tell(0, 0, 0.5)
    with pytest.raises(ValueError):
        phase.tell(0, 0, 0.5)
    data = phase.to_json()
    with pytest.raises(StateError):
        CMAPhase.from_json({**data, "glo_cma_state": 99})
    data["history"] = [{"solutions": [[9.0, 9.0, 9.0]] * 7, "fitness": [0.0] * 7}]
    with pytest.raises(StateError, match="diverged"):
        CMAPhase.from_json(data)
