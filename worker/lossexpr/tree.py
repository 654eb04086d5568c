"""Immutable loss-expression trees and their JSON wire format.

A tree is a value: `Node` is a frozen dataclass, so a tree can be hashed, shared between
generations and used as a dict key without defensive copies.  Every node carries a real
coefficient (default 1.0) that multiplies its value; a tree plus its coefficients is a
complete candidate loss.  JSON is the only wire and storage format -- nothing is ever
pickled or evaluated as Python.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from worker.lossexpr.errors import TreeError

UNARY_OPS = ("log", "square", "sqrt")
BINARY_OPS = ("+", "-", "*", "/")
LEAF_OPS = ("x", "y", "const")
ARITY = {**{op: 1 for op in UNARY_OPS}, **{op: 2 for op in BINARY_OPS}, **{op: 0 for op in LEAF_OPS}}

#: Hard limits that make huge inputs fail fast instead of exhausting memory or the stack.
MAX_NODES = 2000
MAX_DEPTH = 100
#: Integer constants are bounded so that JSON and arithmetic stay sane.
MAX_CONST = 10**9

JSON_VERSION = 1


@dataclass(frozen=True, slots=True)
class Node:
    """One node of a loss expression.

    `op` is one of `ARITY`'s keys, `children` holds exactly `ARITY[op]` nodes, `value` is the
    integer of a `const` leaf (None elsewhere) and `coef` multiplies the node's value.
    """

    op: str
    children: tuple["Node", ...] = ()
    value: int | None = None
    coef: float = 1.0
    _size: int = field(default=0, init=False, repr=False, compare=False)
    _depth: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.op not in ARITY:
            raise TreeError(f"unknown operator {self.op!r}")
        if len(self.children) != ARITY[self.op]:
            raise TreeError(f"operator {self.op!r} takes {ARITY[self.op]} operand(s), got {len(self.children)}")
        if self.op == "const":
            if isinstance(self.value, bool) or not isinstance(self.value, int):
                raise TreeError(f"a const leaf needs an integer value, got {self.value!r}")
            if abs(self.value) > MAX_CONST:
                raise TreeError(f"integer constant {self.value} exceeds the limit of {MAX_CONST}")
        elif self.value is not None:
            raise TreeError(f"only const leaves carry a value, {self.op!r} got {self.value!r}")
        if isinstance(self.coef, bool) or not isinstance(self.coef, (int, float)) or not math.isfinite(self.coef):
            raise TreeError(f"coefficient must be a finite real number, got {self.coef!r}")
        for child in self.children:
            if not isinstance(child, Node):
                raise TreeError(f"children must be Nodes, got {type(child).__name__}")
        size = 1 + sum(c._size for c in self.children)
        depth = 1 + max((c._depth for c in self.children), default=0)
        if size > MAX_NODES:
            raise TreeError(f"tree has more than {MAX_NODES} nodes")
        if depth > MAX_DEPTH:
            raise TreeError(f"tree is deeper than {MAX_DEPTH} levels")
        object.__setattr__(self, "coef", float(self.coef))
        object.__setattr__(self, "_size", size)
        object.__setattr__(self, "_depth", depth)

    # -- shape ---------------------------------------------------------------------------
    @property
    def arity(self) -> int:
        return ARITY[self.op]

    @property
    def is_leaf(self) -> bool:
        return not self.children

    def size(self) -> int:
        """Number of nodes in the tree."""
        return self._size

    def depth(self) -> int:
        """Levels in the tree; a single leaf has depth 1."""
        return self._depth

    def preorder(self) -> Iterator["Node"]:
        """Nodes in prefix order; index i here is the tree's node (and coefficient slot) i."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def paths(self) -> list[tuple[int, ...]]:
        """Path (child indices from the root) of each node, in prefix order."""
        out: list[tuple[int, ...]] = []
        stack: list[tuple[Node, tuple[int, ...]]] = [(self, ())]
        while stack:
            node, path = stack.pop()
            out.append(path)
            for i in reversed(range(len(node.children))):
                stack.append((node.children[i], path + (i,)))
        return out

    def at(self, path: tuple[int, ...]) -> "Node":
        node = self
        for i in path:
            node = node.children[i]
        return node

    def replace_at(self, path: tuple[int, ...], new: "Node") -> "Node":
        """A new tree with the subtree at `path` replaced by `new` (self is unchanged)."""
        if not path:
            return new
        head, rest = path[0], path[1:]
        kids = list(self.children)
        kids[head] = kids[head].replace_at(rest, new)
        return replace(self, children=tuple(kids))

    # -- content -------------------------------------------------------------------------
    def has_x(self) -> bool:
        return any(n.op == "x" for n in self.preorder())

    def has_y(self) -> bool:
        return any(n.op == "y" for n in self.preorder())

    def is_valid(self) -> bool:
        """A loss must read both the label and the prediction (the paper's validity rule)."""
        return self.has_x() and self.has_y()

    def coefficients(self) -> list[float]:
        """All coefficients in prefix order (one slot per node)."""
        return [n.coef for n in self.preorder()]

    def with_coefficients(self, coefs: list[float] | tuple[float, ...]) -> "Node":
        """The same tree with every node's coefficient replaced (prefix order)."""
        coefs = list(coefs)
        if len(coefs) != self.size():
            raise TreeError(f"tree has {self.size()} coefficient slots, got {len(coefs)} values")
        it = iter(coefs)

        def build(node: Node) -> Node:
            c = next(it)
            kids = tuple(build(ch) for ch in node.children)
            return Node(node.op, kids, node.value, c)

        return build(self)

    def without_coefficients(self) -> "Node":
        return self.with_coefficients([1.0] * self.size())

    def has_coefficients(self) -> bool:
        return any(n.coef != 1.0 for n in self.preorder())

    # -- JSON ------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """Plain-data form: `{"op": ..., "args": [...], "value": int, "coef": float}`.

        `args` is omitted on leaves, `value` outside consts, and `coef` when it is 1.0.
        """
        out: dict[str, Any] = {"op": self.op}
        if self.children:
            out["args"] = [c.to_json() for c in self.children]
        if self.op == "const":
            out["value"] = self.value
        if self.coef != 1.0:
            out["coef"] = self.coef
        return out

    @staticmethod
    def from_json(data: Any) -> "Node":
        """Inverse of `to_json`; rejects anything that is not exactly that shape."""
        budget = [MAX_NODES]

        def build(d: Any, depth: int) -> Node:
            if depth > MAX_DEPTH:
                raise TreeError(f"tree JSON is deeper than {MAX_DEPTH} levels")
            budget[0] -= 1
            if budget[0] < 0:
                raise TreeError(f"tree JSON has more than {MAX_NODES} nodes")
            if not isinstance(d, dict):
                raise TreeError(f"tree node must be a JSON object, got {type(d).__name__}")
            unknown = set(d) - {"op", "args", "value", "coef"}
            if unknown:
                raise TreeError(f"unknown key(s) in tree node: {', '.join(sorted(unknown))}")
            op = d.get("op")
            if not isinstance(op, str) or op not in ARITY:
                raise TreeError(f"unknown operator {op!r} in tree JSON")
            args = d.get("args", [])
            if not isinstance(args, list):
                raise TreeError("'args' must be a list")
            if len(args) != ARITY[op]:
                raise TreeError(f"operator {op!r} takes {ARITY[op]} operand(s), got {len(args)}")
            coef = d.get("coef", 1.0)
            return Node(op, tuple(build(a, depth + 1) for a in args), d.get("value"), coef)

        return build(data, 1)


# -- convenience constructors (used by tests, named losses and the search) ------------------
X = Node("x")
Y = Node("y")


def const(v: int, coef: float = 1.0) -> Node:
    return Node("const", (), v, coef)


def un(op: str, a: Node, coef: float = 1.0) -> Node:
    return Node(op, (a,), None, coef)


def bin_(op: str, a: Node, b: Node, coef: float = 1.0) -> Node:
    return Node(op, (a, b), None, coef)
