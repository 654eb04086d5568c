"""The HTCondor backends' shared core: jobs in a pool, followed through the run's one event log.

`backend.kind = "condor"` (bindings on the submit host) and `"ssh"` (tools over SSH) differ only in
their `Transport`; everything else is here:

* submission -- a scheduler batch becomes one cluster (`condor.submit.render_batch`): a job per GLO job,
  each with its own work directory (`<run dir>/job-N/aK`: spec.json in, result.json, stdout.txt and
  stderr.txt out) and tagged `+GloRunId`, `+GloJobId`, `+GloAttempt`; every job of the run writes the
  run's one event log `<run dir>/events.log`.
* state -- from that event log, read incrementally (condor.events.EventLogFollower; over SSH the new
  bytes are appended to a local copy first).  The schedd is asked only to reconcile, at most once per
  `reconcile_interval_s`: one `query` on GloRunId, and `history` for a job that left the queue without
  a terminal event in the log (a lost or truncated log).
* policy -- a transient hold (`release_hold_codes`) is released up to `max_releases` times; any other
  hold, or one too many, removes the job and reports it failed, and the scheduler resubmits its
  candidates within `max_attempts`.  A worker that exits "bad node" (75) names the machine, and the
  retry gets a requirement excluding it (unless that would exclude every machine of the pool).  A clean
  exit without a usable result.json is a failure with that reason.
* re-adoption -- after a restart the whole event log is read again and each recorded job is found in it,
  in the queue or in the history (by its GLO ids when its cluster id was never recorded); only a job
  found nowhere is resubmitted, so a candidate is never submitted twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from condor.events import EventLogError, EventLogFollower, JobStatus
from condor.submit import EVENT_LOG_FILE, RESULT_FILE, SPEC_FILE, STDERR_FILE, render_batch
from orchestrator.backends.base import JobEvent, JobRequest, classify_exit, read_result_file
from orchestrator.backends.htcondor.transport import Transport, TransportError, TransportUnavailable
from orchestrator.config import BackendConfig, job_settings
from worker.spec import read_worker_exit

log = logging.getLogger("glo.cluster")

#: HoldReasonCode 12 (output transfer failed) with subcode 2 (ENOENT): result.json was never written.
MISSING_RESULT_HOLD = (12, 2)
#: What the schedd's JobStatus numbers mean (queue and history ads).
_JOB_STATUS = {1: "idle", 2: "running", 3: "removed", 4: "completed", 5: "held", 6: "running", 7: "idle"}
_AD_ATTRS = ("ClusterId", "ProcId", "JobStatus", "GloJobId", "GloAttempt", "HoldReason", "HoldReasonCode",
             "HoldReasonSubCode", "ExitCode", "ExitBySignal", "ExitSignal", "RemoveReason", "LastRemoteHost",
             "RemoteHost")


@dataclass
class _Job:
    """One GLO job attempt in the pool, as this backend sees it."""

    req: JobRequest
    condor_id: str | None = None
    releases: int = 0
    reported_running: bool = False
    last: JobStatus | None = None


def run_constraint(run_id: str, job_id: int | None = None, attempt: int | None = None) -> str:
    """The ClassAd constraint selecting a run's jobs (or one job attempt) by GLO's custom attributes."""
    from condor.submit import classad_string

    parts = [f"GloRunId == {classad_string(run_id)}"]
    if job_id is not None:
        parts.append(f"GloJobId == {int(job_id)}")
    if attempt is not None:
        parts.append(f"GloAttempt == {int(attempt)}")
    return " && ".join(parts)


def machine_of(host: str) -> str:
    """`slot1_2@node7.example.org` -> `node7.example.org` (the startd's Machine attribute)."""
    return host.rsplit("@", 1)[-1].strip("<>") if host else ""


class ClusterBackend:
    """One run's jobs in an HTCondor pool; `transport` says how the submit host is reached."""

    def __init__(self, config: BackendConfig, events: asyncio.Queue[JobEvent], work_root: Path, run_id: str,
                 transport: Transport, remote_root: PurePosixPath | None = None) -> None:
        self.config = config
        self.cfg = config.condor
        self.events = events
        self.run_id = run_id
        self.transport = transport
        self.name = transport.kind
        self.local_run_dir = (work_root / run_id).resolve()
        # Where the jobs live on the submit host: the local work dir itself for `condor`.
        self.run_dir = PurePosixPath(remote_root / run_id) if remote_root else PurePosixPath(self.local_run_dir)
        self.remote = remote_root is not None
        self.log_path = self.run_dir / EVENT_LOG_FILE
        self.local_log = self.local_run_dir / EVENT_LOG_FILE
        self._jobs: dict[int, _Job] = {}
        self._by_condor_id: dict[str, int] = {}
        self._follower: EventLogFollower | None = None
        self._log_offset = 0  # bytes of the remote log copied so far
        self._copy_fresh = False  # the local copy was started anew by this process (a restart re-reads it all)
        self._unsettled: dict[int, JobStatus] = {}  # statuses whose handling needs the submit host again
        self._watch_task: asyncio.Task[None] | None = None
        self._last_reconcile = time.monotonic()
        self._machines: set[str] | None = None
        self._dirs_made: set[PurePosixPath] = set()
        self.stats_counts: Counter[str] = Counter()
        self._started = time.monotonic()

    # -- helpers -----------------------------------------------------------------------------------
    async def _call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kw)

    def _job_dir(self, req: JobRequest) -> PurePosixPath:
        rel = req.work_dir.resolve().relative_to(self.local_run_dir)
        return self.run_dir / rel.as_posix()

    def worker_command(self) -> list[str]:
        return [sys.executable if part == "{python}" else part for part in self.config.worker_command]

    def _constraint(self, job_id: int | None = None, attempt: int | None = None) -> str:
        return run_constraint(self.run_id, job_id, attempt)

    def _emit(self, job: _Job, kind: str, **kw: Any) -> None:
        self.events.put_nowait(JobEvent(job.req.job_id, job.req.attempt, kind, backend_job_id=job.condor_id, **kw))

    def _forget(self, job: _Job) -> None:
        self._jobs.pop(job.req.job_id, None)
        if job.condor_id:
            self._by_condor_id.pop(job.condor_id, None)

    def _track(self, req: JobRequest, condor_id: str | None) -> _Job:
        job = _Job(req, condor_id, releases=req.releases)
        self._jobs[req.job_id] = job
        if condor_id:
            self._by_condor_id[condor_id] = req.job_id
        return job

    # -- submission --------------------------------------------------------------------------------
    async def submit(self, job: JobRequest) -> str:
        return (await self.submit_many([job]))[0]

    async def submit_many(self, reqs: list[JobRequest]) -> list[str]:
        """Write each spec, then submit one cluster per `batch_size` jobs that avoid the same machines."""
        ids: dict[int, str] = {}
        groups: dict[tuple[str, ...], list[JobRequest]] = {}
        for req in reqs:
            groups.setdefault(tuple(sorted(req.avoid_hosts)), []).append(req)
        for avoid, group in groups.items():
            extra = await self._avoid_requirement(avoid)
            for i in range(0, len(group), self.cfg.batch_size):
                chunk = group[i:i + self.cfg.batch_size]
                for req in chunk:
                    await self._stage(req)
                env = {"GLO_REQUIRE_GPU": "1"} if self.cfg.request_gpus > 0 and self.cfg.check_gpu else {}
                text = render_batch(self.worker_command(), job_settings(self.cfg, env), run_dir=str(self.run_dir),
                                    run_id=self.run_id, items=[(r.job_id, r.attempt) for r in chunk],
                                    extra_requirements=extra, batch_name=f"glo-{self.run_id}")
                await self._ensure_dir(self.run_dir)
                cluster = await self._call(self.transport.submit, text)
                self.stats_counts["clusters"] += 1
                if len(cluster.job_ids) != len(chunk):
                    raise TransportError(f"the schedd made {len(cluster.job_ids)} job(s) of a {len(chunk)}-job batch")
                for req, condor_id in zip(chunk, cluster.job_ids):
                    self._track(req, condor_id)
                    ids[req.job_id] = condor_id
                    self.stats_counts["jobs"] += 1
        self._start_watch()
        return [ids[r.job_id] for r in reqs]

    async def _ensure_dir(self, path: PurePosixPath) -> None:
        if path not in self._dirs_made:
            await self._call(self.transport.make_dirs, path)
            self._dirs_made.add(path)

    async def _stage(self, req: JobRequest) -> None:
        """spec.json into the job's directory on the submit host (and a local copy, which resume reads)."""
        data = json.dumps(req.spec.to_json(), indent=1).encode()
        if self.remote:  # (for `condor` the submit host's directory is this one: the transport makes it)
            req.work_dir.mkdir(parents=True, exist_ok=True)
            tmp = req.spec_path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(req.spec_path)
        remote_dir = self._job_dir(req)
        await self._ensure_dir(remote_dir)
        await self._call(self.transport.write_file, remote_dir / SPEC_FILE, data)

    async def _avoid_requirement(self, avoid: tuple[str, ...]) -> str:
        """`Machine =!= "bad"` for each machine to avoid -- unless that leaves the pool no machine at all
        (a one-machine pool, say): then the job goes back to the same machines rather than wait forever."""
        if not avoid or not self.cfg.avoid_bad_nodes:
            return ""
        try:
            machines = await self._call(self.transport.machines)
        except TransportError as exc:
            log.warning("cannot list the pool's machines (%s); resubmitting without avoiding %s", exc, avoid)
            return ""
        if machines and machines <= set(avoid):
            log.warning("every machine of the pool (%s) failed this job as a bad node; resubmitting anyway",
                        ", ".join(sorted(machines)))
            return ""
        return " && ".join(f'(Machine =!= "{m}")' for m in avoid if '"' not in m and "\\" not in m)

    # -- following the event log --------------------------------------------------------------------
    def _start_watch(self) -> None:
        if self._watch_task is None or self._watch_task.done():
            self._watch_task = asyncio.create_task(self._watch(), name=f"condor-watch-{self.run_id}")

    async def _watch(self) -> None:
        delay = self.cfg.poll_interval_s
        while True:
            await asyncio.sleep(delay)
            if not self._jobs:
                continue
            try:
                await self.poll()
                if time.monotonic() - self._last_reconcile >= self.cfg.reconcile_interval_s:
                    await self.reconcile()
                delay = self.cfg.poll_interval_s
            except TransportUnavailable as exc:
                delay = min(max(delay * 2, self.cfg.poll_interval_s), 60.0)
                log.warning("submit host unreachable (%s); trying again in %.0f s", exc, delay)
            except (TransportError, EventLogError) as exc:
                log.error("following the run's jobs failed: %s", exc)
                delay = min(max(delay * 2, self.cfg.poll_interval_s), 60.0)

    async def _sync_log(self) -> None:
        """Over SSH: append the remote log's new bytes to the local copy (never re-reading the whole file)."""
        if not self.remote:
            return
        if not self._copy_fresh:  # a copy left by an earlier process: this one counts its offset from zero
            self.local_log.unlink(missing_ok=True)
            self._copy_fresh = True
        size = await self._call(self.transport.file_size, self.log_path)
        if size is None:
            return
        if size < self._log_offset:  # rotated or truncated behind our back: start again from its beginning
            log.warning("the run's event log %s shrank (%d < %d bytes); reading it again", self.log_path, size,
                        self._log_offset)
            self._reset_follower(truncate_copy=True)
        if size == self._log_offset:
            return
        data = await self._call(self.transport.read_from, self.log_path, self._log_offset)
        if data:
            self.local_log.parent.mkdir(parents=True, exist_ok=True)
            with open(self.local_log, "ab") as fh:
                fh.write(data)
            self._log_offset += len(data)

    def _reset_follower(self, *, truncate_copy: bool = False) -> None:
        if self._follower is not None:
            self._follower.close()
        self._follower = None
        if truncate_copy:
            self.local_log.unlink(missing_ok=True)
            self._log_offset = 0

    async def poll(self) -> None:
        """Read what the log gained and act on every tracked job whose status changed."""
        await self._sync_log()
        if self._follower is None:
            self._follower = EventLogFollower(self.local_log)
        if not self.remote:
            size = self.local_log.stat().st_size if self.local_log.exists() else 0
            if self._follower.events_read and size < self._log_offset:
                log.warning("the run's event log %s shrank; reading it again", self.local_log)
                self._reset_follower()
                self._follower = EventLogFollower(self.local_log)
            self._log_offset = size
        changed = await self._call(self._follower.poll)
        for job_id, status in list(self._unsettled.items()):  # first what an outage interrupted
            if job_id in self._jobs:
                await self._settle(self._jobs[job_id], status)
            else:
                self._unsettled.pop(job_id, None)
        for condor_id, status in changed.items():
            job_id = self._by_condor_id.get(condor_id)
            if job_id is not None and job_id in self._jobs:
                await self._settle(self._jobs[job_id], status)

    async def _settle(self, job: _Job, status: JobStatus) -> None:
        """Act on a status; if the submit host drops out meanwhile, the status is kept and acted on again at
        the next poll (the log reports each change once)."""
        self._unsettled[job.req.job_id] = status
        try:
            await self._on_status(job, status)
        except TransportUnavailable:
            job.last = None  # so that the retry sees the change again
            raise
        self._unsettled.pop(job.req.job_id, None)

    async def _on_status(self, job: _Job, status: JobStatus) -> None:
        previous, job.last = job.last, status
        if status.state == "running":
            if not job.reported_running or (previous is not None and previous.state != "running"):
                job.reported_running = True
                self._emit(job, "running", host=status.host, evictions=status.evictions)
        elif status.state == "idle":  # (idle after a hold: the release was reported when GLO released it)
            if previous is not None and previous.state == "running":
                self.stats_counts["evictions"] += 1
                self._emit(job, "requeued", host=status.host, evictions=status.evictions,
                           error=f"evicted from {status.host or 'its machine'}: back in the queue")
        elif status.state == "held":
            await self._on_hold(job, status)
        elif status.state == "completed":
            await self._on_completed(job, status)
        elif status.state == "removed":
            self._forget(job)
            self._emit(job, "finished", host=status.host,
                       error=f"removed from the queue outside GLO ({status.remove_reason or 'no reason given'})")

    async def _on_hold(self, job: _Job, status: JobStatus) -> None:
        code, sub = status.hold_code, status.hold_subcode
        reason = status.hold_reason or "no reason given"
        self._emit(job, "held", error=reason, hold_code=code, hold_subcode=sub, host=status.host)
        if (code, sub) == MISSING_RESULT_HOLD:
            why = f"the worker left no result file ({reason}){self._stderr_tail(job)}"
            await self._remove(job, "GLO: no result file")
            self._emit(job, "finished", error=why, hold_code=code, hold_subcode=sub, host=status.host)
            return
        if code in self.cfg.release_hold_codes and job.releases < self.cfg.max_releases:
            job.releases += 1
            self.stats_counts["releases"] += 1
            try:
                await self._call(self.transport.act, "release", [job.condor_id], "GLO: transient hold")
            except TransportUnavailable:
                job.releases -= 1
                raise
            except TransportError as exc:
                log.warning("release of %s failed (%s); removing it instead", job.condor_id, exc)
            else:
                log.info("job %s (%s) held with code %s/%s (%s): released (%d of %d)", job.req.job_id,
                         job.condor_id, code, sub, reason, job.releases, self.cfg.max_releases)
                self._emit(job, "released", releases=job.releases)
                return
        why = (f"held: {reason} (code {code}/{sub})" +
               (f"; removed after {job.releases} release(s)" if job.releases else "; removed"))
        await self._remove(job, f"GLO: held with code {code}")
        self._emit(job, "finished", error=why, hold_code=code, hold_subcode=sub, host=status.host,
                   releases=job.releases)

    async def _remove(self, job: _Job, reason: str) -> None:
        """Remove the job from the queue, then stop following it (its abort event is then ignored).  An
        unreachable schedd propagates: the job stays followed and the removal is tried again."""
        if job.condor_id:
            try:
                await self._call(self.transport.act, "remove", [job.condor_id], reason)
                self.stats_counts["removals"] += 1
            except TransportUnavailable:
                raise
            except TransportError as exc:
                log.warning("could not remove %s: %s", job.condor_id, exc)
        self._forget(job)

    def _stderr_tail(self, job: _Job) -> str:
        try:
            text = (job.req.work_dir / STDERR_FILE).read_text(errors="replace").strip()
        except OSError:
            return ""
        return f"; stderr: {text[-800:]}" if text else ""

    async def _fetch(self, job: _Job, name: str) -> bytes | None:
        """A file of the job's directory; over SSH it is copied into the local work dir first."""
        local = job.req.work_dir / name
        if not self.remote:
            return local.read_bytes() if local.exists() else None
        data = await self._call(self.transport.read_file, self._job_dir(job.req) / name)
        if data is not None:
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(data)
        return data

    async def _on_completed(self, job: _Job, status: JobStatus) -> None:
        host = machine_of(status.host)
        base: dict[str, Any] = dict(host=status.host, releases=job.releases, evictions=status.evictions)
        if self.remote:
            await self._fetch(job, STDERR_FILE)
        data = await self._fetch(job, RESULT_FILE)
        results, problem = read_result_file(job.req) if data is not None else ([], None)
        exit_info = read_worker_exit(job.req.result_path) if data is not None else None
        code = status.exit_code if exit_info is None else exit_info[0]
        self._forget(job)  # everything is fetched: from here on nothing needs the submit host
        base.update(exit_code=None if status.exit_signal is not None else code, exit_signal=status.exit_signal)
        if status.exit_signal is not None:
            error = f"worker killed by signal {status.exit_signal} on {host or 'its machine'}"
            self._emit(job, "finished", results=tuple(results), error=error, **base)
            return
        exit_ = classify_exit(code) if code not in (0, None) else None
        if exit_ is not None and exit_.bad_node:
            message = exit_info[1] if exit_info else f"exit {code}"
            self.stats_counts["bad_nodes"] += 1
            self._emit(job, "finished", results=tuple(results), error=f"bad node {host}: {message}",
                       bad_node=host or None, **base)
            return
        if exit_ is not None and exit_.fatal:
            message = exit_info[1] if exit_info else f"exit {code}"
            self._emit(job, "finished", results=tuple(results), error=exit_.error(host, message), fatal=True, **base)
            return
        error: str | None = None
        if exit_ is not None:
            message = exit_info[1] if exit_info else ""
            error = exit_.error(host, message) + ("" if message else self._stderr_tail(job))
        elif problem:
            error = problem
        elif data is None:
            error = f"the worker exited 0 but left no result file{self._stderr_tail(job)}"
        elif len(results) < len(job.req.spec.candidates):
            error = "worker exited 0 but its result file lacks some candidates"
        self._emit(job, "finished", results=tuple(results), error=error, **base)

    # -- reconciliation ------------------------------------------------------------------------------
    async def reconcile(self) -> None:
        """Ask the schedd (one query) which of our jobs are queued; look up in the history any tracked
        job that is neither queued nor finished in the log -- removed behind our back with its log
        lost, or a log that was truncated."""
        self._last_reconcile = time.monotonic()
        if not self._jobs:
            return
        ads = await self._call(self.transport.query, self._constraint(), _AD_ATTRS)
        queued = {f"{a['ClusterId']}.{a['ProcId']}": a for a in ads}
        for job in list(self._jobs.values()):
            if job.condor_id in queued:
                ad = queued[job.condor_id]
                if ad.get("JobStatus") == 5 and (job.last is None or job.last.state != "held"):
                    await self._on_status(job, self._status_from_ad(job.condor_id, ad))
                continue
            if job.condor_id and job.last is not None and job.last.state in ("completed", "removed"):
                continue
            ad = await self._find_in_history(job.req.job_id, job.req.attempt)
            if ad is None:
                if self._jobs.get(job.req.job_id) is job:
                    self._forget(job)
                    self._emit(job, "finished", error="lost: the job is neither in the queue nor in its history")
                continue
            job.condor_id = job.condor_id or f"{ad['ClusterId']}.{ad['ProcId']}"
            await self._on_status(job, self._status_from_ad(job.condor_id, ad))

    async def _find_in_history(self, job_id: int, attempt: int) -> dict[str, Any] | None:
        ads = await self._call(self.transport.history, self._constraint(job_id, attempt), _AD_ATTRS, 1)
        return ads[0] if ads else None

    @staticmethod
    def _status_from_ad(condor_id: str, ad: dict[str, Any]) -> JobStatus:
        state = _JOB_STATUS.get(int(ad.get("JobStatus") or 1), "idle")
        signal = ad.get("ExitSignal") if ad.get("ExitBySignal") else None
        return JobStatus(
            job_id=condor_id, state=state,  # type: ignore[arg-type]
            exit_code=None if signal is not None or ad.get("ExitCode") is None else int(ad["ExitCode"]),
            exit_signal=None if signal is None else int(signal),
            hold_reason=str(ad.get("HoldReason") or ""),
            hold_code=None if ad.get("HoldReasonCode") is None else int(ad["HoldReasonCode"]),
            hold_subcode=None if ad.get("HoldReasonSubCode") is None else int(ad["HoldReasonSubCode"]),
            remove_reason=str(ad.get("RemoveReason") or ""),
            host=str(ad.get("RemoteHost") or ad.get("LastRemoteHost") or ""),
        )

    # -- re-adoption ---------------------------------------------------------------------------------
    async def adopt(self, job: JobRequest) -> bool:
        """Find a job recorded before a restart: in the event log, else in the queue, else in the history
        (by its GLO ids, so one whose cluster id was never recorded is found too).  True: it is ours
        again and will be reported; False: it was never submitted, so submitting it now is safe."""
        if self._follower is None:
            await self.poll()  # read the whole log once: every status it holds
        assert self._follower is not None
        condor_id = job.backend_job_id if job.backend_job_id and "." in job.backend_job_id else None
        status = self._follower.statuses.get(condor_id) if condor_id else None
        if status is None:
            ads = await self._call(self.transport.query, self._constraint(job.job_id, job.attempt), _AD_ATTRS)
            ad = ads[0] if ads else await self._find_in_history(job.job_id, job.attempt)
            if ad is None:
                return False
            condor_id = f"{ad['ClusterId']}.{ad['ProcId']}"
            status = self._follower.statuses.get(condor_id) or self._status_from_ad(condor_id, ad)
        tracked = self._track(replace(job, backend_job_id=condor_id), condor_id)
        self._start_watch()
        await self._on_status(tracked, status)  # an idle job reports nothing; a finished one reports now
        return True

    # -- cancel / shutdown -----------------------------------------------------------------------------
    async def cancel(self, job_id: int) -> None:
        job = self._jobs.get(job_id)
        if job is not None:
            await self._remove(job, "GLO: cancelled")

    async def cancel_run(self) -> int:
        """Remove every job of the run from the queue (`glo cancel`)."""
        n = await self._call(self.transport.remove_matching, self._constraint(), "GLO: run cancelled")
        for job in list(self._jobs.values()):
            self._forget(job)
        return n

    async def shutdown(self, *, cancel_jobs: bool) -> None:
        """Stop following; the jobs keep running in the pool unless `cancel_jobs` (a cancelled run)."""
        if self._watch_task is not None:
            self._watch_task.cancel()
            try:
                await self._watch_task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
            self._watch_task = None
        if cancel_jobs:
            try:
                await self.cancel_run()
            except TransportError as exc:
                log.error("could not remove the run's jobs: %s (remove them with: condor_rm -constraint "
                          "'GloRunId == \"%s\"')", exc, self.run_id)
        if self._follower is not None:
            self._follower.close()
            self._follower = None
        await self._call(self.transport.close)
        log.info("%s backend: %s", self.name, json.dumps(self.stats()))

    def stats(self) -> dict[str, Any]:
        """What this backend did: jobs, clusters, releases, removals, and every transport operation."""
        minutes = max((time.monotonic() - self._started) / 60.0, 1e-9)
        counts = dict(self.transport.counts)
        return {"backend": self.name, "seconds": round(minutes * 60.0, 1), **dict(self.stats_counts),
                "transport": counts, "schedd_queries_per_minute": round(counts.get("query", 0) / minutes, 3)}
