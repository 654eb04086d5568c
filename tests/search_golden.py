"""The generational GA's complete output for a few fixed configs: the stored golden
`tests/golden/search/generational.json` was written by this module before steady-state evolution
existed, and `test_search_steady.py` checks today's code reproduces it exactly.  It was re-blessed once
when CMA-ES's coefficients came to be read at 10 significant digits (`text`): at full precision it held on
AVX-512 machines only.  Every discovery candidate of the re-blessed golden is the same as before; CMA-ES's
first samples agree to those digits, later ones follow from the rounded fitness.

    .venv/bin/python -m tests.search_golden > tests/golden/search/generational.json   # only to re-bless
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

from orchestrator.search import CMAConfig, GAConfig, Search, SearchConfig
from orchestrator.search.config import FidelityConfig
from worker.lossexpr import Node, to_infix

CONFIGS: dict[str, SearchConfig] = {
    "valid": SearchConfig(seed=5, ga=GAConfig(population_size=12, generations=4, elites=2),
                          cma=CMAConfig(top_k=1, iterations=3)),
    "paper": SearchConfig(seed=5, ga=GAConfig(population_size=12, generations=4, elites=2, init="paper"),
                          cma=CMAConfig(top_k=1, iterations=3)),
    "fidelity": SearchConfig(seed=9, ga=GAConfig(population_size=12, generations=3, elites=2),
                             cma=CMAConfig(top_k=1, iterations=2),
                             fidelity=FidelityConfig(steps=(300, 900), promote_fraction=0.34, seeds=2)),
}


#: A float in an infix text: CMA-ES's coefficients, printed with every digit.
_FLOAT = re.compile(r"(?<![\w.])-?\d+\.\d+(?:[eE][-+]?\d+)?")


def text(tree: Node) -> str:
    """The tree's infix with every coefficient at 10 significant digits.  CMA-ES's samples come out of
    numpy's linear algebra, whose last bits depend on the CPU's kernels (AVX2 and AVX-512 machines differ
    around 1e-15): at full precision the golden would hold on one kind of machine only, and a fitness read
    from every digit would send the two down different paths."""
    return _FLOAT.sub(lambda m: f"{float(m.group(0)):.10g}", to_infix(tree))


def fitness(tree: Node) -> float:
    """Deterministic, tree-dependent, no training (blind to a coefficient's digits beyond the 10th)."""
    return (sum(map(ord, text(tree))) % 991) / 991.0


def run(cfg: SearchConfig, order_seed: int = 1) -> dict[str, Any]:
    """Run to the end, telling results in a seeded random order; everything a user sees afterwards."""
    search = Search(cfg, key_fn=to_infix)
    rng = random.Random(order_seed)
    inflight: list = []
    asked: list[str] = []
    while not search.finished:
        new = search.ask()
        asked.extend(f"{c.id} {text(c.tree)}" for c in new)
        inflight.extend(new)
        if inflight:
            c = inflight.pop(rng.randrange(len(inflight)))
            search.tell(c.id, fitness(c.tree))
    best = search.best()
    assert best is not None
    return {
        "asked": asked,
        "population": [[c.id, text(c.tree), f] for c, f in search.population()],
        "history": search.history(),
        "top_trees": [[c.id, text(c.tree), f] for c, f in search.top_trees()],
        "best": [best[0].id, text(best[0].tree), best[1]],
        "stats": {k: v for k, v in search.stats().items() if k not in ("operators",)},
    }


def golden() -> dict[str, Any]:
    return {name: run(cfg) for name, cfg in CONFIGS.items()}


if __name__ == "__main__":
    print(json.dumps(golden(), indent=1, sort_keys=True))
