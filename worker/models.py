"""The paper's two networks and their input pipelines (Gonzalez & Miikkulainen 2020, Sec. 4).

Images arrive as uint8 batches; preprocessing runs inside the training step's graph so that the
whole data set can stay on the device as uint8 and only batch indices cross from Python.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from worker.spec import TASK_CLASSES, TASK_NETWORK, SpecError

CIFAR_CROP = 24

# CIFAR-10 details the paper leaves open follow the TensorFlow CIFAR-10 tutorial model it cites
# (tensorflow/models tutorials/image/cifar10/cifar10.py):
#   * LRN: depth_radius=4, bias (k)=1.0, alpha=0.001/9, beta=0.75.
#   * L2 weight decay (0.004 * sum(w^2) / 2, i.e. tf.nn.l2_loss) only on the two hidden dense
#     layers' kernels (local3, local4); convolutions and the output layer get none.
#   * Initializers: truncated normal, stddev 5e-2 (convs), 0.04 (dense 384/192), 1/192 (output);
#     biases 0 (conv1, output) and 0.1 (conv2, dense layers).  Pools are 3x3 stride 2 'SAME'.
#   * Augmentation: 24x24 random crop, left-right flip, brightness max_delta 63 (0..255 scale),
#     contrast in [0.2, 1.8], per-image standardization; evaluation uses the central crop.
# The paper (and the issue) make the 192-unit layer linear; the tutorial uses ReLU there.  We follow
# the paper.  The tutorial's moving average of weights for evaluation is not used.
CIFAR_WEIGHT_DECAY = 0.004
CIFAR_LRN = {"depth_radius": 4, "bias": 1.0, "alpha": 0.001 / 9.0, "beta": 0.75}
CIFAR_LR_DECAY_EPOCHS = 350
CIFAR_LR_DECAY_FACTOR = 0.1


def mnist_model(num_classes: int = 10) -> keras.Model:
    """5x5 conv 32 → pool → 5x5 conv 64 → pool → dense 1024 → dropout 0.4 → dense 10 softmax.

    'same' padding and Keras' default (Glorot uniform) init, as in the TensorFlow layers
    tutorial (cnn_mnist) the paper's MNIST model comes from.
    """
    inp = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(32, 5, padding="same", activation="relu")(inp)
    h = keras.layers.MaxPooling2D(2, 2)(h)
    h = keras.layers.Conv2D(64, 5, padding="same", activation="relu")(h)
    h = keras.layers.MaxPooling2D(2, 2)(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(1024, activation="relu")(h)
    h = keras.layers.Dropout(0.4)(h)
    out = keras.layers.Dense(num_classes, activation="softmax")(h)
    return keras.Model(inp, out, name="glo_mnist")


class _LRN(keras.layers.Layer):
    """Local response normalization (no Keras layer exists for it)."""

    def call(self, x):
        return tf.nn.local_response_normalization(x, **CIFAR_LRN)


def cifar10_model(num_classes: int = 10) -> keras.Model:
    """The cited TF tutorial's CIFAR-10 network; see the module comment for the choices made.  CIFAR-100 trains
    it with 100 outputs (the name stays: it is the same network, and its weight decay is found by it)."""
    tn = keras.initializers.TruncatedNormal
    inp = keras.Input((CIFAR_CROP, CIFAR_CROP, 3))
    h = keras.layers.Conv2D(64, 5, padding="same", activation="relu", kernel_initializer=tn(stddev=5e-2),
                            bias_initializer="zeros", name="conv1")(inp)
    h = keras.layers.MaxPooling2D(3, 2, padding="same")(h)
    h = _LRN(name="norm1")(h)
    h = keras.layers.Conv2D(64, 5, padding="same", activation="relu", kernel_initializer=tn(stddev=5e-2),
                            bias_initializer=keras.initializers.Constant(0.1), name="conv2")(h)
    h = _LRN(name="norm2")(h)
    h = keras.layers.MaxPooling2D(3, 2, padding="same")(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(384, activation="relu", kernel_initializer=tn(stddev=0.04),
                           bias_initializer=keras.initializers.Constant(0.1), name="local3")(h)
    h = keras.layers.Dense(192, activation=None, kernel_initializer=tn(stddev=0.04),
                           bias_initializer=keras.initializers.Constant(0.1), name="local4")(h)
    out = keras.layers.Dense(num_classes, activation="softmax", kernel_initializer=tn(stddev=1 / 192.0),
                             bias_initializer="zeros", name="softmax_linear")(h)
    return keras.Model(inp, out, name="glo_cifar10")


def weight_decay_variables(model: keras.Model) -> list:
    """Kernels that get L2 weight decay (CIFAR-10 only: the tutorial's local3 and local4)."""
    if model.name != "glo_cifar10":
        return []
    return [model.get_layer(n).kernel for n in ("local3", "local4")]


# -- input pipelines (graph code, batched) --------------------------------------------------
def mnist_eval(x: tf.Tensor) -> tf.Tensor:
    """uint8 (B, 28, 28) → float32 (B, 28, 28, 1) in [0, 1]."""
    return tf.cast(x, tf.float32)[..., None] / 255.0


def mnist_train(x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    del seed  # the paper's MNIST pipeline has no augmentation
    return mnist_eval(x)


def cifar10_eval(x: tf.Tensor) -> tf.Tensor:
    """Central 24x24 crop + per-image standardization."""
    off = (32 - CIFAR_CROP) // 2
    x = tf.cast(x[:, off:off + CIFAR_CROP, off:off + CIFAR_CROP, :], tf.float32)
    return tf.image.per_image_standardization(x)


def cifar10_train(x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Per-image random crop, flip, brightness, contrast, then standardization.

    Vectorized with stateless RNG keyed by `seed` (shape [2], e.g. (spec seed, step)), so a
    batch's augmentation is a pure function of the seed and the step: reproducible, and no
    per-image map_fn.
    """
    b = tf.shape(x)[0]
    seeds = tf.random.experimental.stateless_split(seed, 5)
    span = 32 - CIFAR_CROP + 1
    oy = tf.random.stateless_uniform([b], seeds[0], 0, span, dtype=tf.int32)
    ox = tf.random.stateless_uniform([b], seeds[1], 0, span, dtype=tf.int32)
    r = tf.range(CIFAR_CROP)
    x = tf.gather(x, oy[:, None] + r[None, :], axis=1, batch_dims=1)  # (B, 24, 32, 3)
    x = tf.gather(x, ox[:, None] + r[None, :], axis=2, batch_dims=1)  # (B, 24, 24, 3)
    x = tf.cast(x, tf.float32)
    flip = tf.random.stateless_uniform([b, 1, 1, 1], seeds[2]) < 0.5
    x = tf.where(flip, tf.reverse(x, axis=[2]), x)
    x = x + tf.random.stateless_uniform([b, 1, 1, 1], seeds[3], -63.0, 63.0)
    factor = tf.random.stateless_uniform([b, 1, 1, 1], seeds[4], 0.2, 1.8)
    mean = tf.reduce_mean(x, axis=[1, 2], keepdims=True)  # tf.image.adjust_contrast: per channel
    x = (x - mean) * factor + mean
    return tf.image.per_image_standardization(x)


def build(task: str) -> tuple[keras.Model, object, object]:
    """(model, train preprocessing, eval preprocessing) of a task."""
    network = TASK_NETWORK.get(task)
    if network == "mnist":
        return mnist_model(TASK_CLASSES[task]), mnist_train, mnist_eval
    if network == "cifar10":
        return cifar10_model(TASK_CLASSES[task]), cifar10_train, cifar10_eval
    raise ValueError(f"unknown task {task!r}")


# -- a user's model (task "custom") ---------------------------------------------------------------------------
def custom_pipeline(preprocess: str, x_train: np.ndarray) -> tuple[object, object]:
    """(train, eval) preprocessing of a custom task's images: float32, a channel axis for H x W images, then
    `preprocess` (worker.spec.PREPROCESSES).  No augmentation: the user's data is used as given.  The
    standardization's per-channel mean and deviation are the training split's (the validation images, split
    off first, are not looked at)."""
    add_channel = x_train.ndim == 3
    scale = preprocess == "scale" and x_train.dtype == np.uint8
    mean = std = None
    if preprocess == "standardize":
        x = x_train.astype(np.float64)
        if add_channel:
            x = x[..., None]
        mean = tf.constant(x.mean(axis=(0, 1, 2)), tf.float32)
        std = tf.constant(np.maximum(x.std(axis=(0, 1, 2)), 1e-6), tf.float32)

    def pre_eval(x: tf.Tensor) -> tf.Tensor:
        x = tf.cast(x, tf.float32)
        if add_channel:
            x = x[..., None]
        if scale:
            x = x / 255.0
        if mean is not None:
            x = (x - mean) / std
        return x

    def pre_train(x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        del seed  # no augmentation
        return pre_eval(x)

    return pre_train, pre_eval


def build_custom(spec: Any, data: Any) -> tuple[keras.Model, object, object]:
    """(model, train preprocessing, eval preprocessing) of a custom task: the user's model (worker/usermodel.py)
    for the data's image shape and classes.  A model building another architecture than the one the run's
    cache keys name (`spec.model_fingerprint`) is refused: SpecError, exit 65."""
    from worker.data import model_input_shape
    from worker.usermodel import build_user_model, fingerprint

    model = build_user_model(spec.model, model_input_shape(data.x_train.shape[1:]), data.num_classes)
    if spec.model_fingerprint is not None and (found := fingerprint(model)) != spec.model_fingerprint:
        raise SpecError(f"model {spec.model!r} builds another architecture here (fingerprint {found[:12]}...) than "
                        f"where the run was started ({spec.model_fingerprint[:12]}...): install the same version "
                        "of its module on every node")
    pre_train, pre_eval = custom_pipeline(spec.preprocess or "scale", data.x_train)
    return model, pre_train, pre_eval
