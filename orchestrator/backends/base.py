"""The backend protocol: how the scheduler hands jobs to a place that runs workers.

A job is one worker invocation: a spec file in (one or more candidates), a result file out.
The scheduler owns all state and the database; a backend only starts, watches, re-adopts and
cancels jobs, and reports what happened as `JobEvent`s on the queue it was given:

* `running`  -- the job started executing (optional; condor: idle -> running);
* `held`     -- the cluster held it (reason in `error`); the scheduler records it;
* `finished` -- the job is over: `results` holds whatever the result file had (possibly only
  some of the candidates), `error` says why it ended badly (crash, timeout, corrupt result
  file, lost).  The scheduler stores results, then retries the rest (bounded) or gives up;
  with `fatal` (the worker said bad spec / missing data) it stores results and stops the run.

An HTCondor backend (python bindings or over SSH, see orchestrator.procs for commands) fits by
implementing the same five methods: submit writes spec.json to the job's work dir and submits,
a poll task turns queue/history states into events, adopt looks a job up by its backend id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from worker.spec import CandidateResult, WorkerSpec


@dataclass(frozen=True)
class JobRequest:
    """One attempt of one job: everything a backend needs, nothing from the database."""

    job_id: int
    attempt: int
    spec: WorkerSpec
    work_dir: Path  # spec.json, result.json, stdout, stderr live here
    backend_job_id: str | None = None  # set when re-adopting

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
    kind: str  # running | held | finished
    results: tuple[CandidateResult, ...] = ()
    error: str | None = None
    backend_job_id: str | None = None
    extra: dict[str, float] = field(default_factory=dict)
    fatal: bool = False  # retrying cannot help (bad spec, missing data): the run stops with `error`


class Backend(Protocol):
    name: str

    async def submit(self, job: JobRequest) -> str:
        """Start the job; returns the backend's id for it (stored before any result arrives)."""

    async def adopt(self, job: JobRequest) -> bool:
        """After a restart: take over a job recorded as submitted/running.  True when the
        backend will report it (it is still running, or its result file is there); False when
        it is gone and the scheduler must resubmit."""

    async def cancel(self, job_id: int) -> None:
        """Stop one job; no event is reported for it afterwards."""

    async def shutdown(self, *, cancel_jobs: bool) -> None:
        """The scheduler is stopping.  Local processes die with it; cluster jobs may keep
        running (cancel_jobs=False) and be re-adopted on resume."""

    def in_flight(self) -> int:
        """Jobs submitted and not yet reported finished."""
