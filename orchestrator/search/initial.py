"""Generation 0: seed losses, then random trees drawn the paper's way or conditioned on being trainable.

Why "valid" is the default: the paper's weighted grow at depth 2 yields a tree that reads both x
and y about 1 time in 9 (20,000 draws), so a population of 16 trains about two trees and a
small search discovers nothing.  Rejection sampling -- draw the paper's tree, keep it only if it
is trainable -- gives exactly the paper's distribution conditioned on trainability, which is what
a user means by "the paper's search, without the wasted slots".  A tree whose canonical key is
already in the population is drawn again too (it would only be resolved as a duplicate).

Pure and deterministic: every draw comes from the search's `random.Random`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.search.config import ConfigError, GAConfig, seed_loss_tree
from orchestrator.search.operators import Primitives, random_tree
from worker.lossexpr.onehot import is_trainable
from worker.lossexpr.tree import Node

#: Draws allowed for one trainable tree before the weights are declared unable to make one
#: (with the paper's weights a trainable tree takes ~9 draws; 1 in 10,000 means a broken config).
MAX_DRAWS_PER_TREE = 10_000
#: Redraws of a canonical duplicate before it is kept anyway (then resolved as a duplicate):
#: a tiny tree space (say depth 1, few elements) must not loop forever.
MAX_DUPLICATE_REDRAWS = 200


@dataclass
class InitCounts:
    """How generation 0 was made: what `glo status` reports as its trainable share."""

    seeded: int = 0
    drawn: int = 0  # random trees drawn, kept or not
    rejected_untrainable: int = 0
    rejected_duplicate: int = 0
    rejected_filtered: int = 0  # trainable, but the zero-training filter rejected it
    trainable: int = 0  # members of generation 0 that will be trained (or are seeds)

    def to_json(self) -> dict[str, int]:
        return {"seeded": self.seeded, "drawn": self.drawn, "rejected_untrainable": self.rejected_untrainable,
                "rejected_duplicate": self.rejected_duplicate, "rejected_filtered": self.rejected_filtered,
                "trainable": self.trainable}


def initial_trees(rng: random.Random, prims: Primitives, cfg: GAConfig, key_fn: Callable[[Node], str],
                  admissible: Callable[[Node], bool] = lambda tree: True) -> tuple[list[tuple[Node, str]], InitCounts]:
    """`cfg.population_size` (tree, origin) pairs: the seed losses ("seed"), then random ones ("init").

    "valid" keeps a draw only if it is trainable and `admissible` (the zero-training filter, when on)."""
    counts = InitCounts()
    out: list[tuple[Node, str]] = []
    keys: set[str] = set()
    for i, text in enumerate(cfg.seed_losses):
        tree = seed_loss_tree(text, f"ga.seed_losses[{i}]")
        if tree is None:
            raise ConfigError(f"ga.seed_losses[{i}]: {text!r} names a stored candidate; the scheduler "
                              "resolves those when the run is created")
        out.append((tree, "seed"))
        keys.add(key_fn(tree))
        counts.seeded += 1
    trainable: dict[Node, bool] = {}  # small trees recur thousands of times: judge each once
    while len(out) < cfg.population_size:
        if cfg.init == "paper":
            tree = _draw_initial_tree(rng, prims, cfg, counts, admissible, trainable)
        else:  # key_fn is memoized: asking again below is free
            tree = draw_new_initial_tree(rng, prims, cfg, counts, admissible, trainable,
                                         lambda t: key_fn(t) not in keys)
            keys.add(key_fn(tree))
        out.append((tree, "init"))
    counts.trainable = sum(1 for tree, _ in out if is_trainable(tree) and admissible(tree))
    return out, counts


def draw_new_initial_tree(rng: random.Random, prims: Primitives, cfg: GAConfig, counts: InitCounts,
                          admissible: Callable[[Node], bool], trainable: dict[Node, bool],
                          is_new: Callable[[Node], bool]) -> Node:
    """An `init` tree (`_draw_initial_tree`) drawn again while `is_new` says it is not, up to
    `MAX_DUPLICATE_REDRAWS` times (each counted in `counts.rejected_duplicate`): generation 0's duplicate
    check, and steady-state's for the further initial trees it draws when a pool has more slots than
    generation 0 has members (`steady.SteadyStateSearch`)."""
    tree = _draw_initial_tree(rng, prims, cfg, counts, admissible, trainable)
    for _ in range(MAX_DUPLICATE_REDRAWS):
        if is_new(tree):
            break
        counts.rejected_duplicate += 1
        tree = _draw_initial_tree(rng, prims, cfg, counts, admissible, trainable)
    return tree


def _draw_initial_tree(rng: random.Random, prims: Primitives, cfg: GAConfig, counts: InitCounts,
                       admissible: Callable[[Node], bool], trainable: dict[Node, bool]) -> Node:
    """One random `init` tree as generation 0 draws it, before any duplicate check: the paper's tree
    (`ga.init = "paper"`, trainable or not), or the first draw that is trainable and `admissible` ("valid");
    `trainable` memoizes `is_trainable`."""
    if cfg.init == "paper":
        counts.drawn += 1
        return random_tree(rng, prims, cfg.init_max_depth)
    return _trainable_tree(rng, prims, cfg, counts, admissible, trainable)


def _trainable_tree(rng: random.Random, prims: Primitives, cfg: GAConfig, counts: InitCounts,
                    admissible: Callable[[Node], bool], trainable: dict[Node, bool]) -> Node:
    for _ in range(MAX_DRAWS_PER_TREE):
        tree = random_tree(rng, prims, cfg.init_max_depth)
        counts.drawn += 1
        ok = trainable.get(tree)
        if ok is None:
            ok = trainable[tree] = is_trainable(tree)
        if not ok:
            counts.rejected_untrainable += 1
        elif not admissible(tree):
            counts.rejected_filtered += 1
        else:
            return tree
    raise ConfigError(f"ga.init: {MAX_DRAWS_PER_TREE} trees drawn with ga.node_weights at ga.init_max_depth = "
                      f"{cfg.init_max_depth} and none can train (each needs x and y, and the zero-training filter's pass); "
                      "give x and y weight, "
                      "raise init_max_depth, or set ga.init = \"paper\"")
