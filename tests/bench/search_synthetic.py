"""Synthetic-target benchmark of the GA: can discovery find a hidden loss tree?

fitness = 1 / (1 + mean squared difference on a grid) between the candidate's loss and the
hidden target's (non-finite values anywhere on the grid give fitness 0, as a failed training
would).  Prints JSON: per seed, the generation at which a tree equal to the target on the grid
(mse < 1e-12) first appeared, and the best-fitness curve.

    .venv/bin/python -m tests.bench.search_synthetic [--target "x * log(y)"] [--seeds 5]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from worker.lossexpr import Node, parse, to_infix
from worker.lossexpr.numeric import evaluate

X_GRID, Y_GRID = np.meshgrid(np.linspace(0.0, 1.0, 5), np.linspace(0.05, 1.0, 20))


def make_fitness(target: Node):
    t = evaluate(target, X_GRID, Y_GRID)

    def fitness(tree: Node) -> float:
        v = evaluate(tree, X_GRID, Y_GRID)
        if not np.all(np.isfinite(v)):
            return 0.0
        return 1.0 / (1.0 + float(np.mean((v - t) ** 2)))

    return fitness


def run(target_text: str, seed: int, generations: int, population: int = 80) -> dict:
    # imported here, not at the top: orchestrator.search pulls in `cma` (scipy, matplotlib: ~1.6 s of CPU),
    # and tests/fake_worker.py imports make_fitness in every job of the pool bench
    from orchestrator.search import GAConfig, Search, SearchConfig

    target = parse(target_text)
    fitness = make_fitness(target)
    cfg = SearchConfig(seed=seed, ga=GAConfig(population_size=population, generations=generations))
    search = Search(cfg, key_fn=to_infix)
    hit_gen = None
    while search.phase == "discovery":
        for cand in search.ask():
            f = fitness(cand.tree)
            if hit_gen is None and f > 1.0 - 1e-12:
                hit_gen = cand.generation
            search.tell(cand.id, f)
    curve = [round(h["best"], 6) for h in search.history()]
    best = search.top_trees()[0]
    return {"seed": seed, "hit_generation": hit_gen, "best_fitness": best[1], "best_tree": to_infix(best[0].tree),
            "curve": curve}


def cma_recovery(seed: int = 7, iterations: int = 300) -> dict:
    """CMA-ES from Baikal's tree (all-one coefficients) fitted to BaikalCMA's values on the grid."""
    from orchestrator.search import Candidate, CMAConfig, CMAPhase
    from worker.lossexpr import named_loss

    target = named_loss("baikal_cma")
    fitness = make_fitness(target)
    phase = CMAPhase(0, Candidate("baikal", named_loss("baikal"), "init", 0), CMAConfig(iterations=iterations), seed)
    curve = []
    while not phase.done:
        for cand in phase.ask():
            _, it, j = cand.id.split("-")
            phase.tell(int(it), int(j), fitness(cand.tree))
        curve.append(phase.best[1])
    best, f = phase.best
    err = float(np.max(np.abs(evaluate(best.tree, X_GRID, Y_GRID) - evaluate(target, X_GRID, Y_GRID))))
    return {"iterations": phase.iteration, "popsize": phase.popsize, "stop": phase.stop_reason,
            "coefficients": list(best.coefficients), "best_fitness": f, "max_abs_loss_error": err,
            "best_fitness_every_10_iterations": curve[::10]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="log(y) - x / y")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--generations", type=int, default=30)
    args = ap.parse_args()
    t0 = time.perf_counter()
    runs = [run(args.target, s, args.generations) for s in range(1, args.seeds + 1)]
    print(json.dumps({"target": args.target, "generations": args.generations, "runs": runs, "cma": cma_recovery(),
                      "seconds": round(time.perf_counter() - t0, 2)}, indent=1))


if __name__ == "__main__":
    main()
