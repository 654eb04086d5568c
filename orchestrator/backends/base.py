"""The backend protocol: how the scheduler hands jobs to a place that runs workers.

A job is one worker invocation: a spec file in (one or more candidates), a result file out.
The scheduler owns all state and the database; a backend only starts, watches, re-adopts and
cancels jobs, and reports what happened as `JobEvent`s on the queue it was given:

* `running`  -- the job started executing (optional; condor: idle -> running; `host` says where);
* `requeued` -- the cluster put it back in its queue (evicted, the node was lost): it will run again;
* `held`     -- the cluster held it (reason in `error`, codes in `hold_code`/`hold_subcode`);
* `released` -- a hold was released (by the backend's policy): it is waiting to run again;
* `finished` -- the job is over: `results` holds whatever the result file had (possibly only
  some of the candidates), `error` says why it ended badly (crash, timeout, corrupt result
  file, lost).  The scheduler stores results, then retries the rest (bounded) or gives up;
  with `fatal` (the worker said bad spec / missing data) it stores results and stops the run.

The HTCondor backends (orchestrator.backends.htcondor.core, reached through the bindings or over SSH)
implement the same methods, plus `submit_many` (one cluster for many jobs) and `stats`.

`BackendUnavailable` from submit means the place is unreachable and the submission may or may
not have happened: the scheduler keeps the jobs and asks `adopt` later, which looks them up
before anything is submitted again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from orchestrator.errors import BackendError  # noqa: F401  (the contract's error; defined with the others)
from worker.spec import EXIT_BAD_NODE, EXIT_MEANINGS, FATAL_EXITS, CandidateResult, WorkerSpec, read_results


@dataclass(frozen=True)
class JobRequest:
    """One attempt of one job: everything a backend needs, nothing from the database."""

    job_id: int
    attempt: int
    spec: WorkerSpec
    work_dir: Path  # spec.json, result.json, stdout, stderr live here
    backend_job_id: str | None = None  # set when re-adopting
    avoid_hosts: tuple[str, ...] = ()  # machines this job failed on as a bad node (cluster backends)
    releases: int = 0  # holds already released by the policy (kept across restarts)

    @property
    def spec_path(self) -> Path:
        return self.work_dir / "spec.json"

    @property
    def result_path(self) -> Path:
        return self.work_dir / "result.json"


@dataclass(frozen=True)
class JobEvent:
    job_id: int
    attempt: int
    kind: str  # running | requeued | held | released | finished
    results: tuple[CandidateResult, ...] = ()
    error: str | None = None
    backend_job_id: str | None = None
    extra: dict[str, float] = field(default_factory=dict)
    fatal: bool = False  # retrying cannot help (bad spec, missing data): the run stops with `error`
    host: str = ""  # the machine it ran on (cluster backends)
    hold_code: int | None = None
    hold_subcode: int | None = None
    bad_node: str | None = None  # the job failed because of this machine: avoid it on the retry
    releases: int | None = None  # holds released so far
    evictions: int | None = None  # times the cluster requeued it
    exit_code: int | None = None  # how the worker exited (finished), as far as the backend knows
    exit_signal: int | None = None  # the signal that killed it (cluster backends)


def read_result_file(job: JobRequest) -> tuple[list[CandidateResult], str | None]:
    """(results of this job's candidates, problem), for every backend: a missing file is no results; a corrupt
    one, or one written for another spec, is the problem, never silently trusted."""
    if not job.result_path.exists():
        return [], None
    try:
        spec_hash, results = read_results(job.result_path)
    except ValueError as exc:
        return [], f"corrupt result file: {exc}"
    if spec_hash != job.spec.spec_hash():
        return [], f"result file {job.result_path} belongs to another spec (spec_hash mismatch)"
    wanted = {c.id for c in job.spec.candidates}
    return [r for r in results if r.candidate_id in wanted], None


@dataclass(frozen=True)
class WorkerExit:
    """What a worker's non-zero exit means for its job (`classify_exit`)."""

    code: int
    meaning: str  # "bad spec", "missing data", "internal error", "bad node" or "crashed"
    fatal: bool  # retrying cannot help: the run stops
    bad_node: bool  # the machine cannot train: retry elsewhere

    def error(self, where: str, message: str) -> str:
        """The job's error line: '... (exit N) on HOST: the worker's message'."""
        at = f" on {where}" if where else ""
        return f"worker {self.meaning} (exit {self.code}){at}" + (f": {message}" if message else "")


def classify_exit(code: int) -> WorkerExit:
    """One reading of the worker's exit codes (worker.spec) for every backend."""
    return WorkerExit(code, EXIT_MEANINGS.get(code, "crashed"), code in FATAL_EXITS, code == EXIT_BAD_NODE)




class BackendUnavailable(BackendError):
    """The cluster could not be reached; nothing may have happened, so try again later."""


class Backend(Protocol):
    """Everything the scheduler calls on a backend (it probes for nothing else)."""

    name: str

    async def submit(self, job: JobRequest) -> str:
        """Start the job; returns the backend's id for it (stored before any result arrives)."""

    async def submit_many(self, jobs: list[JobRequest]) -> list[str]:
        """Start several jobs at once (a cluster backend makes them one cluster); their ids, in order."""

    async def adopt(self, job: JobRequest) -> bool:
        """After a restart: take over a job recorded as submitted/running.  True when the
        backend will report it (it is still running, or its result file is there); False when
        it is gone and the scheduler must resubmit."""

    async def cancel(self, job_id: int) -> None:
        """Stop one job; no event is reported for it afterwards."""

    async def shutdown(self, *, cancel_jobs: bool) -> None:
        """The scheduler is stopping.  Local processes die with it; cluster jobs may keep
        running (cancel_jobs=False) and be re-adopted on resume."""

    def stats(self) -> dict[str, Any]:
        """What this backend did, for the run's summary (at least {"backend": name})."""
