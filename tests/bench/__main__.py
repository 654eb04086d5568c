"""`python -m tests.bench [--out FILE] [--only NAME,...]`: run every tests/bench/bench_*.py.

Each module exposes `run() -> dict`; outputs are merged under the module's name without the
`bench_` prefix (e.g. "worker"), printed, and written as JSON to --out; --markdown writes the short summary
(tests/bench/summary.py).  `make bench-gpu` is apart: tests/bench/gpu.py, run by bench/gpu.sh.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path


def discover() -> list[str]:
    """Names (without `bench_`) of the bench modules in this package, sorted."""
    here = Path(__file__).parent
    return sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench")
    p.add_argument("--out", help="write the merged JSON here")
    p.add_argument("--only", help="comma-separated bench names (e.g. worker,search)")
    p.add_argument("--markdown", help="also write a short markdown summary (numbers beside their goals) here")
    args = p.parse_args(argv)
    names = discover()
    if args.only:
        wanted = {w.strip().removeprefix("bench_") for w in args.only.split(",") if w.strip()}
        unknown = wanted - set(names)
        if unknown:
            p.error(f"unknown bench(es): {', '.join(sorted(unknown))} (known: {', '.join(names)})")
        names = [n for n in names if n in wanted]
    from tests.bench.summary import load_average, render

    load_before = load_average()
    merged: dict = {}
    for name in names:
        module = importlib.import_module(f"{__package__ or 'tests.bench'}.bench_{name}")
        t0 = time.perf_counter()
        result = module.run()
        merged[name] = {**result, "bench_seconds": round(time.perf_counter() - t0, 2)}
        print(f"bench {name}: done in {merged[name]['bench_seconds']} s", file=sys.stderr)
    text = json.dumps(merged, indent=1, default=str)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(render(merged, load_before))
    return 0


if __name__ == "__main__":
    sys.exit(main())
