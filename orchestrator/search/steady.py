"""Steady-state (asynchronous) evolution: no generation barrier (`search.ga.mode = "steady-state"`).

Why: on a real pool job times are heavy-tailed (queue waits, evictions, slow nodes, rungs of different
lengths), so a generational GA leaves most slots idle while a generation's last jobs finish, and a pool
with more slots than the population can never be filled.  Here, as in regularized evolution (Real et al.,
AAAI 2019) run asynchronously like ASHA (Li et al., 2020):

* the first `population_size` candidates are generation 0 exactly as the generational search draws it
  (seed losses, then the valid or the paper's init);
* whenever fewer than `ga.max_in_flight` candidates are outstanding, `ask()` hands out more: a pending
  promotion first, then an initial tree not yet handed out, else one child bred from the members told so
  far (at least two): parents by tournament (default) or the paper's roulette, the paper's crossover and
  mutation (`ga.breed_one`), and with `ga.offspring = "valid"` a child that cannot train or whose
  canonical form the run has already handed out is redrawn;
* a free slot that nothing above can fill -- generation 0 is all out and fewer than two results are in,
  as on a pool with more slots than the population -- gets a further initial tree, drawn as generation
  0's are (`initial.draw_new_initial_tree`: the valid or the paper's init) with a canonical form not yet
  handed out; it joins the population when its result arrives, like any member.  Without it, a pool of
  32 slots and a population of 16 would leave 16 slots idle until two results are in;
* each arriving rung-0 result joins the population (a child that cannot train, with `offspring =
  "paper"`, is resolved with fitness 0 and recorded but joins nothing: in a steady state such children
  would otherwise evict trained members one by one); once it holds more than `population_size` members,
  one leaves: the oldest (`replacement = "oldest"`) or the worst by (rung, fitness)
  ("worst"), never one of the `elites` best;
* with `[search.fidelity]`, promotion is ASHA's rule: when a member's result at rung r is complete and it
  is among the best `promote_fraction` of everything completed at rung r (fitness > 0), it is queued for
  rung r + 1 (`fidelity.seeds` trainings), ahead of new children;
* discovery ends when `ga.max_trainings` discovery candidates have been handed out (every one trained or
  answered from the cache; promotions count) and all are told; CMA-ES then starts from the archive's best
  trees, exactly as after a generational discovery.

Ids: `s<n>` for the n-th member handed out (its `generation` is n // population_size, the generation it
would roughly have had), `s<n>-r<rung>[-s<k>]` for its promotions.

Reproducibility: the search is deterministic given its seed *and the order of the tells*: a result
arriving earlier changes which members exist when the next child is bred.  `export_state()` holds
everything (the random state and the order of tells, `tells`), so a resumed search continues exactly as
the uninterrupted one would given the same order of results from then on; a pool that returns results in
another order gives another, equally valid, search.
"""

from __future__ import annotations

import math
from typing import Any

from orchestrator.search.candidate import AlreadyToldError, Candidate, UnknownCandidateError
from orchestrator.search.config import SearchConfig
from orchestrator.search.ga import breed_one, roulette, tournament
from orchestrator.search.initial import InitCounts, draw_new_initial_tree
from orchestrator.search.search import ASKED, DONE, KeyFn, ScreenFn, Search, promoted_id, sanitize
from worker.lossexpr.onehot import is_trainable

#: Children that could not train in a row (with `ga.offspring = "paper"`, or the last of `MAX_CHILD_DRAWS`
#: redraws) before discovery is declared unable to make a trainable child and ends.
MAX_UNTRAINABLE_IN_A_ROW = 1_000


def parse_steady_id(cid: str) -> tuple[int, int, int]:
    """(n, rung, seed index) of `s<n>`, `s<n>-r<rung>` or `s<n>-r<rung>-s<k>`; ValueError for anything else."""
    if not cid.startswith("s"):
        raise ValueError(cid)
    parts = cid[1:].split("-")
    n = int(parts[0])
    if len(parts) == 1:
        return n, 0, 0
    if len(parts) in (2, 3) and parts[1].startswith("r") and (rung := int(parts[1][1:])) >= 1:
        if len(parts) == 2:
            return n, rung, 0
        if parts[2].startswith("s") and (k := int(parts[2][1:])) >= 1:
            return n, rung, k
    raise ValueError(cid)


class SteadyStateSearch(Search):
    """Steady-state discovery for `ga.max_trainings` trainings, then CMA-ES on the top-k trees, then finished.

    Shares with `Search` everything after discovery (CMA-ES, the archive, the best, the resolved list,
    the state's common part) and replaces the generation machinery."""

    def __init__(self, config: SearchConfig | None = None, key_fn: KeyFn | None = None,
                 screen: ScreenFn | None = None, drop_scale: bool = False) -> None:
        super().__init__(config, key_fn, screen, drop_scale)
        if self.config.ga.mode != "steady-state":
            raise ValueError("SteadyStateSearch needs search.ga.mode = \"steady-state\"")
        self._cands: dict[str, Candidate] = {}  # every discovery candidate handed out or resolved, by id
        self._members: list[str] = []  # the population: rung-0 ids, oldest first
        self._queue: list[Candidate] = []  # generation 0 not yet handed out
        self._promo_queue: list[Candidate] = []  # promotions not yet handed out
        self._born = 0  # members made so far (the next is s<born>)
        self._trainings = 0  # discovery candidates handed out: the ga.max_trainings budget
        self._tells: list[str] = []  # discovery ids in the order told
        self._rung_done: list[list[str]] = [[] for _ in self._rung_asked]  # members complete at each rung
        self._promoted_to: set[str] = set()  # promotion ids queued (member-r<rung>)
        self._seen: set[str] = set()  # canonical keys handed out (ga.offspring = "valid" redraws these)
        self._untrainable_run = 0
        self._trainable_memo: dict[Any, bool] = {}  # is_trainable per tree, for further initial draws (a cache)

    # -- generation 0 ----------------------------------------------------------------------------
    def _start(self) -> None:
        if self._fresh:
            self._fresh = False
            for tree, origin in self._initial_trees():
                cand = self._member(tree, origin, (), generation_zero=True)
                if cand is not None:
                    self._queue.append(cand)

    def _further_initial(self) -> Candidate | None:
        """One more initial tree for a slot that generation 0 and breeding cannot fill yet (None: it could not
        train, `ga.init = "paper"`, and was resolved with fitness 0; like such a child it joins nothing).

        Drawn as generation 0's `init` members are; a trainable draw whose canonical form the run already
        handed out is drawn again (up to `initial.MAX_DUPLICATE_REDRAWS` times, as generation 0 does), so
        no slot trains a loss that is already training or trained."""
        ga = self.config.ga
        counts = InitCounts()
        def admissible(tree: Any) -> bool:
            return self.rejection(tree) is None

        tree = draw_new_initial_tree(  # a tree that cannot train has no key to be a duplicate of
            self._rng, self._prims, ga, counts, admissible, self._trainable_memo,
            lambda t: not (is_trainable(t) and admissible(t)) or self.key(t) not in self._seen)
        for name, n in (("further_initial_drawn", counts.drawn),
                        ("further_initial_redrawn", counts.rejected_duplicate)):
            self._stats[name] = self._stats.get(name, 0) + n
        cand = self._member(tree, "init", ())
        if cand is not None:
            self._stats["further_initial"] = self._stats.get("further_initial", 0) + 1
        return cand

    def _member(self, tree: Any, origin: str, parents: tuple[str, ...], ops: tuple[str, ...] = (),
                generation_zero: bool = False) -> Candidate | None:
        """A new member `s<n>`; one that cannot train is resolved at once (fitness 0) and None is returned.

        An untrainable member of generation 0 still joins the population (the paper's generation 0 holds
        them); any other (a child, a further initial tree) joins nothing, or a steady state would evict
        trained members with such zeros one by one."""
        n = self._born
        self._born += 1
        cand = Candidate(f"s{n}", tree, origin, n // self.config.ga.population_size, parents, ops=ops)
        self._cands[cand.id] = cand
        if not is_trainable(tree):
            reason = "invalid"
            self._stats["invalid"] += 1
        elif (why := self.rejection(tree)) is not None:
            reason = why
            self._stats["filtered"] = self._stats.get("filtered", 0) + 1
        else:
            self._keys[cand.id] = key = self.key(tree)
            self._seen.add(key)
            self._untrainable_run = 0
            return cand
        self._untrainable_run += 1
        self._resolve(cand, 0.0, reason)
        if generation_zero:  # generation 0 as the paper has it, untrainable members included;
            self._join(cand.id)  # a child that cannot train is recorded but replaces no trained member
        return None

    # -- breeding ------------------------------------------------------------------------------
    def score(self, member: Candidate | str) -> tuple[int, float]:  # type: ignore[override]
        """(highest rung reached, fitness there) of a told member."""
        mid = member if isinstance(member, str) else member.id
        rung = self._reached.get(mid, 0)
        if rung == 0:
            return 0, self._fitness[mid]
        f = self._rung_fitness(mid, rung)
        assert f is not None
        return rung, f

    def _child(self) -> Candidate | None:
        """One child of the current population (None while fewer than two members are told)."""
        if len(self._members) < 2:
            return None
        ga = self.config.ga
        members = list(self._members)
        scores = [self.score(m) for m in members]
        if ga.selection == "tournament":
            def select() -> int:
                return tournament(self._rng, scores, ga.tournament_size)
        else:
            fits = [r + f if f > 0 else 0.0 for r, f in scores]  # the generational search's roulette weight

            def select() -> int:
                return roulette(self._rng, fits)
        accept = None
        if ga.offspring == "valid":
            def accept(tree: Any) -> bool:
                if is_trainable(tree) and self.rejection(tree) is None and self.key(tree) not in self._seen:
                    return True
                self._stats["children_redrawn"] = self._stats.get("children_redrawn", 0) + 1
                return False
        kid = breed_one(self._rng, [self._cands[m].tree for m in members], select, ga, self._prims,
                        self._counter, accept)
        if kid.capped:
            self._stats["capped"] += 1
        return self._member(kid.tree, kid.origin, tuple(members[p] for p in kid.parents), kid.ops)

    def _next(self) -> Candidate | None:
        """What to hand out in a free slot: a promotion, then generation 0, then a new child, or while
        fewer than two members are told (nothing to breed from yet) a further initial tree."""
        if self._promo_queue:
            return self._promo_queue.pop(0)
        while self._queue or self._untrainable_run < MAX_UNTRAINABLE_IN_A_ROW:
            if self._queue:
                return self._queue.pop(0)
            cand = self._child() if len(self._members) >= 2 else self._further_initial()
            if cand is not None:
                return cand
        return None

    def _outstanding_ids(self) -> list[str]:
        return [cid for cid, st in self._status.items() if st == ASKED]

    # -- the population --------------------------------------------------------------------------
    def _join(self, mid: str) -> None:
        """A told (or resolved) member enters the population; beyond population_size one leaves."""
        self._members.append(mid)
        ga = self.config.ga
        if len(self._members) <= ga.population_size:
            return
        by_score = sorted(self._members, key=lambda m: (self.score(m), -self._order(m)), reverse=True)
        protected = set(by_score[:ga.elites])
        candidates = [m for m in self._members if m not in protected]
        if ga.replacement == "oldest":
            leaving = candidates[0]
        else:
            leaving = min(candidates, key=lambda m: (self.score(m), self._order(m)))  # ties: the oldest
        self._members.remove(leaving)
        self._stats["replaced"] = self._stats.get("replaced", 0) + 1

    @staticmethod
    def _order(mid: str) -> int:
        return parse_steady_id(mid)[0]

    @staticmethod
    def _rung_of(cid: str) -> int:
        return parse_steady_id(cid)[1]

    def _fitness_at(self, mid: str, rung: int) -> float:
        """A member's complete fitness at a rung (the mean over its training seeds above rung 0)."""
        f = self._fitness[mid] if rung == 0 else self._rung_fitness(mid, rung)
        assert f is not None
        return f

    def _complete_at(self, mid: str, rung: int) -> None:
        """A member's fitness at `rung` is complete: archive it, and queue promotions ASHA's way."""
        f = self._fitness_at(mid, rung)
        self._archive_best(self._keys[mid], rung, f, self._cands[mid])
        fid = self.config.fidelity
        if fid is None:
            return
        self._rung_done[rung].append(mid)
        if rung >= len(fid.steps):
            return
        done = self._rung_done[rung]
        k = math.floor(fid.promote_fraction * len(done))
        for m in sorted(done, key=lambda m: (-self._fitness_at(m, rung), self._order(m)))[:k]:
            pid = promoted_id(m, rung + 1)
            if self._fitness_at(m, rung) <= 0 or pid in self._promoted_to:
                continue
            self._promoted_to.add(pid)
            self._stats["promoted"] = self._stats.get("promoted", 0) + 1
            parent = self._cands[m]
            for s in range(fid.seeds):
                p = Candidate(promoted_id(m, rung + 1, s), parent.tree, "promoted", parent.generation, (m,))
                self._cands[p.id] = p
                self._promo_queue.append(p)

    def _promotion(self, member_id: str, rung: int) -> Candidate:
        return self._cands[promoted_id(member_id, rung)]

    def _end_discovery_if_done(self) -> None:
        spent = self._trainings >= self.config.ga.max_trainings
        stuck = (not self._queue and not self._promo_queue and self._untrainable_run >= MAX_UNTRAINABLE_IN_A_ROW)
        if self._phase == "discovery" and (spent or stuck) and not self._outstanding_ids():
            if stuck and not spent:
                self._stats["exhausted"] = 1
            if not self._history or self._history[-1]["trainings"] != len(self._tells):
                self._history_entry()
            self._start_cma()

    def _history_entry(self) -> None:
        """Per population_size results told (and at the end of discovery): best and mean of the population."""
        if not self._members:
            return
        members = [self._cands[m] for m in self._members]
        row = self._history_row(members, [self.score(m) for m in self._members],
                                [self._fitness[m] for m in self._members], len(self._history))
        self._history.append({**row, "trainings": len(self._tells)})

    # -- AskTell ---------------------------------------------------------------------------------
    def ask(self) -> list[Candidate]:
        """Up to `ga.max_in_flight` outstanding discovery candidates; then CMA-ES's asks as `Search.ask`."""
        self._start()
        if self._phase != "discovery":
            return super().ask()
        ga = self.config.ga
        out: list[Candidate] = []
        outstanding = len(self._outstanding_ids())
        while outstanding + len(out) < ga.max_in_flight and self._trainings < ga.max_trainings:
            cand = self._next()
            if cand is None:
                break
            self._status[cand.id] = ASKED
            self._trainings += 1
            if len(self._rung_asked) > 1:
                self._rung_asked[parse_steady_id(cand.id)[1]] += 1
            out.append(cand)
        self._stats["handed_out"] += len(out)
        self._end_discovery_if_done()
        if self._phase != "discovery":
            out.extend(super().ask())
        return out

    def tell(self, candidate: str | Candidate, fitness: float) -> None:
        """The fitness of a handed-out candidate (any order); NaN/inf are stored as 0."""
        self._start()
        cid = candidate.id if isinstance(candidate, Candidate) else candidate
        if not cid.startswith("s"):
            super().tell(cid, fitness)
            return
        status = self._status.get(cid)
        if status is None or cid not in self._cands:
            raise UnknownCandidateError(cid)
        if status == DONE:
            raise AlreadyToldError(f"candidate {cid} was already told (or resolved without training)")
        if status != ASKED:
            raise UnknownCandidateError(cid)
        f = sanitize(fitness)
        if not math.isfinite(float(fitness)):
            self._stats["nonfinite"] += 1
        cand = self._cands[cid]
        self._resolve(cand, f, None)
        self._stats["told"] += 1
        self._tells.append(cid)
        if cand.origin == "promoted":
            mid, rung = cand.parents[0], parse_steady_id(cid)[1]
            if self._rung_fitness(mid, rung) is not None:  # every training seed of the promotion is in
                if rung > self._reached.get(mid, 0):
                    self._reached[mid] = rung
                self._complete_at(mid, rung)
        else:
            self._join(cid)
            self._complete_at(cid, 0)
        if len(self._tells) % self.config.ga.population_size == 0:
            self._history_entry()
        self._generation = len(self._tells) // self.config.ga.population_size
        self._end_discovery_if_done()

    # -- views -----------------------------------------------------------------------------------
    def rung(self, cand: Candidate) -> int:
        if self.config.fidelity is not None and cand.id.startswith("s"):
            return parse_steady_id(cand.id)[1]
        return super().rung(cand)  # no fidelity, or a CMA-ES sample

    def task_overrides(self, candidate_id: str) -> dict[str, Any]:
        fid = self.config.fidelity
        if fid is None or not candidate_id.startswith("s"):
            return super().task_overrides(candidate_id)
        _n, rung, k = parse_steady_id(candidate_id)
        steps = fid.rung_steps(rung)
        out: dict[str, Any] = {} if steps is None else {"steps": steps}
        if k:
            out["seed_offset"] = k
        return out

    def population(self) -> list[tuple[Candidate, float | None]]:
        """The current population, oldest first, with each member's rung-0 fitness."""
        self._start()
        return [(self._cands[m], self._fitness.get(m)) for m in self._members]

    def outstanding(self) -> list[Candidate]:
        self._start()
        if self._phase == "discovery":
            return [self._cands[c] for c in self._outstanding_ids()]
        return super().outstanding()

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        out.update(mode="steady-state", trainings=self._trainings, max_trainings=self.config.ga.max_trainings,
                   in_flight=len(self._outstanding_ids()) if self._phase == "discovery" else 0)
        return out

    # -- state -----------------------------------------------------------------------------------
    def export_state(self) -> dict[str, Any]:
        out = super().export_state()
        out["population"] = []  # the base's generation list; ours is below
        out["steady"] = {
            "candidates": [c.to_json() for c in self._cands.values()],
            "members": list(self._members), "queue": [c.id for c in self._queue],
            "promo_queue": [c.id for c in self._promo_queue], "born": self._born, "trainings": self._trainings,
            "tells": list(self._tells), "rung_done": [list(r) for r in self._rung_done],
            "promoted_to": sorted(self._promoted_to), "seen": sorted(self._seen),
            "untrainable_run": self._untrainable_run,
        }
        return out

    @staticmethod
    def import_state(data: dict[str, Any], key_fn: KeyFn | None = None, reissue_outstanding: bool = False,
                     screen: ScreenFn | None = None, drop_scale: bool = False) -> "SteadyStateSearch":
        base = Search.import_state(data, key_fn=key_fn, reissue_outstanding=False, screen=screen,
                                   drop_scale=drop_scale)
        s = SteadyStateSearch(base.config, key_fn=key_fn, screen=screen, drop_scale=drop_scale)
        s.__dict__.update({k: v for k, v in base.__dict__.items() if k not in ("_key_cache", "_screened")})
        st = data["steady"]
        s._cands = {c["id"]: Candidate.from_json(c) for c in st["candidates"]}
        s._members = list(st["members"])
        s._queue = [s._cands[c] for c in st["queue"]]
        s._promo_queue = [s._cands[c] for c in st["promo_queue"]]
        s._born, s._trainings = int(st["born"]), int(st["trainings"])
        s._tells = list(st["tells"])
        s._rung_done = [list(r) for r in st["rung_done"]]
        s._promoted_to, s._seen = set(st["promoted_to"]), set(st["seen"])
        s._untrainable_run = int(st["untrainable_run"])
        if reissue_outstanding:  # handed out, never told, jobs lost: hand them out again (the budget is unchanged)
            lost = [s._cands[c] for c in s._outstanding_ids()]
            for c in lost:
                del s._status[c.id]
                s._trainings -= 1
                if len(s._rung_asked) > 1:
                    s._rung_asked[parse_steady_id(c.id)[1]] -= 1
            s._promo_queue = [c for c in lost if c.origin == "promoted"] + s._promo_queue
            s._queue = [c for c in lost if c.origin != "promoted"] + s._queue
            for p in s._cma:
                p.reissue = p.pending is not None
        return s
