"""Export -> JSON -> import of a mid-run search continues exactly like the uninterrupted search."""

from __future__ import annotations

import json
import random

import pytest

from orchestrator.search import CMAConfig, GAConfig, Search, SearchConfig, StateError
from worker.lossexpr import Node, to_infix

CFG = SearchConfig(seed=21, ga=GAConfig(population_size=30, generations=4, elites=4),
                   cma=CMAConfig(top_k=2, iterations=4))
#: Each offspring rule with cuts that land in every phase (see test_cuts_cover_discovery_and_cma):
#: "valid" redraws untrainable and repeated children, so it trains more and reaches CMA-ES later.
CONFIGS = {
    "valid": (CFG, [0, 1, 17, 45, 70, 95, 120, 150]),
    "paper": (SearchConfig(seed=21, ga=GAConfig(population_size=30, generations=4, elites=4, offspring="paper"),
                           cma=CMAConfig(top_k=2, iterations=4)), [0, 1, 17, 45, 70, 95]),
}


def fitness(tree: Node) -> float:
    return (sum(map(ord, to_infix(tree))) % 991) / 991.0


class Driver:
    """Asks, keeps results in flight and tells them in a seeded random order (async-like)."""

    def __init__(self, search: Search, seed: int) -> None:
        self.search = search
        self.rng = random.Random(seed)
        self.inflight: list = []
        self.log: list[tuple[str, str]] = []

    def step(self) -> None:
        new = self.search.ask()
        self.log.extend((c.id, to_infix(c.tree)) for c in new)
        self.inflight.extend(new)
        if self.inflight:
            c = self.inflight.pop(self.rng.randrange(len(self.inflight)))
            self.search.tell(c.id, fitness(c.tree))

    def rng_state(self):
        return self.rng.getstate()


def clone(search: Search, **kw) -> Search:
    return Search.import_state(json.loads(json.dumps(search.export_state())), key_fn=to_infix, **kw)


@pytest.mark.parametrize(("mode", "cut"), [(m, c) for m, (_, cuts) in CONFIGS.items() for c in cuts])
def test_resume_anywhere_gives_the_uninterrupted_run(mode: str, cut: int):
    cfg = CONFIGS[mode][0]
    ref = Driver(Search(cfg, key_fn=to_infix), seed=3)
    while not ref.search.finished:
        ref.step()
    full_log, final = ref.log, ref.search.export_state()

    run = Driver(Search(cfg, key_fn=to_infix), seed=3)
    for _ in range(cut):
        if run.search.finished:
            break
        run.step()
    phase_at_cut = run.search.phase
    run.search = clone(run.search)  # crash + restore: the in-flight list is the scheduler's (its DB)
    while not run.search.finished:
        run.step()
    assert run.log == full_log, phase_at_cut
    assert run.search.export_state() == final
    assert run.search.best() == ref.search.best()


@pytest.mark.parametrize("mode", CONFIGS)
def test_cuts_cover_discovery_and_cma(mode: str):
    cfg, cuts = CONFIGS[mode]
    d = Driver(Search(cfg, key_fn=to_infix), seed=3)
    phases = []
    while not d.search.finished:
        d.step()
        phases.append(d.search.phase)
    assert phases.index("cma") < cuts[-1] < len(phases)  # the last cut lands in the CMA-ES phase
    assert phases[cuts[-3]] == "discovery"


def test_reissue_outstanding_after_a_crash_that_lost_the_jobs():
    s = Search(SearchConfig(seed=21, ga=GAConfig(population_size=80)), key_fn=to_infix)
    batch = s.ask()
    assert len(batch) >= 3
    s.tell(batch[0].id, fitness(batch[0].tree))
    restored = clone(s, reissue_outstanding=True)
    again = restored.ask()
    assert [c.id for c in again] == [c.id for c in batch[1:]]
    assert restored.ask() == []
    plain = clone(s)
    assert plain.ask() == [] and plain.outstanding() == batch[1:]


def test_state_is_plain_json_and_versioned():
    s = Search(CFG, key_fn=to_infix)
    s.ask()
    data = s.export_state()
    assert json.loads(json.dumps(data)) == data
    assert data["glo_search_state"] == 1 and data["config"] == CFG.to_dict()
    with pytest.raises(StateError):
        Search.import_state({**data, "glo_search_state": 2})


def test_reissue_outstanding_in_the_cma_phase():
    s = Search(CFG, key_fn=to_infix)
    while s.phase == "discovery":
        for c in s.ask():
            s.tell(c.id, fitness(c.tree))
    batch = s.ask()
    assert batch and all(c.phase == "cma" for c in batch)
    s.tell(batch[0].id, 0.5)
    restored = clone(s, reissue_outstanding=True)
    assert [c.id for c in restored.ask()] == [c.id for c in batch[1:]]
    assert restored.ask() == []
    for c in batch[1:]:
        restored.tell(c.id, fitness(c.tree))
        s.tell(c.id, fitness(c.tree))
    assert restored.ask() == s.ask()
