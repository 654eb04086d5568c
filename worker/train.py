"""Train each candidate of a spec and measure its validation accuracy (the GLO fitness).

One process: TensorFlow is imported and the data loaded once; candidates are trained one after
another and the result file is rewritten atomically after each, so a killed job loses only the
candidate in training.

Determinism: `keras.utils.set_random_seed(seed)` + op determinism; each candidate rebuilds the
model right after reseeding, so every candidate starts from the same weights and sees the same
batch order and dropout masks -- only the loss differs.

The step loop itself -- the one-step-late non-finite check (status "nonfinite", `nonfinite_step` k), the
curve, the result fields -- is worker/steploop.py's, shared with the fused trainer: a single model is a
fused group of one.

Collapsed trainings: a net frozen at the clip's zero-gradient corner (every validation image one class,
the other classes below epsilon; worker/collapse.py) keeps a finite loss, so the final validation pass
also feeds a `CollapseDetector`: status "collapsed", fitness 0, the verdict and the accuracies measured in
`extra["collapse"]` (curve points are checked too, to say since when).  The paper's NaN rule, applied to
the failure that does not produce a NaN.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np

from worker import tf_env  # noqa: F401  -- TensorFlow's environment, before TensorFlow is imported

# isort: split

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from worker import models, steploop  # noqa: E402
from worker.collapse import CollapseDetector  # noqa: E402
from worker.data import TaskData  # noqa: E402
from worker.schedule import EVAL_BATCH, HISTOGRAM_EDGES  # noqa: E402
from worker.spec import (  # noqa: E402
    STATUS_ERROR,
    BadNodeError,
    CandidateResult,
    CandidateSpec,
    WorkerSpec,
    write_results,
)
from worker.tf_loss import build_model, make_loss  # noqa: E402


def device_name() -> str:
    """The GPU's name when there is one, else "CPU"."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        try:
            return str(tf.config.experimental.get_device_details(gpus[0]).get("device_name") or gpus[0].name)
        except Exception:  # details are best effort; the device is still a GPU
            return gpus[0].name
    return "CPU"


def use_xla() -> bool:
    """XLA only when asked (GLO_XLA=1), and then without op determinism.

    TF 2.21 refuses to XLA-compile the MaxPool gradient under op determinism ("GPU MaxPool
    gradient ops do not yet have a deterministic XLA implementation", raised on the CPU too), and
    GLO needs "same spec + seed → same fitness"; on this CPU XLA did not make the step faster either
    (tests/bench/bench_worker.py measures it).  So the default is no XLA, deterministic.
    """
    return os.environ.get("GLO_XLA", "0") == "1"


def configure_determinism(seed: int, deterministic: bool = True) -> None:
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def make_train_step(model: keras.Model, loss_fn: Callable, x_all: tf.Tensor, y_all: tf.Tensor,
                    pre_train: Callable, seed: int, jit: bool = False) -> Callable:
    """step(idx int32[B], step_no int64, lr float32) → loss: one plain-SGD update on batch `idx`.

    Plain SGD is written out (v -= lr·g) rather than taken from a Keras optimizer: it is exactly
    the paper's optimizer and leaves nothing stateful to reset between candidates.
    """
    variables = model.trainable_variables
    decay_vars = models.weight_decay_variables(model)
    seed_t = tf.constant(seed, tf.int64)
    classes = model.output_shape[-1]  # one-hot labels as wide as the softmax

    @tf.function(jit_compile=jit)
    def step(idx: tf.Tensor, step_no: tf.Tensor, lr: tf.Tensor) -> tf.Tensor:
        xb = pre_train(tf.gather(x_all, idx), tf.stack([seed_t, step_no]))
        yb = tf.one_hot(tf.gather(y_all, idx), classes)
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
            total = loss
            if decay_vars:
                total = loss + models.CIFAR_WEIGHT_DECAY * tf.add_n([tf.nn.l2_loss(v) for v in decay_vars])
        grads = tape.gradient(total, variables)
        for v, g in zip(variables, grads):
            v.assign_sub(lr * g)
        return loss

    return step



def make_probability_histogram(model: keras.Model, pre_eval: Callable, image_shape: tuple[int, ...],
                               dtype: tf.DType = tf.uint8):
    """histogram(x uint8, or a custom task's float32) -> counts of every output probability (all classes of
    all images) per bin."""

    @tf.function(input_signature=[tf.TensorSpec((None, *image_shape), dtype)])
    def probs(xb: tf.Tensor) -> tf.Tensor:
        return model(pre_eval(xb), training=False)

    def histogram(x: np.ndarray) -> dict[str, list[float]]:
        counts = np.zeros(len(HISTOGRAM_EDGES) - 1, np.int64)
        for i in range(0, len(x), EVAL_BATCH):
            p = np.clip(probs(x[i:i + EVAL_BATCH]).numpy().ravel(), 0.0, 1.0)
            counts += np.histogram(p, bins=HISTOGRAM_EDGES)[0]
        return {"edges": [float(e) for e in HISTOGRAM_EDGES], "counts": [int(c) for c in counts]}

    return histogram


def make_accuracy(model: keras.Model, pre_eval: Callable, image_shape: tuple[int, ...], jit: bool = False,
                  dtype: tf.DType = tf.uint8):
    """accuracy(x uint8 -- a custom task's may be float32 --, y int32, detector=None) in batches of EVAL_BATCH.
    With a `CollapseDetector` the same pass feeds it every batch's probabilities (one pass over the validation
    set measures both)."""

    @tf.function(jit_compile=jit, input_signature=[tf.TensorSpec((None, *image_shape), dtype),
                                                   tf.TensorSpec((None,), tf.int32)])
    def correct(xb: tf.Tensor, yb: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        probs = model(pre_eval(xb), training=False)
        pred = tf.argmax(probs, axis=-1, output_type=tf.int32)
        return tf.reduce_sum(tf.cast(tf.equal(pred, yb), tf.int32)), probs

    def accuracy(x: np.ndarray, y: np.ndarray, detector: CollapseDetector | None = None) -> float:
        if len(x) == 0:
            return 0.0
        hits = 0
        for i in range(0, len(x), EVAL_BATCH):
            n, probs = correct(x[i:i + EVAL_BATCH], y[i:i + EVAL_BATCH])
            hits += int(n)
            if detector is not None:
                detector.update(probs.numpy())
        return hits / len(x)

    return accuracy


class Trainer:
    """Holds the data (as device tensors) and trains candidates of one spec."""

    def __init__(self, spec: WorkerSpec, data: TaskData, jit: bool | None = None, deterministic: bool = True):
        self.spec, self.data = spec, data
        self.jit = use_xla() if jit is None else jit
        self.deterministic = deterministic  # what configure_determinism was told (recorded in results)
        self.x_train = tf.constant(data.x_train)
        self.y_train = tf.constant(data.y_train)
        self.device = device_name()
        self.spec_hash = spec.spec_hash()

    def train(self, cand: CandidateSpec) -> CandidateResult:
        """One candidate; TensorFlow runtime errors (e.g. OOM) become status "error"."""
        t0 = time.perf_counter()
        try:
            result = self._train(cand, t0)
        except (tf.errors.ResourceExhaustedError, MemoryError) as exc:
            # Every candidate trains the same model on the same batches: running out of memory is the
            # machine's doing, not the loss's, so the job is retried elsewhere instead of scoring 0.
            msg = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise BadNodeError(f"out of memory on {self.device}: {msg}") from exc
        except tf.errors.OpError as exc:
            msg = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else type(exc).__name__
            result = self._result(cand, STATUS_ERROR, 0.0, error=f"{type(exc).__name__}: {msg}")
        result.wall_seconds = time.perf_counter() - t0
        return result

    def _result(self, cand: CandidateSpec, status: str, fitness: float, **kw) -> CandidateResult:
        from worker.platform_info import platform_info

        kw["extra"] = {**kw.get("extra", {}), "platform": platform_info(self.device)}
        return CandidateResult(candidate_id=cand.id, status=status, fitness=fitness, device=self.device,
                               tensorflow_version=tf.__version__, spec_hash=self.spec_hash, **kw)

    def _train(self, cand: CandidateSpec, t0: float) -> CandidateResult:
        spec, data = self.spec, self.data
        keras.backend.clear_session()
        keras.utils.set_random_seed(spec.seed)
        model, pre_train, pre_eval = build_model(spec.task, spec.epsilon, spec.epsilon_gradient, spec, data)
        loss = make_loss(cand.tree, spec.epsilon, spec.class_reduction, spec.epsilon_gradient, cand.scale)
        tf_step = make_train_step(model, loss, self.x_train, self.y_train, pre_train, spec.seed, self.jit)
        dtype = tf.as_dtype(data.x_val.dtype)
        one_accuracy = make_accuracy(model, pre_eval, data.x_val.shape[1:], self.jit, dtype)

        def step(idx: np.ndarray, s: int, lr: float) -> tf.Tensor:
            return tf_step(tf.constant(idx), tf.constant(s, tf.int64), tf.constant(lr, tf.float32))

        def accuracy(x: np.ndarray, y: np.ndarray, dets: list[CollapseDetector] | None) -> list[float]:
            return [one_accuracy(x, y, dets[0] if dets else None)]

        def histogram(x: np.ndarray) -> list[dict[str, list[float]]]:
            return [make_probability_histogram(model, pre_eval, x.shape[1:], dtype)(x)]

        loop = steploop.run_steps(spec, data, 1, step, accuracy)
        return steploop.results(spec, data, loop, [cand], accuracy, histogram, self._result,
                                lambda i: self.extra())[0]

    def extra(self) -> dict[str, object]:
        """The result fields every candidate of this trainer shares (a fused group's add theirs)."""
        return {"xla": self.jit, "deterministic": self.deterministic, "data_source": self.data.source}


def run_spec(spec: WorkerSpec, data: TaskData, out_path: str | os.PathLike[str],
             log: Callable[[str], None] | None = None) -> list[CandidateResult]:
    """Train every candidate in order, rewriting `out_path` atomically after each (a fused group: after
    the group).  With a fuse width K > 1 (the spec's `fuse`, else the device's default) the candidates are
    trained K at a time as one fused model (worker/fused.py); the results are the same per candidate
    within the tolerance stated there, and come in the spec's order."""
    jit = use_xla()
    configure_determinism(spec.seed, deterministic=not jit)
    trainer = Trainer(spec, data, jit=jit, deterministic=not jit)
    results: list[CandidateResult] = []
    from worker.fused import FusedTrainer, fuse_width, precision_from_env

    k = fuse_width(spec, trainer.device)
    fused = FusedTrainer(trainer, compute_dtype=precision_from_env()) if k > 1 else None
    pending = list(spec.candidates)
    while pending:
        group, pending = pending[:k], pending[k:]
        batch = fused.train_group(group) if fused is not None and len(group) > 1 else [trainer.train(group[0])]
        for cand, result in zip(group, batch):
            results.append(result)
            if log:
                log(f"{cand.id}: {result.status} fitness={result.fitness:.4f} "
                    f"train={result.train_seconds:.1f}s wall={result.wall_seconds:.1f}s"
                    + (f" (fused x{result.extra['fused']})" if result.extra.get("fused") else ""))
        write_results(out_path, trainer.spec_hash, results)
    return results
