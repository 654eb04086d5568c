"""Calibrated loss scale: train every loss at cross-entropy's gradient scale (numpy, no TensorFlow).

Why: under plain SGD, training c·L is training L with the learning rate times c.  At a short training
budget a larger learning rate usually scores higher, so a search whose fitness is the accuracy after a few
thousand steps rewards a loss for its gradient's *size* before its *direction*: it "beats cross-entropy"
partly by being a larger cross-entropy.  With `task.loss_scale = "calibrated"` every candidate trains as
s·L with

    s = ‖∂L_ce/∂z‖ / ‖∂L/∂z‖   (Frobenius norms over one fixed batch of logits z)

so that at that point both losses move the logits by the same amount, and only the direction is left to
compete.  s > 0 (a ratio of norms): the direction, and any per-example reweighting inside the loss
(Baikal's 1/p term), is kept; s(c·L) = s(L)/c for every c > 0, so c·L and L train identically from the
first step (up to float rounding), which is what lets such trees share one cache entry
(`orchestrator.run.cachekey.CalibratedKeys`).

The reference point is the zero-training filter's start (`filters.start_point`): `BATCH` random one-hot
labels and N(0, 1) logits with a fixed seed of the filter's own.  Random logits of unit scale are what a
freshly initialised network's last layer puts out, i.e. where training starts; the gradients are
taken with the worker's exact loss semantics (`filters.logit_gradient`: the clip at epsilon, the class
reduction, the gradient below epsilon).  The limit: the scales are equal there, at the start of training,
not along the way -- a loss whose gradient grows or shrinks differently from ce's as the predictions
sharpen still differs in effective learning rate later on.

A tree whose gradient there is zero (y - x: Σ y is constant) or not finite cannot be calibrated:
`calibration_scale` returns None and the tree trains unscaled (the result then carries no
`loss_scale`).  "Zero" is measured relative to the gradient before softmax's backward cancels it, so the
verdict is the same for L and c·L.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Protocol

import numpy as np

from orchestrator.search.filters import logit_gradient, softmax, start_point
from worker.lossexpr.named import named_loss
from worker.lossexpr.numeric import compile_dy
from worker.lossexpr.tree import Node
from worker.spec import EPSILON_GRADIENT_DEFAULT

#: `task.loss_scale`'s values: "none" trains each loss as it is (every run before the setting existed);
#: "calibrated" at cross-entropy's gradient scale (module doc).
LOSS_SCALE_NONE = "none"
LOSS_SCALE_CALIBRATED = "calibrated"
LOSS_SCALES = (LOSS_SCALE_NONE, LOSS_SCALE_CALIBRATED)
#: ‖∂L/∂z‖ at or below this fraction of the gradient entering softmax's backward counts as zero: float64
#: cancellation of a constant Σ y leaves ~1e-16 of it; a ratio, so L and c·L get the same verdict.
REL_TINY = 1e-10


def _gradient_norm(tree: Node, epsilon: float, class_reduction: str, epsilon_gradient: str) -> float | None:
    """‖∂L/∂z‖ of the worker's loss for `tree` at the reference point; None when zero or not finite."""
    _, x, z = start_point()
    f_dy = compile_dy(tree)
    with np.errstate(all="ignore"):
        loss, g = logit_gradient(f_dy, x, z, epsilon, class_reduction, epsilon_gradient)
        if not (math.isfinite(loss) and np.all(np.isfinite(g))):
            return None
        yc = np.clip(softmax(z), epsilon, 1.0)
        _, dfdy = f_dy(x, yc)
        entering = float(np.linalg.norm(np.broadcast_to(dfdy, yc.shape) * yc))  # before softmax's backward
        scale = 1.0 / (len(z) * (yc.shape[1] if class_reduction == "mean" else 1))
        norm = float(np.linalg.norm(g))
    if not (math.isfinite(norm) and math.isfinite(entering)) or norm <= REL_TINY * entering * scale or norm == 0.0:
        return None
    return norm


@lru_cache(maxsize=64)
def _ce_norm(epsilon: float, class_reduction: str, epsilon_gradient: str) -> float:
    """Cross-entropy's gradient norm at the reference point under these settings (the target scale)."""
    norm = _gradient_norm(named_loss("ce"), epsilon, class_reduction, epsilon_gradient)
    assert norm is not None, "cross-entropy has a finite, non-zero gradient at random logits"
    return norm


def calibration_scale(tree: Node, epsilon: float = 1e-7, class_reduction: str = "mean",
                      epsilon_gradient: str = EPSILON_GRADIENT_DEFAULT) -> float | None:
    """s = ‖∂L_ce/∂z‖ / ‖∂L_tree/∂z‖ at the reference point (module doc), > 0 and finite; None when the
    tree's gradient there is zero or not finite (it then trains unscaled).  ce's own scale is exactly 1.0."""
    norm = _gradient_norm(tree, epsilon, class_reduction, epsilon_gradient)
    if norm is None:
        return None
    ce = _ce_norm(float(epsilon), class_reduction, epsilon_gradient)
    scale = ce / norm
    return scale if math.isfinite(scale) and scale > 0 else None


class Calibrator:
    """`calibration_scale` for one task's loss settings, memoized by tree: the scheduler asks for a tree's
    scale when it keys it and again when it submits it, and a run asks about the same trees many times."""

    def __init__(self, epsilon: float, class_reduction: str, epsilon_gradient: str) -> None:
        self.settings = (float(epsilon), class_reduction, epsilon_gradient)
        self._memo: dict[Node, float | None] = {}

    def scale(self, tree: Node) -> float | None:
        """The tree's calibration scale (None: it cannot be calibrated and trains unscaled)."""
        if tree not in self._memo:
            if len(self._memo) > 100_000:
                self._memo.clear()
            self._memo[tree] = calibration_scale(tree, *self.settings)
        return self._memo[tree]

    def train_scale(self, tree: Node) -> float:
        """What the worker multiplies the loss by: the scale, or 1.0 for a tree that cannot be calibrated."""
        s = self.scale(tree)
        return 1.0 if s is None else s


class LossSettings(Protocol):
    """What `calibrator_for` reads of a task (orchestrator.config.TaskConfig has these fields)."""

    loss_scale: str
    epsilon: float
    class_reduction: str
    epsilon_gradient: str


def calibrator_for(task: LossSettings) -> Calibrator | None:
    """The task's calibrator when its loss_scale is "calibrated", else None (every loss trains as it is)."""
    if task.loss_scale != LOSS_SCALE_CALIBRATED:
        return None
    return Calibrator(task.epsilon, task.class_reduction, task.epsilon_gradient)
