"""The GLO search as pure ask/tell: GA discovery, then CMA-ES on the top-k distinct trees.

Contract for the scheduler (why it is shaped this way: the scheduler stays trivial):

* Every candidate returned by `ask()` must be trained and told exactly once (`tell(id, f)`;
  a failure or timeout is told as 0.0).  Results may arrive in any order.
* Candidates that need no training are resolved inside the search and never handed out:
  invalid trees (no x or no y) get 0; elites carry their fitness into the next generation;
  canonical duplicates inside one generation (same `key_fn` key) get the fitness of the first
  one, once it is told.  Each is counted in `stats()` and listed, with its reason, by
  `resolved_without_training()` so the database can store it.  Caching across generations is
  the scheduler's job.
* A generation is bred once all its members have a fitness.  Given the seed and the told
  results, the candidates (ids, trees, order) are identical whatever the order of the tells.
* `export_state()` is plain JSON data ({"glo_search_state": 1, ...}); `Search.import_state`
  rebuilds a search that continues exactly as the original would.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orchestrator.search.candidate import Candidate
from orchestrator.search.cma_phase import CMAPhase, StateError
from orchestrator.search.config import SearchConfig
from orchestrator.search.ga import breed
from orchestrator.search.operators import OpCounter, Primitives, random_tree
from worker.lossexpr.infix import to_infix
from worker.lossexpr.tree import Node

STATE_VERSION = 1

KeyFn = Callable[[Node], str]


class UnknownCandidateError(KeyError):
    """`tell` got an id this search never handed out (or has already moved past)."""

    def __str__(self) -> str:
        return f"unknown candidate id {self.args[0]!r}: never handed out by this search"


class AlreadyToldError(ValueError):
    """`tell` got a second result for the same candidate."""


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
    """A candidate given a fitness without training, and why (invalid | elite | duplicate)."""

    candidate: Candidate
    fitness: float
    reason: str
    duplicate_of: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"candidate": self.candidate.to_json(), "fitness": self.fitness, "reason": self.reason,
                "duplicate_of": self.duplicate_of}

    @staticmethod
    def from_json(d: dict[str, Any]) -> "Resolved":
        return Resolved(Candidate.from_json(d["candidate"]), float(d["fitness"]), d["reason"], d.get("duplicate_of"))


# per-candidate status inside the current generation
QUEUED, ASKED, WAITING, DONE = "queued", "asked", "waiting", "done"


class Search:
    """GA discovery for `ga.generations` generations, then CMA-ES on the top-k trees, then finished."""

    def __init__(self, config: SearchConfig | None = None, key_fn: KeyFn | None = None) -> None:
        self.config = config or SearchConfig()
        self._key_fn_arg = key_fn
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
        self._fresh: bool = True

    # -- construction of the first generation is lazy so import_state can skip it ------------
    def _start(self) -> None:
        if self._fresh:
            self._fresh = False
            ga = self.config.ga
            trees = [random_tree(self._rng, self._prims, ga.init_max_depth) for _ in range(ga.population_size)]
            pop = [Candidate(f"g0-{i}", t, "init", 0) for i, t in enumerate(trees)]
            self._set_generation(pop, {})
            self._advance()

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

    def _set_generation(self, pop: list[Candidate], elite_fitness: dict[str, float]) -> None:
        """Install a generation and resolve what needs no training (elites, invalid, duplicates)."""
        self._population = pop
        self._fitness, self._status, self._dup_of, self._keys = {}, {}, {}, {}
        self._elite_fitness = dict(elite_fitness)
        old_cache, self._key_cache = self._key_cache, {}
        first: dict[str, str] = {}
        for cand in pop:
            if cand.id in elite_fitness:
                self._resolve(cand, elite_fitness[cand.id], "elite")
                self._stats["elites"] += 1
            elif not cand.tree.is_valid():
                self._resolve(cand, 0.0, "invalid")
                self._stats["invalid"] += 1
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
        self._note_best(cand, fitness)

    def _note_best(self, cand: Candidate, fitness: float) -> None:
        """Ties go to the candidate handed out first, so the best does not depend on tell order."""
        if (self._best is None or fitness > self._best[1]
                or (fitness == self._best[1] and _ask_order(cand.id) < _ask_order(self._best[0].id))):
            self._best = (cand, fitness)

    def _advance(self) -> None:
        """Breed (or move to CMA-ES) while the current generation is complete."""
        while self._phase == "discovery" and len(self._fitness) == len(self._population):
            self._close_generation()
            ga = self.config.ga
            if self._generation + 1 >= ga.generations:
                self._start_cma()
                return
            trees = [c.tree for c in self._population]
            fits = [self._fitness[c.id] for c in self._population]
            kids = breed(self._rng, trees, fits, ga, self._prims, self._counter)
            self._generation += 1
            g = self._generation
            pop: list[Candidate] = []
            elite_fitness: dict[str, float] = {}
            for i, kid in enumerate(kids):
                cid = f"g{g}-{i}"
                parents = tuple(self._population[p].id for p in kid.parents)
                pop.append(Candidate(cid, kid.tree, kid.origin, g, parents, ops=kid.ops))
                if kid.origin == "elite":
                    elite_fitness[cid] = fits[kid.parents[0]]
                if kid.capped:
                    self._stats["capped"] += 1
            self._set_generation(pop, elite_fitness)

    def _close_generation(self) -> None:
        fits = [self._fitness[c.id] for c in self._population]
        best_i = max(range(len(fits)), key=lambda i: (fits[i], -i))
        self._history.append({"generation": self._generation, "best": fits[best_i], "mean": sum(fits) / len(fits),
                              "best_id": self._population[best_i].id,
                              "best_tree": to_infix(self._population[best_i].tree)})
        for cand in self._population:
            if not cand.tree.is_valid():
                continue
            key = self._keys[cand.id]
            f = self._fitness[cand.id]
            entry = self._archive.get(key)
            if entry is None:
                self._archive[key] = {"fitness": f, "candidate": cand, "order": len(self._archive)}
            elif f > entry["fitness"]:
                entry["fitness"], entry["candidate"] = f, cand

    def _start_cma(self) -> None:
        """CMA-ES on the top-k distinct valid trees of discovery (ties: first seen first)."""
        self._phase = "cma"
        ranked = sorted((e for e in self._archive.values() if e["fitness"] > 0), key=lambda e: (-e["fitness"],
                                                                                            e["order"]))
        for k, entry in enumerate(ranked[: self.config.cma.top_k]):
            seed = (self.config.seed * 1_000_003 + k) % (2**31 - 2) + 1  # pycma treats 0 as "seed from time"
            self._cma.append(CMAPhase(k, entry["candidate"], self.config.cma, seed))
        self._check_done()

    def _check_done(self) -> None:
        if self._phase == "cma" and all(p.done for p in self._cma):
            self._phase = "done"

    # -- AskTell -------------------------------------------------------------------------------
    def ask(self) -> list[Candidate]:
        """Every candidate that can be handed out now, each exactly once; [] while waiting."""
        self._start()
        out: list[Candidate] = []
        if self._phase == "discovery":
            for cand in self._population:
                if self._status.get(cand.id) == QUEUED:
                    self._status[cand.id] = ASKED
                    out.append(cand)
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
        cand = next(c for c in self._population if c.id == cid)
        self._resolve(cand, f, None)
        self._stats["told"] += 1
        for dup, orig in self._dup_of.items():
            if orig == cid and self._status[dup] == WAITING:
                dcand = next(c for c in self._population if c.id == dup)
                self._resolve(dcand, f, "duplicate", cid)
        self._advance()

    def _from_past_generation(self, cid: str) -> bool:
        if not cid.startswith("g"):
            return False
        try:
            g, i = (int(p) for p in cid[1:].split("-"))
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
            return [c for c in self._population if self._status.get(c.id) == ASKED]
        return [c for p in self._cma for c in p.outstanding()]

    def best(self) -> tuple[Candidate, float] | None:
        """The best (candidate, fitness) seen so far, discovery and CMA-ES together."""
        self._start()
        return self._best

    def top_trees(self) -> list[tuple[Candidate, float]]:
        """Distinct valid discovery trees (by key), best first, over all completed generations."""
        ranked = sorted(self._archive.values(), key=lambda e: (-e["fitness"], e["order"]))
        return [(e["candidate"], e["fitness"]) for e in ranked]

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
        return {**self._stats, "generation": self._generation, "phase": self._phase,
                "operators": self._counter.to_json()}

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
                         "order": e["order"]} for k, e in self._archive.items()],
            "resolved": [r.to_json() for r in self._resolved],
            "best": None if self._best is None else {"candidate": self._best[0].to_json(), "fitness": self._best[1]},
            "history": self.history(),
            "stats": dict(self._stats),
            "operators": self._counter.to_json(),
            "cma": [p.to_json() for p in self._cma],
        }

    @staticmethod
    def import_state(data: dict[str, Any], key_fn: KeyFn | None = None, reissue_outstanding: bool = False) -> "Search":
        """Rebuild a search from `export_state()` data.

        `reissue_outstanding`: candidates handed out but not told before the export are handed
        out again by the next `ask()` (for a scheduler that lost its in-flight jobs); by default
        they stay outstanding and can simply be told.
        """
        if data.get("glo_search_state") != STATE_VERSION:
            raise StateError(f"unsupported search state version {data.get('glo_search_state')!r}")
        s = Search(SearchConfig.from_dict(data["config"]), key_fn=key_fn)
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
                                 "order": int(e["order"])} for e in data["archive"]}
        s._resolved = [Resolved.from_json(r) for r in data["resolved"]]
        b = data["best"]
        s._best = None if b is None else (Candidate.from_json(b["candidate"]), float(b["fitness"]))
        s._history = [dict(h) for h in data["history"]]
        s._stats = {k: int(v) for k, v in data["stats"].items()}
        s._counter = OpCounter.from_json(data["operators"])
        s._cma = [CMAPhase.from_json(p) for p in data["cma"]]
        if reissue_outstanding:
            for cid, st in s._status.items():
                if st == ASKED:
                    s._status[cid] = QUEUED
            for p in s._cma:
                p.reissue = p.pending is not None
        return s


def _ask_order(candidate_id: str) -> tuple[int, ...]:
    """Hand-out order from an id: discovery `g<gen>-<i>` before CMA-ES `c<k>-<iteration>-<j>`."""
    phase = 0 if candidate_id.startswith("g") else 1
    return (phase, *(int(part) for part in candidate_id[1:].split("-")))
