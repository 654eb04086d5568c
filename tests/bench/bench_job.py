"""Job overhead: what a worker job costs besides training, as a fraction of training at the search budget.

For 1, 4 and 16 candidates per job, a real `python -m worker SPEC --out RESULT` process (the paper's MNIST
CNN, batch 100, validation 5,000) is run for a few steps per candidate.  Its fixed cost -- process start,
imports, data, model build, first (tracing) step, result writes -- is the process's wall time less the
steady training steps (steps 2..S of every candidate, from the result file) and less the evaluation (the
validation accuracy, which a job at any budget must measure, reported apart).  It is compared with the
training a job of that size does at the search budget: candidates x 2,000 steps at the measured steady
step time.  Goal: <= 10 %.

With fuse = N (the candidates of the job as one fused model) the same is measured for N > 1 too.

Data: real MNIST when the worker finds it (GLO_DATA_DIR, the Keras cache), else a synthetic file of
MNIST's size (so that loading costs what it costs).  Knobs: GLO_BENCH_JOB_SIZES (default "1,4,16"),
GLO_BENCH_JOB_STEPS (default 20), GLO_BENCH_JOB_FUSED (default 1: also fuse = N), GLO_BENCH_BUDGET
(default 2000).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
LOSSES = ("ce", "baikal", "baikal_cma")


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _data_dir(tmp: Path) -> tuple[str, str]:
    """(directory holding mnist.npz, what it is)."""
    from worker.data import candidate_places

    for place in candidate_places("mnist", None):
        if place.is_file():
            return str(place.parent), f"real ({place})"
    rng = np.random.default_rng(0)
    np.savez(tmp / "mnist.npz", x_train=rng.integers(0, 256, (60000, 28, 28), dtype=np.uint8),
             y_train=rng.integers(0, 10, 60000, dtype=np.uint8),
             x_test=rng.integers(0, 256, (10000, 28, 28), dtype=np.uint8), y_test=rng.integers(0, 10, 10000, dtype=np.uint8))
    return str(tmp), "synthetic, MNIST-sized"


def job(n: int, steps: int, budget: int, data_dir: str, tmp: Path, fuse: int | None) -> dict:
    from worker.lossexpr import named_loss

    spec = {"glo_worker_spec": 1, "task": "mnist", "steps": steps, "batch_size": 100, "learning_rate": 0.01,
            "seed": 0, "validation_size": 5000, "data_path": data_dir, "class_reduction": "sum",
            "candidates": [{"id": f"c{i}", "tree": named_loss(LOSSES[i % 3]).to_json()} for i in range(n)]}
    if fuse is not None:
        spec["fuse"] = fuse
    d = tmp / f"job-{n}-{fuse or 1}"
    d.mkdir()
    (d / "spec.json").write_text(json.dumps(spec))
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), GLO_DATA_DOWNLOAD="0")
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "worker", "spec.json", "--out", "result.json", "-q"], cwd=d, env=env,
                          capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        return {"error": f"exit {done.returncode}: {done.stderr.strip()[-500:]}"}
    results = json.loads((d / "result.json").read_text())["results"]
    steady = evals = 0.0
    for r in results:  # a fused group's times are amortized over its members: their sum is the group's
        e = r["extra"]
        steady += r["train_seconds"] - e["first_step_seconds"] / e.get("fused", 1)
        evals += r["eval_seconds"]
    step_s = steady / (n * (steps - 1))  # per candidate-step, steady
    fixed = wall - steady - evals
    train_at_budget = n * budget * step_s
    return {"candidates": n, "fuse": fuse or 1, "process_wall_seconds": round(wall, 2),
            "steady_seconds_per_candidate_step": round(step_s, 4), "evaluation_seconds": round(evals, 2),
            "fixed_seconds": round(fixed, 2), "training_seconds_at_budget": round(train_at_budget, 1),
            "overhead_fraction": round(fixed / train_at_budget, 4),
            "evaluation_fraction": round(evals / train_at_budget, 4)}


def run() -> dict:
    sizes = [int(s) for s in os.environ.get("GLO_BENCH_JOB_SIZES", "1,4,16").split(",") if s.strip()]
    steps, budget = _env_int("GLO_BENCH_JOB_STEPS", 20), _env_int("GLO_BENCH_BUDGET", 2000)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data_dir, what = _data_dir(tmp)
        out = {"data": what, "steps_measured": steps, "budget_steps": budget, "goal_overhead_fraction": 0.10,
               "jobs": [job(n, steps, budget, data_dir, tmp, None) for n in sizes]}
        if os.environ.get("GLO_BENCH_JOB_FUSED", "1") == "1":
            out["fused_jobs"] = [job(n, steps, budget, data_dir, tmp, n) for n in sizes if n > 1]
    return out


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
