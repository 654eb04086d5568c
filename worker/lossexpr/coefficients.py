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

`drop_scale=True` (a calibrated run, `task.loss_scale = "calibrated"`): every loss then trains at one
gradient scale, so c·f and f are the same trained loss for c > 0 and an overall factor is one more
redundant slot.  The first kept slot that multiplies the whole function linearly (`scale_slot`: on a
purely multiplicative path from the root -- through either side of `*` and the numerator of `/`, never
through `+`, `-`, `log`, `sqrt` or `square`'s operand) is dropped too, and keeps the tree's own value (so its
sign, which calibration does not undo, stays as found).  A tree with no such slot (a sum at the root: each
term's coefficient also sets the terms' ratio) loses nothing more, and one whose only kept slot it is keeps
it (CMA-ES needs a coordinate to vary).
"""

from __future__ import annotations

from collections.abc import Sequence

from worker.lossexpr.errors import TreeError
from worker.lossexpr.tree import Node


def coefficient_slots(tree: Node) -> int:
    """Number of coefficient slots: one per node."""
    return tree.size()


def kept_slots(tree: Node, drop_scale: bool = False) -> list[int]:
    """Prefix indices of the coefficients that are not absorbed by another one (see module doc);
    `drop_scale`: without the overall scale slot (`scale_slot`) as well."""
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
    if drop_scale:
        scale = scale_slot(tree, kept)
        if scale is not None and len(kept) > 1:
            kept.remove(scale)
    return kept


def scale_slot(tree: Node, kept: Sequence[int] | None = None) -> int | None:
    """The first of the `kept` slots (prefix order; default: `kept_slots(tree)`) whose coefficient multiplies
    the whole function linearly, or None (module doc)."""
    kept_set = set(kept_slots(tree) if kept is None else kept)
    # prefix index of every node, so the walk down the multiplicative path can name each one
    index: dict[int, int] = {}
    order = [0]

    def number(node: Node) -> None:
        index[id(node)] = order[0]
        order[0] += 1
        for child in node.children:
            number(child)

    number(tree)

    def find(node: Node) -> int | None:
        if index[id(node)] in kept_set:
            return index[id(node)]  # the node's own coefficient multiplies its value, which scales f
        if node.op == "*":
            left = find(node.children[0])
            return left if left is not None else find(node.children[1])
        if node.op == "/":
            return find(node.children[0])
        return None

    return find(tree)


def pruned_coefficients(tree: Node, drop_scale: bool = False) -> list[float]:
    """The tree's current values at its kept slots: the vector CMA-ES tunes."""
    coefs = tree.coefficients()
    return [coefs[i] for i in kept_slots(tree, drop_scale)]


def apply_pruned(tree: Node, values: Sequence[float], drop_scale: bool = False) -> Node:
    """The tree with `values` at its kept slots and 1.0 at every pruned slot -- except, with `drop_scale`,
    the dropped scale slot, which keeps the tree's own value (module doc)."""
    slots = kept_slots(tree, drop_scale)
    if len(values) != len(slots):
        raise TreeError(f"tree has {len(slots)} tunable coefficients, got {len(values)} values")
    full = [1.0] * tree.size()
    if drop_scale:
        dropped = set(kept_slots(tree)) - set(slots)
        coefs = tree.coefficients()
        for index in dropped:
            full[index] = coefs[index]
    for index, value in zip(slots, values):
        full[index] = float(value)
    return tree.with_coefficients(full)
