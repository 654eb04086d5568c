"""Vectorized numpy evaluation of trees: for plots, tests and the binary-minimum report."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from worker.lossexpr.reduction import CLASS_REDUCTIONS  # noqa: F401 (re-exported)
from worker.lossexpr.tree import Node


def evaluate(tree: Node, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray:
    """f(x, y) elementwise, coefficients applied; non-finite values propagate (no warnings)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    with np.errstate(all="ignore"):
        return _eval(tree, x, y)


def _eval(node: Node, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    op = node.op
    if op == "x":
        v = x
    elif op == "y":
        v = y
    elif op == "const":
        v = np.full(np.broadcast(x, y).shape, float(node.value))
    elif op == "log":
        v = np.log(_eval(node.children[0], x, y))
    elif op == "sqrt":
        v = np.sqrt(_eval(node.children[0], x, y))
    elif op == "square":
        a = _eval(node.children[0], x, y)
        v = a * a
    else:
        a = _eval(node.children[0], x, y)
        b = _eval(node.children[1], x, y)
        if op == "+":
            v = a + b
        elif op == "-":
            v = a - b
        elif op == "*":
            v = a * b
        else:
            v = a / b
    return v * node.coef if node.coef != 1.0 else v


#: (x, y, shape) -> (f, ∂f/∂y): one node of a tree compiled by `compile_dy`.
DualFn = Callable[[np.ndarray, np.ndarray, tuple[int, ...]], tuple[np.ndarray, np.ndarray]]


def evaluate_dy(tree: Node, x: np.ndarray | float, y: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """(f, ∂f/∂y) elementwise by forward-mode differentiation (dual numbers), coefficients applied.

    What the zero-training filter needs to follow a loss's gradient without TensorFlow."""
    return compile_dy(tree)(x, y)


def compile_dy(tree: Node) -> Callable[[np.ndarray | float, np.ndarray | float], tuple[np.ndarray, np.ndarray]]:
    """`evaluate_dy` for one tree as a function, built once: the zero-training filter evaluates the same tree
    at ~60 points of its descent, and deciding each node's operation once instead of at every evaluation
    halves its cost.  The same numpy operations in the same order, so the same values, bit for bit."""
    fn = _compile(tree)

    def run(x: np.ndarray | float, y: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        with np.errstate(all="ignore"):
            return fn(x, y, np.broadcast(x, y).shape)

    return run


def _leaf(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return a if a.shape == shape else np.broadcast_to(a, shape)


def _compile(node: Node) -> DualFn:
    op, coef = node.op, node.coef
    if op == "x":
        def fn(x, y, shape):
            return _leaf(x, shape), np.zeros(shape)
    elif op == "y":
        def fn(x, y, shape):
            return _leaf(y, shape), np.ones(shape)
    elif op == "const":
        value = float(node.value)

        def fn(x, y, shape):
            return np.full(shape, value), np.zeros(shape)
    elif op in ("log", "sqrt", "square"):
        inner = _compile(node.children[0])
        if op == "log":
            def fn(x, y, shape):
                a, da = inner(x, y, shape)
                return np.log(a), da / a
        elif op == "sqrt":
            def fn(x, y, shape):
                a, da = inner(x, y, shape)
                v = np.sqrt(a)
                return v, da / (2.0 * v)
        else:
            def fn(x, y, shape):
                a, da = inner(x, y, shape)
                return a * a, 2.0 * a * da
    else:
        left, right = (_compile(c) for c in node.children)
        if op == "+":
            def fn(x, y, shape):
                (a, da), (b, db) = left(x, y, shape), right(x, y, shape)
                return a + b, da + db
        elif op == "-":
            def fn(x, y, shape):
                (a, da), (b, db) = left(x, y, shape), right(x, y, shape)
                return a - b, da - db
        elif op == "*":
            def fn(x, y, shape):
                (a, da), (b, db) = left(x, y, shape), right(x, y, shape)
                return a * b, da * b + a * db
        else:
            def fn(x, y, shape):
                (a, da), (b, db) = left(x, y, shape), right(x, y, shape)
                return a / b, (da * b - a * db) / (b * b)
    if coef == 1.0:
        return fn
    plain = fn

    def scaled(x, y, shape):
        v, d = plain(x, y, shape)
        return v * coef, d * coef

    return scaled


def batch_loss(tree: Node, x: np.ndarray, y: np.ndarray, class_reduction: str = "mean") -> float:
    """L = -(1/n) Σ_classes f(x, y) ("mean") or -Σ_classes f ("sum"), averaged over the batch.

    x and y have shape (batch, n).
    """
    if class_reduction not in CLASS_REDUCTIONS:
        raise ValueError(f"class_reduction must be one of {CLASS_REDUCTIONS}, got {class_reduction!r}")
    f = evaluate(tree, x, y)
    with np.errstate(all="ignore"):
        per_example = np.mean(f, axis=-1) if class_reduction == "mean" else np.sum(f, axis=-1)
        return float(-np.mean(per_example))


def binary_loss(tree: Node, y0: np.ndarray) -> np.ndarray:
    """Two-class loss at x = <1, 0>, y = <y0, 1 - y0>: the curve of the paper's Fig. 6."""
    y0 = np.asarray(y0, dtype=np.float64)
    with np.errstate(all="ignore"):
        return -0.5 * (evaluate(tree, 1.0, y0) + evaluate(tree, 0.0, 1.0 - y0))


def binary_minimum(tree: Node, grid: int = 20001) -> float | None:
    """The y0 in (0, 1) minimizing `binary_loss`, or None when the minimum is not interior.

    A dense grid finds the best cell, golden-section search refines it; a minimum on the
    first or last grid point (or a curve with no finite value) is not interior.
    """
    ys = np.linspace(0.0, 1.0, grid)[1:-1]
    vals = binary_loss(tree, ys)
    finite = np.isfinite(vals)
    if not finite.any():
        return None
    vals = np.where(finite, vals, np.inf)
    i = int(np.argmin(vals))
    if i == 0 or i == len(ys) - 1:
        return None
    lo, hi = ys[i - 1], ys[i + 1]
    if not (np.isfinite(vals[i - 1]) and np.isfinite(vals[i + 1])):
        return float(ys[i])
    g = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = binary_loss(tree, c), binary_loss(tree, d)
    for _ in range(80):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = binary_loss(tree, c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = binary_loss(tree, d)
    return float((a + b) / 2.0)
