"""Built-in named losses from the GLO paper."""

from __future__ import annotations

from worker.lossexpr.errors import LossExprError
from worker.lossexpr.infix import parse
from worker.lossexpr.tree import Node

#: BaikalCMA's coefficients c0..c5 in the paper's formula
#: -(1/n) Σ c0·(c1·log(c2·y) − c3·(c4·x)/(c5·y)); they fall on Baikal's nodes in prefix order.
BAIKAL_CMA_COEFFICIENTS = (2.7279, 0.9863, 1.5352, -1.1135, 1.3716, -0.8411)

_TEXT = {
    "ce": "x * log(y)",
    "baikal": "log(y) - x / y",
}


def named_loss(name: str) -> Node:
    """The tree of a built-in loss: `ce`, `baikal` or `baikal_cma`."""
    if name in _TEXT:
        return parse(_TEXT[name])
    if name == "baikal_cma":
        return parse(_TEXT["baikal"]).with_coefficients(list(BAIKAL_CMA_COEFFICIENTS))
    raise LossExprError(f"unknown loss name {name!r} (known: {', '.join(NAMES)})")


NAMES = ("ce", "baikal", "baikal_cma")


def resolve(text: str) -> Node:
    """A built-in name or infix text -> tree (what the CLI accepts as EXPR|NAME)."""
    stripped = text.strip()
    if stripped in NAMES:
        return named_loss(stripped)
    return parse(text)
