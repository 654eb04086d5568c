"""Fused population training (worker/fused.py): candidate-steps per second of K candidates trained as one
fused model against K separate trainings in the same process, for K = 1, 2, 4, 8, 16.

Both sides train the paper's MNIST CNN (batch 100, the worker's deterministic settings) on the same data
with tree-built losses (ce and baikal, alternating).  "Separate" is the unfused trainer's step
(`worker.train.make_train_step`): K separate trainings run one after another, so their throughput is one
single-model step's, whichever K (a block runs one of them, the next block the other); each side is timed in blocks of steps, the blocks interleaved (so load
from other processes hits both alike), each step's loss read one step late as the trainers do; medians.

Both CPU kernel families are measured, each in a subprocess: TensorFlow's own kernels
(TF_ENABLE_ONEDNN_OPTS=0, what every CPU without AVX-512-class features runs: fused convolutions split per
model) and oneDNN's (=1: one grouped convolution).  Each row says which formulation ran (`conv`) and that the
group really trained as one model (`fused` = K): a real `run_spec` job of 8 candidates with `fuse = K` on
synthetic data, whose results carry `extra["fused"]` and no `fused_fallback`.

Knobs: GLO_BENCH_FUSED_KS (default "1,2,4,8"), GLO_BENCH_FUSED_ROUNDS (default 5),
GLO_BENCH_FUSED_BLOCK (steps per block, default 4), GLO_BENCH_FUSED_BATCH (default 100),
GLO_BENCH_FUSED_FAMILIES (default "plain,onednn").
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def throughput(ks: list[int], rounds: int, block: int, batch: int = 100, n: int = 5000,
               compute_dtype: str = "float32", jit: bool = False) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from worker import models
    from worker.fused import FusedNet, make_fused_step
    from worker.lossexpr import named_loss
    from worker.tf_loss import make_loss
    from worker.train import configure_determinism, device_name, make_train_step

    configure_determinism(0, deterministic=not jit)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
    y = tf.constant(rng.integers(0, 10, n, dtype=np.int32))
    losses = [make_loss(named_loss("ce"), 1e-7, "sum"), make_loss(named_loss("baikal"), 1e-7, "sum")]
    keras.utils.set_random_seed(0)
    singles = []
    for fn in losses:  # one model per loss, as separate trainings have
        keras.utils.set_random_seed(0)
        singles.append(make_train_step(models.mnist_model(), fn, x, y, models.mnist_train, 0, jit=jit))
    lr = tf.constant(0.01, tf.float32)
    order = np.random.default_rng(1)

    def run_block(steps: list, count: int) -> float:
        t0 = time.perf_counter()
        pending = None
        for s in range(count):
            out = steps[s % len(steps)](tf.constant(order.integers(0, n, batch, dtype=np.int32)),
                                        tf.constant(s + 1, tf.int64), lr)
            if pending is not None:
                np.asarray(pending)
            pending = out
        np.asarray(pending)
        return time.perf_counter() - t0

    run_block(singles, 4)  # trace both
    out: dict = {"device": device_name(), "tensorflow_version": tf.__version__, "batch_size": batch,
                 "rounds": rounds, "block_steps": block, "compute_dtype": compute_dtype, "xla": jit,
                 "deterministic": not jit, "per_k": {}}
    for k in ks:
        keras.utils.set_random_seed(0)
        net = FusedNet(models.mnist_model(), k, compute_dtype)
        alive = tf.Variable(tf.ones([k], tf.bool), trainable=False)
        fused = make_fused_step(net, [losses[i % 2] for i in range(k)], x, y, models.mnist_train, 0, alive, jit=jit)
        t0 = time.perf_counter()
        run_block([fused], 1)  # trace (and with XLA compile)
        first = time.perf_counter() - t0
        run_block([fused], 1)
        f_cs, s_cs = [], []
        for r in range(rounds):
            pair = [("fused", fused), ("separate", None)]
            for name, _ in (pair if r % 2 == 0 else pair[::-1]):
                if name == "fused":
                    f_cs.append(k * block / run_block([fused], block))
                else:
                    s_cs.append(block / run_block([singles[r % 2]], block))  # one training's steps
        f, s = statistics.median(f_cs), statistics.median(s_cs)
        out["per_k"][str(k)] = {"conv": net.conv, "fused_candidate_steps_per_second": round(f, 2),
                                "separate_candidate_steps_per_second": round(s, 2),
                                "speedup": round(f / s, 3), "fused_first_step_seconds": round(first, 2)}
        del fused, net
    return out


#: kernel family -> TF_ENABLE_ONEDNN_OPTS (tests/test_worker_fused.py tests both the same way)
FAMILIES = {"plain": "0", "onednn": "1"}


def real_groups(ks: list[int], n_candidates: int = 8) -> dict:
    """Per K: a real worker job of `n_candidates` with `fuse = K` (3 steps, synthetic data): the group sizes its
    results report and any fallback note -- proof that the fused path ran, not separate trainings."""
    from worker.data import load_task
    from worker.lossexpr import named_loss
    from worker.spec import WorkerSpec, read_results
    from worker.train import run_spec

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        rng = np.random.default_rng(0)
        np.savez(d / "mnist.npz", x_train=rng.integers(0, 256, (300, 28, 28), dtype=np.uint8),
                 y_train=rng.integers(0, 10, 300, dtype=np.uint8),
                 x_test=rng.integers(0, 256, (50, 28, 28), dtype=np.uint8), y_test=rng.integers(0, 10, 50, dtype=np.uint8))
        cands = [{"id": f"c{i}", "tree": named_loss("ce" if i % 2 == 0 else "baikal").to_json()} for i in range(n_candidates)]
        for k in ks:
            spec = WorkerSpec.from_json({"glo_worker_spec": 1, "task": "mnist", "steps": 3, "batch_size": 32,
                                         "validation_size": 50, "data_path": str(d), "fuse": k, "candidates": cands})
            run_spec(spec, load_task(spec), d / "r.json")
            results = read_results(d / "r.json")[1]
            out[str(k)] = {"fused": sorted({r.extra.get("fused", 1) for r in results}),
                           "conv": sorted({r.extra["fused_conv"] for r in results if "fused_conv" in r.extra}),
                           "fallback": next((r.extra["fused_fallback"] for r in results if "fused_fallback" in r.extra), None)}
    return out


def measure(ks: list[int]) -> dict:
    """This process's kernel family: throughput per K and the real groups' check."""
    res = throughput(ks, _env_int("GLO_BENCH_FUSED_ROUNDS", 5), _env_int("GLO_BENCH_FUSED_BLOCK", 4),
                     _env_int("GLO_BENCH_FUSED_BATCH", 100))
    for k, row in real_groups([k for k in ks if k > 1]).items():
        res["per_k"][k].update({"fused": row["fused"], "fallback": row["fallback"]})
    return res


def run() -> dict:
    ks = [int(k) for k in os.environ.get("GLO_BENCH_FUSED_KS", "1,2,4,8").split(",") if k.strip()]
    families = [f.strip() for f in os.environ.get("GLO_BENCH_FUSED_FAMILIES", "plain,onednn").split(",") if f.strip()]
    out = {}
    repo = Path(__file__).resolve().parents[2]
    for family in families:
        env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": FAMILIES[family], "TF_CPP_MIN_LOG_LEVEL": "2",
               "PYTHONPATH": str(repo) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        env.pop("GLO_FUSED_CONV", None)
        r = subprocess.run([sys.executable, "-m", "tests.bench.bench_fused", "--measure", ",".join(map(str, ks))],
                           cwd=repo, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            out[family] = {"error": (r.stderr.strip().splitlines() or ["?"])[-1][:300]}
            continue
        out[family] = json.loads(r.stdout.strip().splitlines()[-1])
    return {"throughput": out}


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--measure":
        print(json.dumps(measure([int(k) for k in sys.argv[2].split(",")])))
    else:
        print(json.dumps(run(), indent=1))
