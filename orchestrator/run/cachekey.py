"""The evaluation cache key: the loss as a function (canonical key, coefficients included) plus
everything about the training that changes its measured fitness (task, budget, seed policy)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from orchestrator.config import TaskConfig
from worker.lossexpr import Node

if TYPE_CHECKING:
    from db.store import Store


def canonical(tree: Node) -> str:
    """`worker.lossexpr.canonical.canonical_key` (equal for trees computing the same function)."""
    from worker.lossexpr.canonical import canonical_key

    return canonical_key(tree)


def tree_sha(tree: Node) -> str:
    """sha256 of the tree's JSON with sorted keys: identity of an exact tree, coefficients included."""
    text = json.dumps(tree.to_json(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class RememberedKeys:
    """`canonical` made a fixed function of the tree within one database.

    The first key computed for a tree is stored (`canonical_keys`) and every later call -- this
    run, a resumed one, another run on the same file -- returns it, even if the time-bounded
    symbolic step would now answer differently.  Used as the search's key_fn and for the cache."""

    def __init__(self, store: "Store", compute: Callable[[Node], str] = canonical) -> None:
        self._store = store
        self._compute = compute
        self._memo: dict[str, str] = {}

    def __call__(self, tree: Node) -> str:
        sha = tree_sha(tree)
        key = self._memo.get(sha)
        if key is None:
            key = self._store.canonical_key_of(sha)
            if key is None:
                key = self._store.remember_canonical_key(sha, self._compute(tree))
            self._memo[sha] = key
        return key


def eval_key(canonical_key: str, task: TaskConfig) -> str:
    """sha256 over the readable fields, which are stored next to it in `evaluations`."""
    material: dict[str, Any] = {"canonical": canonical_key, "task": task.name, "budget": task.budget(),
                                "seed_policy": task.seed_policy()}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
