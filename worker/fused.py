"""Fused population training: K candidates of one spec trained as one model on one device.

Every candidate of a spec trains the same network on the same batches from the same initial weights;
only the loss differs.  So K of them are trained as one *fused* network (horizontal fusion, HFTA: Wang
et al., MLSys 2021) whose weights carry a model axis:

* the first convolution sees the one shared input batch: one convolution with K x C filters;
* later convolutions read only their own model's channels: one grouped convolution (K groups) where this
  TensorFlow build can differentiate it on this device, else K convolutions over a split of the channels,
  which need no grouped kernel at all (`conv_formulation`: TensorFlow's plain CPU kernels -- every CPU
  without oneDNN, i.e. without AVX-512-class features, or with TF_ENABLE_ONEDNN_OPTS=0 -- have no
  gradient for a grouped convolution; oneDNN and cuDNN do).  Both compute each model's convolution on
  exactly its own channels and weights, so either way model k sees what it sees alone;
* max pooling is per channel, local response normalization (CIFAR-10) is applied per model by
  reshaping (B, H, W, K*C) -> (B, H, W*K, C), which is free and keeps the channel window inside a model;
* Flatten turns (B, H, W, K*C) into (K, B, H*W*C), in Keras' own (h, w, c) order;
* dense layers are one batched matmul (K, B, I) @ (K, I, O);
* the K candidates' tree-built losses are computed in the same step and summed.  The K weight sets
  are disjoint, so under plain SGD each model gets exactly its own loss's gradient.

Equivalence with training the candidates one by one (`worker.train.Trainer`):

* initial weights: the reference Keras model is built right after `keras.utils.set_random_seed(seed)`
  exactly as the unfused trainer builds it, and its weights are stacked K times;
* batches: the same seeded `BatchStream`; CIFAR-10's augmentation is stateless in (seed, step);
* dropout: the reference model's own Dropout layer seed generator draws one mask per step with the
  noise shape (1, B, F) -- the very numbers the unfused layer draws for (B, F) -- shared by all K;
* learning rate, weight decay (CIFAR-10 local3/local4, per model) and the one-step-late non-finite
  check are the unfused trainer's.

What is *not* bit-identical: a grouped convolution or a batched matmul may sum in another order than
the single-model kernel, so weights differ from separate training at float32 rounding level, and the
difference grows over training -- fast for a loss whose gradient grows as 1/y_true, as baikal_cma's does.
Measured on a 2-core AVX2 CPU under both kernel families (`python bench/fused_drift.py`): after 12 steps at
lr 0.1 the mean step loss of ce and baikal within 5e-7 relative, baikal_cma's within 8.2e-4 -- as far as two
*separate* trainings of it drift apart on the two kernel families (3.3e-4); the same validation accuracy;
the tolerance GLO states is |fitness difference| <= 0.005 (in accuracy, a few validation images out of
thousands) -- far below what distinguishes two losses in a search.

Non-finite losses: a candidate whose loss is NaN/inf at step k is frozen at that step inside the graph
(its update masked with `tf.where`, never multiplied by 0, so a NaN cannot leak), is reported exactly
as the unfused trainer reports it (status "nonfinite", `nonfinite_step` k, steps_done k), and the
others go on untouched: no op mixes two models' values.  A collapsed candidate (worker/collapse.py) is
found by the same per-model evaluation pass and reported as the unfused trainer reports it too.

Timing fields of a fused candidate are amortized: `train_seconds`, `eval_seconds` and `wall_seconds`
are the group's divided by its size, `steps_per_second` is candidate-steps per second of the group
(so cost estimates made from it stay right); `extra` adds `fused` (the group size), `fused_index`
and the group's own `group_train_seconds` / `group_steps_per_second`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

import numpy as np

from worker import tf_env  # noqa: F401  -- TensorFlow's environment, before TensorFlow is imported

# isort: split

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from worker import models, steploop  # noqa: E402
from worker.collapse import CollapseDetector  # noqa: E402
from worker.spec import (  # noqa: E402
    DEFAULT_FUSE,
    CandidateResult,
    CandidateSpec,
    WorkerSpec,
)
from worker.tf_loss import FLOORED_SOFTMAX, build_model, make_loss  # noqa: E402

#: `GLO_PRECISION` (fused groups only): float32 (default), or mixed -- convolutions and matmuls in 16 bits,
#: float32 master weights, softmax and loss.  mixed_float16 needs a GPU (TensorFlow's CPU kernels have no
#: float16 grouped-convolution gradient); `make bench-gpu` checks whether results stay within tolerance.
COMPUTE_DTYPES = {"float32": tf.float32, "mixed_float16": tf.float16, "mixed_bfloat16": tf.bfloat16}
LOSS_SCALE = 1024.0


#: The two ways a fused net's later convolutions keep models apart (`conv_formulation`); a net of one model
#: has no groups (CONV_SINGLE).
CONV_GROUPED, CONV_SPLIT, CONV_SINGLE = "grouped", "split", "single"
#: `GLO_FUSED_CONV`: auto (default: probe), or force one formulation (tests and benchmarks compare them).
CONV_CHOICES = ("auto", CONV_GROUPED, CONV_SPLIT)
_conv_probe: dict[str, bool] = {}


def grouped_conv_differentiable(dtype: tf.DType = tf.float32) -> bool:
    """Whether a grouped convolution and both its gradients run on this process's default device.

    Asked of TensorFlow itself, once per process and dtype, on a tiny tensor inside a `tf.function` (the
    way training runs it): which kernels exist depends on the build, the device and the CPU's features
    (oneDNN is enabled only on AVX-512-class CPUs), not on anything a name would tell reliably."""
    key = dtype.name
    if key not in _conv_probe:
        x = tf.zeros([1, 4, 4, 4], dtype)
        w = tf.Variable(tf.zeros([3, 3, 2, 4], dtype))  # in-depth 2 against 4 input channels: 2 groups

        @tf.function
        def probe():
            with tf.GradientTape() as tape:
                tape.watch(x)
                out = tf.reduce_sum(tf.nn.conv2d(x, w, 1, "SAME"))
            return tape.gradient(out, [x, w])

        try:
            probe()
            _conv_probe[key] = True
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError, tf.errors.NotFoundError):
            _conv_probe[key] = False
    return _conv_probe[key]


def conv_formulation(dtype: tf.DType = tf.float32) -> str:
    """CONV_GROUPED or CONV_SPLIT: `GLO_FUSED_CONV` when it forces one, else grouped where it is differentiable."""
    choice = os.environ.get("GLO_FUSED_CONV", "auto")
    if choice not in CONV_CHOICES:
        raise ValueError(f"GLO_FUSED_CONV must be one of {', '.join(CONV_CHOICES)}, got {choice!r}")
    if choice != "auto":
        return choice
    return CONV_GROUPED if grouped_conv_differentiable(dtype) else CONV_SPLIT


def precision_from_env() -> str:
    value = os.environ.get("GLO_PRECISION", "float32")
    if value not in COMPUTE_DTYPES:
        raise ValueError(f"GLO_PRECISION must be one of {', '.join(COMPUTE_DTYPES)}, got {value!r}")
    return value


def default_fuse(device: str) -> int:
    """The fuse width for a device name as `worker.train.device_name` gives it."""
    return DEFAULT_FUSE["CPU" if device == "CPU" else "GPU"]


def fuse_width(spec: WorkerSpec, device: str) -> int:
    """How many candidates train at once: the spec's `fuse`, else the device's default; never more than
    the spec has.  A custom model (`spec.model`) trains alone (the spec refuses fuse > 1 for it)."""
    if spec.model is not None:  # a user's model: its layers need not be the kinds FusedNet stacks
        return 1
    k = spec.fuse if spec.fuse is not None else default_fuse(device)
    return max(1, min(k, len(spec.candidates)))


class FusedNet:
    """K copies of a Keras model (the paper's MNIST CNN or CIFAR-10 network) as one set of stacked weights.

    Built from the reference model's layers, in order; a layer kind it does not know is refused.
    `__call__(x, training)` -> probabilities (K, B, classes), float32.  Weights are float32 master
    variables; with a mixed `compute_dtype` the convolutions and matmuls run in 16 bits and the softmax in 32.
    """

    def __init__(self, reference: keras.Model, k: int, compute_dtype: str = "float32"):
        if k < 1:
            raise ValueError(f"fuse width must be >= 1, got {k}")
        self.k = k
        self.reference = reference  # keeps the Dropout layers' seed generators alive
        self.dtype = COMPUTE_DTYPES[compute_dtype]
        self.conv = conv_formulation(self.dtype) if k > 1 else CONV_SINGLE
        self.variables: list[tf.Variable] = []
        self._model_axis: list[tuple[str, int]] = []  # per variable: ("channels", C), ("leading", 0) or ("row", 0)
        self._ops: list[Callable[[tf.Tensor, bool], tf.Tensor]] = []
        self.decay_variables: list[tf.Variable] = []
        decay = models.weight_decay_variables(reference)
        layout, channels = "shared", None  # shared (B,H,W,C) | channels (B,H,W,K*C) | models (K,B,F)
        for layer in reference.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            if isinstance(layer, keras.layers.Conv2D):
                if layout == "models" or layer.data_format != "channels_last" or layer.groups != 1:
                    raise ValueError(f"cannot fuse layer {layer.name}")
                self._ops.append(self._conv(layer, grouped=layout == "channels"))
                layout, channels = "channels", layer.filters
            elif isinstance(layer, keras.layers.MaxPooling2D):
                if layout == "models":
                    raise ValueError(f"cannot fuse layer {layer.name} after Flatten")
                self._ops.append(self._maxpool(layer))
            elif isinstance(layer, models._LRN):
                if layout == "models":
                    raise ValueError(f"cannot fuse layer {layer.name} after Flatten")
                self._ops.append(self._lrn(layer, grouped=layout == "channels", channels=channels))
            elif isinstance(layer, keras.layers.Flatten):
                self._ops.append(self._flatten(layout, channels))
                layout = "models"
            elif isinstance(layer, keras.layers.Dense):
                if layout != "models":
                    raise ValueError(f"cannot fuse dense layer {layer.name} before Flatten")
                self._ops.append(self._dense(layer, decay=any(layer.kernel is v for v in decay)))
            elif isinstance(layer, keras.layers.Dropout):
                if layout != "models":
                    raise ValueError(f"cannot fuse dropout layer {layer.name} before Flatten")
                self._ops.append(self._dropout(layer))
            else:
                raise ValueError(f"cannot fuse layer {layer.name} ({type(layer).__name__})")
        if layout != "models":
            raise ValueError("the model must end in dense layers")

    # -- layers ------------------------------------------------------------------------------------
    def _var(self, value: np.ndarray, axis: tuple[str, int], name: str) -> tf.Variable:
        v = tf.Variable(value.astype(np.float32), name=name)
        self.variables.append(v)
        self._model_axis.append(axis)
        return v

    def _activation(self, layer) -> Callable[[tf.Tensor], tf.Tensor]:
        name = getattr(layer.activation, "__name__", "linear")
        if name == "relu":
            return tf.nn.relu
        if name == "linear":
            return lambda h: h
        if name == "softmax":
            return lambda h: tf.nn.softmax(tf.cast(h, tf.float32), axis=-1)
        if name == FLOORED_SOFTMAX:  # worker.tf_loss.build_model's: the same values, its own gradient
            floored = layer.activation
            return lambda h: floored(tf.cast(h, tf.float32))
        raise ValueError(f"cannot fuse activation {name!r} of layer {layer.name}")

    def _conv(self, layer, grouped: bool) -> Callable:
        """The first convolution reads the one shared batch (K x C filters, no groups); later ones read
        (B, H, W, K*Cin) against a kernel of Cin input channels: model k's filters see only its channels."""
        k = self.k
        c = layer.filters
        kernel = self._var(np.concatenate([layer.kernel.numpy()] * k, axis=-1), ("channels", c), layer.name + "_k")
        bias = self._var(np.tile(layer.bias.numpy(), k), ("channels", c), layer.name + "_b") if layer.use_bias else None
        act = self._activation(layer)
        strides, padding, dil = tuple(layer.strides), layer.padding.upper(), tuple(layer.dilation_rate)

        split = grouped and self.conv == CONV_SPLIT

        def op(h, training):
            w = tf.cast(kernel, self.dtype)
            if split:  # K plain convolutions, each on its model's channels and filters
                out = tf.concat([tf.nn.conv2d(hk, wk, strides=strides, padding=padding, dilations=dil)
                                 for hk, wk in zip(tf.split(h, k, axis=-1), tf.split(w, k, axis=-1))], axis=-1)
            else:  # input channels K*Cin against a kernel of Cin: one grouped convolution (K groups)
                out = tf.nn.conv2d(h, w, strides=strides, padding=padding, dilations=dil)
            if bias is not None:
                out = out + tf.cast(bias, self.dtype)
            return act(out)

        return op

    def _maxpool(self, layer) -> Callable:
        ksize, strides, padding = tuple(layer.pool_size), tuple(layer.strides), layer.padding.upper()
        return lambda h, training: tf.nn.max_pool2d(h, ksize, strides, padding)

    def _lrn(self, layer, grouped: bool, channels: int | None) -> Callable:
        if not grouped:
            return lambda h, training: layer.call(h)

        def op(h, training):
            s = tf.shape(h)
            per_model = tf.reshape(h, [s[0], s[1], s[2] * self.k, channels])  # the window stays in one model
            return tf.reshape(layer.call(per_model), s)

        return op

    def _flatten(self, layout: str, channels: int | None) -> Callable:
        k = self.k

        def op(h, training):
            s = tf.shape(h)
            if layout == "shared":
                return tf.broadcast_to(tf.reshape(h, [1, s[0], -1]), [k, s[0], tf.reduce_prod(s[1:])])
            h = tf.reshape(h, [s[0], s[1], s[2], k, channels])
            h = tf.transpose(h, [3, 0, 1, 2, 4])  # (K, B, H, W, C): Keras' flatten order per model
            return tf.reshape(h, [k, s[0], s[1] * s[2] * channels])

        return op

    def _dense(self, layer, decay: bool) -> Callable:
        k = self.k
        kernel = self._var(np.stack([layer.kernel.numpy()] * k), ("leading", 0), layer.name + "_k")
        if decay:
            self.decay_variables.append(kernel)
        bias = (self._var(np.stack([layer.bias.numpy()[None, :]] * k), ("row", 0), layer.name + "_b")
                if layer.use_bias else None)
        act = self._activation(layer)

        def op(h, training):
            out = tf.matmul(h, tf.cast(kernel, self.dtype))  # (K, B, I) @ (K, I, O): one batched matmul
            if bias is not None:
                out = out + tf.cast(bias, self.dtype)
            return act(out)

        return op

    def _dropout(self, layer) -> Callable:
        rate = float(layer.rate)

        def op(h, training):
            if not training or rate <= 0:
                return h
            # One draw of the layer's own generator per step, noise shape (1, B, F): the same numbers the
            # unfused layer draws for (B, F), so every model gets separate training's mask.
            return keras.random.dropout(h, rate, noise_shape=(1, None, None), seed=layer.seed_generator)

        return op

    # -- use ---------------------------------------------------------------------------------------
    def __call__(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        h = tf.cast(x, self.dtype)
        for op in self._ops:
            h = op(h, training)
        return tf.cast(h, tf.float32)

    def update_masks(self, ok: tf.Tensor) -> list[tf.Tensor]:
        """Per variable, a boolean mask broadcastable to it: True where the weight belongs to a model in `ok`."""
        out = []
        for v, (kind, c) in zip(self.variables, self._model_axis):
            if kind == "channels":
                out.append(tf.repeat(ok, c))  # the model axis is the last one, in blocks of C
            else:
                out.append(tf.reshape(ok, [self.k] + [1] * (len(v.shape) - 1)))
        return out

    def model_weights(self, i: int) -> list[np.ndarray]:
        """Model i's weights in the reference model's order and layout (for checks and export)."""
        out = []
        for v, (kind, c) in zip(self.variables, self._model_axis):
            value = v.numpy()
            if kind == "channels":
                out.append(value[..., i * c:(i + 1) * c])
            elif kind == "row":
                out.append(value[i, 0])
            else:
                out.append(value[i])
        return out


def make_fused_step(net: FusedNet, loss_fns: Sequence[Callable], x_all: tf.Tensor, y_all: tf.Tensor,
                    pre_train: Callable, seed: int, alive: tf.Variable, jit: bool = False) -> Callable:
    """step(idx int32[B], step_no int64, lr float32) -> losses float32[K]: one plain-SGD update of every
    model still alive whose loss at this step is finite; the others' weights are left as they are."""
    variables = net.variables
    seed_t = tf.constant(seed, tf.int64)
    # float16 activations: static loss scaling keeps small gradients from flushing to zero
    scale = tf.constant(LOSS_SCALE, tf.float32) if net.dtype == tf.float16 else None

    @tf.function(jit_compile=jit)
    def step(idx: tf.Tensor, step_no: tf.Tensor, lr: tf.Tensor) -> tf.Tensor:
        xb = pre_train(tf.gather(x_all, idx), tf.stack([seed_t, step_no]))
        yb = tf.one_hot(tf.gather(y_all, idx), net.reference.output_shape[-1])
        with tf.GradientTape() as tape:
            probs = net(xb, training=True)
            losses = tf.stack([fn(yb, probs[i]) for i, fn in enumerate(loss_fns)])
            total = tf.reduce_sum(losses)
            if net.decay_variables:
                total = total + models.CIFAR_WEIGHT_DECAY * tf.add_n([tf.nn.l2_loss(v) for v in net.decay_variables])
            if scale is not None:
                total = total * scale
        grads = tape.gradient(total, variables)
        if scale is not None:  # a power of two: unscaling is exact
            grads = [g / scale for g in grads]
        ok = tf.logical_and(alive, tf.math.is_finite(losses))

        def update_all():  # the common case: exactly the unfused trainer's v -= lr * g
            for v, g in zip(variables, grads):
                v.assign_sub(lr * g)
            return tf.constant(True)

        def update_alive():  # a frozen model keeps its weights; where(), not a 0 factor: NaN * 0 is NaN
            for v, g, mask in zip(variables, grads, net.update_masks(ok)):
                v.assign(tf.where(mask, v - lr * g, v))
            return tf.constant(False)

        tf.cond(tf.reduce_all(ok), update_all, update_alive)
        alive.assign(ok)
        return losses

    return step


def make_fused_eval(net: FusedNet, pre_eval: Callable, image_shape: tuple[int, ...], jit: bool = False):
    """(accuracy(x, y, detectors=None) -> [K] floats, histogram(x) -> [K] {edges, counts}) in batches of
    EVAL_BATCH."""
    from worker.schedule import EVAL_BATCH, HISTOGRAM_EDGES

    sig = [tf.TensorSpec((None, *image_shape), tf.uint8)]

    @tf.function(jit_compile=jit, input_signature=[*sig, tf.TensorSpec((None,), tf.int32)])
    def correct(xb: tf.Tensor, yb: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        probs = net(pre_eval(xb), training=False)  # (K, B, classes)
        pred = tf.argmax(probs, axis=-1, output_type=tf.int32)  # (K, B)
        return tf.reduce_sum(tf.cast(tf.equal(pred, yb[None, :]), tf.int32), axis=1), probs

    @tf.function(input_signature=sig)
    def probs(xb: tf.Tensor) -> tf.Tensor:
        return net(pre_eval(xb), training=False)

    def accuracy(x: np.ndarray, y: np.ndarray, detectors: Sequence[CollapseDetector] | None = None) -> list[float]:
        """Per model; with K detectors, model m's probabilities of the same pass feed detectors[m]."""
        if len(x) == 0:
            return [0.0] * net.k
        hits = np.zeros(net.k, np.int64)
        for i in range(0, len(x), EVAL_BATCH):
            n, probs = correct(x[i:i + EVAL_BATCH], y[i:i + EVAL_BATCH])
            hits += n.numpy()
            if detectors is not None:
                p = probs.numpy()
                for m, det in enumerate(detectors):
                    det.update(p[m])
        return [int(h) / len(x) for h in hits]

    def histogram(x: np.ndarray) -> list[dict[str, list[float]]]:
        counts = np.zeros((net.k, len(HISTOGRAM_EDGES) - 1), np.int64)
        for i in range(0, len(x), EVAL_BATCH):
            p = np.clip(probs(x[i:i + EVAL_BATCH]).numpy(), 0.0, 1.0)
            for m in range(net.k):
                counts[m] += np.histogram(p[m].ravel(), bins=HISTOGRAM_EDGES)[0]
        return [{"edges": [float(e) for e in HISTOGRAM_EDGES], "counts": [int(c) for c in row]} for row in counts]

    return accuracy, histogram


def build_fused(spec: WorkerSpec, k: int, compute_dtype: str = "float32") -> tuple[FusedNet, Callable, Callable]:
    """(net, pre_train, pre_eval): the reference model built exactly as the unfused trainer builds it."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(spec.seed)
    model, pre_train, pre_eval = build_model(spec.task, spec.epsilon, spec.epsilon_gradient)
    return FusedNet(model, k, compute_dtype), pre_train, pre_eval


class FusedTrainer:
    """Trains groups of a spec's candidates as fused models; shares the unfused trainer's data tensors."""

    def __init__(self, trainer, compute_dtype: str = "float32"):
        self.base = trainer  # a worker.train.Trainer: spec, data, device tensors, jit, determinism
        self.compute_dtype = compute_dtype

    def train_group(self, cands: Sequence[CandidateSpec]) -> list[CandidateResult]:
        """Results in `cands` order.  Out of memory: the group is split in halves (one candidate alone is the
        unfused trainer's, whose out-of-memory is a bad node).  Another TensorFlow runtime error: the
        group's candidates are trained one by one, so that an error stays with the candidate causing it."""
        if len(cands) == 1:
            return [self.base.train(cands[0])]
        t0 = time.perf_counter()
        try:
            results = self._train(list(cands))
        except (tf.errors.ResourceExhaustedError, MemoryError):
            half = len(cands) // 2
            return self.train_group(cands[:half]) + self.train_group(cands[half:])
        except tf.errors.OpError as exc:
            note = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"
            results = [self.base.train(c) for c in cands]
            for r in results:
                r.extra["fused_fallback"] = note  # trained alone because the fused group failed so
            return results
        wall = (time.perf_counter() - t0) / len(cands)
        for r in results:
            r.wall_seconds = wall
        return results

    def _train(self, cands: list[CandidateSpec]) -> list[CandidateResult]:
        base, spec, data = self.base, self.base.spec, self.base.data
        n = len(cands)
        net, pre_train, pre_eval = build_fused(spec, n, self.compute_dtype)
        alive_var = tf.Variable(tf.ones([n], tf.bool), trainable=False)
        loss_fns = [make_loss(c.tree, spec.epsilon, spec.class_reduction, spec.epsilon_gradient, c.scale)
                    for c in cands]
        tf_step = make_fused_step(net, loss_fns, base.x_train, base.y_train, pre_train, spec.seed, alive_var,
                                  base.jit)
        accuracy, histogram = make_fused_eval(net, pre_eval, data.x_val.shape[1:], base.jit)

        def step(idx: np.ndarray, s: int, lr: float) -> tf.Tensor:
            return tf_step(tf.constant(idx), tf.constant(s, tf.int64), tf.constant(lr, tf.float32))

        loop = steploop.run_steps(spec, data, n, step, accuracy)
        group = {"fused": n, "group_train_seconds": loop.train_s, "fused_conv": net.conv}
        if self.compute_dtype != "float32":
            group["compute_dtype"] = self.compute_dtype
        return steploop.results(spec, data, loop, cands, accuracy, histogram, base._result,
                                lambda i: {**base.extra(), **group, "fused_index": i})
