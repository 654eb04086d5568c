"""The write API, used only by the scheduler.  Every method is one transaction.

Write-ahead discipline (what makes kill -9 safe): candidates and their jobs are recorded
before anything is submitted, a result is stored before the search is told, and the search
state is saved together with the `told` marks of the results it has absorbed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from db import models
from db.errors import IllegalTransitionError, NotFoundError, StorageError
from db.models import JOB_TRANSITIONS
from db.session import Database
from db.snapshots import CandidateRow, EvaluationRow, JobRow, RunRow

SEARCH_STATE_VERSION = 1
#: Values per SQL IN list / multi-row insert (SQLite's default limit on bound parameters is 32,766; an insert
#: row binds 3).
_IN_CHUNK = 500


@dataclass(frozen=True)
class NewCandidate:
    """What the scheduler knows about a freshly asked candidate before storing it."""

    search_id: str
    tree_json: dict[str, Any]
    infix: str
    coefficients: list[float]
    canonical_key: str
    eval_key: str
    generation: int
    phase: str
    origin: str
    parents: list[str]


@dataclass(frozen=True)
class NewResolution:
    """A candidate the search settled itself (invalid, elite, duplicate): stored already told."""

    candidate: NewCandidate
    fitness: float
    reason: str


@dataclass(frozen=True)
class NewEvaluation:
    """A finished training, keyed for the cache."""

    eval_key: str
    canonical_key: str
    coefficients: list[float]
    task: str
    budget: dict[str, Any]
    seed_policy: str
    status: str
    fitness: float
    metrics: dict[str, Any]
    wall_seconds: float
    train_seconds: float
    eval_seconds: float
    device: str


#: Job columns the scheduler may set besides the state (bad_nodes: a list, stored as JSON).
_JOB_FIELDS = frozenset({"backend_job_id", "last_error", "hold_reason", "work_dir", "lease_deadline", "hold_code",
                         "hold_subcode", "host", "evictions", "releases"})


#: Fields that describe only the current attempt (job_attempts), not the job: how its worker exited.
_ATTEMPT_FIELDS = frozenset({"exit_code", "exit_signal"})
#: The attempt's outcome when the job leaves an active state for this one.
_OUTCOME_OF = {"done": "done", "failed": "failed", "lost": "lost", "queued": "retried"}


def candidate_uid(run_id: str, search_id: str) -> str:
    return f"{run_id}/{search_id}"


class Store:
    def __init__(self, db: Database) -> None:
        self.db = db
        #: each job's candidates by (id, created_at): a job's candidate list never changes after `create_job`,
        #: and reading it back on every transition was a query per job event (created_at tells a job from
        #: one that reuses the id of a job whose creation was rolled back)
        self._uids_of_job: dict[tuple[int, float], tuple[str, ...]] = {}

    def batch(self) -> AbstractContextManager[None]:
        """The calls made inside the block (this thread) as one transaction (`Database.batch`)."""
        return self.db.batch()

    # -- runs ------------------------------------------------------------------------------
    def create_run(self, run_id: str, *, name: str, config: dict[str, Any], seed: int, task: str, backend: str,
                   pid: int | None) -> RunRow:
        now = time.time()
        with self.db.session(write=True) as s:
            run = models.Run(
                id=run_id, name=name, config_json=json.dumps(config), seed=seed, task=task,  # key order kept (see _save_state)
                backend=backend, phase="discovery", generation=0, status="running", pid=pid, message="",
                created_at=now, updated_at=now, started_at=now,
            )
            s.add(run)
            s.flush()
            return RunRow.of(run)

    def get_run(self, run_id: str) -> RunRow:
        with self.db.session() as s:
            run = s.get(models.Run, run_id)
            if run is None:
                raise NotFoundError(f"no run {run_id!r} in {self.db.path}")
            return RunRow.of(run)

    def update_run(self, run_id: str, **fields: Any) -> None:
        """Set run columns (status, phase, generation, pid, message, finished_at, summary)."""
        allowed = {"status", "phase", "generation", "pid", "message", "finished_at", "started_at", "summary"}
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"update_run: unknown field(s) {sorted(bad)}")
        if "status" in fields and fields["status"] not in models.RUN_STATUSES:
            raise ValueError(f"bad run status {fields['status']!r}")
        if "summary" in fields:
            fields["summary_json"] = json.dumps(fields.pop("summary"), sort_keys=True)
        fields["updated_at"] = time.time()
        with self.db.session(write=True) as s:
            n = s.execute(update(models.Run).where(models.Run.id == run_id).values(**fields)).rowcount
            if n != 1:
                raise NotFoundError(f"no run {run_id!r}")

    # -- search state ------------------------------------------------------------------------
    def load_search_state(self, run_id: str) -> dict[str, Any] | None:
        """The search state as last saved whole (`load_search_log`: the asks and tells since)."""
        with self.db.session() as s:
            row = s.get(models.SearchState, (run_id, "search"))
            if row is None:
                return None
            if row.version > SEARCH_STATE_VERSION:
                raise StorageError(f"search state of run {run_id} has version {row.version}, newer than "
                                   f"this GLO's {SEARCH_STATE_VERSION}")
            return json.loads(row.state_json)

    def load_search_log(self, run_id: str) -> list[dict[str, Any]]:
        """The asks and tells since the state was last saved whole, in order (models.SearchLogEntry)."""
        with self.db.session() as s:
            return [json.loads(text) for text in s.scalars(
                select(models.SearchLogEntry.entry_json).where(models.SearchLogEntry.run_id == run_id)
                .order_by(models.SearchLogEntry.seq))]

    @staticmethod
    def _save_search(s: Any, run_id: str, state: dict[str, Any] | None, log: Sequence[dict[str, Any]]) -> None:
        """Either the whole state (which replaces the log entries it covers) or log entries after it."""
        if state is not None and log:
            raise ValueError("save either the whole search state or log entries after it, not both")
        if state is not None:
            Store._save_state(s, run_id, state)
            s.execute(delete(models.SearchLogEntry).where(models.SearchLogEntry.run_id == run_id))
        elif log:
            seq = s.execute(select(func.max(models.SearchLogEntry.seq)).where(
                models.SearchLogEntry.run_id == run_id)).scalar() or 0
            s.execute(insert(models.SearchLogEntry), [
                {"run_id": run_id, "seq": seq + i, "entry_json": json.dumps(entry)} for i, entry in enumerate(log, 1)])

    @staticmethod
    def _save_state(s: Any, run_id: str, state: dict[str, Any]) -> None:
        now = time.time()
        row = s.get(models.SearchState, (run_id, "search"))
        text = json.dumps(state)  # key order matters to the search (node weights): never sort
        if row is None:
            s.add(models.SearchState(run_id=run_id, kind="search", version=SEARCH_STATE_VERSION, seq=1,
                                     state_json=text, updated_at=now))
        else:
            row.state_json = text
            row.seq += 1
            row.updated_at = now

    # -- candidates ----------------------------------------------------------------------------
    def record_asked(self, run_id: str, cands: Iterable[NewCandidate], state: dict[str, Any] | None,
                     generation: int | None = None, phase: str | None = None,
                     resolved: Iterable[NewResolution] = (), log: Sequence[dict[str, Any]] = ()) -> list[CandidateRow]:
        """Store freshly asked candidates together with the search state that handed them out (whole, or as
        `log` entries after the last whole state: `_save_search`).

        Idempotent: a candidate already stored (a resumed search re-asking what it had asked
        before the crash) keeps its row, so its job or result is reused.  `resolved`: what the
        search settled itself since the last save; stored resolved and told in the same
        transaction, because the saved state already counts them as settled (a resume never
        stores them again, so they must never be left pending).
        """
        now = time.time()
        with self.db.session(write=True) as s:
            next_seq = self._next_seq(s, run_id)
            rows, next_seq = self._add_candidates(s, run_id, list(cands), next_seq, now)
            self._add_resolved(s, run_id, resolved, next_seq, now)
            s.flush()
            out = [CandidateRow.of(row) for row in rows]
            self._save_search(s, run_id, state, log)
            values: dict[str, Any] = {"updated_at": now}
            if generation is not None:
                values["generation"] = generation
            if phase is not None:
                values["phase"] = phase
            s.execute(update(models.Run).where(models.Run.id == run_id).values(**values))
        return out

    @staticmethod
    def _next_seq(s: Any, run_id: str) -> int:
        return (s.execute(select(func.max(models.Candidate.seq)).where(
            models.Candidate.run_id == run_id)).scalar() or 0) + 1

    @staticmethod
    def _add_candidates(s: Any, run_id: str, cands: list[NewCandidate], next_seq: int,
                        now: float) -> tuple[list[models.Candidate], int]:
        """(each candidate's row, the next free seq): rows already stored are kept as they are, the others
        added in order.  One read for the batch and no flush per row: a generation is hundreds of rows, and
        a get + flush each was most of the scheduler's time per candidate (issue 19's bench)."""
        uids = [candidate_uid(run_id, c.search_id) for c in cands]
        existing: dict[str, models.Candidate] = {}
        unique = list(dict.fromkeys(uids))
        for i in range(0, len(unique), _IN_CHUNK):
            existing.update((row.uid, row) for row in s.scalars(select(models.Candidate).where(
                models.Candidate.uid.in_(unique[i:i + _IN_CHUNK]))))
        rows: list[models.Candidate] = []
        for uid, c in zip(uids, cands):
            row = existing.get(uid)
            if row is None:
                row = existing[uid] = models.Candidate(
                    uid=uid, run_id=run_id, search_id=c.search_id, seq=next_seq,
                    tree_json=json.dumps(c.tree_json, sort_keys=True), infix=c.infix,
                    coefficients_json=json.dumps(c.coefficients), canonical_key=c.canonical_key,
                    eval_key=c.eval_key, generation=c.generation, phase=c.phase, origin=c.origin,
                    parents_json=json.dumps(list(c.parents)), status="pending", told=False, created_at=now,
                )
                next_seq += 1
                s.add(row)
            rows.append(row)
        return rows, next_seq

    def _add_resolved(self, s: Any, run_id: str, resolved: Iterable[NewResolution], next_seq: int,
                      now: float) -> None:
        """Rows for candidates the search settled itself: resolved, with their reason, told."""
        resolved = list(resolved)
        rows, _ = self._add_candidates(s, run_id, [r.candidate for r in resolved], next_seq, now)
        for row, r in zip(rows, resolved):
            if row.status == "pending":
                row.status, row.fitness, row.error, row.resolved_at = "resolved", r.fitness, r.reason, now
            row.told = True

    def candidates(self, run_id: str, *, told: bool | None = None) -> list[CandidateRow]:
        with self.db.session() as s:
            q = select(models.Candidate).where(models.Candidate.run_id == run_id)
            if told is not None:
                q = q.where(models.Candidate.told == told)
            return [CandidateRow.of(c) for c in s.scalars(q.order_by(models.Candidate.seq))]

    # -- canonical keys ----------------------------------------------------------------------------
    def canonical_key_of(self, tree_sha: str) -> str | None:
        """The key remembered for this exact tree, if any (see models.CanonicalKey)."""
        return self.canonical_keys_of([tree_sha]).get(tree_sha)

    def canonical_keys_of(self, tree_shas: Iterable[str]) -> dict[str, str]:
        """The keys remembered for those of these trees that have one, in one read."""
        shas = list(dict.fromkeys(tree_shas))
        out: dict[str, str] = {}
        with self.db.session() as s:
            for i in range(0, len(shas), _IN_CHUNK):
                out.update(s.execute(select(models.CanonicalKey.tree_sha, models.CanonicalKey.canonical_key).where(
                    models.CanonicalKey.tree_sha.in_(shas[i:i + _IN_CHUNK]))).all())
        return out

    def remember_canonical_key(self, tree_sha: str, canonical_key: str) -> str:
        """Store the key unless one is already there; returns the stored one (first writer wins)."""
        return self.remember_canonical_keys({tree_sha: canonical_key})[tree_sha]

    def remember_canonical_keys(self, keys: dict[str, str]) -> dict[str, str]:
        """`remember_canonical_key` for many trees in one transaction; returns what is stored for each."""
        now = time.time()
        shas = list(keys)
        stored: dict[str, str] = {}
        with self.db.session(write=True) as s:
            for i in range(0, len(shas), _IN_CHUNK):
                chunk = shas[i:i + _IN_CHUNK]
                s.execute(sqlite_insert(models.CanonicalKey)
                          .values([{"tree_sha": sha, "canonical_key": keys[sha], "created_at": now} for sha in chunk])
                          .on_conflict_do_nothing(index_elements=["tree_sha"]))
                stored.update(s.execute(select(models.CanonicalKey.tree_sha, models.CanonicalKey.canonical_key).where(
                    models.CanonicalKey.tree_sha.in_(chunk))).all())
        return stored

    def lookup_cache(self, eval_key: str) -> EvaluationRow | None:
        with self.db.session() as s:
            e = s.scalars(select(models.Evaluation).where(models.Evaluation.eval_key == eval_key)).first()
            return EvaluationRow.of(e) if e else None

    def resolve_cached(self, uid: str, evaluation: EvaluationRow) -> None:
        """A cache hit: the candidate takes the stored fitness and is never trained."""
        with self.db.session(write=True) as s:
            c = self._cand(s, uid)
            c.status, c.fitness, c.evaluation_id, c.resolved_at = "cached", evaluation.fitness, evaluation.id, time.time()

    def store_result(self, uids: list[str], ev: NewEvaluation, run_id: str) -> EvaluationRow:
        """Insert the evaluation into the cache (or reuse an identical one) and resolve every
        candidate waiting on it -- before the search hears of it."""
        return self.store_results([(uids, ev)], run_id)[0]

    def store_results(self, results: list[tuple[list[str], NewEvaluation]], run_id: str) -> list[EvaluationRow]:
        """`store_result` for each (candidates, evaluation) of a finished job, in one transaction: a job's
        results arrive together, and a commit each cost more than the rows."""
        now = time.time()
        out: list[EvaluationRow] = []
        with self.db.session(write=True) as s:
            keys = list(dict.fromkeys(ev.eval_key for _, ev in results))
            known: dict[str, models.Evaluation] = {}
            for i in range(0, len(keys), _IN_CHUNK):
                known.update((e.eval_key, e) for e in s.scalars(select(models.Evaluation).where(
                    models.Evaluation.eval_key.in_(keys[i:i + _IN_CHUNK]))))
            all_uids = list(dict.fromkeys(uid for uids, _ in results for uid in uids))
            for i in range(0, len(all_uids), _IN_CHUNK):  # the candidates into the identity map, one read
                s.scalars(select(models.Candidate).where(models.Candidate.uid.in_(all_uids[i:i + _IN_CHUNK]))).all()
            stored: list[tuple[list[str], models.Evaluation]] = []
            added: list[str] = []
            for uids, ev in results:
                e = known.get(ev.eval_key)
                if e is None:
                    added.append(ev.eval_key[:12])
                    e = known[ev.eval_key] = models.Evaluation(
                        eval_key=ev.eval_key, canonical_key=ev.canonical_key,
                        coefficients_json=json.dumps(ev.coefficients), task=ev.task,
                        budget_json=json.dumps(ev.budget, sort_keys=True), steps=int(ev.budget.get("steps", 0)),
                        seed_policy=ev.seed_policy, status=ev.status, fitness=ev.fitness,
                        metrics_json=json.dumps(ev.metrics, sort_keys=True), wall_seconds=ev.wall_seconds,
                        train_seconds=ev.train_seconds, eval_seconds=ev.eval_seconds, device=ev.device,
                        run_id=run_id, candidate_uid=uids[0] if uids else None, created_at=now,
                    )
                    s.add(e)
                stored.append((uids, e))
            try:
                s.flush()  # the new evaluations' ids
            except IntegrityError as exc:  # only one writer per run; two runs on one file may race
                raise StorageError(f"evaluation(s) {', '.join(added)} stored twice concurrently") from exc
            for uids, e in stored:
                for uid in uids:
                    c = self._cand(s, uid)
                    if c.status == "pending":
                        c.status, c.fitness, c.evaluation_id, c.resolved_at = "evaluated", e.fitness, e.id, now
                out.append(EvaluationRow.of(e))
        return out

    def mark_failed(self, uids: list[str], reason: str) -> None:
        """Gave up on these candidates: they are told 0.0 and not cached (the failure may be transient)."""
        with self.db.session(write=True) as s:
            for uid in uids:
                c = self._cand(s, uid)
                if c.status == "pending":
                    c.status, c.fitness, c.error, c.resolved_at = "failed", 0.0, reason[:4000], time.time()

    def mark_told(self, run_id: str, uids: list[str], state: dict[str, Any] | None,
                  resolved: Iterable[NewResolution] = (), log: Sequence[dict[str, Any]] = ()) -> None:
        """The search absorbed these results: save its state (whole, or `log` entries) and the marks in one
        transaction (with `resolved`, what the tells made the search settle itself, as in `record_asked`)."""
        now = time.time()
        with self.db.session(write=True) as s:
            if uids:
                s.execute(update(models.Candidate).where(models.Candidate.uid.in_(uids)).values(told=True))
            self._add_resolved(s, run_id, resolved, self._next_seq(s, run_id), now)
            self._save_search(s, run_id, state, log)
            s.execute(update(models.Run).where(models.Run.id == run_id).values(updated_at=time.time()))

    @staticmethod
    def _cand(s: Any, uid: str) -> models.Candidate:
        c = s.get(models.Candidate, uid)
        if c is None:
            raise NotFoundError(f"no candidate {uid!r}")
        return c

    # -- jobs --------------------------------------------------------------------------------
    def create_job(self, run_id: str, backend: str, uids: list[str], work_dir: str = "") -> JobRow:
        now = time.time()
        with self.db.session(write=True) as s:
            job = models.Job(run_id=run_id, backend=backend, state="queued", attempts=0, work_dir=work_dir,
                             created_at=now, updated_at=now)
            s.add(job)
            s.flush()
            for uid in uids:
                s.add(models.JobCandidate(job_id=job.id, candidate_uid=uid))
            s.flush()
            return JobRow.of(job, tuple(uids))

    def transition_job(self, job_id: int, new_state: str, *, expect: Iterable[str] | None = None,
                       outcome: str | None = None, **fields: Any) -> JobRow:
        """Guarded state change: an illegal transition raises IllegalTransitionError.  `outcome`: how the
        attempt ended when the state alone does not say it (a backup copy removed as "superseded")."""
        if outcome is not None and outcome not in models.ATTEMPT_OUTCOMES:
            raise ValueError(f"transition_job: unknown attempt outcome {outcome!r}")
        now = time.time()
        with self.db.session(write=True) as s:
            job = s.get(models.Job, job_id)
            if job is None:
                raise NotFoundError(f"no job {job_id}")
            if expect is not None and job.state not in set(expect):
                raise IllegalTransitionError(f"job {job_id} is {job.state}, expected one of {sorted(expect)}")
            if new_state not in JOB_TRANSITIONS.get(job.state, frozenset()):
                raise IllegalTransitionError(f"job {job_id}: {job.state} -> {new_state} is not allowed")
            previous = job.state
            job.state = new_state
            job.updated_at = now
            if new_state == "submitted" and previous == "queued":  # held -> submitted is a release
                job.attempts += 1
                job.submitted_at = now
                s.add(models.JobAttempt(job_id=job.id, attempt=job.attempts, submitted_at=now, notes_json="[]"))
                s.flush()
            elif new_state == "running":
                job.started_at = now
            elif new_state in ("done", "failed"):
                job.finished_at = now
            attempt_fields = {k: fields.pop(k) for k in list(fields) if k in _ATTEMPT_FIELDS}
            self._set_fields(job, fields, "transition_job")
            self._record_attempt(s, job, previous, new_state, {**fields, **attempt_fields}, now, outcome)
            s.flush()
            return JobRow.of(job, self._job_uids(s, job))

    @staticmethod
    def _record_attempt(s: Any, job: models.Job, previous: str, new_state: str | None, fields: dict[str, Any],
                        now: float, outcome: str | None = None) -> None:
        """The job's change, written into its current attempt's row (job_attempts) in the same transaction:
        cluster id, machine, start, holds, releases, evictions, exit, and how and why it ended."""
        if job.attempts < 1:
            return  # never submitted (a job settled by the cache): no attempt to record
        row = s.scalars(select(models.JobAttempt).where(models.JobAttempt.job_id == job.id,
                                                        models.JobAttempt.attempt == job.attempts)).first()
        if row is None:  # the attempt began before schema v4 recorded attempts
            row = models.JobAttempt(job_id=job.id, attempt=job.attempts, submitted_at=job.submitted_at,
                                    notes_json="[]")
            s.add(row)
        if row.ended_at is not None:
            return  # that attempt is over; what follows (a late event) belongs to no attempt
        notes: list[Any] = json.loads(row.notes_json or "[]")
        for key in ("backend_job_id", "host", "exit_code", "exit_signal"):
            if fields.get(key) is not None and fields[key] != "":
                setattr(row, key, fields[key])
        if new_state == "running" and row.started_at is None:
            row.started_at = now
        if "hold_code" in fields or new_state == "held":
            row.hold_code, row.hold_subcode = fields.get("hold_code"), fields.get("hold_subcode")
            row.hold_reason = fields.get("hold_reason") or ""
            row.holds = (row.holds or 0) + 1
            notes.append([now, f"held: {row.hold_reason or 'no reason given'} (code {row.hold_code}/"
                               f"{row.hold_subcode})" + (f" on {row.host}" if row.host else "")])
        if previous == "held" and new_state == "submitted":
            row.releases = (row.releases or 0) + 1
            notes.append([now, "released"])
        if previous == "running" and new_state == "submitted":
            row.evictions = (row.evictions or 0) + 1
            notes.append([now, fields.get("last_error") or "evicted: back in the queue"])
        if new_state in _OUTCOME_OF and previous in models.ACTIVE_JOB_STATES + ("lost",):
            row.ended_at = now
            row.outcome = outcome or _OUTCOME_OF[new_state]
            row.error = fields.get("last_error") or ""
        row.notes_json = json.dumps(notes)

    def set_job_fields(self, job_id: int, **fields: Any) -> JobRow:
        """Set non-state job fields (the backend's id once it has answered, a lease deadline)."""
        with self.db.session(write=True) as s:
            job = s.get(models.Job, job_id)
            if job is None:
                raise NotFoundError(f"no job {job_id}")
            now = time.time()
            attempt_fields = {k: fields.pop(k) for k in list(fields) if k in _ATTEMPT_FIELDS}
            self._set_fields(job, fields, "set_job_fields")
            job.updated_at = now
            self._record_attempt(s, job, job.state, None, {**fields, **attempt_fields}, now)
            s.flush()
            return JobRow.of(job, self._job_uids(s, job))

    @staticmethod
    def _set_fields(job: models.Job, fields: dict[str, Any], caller: str) -> None:
        for key, value in fields.items():
            if key == "bad_nodes":
                job.bad_nodes_json = json.dumps(list(value))
                continue
            if key not in _JOB_FIELDS:
                raise ValueError(f"{caller}: unknown field {key!r}")
            setattr(job, key, value)

    def _job_uids(self, s: Any, job: models.Job) -> tuple[str, ...]:
        uids = self._uids_of_job.get((job.id, job.created_at))
        if uids is None:
            uids = self._uids_of_job[(job.id, job.created_at)] = tuple(s.scalars(
                select(models.JobCandidate.candidate_uid).where(models.JobCandidate.job_id == job.id)
                .order_by(models.JobCandidate.candidate_uid)))
        return uids

    def attempts(self, job_id: int) -> list[dict[str, Any]]:
        """The job's attempts, oldest first (db.fastread.attempt_json of each row)."""
        from db.fastread import ATTEMPTS_SQL, attempt_json

        with self.db.session() as s:
            return [attempt_json(r._mapping) for r in s.connection().exec_driver_sql(ATTEMPTS_SQL, (job_id,))]

    def jobs(self, run_id: str, states: Iterable[str] | None = None) -> list[JobRow]:
        with self.db.session() as s:
            q = select(models.Job).where(models.Job.run_id == run_id)
            if states is not None:
                q = q.where(models.Job.state.in_(list(states)))
            return [JobRow.of(j, self._job_uids(s, j)) for j in s.scalars(q.order_by(models.Job.id))]
