"""The asynchronous scheduler: ask the search, answer from the cache, train the rest, tell.

One asyncio loop, one writer.  The order of writes is what makes any crash recoverable:

1. `ask()` -> the candidates and the search state that handed them out are stored in one
   transaction (then their jobs, state queued), *before* anything is submitted; whatever the
   search settled itself (invalid, elite, duplicate) is stored, resolved and told, in the very
   transaction that first saves a state counting it as settled;
2. a job is marked submitted (with its backend id) before the backend may report on it;
3. a result is stored in the fitness cache before the search is told;
4. after each batch of tells, the search state and the `told` marks are saved together -- unless the
   tells made the search ask for more: then the asked candidates' transaction (1.) saves the state that
   absorbed the tells, their jobs are submitted, and the marks follow (a result stored but not marked is
   told again on resume, and the search answers AlreadyToldError, which the scheduler absorbs).

A saved state is therefore never ahead of the rows: no candidate it counts as asked or settled
is missing from the database or left pending there.

On resume, the saved search state is imported; untold candidates whose result is stored are
told, recorded jobs are re-adopted from the backend or rerun, and the loop continues.  The
search breeds a generation only once all its results are in, so the final population is the
same whatever the order of the tells (or the crashes).

Backup copies (`backend.backup_copies`, off by default): slots the search leaves free -- a generation's
barrier, a spent budget's drain -- go to copies of the longest-running jobs (`backup_plan`).  A copy is a
job of its own holding the same candidates; whichever finishes first is stored and told, the others are
removed (`_remove_superseded`; attempt outcome "superseded"), and a copy that fails while another still
runs ends alone, neither retried nor failing its candidates.  The search sees the same results either way,
so copies change wall time, never the search.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import statistics
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from db.fastread import expected_evaluations
from db.models import JOB_TRANSITIONS
from db.session import Database
from db.snapshots import CandidateRow, JobRow
from db.store import NewCandidate, NewEvaluation, NewResolution, Store
from orchestrator.backends import BackendError, BackendUnavailable, JobEvent, JobRequest, make_backend
from orchestrator.backends.base import Backend
from orchestrator.config import GloConfig, TaskConfig, from_stored
from orchestrator.errors import SchedulerError
from orchestrator.run.cachekey import CalibratedKeys, RememberedKeys, eval_key, untrained_key
from orchestrator.run.lock import pid_alive
from orchestrator.run.searchlog import SearchLog
from orchestrator.search.calibration import calibrator_for
from orchestrator.search.candidate import AlreadyToldError, AskTell, Candidate, UnknownCandidateError
from orchestrator.search.evaluation import EvaluationPlan
from orchestrator.search.modes import new_search, search_from_state
from worker.lossexpr import Node, to_infix
from worker.lossexpr.coefficients import pruned_coefficients
from worker.spec import STATUS_ERROR, CandidateResult, CandidateSpec, SpecError, load_spec

log = logging.getLogger("glo.scheduler")


def job_size(candidates_per_job: int, fuse_width: int | None) -> int:
    """Candidates per job: `candidates_per_job` rounded up to a multiple of the fuse width K
    (`BackendConfig.fuse_width`), so that every job but a generation's last carries whole fused groups (and
    the last does too when the count allows)."""
    k = fuse_width or 1
    return -(-candidates_per_job // k) * k


def job_sizes(n: int, candidates_per_job: int, fuse_width: int | None) -> list[int]:
    """How `n` candidates of one training setting are cut into jobs: as few jobs as `job_size` allows, their
    sizes as even as whole fused groups allow (the one partial group last).

    Why even: a generation waits for its slowest job, so 6 candidates at 4 per job as 4 + 2 keep one
    worker busy for two candidates' time while the other idles; 3 + 3 end together.  Each candidate
    trains the same wherever it sits in a job (its own seed and model), so only the wall time changes."""
    if n <= 0:
        return []
    k = fuse_width or 1
    jobs = -(-n // job_size(candidates_per_job, fuse_width))
    groups = -(-n // k)  # fused groups, the last one partial when k does not divide n
    sizes = [k * (groups // jobs + (1 if i < groups % jobs else 0)) for i in range(jobs)]
    sizes[-1] -= k * groups - n
    return sizes


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4]


@dataclass
class Progress:
    """Counts for the progress display (and the final summary)."""

    trained: int = 0
    cached: int = 0
    failed: int = 0
    resolved: int = 0
    best: float | None = None
    best_infix: str = ""
    started: float = field(default_factory=time.time)


def resolve_seed_losses(db: Database, config: GloConfig) -> GloConfig:
    """The config with every RUN/CANDIDATE in `search.ga.seed_losses` replaced by that tree's infix.

    Done once, when a run is created: the stored config then holds the trees themselves, so the
    run resumes (and can be read) without the other run's rows."""
    from db.errors import StorageError
    from db.queries import candidate as stored_candidate
    from orchestrator.search.config import seed_loss_tree

    ga = config.search.ga
    out: list[str] = []
    for i, text in enumerate(ga.seed_losses):
        if seed_loss_tree(text, f"search.ga.seed_losses[{i}]") is not None:
            out.append(text)
            continue
        try:
            row, _ev, _jobs = stored_candidate(db, text.strip())
        except StorageError as exc:
            raise SchedulerError(f"search.ga.seed_losses[{i}]: {text!r} is neither a loss nor a stored "
                                 f"candidate: {exc}") from None
        out.append(to_infix(Node.from_json(row.tree)))
    if tuple(out) == ga.seed_losses:
        return config
    return replace(config, search=replace(config.search, ga=replace(ga, seed_losses=tuple(out))))


class Scheduler:
    def __init__(self, db: Database, run_id: str, config: GloConfig, *, backend: Backend | None = None,
                 work_root: Path | None = None, show_progress: bool | None = None) -> None:
        self.db = db
        db.read_on_writer()  # the one writer reads between its writes: no connection per read
        self.store = Store(db)
        # canonical keys, fixed per tree within this database; a calibrated run's are scale-free (cachekey)
        self.calibrator = calibrator_for(config.task)
        plain = RememberedKeys(self.store)
        self.keys: RememberedKeys | CalibratedKeys = (
            plain if self.calibrator is None else CalibratedKeys(self.store, self.calibrator.scale, plain))
        self.run_id = run_id
        self.config = config
        self.events: asyncio.Queue[JobEvent] = asyncio.Queue()
        root = Path(config.backend.work_dir) if config.backend.work_dir else Path(str(db.path) + ".work")
        self.work_root = (work_root or root).resolve()
        self._backend = backend
        self.search: AskTell | None = None  # a Search or an EvaluationPlan
        self.outstanding: dict[str, CandidateRow] = {}  # uid -> asked, not told
        self.to_tell: dict[str, float] = {}  # uid -> fitness stored, to be told
        self.job_of_key: dict[str, int] = {}  # eval_key -> job training it now
        self.followers: dict[str, list[str]] = {}  # eval_key -> uids waiting for that training
        self.jobs: dict[int, JobRow] = {}
        self.ready: deque[int] = deque()
        self.running: set[int] = set()
        # Submitted while the backend was unreachable: maybe in the cluster, maybe not.  Looked up with
        # `adopt` before anything is submitted again, so that no job is ever submitted twice.
        self.limbo: dict[int, JobRequest] = {}
        self._limbo_retry_at = 0.0
        self._limbo_backoff = 5.0
        self._resolved_seen = 0
        self.search_log = SearchLog()  # the search's asks and tells between whole saves of its state
        self.stop_requested = asyncio.Event()
        self.stop_reason = ""
        self.progress = Progress()
        self.show_progress = sys.stderr.isatty() if show_progress is None else show_progress
        self._bar: Any = None
        self._expected_total: int | None = None
        # backup copies (BackendConfig.backup_copies): recent jobs' submission-to-result times, the copies
        # this scheduler submitted, and what became of them
        self.durations: deque[float] = deque(maxlen=100)
        self.backup_ids: set[int] = set()
        self.backups = {"submitted": 0, "won": 0, "superseded": 0}

    # -- construction ----------------------------------------------------------------------------
    @staticmethod
    def create(db: Database, config: GloConfig, *, run_id: str | None = None, **kw: Any) -> "Scheduler":
        run_id = run_id or new_run_id()
        config = resolve_seed_losses(db, config)
        Store(db).create_run(run_id, name=config.run.name, config=config.to_dict(), seed=config.run.seed,
                             task=config.task.name, backend=config.backend.kind, pid=os.getpid())
        return Scheduler(db, run_id, config, **kw)

    @staticmethod
    def resume(db: Database, run_id: str, **kw: Any) -> "Scheduler":
        store = Store(db)
        run = store.get_run(run_id)
        if run.status == "finished":
            raise SchedulerError(f"run {run_id} already finished; nothing to resume")
        if run.status == "cancelled":
            raise SchedulerError(f"run {run_id} was cancelled; start a new run instead")
        if run.status == "running" and run.pid and run.pid != os.getpid() and pid_alive(run.pid):
            raise SchedulerError(f"run {run_id} is still running (pid {run.pid})")
        config = from_stored(run.config)
        store.update_run(run_id, status="running", pid=os.getpid(), started_at=time.time(), message="")
        return Scheduler(db, run_id, config, **kw)

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            try:
                self._backend = make_backend(self.config.backend, self.events, self.work_root, self.run_id)
            except BackendError as exc:  # e.g. the submit host refuses the SSH login: nothing stored is lost
                raise SchedulerError(f"cannot use the {self.config.backend.kind} backend: {exc}\n"
                                     f"(fix the cause, then: glo run --resume {self.run_id})") from None
        return self._backend

    # -- the loop --------------------------------------------------------------------------------
    async def run(self) -> str:
        """Run until the search finishes or a stop is requested; returns the run's final status."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.request_stop, f"signal {signal.Signals(sig).name}")
            except (NotImplementedError, RuntimeError):  # not the main thread (e.g. tests): no handler there
                pass
        self._start_progress()
        status = "failed"
        try:
            await self._recover()
            status = await self._loop()
        except BaseException as exc:
            self.store.update_run(self.run_id, status="failed", message=f"{type(exc).__name__}: {exc}"[:2000])
            raise
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.remove_signal_handler(sig)
                except (NotImplementedError, RuntimeError):
                    pass
            # Local workers always die with the scheduler; cluster jobs keep running through a stop or a
            # crash (a resume re-adopts them) and are removed only when the run is cancelled.
            if self._backend is not None:
                await self._backend.shutdown(cancel_jobs=status == "cancelled")
            self._stop_progress()
        return status

    def request_stop(self, reason: str = "stop requested") -> None:
        self.stop_reason = reason
        self.stop_requested.set()

    async def _loop(self) -> str:
        assert self.search is not None
        last_poll = time.monotonic()
        while True:
            told = self._tell_search()
            if self.search.finished or self.stop_requested.is_set():
                self._save_told(told)
                if self.search.finished:
                    return self._finish()
                while not self.events.empty():  # results that already arrived are kept
                    await self._handle_event(self.events.get_nowait())
                self._tell_pending()
                return self._stopped()
            asked = self.search.ask()
            self.search_log.asked(asked)
            if asked:
                # The asked candidates' transaction saves the state that absorbed `told` too, so the slots
                # these results freed are refilled before the told marks are written: one state save fewer
                # between a result and the next submission (a steady-state run's whole state, megabytes
                # late in a long run).  A crash in between leaves results stored but unmarked; the resume
                # tells them again and the search answers AlreadyToldError, which _tell_search absorbs.
                self._handle_asked(asked)
                await self._submit_ready()
                self._save_told(told)
                continue
            self._save_told(told)
            self._record_resolved()
            await self._settle_limbo()
            await self._submit_ready()
            await self._submit_backups()
            if not self.running and not self.ready and not self.to_tell:
                raise SchedulerError(
                    f"the search waits on {len(self.search.outstanding())} candidate(s) but nothing is in flight")
            if time.monotonic() - last_poll > 2.0:
                last_poll = time.monotonic()
                if self.store.get_run(self.run_id).status == "cancelled":
                    self.request_stop("cancelled")
                    continue
            event = await self._next_event(timeout=2.0)
            while event is not None:
                await self._handle_event(event)
                event = self.events.get_nowait() if not self.events.empty() else None
            # The slots these results freed take jobs already waiting (a search asked with more candidates
            # outstanding than the backend's max_in_flight) before the search is told and breeds: a freed
            # slot waits for the event's handling only, not for the tell, the breeding and their transaction.
            await self._submit_ready()

    async def _next_event(self, timeout: float) -> JobEvent | None:
        getter = asyncio.ensure_future(self.events.get())
        stopper = asyncio.ensure_future(self.stop_requested.wait())
        done, _ = await asyncio.wait({getter, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if getter in done:
            return getter.result()
        getter.cancel()
        return None

    # -- asking ------------------------------------------------------------------------------------
    def _screen(self) -> Any:
        """The zero-training filter for this run's task, or None when `search.ga.zero_training_filter` is off."""
        if not self.config.search.ga.zero_training_filter:
            return None
        from orchestrator.search.filters import screen_for

        task = self.config.task
        return screen_for(task.epsilon, task.class_reduction, task.epsilon_gradient)

    def _task_for(self, search_id: str) -> TaskConfig:
        """The training settings of one candidate: the run's [task] with what the search overrides (a rung's
        steps; `seed_offset`, added to task.seed, for a promotion's further training seeds; an evaluation
        cell's own seed and training fraction)."""
        assert self.search is not None
        overrides = dict(self.search.task_overrides(search_id))
        if not overrides:
            return self.config.task
        if "seed_offset" in overrides:
            overrides["seed"] = overrides.get("seed", self.config.task.seed) + int(overrides.pop("seed_offset"))
        return replace(self.config.task, **overrides)

    def _new_candidate(self, cand: Candidate, cannot_train: bool = False) -> NewCandidate:
        """The row of a handed-out candidate; `cannot_train`: settled untrained as untrainable (`untrained_key`)."""
        ck = untrained_key(cand.tree) if cannot_train else self.keys(cand.tree)
        return NewCandidate(
            search_id=cand.id, tree_json=cand.tree.to_json(), infix=to_infix(cand.tree),
            coefficients=pruned_coefficients(cand.tree), canonical_key=ck,
            eval_key=eval_key(ck, self._task_for(cand.id)),
            generation=cand.generation, phase=cand.phase, origin=cand.origin, parents=list(cand.parents),
        )

    def _handle_asked(self, asked: list[Candidate]) -> None:
        """Write ahead: candidates + search state first; then cache lookups and job creation.

        What the search settled itself goes into the same transaction: the state saved here
        already lists it (a fresh search resolves generation 0 on its first ask), and a state
        saved without the rows of what it counts as asked would leave a resume waiting on
        candidates it never heard of."""
        assert self.search is not None
        self.keys.prefetch([c.tree for c in asked])  # the batch's keys in parallel, then memo hits below
        news = [self._new_candidate(c) for c in asked]
        with self.store.batch():  # the candidates, their cache hits and their jobs: one transaction
            rows = self.store.record_asked(self.run_id, news, generation=self.search.generation,
                                           phase=self.search.phase, resolved=self._fresh_resolutions(),
                                           **self.search_log.take(self.search))
            to_train: list[CandidateRow] = []
            for row in rows:
                self.outstanding[row.uid] = row
                if row.status != "pending":
                    self.to_tell[row.uid] = float(row.fitness or 0.0)
                    continue
                if not self._try_cache(row):
                    to_train.append(row)
            self._plan_jobs(to_train)

    def _try_cache(self, row: CandidateRow) -> bool:
        """A cache hit is told at once and never trained; a key already training gets a follower."""
        hit = self.store.lookup_cache(row.eval_key)
        if hit is not None:
            self.store.resolve_cached(row.uid, hit)
            self.to_tell[row.uid] = hit.fitness
            self.progress.cached += 1
            return True
        if row.eval_key in self.job_of_key:
            self.followers.setdefault(row.eval_key, []).append(row.uid)
            return True
        return False

    def _plan_jobs(self, rows: list[CandidateRow]) -> None:
        seen: dict[str, CandidateRow] = {}
        for row in rows:  # two equal losses asked together: train one, the other follows
            if row.eval_key in seen:
                self.followers.setdefault(row.eval_key, []).append(row.uid)
            else:
                seen[row.eval_key] = row
        groups: dict[str, list[CandidateRow]] = {}  # one job trains candidates of one training setting
        for row in seen.values():
            task = self._task_for(row.search_id)
            groups.setdefault(json.dumps(task.budget() | {"seed": task.seed}, sort_keys=True), []).append(row)
        for unique in groups.values():
            start = 0
            for size in job_sizes(len(unique), self.config.backend.candidates_per_job,
                                  self.config.backend.fuse_width):
                batch, start = unique[start:start + size], start + size
                job = self.store.create_job(self.run_id, self.config.backend.kind, [r.uid for r in batch])
                self._track_job(job)
                self.ready.append(job.id)

    def _track_job(self, job: JobRow) -> None:
        self.jobs[job.id] = job
        for uid in job.candidate_uids:
            row = self.outstanding.get(uid)
            if row is not None and row.status == "pending":
                self.job_of_key[row.eval_key] = job.id

    def _fresh_resolutions(self) -> list[NewResolution]:
        """What the search settled without training (invalid, elite, duplicate) since last taken."""
        assert self.search is not None
        fresh = self.search.resolved_without_training(self._resolved_seen)
        self._resolved_seen += len(fresh)
        self.progress.resolved += len(fresh)
        self.keys.prefetch([r.candidate.tree for r in fresh if not r.cannot_train])
        return [NewResolution(self._new_candidate(r.candidate, r.cannot_train), r.fitness,
                              r.reason + (f" of {r.duplicate_of}" if r.duplicate_of else "")) for r in fresh]

    def _record_resolved(self, whole: bool = False) -> None:
        """Store what the search settled without training, resolved and told, with the state --
        one transaction: stored pending, a resume would take them for untrained candidates.
        `whole`: save the whole state now (the run ends or stops) even with nothing new."""
        assert self.search is not None
        fresh = self._fresh_resolutions()
        if fresh or self.search_log.pending or whole:
            self.store.mark_told(self.run_id, [], resolved=fresh, **self.search_log.take(self.search, whole))

    # -- telling -----------------------------------------------------------------------------------
    def _tell_pending(self) -> None:
        """Tell every stored-but-untold result, then save the state with the told marks."""
        self._save_told(self._tell_search())

    def _save_told(self, told: list[str]) -> None:
        """Save the search state with these told marks (and what the tells made the search settle itself)."""
        if not told:
            return
        assert self.search is not None
        self.store.mark_told(self.run_id, told, resolved=self._fresh_resolutions(),
                             **self.search_log.take(self.search))
        self._update_progress()

    def _tell_search(self) -> list[str]:
        """Tell the search every stored-but-untold result; the uids told (their marks: `_save_told`)."""
        if not self.to_tell:
            return []
        assert self.search is not None
        told: list[str] = []
        for uid, fitness in list(self.to_tell.items()):
            row = self.outstanding.pop(uid, None)
            search_id = row.search_id if row else uid.split("/", 1)[1]
            try:
                self.search.tell(search_id, fitness)
                self.search_log.told(search_id, fitness)
            except (UnknownCandidateError, AlreadyToldError) as exc:  # absorbed before a crash: harmless
                # (only these two: a KeyError from inside the search is a bug and must not be swallowed)
                log.debug("tell %s skipped: %s", uid, exc)
            told.append(uid)
            if self.progress.best is None or fitness > self.progress.best:
                self.progress.best = fitness
                self.progress.best_infix = row.infix if row else ""
        self.to_tell.clear()
        return told

    # -- jobs --------------------------------------------------------------------------------------
    def _request(self, job: JobRow, attempt: int) -> JobRequest | None:
        cands = sorted((self.outstanding[u] for u in job.candidate_uids if self._pending(u)), key=lambda c: c.seq)
        if not cands:
            return None
        spec = self._task_for(cands[0].search_id).worker_spec(
            [self._candidate_spec(c.uid.split("/", 1)[1], Node.from_json(c.tree)) for c in cands])
        if self.config.backend.fuse is not None:
            spec = replace(spec, fuse=self.config.backend.fuse)
        work_dir = self.work_root / self.run_id / f"job-{job.id}" / f"a{attempt}"
        return JobRequest(job.id, attempt, spec, work_dir, None, avoid_hosts=job.bad_nodes)

    def _candidate_spec(self, cid: str, tree: Node) -> CandidateSpec:
        """What the worker trains for one candidate: the tree, and in a calibrated run its scale."""
        if self.calibrator is None:
            return CandidateSpec(cid, tree)
        return CandidateSpec(cid, tree, self.calibrator.train_scale(tree))

    def _adoptable(self, job: JobRow) -> JobRequest | None:
        """The request exactly as it was submitted: the spec file we wrote (its hash ties the
        result file to it), so a half-finished job's results are recognised, not rerun."""
        if not job.work_dir:
            return None
        work_dir = Path(job.work_dir)
        try:
            spec = load_spec(work_dir / "spec.json")
        except SpecError:
            return None
        return JobRequest(job.id, job.attempts, spec, work_dir, job.backend_job_id, avoid_hosts=job.bad_nodes,
                          releases=job.releases)

    async def _submit_ready(self) -> None:
        """Submit what is ready, up to max_in_flight, as one batch (a cluster backend makes it one cluster).

        Each job is marked submitted (with its work dir) before the backend sees it, and its backend id
        is stored as soon as the backend answers."""
        limit = self.config.backend.max_in_flight
        batch: list[JobRequest] = []
        with self.store.batch():  # every job marked submitted in one transaction, before the backend sees any
            while self.ready and len(self.running) + len(batch) < limit and not self.stop_requested.is_set():
                job_id = self.ready.popleft()
                job = self.jobs[job_id]
                req = self._request(job, job.attempts + 1)
                if req is None:  # every candidate already settled (e.g. by the cache)
                    self._finish_job(job, "done")
                    continue
                self.jobs[job_id] = self.store.transition_job(job_id, "submitted", work_dir=str(req.work_dir))
                batch.append(req)
        if not batch:
            return
        try:
            backend_ids = await self.backend.submit_many(batch)
        except BackendUnavailable as exc:
            log.warning("%d job(s) submitted while the backend was unreachable (%s): looking them up before "
                        "anything is submitted again", len(batch), exc)
            for req in batch:
                self.limbo[req.job_id] = req
                self.running.add(req.job_id)
            self._limbo_retry_at = time.monotonic() + self._limbo_backoff
            return
        except BackendError as exc:
            raise SchedulerError(f"the {self.config.backend.kind} backend could not submit: {exc}\n"
                                 f"(fix the cause, then: glo run --resume {self.run_id})") from None
        with self.store.batch():
            for req, backend_id in zip(batch, backend_ids):
                self.jobs[req.job_id] = self.store.set_job_fields(req.job_id, backend_job_id=backend_id)
                self.running.add(req.job_id)

    async def _settle_limbo(self) -> None:
        """Ask the backend about jobs whose submission had no answer: found -> followed, never submitted
        -> queued again (a new attempt), still unreachable -> ask again later (backing off)."""
        if not self.limbo or time.monotonic() < self._limbo_retry_at:
            return
        for job_id, req in list(self.limbo.items()):
            try:
                found = await self.backend.adopt(req)
            except BackendUnavailable as exc:
                self._limbo_backoff = min(self._limbo_backoff * 2, 120.0)
                self._limbo_retry_at = time.monotonic() + self._limbo_backoff
                log.warning("backend still unreachable (%s); asking again in %.0f s", exc, self._limbo_backoff)
                return
            del self.limbo[job_id]
            if not found:
                self.running.discard(job_id)
                self.jobs[job_id] = self.store.transition_job(
                    job_id, "queued", last_error="the submission never reached the cluster; submitting again")
                self.ready.append(job_id)
        self._limbo_backoff = 5.0

    async def _handle_event(self, ev: JobEvent) -> None:
        job = self.jobs.get(ev.job_id)
        if job is None or ev.attempt != job.attempts:
            log.debug("stale event for job %s attempt %s", ev.job_id, ev.attempt)
            return
        if job.id in self.limbo:  # the backend found it after all
            del self.limbo[job.id]
        fields = self._event_fields(job, ev)
        if ev.kind in ("running", "requeued", "held", "released"):
            target = {"running": "running", "requeued": "submitted", "held": "held", "released": "submitted"}[ev.kind]
            if ev.kind == "held":
                fields.update(hold_reason=ev.error or "", hold_code=ev.hold_code, hold_subcode=ev.hold_subcode)
                log.warning("job %s (%s) held: %s (code %s/%s)", job.id, ev.backend_job_id, ev.error, ev.hold_code,
                            ev.hold_subcode)
            if ev.kind == "requeued":
                fields["last_error"] = (ev.error or "requeued")[:4000]
            if job.state != target and target in JOB_TRANSITIONS.get(job.state, ()):
                self.jobs[job.id] = self.store.transition_job(job.id, target, **fields)
            elif fields:
                self.jobs[job.id] = self.store.set_job_fields(job.id, **fields)
            return
        with self.store.batch():  # the job's record, its results and its end: one transaction
            fatal = self._job_finished(job, ev, fields)
        if fatal is not None:  # raised once the requeue above is stored
            raise SchedulerError(f"job {job.id}: {fatal}\n(fix the cause, then: glo run --resume {self.run_id})")
        if self.config.backend.backup_copies:
            await self._remove_superseded(job.id)

    def _job_finished(self, job: JobRow, ev: JobEvent, fields: dict[str, Any]) -> str | None:
        """A job's "finished" event: its results stored (write ahead of the tell), then done, retried or failed.
        Returns the error of a fatal event (the job is queued again and the run must stop), else None."""
        if fields:
            self.jobs[job.id] = job = self.store.set_job_fields(job.id, **fields)
        # finished: store every result first (write ahead of the tell)
        self.running.discard(job.id)
        errors: list[str] = []
        by_id = {r.candidate_id: r for r in ev.results}
        answered: list[tuple[CandidateRow, CandidateResult]] = []
        for uid in job.candidate_uids:
            row = self.outstanding.get(uid)
            if row is not None and row.status == "pending" and row.search_id in by_id:
                answered.append((row, by_id[row.search_id]))
        stored = self._store([(row, res) for row, res in answered if res.status != STATUS_ERROR])
        for row, res in answered:  # settled in the job's order, as the search will be told
            if res.status == STATUS_ERROR:
                errors.append(f"{row.search_id}: {res.error}")
                self._fail([row.uid], f"worker error: {res.error}")
            else:
                self._settle_stored(row, *stored[row.uid])
        if stored and job.submitted_at is not None:  # what "a long time" means for backup copies
            self.durations.append(time.time() - job.submitted_at)
            if job.id in self.backup_ids:
                self.backups["won"] += 1
        remaining = [u for u in job.candidate_uids if self._pending(u)]
        if not remaining:
            self._finish_job(job, "done", "; ".join(errors))
            return None
        error = ev.error or "worker finished without results for some candidates"
        if ev.fatal:
            self.jobs[job.id] = self.store.transition_job(job.id, "queued", last_error=error[:4000])
            return error
        survivor = self._copy_covering(job.id, remaining)
        if survivor is not None:  # a copy still trains the rest: this one ends, nothing is retried or failed
            log.warning("job %s attempt %s: %s -- job %s still trains its candidates", job.id, job.attempts, error,
                        survivor)
            self._finish_job(job, "failed", f"{error} (job {survivor} still trains its candidates)")
            for uid in remaining:
                self.job_of_key[self.outstanding[uid].eval_key] = survivor
            return None
        if job.attempts < self.config.backend.max_attempts:
            log.warning("job %s attempt %s: %s -- retrying", job.id, job.attempts, error)
            self.jobs[job.id] = self.store.transition_job(job.id, "queued", last_error=error[:4000])
            self.ready.append(job.id)
        else:
            log.error("job %s failed after %s attempts: %s", job.id, job.attempts, error)
            self._fail(remaining, f"failed after {job.attempts} attempt(s): {error}")
            self._finish_job(job, "failed", error)
        return None

    def _pending(self, uid: str) -> bool:
        """The candidate is asked and not yet settled (so a job holding it still has work to do)."""
        row = self.outstanding.get(uid)
        return row is not None and row.status == "pending"

    # -- backup copies -----------------------------------------------------------------------------
    def _copy_covering(self, job_id: int, uids: list[str]) -> int | None:
        """Another job in flight that trains every one of `uids` (a backup copy, or the job it copies)."""
        for other in sorted(self.running):
            if other != job_id and set(uids) <= set(self.jobs[other].candidate_uids):
                return other
        return None

    def backup_plan(self, now: float) -> list[tuple[str, ...]]:
        """The candidates of each backup copy to submit now (BackendConfig.backup_copies), one tuple a copy.

        Only slots the search leaves free get copies: none while jobs wait in `ready`.  A job is due one
        when it runs (a job still waiting in a cluster's queue would have its copy wait behind it) and has
        been out for longer than `backup_after` x the median submission-to-result time of the run's recent
        jobs -- under a heavy tail the longest-running are the likeliest stragglers, so the oldest go
        first, and every due job gets one copy before any gets a second.  On a cluster "free" means below
        `max_in_flight`: set it to the slots the run may use.  Why it pays: a job slowed by its node, its
        restart after an eviction or its start-up is not slowed the same way on another slot; the first
        copy to finish wins (the worker trains a candidate the same wherever it runs)."""
        cfg = self.config.backend
        free = cfg.max_in_flight - len(self.running)
        if not cfg.backup_copies or self.ready or free <= 0 or not self.durations:
            return []
        due_after = cfg.backup_after * statistics.median(self.durations)
        # the pending candidates -> (submission, runs) of each job holding them
        copies: dict[tuple[str, ...], list[tuple[float, bool]]] = {}
        for jid in self.running:
            job = self.jobs[jid]
            pending = tuple(u for u in job.candidate_uids if self._pending(u))
            if pending and jid not in self.limbo and job.submitted_at is not None:
                copies.setdefault(pending, []).append((job.submitted_at, job.state == "running"))
        due = sorted((min(at for at, _ in c), len(c), uids) for uids, c in copies.items()
                     if len(c) <= cfg.backup_copies and any(running and now - at > due_after for at, running in c))
        plan: list[tuple[str, ...]] = []
        while due and len(plan) < free:
            again = []
            for first, n, uids in due[:free - len(plan)]:
                plan.append(uids)
                if n + 1 <= cfg.backup_copies:
                    again.append((first, n + 1, uids))
            due = again
        return plan

    async def _submit_backups(self) -> None:
        plan = self.backup_plan(time.time())
        if not plan:
            return
        with self.store.batch():
            for uids in plan:
                job = self.store.create_job(self.run_id, self.config.backend.kind, list(uids))
                self.jobs[job.id] = job
                self.backup_ids.add(job.id)
                self.ready.append(job.id)
        self.backups["submitted"] += len(plan)
        log.info("%d backup cop%s of long-running jobs on free slots", len(plan), "y" if len(plan) == 1 else "ies")
        await self._submit_ready()

    async def _remove_superseded(self, winner: int) -> None:
        """The winner's copies: jobs in flight that hold its candidates and have none left pending now --
        removed from the backend, their slots freed; recorded done, their attempt "superseded".  Only jobs
        sharing a candidate with the winner can have been settled by it, so no other job is looked at."""
        mine = set(self.jobs[winner].candidate_uids)
        for jid in sorted(self.running):
            held = self.jobs[jid].candidate_uids
            if jid == winner or jid in self.limbo or mine.isdisjoint(held) or any(self._pending(u) for u in held):
                continue
            try:
                await self.backend.cancel(jid)
            except BackendError as exc:  # it will finish and report; its results are then ignored
                log.warning("could not remove job %s, superseded by job %s: %s", jid, winner, exc)
                continue
            self.running.discard(jid)
            self.jobs[jid] = self.store.transition_job(
                jid, "done", outcome="superseded", last_error=f"superseded: job {winner} trained its candidates first")
            self.backups["superseded"] += 1

    @staticmethod
    def _event_fields(job: JobRow, ev: JobEvent) -> dict[str, Any]:
        """What a cluster event adds to the job's record: its cluster id, machine, counts, bad nodes."""
        fields: dict[str, Any] = {}
        if ev.backend_job_id and ev.backend_job_id != job.backend_job_id:
            fields["backend_job_id"] = ev.backend_job_id
        if ev.host and ev.host != job.host:
            fields["host"] = ev.host
        if ev.kind == "released":  # the job's total over its attempts
            fields["releases"] = job.releases + 1
        if ev.kind == "requeued":
            fields["evictions"] = job.evictions + 1
        if ev.bad_node and ev.bad_node not in job.bad_nodes:
            fields["bad_nodes"] = [*job.bad_nodes, ev.bad_node]
        if ev.kind == "finished":  # the attempt's own record (job_attempts) keeps how the worker exited
            fields.update({k: v for k, v in (("exit_code", ev.exit_code), ("exit_signal", ev.exit_signal))
                           if v is not None})
        return fields

    def _finish_job(self, job: JobRow, state: str, error: str = "") -> None:
        current = self.jobs[job.id]
        if current.state not in ("done", "failed"):  # a job done after a retry keeps why it was retried
            fields = {"last_error": error[:4000]} if error or state == "failed" else {}
            self.jobs[job.id] = self.store.transition_job(job.id, state, **fields)
        self.running.discard(job.id)
        for key, jid in list(self.job_of_key.items()):
            if jid == job.id:
                del self.job_of_key[key]

    def _store(self, trained: list[tuple[CandidateRow, CandidateResult]]) -> dict[str, tuple[list[str], float]]:
        """Store a job's results in one transaction (write ahead of the tell): for each trained candidate's uid,
        the uids its evaluation resolves (it and the followers of its key) and the stored fitness."""
        if not trained:
            return {}
        batch: list[tuple[list[str], NewEvaluation]] = []
        for row, res in trained:
            t = self._task_for(row.search_id)
            waiting = self.followers.pop(row.eval_key, [])
            metrics = {k: v for k, v in {
                "validation_accuracy": res.validation_accuracy, "test_accuracy": res.test_accuracy,
                "final_train_loss": res.final_train_loss, "nonfinite_step": res.nonfinite_step, "curve": res.curve,
                "tensorflow_version": res.tensorflow_version, "extra": res.extra or None,
            }.items() if v is not None}
            batch.append(([row.uid] + [u for u in waiting if u in self.outstanding], NewEvaluation(
                eval_key=row.eval_key, canonical_key=row.canonical_key, coefficients=row.coefficients, task=t.name,
                budget=t.budget(), seed_policy=t.seed_policy(), status=res.status, fitness=float(res.fitness),
                metrics=metrics, wall_seconds=res.wall_seconds, train_seconds=res.train_seconds,
                eval_seconds=res.eval_seconds, device=res.device,
            )))
        evs = self.store.store_results(batch, self.run_id)
        return {uids[0]: (uids, ev.fitness) for (uids, _), ev in zip(batch, evs)}

    def _settle_stored(self, row: CandidateRow, uids: list[str], fitness: float) -> None:
        """A stored training: it and its followers settle with its fitness; its key trains no more."""
        self.progress.trained += 1
        for uid in uids:
            self._settle(uid, "evaluated", fitness)
        self.job_of_key.pop(row.eval_key, None)

    def _fail(self, uids: list[str], reason: str) -> None:
        self.store.mark_failed(uids, reason)
        for uid in uids:
            row = self.outstanding.get(uid)
            self._settle(uid, "failed", 0.0)
            self.progress.failed += 1
            if row is not None:  # followers of a failed training get their own chance
                for f in self.followers.pop(row.eval_key, []):
                    frow = self.outstanding.get(f)
                    if frow is not None and frow.status == "pending":
                        self._plan_jobs([frow])
                self.job_of_key.pop(row.eval_key, None)

    def _settle(self, uid: str, status: str, fitness: float) -> None:
        row = self.outstanding.get(uid)
        if row is not None:
            self.outstanding[uid] = _with_status(row, status, fitness)
        self.to_tell[uid] = fitness

    # -- recovery ----------------------------------------------------------------------------------
    def load_search(self) -> AskTell:
        """The run's search as stored: a new one for a new run, else the last whole state with the log entries
        after it replayed (orchestrator.run.searchlog) -- exactly the search the last transaction left."""
        state = self.store.load_search_state(self.run_id)
        if self.config.evaluate is not None:  # `glo evaluate`: a fixed grid of trainings instead of a search
            rate = self.config.task.learning_rate
            self.search = (EvaluationPlan(self.config.evaluate, base_rate=rate) if state is None
                           else EvaluationPlan.import_state(state, base_rate=rate))
        elif state is None:
            self.search = new_search(self.config.search, key_fn=self.keys, screen=self._screen(),
                                     drop_scale=self.calibrator is not None)
        else:
            self.search = search_from_state(state, key_fn=self.keys, screen=self._screen(),
                                            drop_scale=self.calibrator is not None)
        if state is not None:
            self.search_log.resumed(self.search, self.store.load_search_log(self.run_id))
            self._resolved_seen = len(self.search.resolved_without_training())
        return self.search

    async def _recover(self) -> None:
        """Rebuild the in-memory picture from the database (a no-op for a new run)."""
        self.load_search()
        untold = [c for c in self.store.candidates(self.run_id, told=False) if c.status != "resolved"]
        for row in untold:
            self.outstanding[row.uid] = row
            if row.status != "pending":
                self.to_tell[row.uid] = float(row.fitness or 0.0)
        jobs = self.store.jobs(self.run_id, ("queued", "submitted", "running", "held", "lost"))
        in_job: set[str] = set()
        for job in jobs:
            pending = [u for u in job.candidate_uids if self._pending(u)]
            self._track_job(job)
            if not pending:
                self._finish_job(job, "done")
                continue
            in_job.update(pending)
            if job.state == "queued":
                self.ready.append(job.id)
                continue
            req = self._adoptable(job)
            try:
                adopted = req is not None and await self.backend.adopt(req)
            except BackendUnavailable as exc:
                assert req is not None
                log.warning("job %s: backend unreachable (%s); looking it up again later", job.id, exc)
                self.limbo[job.id] = req
                self.running.add(job.id)
                continue
            if adopted:
                self.running.add(job.id)
                log.info("job %s re-adopted from the backend", job.id)
            else:
                self.jobs[job.id] = self.store.transition_job(
                    job.id, "queued", last_error="rerun: not finished when the previous scheduler stopped")
                self.ready.append(job.id)
        orphans = [self.outstanding[u] for u in self.outstanding if u not in in_job and self._pending(u)]
        to_train = [row for row in orphans if not self._try_cache(row)]
        self._plan_jobs(to_train)
        if untold or jobs:
            log.info("resumed run %s: %d untold candidate(s), %d job(s) re-adopted or requeued",
                     self.run_id, len(untold), len(jobs))

    # -- endings -----------------------------------------------------------------------------------
    def _finish(self) -> str:
        assert self.search is not None
        self._record_resolved(whole=True)  # a finished run's stored state is whole (figures, export)
        best = self.search.best()
        summary = {
            "best": None if best is None else {"search_id": best[0].id, "infix": to_infix(best[0].tree),
                                               "fitness": best[1], "phase": best[0].phase},
            "top_trees": [{"search_id": c.id, "infix": to_infix(c.tree), "fitness": f}
                          for c, f in self.search.top_trees()[:10]],
            "population": [{"search_id": c.id, "infix": to_infix(c.tree), "fitness": f}
                           for c, f in self.search.population()],
            "history": self.search.history(),
            "stats": {k: v for k, v in self.search.stats().items() if k != "operators"},
        }
        summary["backend"] = self.backend.stats()
        if self.config.backend.backup_copies:
            summary["backups"] = dict(self.backups)
        self.store.update_run(self.run_id, status="finished", phase="done", finished_at=time.time(),
                              summary=summary, message="")
        return "finished"

    def _stopped(self) -> str:
        """Stop cleanly: what has already finished is stored; the rest stays recorded for resume."""
        self._record_resolved(whole=True)
        if self.store.get_run(self.run_id).status == "cancelled":  # `glo cancel` wrote it, then signalled us
            return "cancelled"
        self.store.update_run(self.run_id, status="stopped", message=self.stop_reason)
        return "stopped"

    # -- progress ----------------------------------------------------------------------------------
    def _start_progress(self) -> None:
        if not self.show_progress:
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                             TimeElapsedColumn(), transient=False)
        self._bar.start()
        self._bar_task = self._bar.add_task(f"run {self.run_id}", total=self._expected(), info="")

    def _expected(self) -> int:
        if self._expected_total is None:  # db.fastread's one formula, over the effective config
            self._expected_total = max(1, expected_evaluations(self.config.to_dict()))
        return self._expected_total

    def _update_progress(self) -> None:
        p = self.progress
        assert self.search is not None
        info = (f"{self.search.phase} gen {self.search.generation} | trained {p.trained} cached {p.cached} "
                f"failed {p.failed} in flight {len(self.running)} | best {p.best if p.best is not None else '-'}")
        if self._bar is not None:
            done = self.search.stats().get("told", 0)
            self._bar.update(self._bar_task, completed=min(done, self._expected()), info=info)
        else:
            log.info("%s", info)

    def _stop_progress(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _with_status(row: CandidateRow, status: str, fitness: float) -> CandidateRow:
    from dataclasses import replace

    return replace(row, status=status, fitness=fitness)


