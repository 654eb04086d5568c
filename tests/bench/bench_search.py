"""Search benchmarks for `make bench`: the GA on a hidden synthetic target, CMA-ES recovering
BaikalCMA's coefficients, ask/tell overhead, and the latency of the canonical (cache) key.

Sizes come from the environment so a quick look and a full measurement use the same code:
GLO_BENCH_SEEDS (default 5), GLO_BENCH_GENERATIONS (default 30), GLO_BENCH_KEYS (default 200).
"""

from __future__ import annotations

import os
import random
import statistics
import time

from orchestrator.search import GAConfig, Search, SearchConfig
from orchestrator.search.operators import Primitives, random_tree
from tests.bench.search_synthetic import cma_recovery
from tests.bench.search_synthetic import run as synthetic_run
from worker.lossexpr import to_infix
from worker.lossexpr.canonical import canonical_key


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def synthetic(target: str, seeds: int, generations: int) -> dict:
    runs = [synthetic_run(target, s, generations) for s in range(1, seeds + 1)]
    hits = [r["hit_generation"] for r in runs if r["hit_generation"] is not None]
    return {"target": target, "seeds": seeds, "generations": generations, "population": 80,
            "hits": len(hits), "hit_generations": hits,
            "best_fitness_per_seed": [round(r["best_fitness"], 6) for r in runs]}


def ask_tell_overhead(generations: int = 10) -> dict:
    """Pure search cost per candidate (no training), paper defaults, population 80."""
    search = Search(SearchConfig(seed=0, ga=GAConfig(generations=generations)), key_fn=to_infix)
    n = 0
    t0 = time.perf_counter()
    while search.phase == "discovery":
        for cand in search.ask():
            search.tell(cand.id, (len(to_infix(cand.tree)) % 13) / 13)
            n += 1
    dt = time.perf_counter() - t0
    return {"candidates_told": n, "microseconds_per_candidate": round(1e6 * dt / max(n, 1), 1)}


def key_latency(count: int, max_depth: int = 4) -> dict:
    """Canonical-key wall time over random valid trees with the paper's node weights, depth <= 4
    (bigger than the initial population's, like bred trees).  The first call pays the symbolic
    helper's start-up and is reported apart."""
    rng = random.Random(11)
    prims = Primitives(GAConfig().weights())
    trees: list = []
    while len(trees) < count:
        tree = random_tree(rng, prims, max_depth)
        if tree.is_valid():
            trees.append(tree)
    t0 = time.perf_counter()
    canonical_key(trees[0])
    first = time.perf_counter() - t0
    times, kinds = [], {}
    for tree in trees:
        t0 = time.perf_counter()
        key = canonical_key(tree)
        times.append(time.perf_counter() - t0)
        kinds[key.split(":")[0]] = kinds.get(key.split(":")[0], 0) + 1
    times.sort()
    return {"trees": len(trees), "first_call_ms": round(1e3 * first, 1), "median_ms": round(1e3 * statistics.median(times), 2),
            "p90_ms": round(1e3 * times[int(0.9 * (len(times) - 1))], 2), "max_ms": round(1e3 * times[-1], 2),
            "key_kinds": kinds}


def run() -> dict:
    seeds, gens = _env_int("GLO_BENCH_SEEDS", 5), _env_int("GLO_BENCH_GENERATIONS", 30)
    return {
        "ga_synthetic": [synthetic(t, seeds, gens) for t in ("x * log(y)", "log(y) - x / y")],
        "cma_recovery": cma_recovery(),
        "ask_tell": ask_tell_overhead(),
        "canonical_key": key_latency(_env_int("GLO_BENCH_KEYS", 200)),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=1))
