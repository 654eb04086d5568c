"""Worker benchmark: does a tree-built loss cost more than Keras' cross-entropy?  Does XLA help?

Interleaved step-time comparison on the paper's MNIST model, in one process: every variant is a
`worker.train.make_train_step` on the same model and data, differing only in the loss (or XLA).
Variants run in alternating blocks of steps (order rotated every round) so that load from
other processes on a shared machine hits all variants alike; each block is timed the way the
trainer runs (each step's loss read one step late), and the median per-step block time is
reported with ratios against Keras' CategoricalCrossentropy: the median over rounds of the ratio within a
round (robust to the load changing between rounds), and the ratio of the medians beside it.

Optional (GLO_BENCH_FULL=1): the paper's full 2,000-step MNIST runs of ce, baikal, baikal_cma
(needs real MNIST via GLO_DATA_DIR / Keras cache), with validation accuracy and wall time.

Knobs: GLO_BENCH_ROUNDS (default 12), GLO_BENCH_BLOCK (steps per block, default 20),
GLO_BENCH_XLA (default 1: include XLA variants).
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def step_times(rounds: int, block: int, batch: int = 100, xla: bool = True) -> dict:
    """Median seconds per step for each variant, and ratios against Keras CE."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from worker import models
    from worker.lossexpr import named_loss
    from worker.tf_loss import make_loss
    from worker.train import configure_determinism, device_name, make_train_step

    configure_determinism(0)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.integers(0, 256, (5000, 28, 28), dtype=np.uint8))
    y = tf.constant(rng.integers(0, 10, 5000, dtype=np.int32))
    model = models.mnist_model()
    keras_ce = keras.losses.CategoricalCrossentropy()
    losses = {"keras_ce": keras_ce, "tree_ce": make_loss(named_loss("ce")),
              "tree_baikal": make_loss(named_loss("baikal"))}
    variants = {name: make_train_step(model, fn, x, y, models.mnist_train, 0, jit=False)
                for name, fn in losses.items()}
    lr = tf.constant(0.01, tf.float32)
    order = np.random.default_rng(1)

    def batch_idx() -> tf.Tensor:
        return tf.constant(order.integers(0, 5000, batch, dtype=np.int32))

    def run_block(step, n: int, check_each: bool = True) -> float:
        t0 = time.perf_counter()
        pending = None
        for s in range(n):
            loss = step(batch_idx(), tf.constant(s, tf.int64), lr)
            if check_each and pending is not None:
                float(pending)
            pending = loss
        float(pending)
        return (time.perf_counter() - t0) / n

    def interleave(variants: dict, extra_nocheck: str | None = None) -> tuple[dict, float | None]:
        for step in variants.values():  # trace + warm up
            run_block(step, 3)
        per_step: dict[str, list[float]] = {name: [] for name in variants}
        nocheck: list[float] = []
        names = list(variants)
        for r in range(rounds):
            rot = names[r % len(names):] + names[: r % len(names)]
            for name in rot:
                per_step[name].append(run_block(variants[name], block))
            if extra_nocheck:
                nocheck.append(run_block(variants[extra_nocheck], block, check_each=False))
        med = {name: statistics.median(v) for name, v in per_step.items()}
        rounds_of[0] = per_step
        return med, (statistics.median(nocheck) if nocheck else None)

    rounds_of: list[dict[str, list[float]]] = [{}]

    def ratio(a: str, b: str) -> float:
        """Median over rounds of a's block time / b's in the same round: the two ran seconds apart, so a load
        change between rounds cancels out (the ratio of the overall medians is reported beside it)."""
        per_step = rounds_of[0]
        return statistics.median(x / y for x, y in zip(per_step[a], per_step[b]))

    # Phase 1, as the worker runs (op determinism on, no XLA): the loss is the only difference.
    med, nocheck = interleave(variants, extra_nocheck="tree_ce")
    out = {
        "device": device_name(), "tensorflow_version": tf.__version__, "batch_size": batch,
        "rounds": rounds, "block_steps": block,
        "median_step_seconds": med,
        "ratio_tree_ce_vs_keras_ce": ratio("tree_ce", "keras_ce"),
        "ratio_tree_baikal_vs_keras_ce": ratio("tree_baikal", "keras_ce"),
        "ratio_of_medians_tree_ce_vs_keras_ce": med["tree_ce"] / med["keras_ce"],
        "ratio_of_medians_tree_baikal_vs_keras_ce": med["tree_baikal"] / med["keras_ce"],
        # the trainer's per-step (one-step-late) non-finite check vs syncing once per block
        "ratio_check_each_step_vs_none": med["tree_ce"] / nocheck,
    }
    if xla:
        # Phase 2: XLA cannot compile the MaxPool gradient under op determinism, so compare
        # XLA and plain steps with determinism off (fresh traces, interleaved the same way).
        from tensorflow.python.framework import config as tf_config  # no public switch back

        tf_config.disable_op_determinism()
        xv = {}
        for name in ("keras_ce", "tree_ce"):
            for jit in (False, True):
                xv[f"{name}{'_xla' if jit else ''}"] = make_train_step(model, losses[name], x, y,
                                                                       models.mnist_train, 0, jit=jit)
        xmed, _ = interleave(xv)
        out["nondeterministic_median_step_seconds"] = xmed
        out["ratio_xla_vs_plain_keras_ce"] = ratio("keras_ce_xla", "keras_ce")
        out["ratio_xla_vs_plain_tree_ce"] = ratio("tree_ce_xla", "tree_ce")
        out["ratio_nondeterministic_vs_deterministic_tree_ce_not_interleaved"] = xmed["tree_ce"] / med["tree_ce"]
    return out


def full_runs(steps: int = 2000) -> dict:
    """The paper's search-length MNIST runs (seed 0) of the three named losses."""
    import tempfile

    from worker.data import load_task
    from worker.lossexpr import named_loss
    from worker.spec import WorkerSpec, read_results
    from worker.train import run_spec

    spec = WorkerSpec.from_json({
        "glo_worker_spec": 1, "task": "mnist", "steps": steps, "batch_size": 100, "learning_rate": 0.01,
        "seed": 0, "validation_size": 5000, "test_accuracy": True,
        "candidates": [{"id": n, "tree": named_loss(n).to_json()} for n in ("ce", "baikal", "baikal_cma")]})
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        run_spec(spec, load_task(spec), out)
        results = read_results(out)[1]
    return {r.candidate_id: {"validation_accuracy": r.validation_accuracy, "test_accuracy": r.test_accuracy,
                             "wall_seconds": r.wall_seconds, "train_seconds": r.train_seconds,
                             "status": r.status} for r in results}


def run() -> dict:
    out = {"step_time": step_times(_env_int("GLO_BENCH_ROUNDS", 12), _env_int("GLO_BENCH_BLOCK", 20),
                                   xla=os.environ.get("GLO_BENCH_XLA", "1") == "1")}
    if os.environ.get("GLO_BENCH_FULL") == "1":
        out["mnist_2000_steps"] = full_runs()
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=1))
