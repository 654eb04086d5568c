"""Coefficient slots of a tree and the pruned vector that CMA-ES tunes.

Every node has a coefficient slot (prefix order).  Many slots are redundant: the paper's
example is 3·(5x + 2y) = 15x + 6y, where the outer 3 is absorbed by the inner coefficients.

The rule (each case is an exact identity for every real coefficient value):

* `+`, `-`: c·(aA ± bB) = (ca)A ± (cb)B — the node's own coefficient is absorbed by its
  children's, so it is pruned.
* `*`: c·(aA · bB) = (cab·A)·B — the node's coefficient and its right child's are absorbed by
  the left child's; both are pruned.
* `/`: c·(aA / bB) = ((ca/b)·A) / B — the node's coefficient and its denominator's are absorbed
  by the numerator's; both are pruned.
* `square`: s·(cA)² = (s·c²)·A² — the child's coefficient is absorbed by the square's.
* Everything else is kept: leaves and integer constants (their coefficient is their scale or
  value), `log` (log(cA) = log c + log A is a shift, not a scale) and `sqrt` and its operand
  (√(cA) = √c·√A holds only for c > 0, so the sign of c matters).

Pruned slots stay at 1.0; setting the kept slots reaches every function the full vector can.
"""

from __future__ import annotations

from collections.abc import Sequence

from worker.lossexpr.errors import TreeError
from worker.lossexpr.tree import Node


def coefficient_slots(tree: Node) -> int:
    """Number of coefficient slots: one per node."""
    return tree.size()


def kept_slots(tree: Node) -> list[int]:
    """Prefix indices of the coefficients that are not absorbed by another one (see module doc)."""
    kept: list[int] = []
    counter = [0]

    def walk(node: Node, absorbed: bool) -> None:
        index = counter[0]
        counter[0] += 1
        own_pruned = absorbed or node.op in ("+", "-", "*", "/")
        if not own_pruned:
            kept.append(index)
        if node.op in ("+", "-"):
            walk(node.children[0], False)
            walk(node.children[1], False)
        elif node.op in ("*", "/"):
            walk(node.children[0], False)
            walk(node.children[1], True)
        elif node.op == "square":
            walk(node.children[0], True)
        else:
            for child in node.children:
                walk(child, False)

    walk(tree, False)
    return kept


def pruned_coefficients(tree: Node) -> list[float]:
    """The tree's current values at its kept slots: the vector CMA-ES tunes."""
    coefs = tree.coefficients()
    return [coefs[i] for i in kept_slots(tree)]


def apply_pruned(tree: Node, values: Sequence[float]) -> Node:
    """The tree with `values` at its kept slots and 1.0 at every pruned slot."""
    slots = kept_slots(tree)
    if len(values) != len(slots):
        raise TreeError(f"tree has {len(slots)} tunable coefficients, got {len(values)} values")
    full = [1.0] * tree.size()
    for index, value in zip(slots, values):
        full[index] = float(value)
    return tree.with_coefficients(full)
