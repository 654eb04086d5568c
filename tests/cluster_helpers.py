"""What the cluster backend tests share: a small search's config, polling, and checks on the result."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.condor_pool import Pool


def condor_config(path: Path, pool: Pool, work: Path, *, python: str | None = None, seed: int = 1,
                  population: int = 8, generations: int = 1, cma_iterations: int = 1, per_job: int = 2,
                  sleep: float = 0.0, task: str = "steps = 10", env: dict[str, str] | None = None,
                  condor: dict[str, Any] | None = None, worker: list[str] | None = None, kind: str = "condor",
                  ssh: dict[str, Any] | None = None, local_work: Path | None = None) -> Path:
    """A small search on the pool: the fake worker (unless `worker`), its log and faults set through the
    jobs' environment, every job file under `work` (a directory the job user can write).  With
    kind = "ssh", `work` is the remote_dir on the submit host and `local_work` the laptop's work_dir."""
    python = python or pool.job_python()
    worker = worker or [python, str(pool.code_dir / "tests" / "fake_worker.py")]
    job_env = {**pool.job_env(), "GLO_FAKE_WORKER_LOG": str(work / "trainings.log"),
               "GLO_FAKE_WORKER_SLEEP": str(sleep), "GLO_FAKE_WORKER_ONCE_DIR": str(work), **(env or {})}
    env_lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in job_env.items())
    settings = {"request_gpus": 0, "request_memory": "256MB", "request_disk": "20MB", "poll_interval_s": 0.5,
                **(condor or {})}
    condor_lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in settings.items())
    ssh_lines = "" if ssh is None else "[backend.ssh]\n" + "\n".join(
        f"{k} = {json.dumps(v)}" for k, v in {"remote_dir": str(work), **ssh}.items())
    path.write_text(f"""
[run]
name = "condor-test"
seed = {seed}

[task]
{task}

[search.ga]
population_size = {population}
generations = {generations}
elites = 2
init_max_depth = 3

[search.cma]
top_k = 1
iterations = {cma_iterations}
popsize = 4

[backend]
kind = "{kind}"
candidates_per_job = {per_job}
max_attempts = 3
worker_command = {json.dumps(worker)}
work_dir = "{local_work or work}"

[backend.condor]
{condor_lines}

[backend.condor.environment]
{env_lines}

{ssh_lines}
""")
    return path


def wait_for(what: str, check: Callable[[], Any], proc: subprocess.Popen[str] | None = None,
             timeout: float = 180.0) -> Any:
    """Poll `check` until it returns something truthy; fail (with the run's output) after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"glo run ended (exit {proc.returncode}) while waiting for {what}:\n{err[-3000:]}")
        time.sleep(0.3)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows through plain sqlite3, read-only; none while the run has not created its tables yet."""
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def count(db: Path, sql: str, *args: Any) -> int:
    got = rows(db, sql, *args)
    return int(got[0][0]) if got else 0


def trainings(work: Path) -> Counter[str]:
    """How often the fake worker finished each candidate (across every job of the run)."""
    log = work / "trainings.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return Counter(line.split()[1] for line in lines if line.startswith("done "))


def finish(proc: subprocess.Popen[str], timeout: float = 300.0) -> str:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"glo run did not finish in {timeout:.0f} s:\n{err[-3000:]}")
    assert proc.returncode == 0, err[-4000:]
    return err


def assert_complete(db: Path, run_id: str, work: Path) -> dict[str, Any]:
    """The run finished, every candidate was settled, none failed, and no candidate was trained twice."""
    assert rows(db, "select status from runs where id = ?", run_id) == [("finished",)]
    statuses = dict(rows(db, "select status, count(*) from candidates where run_id = ? group by status", run_id))
    assert statuses.get("pending", 0) == 0 and statuses.get("failed", 0) == 0, statuses
    done = trainings(work)
    assert done and max(done.values()) == 1, f"trained twice: {[c for c, n in done.items() if n > 1]}"
    evaluated = rows(db, "select count(*) from candidates where run_id = ? and status = 'evaluated'", run_id)[0][0]
    assert evaluated == len(done)
    summary = json.loads(rows(db, "select summary_json from runs where id = ?", run_id)[0][0])
    return summary


def condor(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{' '.join(args)}: {done.stdout} {done.stderr}"
    return done


def running_job(db: Path, run_id: str, proc: subprocess.Popen[str]) -> tuple[int, str]:
    """(GLO job id, HTCondor id) of a job that is running now."""
    got = wait_for("a running job", lambda: rows(
        db, "select id, backend_job_id from jobs where run_id = ? and state = 'running' order by id", run_id), proc)
    return got[0]


def mnist_like(path: Path, n: int = 400, n_train: int = 300) -> None:
    """Learnable MNIST-shaped data (class c has a bright band at rows 2c..2c+5), readable by the job user."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, n).astype(np.uint8)
    x = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for i, c in enumerate(y):
        x[i, 2 * c:2 * c + 6, 4:24] = 250
    np.savez(path, x_train=x[:n_train], y_train=y[:n_train], x_test=x[n_train:], y_test=y[n_train:])
    path.chmod(0o644)
