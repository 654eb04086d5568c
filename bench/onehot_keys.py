"""How many trainings the one-hot canonical keys save: distinct keys of the same trees, before and after.

`python bench/onehot_keys.py [--db RUN.db ...] [--generations N]` takes every trainable discovery tree that
a search handed out -- from the given GLO databases (real runs), and from a GA run on the synthetic
Baikal target (tests/bench/search_synthetic.py, the paper's population of 80) -- and counts distinct keys
under the former normal form (s1: one sympy form over real x >= 0, so x*x*log(y) != x*log(y)) and the
one-hot one (s2: the halves f(0, y), f(1, y)).  Each tree key that s2 merges is a training the
fitness cache now answers.  JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path

import sympy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worker.lossexpr import Node, parse, to_infix  # noqa: E402
from worker.lossexpr.onehot import is_trainable  # noqa: E402
from worker.lossexpr.symbolic import symbolic_key, to_sympy  # noqa: E402


def s1_form(tree: Node) -> str:
    """The former key's normal form (before one-hot halves); one that holds zoo/nan/oo/I -- which the
    key's soundness check would reject -- counts as the tree's own structural key."""
    e = sympy.cancel(sympy.expand_log(to_sympy(tree), force=True))
    if e.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo, sympy.I):
        return "t:" + to_infix(tree)
    return sympy.sstr(e, order="lex")


def s2_form(tree: Node) -> str:
    """The key GLO computes now (with its soundness check), else the tree's own structural key."""
    return symbolic_key(tree) or "t:" + to_infix(tree)


def count(trees: list[Node]) -> dict[str, int]:
    trees = [t for t in trees if is_trainable(t)]
    s1 = {s1_form(t) for t in trees}
    s2 = {s2_form(t) for t in trees}
    return {"trees": len(trees), "distinct_s1": len(s1), "distinct_s2": len(s2),
            "trainings_saved": len(s1) - len(s2)}


def db_trees(path: str) -> list[Node]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    rows = con.execute("SELECT tree_json FROM candidates WHERE phase = 'discovery' AND origin != 'promoted'")
    return [Node.from_json(json.loads(r[0])) for r in rows]


def synthetic_trees(generations: int, seed: int) -> list[Node]:
    from orchestrator.search import GAConfig, Search, SearchConfig
    from tests.bench.search_synthetic import make_fitness

    fitness = make_fitness(parse("log(y) - x / y"))
    s = Search(SearchConfig(seed=seed, ga=GAConfig(population_size=80, generations=generations)), key_fn=to_infix)
    out: list[Node] = []
    while s.phase == "discovery":
        for c in s.ask():
            out.append(c.tree)
            s.tell(c.id, fitness(c.tree))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", action="append", default=[])
    p.add_argument("--generations", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = {"synthetic_ga": {"generations": args.generations, "seed": args.seed,
                            **count(synthetic_trees(args.generations, args.seed))}}
    for path in args.db:
        out[path] = count(db_trees(path))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
