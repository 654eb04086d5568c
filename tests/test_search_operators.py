"""Operators: initial node distribution (chi-square), operator rates (3 sigma), well-formed trees."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from orchestrator.search.config import PAPER_WEIGHTS, ConfigError, GAConfig, SearchConfig, element_arity
from orchestrator.search.ga import breed, elite_indices, roulette
from orchestrator.search.operators import OpCounter, Primitives, crossover, mutate, random_tree, within_cap
from worker.lossexpr import Node, parse

CFG = GAConfig()
PRIMS = Primitives(CFG.weights())

# Chi-square critical values at alpha = 0.01 (standard table): dof 10 -> 23.209, dof 3 -> 11.345.
CHI2_CRIT_001 = {10: 23.209, 3: 11.345}


def element_of(node: Node) -> str:
    return str(node.value) if node.op == "const" else node.op


def chi_square(observed: Counter, weights: dict[str, float]) -> float:
    n = sum(observed.values())
    total = sum(weights.values())
    return sum((observed.get(e, 0) - n * w / total) ** 2 / (n * w / total) for e, w in weights.items())


def test_initial_root_distribution_matches_weights_chi_square():
    rng = random.Random(11)
    n = 20_000
    roots = Counter(element_of(random_tree(rng, PRIMS, 2)) for _ in range(n))
    stat = chi_square(roots, dict(PAPER_WEIGHTS))
    dof = len(PAPER_WEIGHTS) - 1
    print(f"root chi-square {stat:.3f} (dof {dof}, critical {CHI2_CRIT_001[dof]} at alpha 0.01)")
    assert stat < CHI2_CRIT_001[dof]


def test_initial_leaf_level_distribution_matches_leaf_weights():
    rng = random.Random(12)
    leaves: Counter = Counter()
    while sum(leaves.values()) < 20_000:
        tree = random_tree(rng, PRIMS, 2)
        for path in tree.paths():
            if len(path) == 2:  # the depth limit: only leaves may appear here
                leaves[element_of(tree.at(path))] += 1
    weights = {e: w for e, w in PAPER_WEIGHTS if element_arity(e) == 0}
    stat = chi_square(leaves, weights)
    print(f"depth-2 leaf chi-square {stat:.3f} (dof 3, critical {CHI2_CRIT_001[3]} at alpha 0.01)")
    assert stat < CHI2_CRIT_001[3]


def test_initial_trees_respect_max_depth():
    rng = random.Random(3)
    for depth in (0, 1, 2, 3):
        for _ in range(500):
            assert random_tree(rng, PRIMS, depth).depth() <= depth + 1


def within_3_sigma(hits: int, n: int, p: float) -> tuple[bool, float]:
    sigma = math.sqrt(p * (1 - p) / n)
    return abs(hits / n - p) <= 3 * sigma, sigma


def test_mutation_rates_within_3_sigma():
    rng = random.Random(5)
    counter = OpCounter()
    rates = {"const_step": CFG.p_const_step, "replace_node": CFG.p_replace_node,
             "shrink": CFG.p_shrink, "grow": CFG.p_grow}
    while min(counter.decisions.get(k, 0) for k in rates) < 20_000:
        tree = random_tree(rng, PRIMS, 4)
        out, _ = mutate(rng, tree, PRIMS, CFG, counter)
        Node.from_json(out.to_json())  # well-formed
    for name, p in rates.items():
        n, hits = counter.decisions[name], counter.hits.get(name, 0)
        ok, sigma = within_3_sigma(hits, n, p)
        print(f"{name}: {hits}/{n} = {hits / n:.5f} vs p={p} (3 sigma = {3 * sigma:.5f})")
        assert ok, name


def test_crossover_rate_within_3_sigma_and_children_well_formed():
    cfg = GAConfig(population_size=20, elites=2)
    rng = random.Random(9)
    counter = OpCounter()
    trees = [random_tree(rng, PRIMS, 2) for _ in range(cfg.population_size)]
    fits = [rng.random() for _ in trees]
    while counter.decisions.get("crossover", 0) < 20_000:
        kids = breed(rng, trees, fits, cfg, PRIMS, counter)
        assert len(kids) == cfg.population_size
        for kid in kids:
            assert Node.from_json(kid.tree.to_json()) == kid.tree
            assert within_cap(kid.tree, cfg)
        # keep the population stable in size and shape: breed from the same parents again
    n, hits = counter.decisions["crossover"], counter.hits["crossover"]
    ok, sigma = within_3_sigma(hits, n, cfg.crossover_prob)
    print(f"crossover: {hits}/{n} = {hits / n:.5f} vs p=0.8 (3 sigma = {3 * sigma:.5f})")
    assert ok


def test_crossover_swaps_subtrees():
    rng = random.Random(1)
    for _ in range(2000):
        a, b = random_tree(rng, PRIMS, 3), random_tree(rng, PRIMS, 3)
        c, d = crossover(rng, a, b)
        assert c.size() + d.size() == a.size() + b.size()
        ops = Counter(n.op for n in a.preorder()) + Counter(n.op for n in b.preorder())
        assert Counter(n.op for n in c.preorder()) + Counter(n.op for n in d.preorder()) == ops


def test_const_step_moves_by_one():
    cfg = GAConfig(p_const_step=1.0, p_replace_node=0.0, p_shrink=0.0, p_grow=0.0)
    rng = random.Random(2)
    seen = set()
    for _ in range(200):
        out, ops = mutate(rng, parse("x * 3 + y"), PRIMS, cfg)
        assert ops == ["const_step"]
        seen.add(out.children[1].value if out.children[1].op == "const" else out.children[0].children[1].value)
    assert seen == {2, 4}


def test_grow_and_shrink_and_replace_keep_arity():
    rng = random.Random(4)
    only = {"replace_node": GAConfig(p_const_step=0, p_replace_node=1, p_shrink=0, p_grow=0),
            "shrink": GAConfig(p_const_step=0, p_replace_node=0, p_shrink=1, p_grow=0),
            "grow": GAConfig(p_const_step=0, p_replace_node=0, p_shrink=0, p_grow=1)}
    tree = parse("log(y) - x / y")
    out, _ = mutate(rng, tree, PRIMS, only["replace_node"])
    assert [n.arity for n in out.preorder()] == [n.arity for n in tree.preorder()]
    out, _ = mutate(rng, tree, PRIMS, only["shrink"])
    assert out.size() == 1  # the root shrinks last
    out, ops = mutate(rng, tree, PRIMS, only["grow"])
    assert ops.count("grow") == 3 and out.size() >= tree.size()


def test_roulette_and_elites():
    rng = random.Random(0)
    counts = Counter(roulette(rng, [0.0, 1.0, 3.0]) for _ in range(20_000))
    assert counts[0] == 0 and abs(counts[2] / 20_000 - 0.75) < 0.02
    counts = Counter(roulette(rng, [0.0, 0.0, 0.0, 0.0]) for _ in range(20_000))
    assert all(abs(counts[i] / 20_000 - 0.25) < 0.02 for i in range(4))
    assert elite_indices([0.1, 0.5, 0.5, 0.9], 3) == [3, 1, 2]


def test_size_cap_reverts_offspring():
    cfg = GAConfig(population_size=10, elites=0, max_tree_size=7, crossover_prob=1.0, p_grow=0.5)
    rng = random.Random(8)
    trees = [parse("log(y) - x / y")] * 10
    capped = 0
    for _ in range(50):
        for kid in breed(rng, trees, [1.0] * 10, cfg, PRIMS):
            assert kid.tree.size() <= 7
            capped += kid.capped
    assert capped > 0


def test_config_validation_names_field_and_round_trips():
    with pytest.raises(ConfigError, match="ga.elites"):
        GAConfig(population_size=4, elites=4)
    with pytest.raises(ConfigError, match="ga.crossover_prob"):
        GAConfig(crossover_prob=1.5)
    with pytest.raises(ConfigError, match="cma.sigma0"):
        SearchConfig.from_dict({"cma": {"sigma0": 0}})
    with pytest.raises(ConfigError, match="ga.node_weights"):
        GAConfig(node_weights={"exp": 1.0})
    with pytest.raises(ConfigError, match="ga.bogus"):
        SearchConfig.from_dict({"ga": {"bogus": 1}})
    cfg = SearchConfig.from_dict({"seed": 3, "ga": {"population_size": 10, "node_weights": {"x": 1, "y": 2, "+": 1}},
                                  "cma": {"top_k": 2, "options": {"tolx": 1e-9}}})
    assert SearchConfig.from_dict(cfg.to_dict()) == cfg
    d = SearchConfig().to_dict()
    assert d["ga"]["population_size"] == 80 and d["ga"]["elites"] == 6 and d["cma"]["sigma0"] == 1.5
    assert d["ga"]["node_weights"]["log"] == 3.0


def test_node_weight_order_does_not_change_the_search():
    """Weights given in any key order (TOML as written, JSON with sorted keys) breed the same trees."""
    import json

    from orchestrator.search.search import Search

    weights = dict(GAConfig().node_weights)
    shuffled = dict(sorted(weights.items()))
    assert list(shuffled) != list(weights)
    a = SearchConfig.from_dict({"seed": 5, "ga": {"population_size": 12, "node_weights": weights}})
    b = SearchConfig.from_dict(json.loads(json.dumps({"seed": 5, "ga": {"population_size": 12,
                                                                         "node_weights": shuffled}})))
    assert a == b
    trees_a = [c.tree for c in Search(a, key_fn=repr).ask()]
    trees_b = [c.tree for c in Search(b, key_fn=repr).ask()]
    assert trees_a == trees_b
