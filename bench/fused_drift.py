"""How far fused training drifts from separate training, against how far two kernel families drift apart.

Why: fused and separate training sum in different orders (a grouped or split convolution, a batched matmul),
so their step losses part at float32 rounding level and the gap grows with training.  The tolerance
tests/test_worker_fused.py states must be wider than that drift, and the yardstick for "rounding, not a
bug" is the drift between two *separate* trainings of the same candidate on two kernel families (TensorFlow's
plain CPU kernels, TF_ENABLE_ONEDNN_OPTS=0, and oneDNN's, =1), which nobody would call different trainings.

    python bench/fused_drift.py [--out drift.json]

runs the test's own set-up (4 candidates, the MNIST CNN, synthetic MNIST-like data, batch 32, lr 0.1) for
1, 2, 4, 8 and 12 steps under both kernel families (one subprocess each) and prints, per candidate and step
count, the relative gap of `final_train_loss` (the mean step loss so far): fused vs separate within one
family, and separate vs separate across the two families.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEPS = (1, 2, 4, 8, 12)


def _measure(out: Path) -> None:
    """In this process (one kernel family): final_train_loss per candidate, per step count, alone and fused."""
    sys.path.insert(0, str(REPO))
    from tests.test_worker_fused import MNIST_CANDIDATES, _spec
    from tests.test_worker_train import _mnist_like
    from worker.data import load_task
    from worker.spec import read_results
    from worker.train import run_spec

    table: dict[str, dict[str, dict[str, float | None]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        _mnist_like(d / "mnist.npz")
        for steps in STEPS:
            for mode, fuse in (("alone", 1), ("fused", 4)):
                spec = _spec(d, MNIST_CANDIDATES, fuse=fuse, steps=steps, curve_interval=None)
                run_spec(spec, load_task(spec), d / "r.json")
                for r in read_results(d / "r.json")[1]:
                    table.setdefault(r.candidate_id, {}).setdefault(str(steps), {})[mode] = r.final_train_loss
                    if mode == "fused":
                        table[r.candidate_id][str(steps)]["conv"] = r.extra.get("fused_conv")
    out.write_text(json.dumps(table))


def _rel(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else abs(a - b) / max(abs(b), 1e-12)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write the table as JSON here")
    ap.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # internal: one family, in a subprocess
    args = ap.parse_args()
    if args.measure:
        _measure(args.measure)
        return 0
    fam = {}
    with tempfile.TemporaryDirectory() as tmp:
        for flag in ("0", "1"):
            path = Path(tmp) / f"onednn{flag}.json"
            env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": flag, "TF_CPP_MIN_LOG_LEVEL": "3"}
            subprocess.run([sys.executable, __file__, "--measure", str(path)], env=env, check=True)
            fam[flag] = json.loads(path.read_text())
    rows = []
    for cand, by_steps in fam["0"].items():
        for steps, r0 in by_steps.items():
            r1 = fam["1"][cand][steps]
            rows.append({"candidate": cand, "steps": int(steps),
                         "fused_vs_alone_plain": _rel(r0["fused"], r0["alone"]),
                         "fused_vs_alone_onednn": _rel(r1["fused"], r1["alone"]),
                         "alone_plain_vs_alone_onednn": _rel(r0["alone"], r1["alone"]),
                         "conv_plain": r0["conv"], "conv_onednn": r1["conv"]})
    fmt = lambda v: "-" if v is None else f"{v:.1e}"  # noqa: E731
    print("candidate steps  fused/alone(plain)  fused/alone(oneDNN)  alone plain/oneDNN  conv(plain, oneDNN)")
    for r in rows:
        print(f"{r['candidate']:9} {r['steps']:5}  {fmt(r['fused_vs_alone_plain']):>18}  "
              f"{fmt(r['fused_vs_alone_onednn']):>19}  {fmt(r['alone_plain_vs_alone_onednn']):>18}  "
              f"{r['conv_plain']}, {r['conv_onednn']}")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
