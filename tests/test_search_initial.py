"""Generation 0: the valid init is the paper's distribution conditioned on trainability; seeds; paper mode."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import replace

import pytest
from scipy.stats import chi2_contingency

from orchestrator.search import GAConfig, Search, SearchConfig
from orchestrator.search.config import ConfigError
from orchestrator.search.initial import initial_trees
from orchestrator.search.operators import Primitives, random_tree
from worker.lossexpr import named_loss, parse, to_infix
from worker.lossexpr.onehot import is_trainable


def _distinct_keys():
    counter = itertools.count()
    return lambda tree: str(next(counter))  # every tree its own key: no duplicate redraws


def test_valid_init_is_the_paper_distribution_conditioned_on_trainable_trees() -> None:
    n = 3000
    ga = GAConfig(population_size=n, elites=0)
    prims = Primitives(ga.weights())
    trees, counts = initial_trees(random.Random(11), prims, ga, _distinct_keys())
    assert counts.trainable == n and all(is_trainable(t) for t, _ in trees)
    assert counts.drawn == n + counts.rejected_untrainable
    rng = random.Random(12)
    paper: list = []
    while len(paper) < n:
        t = random_tree(rng, prims, ga.init_max_depth)
        if is_trainable(t):
            paper.append(t)
    sizes = sorted({t.size() for t, _ in trees} | {t.size() for t in paper})
    a, b = Counter(t.size() for t, _ in trees), Counter(t.size() for t in paper)
    table = [[a[s] for s in sizes], [b[s] for s in sizes]]
    assert len(sizes) >= 3
    _, p, _, _ = chi2_contingency(table)
    assert p > 0.01, (table, p)
    # and per root element: the same conditional distribution of what the tree is made of
    roots = sorted({t.op for t, _ in trees} | {t.op for t in paper})
    ra, rb = Counter(t.op for t, _ in trees), Counter(t.op for t in paper)
    _, p, _, _ = chi2_contingency([[ra[r] for r in roots], [rb[r] for r in roots]])
    assert p > 0.01
    # about 1 tree in 9 is trainable as the paper draws them: the share the issue measured (10.7 %)
    share = n / counts.drawn
    assert 0.08 < share < 0.14, share


def test_valid_init_redraws_canonical_duplicates_and_every_member_trains() -> None:
    s = Search(SearchConfig(seed=0, ga=GAConfig(population_size=40, generations=1)), key_fn=to_infix)
    batch = s.ask()
    assert len(batch) == 40 and len({to_infix(c.tree) for c in batch}) == 40
    assert s.stats()["invalid"] == 0 and s.stats()["init"]["trainable"] == 40
    assert s.stats()["init"]["rejected_untrainable"] > 100  # ~8 of 9 paper draws are not trainable


def test_paper_init_draws_exactly_the_paper_trees() -> None:
    ga = GAConfig(population_size=30, init="paper")
    cands = Search(SearchConfig(seed=3, ga=ga), key_fn=to_infix).population()
    rng, prims = random.Random(3), Primitives(ga.weights())
    assert [c.tree for c, _ in cands] == [random_tree(rng, prims, 2) for _ in range(30)]
    assert sum(not is_trainable(c.tree) for c, _ in cands) > 15  # most are not trainable


def test_seed_losses_come_first_then_random_trees() -> None:
    ga = GAConfig(population_size=8, seed_losses=("ce", "log(y) - x / y"))
    s = Search(SearchConfig(seed=0, ga=ga), key_fn=to_infix)
    pop = [c for c, _ in s.population()]
    assert [c.origin for c in pop[:2]] == ["seed", "seed"] and all(c.origin == "init" for c in pop[2:])
    assert pop[0].tree == named_loss("ce") and pop[1].tree == parse("log(y) - x / y")
    assert s.stats()["init"]["seeded"] == 2


def test_bad_seed_losses_and_impossible_weights_are_named() -> None:
    with pytest.raises(ConfigError, match=r"ga.seed_losses\[0\]"):
        GAConfig(seed_losses=("log(",))
    with pytest.raises(ConfigError, match="ga.seed_losses: 3 losses for a population of 2"):
        GAConfig(population_size=2, elites=0, seed_losses=("ce", "ce", "ce"))
    with pytest.raises(ConfigError, match="ga.init must be one of valid, paper"):
        GAConfig(init="random")
    ga = replace(GAConfig(population_size=4, elites=0), node_weights=(("y", 1.0), ("log", 1.0), ("1", 1.0)))
    with pytest.raises(ConfigError, match="none can train"):
        Search(SearchConfig(seed=0, ga=ga), key_fn=to_infix).ask()


@pytest.mark.parametrize("text, trainable", [
    ("x * log(y)", True), ("x * x * log(y)", True), ("log(y) - x / y", True), ("x * y + (1 - x) * square(y)", True),
    ("x * (1 - x) * log(y)", False),  # 0 on one-hot labels
    ("(x - x * x) * y + log(y)", False),  # does not depend on the label
    ("x - x + y", False), ("x * x", False), ("y", False),
])
def test_trainable_means_depending_on_label_and_prediction(text: str, trainable: bool) -> None:
    assert is_trainable(parse(text)) is trainable


def test_a_stored_candidate_as_seed_loss_is_stored_as_its_tree(tmp_path) -> None:
    """RUN/CANDIDATE in ga.seed_losses: the new run's stored config holds the tree's infix, and its g0-0 is it."""
    import json
    import sqlite3

    from tests.orch_helpers import glo, glo_env, write_config

    first = write_config(tmp_path / "a.toml", population=6, generations=1, cma_iterations=1)
    assert glo("run", str(first), "--db", str(tmp_path / "r.db"), "--run-id", "a", env=glo_env()).returncode in (0, 4)
    con = sqlite3.connect(tmp_path / "r.db")
    (infix,), = con.execute("select infix from candidates where uid = 'a/g0-1'").fetchall()
    con.close()
    second = write_config(tmp_path / "b.toml", population=6, generations=1, cma_iterations=1)
    second.write_text(second.read_text().replace("init_max_depth = 3", 'init_max_depth = 3\nseed_losses = ["a/g0-1"]'))
    r = glo("run", str(second), "--db", str(tmp_path / "r.db"), "--run-id", "b", env=glo_env())
    assert r.returncode in (0, 4), r.stderr
    con = sqlite3.connect(tmp_path / "r.db")
    (cfg,), = con.execute("select config_json from runs where id = 'b'").fetchall()
    (seeded, origin), = con.execute("select infix, origin from candidates where uid = 'b/g0-0'").fetchall()
    con.close()
    assert json.loads(cfg)["search"]["ga"]["seed_losses"] == [infix]
    assert (seeded, origin) == (infix, "seed")
    bad = write_config(tmp_path / "c.toml", population=6, generations=1)
    bad.write_text(bad.read_text().replace("init_max_depth = 3", 'init_max_depth = 3\nseed_losses = ["a/g9-9"]'))
    r = glo("run", str(bad), "--db", str(tmp_path / "r.db"), env=glo_env())
    assert r.returncode == 1 and "seed_losses[0]" in r.stderr and "Traceback" not in r.stderr, r.stderr
