"""Zero-training filter: reject a tree that cannot train before it costs a job (numpy, no TensorFlow).

The protocol follows EvoMAL / AutoLoss-Zero's rejection test: take random logits for a small batch of
random one-hot labels and optimise the *logits themselves* with the candidate loss -- the loss exactly
as the worker applies it (L = -mean over the batch of Σ_classes f(x, clip(softmax(z), ε, 1)), or the
class mean; below ε the gradient as the worker's: straight through the clip and a softmax floored at ε,
or with epsilon_gradient "zero" none, as TensorFlow's clip).  A loss that cannot move even
free logits toward the labels cannot train a network.  Steps are normalised per image (a fixed
distance along the loss's own descent direction), so a loss is judged on where its gradient points,
not on its scale: a slow loss is left to training, which measures it; only a wrong or dead direction
is rejected here.  Rejected, with the reason stored:

* ``nonfinite``: the loss or its gradient is NaN/inf at the start or on the way (log(y / x), x / x);
* ``no-gradient``: the gradient on the logits vanishes at the start (y - x: Σ y is constant);
* ``does-not-learn``: after `STEPS` steps the accuracy on the labels is below `MIN_ACCURACY`
  (a loss that pushes the true class down, or sideways);
* ``exploding``: the raw gradient grows more than `MAX_GROWTH`-fold along the way (y / (1 - y)).

Deterministic: a fixed seed of its own, independent of the search's random stream (so turning the
filter on or off changes no other draw).  Measured before it was turned on: see the README.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from worker.lossexpr.numeric import compile_dy
from worker.lossexpr.tree import Node
from worker.spec import EPSILON_GRADIENT_DEFAULT

BATCH, CLASSES, STEPS, STEP_SIZE = 64, 10, 60, 0.2
#: Accuracy the optimised logits must reach (chance is 1/CLASSES; ce, baikal, baikal_cma reach 1.0).
MIN_ACCURACY = 0.5
#: How far the raw gradient norm may grow over its starting value before the loss counts as exploding.
MAX_GROWTH = 1e4
#: Below this the gradient counts as zero (float64 round-off of a constant loss is ~1e-16).
TINY = 1e-10
SEED = 20_190_101  # the filter's own stream: fixed, so a tree's verdict never depends on the search


@dataclass(frozen=True)
class Verdict:
    """Whether a tree passes, and if not the reason (stored as the candidate's error)."""

    ok: bool
    reason: str = ""
    detail: str = ""

    def message(self) -> str:
        return f"filtered ({self.reason}): {self.detail}"


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def start_point() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, one-hot x, logits z): the fixed batch the protocol starts from -- `BATCH` random labels and
    N(0, 1) logits, drawn from the filter's own seed, so every caller sees the same point."""
    rng = np.random.default_rng(SEED)
    labels = rng.integers(0, CLASSES, BATCH)
    return labels, np.eye(CLASSES)[labels], rng.normal(0.0, 1.0, (BATCH, CLASSES))


def logit_gradient(f_dy: Callable, x: np.ndarray, z: np.ndarray, epsilon: float, reduction: str,
                   epsilon_gradient: str) -> tuple[float, np.ndarray]:
    """(L, ∂L/∂z) of the worker's loss at logits z; `f_dy` is the tree compiled by `compile_dy`.  Called
    inside an errstate (non-finite values are what callers look for, not warnings).  Public: the
    calibration (`calibration.calibration_scale`) measures gradient norms with exactly these semantics."""
    y = softmax(z)
    yc = np.clip(y, epsilon, 1.0)
    f, dfdy = f_dy(x, yc)  # both of y's shape: x and yc are (BATCH, CLASSES)
    scale = 1.0 / (len(z) * (y.shape[1] if reduction == "mean" else 1))
    loss = float(-np.sum(f) * scale)
    g_y = -dfdy * scale  # f's gradient at the clipped value
    if epsilon_gradient == "zero":  # TensorFlow's clip: nothing below epsilon, then softmax's own backward
        g_y = np.where(y >= epsilon, g_y, 0.0)
        g_z = y * (g_y - np.sum(y * g_y, axis=1, keepdims=True))
    else:  # straight through the clip, and worker.tf_loss.floored_softmax's backward
        g_z = yc * g_y - y * np.sum(yc * g_y, axis=1, keepdims=True)
    return loss, g_z


def check(tree: Node, epsilon: float = 1e-7, class_reduction: str = "mean",
          epsilon_gradient: str = EPSILON_GRADIENT_DEFAULT) -> Verdict:
    """Run the rejection protocol on one tree."""
    labels, x, z = start_point()
    f_dy = compile_dy(tree)
    with np.errstate(all="ignore"):
        loss, g = logit_gradient(f_dy, x, z, epsilon, class_reduction, epsilon_gradient)
        if not (np.isfinite(loss) and np.all(np.isfinite(g))):
            return Verdict(False, "nonfinite", "the loss or its gradient is not finite at random predictions")
        g0 = float(np.linalg.norm(g))
        if g0 < TINY:
            return Verdict(False, "no-gradient", "its gradient on the network's outputs is zero")
        for step in range(1, STEPS + 1):
            norms = np.linalg.norm(g, axis=1, keepdims=True)
            z = z - STEP_SIZE * np.where(norms > 0, g / np.where(norms > 0, norms, 1.0), 0.0)
            loss, g = logit_gradient(f_dy, x, z, epsilon, class_reduction, epsilon_gradient)
            if not (np.isfinite(loss) and np.all(np.isfinite(g))):
                return Verdict(False, "nonfinite", f"the loss or its gradient becomes non-finite at step {step} "
                               "of optimising predictions directly")
            if float(np.linalg.norm(g)) > MAX_GROWTH * g0:
                return Verdict(False, "exploding", f"its gradient grows {MAX_GROWTH:.0e}-fold by step {step}")
    accuracy = float(np.mean(np.argmax(z, axis=1) == labels))
    if accuracy < MIN_ACCURACY:
        return Verdict(False, "does-not-learn", f"optimising predictions directly reaches accuracy {accuracy:.2f} "
                       f"(< {MIN_ACCURACY}) in {STEPS} steps")
    return Verdict(True)


def screen_for(epsilon: float, class_reduction: str,
               epsilon_gradient: str = EPSILON_GRADIENT_DEFAULT):  # -> search.ScreenFn
    """The filter for one task's loss settings, as the search takes it: None, or the rejection message."""

    def screen(tree: Node) -> str | None:
        verdict = check(tree, epsilon, class_reduction, epsilon_gradient)
        return None if verdict.ok else verdict.message()

    return screen
