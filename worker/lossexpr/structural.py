"""Structural normal form: the canonical key when sympy is skipped, times out or is unsound.

Pure Python and numpy.  The rewrites are the ones that hold in floating point too (up to
rounding), so the normal form nearly always passes the grid check:

* `+` and `*` chains are flattened and their operands sorted (commutativity, associativity);
* `a - b` is `a + (-1)·b`, `a / b` is `a · inv(b)`, `square(a)` is `a · a`, a coefficient c
  is a factor c -- so double negation and `square(x)` vs `x * x` meet;
* numeric operands of a chain are folded into one number (constant folding); a sum drops a
  0 and a product a 1 (neutral elements), but a product keeps a 0 (0 · inf is nan);
* log, sqrt and inv of a number are folded when the result is finite.

`x - x` stays `x + (-1)·x`: it is nan where x is inf, so it is only merged with 0 by the
symbolic path when the grid check shows that is safe.
"""

from __future__ import annotations

import math

import numpy as np

from worker.lossexpr.tree import Node


class Expr:
    """An immutable normal-form node; `text` is its printed form and its identity."""

    __slots__ = ("kind", "num", "args", "text")

    def __init__(self, kind: str, num: float = 0.0, args: tuple["Expr", ...] = ()) -> None:
        self.kind, self.num, self.args = kind, num, args
        self.text = self._print()

    def _print(self) -> str:
        k = self.kind
        if k == "n":
            return repr(self.num)
        if k in ("x", "y"):
            return k
        if k == "+":
            return "(" + " + ".join(a.text for a in self.args) + ")"
        if k == "*":
            return "(" + "*".join(a.text for a in self.args) + ")"
        return f"{k}({self.args[0].text})"


def _num(v: float) -> Expr:
    return Expr("n", float(v) + 0.0)  # + 0.0 turns -0.0 into 0.0


def _chain(kind: str, operands: list[Expr]) -> Expr:
    flat: list[Expr] = []
    for e in operands:
        flat.extend(e.args if e.kind == kind else (e,))
    nums = [e.num for e in flat if e.kind == "n"]
    rest = sorted((e for e in flat if e.kind != "n"), key=lambda e: e.text)
    if nums:
        with np.errstate(all="ignore"):
            folded = float(np.sum(nums)) if kind == "+" else float(np.prod(nums))
        neutral = 0.0 if kind == "+" else 1.0
        if not math.isfinite(folded):
            rest = sorted(rest + [_num(v) for v in nums], key=lambda e: e.text)
        elif folded != neutral or not rest:
            rest.insert(0, _num(folded))
    if len(rest) == 1:
        return rest[0]
    return Expr(kind, 0.0, tuple(rest))


def _fn(kind: str, a: Expr) -> Expr:
    if a.kind == "n":
        v = a.num
        if kind == "log" and v > 0:
            return _num(math.log(v))
        if kind == "sqrt" and v >= 0:
            return _num(math.sqrt(v))
        if kind == "inv" and v != 0:
            return _num(1.0 / v)
    return Expr(kind, 0.0, (a,))


def normal_form(tree: Node) -> Expr:
    """The structural normal form of `tree` (see the module docstring)."""
    op = tree.op
    if op == "const":
        return _num(float(tree.value) * tree.coef)
    if op in ("x", "y"):
        e = Expr(op)
    elif op == "square":
        a = normal_form(tree.children[0])
        e = _chain("*", [a, a])
    elif op in ("log", "sqrt"):
        e = _fn(op, normal_form(tree.children[0]))
    else:
        a, b = (normal_form(c) for c in tree.children)
        if op == "+":
            e = _chain("+", [a, b])
        elif op == "-":
            e = _chain("+", [a, _chain("*", [_num(-1.0), b])])
        elif op == "*":
            e = _chain("*", [a, b])
        else:
            e = _chain("*", [a, _fn("inv", b)])
    if tree.coef != 1.0:
        e = _chain("*", [_num(tree.coef), e])
    return e


def evaluate_expr(e: Expr, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Numeric value of a normal form (operands in their sorted order)."""
    with np.errstate(all="ignore"):
        return _eval(e, x, y)


def _eval(e: Expr, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    k = e.kind
    if k == "n":
        return np.full(np.broadcast(x, y).shape, e.num)
    if k == "x":
        return x
    if k == "y":
        return y
    vals = [_eval(a, x, y) for a in e.args]
    if k == "+":
        out = vals[0]
        for v in vals[1:]:
            out = out + v
        return out
    if k == "*":
        out = vals[0]
        for v in vals[1:]:
            out = out * v
        return out
    if k == "log":
        return np.log(vals[0])
    if k == "sqrt":
        return np.sqrt(vals[0])
    return 1.0 / vals[0]  # inv
