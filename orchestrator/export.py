"""Generate a self-contained loss function (Python/numpy or Keras/TensorFlow) from a tree.

The output is text written node by node from the validated tree -- one line per node, only
whitelisted ops, floats printed with repr() -- so nothing stored is ever eval'd, here or by
the user who pastes it.  Semantics equal worker.tf_loss.make_loss: predictions clipped to
[epsilon, 1] (in Keras, with the run's gradient below epsilon: straight through, or none), L = -mean over
the batch of the mean (or, with class_reduction "sum", the sum) over classes of f(x, y), x the one-hot label.

A candidate of a calibrated run (`task.loss_scale = "calibrated"`) trained as scale·L: `scale` multiplies
the exported loss the same way (`LOSS_SCALE`, after the mean, as worker.tf_loss.make_loss does), so the
export is the loss that was trained, not the tree alone; `trained_scale` says which scale that was.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from orchestrator.search.calibration import LOSS_SCALE_CALIBRATED, calibration_scale
from worker.lossexpr import Node, to_infix
from worker.lossexpr.reduction import CLASS_REDUCTIONS
from worker.spec import EPSILON_GRADIENT_DEFAULT, EPSILON_GRADIENTS, EXTRA_LOSS_SCALE

FORMATS = ("python", "keras")

_TF = {"log": "tf.math.log({a})", "sqrt": "tf.math.sqrt({a})", "square": "tf.math.square({a})",
       "+": "tf.math.add({a}, {b})", "-": "tf.math.subtract({a}, {b})", "*": "tf.math.multiply({a}, {b})",
       "/": "tf.math.divide({a}, {b})"}
_NP = {"log": "np.log({a})", "sqrt": "np.sqrt({a})", "square": "np.square({a})",
       "+": "({a} + {b})", "-": "({a} - {b})", "*": "({a} * {b})", "/": "({a} / {b})"}


def _lines(tree: Node, table: dict[str, str], const_fmt: str) -> tuple[list[str], str]:
    """Straight-line code computing the tree bottom-up; returns (lines, name of the result)."""
    lines: list[str] = []
    counter = [0]

    def emit(node: Node) -> str:
        if node.op == "x":
            expr = "x"
        elif node.op == "y":
            expr = "y"
        elif node.op == "const":
            expr = const_fmt.format(v=repr(float(int(node.value or 0))))
        else:
            args = [emit(c) for c in node.children]
            expr = table[node.op].format(a=args[0], b=args[1] if len(args) > 1 else "")
        if node.coef != 1.0:
            expr = f"{expr} * {repr(float(node.coef))}"
        if node.op in ("x", "y") and node.coef == 1.0:
            return expr
        name = f"t{counter[0]}"
        counter[0] += 1
        lines.append(f"    {name} = {expr}")
        return name

    return lines, emit(tree)


def trained_scale(task: Mapping[str, Any], tree: Node, extra: Any = None,
                  measured_here: bool = False) -> tuple[float, str] | None:
    """(the factor the candidate's loss trained with, where it comes from) for a stored run's [task] (as
    `config.stored_task` gives it); None when the run is not calibrated.

    The stored `extra.loss_scale` is used only when this candidate's own tree was the one trained
    (`measured_here`): a cache hit's evaluation was measured on another tree, 3·f's scale is f's / 3.
    Otherwise it is recomputed -- the same deterministic calibration the scheduler ran.  Where: "stored",
    "recomputed", or "uncalibrated" (zero or non-finite gradient at the reference point: trained unscaled)."""
    if task.get("loss_scale", "none") != LOSS_SCALE_CALIBRATED:
        return None
    stored = extra.get(EXTRA_LOSS_SCALE) if measured_here and isinstance(extra, Mapping) else None
    if isinstance(stored, (int, float)) and not isinstance(stored, bool) and math.isfinite(stored) and stored > 0:
        return float(stored), "stored"
    scale = calibration_scale(tree, float(task.get("epsilon", 1e-7)), task.get("class_reduction", "mean"),
                              task.get("epsilon_gradient", EPSILON_GRADIENT_DEFAULT))
    return (1.0, "uncalibrated") if scale is None else (scale, "recomputed")


def export(tree: Node, fmt: str, *, name: str = "glo_loss", epsilon: float = 1e-7,
           class_reduction: str = "mean", epsilon_gradient: str = EPSILON_GRADIENT_DEFAULT,
           comment: str = "", scale: float = 1.0) -> str:
    """The loss as source text; `scale`: what it trained multiplied by (a calibrated run; module doc)."""
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    if class_reduction not in CLASS_REDUCTIONS:
        raise ValueError(f"class_reduction must be one of {', '.join(CLASS_REDUCTIONS)}, got {class_reduction!r}")
    if epsilon_gradient not in EPSILON_GRADIENTS:
        raise ValueError(f"epsilon_gradient must be one of {', '.join(EPSILON_GRADIENTS)}, got {epsilon_gradient!r}")
    summed = class_reduction == "sum"
    scaled = scale != 1.0
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not name.isidentifier():
        raise ValueError(f"function name must be a Python identifier, got {name!r}")
    infix = to_infix(tree)
    header = [f"# GLO loss: {infix}"] + ([f"# {line}" for line in comment.splitlines()] if comment else [])
    lib = "tensorflow as tf" if fmt == "keras" else "numpy as np"
    prelude = header + [
        f"import {lib}",
        "",
        f"EPSILON = {repr(float(epsilon))}",
        *([f"LOSS_SCALE = {repr(float(scale))}  # the calibrated run trained LOSS_SCALE * L"] if scaled else []),
        "",
        "",
        f"def {name}(y_true, y_pred):",
        f'    """L = {"LOSS_SCALE * " if scaled else ""}{"-mean(sum over classes" if summed else "-mean("}'
        f'(f(x, y)) with f = {infix}; x one-hot labels, y clipped probabilities."""',
    ]
    times = " * LOSS_SCALE" if scaled else ""
    if fmt == "keras":
        body, result = _lines(tree, _TF, "tf.constant({v}, dtype=y.dtype)")
        broadcast = [] if (tree.has_x() or tree.has_y()) else [f"    {result} = tf.broadcast_to({result}, tf.shape(y))"]
        code = prelude + [
            *(["    y = tf.clip_by_value(tf.convert_to_tensor(y_pred), EPSILON, 1.0)"] if epsilon_gradient == "zero"
              else ["    y_pred = tf.convert_to_tensor(y_pred)",
                    "    # clipped value, gradient straight through below EPSILON (no zero-gradient corner)",
                    "    y = y_pred + tf.stop_gradient(tf.clip_by_value(y_pred, EPSILON, 1.0) - y_pred)"]),
            "    x = tf.cast(y_true, y.dtype)",
            *body, *broadcast,
            f"    return -tf.reduce_mean(tf.reduce_sum({result}, axis=-1)){times}" if summed
            else f"    return -tf.reduce_mean({result}){times}",
            "",
            "",
            f"# model.compile(optimizer='sgd', loss={name}, metrics=['accuracy'])",
        ]
    else:
        body, result = _lines(tree, _NP, "np.float64({v})")
        code = prelude + [
            "    y = np.clip(np.asarray(y_pred, dtype=np.float64), EPSILON, 1.0)",
            "    x = np.asarray(y_true, dtype=np.float64)",
            "    with np.errstate(all='ignore'):",
            *["    " + line for line in body],
            f"        return float(-np.mean(np.sum(np.broadcast_to({result}, y.shape), axis=-1)){times})" if summed
            else f"        return float(-np.mean(np.broadcast_to({result}, y.shape)){times})",
        ]
    return "\n".join(code) + "\n"
