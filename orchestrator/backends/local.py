"""The embedded default backend: worker processes on this machine, spec file in, result file out.

Exactly what a cluster job does, so the worker cannot tell the difference: the backend writes
`spec.json` into the job's work dir, runs the configured worker command there
(`{python} -m worker spec.json --out result.json`), and reads `result.json` when it exits.
Workers get SIGKILL if the scheduler dies (PR_SET_PDEATHSIG), so after a crash a job either
left a result file (picked up by `adopt`) or must be rerun -- never both.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from orchestrator.backends.base import JobEvent, JobRequest, classify_exit, read_result_file
from orchestrator.config import BackendConfig
from orchestrator.procs import CommandError, run_async
from worker.cores import usable_cores


def _worker_message(text: str) -> str:
    """The worker's own lines (from its first `glo-worker:` line on), without TensorFlow's noise."""
    text = text.strip()
    at = text.find("glo-worker:")
    return (text[at:] if at >= 0 else text)[-1500:]


#: TensorFlow's thread-pool sizes, read by the worker's TensorFlow at start-up.
THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def worker_environment(workers: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a local worker: this machine's cores shared among the `workers` that run at once.

    Why: each TensorFlow process sizes its thread pools to every core, so two workers on two cores run
    four busy threads that preempt each other; one thread each trains the paper's MNIST network ~8 %
    faster here (13.6 -> 14.6 steps/s per worker, two at once).  The backend counts the jobs it has at a
    job's start (up to max_in_flight), not max_in_flight itself: a job alone keeps every core (sizing by
    max_in_flight slowed a lone job's training, e.g. one custom-task test 77.6 -> 88.7 s).  What the user
    set is kept."""
    env = dict(os.environ if base is None else base)
    for name in THREAD_VARIABLES:
        env.setdefault(name, str(max(1, usable_cores() // max(1, workers))))
    return env


class LocalBackend:
    name = "local"

    def __init__(self, config: BackendConfig, events: asyncio.Queue[JobEvent], work_root: Path) -> None:
        self.config = config
        self.events = events
        self.work_root = work_root
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(config.max_in_flight)
        self._submitted = 0

    def command(self, job: JobRequest) -> list[str]:
        argv = [sys.executable if part == "{python}" else part for part in self.config.worker_command]
        return argv + [str(job.spec_path), "--out", str(job.result_path)]

    async def submit(self, job: JobRequest) -> str:
        job.work_dir.mkdir(parents=True, exist_ok=True)
        for stale in (job.result_path,):
            if stale.exists():
                stale.unlink()
        tmp = job.spec_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(job.spec.to_json(), indent=1))
        os.replace(tmp, job.spec_path)
        backend_id = f"local:{job.work_dir}"
        self._submitted += 1
        self._tasks[job.job_id] = asyncio.create_task(self._run(job, backend_id), name=f"job-{job.job_id}")
        return backend_id

    async def _run(self, job: JobRequest, backend_id: str) -> None:
        async with self._slots:
            started = asyncio.Event()
            t0 = time.monotonic()
            error: str | None = None
            fatal = False
            runner = asyncio.create_task(run_async(
                self.command(job), cwd=job.work_dir, timeout=self.config.timeout_s,
                # the jobs this backend has now (running or waiting for a slot; this one included) share the cores
                env=worker_environment(min(self.config.max_in_flight, len(self._tasks))),
                stdout_path=job.work_dir / "stdout", stderr_path=job.work_dir / "stderr", started=started,
            ))
            await asyncio.wait([runner, asyncio.create_task(started.wait())], return_when=asyncio.FIRST_COMPLETED)
            if started.is_set():
                self.events.put_nowait(JobEvent(job.job_id, job.attempt, "running", backend_job_id=backend_id))
            exit_code: int | None = 0
            try:
                await runner
            except CommandError as exc:
                exit_code = None if exc.timed_out else exc.returncode
                if exc.timed_out:
                    error = f"worker timed out after {self.config.timeout_s:g} s"
                else:  # a bad node here is this machine: the retry runs here again, and says so again
                    exit_ = classify_exit(exc.returncode or 0)
                    fatal = exit_.fatal
                    error = exit_.error("", _worker_message(exc.stderr or exc.stdout))
            results, problem = read_result_file(job)
            if problem:
                error = f"{error}; {problem}" if error else problem
            elif error is None and len(results) < len(job.spec.candidates):
                error = "worker exited 0 but its result file lacks some candidates"
            self._tasks.pop(job.job_id, None)
            self.events.put_nowait(JobEvent(job.job_id, job.attempt, "finished", tuple(results), error, backend_id,
                                            {"seconds": time.monotonic() - t0}, fatal, exit_code=exit_code))

    async def adopt(self, job: JobRequest) -> bool:
        """Our processes died with the previous scheduler: pick up whatever result file they
        left (all or part of the candidates); with nothing there the job must be rerun."""
        results, problem = read_result_file(job)
        if not results:
            return False
        missing = len(job.spec.candidates) - len(results)
        error = None if missing == 0 else f"interrupted: {missing} candidate(s) left unfinished by the previous run"
        if problem:
            error = problem
        self.events.put_nowait(JobEvent(job.job_id, job.attempt, "finished", tuple(results), error,
                                        job.backend_job_id))
        return True

    async def cancel(self, job_id: int) -> None:
        task = self._tasks.pop(job_id, None)
        if task is not None:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass

    async def shutdown(self, *, cancel_jobs: bool = True) -> None:
        for job_id in list(self._tasks):
            await self.cancel(job_id)

    async def submit_many(self, jobs: list[JobRequest]) -> list[str]:
        return [await self.submit(job) for job in jobs]

    def stats(self) -> dict[str, Any]:
        return {"backend": self.name, "jobs": self._submitted}
