"""Detect a collapsed training: every prediction one class, the other classes clipped away.

Why a training can freeze without ever going non-finite: the loss sees the softmax output clipped to
[epsilon, 1] (worker.tf_loss), and `clip_by_value` passes no gradient below epsilon.  A loss whose
gradient grows like 1/y_true (Baikal's -x/y term) can take one oversized step -- at CIFAR-10's batch 1024,
learning rate 0.05 and class_reduction "sum" -- that leaves the net giving one class p ~ 1 and every other
class less than epsilon, for every image.  There every clipped probability passes no gradient and the top
one sits on the softmax's flat top (dp/dlogit = p(1-p) ~ 0): a stationary point.  The loss stays finite
(at the clip's ceiling, e.g. x/epsilon = 1e7 for Baikal), so the non-finite rule never fires, and the run
would report the frequency of that one class (0.100 on CIFAR-10) as if it had been a training.  The paper
gives a NaN run fitness 0; a collapsed run is treated the same (status `collapsed`, worker.spec).

The verdict, on the validation predictions (the same images the fitness is measured on), needs both:

* every validation image predicted as the same class c (`ONE_CLASS_SHARE` = 1.0: the accuracy is then
  exactly c's frequency, so a verdict can never take away an accuracy a real training earned -- a net
  predicting two classes, or learning anything, is not flagged however bad it is);
* at least `CLIPPED_SHARE` = 50 % of the images with every class but c below epsilon (the clip's zero-
  gradient region).  This is what separates a frozen net from an ordinary one that predicts one class
  early in training (a hard task, a short budget, a strong bias): such a net's probabilities are soft --
  the other classes near 1/10, never within orders of magnitude of epsilon = 1e-7 -- so its clipped share
  is 0 and it keeps its accuracy.  The collapsed nets measured here (below) clip every image, and the
  CIFAR-10 failure is described as that same corner (not measured with this detector: no CIFAR-10 data
  here); half leaves room for a net that has not quite reached the corner on every image while still
  excluding any net with gradient left on most of its inputs.

A well-trained, very confident net also clips many images, but into many classes (its accuracy), so the
first condition keeps it.  The detector is pure numpy and fed batch by batch, so the trainers add it to
the evaluation passes they already make (worker.train, worker.fused) without holding all predictions.

Measured on the tests' MNIST-like data (tests/test_worker_collapse.py; class_reduction "sum", batch 32):
Baikal at learning rates 0.1, 1 and 5 ends with all 100 validation images one class and 100 % clipped (loss
~3e6-9e6, the clip's ceiling); ce at rate 0.1 trains (accuracy 1.0, nothing clipped); ce at rate 1 ends
predicting one class with nothing clipped -- a bad but ordinary training, not flagged -- after passing, at
step 3, through one class with 61 % clipped and recovering by step 6; ce at rate 5 collapses like Baikal
(ce's gradient dies under the clip too).  That recovery is why only the final measurement decides, and why
a trainer does not stop at a collapsed curve point: curve points only say since when (`CollapseHistory`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

#: Share of validation images that must be predicted as one class (1.0: all of them), see the module doc.
ONE_CLASS_SHARE = 1.0
#: Share of validation images that must have every other class's probability below epsilon.
CLIPPED_SHARE = 0.5


@dataclass(frozen=True)
class Collapse:
    """What a collapsed training looked like on the validation set: result `extra["collapse"]`."""

    predicted_class: int
    clipped_share: float  # images with every other class below epsilon / images
    images: int
    epsilon: float
    #: the first step from which every validation measurement (curve points, then the final one) was collapsed
    since_step: int | None = None

    def reason(self) -> str:
        """The one-line explanation `glo show` and the dashboard print (stored with the result)."""
        since = f" (every validation check from step {self.since_step} on)" if self.since_step is not None else ""
        return (f"training collapsed{since}: all {self.images} validation images predicted as class "
                f"{self.predicted_class}, {self.clipped_share:.0%} of them with every other class below "
                f"epsilon = {self.epsilon:g} (the clip passes no gradient there); fitness 0, as for a non-finite loss")

    def to_json(self, validation_accuracy: float | None = None, test_accuracy: float | None = None) -> dict[str, Any]:
        """`extra["collapse"]`; the accuracies measured (not the fitness, which is 0) are kept as evidence."""
        return {"class": self.predicted_class, "clipped_share": self.clipped_share, "images": self.images,
                "epsilon": self.epsilon, "since_step": self.since_step, "validation_accuracy": validation_accuracy,
                "test_accuracy": test_accuracy, "reason": self.reason()}


class CollapseDetector:
    """Accumulates validation predictions (probabilities, batch by batch); `verdict()` decides."""

    def __init__(self, epsilon: float, num_classes: int = 10):
        self.epsilon = float(epsilon)
        self.num_classes = num_classes
        self.class_counts = np.zeros(num_classes, np.int64)  # images predicted as each class
        self.clipped_counts = np.zeros(num_classes, np.int64)  # ... of which every other class < epsilon
        self.images = 0

    def update(self, probs: np.ndarray) -> None:
        """Add one batch of softmax outputs, shape (B, classes), as the model gives them (unclipped)."""
        probs = np.asarray(probs)
        if probs.ndim != 2 or probs.shape[1] != self.num_classes:
            raise ValueError(f"expected probabilities of shape (B, {self.num_classes}), got {probs.shape}")
        if len(probs) == 0:
            return
        pred = np.argmax(probs, axis=1)  # the class the accuracy counts (ties: the first, as tf.argmax)
        others = probs.copy()
        others[np.arange(len(probs)), pred] = -np.inf
        # compared in the predictions' own dtype, as the clip compares them: float32(1e-7) is not 1e-7
        clipped = others.max(axis=1) < probs.dtype.type(self.epsilon)
        self.class_counts += np.bincount(pred, minlength=self.num_classes)
        self.clipped_counts += np.bincount(pred[clipped], minlength=self.num_classes)
        self.images += len(probs)

    def summary(self) -> dict[str, list[int]]:
        """`extra["validation_predictions"]` of every result: images predicted as each class, and of those the
        ones with every other class below epsilon -- how spread and how saturated the predictions were."""
        return {"class_counts": [int(n) for n in self.class_counts],
                "clipped_counts": [int(n) for n in self.clipped_counts]}

    def verdict(self) -> Collapse | None:
        """A `Collapse` when the predictions seen are collapsed (module doc), else None."""
        if self.images == 0:
            return None
        c = int(np.argmax(self.class_counts))
        if self.class_counts[c] < ONE_CLASS_SHARE * self.images:
            return None
        share = float(self.clipped_counts[c]) / self.images
        if share < CLIPPED_SHARE:
            return None
        return Collapse(predicted_class=c, clipped_share=share, images=self.images, epsilon=self.epsilon)


def detect(batches: Any, epsilon: float, num_classes: int = 10) -> Collapse | None:
    """The verdict on an iterable of probability batches (for tests and one-off checks)."""
    det = CollapseDetector(epsilon, num_classes)
    for probs in batches:
        det.update(probs)
    return det.verdict()


class CollapseHistory:
    """Since when a candidate has been collapsed: fed the verdict of every validation measurement in order
    (curve points, then the final one), it keeps the first step of the current unbroken run of collapsed
    verdicts, so a result can say "collapsed from step 200 on" -- a net that recovered starts over."""

    def __init__(self) -> None:
        self.since: int | None = None

    def observe(self, step: int, verdict: Collapse | None) -> Collapse | None:
        """Record the verdict at `step`; returns it with `since_step` filled in (None stays None)."""
        if verdict is None:
            self.since = None
            return None
        if self.since is None:
            self.since = step
        return replace(verdict, since_step=self.since)
