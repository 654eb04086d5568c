"""A loss tree → a TensorFlow loss function, through a whitelisted op table (no eval, no codegen).

Semantics match `worker.lossexpr.numeric.batch_loss`: L = −(1/n) Σ_classes f(x, y) (class
reduction "mean", the paper's formula) or −Σ_classes f ("sum", Keras' CE scale), averaged over the
batch, each node's value multiplied by its coefficient.  x is the one-hot label, y the
network's softmax output clipped to [epsilon, 1] (plain Baikal is inf/NaN on an exact 0).

The tree is walked once, when the training step is traced; the graph then holds only the tree's
own ops, so a tree costs what its ops cost (ce: clip, log, mul, mean -- the same as Keras' CE).
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from worker.lossexpr import Node

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


def make_loss(
    tree: Node, epsilon: float = 1e-7, class_reduction: str = "mean"
) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """loss(labels_onehot, probabilities) → scalar L for the tree."""
    if class_reduction not in ("mean", "sum"):
        raise ValueError(f"class_reduction must be 'mean' or 'sum', got {class_reduction!r}")

    def loss(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        x = tf.cast(x, y.dtype)
        y = tf.clip_by_value(y, epsilon, 1.0)
        if class_reduction == "mean":
            return -tf.reduce_mean(tree_fn(tree, x, y))  # mean over classes then batch = one mean
        return -tf.reduce_mean(tf.reduce_sum(tree_fn(tree, x, y), axis=-1))

    return loss
