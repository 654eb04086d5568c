"""A loss tree → a TensorFlow loss function, through a whitelisted op table (no eval, no codegen).

Semantics match `worker.lossexpr.numeric.batch_loss`: L = −(1/n) Σ_classes f(x, y) (class
reduction "mean", the paper's formula) or −Σ_classes f ("sum", Keras' CE scale), averaged over the
batch, each node's value multiplied by its coefficient.  x is the one-hot label, y the
network's softmax output clipped to [epsilon, 1] (plain Baikal is inf/NaN on an exact 0).

Below epsilon, `epsilon_gradient = "straight-through"` (the default) trains as if the prediction were
y = exp(max(log_softmax(z), log epsilon)) with the max passing its gradient straight through: the loss's
gradient at the clipped value goes back through the clip (`clip_predictions`), and the network's softmax
(`floored_softmax`, put in by `build_model`) scales it by max(y, epsilon) instead of y.  Both halves are
needed: TensorFlow's clip_by_value passes no gradient below epsilon, and softmax's own backward multiplies by
y, which is exactly 0 once float32 underflows -- the measured CIFAR-10 freeze (docs/cifar10-collapse.md: 90 %
of the true-class probabilities exactly 0 from step 5, loss gradient exactly 0 after).  Values are unchanged
everywhere, and so is every gradient of a prediction at or above epsilon; `"zero"` is the old clip.

The tree is walked once, when the training step is traced; the graph then holds only the tree's
own ops, so a tree costs what its ops cost (ce: clip, log, mul, mean -- the same as Keras' CE).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from worker import models
from worker.lossexpr import Node
from worker.lossexpr.reduction import CLASS_REDUCTIONS
from worker.spec import CUSTOM_TASK, EPSILON_GRADIENT_DEFAULT, EPSILON_GRADIENTS, SpecError

UNARY: dict[str, Callable[[tf.Tensor], tf.Tensor]] = {
    "log": tf.math.log,
    "square": tf.math.square,
    "sqrt": tf.math.sqrt,
}
BINARY: dict[str, Callable[[tf.Tensor, tf.Tensor], tf.Tensor]] = {
    "+": tf.math.add,
    "-": tf.math.subtract,
    "*": tf.math.multiply,
    "/": tf.math.divide,  # x/0 → ±inf, 0/0 → NaN, as in numpy; the trainer reports non-finite losses
}


def tree_fn(tree: Node, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """f(x, y) elementwise (broadcast scalars for const-only subtrees)."""

    def walk(node: Node) -> tf.Tensor:
        op = node.op
        if op == "x":
            v = x
        elif op == "y":
            v = y
        elif op == "const":
            v = tf.constant(float(node.value), dtype=y.dtype)
        elif op in UNARY:
            v = UNARY[op](walk(node.children[0]))
        elif op in BINARY:
            v = BINARY[op](walk(node.children[0]), walk(node.children[1]))
        else:  # Node validates ops; this guards the table against a future op nobody mapped
            raise ValueError(f"operator {op!r} has no TensorFlow mapping")
        if node.coef != 1.0:
            v = v * tf.constant(node.coef, dtype=y.dtype)
        return v

    f = walk(tree)
    if not (tree.has_x() or tree.has_y()):
        f = tf.broadcast_to(f, tf.shape(y))
    return f


#: the name `floored_softmax`'s activation carries (worker.fused maps it like "softmax")
FLOORED_SOFTMAX = "floored_softmax"


def floored_softmax(epsilon: float) -> Callable[[tf.Tensor], tf.Tensor]:
    """softmax over the last axis, whose gradient treats a probability under epsilon as epsilon.

    Backward: ∂L/∂z_k = ŷ_k g_k − y_k Σ_j ŷ_j g_j with ŷ = max(y, ε) -- the gradient of
    exp(log_softmax(z)) floored at log ε, straight through; with ŷ = y it is softmax's own."""

    @tf.custom_gradient
    def softmax(z: tf.Tensor):
        y = tf.nn.softmax(z, axis=-1)

        def grad(g: tf.Tensor) -> tf.Tensor:
            floored = tf.maximum(y, tf.constant(epsilon, y.dtype))
            return floored * g - y * tf.reduce_sum(floored * g, axis=-1, keepdims=True)

        return y, grad

    def activation(z: tf.Tensor) -> tf.Tensor:
        return softmax(z)

    activation.__name__ = FLOORED_SOFTMAX
    return activation


def build_model(task: str, epsilon: float, epsilon_gradient: str, spec: Any = None, data: Any = None):
    """`worker.models.build(task)` -- for task "custom" the user's model (`models.build_custom(spec, data)`) --
    with the output softmax's gradient as `epsilon_gradient` says (module doc).  Values and weights are those
    of the model as built: only the backward of the last activation changes."""
    if task == CUSTOM_TASK:
        model, pre_train, pre_eval = models.build_custom(spec, data)
    else:
        model, pre_train, pre_eval = models.build(task)
    if epsilon_gradient == "straight-through":
        last = model.layers[-1]
        if getattr(last.activation, "__name__", "") != "softmax":
            raise SpecError(f"model {spec.model if task == CUSTOM_TASK else task!r} must end in a layer with "
                            f"activation='softmax', got layer {last.name}")
        last.activation = floored_softmax(epsilon)
    return model, pre_train, pre_eval


def clip_predictions(y: tf.Tensor, epsilon: float, epsilon_gradient: str) -> tf.Tensor:
    """y clipped to [epsilon, 1]; its gradient as `epsilon_gradient` says (module doc)."""
    clipped = tf.clip_by_value(y, epsilon, 1.0)
    if epsilon_gradient == "zero":
        return clipped
    return y + tf.stop_gradient(clipped - y)  # value: clipped; d/dy: 1 everywhere


def make_loss(
    tree: Node, epsilon: float = 1e-7, class_reduction: str = "mean",
    epsilon_gradient: str = EPSILON_GRADIENT_DEFAULT, scale: float = 1.0,
) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """loss(labels_onehot, probabilities) → scalar scale·L for the tree.  `scale` is the candidate's
    (worker.spec.CandidateSpec.scale: a calibrated run's gradient-scale factor); 1.0 adds no op at all, so
    an unscaled loss's graph is exactly what it was before the factor existed."""
    if class_reduction not in CLASS_REDUCTIONS:
        raise ValueError(f"class_reduction must be one of {', '.join(CLASS_REDUCTIONS)}, got {class_reduction!r}")
    if epsilon_gradient not in EPSILON_GRADIENTS:
        raise ValueError(f"epsilon_gradient must be one of {', '.join(EPSILON_GRADIENTS)}, got {epsilon_gradient!r}")

    def loss(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        x = tf.cast(x, y.dtype)
        y = clip_predictions(y, epsilon, epsilon_gradient)
        if class_reduction == "mean":
            return -tf.reduce_mean(tree_fn(tree, x, y))  # mean over classes then batch = one mean
        return -tf.reduce_mean(tf.reduce_sum(tree_fn(tree, x, y), axis=-1))

    if scale == 1.0:
        return loss

    def scaled(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        value = loss(x, y)
        return value * tf.constant(scale, dtype=value.dtype)

    return scaled
