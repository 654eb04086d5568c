"""What a one-hot label implies for a loss tree: its two halves and whether it can train at all.

Every GLO task is a classification with one-hot labels, so the leaf x is only ever 0 (a wrong
class) or 1 (the true class).  A tree f(x, y) is therefore fully described by its two halves
f(0, y) and f(1, y): x·x, √x and x are the same label, x·(1 − x) is 0, and `x * x * log(y)` *is*
cross-entropy.  The canonical key (`symbolic`) is built from these halves, and the validity rule
used by the search is this module's `is_trainable`: a tree must contain x and y (the paper's rule)
*and*, on one-hot labels, its value must depend on the label and on the prediction -- else its
gradient is the same for the true and the wrong classes, or zero, and training it is wasted.

Pure numpy on `keycheck`'s grid of y values (fractions k/n, a sweep, irrational points): the same
grid that makes keys sound, so a tree that is "constant" here is constant where keys are checked.
"""

from __future__ import annotations

import numpy as np

from worker.lossexpr import keycheck
from worker.lossexpr.numeric import evaluate
from worker.lossexpr.tree import Node

#: The values a one-hot label takes: 0 for the wrong classes, 1 for the true one.
LABEL_VALUES = (0.0, 1.0)


def halves(tree: Node) -> tuple[np.ndarray, np.ndarray]:
    """f(0, y) and f(1, y) on the check grid's y values (non-finite values kept)."""
    y = keycheck.GRID_Y
    out = tuple(np.broadcast_to(evaluate(tree, np.full_like(y, x), y), y.shape).astype(np.float64)
                for x in LABEL_VALUES)
    return out[0], out[1]


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """The key check's comparison (non-finite pattern, then tolerance) on one half of the grid."""
    return keycheck.same_values(a, b, shape=a.shape)


def _constant(v: np.ndarray) -> bool:
    return _same(v, np.full_like(v, v[0]))


def is_trainable(tree: Node) -> bool:
    """The search's validity rule: x and y present, and on one-hot labels f depends on both.

    Depends on the label: f(0, ·) and f(1, ·) differ somewhere.  Depends on the prediction: at
    least one half is not constant in y.  A tree failing either gets fitness 0 untrained, like
    one lacking x or y (the paper's rule, which this contains).
    """
    if not tree.is_valid():
        return False
    f0, f1 = halves(tree)
    return not _same(f0, f1) and not (_constant(f0) and _constant(f1))
