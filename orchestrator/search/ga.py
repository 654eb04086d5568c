"""One generation of the paper's GA (elitism, roulette-wheel selection, crossover, mutation, cap), and one
child at a time for steady-state evolution (`breed_one`, with roulette or `tournament` parents).

Pure: the next generation is a function of the current trees, their fitnesses, the config and
the `random.Random` state.  Invalid trees (no x or no y) are bred like any other; they simply
carry fitness 0, which roulette selection never picks unless every fitness is 0.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.search.config import GAConfig
from orchestrator.search.operators import OpCounter, Primitives, crossover, mutate, within_cap
from worker.lossexpr.tree import Node


@dataclass(frozen=True)
class Offspring:
    """A member of the next generation and how it was made (parents are indices)."""

    tree: Node
    origin: str  # elite | crossover | mutation
    parents: tuple[int, ...]
    ops: tuple[str, ...] = ()
    capped: bool = False


#: Children drawn for one slot before `breed` keeps the last one anyway (it is then resolved as the
#: paper resolves it): a population whose trees cannot make a new trainable child must not loop forever.
MAX_CHILD_DRAWS = 100


def elite_indices(fitnesses: list[float], n: int) -> list[int]:
    """The n fittest, best first; ties keep population order (a stable, seed-free rule)."""
    order = sorted(range(len(fitnesses)), key=lambda i: -fitnesses[i])
    return order[:n]


def roulette(rng: random.Random, fitnesses: list[float]) -> int:
    """Fitness-proportional choice; negative or non-finite count as 0; all zero means uniform."""
    weights = [f if math.isfinite(f) and f > 0 else 0.0 for f in fitnesses]
    total = sum(weights)
    if total <= 0:
        return int(rng.random() * len(weights))
    r = rng.random() * total
    acc = 0.0
    last = 0
    for i, w in enumerate(weights):
        if w > 0:
            acc += w
            last = i
            if r < acc:
                return i
    return last


def breed(
    rng: random.Random,
    trees: list[Node],
    fitnesses: list[float],
    cfg: GAConfig,
    prims: Primitives,
    counter: OpCounter | None = None,
    accept: Callable[[Node], bool] | None = None,
) -> list[Offspring]:
    """The next generation: `cfg.elites` elites unchanged, then children in pairs.

    Each pair: two roulette parents; with `crossover_prob` swap random subtrees (both children
    kept), else copy; then mutate each child.  A child over the size/depth cap after crossover
    reverts to its parent, after mutation to its pre-mutation tree (DEAP's staticLimit).

    `accept` (ga.offspring = "valid"): a child it refuses is dropped and the slot bred again from new
    parents, up to `MAX_CHILD_DRAWS` children per slot (then the last one is kept).  It is asked once
    per child, in order, so it may remember what it accepted.  Without it, every child is kept: the
    paper's rule, and the same random stream as before the option existed.
    """
    size = cfg.population_size
    out = [Offspring(trees[i], "elite", (i,)) for i in elite_indices(fitnesses, cfg.elites)]
    refused = 0  # children refused for the slot being filled
    while len(out) < size:
        i, j = roulette(rng, fitnesses), roulette(rng, fitnesses)
        for tree, origin, parents, capped in _pair(rng, trees, i, j, cfg, counter):
            if len(out) >= size:
                break  # odd number of children to make: the last pair's second child is dropped
            kid = _mutated(rng, tree, origin, parents, capped, cfg, prims, counter)
            if accept is not None and refused + 1 < MAX_CHILD_DRAWS and not accept(kid.tree):
                refused += 1
                continue
            refused = 0
            out.append(kid)
    return out


def tournament(rng: random.Random, scores: list[tuple[int, float]], size: int) -> int:
    """The best of `size` members drawn without replacement (ties: the lower index, i.e. the older)."""
    drawn = rng.sample(range(len(scores)), min(size, len(scores)))
    return min(drawn, key=lambda i: (-scores[i][0], -scores[i][1], i))


def breed_one(
    rng: random.Random,
    trees: list[Node],
    select: Callable[[], int],
    cfg: GAConfig,
    prims: Primitives,
    counter: OpCounter | None = None,
    accept: Callable[[Node], bool] | None = None,
) -> Offspring:
    """One child for steady-state evolution: the paper's operators on two parents that `select` picks.

    As in `breed`, with `crossover_prob` the parents swap subtrees, else the first is copied; the first
    child of the pair is mutated and capped (the second is dropped: one freed slot, one child).  `accept`
    refuses a child and the slot is bred again from new parents, up to `MAX_CHILD_DRAWS` children (then
    the last one is returned anyway)."""
    for draw in range(MAX_CHILD_DRAWS):
        i, j = select(), select()
        tree, origin, parents, capped = _pair(rng, trees, i, j, cfg, counter)[0]
        kid = _mutated(rng, tree, origin, parents, capped, cfg, prims, counter)
        if accept is None or draw + 1 == MAX_CHILD_DRAWS or accept(kid.tree):
            return kid
    raise AssertionError("unreachable")


def _pair(rng: random.Random, trees: list[Node], i: int, j: int, cfg: GAConfig,
          counter: OpCounter | None) -> list[tuple[Node, str, tuple[int, ...], bool]]:
    """Two children before mutation: with `crossover_prob` swap random subtrees (a child over the cap
    reverts to its parent, DEAP's staticLimit), else copies of the parents."""
    crossed = rng.random() < cfg.crossover_prob
    if counter is not None:
        counter.record("crossover", crossed)
    if not crossed:
        return [(trees[i], "mutation", (i,), False), (trees[j], "mutation", (j,), False)]
    a, b = crossover(rng, trees[i], trees[j])
    ca, cb = not within_cap(a, cfg), not within_cap(b, cfg)
    return [
        (trees[i] if ca else a, "mutation" if ca else "crossover", (i,) if ca else (i, j), ca),
        (trees[j] if cb else b, "mutation" if cb else "crossover", (j,) if cb else (j, i), cb),
    ]


def _mutated(rng: random.Random, tree: Node, origin: str, parents: tuple[int, ...], capped: bool, cfg: GAConfig,
             prims: Primitives, counter: OpCounter | None) -> Offspring:
    """The child after mutation; over the cap it reverts to its pre-mutation tree."""
    mutated, ops = mutate(rng, tree, prims, cfg, counter)
    if ops and not within_cap(mutated, cfg):
        mutated, ops, capped = tree, [], True
    return Offspring(mutated, origin, parents, tuple(ops), capped)
