"""Trace a CIFAR-10 training step by step: why Baikal collapses at the paper's settings (issue #17, item 1).

    python bench/cifar_trace.py --loss baikal --reduction sum --lr 0.05 --steps 40 --out out/trace

Trains the worker's own CIFAR-10 network (worker.models), loss (worker.tf_loss.make_loss: the prediction clipped
to [epsilon, 1]), plain SGD with the tutorial's weight decay and augmentation -- the worker's training step, with
the gradient exposed -- and records, per step: the loss, the global gradient norm of the loss alone, the share
of the batch's true-class probabilities below epsilon (where the clip passes no gradient), the largest output
probability, the classes the batch predicts; and every `--probe-every` steps on a fixed batch of 256 training
images (central crop): the share of dead ReLU units per layer (never positive on any image of the batch),
and the held-out accuracy on `--val` images.  One JSON line per step into OUT/<label>.jsonl, a summary row
into OUT/summary.csv; `--plot` draws every trace of OUT into OUT/trace.png (gradient norm, share of true-class
probabilities under epsilon, dead local3 units, held-out accuracy) instead.  Data: $GLO_DATA_DIR (cifar10.npz or cifar10_jpeg.npz), as the worker finds it.

Numbers are what this machine's kernels produce (see worker.tf_env); 2 CPU cores take about 1 s per step at
batch 1024.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import worker.tf_env  # noqa: E402,F401  (the worker's TensorFlow environment, before TensorFlow loads)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--loss", default="baikal", help="a built-in name (ce, baikal, baikal_cma) or infix text")
    p.add_argument("--reduction", choices=("sum", "mean"), default="sum")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--epsilon", type=float, default=1e-7)
    p.add_argument("--epsilon-gradient", choices=("straight-through", "zero"), default="straight-through",
                   help="what the clip passes back below epsilon (task.epsilon_gradient; 'zero': TensorFlow's "
                        "clip, what the runs before the setting used)")
    p.add_argument("--train-size", type=int, default=20000, help="training images used (the first N)")
    p.add_argument("--val", type=int, default=2000, help="held-out images for the accuracy probe")
    p.add_argument("--probe-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label", default=None, help="file name of this trace (default: loss-reduction-lr)")
    p.add_argument("--out", default="out/cifar-trace")
    p.add_argument("--plot", action="store_true", help="only draw OUT/*.jsonl into OUT/trace.png")
    a = p.parse_args(argv)
    if a.plot:
        print(plot(Path(a.out)))
        return 0

    import numpy as np
    import tensorflow as tf

    from worker import models
    from worker.data import load_arrays
    from worker.lossexpr.infix import parse
    from worker.lossexpr.named import NAMES, named_loss
    from worker.schedule import BatchStream
    from worker.tf_loss import build_model, make_loss

    tree = named_loss(a.loss) if a.loss in NAMES else parse(a.loss)
    label = a.label or (f"{a.loss}-{a.reduction}-lr{a.lr:g}".replace(" ", "")
                        + ("-st" if a.epsilon_gradient == "straight-through" else ""))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (xtr, ytr, _xte, _yte), source = load_arrays("cifar10", None)
    x_val, y_val = xtr[-a.val:], ytr[-a.val:]
    xtr, ytr = xtr[: a.train_size], ytr[: a.train_size]

    tf.keras.utils.set_random_seed(a.seed)
    model, pre_train, pre_eval = build_model("cifar10", a.epsilon, a.epsilon_gradient)
    loss_fn = make_loss(tree, a.epsilon, a.reduction, a.epsilon_gradient)
    variables = model.trainable_variables
    decay_vars = models.weight_decay_variables(model)
    x_all, y_all = tf.constant(xtr), tf.constant(ytr)
    seed_t = tf.constant(a.seed, tf.int64)
    relu_layers = ["conv1", "conv2", "local3"]
    probe_model = tf.keras.Model(model.input, [model.get_layer(n).output for n in relu_layers])
    probe_x = pre_eval(tf.constant(xtr[:256]))

    @tf.function
    def step(idx: tf.Tensor, step_no: tf.Tensor, lr: tf.Tensor):
        xb = pre_train(tf.gather(x_all, idx), tf.stack([seed_t, step_no]))
        labels = tf.gather(y_all, idx)
        yb = tf.one_hot(labels, model.output_shape[-1])
        with tf.GradientTape(persistent=True) as tape:
            probs = model(xb, training=True)
            loss = loss_fn(yb, probs)
            total = loss + models.CIFAR_WEIGHT_DECAY * tf.add_n([tf.nn.l2_loss(v) for v in decay_vars])
        g_loss = tape.gradient(loss, variables)
        grads = tape.gradient(total, variables)
        del tape
        for v, g in zip(variables, grads):
            v.assign_sub(lr * g)
        p_true = tf.reduce_sum(probs * yb, axis=-1)
        return (loss, tf.linalg.global_norm(g_loss), tf.linalg.global_norm(grads),
                tf.reduce_mean(tf.cast(p_true < a.epsilon, tf.float32)), tf.reduce_max(probs),
                tf.argmax(probs, axis=-1), tf.reduce_mean(tf.cast(p_true == 0.0, tf.float32)))

    @tf.function
    def val_accuracy(xv: tf.Tensor, yv: tf.Tensor) -> tf.Tensor:
        pred = tf.argmax(model(pre_eval(xv), training=False), axis=-1, output_type=tf.int32)
        return tf.reduce_mean(tf.cast(tf.equal(pred, yv), tf.float32))

    def dead_shares() -> dict[str, float]:
        acts = probe_model(probe_x, training=False)
        out_ = {}
        for name, act in zip(relu_layers, acts):
            flat = tf.reshape(act, [act.shape[0], -1]) if len(act.shape) == 2 else \
                tf.reshape(tf.reduce_max(act, axis=[1, 2]), [act.shape[0], -1])  # a conv channel: any position
            out_[name] = float(tf.reduce_mean(tf.cast(tf.reduce_max(flat, axis=0) <= 0.0, tf.float32)))
        return out_

    batches = BatchStream(len(xtr), a.batch, a.seed)
    rows, t0 = [], time.perf_counter()
    with open(out / f"{label}.jsonl", "w") as fh:
        for s in range(1, a.steps + 1):
            loss, gnorm, gnorm_total, below, pmax, pred, zero = step(tf.constant(batches.next()), tf.constant(s, tf.int64),
                                                               tf.constant(a.lr, tf.float32))
            row = {"step": s, "loss": float(loss), "grad_norm": float(gnorm), "grad_norm_with_decay": float(gnorm_total),
                   "p_true_below_eps": float(below), "p_true_zero": float(zero), "max_prob": float(pmax),
                   "classes_predicted": int(len(np.unique(pred.numpy())))}
            if s == 1 or s % a.probe_every == 0 or s == a.steps:
                row["dead_relu"] = dead_shares()
                row["val_accuracy"] = float(val_accuracy(tf.constant(x_val), tf.constant(y_val)))
            rows.append(row)
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            if not np.isfinite(row["loss"]):
                break
    last = rows[-1]
    peak = max(rows, key=lambda r: r["grad_norm"] if np.isfinite(r["grad_norm"]) else float("inf"))
    summary = {"label": label, "loss": a.loss, "reduction": a.reduction, "lr": a.lr,
               "epsilon_gradient": a.epsilon_gradient, "steps": last["step"],
               "grad_norm_step1": rows[0]["grad_norm"], "peak_grad_norm": peak["grad_norm"], "peak_step": peak["step"],
               "final_loss": last["loss"], "final_p_true_below_eps": last["p_true_below_eps"],
               "final_p_true_zero": last["p_true_zero"],
               "final_classes_predicted": last["classes_predicted"], "final_val_accuracy": last.get("val_accuracy"),
               **{f"final_dead_{k}": v for k, v in (last.get("dead_relu") or {}).items()},
               "seconds": round(time.perf_counter() - t0, 1), "data": source}
    path = out / "summary.csv"
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(summary))
        if new:
            w.writeheader()
        w.writerow(summary)
    print(json.dumps(summary))
    return 0


def plot(out: Path) -> Path:
    """OUT/trace.png: the traces of OUT side by side, one colour per trace (its file name)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    for path in sorted(out.glob("*.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        probes = [r for r in rows if "val_accuracy" in r]
        steps = [r["step"] for r in rows]
        line, = axes[0].plot(steps, [r["grad_norm"] for r in rows], label=path.stem)
        axes[1].plot(steps, [r["p_true_below_eps"] for r in rows], color=line.get_color())
        axes[2].plot([r["step"] for r in probes], [r["dead_relu"]["local3"] for r in probes], "o-",
                     color=line.get_color())
        axes[3].plot([r["step"] for r in probes], [r["val_accuracy"] for r in probes], "o-", color=line.get_color())
    axes[0].set_yscale("log")
    for ax, title in zip(axes, ("gradient norm of the loss", "share of the batch with p(true) < epsilon",
                                "dead local3 units (fixed batch)", "held-out accuracy")):
        ax.set_title(title)
        ax.set_xlabel("step")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "trace.png", dpi=110)
    plt.close(fig)
    return out / "trace.png"


if __name__ == "__main__":
    raise SystemExit(main())
