"""Genetic operators on loss trees: random generation, subtree crossover and the four mutations.

Pure functions: each takes an explicit `random.Random` (never the global one) so that a seeded
search is reproducible, and trees are immutable `Node`s so parents are never modified.
Each random decision consumes exactly one `rng.random()` draw, which keeps the stream layout
simple and lets `OpCounter` measure every operator's rate.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from orchestrator.search.config import GAConfig, element_arity
from worker.lossexpr.tree import MAX_CONST, Node


@dataclass
class OpCounter:
    """Bernoulli decisions and hits per operator, to check the realised rates."""

    decisions: dict[str, int] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)

    def record(self, name: str, hit: bool) -> None:
        self.decisions[name] = self.decisions.get(name, 0) + 1
        if hit:
            self.hits[name] = self.hits.get(name, 0) + 1

    def to_json(self) -> dict[str, list[int]]:
        return {k: [n, self.hits.get(k, 0)] for k, n in sorted(self.decisions.items())}

    @staticmethod
    def from_json(data: dict[str, list[int]]) -> "OpCounter":
        c = OpCounter()
        for k, (n, h) in data.items():
            c.decisions[k] = int(n)
            if h:
                c.hits[k] = int(h)
        return c


class Primitives:
    """Weighted element tables, split by arity, built once from the config."""

    def __init__(self, weights: dict[str, float]) -> None:
        self.all = [(e, w) for e, w in weights.items() if w > 0]
        self.by_arity = {a: [(e, w) for e, w in self.all if element_arity(e) == a] for a in (0, 1, 2)}

    def draw(self, rng: random.Random, arity: int | None = None) -> str:
        """A weighted-random element (of one arity, or of any)."""
        table = self.all if arity is None else self.by_arity[arity]
        if not table:
            raise ValueError(f"no element of arity {arity} has a positive weight")
        return _weighted(rng, table)


def _weighted(rng: random.Random, table: list[tuple[str, float]]) -> str:
    total = sum(w for _, w in table)
    r = rng.random() * total
    acc = 0.0
    for element, w in table:
        acc += w
        if r < acc:
            return element
    return table[-1][0]


def make_node(element: str, children: tuple[Node, ...] = (), coef: float = 1.0) -> Node:
    """The node for a weight element ("1"/"-1" are integer constants)."""
    if element in ("1", "-1"):
        return Node("const", (), int(element), coef)
    return Node(element, children, None, coef)


def random_leaf(rng: random.Random, prims: Primitives) -> Node:
    return make_node(prims.draw(rng, 0))


def random_tree(rng: random.Random, prims: Primitives, max_depth: int) -> Node:
    """DEAP-style "grow": any element while above `max_depth` (edges from the root), leaves at it.

    An arity with no positive weight is simply absent from the draw.
    """

    def grow(depth: int) -> Node:
        element = prims.draw(rng, 0) if depth >= max_depth else prims.draw(rng)
        kids = tuple(grow(depth + 1) for _ in range(element_arity(element)))
        return make_node(element, kids)

    return grow(0)


def crossover(rng: random.Random, a: Node, b: Node) -> tuple[Node, Node]:
    """Swap a uniformly chosen subtree of `a` with one of `b` (either may be the root)."""
    pa = a.paths()
    pb = b.paths()
    path_a = pa[int(rng.random() * len(pa))]
    path_b = pb[int(rng.random() * len(pb))]
    sub_a, sub_b = a.at(path_a), b.at(path_b)
    return a.replace_at(path_a, sub_b), b.replace_at(path_b, sub_a)


def _postorder_paths(tree: Node) -> list[tuple[int, ...]]:
    """Paths children-before-parent: mutating a node never moves the paths still to visit."""
    return sorted(tree.paths(), key=lambda p: (-len(p), p))


def mutate(
    rng: random.Random, tree: Node, prims: Primitives, cfg: GAConfig, counter: OpCounter | None = None
) -> tuple[Node, list[str]]:
    """Apply the paper's four mutations bottom-up over the tree's nodes.

    For each original node, deepest first, independent Bernoulli decisions in this order:
    integer constant +/-1 (`p_const_step`, const leaves only); replace by a weighted-random
    element of the same arity, keeping the children (`p_replace_node`); then on an inner node,
    replace it and its subtree by a weighted-random leaf (`p_shrink`), or on a leaf, replace it
    by a weighted-random element with weighted-random leaf children (`p_grow`).  A node created
    by a mutation is not mutated again in the same pass.  Returns the tree and the mutations
    applied (names, in order).
    """
    applied: list[str] = []
    for path in _postorder_paths(tree):
        node = tree.at(path)
        if node.op == "const":
            hit = rng.random() < cfg.p_const_step
            if counter is not None:
                counter.record("const_step", hit)
            if hit:
                step = 1 if rng.random() < 0.5 else -1
                value = max(-MAX_CONST, min(MAX_CONST, node.value + step))
                node = Node("const", (), value, node.coef)
                tree = tree.replace_at(path, node)
                applied.append("const_step")
        hit = rng.random() < cfg.p_replace_node
        if counter is not None:
            counter.record("replace_node", hit)
        if hit and prims.by_arity[node.arity]:
            node = make_node(prims.draw(rng, node.arity), node.children, node.coef)
            tree = tree.replace_at(path, node)
            applied.append("replace_node")
        if node.children:
            hit = rng.random() < cfg.p_shrink
            if counter is not None:
                counter.record("shrink", hit)
            if hit:
                tree = tree.replace_at(path, random_leaf(rng, prims))
                applied.append("shrink")
        else:
            hit = rng.random() < cfg.p_grow
            if counter is not None:
                counter.record("grow", hit)
            if hit:
                element = prims.draw(rng)
                kids = tuple(random_leaf(rng, prims) for _ in range(element_arity(element)))
                tree = tree.replace_at(path, make_node(element, kids))
                applied.append("grow")
    return tree, applied


def within_cap(tree: Node, cfg: GAConfig) -> bool:
    """The configured bloat cap (size and depth)."""
    return tree.size() <= cfg.max_tree_size and tree.depth() <= cfg.max_tree_depth
