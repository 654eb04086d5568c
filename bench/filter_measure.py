"""What the zero-training filter would have done to real trainings: trainings saved, good losses rejected.

`python bench/filter_measure.py RUN.db [RUN.db ...] [--good 0.2]`: every distinct trained tree of the given
GLO databases with its measured fitness, checked by `orchestrator.search.filters.check` under the run's own
epsilon and class reduction.  "Good" means a measured fitness above --good (chance on MNIST is ~0.1).
JSON on stdout: per tree (fitness, verdict) and the totals.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.search.filters import check  # noqa: E402
from worker.lossexpr import Node, to_infix  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("db", nargs="+")
    p.add_argument("--good", type=float, default=0.2)
    args = p.parse_args()
    seen: dict[str, dict] = {}
    for path in args.db:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        for cfg_json, tree_json, fitness in con.execute(
                "SELECT r.config_json, c.tree_json, c.fitness FROM candidates c JOIN runs r ON r.id = c.run_id "
                "WHERE c.status = 'evaluated'"):
            task = json.loads(cfg_json)["task"]
            tree = Node.from_json(json.loads(tree_json))
            key = to_infix(tree)
            if key in seen:
                continue
            v = check(tree, task.get("epsilon", 1e-7), task.get("class_reduction", "mean"))
            seen[key] = {"loss": key, "fitness": fitness, "verdict": "pass" if v.ok else v.reason}
    rows = sorted(seen.values(), key=lambda r: -r["fitness"])
    good = [r for r in rows if r["fitness"] > args.good]
    print(json.dumps({
        "trained_trees": len(rows), "rejected": sum(r["verdict"] != "pass" for r in rows),
        "good": len(good), "good_rejected": sum(r["verdict"] != "pass" for r in good),
        "rejected_max_fitness": max((r["fitness"] for r in rows if r["verdict"] != "pass"), default=None),
        "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
