"""The sympy half of the canonical key; runs in a child process (see `canonical`).

Normal form, for one-hot labels (`onehot`): x is 0 or 1, so a tree is its two halves f(0, y) and
f(1, y); each is brought to `cancel(expand_log(e, force=True))` over y > 0 with coefficients as
exact rationals, and the key prints f0 + x·cancel(f1 − f0).  So x·x·log(y), √x·log(y) and
x·log(y) share cross-entropy's key, and x·(1 − x) is 0.  `force=True` and sympy's automatic rewrites (x/x → 1, log(a) - log(a) → 0)
are identities over the positive reals only, so the normal form is accepted only when a small
numpy evaluator of sympy's own expressions agrees with the original tree on the check grid
(`keycheck`, whose x values are exactly the labels 0 and 1): each half where x is its label.  Nothing is ever turned into Python source, eval'ed or lambdify'd.

The scale-free variant (`scale_free_key`, ``s2p:``) names the normal form divided by its positive rational
content (`as_content_primitive`: 3·x·log(y) and x·log(y) share it, −x·log(y) does not -- the sign stays in
the primitive part); it is checked on the grid against the tree divided by that content, so two trees
sharing it are positive multiples of each other there.  A calibrated run keys its cache by it (a tree and
c·tree train identically once each is calibrated: orchestrator/search/calibration.py).

Run as `python -m worker.lossexpr.symbolic`: a line protocol on stdin/stdout, one tree JSON in (or
`{"scale_free": tree JSON}` for the scale-free key), one `{"key": str | null}` out.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
import sympy

from worker.lossexpr import keycheck
from worker.lossexpr.tree import Node

#: Version prefix of keys made here; bump when the pipeline (or its printing) changes.
#: s1: one normal form over x >= 0 (x*x*log(y) was not x*log(y)); s2: the one-hot halves.
PREFIX = "s2:"
#: Prefix of the scale-free variant (module doc); never equal to another key's, so the two never mix.
SCALE_FREE_PREFIX = "s2p:"

_X = sympy.Symbol("x", real=True, nonnegative=True)
_Y = sympy.Symbol("y", positive=True)


class _Unsupported(Exception):
    """The normal form holds something the numeric check cannot evaluate (I, zoo, ...)."""


def to_sympy(tree: Node) -> sympy.Expr:
    """The tree as a sympy expression (coefficients as exact rationals)."""
    op = tree.op
    if op == "x":
        e = _X
    elif op == "y":
        e = _Y
    elif op == "const":
        e = sympy.Integer(tree.value)
    elif op == "log":
        e = sympy.log(to_sympy(tree.children[0]))
    elif op == "sqrt":
        e = sympy.sqrt(to_sympy(tree.children[0]))
    elif op == "square":
        e = to_sympy(tree.children[0]) ** 2
    else:
        a, b = (to_sympy(c) for c in tree.children)
        e = {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "/": lambda: a / b}[op]()
    if tree.coef != 1.0:
        e = sympy.Rational(tree.coef) * e
    return e


def _normal(e: sympy.Expr) -> sympy.Expr:
    return sympy.cancel(sympy.expand_log(e, force=True))


def halves(tree: Node) -> tuple[sympy.Expr, sympy.Expr]:
    """The normal forms of f(0, y) and f(1, y): what the tree computes on one-hot labels."""
    e = to_sympy(tree)
    return _normal(e.subs(_X, 0)), _normal(e.subs(_X, 1))


def normal_form(tree: Node) -> sympy.Expr:
    """f0 + x·(f1 − f0): one expression that equals the tree wherever x is 0 or 1."""
    f0, f1 = halves(tree)
    return f0 + _X * sympy.cancel(f1 - f0)


def evaluate_sympy(e: sympy.Expr, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Numeric value of a real sympy expression; raises `_Unsupported` on anything else."""
    with np.errstate(all="ignore"):
        return np.broadcast_to(np.asarray(_ev(e, x, y), dtype=np.float64), np.broadcast(x, y).shape)


def _ev(e: Any, x: np.ndarray, y: np.ndarray) -> Any:
    if e is _X:
        return x
    if e is _Y:
        return y
    if e.is_Number or e.is_NumberSymbol:
        if not e.is_real or not e.is_finite:
            raise _Unsupported(str(e))
        try:
            return float(e)
        except OverflowError as exc:
            raise _Unsupported(str(e)) from exc
    if e.is_Add:
        out = 0.0
        for a in e.args:
            out = out + _ev(a, x, y)
        return out
    if e.is_Mul:
        out = 1.0
        for a in e.args:
            out = out * _ev(a, x, y)
        return out
    if e.is_Pow:
        base, ex = e.args
        if not ex.is_Rational:
            raise _Unsupported(str(e))
        b = np.asarray(_ev(base, x, y), dtype=np.float64)
        if ex == -1:
            return 1.0 / b
        if ex == 2:
            return b * b
        if ex == sympy.Rational(1, 2):
            return np.sqrt(b)
        if ex == sympy.Rational(-1, 2):
            return 1.0 / np.sqrt(b)
        return np.power(b, float(ex))
    if isinstance(e, sympy.log):
        return np.log(_ev(e.args[0], x, y))
    if isinstance(e, sympy.exp):
        return np.exp(_ev(e.args[0], x, y))
    if isinstance(e, sympy.Abs):
        return np.abs(_ev(e.args[0], x, y))
    raise _Unsupported(type(e).__name__)


def symbolic_key(tree: Node) -> str | None:
    """`PREFIX` + sympy's normal form, or None when it is not sound on the check grid."""
    f0, f1 = halves(tree)
    n = len(keycheck.GRID_Y)
    try:  # each half on its own label: x*(f1 - f0) at x = 0 would turn an inf of f1 into nan
        values = np.concatenate([evaluate_sympy(f0, keycheck.XS[:n], keycheck.YS[:n]),
                                 evaluate_sympy(f1, keycheck.XS[n:], keycheck.YS[n:])])
    except _Unsupported:
        return None
    nf = f0 + _X * sympy.cancel(f1 - f0)
    if not keycheck.same_values(keycheck.tree_on_grid(tree), values):
        return None
    return PREFIX + sympy.sstr(nf, order="lex")


def scale_free_key(tree: Node) -> str | None:
    """`SCALE_FREE_PREFIX` + the normal form without its positive rational content, or None when that is
    not sound on the check grid (the caller then falls back to a key that keeps the scale)."""
    f0, f1 = halves(tree)
    nf = f0 + _X * sympy.cancel(f1 - f0)
    content, primitive = nf.as_content_primitive()
    if not (content.is_Rational and content > 0):
        return None
    n = len(keycheck.GRID_Y)
    try:  # each half on its own label, as in `symbolic_key`
        values = np.concatenate([evaluate_sympy(primitive.subs(_X, 0), keycheck.XS[:n], keycheck.YS[:n]),
                                 evaluate_sympy(primitive.subs(_X, 1), keycheck.XS[n:], keycheck.YS[n:])])
    except _Unsupported:
        return None
    with np.errstate(all="ignore"):
        scaled = keycheck.tree_on_grid(tree) / float(content)
    if not keycheck.same_values(scaled, values):
        return None
    return SCALE_FREE_PREFIX + sympy.sstr(primitive, order="lex")


def _limit_memory(max_bytes: int = 4 << 30) -> None:
    """A runaway expansion should die with MemoryError, not push the machine into swap."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (max_bytes, max_bytes))
    except (ImportError, ValueError, OSError):
        pass


def main() -> None:
    """Serve keys: read one tree JSON per line, answer one JSON line; exit on EOF."""
    _limit_memory()
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        try:
            request = json.loads(line)
            if isinstance(request, dict) and "scale_free" in request:
                key = scale_free_key(Node.from_json(request["scale_free"]))
            else:
                key = symbolic_key(Node.from_json(request))
        except Exception:  # noqa: BLE001 - any failure just means "use the structural key"
            key = None
        out.write(json.dumps({"key": key}) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
