"""The evaluation cache key: the loss as a function (canonical key, coefficients included) plus
everything about the training that changes its measured fitness (task, budget, seed policy)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from orchestrator.config import TaskConfig
from worker.lossexpr import Node


def canonical(tree: Node) -> str:
    """`worker.lossexpr.canonical.canonical_key` (equal for trees computing the same function)."""
    from worker.lossexpr.canonical import canonical_key

    return canonical_key(tree)


def eval_key(canonical_key: str, task: TaskConfig) -> str:
    """sha256 over the readable fields, which are stored next to it in `evaluations`."""
    material: dict[str, Any] = {"canonical": canonical_key, "task": task.name, "budget": task.budget(),
                                "seed_policy": task.seed_policy()}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
