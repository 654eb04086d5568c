"""The grid on which a canonical key is checked against the tree it names.

A key is only sound if every tree that gets it computes the same function.  Rewrites that are
identities over the reals can still differ from the tree in floating point at isolated points
(x/x is nan at x = 0; (2y-1)/(2y-1) is nan at y = 1/2), so every candidate normal form is
evaluated on this grid next to the tree and rejected unless both agree.  The grid holds both
label values x ∈ {0, 1}, every fraction k/n (n ≤ 16) in (0, 1) -- where integer-coefficient
factors vanish -- a uniform sweep, and a few irrational points.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from worker.lossexpr.numeric import evaluate
from worker.lossexpr.tree import Node

#: Relative and absolute tolerance of one tree-vs-normal-form check.  Two trees sharing a key
#: each agree with the same normal form, so they agree with each other within twice this,
#: which stays inside the issue's soundness bound of relative 1e-9.
REL_TOL = 2e-10
ABS_TOL = 1e-13


def _grid_y() -> np.ndarray:
    fracs = {Fraction(k, n) for n in range(2, 17) for k in range(1, n)}
    pts = [float(f) for f in fracs]
    pts += list(np.linspace(0.005, 0.995, 199))
    pts += [1e-6, 1e-3, 1 - 1e-6, 1 - 1e-3, np.pi / 4, 1 / np.e, np.sqrt(2) - 1, np.e - 2, np.log(2)]
    return np.unique(np.array(pts, dtype=np.float64))


GRID_Y = _grid_y()
GRID_X = np.array([0.0, 1.0])
#: Flattened grid: every (x, y) pair, x-major.
XS = np.repeat(GRID_X, len(GRID_Y))
YS = np.tile(GRID_Y, len(GRID_X))


def tree_on_grid(tree: Node) -> np.ndarray:
    """The tree's values at (XS, YS)."""
    return np.broadcast_to(evaluate(tree, XS, YS), XS.shape).astype(np.float64)


def same_values(a: np.ndarray, b: np.ndarray, rel: float = REL_TOL, abs_: float = ABS_TOL,
                shape: tuple[int, ...] = XS.shape) -> bool:
    """Equal non-finite pattern (nan = nan, +inf = +inf) and finite values within tolerance.

    `shape`: what both are broadcast to -- the whole grid by default, one label's half in `onehot`."""
    a = np.broadcast_to(np.asarray(a, dtype=np.float64), shape)
    b = np.broadcast_to(np.asarray(b, dtype=np.float64), shape)
    fa, fb = np.isfinite(a), np.isfinite(b)
    if not np.array_equal(fa, fb):
        return False
    na, nb = np.isnan(a), np.isnan(b)
    if not np.array_equal(na, nb):
        return False
    inf = ~fa & ~na
    if not np.array_equal(a[inf], b[inf]):
        return False
    with np.errstate(all="ignore"):
        diff = np.abs(a[fa] - b[fa])
        bound = abs_ + rel * np.maximum(np.abs(a[fa]), np.abs(b[fa]))
    return bool(np.all(diff <= bound))
