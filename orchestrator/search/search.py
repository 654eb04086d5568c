"""The GLO search as pure ask/tell: GA discovery, then CMA-ES on the top-k distinct trees.

Contract for the scheduler (why it is shaped this way: the scheduler stays trivial):

* Every candidate returned by `ask()` must be trained and told exactly once (`tell(id, f)`;
  a failure or timeout is told as 0.0).  Results may arrive in any order.
* Candidates that need no training are resolved inside the search and never handed out:
  invalid trees (no x or no y, or on one-hot labels no dependence on one of them:
  `worker.lossexpr.onehot.is_trainable`) get 0; elites carry their fitness into the next generation;
  canonical duplicates inside one generation (same `key_fn` key) get the fitness of the first
  one, once it is told.  Each is counted in `stats()` and listed, with its reason, by
  `resolved_without_training()` so the database can store it.  Caching across generations is
  the scheduler's job.
* A generation is bred once all its members have a fitness.  Given the seed and the told
  results, the candidates (ids, trees, order) are identical whatever the order of the tells.
* With `config.fidelity` (multi-fidelity promotion), a generation's best distinct fraction is
  asked again at each higher rung before breeding: candidate `g<gen>-<i>-r<rung>`, trained with
  `task_overrides(id)` (its rung's steps).  Members rank by (highest rung reached, fitness there)
  for elitism, selection (roulette weight rung + fitness), the archive and CMA-ES's start.  With
  `fidelity.seeds = n > 1` a promotion is n trainings, `g<gen>-<i>-r<rung>` and
  `g<gen>-<i>-r<rung>-s<k>` for k = 1..n-1 (training seed task.seed + k: `task_overrides` says
  `seed_offset`), and its fitness at the rung is their mean.
* `export_state()` is plain JSON data ({"glo_search_state": 1, ...}); `Search.import_state`
  rebuilds a search that continues exactly as the original would.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from orchestrator.search.candidate import AlreadyToldError, Candidate, UnknownCandidateError  # noqa: F401 (re-exported)
from orchestrator.search.cma_phase import CMAPhase, StateError
from orchestrator.search.config import SearchConfig
from orchestrator.search.ga import breed
from orchestrator.search.initial import initial_trees
from orchestrator.search.operators import OpCounter, Primitives
from worker.lossexpr.infix import to_infix
from worker.lossexpr.onehot import is_trainable
from worker.lossexpr.tree import Node

STATE_VERSION = 1

KeyFn = Callable[[Node], str]


@runtime_checkable
class BatchKeyFn(Protocol):
    """A key function that can also settle a batch of trees at once (the scheduler's remembered keys,
    computed on several helper processes): the search hands it a generation's trees before keying them
    one by one, which then only reads what the batch settled."""

    def __call__(self, tree: Node) -> str: ...

    def prefetch(self, trees: Sequence[Node]) -> None: ...
#: A zero-training filter (`filters.screen_for`): None when the tree may train, else the reason it may not.
ScreenFn = Callable[[Node], "str | None"]



def default_key_fn() -> KeyFn:
    """`worker.lossexpr.canonical.canonical_key` when that module exists, else `to_infix`."""
    try:
        from worker.lossexpr.canonical import canonical_key  # type: ignore[import-not-found]
    except ImportError:
        return to_infix
    return canonical_key


def sanitize(fitness: Any) -> float:
    """A told fitness as a float; NaN/inf (and anything non-numeric-finite) become 0."""
    if isinstance(fitness, bool):
        raise TypeError("fitness must be a number, got a bool")
    f = float(fitness)
    return f if math.isfinite(f) else 0.0


@dataclass(frozen=True)
class Resolved:
    """A candidate given a fitness without training, and why (invalid | elite | duplicate | a filter's reason)."""

    candidate: Candidate
    fitness: float
    reason: str
    duplicate_of: str | None = None

    @property
    def cannot_train(self) -> bool:
        """Settled at 0 because the tree cannot train (invalid, or rejected by the zero-training filter), not
        given a fitness already known (an elite's, or the one of the duplicate it shares a key with)."""
        return self.reason not in ("elite", "duplicate")

    def to_json(self) -> dict[str, Any]:
        return {"candidate": self.candidate.to_json(), "fitness": self.fitness, "reason": self.reason,
                "duplicate_of": self.duplicate_of}

    @staticmethod
    def from_json(d: dict[str, Any]) -> "Resolved":
        return Resolved(Candidate.from_json(d["candidate"]), float(d["fitness"]), d["reason"], d.get("duplicate_of"))


# per-candidate status inside the current generation
QUEUED, ASKED, WAITING, DONE = "queued", "asked", "waiting", "done"


def promoted_id(member_id: str, rung: int, seed_index: int = 0) -> str:
    """The id of a generation member's training at rung >= 1 (`seed_index` k > 0: its training on seed
    task.seed + k, fidelity.seeds)."""
    return f"{member_id}-r{rung}" + (f"-s{seed_index}" if seed_index else "")


def parse_discovery_id(cid: str) -> tuple[int, int, int]:
    """(generation, index, rung) of `g<gen>-<i>`, `g<gen>-<i>-r<rung>` or `g<gen>-<i>-r<rung>-s<k>`;
    ValueError for anything else."""
    return _parse_discovery_id(cid)[:3]


def seed_index(cid: str) -> int:
    """k of a promotion's training on seed task.seed + k (`...-r<rung>-s<k>`); 0 for every other discovery id."""
    return _parse_discovery_id(cid)[3]


def _parse_discovery_id(cid: str) -> tuple[int, int, int, int]:
    if not cid.startswith("g"):
        raise ValueError(cid)
    parts = cid[1:].split("-")
    if len(parts) == 2:
        return int(parts[0]), int(parts[1]), 0, 0
    if len(parts) in (3, 4) and parts[2].startswith("r"):
        rung, k = int(parts[2][1:]), 0
        if len(parts) == 4:
            if not parts[3].startswith("s") or (k := int(parts[3][1:])) < 1:
                raise ValueError(cid)
        if rung >= 1:
            return int(parts[0]), int(parts[1]), rung, k
    raise ValueError(cid)


class Search:
    """GA discovery for `ga.generations` generations, then CMA-ES on the top-k trees, then finished."""

    def __init__(self, config: SearchConfig | None = None, key_fn: KeyFn | None = None,
                 screen: ScreenFn | None = None, drop_scale: bool = False) -> None:
        """`screen`: a zero-training filter for the run's task (the scheduler passes one when
        `ga.zero_training_filter` is on); a tree it rejects is resolved with fitness 0 and its reason,
        and the valid init draws only trees it passes.  `drop_scale`: the run's losses train calibrated
        (`task.loss_scale`), so CMA-ES does not tune an overall scale (`coefficients.kept_slots`)."""
        self.config = config or SearchConfig()
        self._drop_scale = drop_scale
        self._key_fn_arg = key_fn
        self._screen = screen
        self._screened: dict[Node, str | None] = {}
        self._key_fn: KeyFn | None = key_fn
        self._key_cache: dict[Node, str] = {}
        self._prims = Primitives(self.config.ga.weights())
        self._rng = random.Random(self.config.seed)
        self._counter = OpCounter()
        self._phase = "discovery"
        self._generation = 0
        self._population: list[Candidate] = []
        self._fitness: dict[str, float] = {}
        self._status: dict[str, str] = {}
        self._dup_of: dict[str, str] = {}
        self._elite_fitness: dict[str, float] = {}
        self._keys: dict[str, str] = {}
        self._archive: dict[str, dict[str, Any]] = {}  # key -> {"fitness", "candidate", "order"}
        self._resolved: list[Resolved] = []
        self._best: tuple[Candidate, float] | None = None
        self._history: list[dict[str, Any]] = []
        self._stats = {"handed_out": 0, "told": 0, "invalid": 0, "duplicates": 0, "elites": 0,
                       "nonfinite": 0, "capped": 0, "cma_evaluations": 0}
        self._cma: list[CMAPhase] = []
        self._init: dict[str, int] = {}  # how generation 0 was drawn (initial.InitCounts)
        # multi-fidelity (config.fidelity): rung reached per member, the current generation's promoted
        # candidates, the rung being trained now, elites' carried rungs, trainings handed out per rung
        self._reached: dict[str, int] = {}
        self._promoted: list[Candidate] = []
        self._rung_now = 0
        self._elite_rung: dict[str, int] = {}
        self._rung_asked: list[int] = [0] * (1 + len(self.config.fidelity.steps) if self.config.fidelity else 1)
        self._fresh: bool = True

    # -- construction of the first generation is lazy so import_state can skip it ------------
    def _start(self) -> None:
        if self._fresh:
            self._fresh = False
            pop = [Candidate(f"g0-{i}", t, origin, 0) for i, (t, origin) in enumerate(self._initial_trees())]
            self._set_generation(pop, {})
            self._advance()

    def _initial_trees(self) -> list[tuple[Node, str]]:
        """Generation 0's (tree, origin) pairs (`initial.initial_trees`), counting how they were drawn."""
        trees, counts = initial_trees(self._rng, self._prims, self.config.ga, self.key,
                                      admissible=lambda t: self.rejection(t) is None)
        self._init = counts.to_json()
        return trees

    def key(self, tree: Node) -> str:
        """The canonical key used for in-generation deduplication (cached per tree)."""
        if tree not in self._key_cache:
            if self._key_fn is None:
                self._key_fn = default_key_fn()
            try:
                k = self._key_fn(tree)
            except Exception:  # a key function failure must not stop the search  # noqa: BLE001
                k = "infix:" + to_infix(tree)
            self._key_cache[tree] = k
        return self._key_cache[tree]

    def _prefetch_keys(self, trees: list[Node]) -> None:
        """Let a batch-capable key function settle these trees' keys at once (wall time only: `key` gives
        the same keys either way, and a failure here just leaves them to `key`)."""
        if len(trees) > 1 and isinstance(self._key_fn, BatchKeyFn):
            try:
                self._key_fn.prefetch(trees)
            except Exception:  # noqa: BLE001 - `key` computes (or falls back) one tree at a time
                pass

    def rejection(self, tree: Node) -> str | None:
        """The zero-training filter's reason for rejecting a trainable tree (None: it may train; cached)."""
        if self._screen is None:
            return None
        if tree not in self._screened:
            if len(self._screened) > 100_000:
                self._screened.clear()
            self._screened[tree] = self._screen(tree)
        return self._screened[tree]

    def _set_generation(self, pop: list[Candidate], elite_fitness: dict[str, float],
                        elite_rung: dict[str, int] | None = None) -> None:
        """Install a generation and resolve what needs no training (elites, invalid, duplicates)."""
        self._population = pop
        self._fitness, self._status, self._dup_of, self._keys = {}, {}, {}, {}
        self._elite_fitness = dict(elite_fitness)
        self._elite_rung = dict(elite_rung or {})
        self._reached = dict(self._elite_rung)
        self._promoted, self._rung_now = [], 0
        old_cache, self._key_cache = self._key_cache, {}
        self._prefetch_keys([c.tree for c in pop if c.id not in elite_fitness and c.tree not in old_cache
                             and is_trainable(c.tree) and self.rejection(c.tree) is None])
        first: dict[str, str] = {}
        for cand in pop:
            if cand.id in elite_fitness:
                self._resolve(cand, elite_fitness[cand.id], "elite")
                self._stats["elites"] += 1
            elif not is_trainable(cand.tree):
                self._resolve(cand, 0.0, "invalid")
                self._stats["invalid"] += 1
                continue
            elif (why := self.rejection(cand.tree)) is not None:
                self._resolve(cand, 0.0, why)
                self._stats["filtered"] = self._stats.get("filtered", 0) + 1
                continue
            if cand.tree in old_cache:
                self._key_cache[cand.tree] = old_cache[cand.tree]
            key = self._keys[cand.id] = self.key(cand.tree)
            if cand.id in elite_fitness:
                first.setdefault(key, cand.id)
                continue
            if key in first:
                self._stats["duplicates"] += 1
                self._dup_of[cand.id] = first[key]
                if self._status[first[key]] == DONE:
                    self._resolve(cand, self._fitness[first[key]], "duplicate", first[key])
                else:
                    self._status[cand.id] = WAITING
            else:
                first[key] = cand.id
                self._status[cand.id] = QUEUED

    def _resolve(self, cand: Candidate, fitness: float, reason: str | None, dup: str | None = None) -> None:
        self._fitness[cand.id] = fitness
        self._status[cand.id] = DONE
        if reason is not None:
            self._resolved.append(Resolved(cand, fitness, reason, dup))
        if cand.origin != "promoted":
            self._note_best(cand, fitness)
        elif (f := self._rung_fitness(cand.parents[0], self._rung_of(cand.id))) is not None:
            self._note_best(self._promotion(cand.parents[0], self._rung_of(cand.id)), f)

    def _rung_fitness(self, member_id: str, rung: int) -> float | None:
        """A member's fitness at a rung >= 1: the mean over its fidelity.seeds trainings there (None until
        all are told)."""
        n = self.config.fidelity.seeds if self.config.fidelity else 1
        fits = [self._fitness.get(promoted_id(member_id, rung, k)) for k in range(n)]
        if any(f is None for f in fits):
            return None
        return fits[0] if n == 1 else sum(fits) / n  # type: ignore[arg-type]

    def _promotion(self, member_id: str, rung: int) -> Candidate:
        """A member's (first-seed) training at a rung: the candidate that stands for it as the best."""
        pid = promoted_id(member_id, rung)
        return next(c for c in self._promoted if c.id == pid)

    def _note_best(self, cand: Candidate, fitness: float) -> None:
        """Best by (rung, fitness); ties go to the candidate handed out first, so the best does not depend
        on tell order.  Without fidelity every rung is 0: the best fitness."""
        if self._best is None:
            self._best = (cand, fitness)
            return
        mine, theirs = (self.rung(cand), fitness), (self.rung(self._best[0]), self._best[1])
        if mine > theirs or (mine == theirs and _ask_order(cand.id) < _ask_order(self._best[0].id)):
            self._best = (cand, fitness)

    def rung(self, cand: Candidate) -> int:
        """The rung a candidate was trained at (an elite: the rung its fitness was measured at)."""
        fid = self.config.fidelity
        if fid is None:
            return 0
        if cand.id.startswith("c"):
            return fid.cma
        if cand.origin == "elite":
            return self._elite_rung.get(cand.id, 0)
        return parse_discovery_id(cand.id)[2]

    def _generation_complete(self) -> bool:
        return (all(c.id in self._fitness for c in self._population)
                and all(self._status[p.id] == DONE for p in self._promoted))

    def score(self, member: Candidate) -> tuple[int, float]:
        """(highest rung reached, fitness there) of a generation member; a duplicate has its original's."""
        orig = self._dup_of.get(member.id, member.id)
        rung = self._reached.get(orig, 0)
        if orig in self._elite_fitness:
            return rung, self._elite_fitness[orig]
        if rung == 0:
            return rung, self._fitness[orig]
        f = self._rung_fitness(orig, rung)
        assert f is not None, "score() is read once the rung is complete"
        return rung, f

    def _promote(self) -> bool:
        """Ask the best distinct fraction of this rung again at the next one; False when no rung is left.

        Ranked by fitness, ties by member index, over the members trained at this rung (elites and
        duplicates are not retrained): the same promotions whatever order the results came in."""
        fid = self.config.fidelity
        if fid is None or self._rung_now >= len(fid.steps):
            return False
        r = self._rung_now
        at_rung = [(i, c) for i, c in enumerate(self._population)
                   if self._reached.get(c.id, 0) == r and c.id not in self._elite_fitness
                   and c.id not in self._dup_of and c.id in self._keys]
        scored = [(self.score(c)[1], i, c) for i, c in at_rung]
        scored = [t for t in scored if t[0] > 0]
        k = math.ceil(fid.promote_fraction * len(scored))
        chosen = sorted(scored, key=lambda t: (-t[0], t[1]))[:k]
        self._rung_now = r + 1
        if not chosen:
            self._rung_now = len(fid.steps)
            return False
        for _f, _i, c in sorted(chosen, key=lambda t: t[1]):
            for k in range(fid.seeds):
                p = Candidate(promoted_id(c.id, r + 1, k), c.tree, "promoted", self._generation, (c.id,), ops=())
                self._promoted.append(p)
                self._status[p.id] = QUEUED
            self._stats["promoted"] = self._stats.get("promoted", 0) + 1
        return True

    def _advance(self) -> None:
        """Promote to the next rung, then breed (or move to CMA-ES), while the current generation is complete."""
        while self._phase == "discovery" and self._generation_complete():
            if self._promote():
                continue
            self._close_generation()
            ga = self.config.ga
            if self._generation + 1 >= ga.generations:
                self._start_cma()
                return
            trees = [c.tree for c in self._population]
            scores = [self.score(c) for c in self._population]
            # roulette weight and elite order: (rung, fitness) as rung + fitness (fitness is in [0, 1])
            fits = [r + f if f > 0 else 0.0 for r, f in scores]
            kids = breed(self._rng, trees, fits, ga, self._prims, self._counter,
                         accept=self._new_child_filter() if ga.offspring == "valid" else None)
            self._generation += 1
            g = self._generation
            pop: list[Candidate] = []
            elite_fitness: dict[str, float] = {}
            elite_rung: dict[str, int] = {}
            for i, kid in enumerate(kids):
                cid = f"g{g}-{i}"
                parents = tuple(self._population[p].id for p in kid.parents)
                pop.append(Candidate(cid, kid.tree, kid.origin, g, parents, ops=kid.ops))
                if kid.origin == "elite":
                    elite_rung[cid], elite_fitness[cid] = scores[kid.parents[0]]
                if kid.capped:
                    self._stats["capped"] += 1
            self._set_generation(pop, elite_fitness, elite_rung if self.config.fidelity else None)

    def _new_child_filter(self) -> Callable[[Node], bool]:
        """ga.offspring = "valid": accept a child that can train, passes the filter and is new to the run
        (its canonical key is neither archived from a past generation nor already bred into this one)."""
        seen = set(self._archive)

        def accept(tree: Node) -> bool:
            if is_trainable(tree) and self.rejection(tree) is None and (key := self.key(tree)) not in seen:
                seen.add(key)
                return True
            self._stats["children_redrawn"] = self._stats.get("children_redrawn", 0) + 1
            return False

        return accept

    def _close_generation(self) -> None:
        scores = [self.score(c) for c in self._population]
        fits = [self._fitness[c.id] for c in self._population]  # rung 0 (an elite: what it carries)
        self._history.append(self._history_row(self._population, scores, fits, self._generation))
        for cand, (rung, f) in zip(self._population, scores):
            if not is_trainable(cand.tree) or cand.id not in self._keys:  # invalid, or rejected by the filter
                continue
            self._archive_best(self._keys[cand.id], rung, f, cand)

    def _history_row(self, members: list[Candidate], scores: list[tuple[int, float]], fits: list[float],
                     generation: int) -> dict[str, Any]:
        """One history entry: the best member by (rung, fitness) (ties: the first) and the mean rung-0 fitness."""
        best_i = max(range(len(scores)), key=lambda i: (scores[i], -i))
        row: dict[str, Any] = {"generation": generation, "best": scores[best_i][1], "mean": sum(fits) / len(fits),
                               "best_id": members[best_i].id, "best_tree": to_infix(members[best_i].tree)}
        if self.config.fidelity is not None:
            row["best_rung"] = scores[best_i][0]
        return row

    def _archive_best(self, key: str, rung: int, fitness: float, cand: Candidate) -> None:
        """Keep, per canonical key, the candidate with the highest (rung, fitness); the first seen sets the order."""
        entry = self._archive.get(key)
        if entry is None:
            self._archive[key] = {"fitness": fitness, "rung": rung, "candidate": cand, "order": len(self._archive)}
        elif (rung, fitness) > (entry.get("rung", 0), entry["fitness"]):
            entry["fitness"], entry["rung"], entry["candidate"] = fitness, rung, cand

    def _start_cma(self) -> None:
        """CMA-ES on the top-k distinct valid trees of discovery (ties: first seen first)."""
        self._phase = "cma"
        ranked = [e for e in self._ranked_archive() if e["fitness"] > 0]  # never tune a tree that scored 0
        for k, entry in enumerate(ranked[: self.config.cma.top_k]):
            seed = (self.config.seed * 1_000_003 + k) % (2**31 - 2) + 1  # pycma treats 0 as "seed from time"
            self._cma.append(CMAPhase(k, entry["candidate"], self.config.cma, seed, drop_scale=self._drop_scale))
        self._check_done()

    def _ranked_archive(self) -> list[dict[str, Any]]:
        """Archive entries best first: highest rung, then fitness there, then first seen."""
        return sorted(self._archive.values(), key=lambda e: (-e.get("rung", 0), -e["fitness"], e["order"]))

    def task_overrides(self, candidate_id: str) -> dict[str, Any]:
        """Training settings that differ from the run's [task] for this candidate: a rung's steps."""
        fid = self.config.fidelity
        if fid is None:
            return {}
        if candidate_id.startswith("c"):
            rung = fid.cma
        else:
            try:
                rung = parse_discovery_id(candidate_id)[2]
            except ValueError:
                return {}
        steps = fid.rung_steps(rung)
        out: dict[str, Any] = {} if steps is None else {"steps": steps}
        if not candidate_id.startswith("c") and (k := seed_index(candidate_id)):
            out["seed_offset"] = k
        return out

    def _check_done(self) -> None:
        if self._phase == "cma" and all(p.done for p in self._cma):
            self._phase = "done"

    # -- AskTell -------------------------------------------------------------------------------
    def ask(self) -> list[Candidate]:
        """Every candidate that can be handed out now, each exactly once; [] while waiting."""
        self._start()
        out: list[Candidate] = []
        if self._phase == "discovery":
            for cand in self._population + self._promoted:
                if self._status.get(cand.id) == QUEUED:
                    self._status[cand.id] = ASKED
                    out.append(cand)
                    if len(self._rung_asked) > 1:
                        self._rung_asked[self._rung_of(cand.id)] += 1
        elif self._phase == "cma" and self.config.fidelity is not None:
            for phase in self._cma:
                out.extend(phase.ask())
            self._rung_asked[self.config.fidelity.cma] += len(out)
        elif self._phase == "cma":
            for phase in self._cma:
                out.extend(phase.ask())
        self._stats["handed_out"] += len(out)
        return out

    def tell(self, candidate: str | Candidate, fitness: float) -> None:
        """The fitness of a handed-out candidate (any order); NaN/inf are stored as 0."""
        self._start()
        cid = candidate.id if isinstance(candidate, Candidate) else candidate
        f = sanitize(fitness)
        if not math.isfinite(float(fitness)):
            self._stats["nonfinite"] += 1
        if cid.startswith("c") and self._phase != "discovery":
            phase, it, j = self._parse_cma_id(cid)
            try:
                cand = phase.tell(it, j, f)
            except KeyError:
                raise UnknownCandidateError(cid) from None
            except ValueError as exc:
                raise AlreadyToldError(str(exc)) from None
            self._stats["told"] += 1
            self._stats["cma_evaluations"] += 1
            self._note_best(cand, f)
            self._check_done()
            return
        status = self._status.get(cid) if self._phase == "discovery" else None
        if status is None and self._from_past_generation(cid):
            raise AlreadyToldError(f"candidate {cid} belongs to a completed generation: already told")
        if status is None or status in (QUEUED, WAITING):
            raise UnknownCandidateError(cid)
        if status == DONE:
            raise AlreadyToldError(f"candidate {cid} was already told (or resolved without training)")
        cand = next(c for c in self._population + self._promoted if c.id == cid)
        self._resolve(cand, f, None)
        self._stats["told"] += 1
        if cand.origin == "promoted":
            self._reached[cand.parents[0]] = self._rung_of(cid)
        for dup, orig in self._dup_of.items():
            if orig == cid and self._status[dup] == WAITING:
                dcand = next(c for c in self._population if c.id == dup)
                self._resolve(dcand, f, "duplicate", cid)
        self._advance()

    @staticmethod
    def _rung_of(cid: str) -> int:
        return parse_discovery_id(cid)[2]

    def _from_past_generation(self, cid: str) -> bool:
        try:
            g, i, _rung = parse_discovery_id(cid)
        except ValueError:
            return False
        done_gens = self._generation if self._phase == "discovery" else self._generation + 1
        return 0 <= g < done_gens and 0 <= i < self.config.ga.population_size

    def _parse_cma_id(self, cid: str) -> tuple[CMAPhase, int, int]:
        try:
            k, it, j = (int(p) for p in cid[1:].split("-"))
            return self._cma[k], it, j
        except (ValueError, IndexError):
            raise UnknownCandidateError(cid) from None

    @property
    def finished(self) -> bool:
        self._start()
        return self._phase == "done"

    # -- views -----------------------------------------------------------------------------------
    @property
    def phase(self) -> str:
        """discovery | cma | done."""
        self._start()
        return self._phase

    @property
    def generation(self) -> int:
        self._start()
        return self._generation

    def population(self) -> list[tuple[Candidate, float | None]]:
        """The current discovery generation with fitnesses known so far."""
        self._start()
        return [(c, self._fitness.get(c.id)) for c in self._population]

    def outstanding(self) -> list[Candidate]:
        """Handed out but not yet told (what a restarted scheduler must train or tell)."""
        self._start()
        if self._phase == "discovery":
            return [c for c in self._population + self._promoted if self._status.get(c.id) == ASKED]
        return [c for p in self._cma for c in p.outstanding()]

    def best(self) -> tuple[Candidate, float] | None:
        """The best (candidate, fitness) seen so far, discovery and CMA-ES together."""
        self._start()
        return self._best

    def top_trees(self) -> list[tuple[Candidate, float]]:
        """Distinct valid discovery trees (by key), best first, over all completed generations."""
        return [(e["candidate"], e["fitness"]) for e in self._ranked_archive()]

    def resolved_without_training(self, since: int = 0) -> list[Resolved]:
        """Candidates given a fitness without training (invalid, elite, duplicate), from index `since`."""
        self._start()
        return self._resolved[since:]

    def history(self) -> list[dict[str, Any]]:
        """Per completed generation: best and mean fitness, best id and tree."""
        return [dict(h) for h in self._history]

    def stats(self) -> dict[str, Any]:
        """Counters (handed_out, told, invalid, duplicates, elites, nonfinite, capped, ...) and operator rates."""
        self._start()
        out = {**self._stats, "generation": self._generation, "phase": self._phase,
               "operators": self._counter.to_json(), "init": dict(self._init)}
        if self.config.fidelity is not None:
            out["asked_per_rung"] = list(self._rung_asked)
        return out

    # -- state ------------------------------------------------------------------------------------
    def export_state(self) -> dict[str, Any]:
        """Plain JSON-able data; `Search.import_state` rebuilds a search that continues identically."""
        self._start()
        version, internal, gauss = self._rng.getstate()
        return {
            "glo_search_state": STATE_VERSION,
            "config": self.config.to_dict(),
            "rng": [version, list(internal), gauss],
            "phase": self._phase,
            "generation": self._generation,
            "population": [c.to_json() for c in self._population],
            "fitness": dict(self._fitness),
            "status": dict(self._status),
            "dup_of": dict(self._dup_of),
            "elite_fitness": dict(self._elite_fitness),
            "keys": dict(self._keys),
            "archive": [{"key": k, "fitness": e["fitness"], "candidate": e["candidate"].to_json(),
                         "order": e["order"], **({"rung": e["rung"]} if "rung" in e else {})}
                        for k, e in self._archive.items()],
            "resolved": [r.to_json() for r in self._resolved],
            "best": None if self._best is None else {"candidate": self._best[0].to_json(), "fitness": self._best[1]},
            "history": self.history(),
            "stats": dict(self._stats),
            "operators": self._counter.to_json(),
            "cma": [p.to_json() for p in self._cma],
            "init": dict(self._init),
            "fidelity": {"reached": dict(self._reached), "promoted": [c.to_json() for c in self._promoted],
                         "rung_now": self._rung_now, "elite_rung": dict(self._elite_rung),
                         "asked_per_rung": list(self._rung_asked)},
        }

    @staticmethod
    def import_state(data: dict[str, Any], key_fn: KeyFn | None = None, reissue_outstanding: bool = False,
                     screen: ScreenFn | None = None, drop_scale: bool = False) -> "Search":
        """Rebuild a search from `export_state()` data.

        `reissue_outstanding`: candidates handed out but not told before the export are handed
        out again by the next `ask()` (for a scheduler that lost its in-flight jobs); by default
        they stay outstanding and can simply be told.
        """
        if data.get("glo_search_state") != STATE_VERSION:
            raise StateError(f"unsupported search state version {data.get('glo_search_state')!r}")
        s = Search(SearchConfig.from_stored(data["config"]), key_fn=key_fn, screen=screen, drop_scale=drop_scale)
        s._fresh = False
        version, internal, gauss = data["rng"]
        s._rng.setstate((int(version), tuple(int(v) for v in internal), gauss))
        s._phase = data["phase"]
        s._generation = int(data["generation"])
        s._population = [Candidate.from_json(c) for c in data["population"]]
        s._fitness = {k: float(v) for k, v in data["fitness"].items()}
        s._status = dict(data["status"])
        s._dup_of = dict(data["dup_of"])
        s._elite_fitness = {k: float(v) for k, v in data["elite_fitness"].items()}
        s._keys = dict(data["keys"])
        s._archive = {e["key"]: {"fitness": float(e["fitness"]), "candidate": Candidate.from_json(e["candidate"]),
                                 "order": int(e["order"]), **({"rung": int(e["rung"])} if "rung" in e else {})}
                      for e in data["archive"]}
        s._resolved = [Resolved.from_json(r) for r in data["resolved"]]
        b = data["best"]
        s._best = None if b is None else (Candidate.from_json(b["candidate"]), float(b["fitness"]))
        s._history = [dict(h) for h in data["history"]]
        s._stats = {k: int(v) for k, v in data["stats"].items()}
        s._counter = OpCounter.from_json(data["operators"])
        s._cma = [CMAPhase.from_json(p) for p in data["cma"]]
        s._init = {k: int(v) for k, v in data.get("init", {}).items()}  # absent in states older than init modes
        fid = data.get("fidelity", {})  # absent in states older than multi-fidelity
        s._reached = {k: int(v) for k, v in fid.get("reached", {}).items()}
        s._promoted = [Candidate.from_json(c) for c in fid.get("promoted", [])]
        s._rung_now = int(fid.get("rung_now", 0))
        s._elite_rung = {k: int(v) for k, v in fid.get("elite_rung", {}).items()}
        s._rung_asked = [int(v) for v in fid.get("asked_per_rung", s._rung_asked)]
        if reissue_outstanding:
            for cid, st in s._status.items():
                if st == ASKED:
                    s._status[cid] = QUEUED
            for p in s._cma:
                p.reissue = p.pending is not None
        return s


def _ask_order(candidate_id: str) -> tuple[int, ...]:
    """Hand-out order from an id: discovery `g<gen>-<i>[-r<rung>]` (or steady-state `s<n>...`) before CMA-ES
    `c<k>-<iteration>-<j>`."""
    if candidate_id.startswith("g"):
        g, i, rung, k = _parse_discovery_id(candidate_id)
        return (0, g, rung, i, k) if k else (0, g, rung, i)
    if candidate_id.startswith("s"):  # steady-state: s<n>[-r<rung>[-s<k>]] (orchestrator.search.steady)
        n, _, rest = candidate_id[1:].partition("-")
        return (0, int(n), *(int(p[1:]) for p in rest.split("-") if p))
    return (1, *(int(part) for part in candidate_id[1:].split("-")))
