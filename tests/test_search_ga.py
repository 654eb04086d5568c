"""Search (discovery): elitism, resolution without training, async ask/tell, synthetic target."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from dataclasses import replace

import pytest

from orchestrator.errors import ConfigError
from orchestrator.search import (
    AlreadyToldError,
    CMAConfig,
    GAConfig,
    Search,
    SearchConfig,
    UnknownCandidateError,
)
from tests.bench.search_synthetic import make_fitness, run
from worker.lossexpr import Node, parse, to_infix
from worker.lossexpr.onehot import is_trainable


def small(seed: int = 1, pop: int = 24, gens: int = 4, top_k: int = 1, iters: int = 3,
          offspring: str = "valid") -> SearchConfig:
    return SearchConfig(seed=seed, ga=GAConfig(population_size=pop, generations=gens, elites=3, offspring=offspring),
                        cma=CMAConfig(top_k=top_k, iterations=iters))


def fit_fn(tree: Node) -> float:
    """A deterministic, tree-dependent fitness in [0, 1) (no hash(): that is salted per process)."""
    return (sum(map(ord, to_infix(tree))) % 997) / 997.0


def drive(search: Search, order_seed: int | None = None, fitness=fit_fn) -> list[tuple[str, str]]:
    """Run to the end; tells each batch in a shuffled order when `order_seed` is given."""
    seen = []
    rng = random.Random(order_seed)
    while not search.finished:
        batch = search.ask()
        assert batch, "nothing to ask but not finished"
        seen.extend((c.id, to_infix(c.tree)) for c in batch)
        if order_seed is not None:
            rng.shuffle(batch)
        for c in batch:
            search.tell(c.id, fitness(c.tree))
    return seen


def test_elites_pass_unchanged_with_their_fitness():
    s = Search(small(pop=30, gens=3), key_fn=to_infix)
    batch = s.ask()
    for c in batch:
        s.tell(c, fit_fn(c.tree))
    prev = {c.id: (c, f) for c, f in s.population()} if s.generation == 0 else None
    assert prev is None  # generation 0 was bred into generation 1 on the last tell
    gen1 = s.population()
    elites = [(c, f) for c, f in gen1 if c.origin == "elite"]
    assert len(elites) == 3
    assert [c.id for c, _ in elites] == ["g1-0", "g1-1", "g1-2"]
    resolved = {r.candidate.id: r for r in s.resolved_without_training()}
    gen0_fit = {r.candidate.id: r.fitness for r in resolved.values() if r.candidate.generation == 0}
    for c in batch:
        gen0_fit.setdefault(c.id, fit_fn(c.tree))
    ranked = sorted(gen0_fit, key=lambda i: (-gen0_fit[i], int(i.split("-")[1])))[:3]
    for (elite, f), parent_id in zip(elites, ranked):
        assert elite.parents == (parent_id,)
        assert f == gen0_fit[parent_id]
        assert resolved[elite.id].reason == "elite"
    gen0_trees = {c.id: c.tree for c in batch} | {r.candidate.id: r.candidate.tree for r in resolved.values()}
    for elite, _ in elites:
        assert elite.tree == gen0_trees[elite.parents[0]]


def test_invalid_and_duplicates_resolved_inside_and_every_child_well_formed():
    """The paper's offspring rule: every child is kept; invalid ones and repeats are resolved untrained."""
    s = Search(small(pop=40, gens=5, top_k=0, offspring="paper"), key_fn=to_infix)
    asked = drive(s)
    stats = s.stats()
    resolved = s.resolved_without_training()
    reasons = [r.reason for r in resolved]
    assert stats["invalid"] == reasons.count("invalid") > 0
    assert stats["duplicates"] == reasons.count("duplicate") > 0
    assert stats["elites"] == reasons.count("elite") == 3 * 4
    assert stats["handed_out"] == stats["told"] == len(asked)
    assert len(asked) + len(resolved) == 40 * 5
    for r in resolved:
        if r.reason == "invalid":
            assert r.fitness == 0.0 and not is_trainable(r.candidate.tree)
        Node.from_json(r.candidate.tree.to_json())
    by_gen: dict[str, set[str]] = {}
    for cid, text in asked:
        tree = parse(text)
        assert is_trainable(tree)
        g = cid.split("-")[0]
        assert text not in by_gen.setdefault(g, set()), "a canonical duplicate was handed out twice"
        by_gen[g].add(text)


def test_duplicate_waits_for_original_and_gets_its_fitness():
    cfg = small(pop=40, gens=2, top_k=0)
    cfg = SearchConfig(seed=cfg.seed, ga=replace(cfg.ga, init="paper"), cma=cfg.cma)  # keeps untrainable trees
    s = Search(cfg, key_fn=lambda t: "same")  # every valid tree is a duplicate
    batch = s.ask()
    assert len(batch) == 1
    assert s.resolved_without_training() and all(r.reason == "invalid" for r in s.resolved_without_training())
    s.tell(batch[0].id, 0.7)
    dups = [r for r in s.resolved_without_training() if r.reason == "duplicate" and r.candidate.generation == 0]
    assert dups and all(r.fitness == 0.7 and r.duplicate_of == batch[0].id for r in dups)
    assert s.generation == 1


def test_same_seed_same_results_any_order_gives_identical_candidates():
    a = drive(Search(small(seed=4), key_fn=to_infix), order_seed=None)
    b = drive(Search(small(seed=4), key_fn=to_infix), order_seed=1)
    c = drive(Search(small(seed=4), key_fn=to_infix), order_seed=2)
    assert a == b == c
    assert drive(Search(small(seed=5), key_fn=to_infix)) != a


def test_generation_waits_for_every_result():
    s = Search(small(pop=20, gens=3), key_fn=to_infix)
    batch = s.ask()
    for c in batch[:-1]:
        s.tell(c.id, 0.5)
    assert s.ask() == [] and s.generation == 0 and not s.finished
    assert s.outstanding() == [batch[-1]]
    s.tell(batch[-1].id, 0.0)  # a timed-out evaluation is told as failed
    assert s.generation == 1 and s.ask()


def test_tell_errors_and_nonfinite():
    s = Search(small(pop=60, gens=3), key_fn=to_infix)
    batch = s.ask()
    assert len(batch) >= 3
    with pytest.raises(UnknownCandidateError, match="nope"):
        s.tell("nope", 0.1)
    with pytest.raises(KeyError):
        s.tell("g5-1", 0.1)
    s.tell(batch[0].id, math.nan)
    s.tell(batch[1].id, math.inf)
    with pytest.raises(AlreadyToldError):
        s.tell(batch[0].id, 0.3)
    assert s.population()[[c.id for c, _ in s.population()].index(batch[0].id)][1] == 0.0
    assert s.stats()["nonfinite"] == 2
    for c in batch[2:]:
        s.tell(c.id, 0.2)
    with pytest.raises(AlreadyToldError):
        s.tell(batch[2].id, 0.3)  # its generation is complete


def test_full_run_reaches_cma_and_finishes_and_best():
    s = Search(small(pop=24, gens=3, top_k=2, iters=2), key_fn=to_infix)
    asked = drive(s)
    cma_ids = [cid for cid, _ in asked if cid.startswith("c")]
    assert {cid.split("-")[0] for cid in cma_ids} == {"c0", "c1"}
    best, f = s.best()
    assert f == max(fit_fn(parse(t)) for _, t in asked)
    assert s.phase == "done" and s.ask() == []


def test_cma_never_starts_from_a_tree_whose_fitness_is_zero():
    """Issue #18: a discovery that trained nothing useful (every tree told 0) ends without a CMA-ES phase;
    when one tree scores above 0, CMA-ES starts from that one only, not from the zero-fitness runners-up."""
    s = Search(small(pop=12, gens=2, top_k=2, iters=2), key_fn=to_infix)
    asked = drive(s, fitness=lambda tree: 0.0)
    assert asked and not [cid for cid, _ in asked if cid.startswith("c")]
    assert s.phase == "done" and s.ask() == []

    lucky = {}

    def one_scores(tree: Node) -> float:
        lucky.setdefault("infix", to_infix(tree) if tree.is_valid() else None)
        return 0.5 if to_infix(tree) == lucky["infix"] else 0.0

    s = Search(small(pop=12, gens=2, top_k=2, iters=2), key_fn=to_infix)
    asked = drive(s, fitness=one_scores)
    assert {cid.split("-")[0] for cid, _ in asked if cid.startswith("c")} == {"c0"}


def test_a_whole_search_never_imports_tensorflow():
    """Checked in a fresh interpreter: other tests in this process may have imported TensorFlow."""
    code = (
        "import sys\n"
        "from orchestrator.search import Search, SearchConfig, GAConfig, CMAConfig\n"
        "from worker.lossexpr import to_infix\n"
        "s = Search(SearchConfig(seed=3, ga=GAConfig(population_size=12, generations=2, elites=2),\n"
        "           cma=CMAConfig(top_k=1, iterations=2)), key_fn=to_infix)\n"
        "while not s.finished:\n"
        "    for c in s.ask():\n"
        "        s.tell(c.id, (len(to_infix(c.tree)) % 7) / 7)\n"
        "assert s.phase == 'done'\n"
        "assert 'tensorflow' not in sys.modules, 'the search imported tensorflow'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_default_config_is_the_papers():
    s = Search(SearchConfig(seed=0), key_fn=to_infix)
    batch = s.ask()
    assert len(s.population()) == 80
    assert all(c.id == f"g0-{i}" for i, (c, _) in enumerate(s.population()))
    assert all(c.tree.depth() <= 3 and c.origin == "init" for c in batch)


def test_synthetic_target_is_found():
    """Hidden target x * log(y) (cross-entropy's shape): found exactly on the grid by seed 2 in gen 2."""
    result = run("x * log(y)", seed=2, generations=6)
    assert result["hit_generation"] is not None and result["hit_generation"] <= 3
    assert result["best_fitness"] > 1 - 1e-12
    curve = result["curve"]
    assert curve == sorted(curve)  # elitism: the best never gets worse
    fitness = make_fitness(parse("x * log(y)"))
    assert fitness(parse(result["best_tree"])) > 1 - 1e-12


def test_synthetic_target_baikal_found_by_several_of_the_first_seeds():
    # Seeds 0..5, not picked: measured 3 of 6 hit Baikal within 25 generations (valid init; the
    # paper's init: 4 of 6), so this fails if the GA loses its ability to assemble the tree.
    hits = [run("log(y) - x / y", seed=s, generations=25)["hit_generation"] for s in range(6)]
    assert sum(h is not None for h in hits) >= 2, hits


def test_best_on_a_tie_does_not_depend_on_tell_order():
    bests = set()
    for order_seed in (1, 2, 3):
        s = Search(small(pop=40, gens=2, iters=1), key_fn=to_infix)
        assert len(s.ask()) >= 3  # several trained candidates tie on 0.5
        s = Search(small(pop=40, gens=2, iters=1), key_fn=to_infix)
        drive(s, order_seed=order_seed, fitness=lambda tree: 0.5)
        best, f = s.best()
        assert f == 0.5
        bests.add(best.id)
    assert len(bests) == 1 and bests.pop().startswith("g0-")


def test_valid_offspring_are_trainable_and_new_to_the_run():
    """ga.offspring = "valid" (the default): no slot goes to an untrainable tree or to a repeat."""
    s = Search(small(pop=40, gens=5, top_k=0), key_fn=to_infix)
    asked = drive(s)
    reasons = [r.reason for r in s.resolved_without_training()]
    assert reasons.count("invalid") == reasons.count("duplicate") == 0
    assert reasons.count("elite") == 3 * 4
    assert len(asked) + len(reasons) == 40 * 5
    seen: set[str] = set()
    for cid, text in asked:  # every training is of a tree the run had not trained before
        assert is_trainable(parse(text)) and text not in seen, cid
        seen.add(text)
    assert s.stats()["children_redrawn"] > 0


def test_valid_offspring_give_up_on_a_tree_space_with_nothing_new():
    """A key function that makes every tree the same: each slot stops after MAX_CHILD_DRAWS and the
    child is resolved as the paper resolves it, so the search still finishes."""
    s = Search(small(pop=6, gens=3, top_k=0), key_fn=lambda t: "same")
    asked = drive(s)
    assert len(asked) == 1  # generation 0's first tree; everything else repeats it
    assert s.finished


def test_offspring_rule_follows_init_unless_set():
    assert GAConfig().offspring == "valid"
    assert GAConfig(init="paper").offspring == "paper"
    assert GAConfig(init="paper", offspring="valid").offspring == "valid"
    with pytest.raises(ConfigError, match="ga.offspring must be one of valid, paper"):
        GAConfig(offspring="fresh")


def test_a_search_state_stored_before_the_offspring_rule_resumes_with_the_papers():
    s = Search(small(pop=12, gens=3, top_k=0), key_fn=to_infix)
    data = json.loads(json.dumps(s.export_state()))
    del data["config"]["ga"]["offspring"]
    assert Search.import_state(data, key_fn=to_infix).config.ga.offspring == "paper"


def test_a_run_stored_before_the_offspring_rule_resumes_with_the_papers():
    from orchestrator.config import from_dict, from_stored

    new = from_dict({})
    stored = new.to_dict()
    assert stored["search"]["ga"]["offspring"] == "valid"
    del stored["search"]["ga"]["offspring"]  # a run stored before the setting existed
    assert from_stored(stored).search.ga.offspring == "paper"
    assert from_stored(new.to_dict()).search.ga.offspring == "valid"
