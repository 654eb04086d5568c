"""The evaluation cache key: the loss as a function (canonical key, coefficients included) plus
everything about the training that changes its measured fitness (task, budget, seed policy).

Under `task.loss_scale = "calibrated"` what trains is s(L)·L, the same for L and c·L (c > 0), so the key
is scale-free (`CalibratedKeys`, prefix ``c1:``); the budget then holds loss_scale, so such keys and an
uncalibrated run's never meet in the cache either."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from orchestrator.config import TaskConfig
from worker.lossexpr import Node, to_infix

if TYPE_CHECKING:
    from db.store import Store


def canonical(tree: Node) -> str:
    """`worker.lossexpr.canonical.canonical_key` (equal for trees computing the same function)."""
    from worker.lossexpr.canonical import canonical_key

    return canonical_key(tree)


def canonical_many(trees: Sequence[Node]) -> list[str]:
    """`canonical` of each tree, computed on the key helpers in parallel (`canonical.canonical_keys`)."""
    from worker.lossexpr.canonical import canonical_keys

    return canonical_keys(trees)


def tree_sha(tree: Node) -> str:
    """sha256 of the tree's JSON with sorted keys: identity of an exact tree, coefficients included."""
    text = json.dumps(tree.to_json(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def untrained_key(tree: Node) -> str:
    """The key stored for a candidate settled untrained because its tree cannot train (it lacks x or y, or
    the zero-training filter rejected it): ``t0:`` + its infix, the canonical key's cheapest sound form.

    Why not the symbolic key: no fitness of such a tree is ever cached or looked up, so its few ms of
    sympy would buy nothing -- and under the paper's random initialisation most trees are like this.  Not
    remembered in `canonical_keys` either: a later run that may train the tree computes its real key then."""
    return "t0:" + to_infix(tree)


class RememberedKeys:
    """`canonical` made a fixed function of the tree within one database.

    The first key computed for a tree is stored (`canonical_keys`) and every later call -- this
    run, a resumed one, another run on the same file -- returns it, even if the time-bounded
    symbolic step would now answer differently.  Used as the search's key_fn and for the cache."""

    def __init__(self, store: "Store", compute: Callable[[Node], str] = canonical,
                 compute_many: Callable[[Sequence[Node]], list[str]] | None = None, namespace: str = "") -> None:
        """`namespace`: prefixed to the tree's sha in the remembered table, so that a second kind of key
        (the calibrated runs' scale-free one, `CALIBRATED_PREFIX`) is remembered beside the plain one."""
        self._store = store
        self._namespace = namespace
        self._compute = compute
        # a batch is computed in parallel by the default key; any other `compute` one tree at a time
        self._compute_many = compute_many or (canonical_many if compute is canonical
                                              else (lambda trees: [compute(t) for t in trees]))
        self._memo: dict[str, str] = {}

    def __call__(self, tree: Node) -> str:
        sha = self._namespace + tree_sha(tree)
        key = self._memo.get(sha)
        if key is None:
            key = self._store.canonical_key_of(sha)
            if key is None:
                key = self._store.remember_canonical_key(sha, self._compute(tree))
            self._memo[sha] = key
        return key

    def prefetch(self, trees: Sequence[Node]) -> None:
        """Settle the keys of a batch at once -- one read for the remembered ones, the rest computed in
        parallel and remembered in one write -- so that the calls that follow are memo hits.  The same keys
        as calling one tree at a time (first writer wins as there); only the wall time changes."""
        todo: dict[str, Node] = {}
        for tree in trees:
            sha = self._namespace + tree_sha(tree)
            if sha not in self._memo:
                todo.setdefault(sha, tree)
        if not todo:
            return
        stored = self._store.canonical_keys_of(todo)
        self._memo.update(stored)
        missing = [(sha, tree) for sha, tree in todo.items() if sha not in stored]
        if missing:
            computed = self._compute_many([tree for _, tree in missing])
            self._memo.update(self._store.remember_canonical_keys(
                {sha: key for (sha, _), key in zip(missing, computed)}))


#: Prefix of a calibrated run's canonical keys (and of their rows in the remembered table).  The one that
#: follows is ``u:`` + the plain key for a tree that cannot be calibrated (it trains unscaled, so its scale
#: counts), else the scale-free key (`canonical.scale_free_key`).
CALIBRATED_PREFIX = "c1:"
UNCALIBRATED_MARK = "u:"


def _scale_free(tree: Node) -> str:
    from worker.lossexpr.canonical import scale_free_key

    return scale_free_key(tree)


class CalibratedKeys:
    """The canonical key of a calibrated run: equal for trees whose calibrated losses are equal.

    A tree the calibration scales trains as s(T)·T, and s(c·T)·c·T = s(T)·T for c > 0: its key is
    ``c1:`` + the scale-free key, remembered per tree like the plain one (table rows ``c1:<sha>``).
    A tree it cannot scale (`calibration.Calibrator.scale` is None: zero or non-finite gradient) trains
    as it is: ``c1:u:`` + its plain key, so 3·T and T stay apart.  Which of the two applies depends on
    the task's loss settings (epsilon, class reduction, gradient below epsilon), which a run never changes
    per candidate; the remembered part depends on the tree alone.  Used as the search's key_fn too:
    calibrated, 3·f and f are one trained loss, so breeding counts them as duplicates."""

    def __init__(self, store: "Store", scale: Callable[[Node], float | None], plain: RememberedKeys) -> None:
        self._scale = scale
        self._plain = plain
        self._free = RememberedKeys(store, compute=_scale_free, namespace=CALIBRATED_PREFIX)

    def __call__(self, tree: Node) -> str:
        if self._scale(tree) is None:
            return CALIBRATED_PREFIX + UNCALIBRATED_MARK + self._plain(tree)
        return CALIBRATED_PREFIX + self._free(tree)

    def prefetch(self, trees: Sequence[Node]) -> None:
        """`RememberedKeys.prefetch` for each kind of tree."""
        uncalibrated = [t for t in trees if self._scale(t) is None]
        self._plain.prefetch(uncalibrated)
        self._free.prefetch([t for t in trees if self._scale(t) is not None])


def eval_key(canonical_key: str, task: TaskConfig) -> str:
    """sha256 over the readable fields, which are stored next to it in `evaluations`."""
    material: dict[str, Any] = {"canonical": canonical_key, "task": task.name, "budget": task.budget(),
                                "seed_policy": task.seed_policy()}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
