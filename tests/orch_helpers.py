"""Shared helpers for the orchestrator tests: a config using the fake worker, a `glo` runner."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FAKE_WORKER = REPO / "tests" / "fake_worker.py"
GLO_MAIN = "import sys; from orchestrator.cli import main; sys.argv[0] = 'glo'; main()"


def write_config(path: Path, *, seed: int = 1, population: int = 16, generations: int = 3, elites: int = 2,
                 cma_iterations: int = 3, per_job: int = 2, in_flight: int = 2, max_attempts: int = 3,
                 timeout_s: float = 60.0, extra: str = "") -> Path:
    path.write_text(f"""
[run]
name = "test"
seed = {seed}

[task]
steps = 10

[search.ga]
population_size = {population}
generations = {generations}
elites = {elites}
init_max_depth = 3

[search.cma]
top_k = 1
iterations = {cma_iterations}
popsize = 4

[backend]
max_in_flight = {in_flight}
candidates_per_job = {per_job}
timeout_s = {timeout_s}
max_attempts = {max_attempts}
worker_command = ["{sys.executable}", "{FAKE_WORKER}"]
{extra}
""")
    return path


def glo_env(log: Path | None = None, sleep: float = 0.0, fail: str = "", corrupt: str = "") -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    if log is not None:
        env["GLO_FAKE_WORKER_LOG"] = str(log)
    env["GLO_FAKE_WORKER_SLEEP"] = str(sleep)
    env["GLO_FAKE_WORKER_FAIL"] = fail
    env["GLO_FAKE_WORKER_CORRUPT"] = corrupt
    env.pop("GLO_DB", None)
    return env


def glo(*args: str, env: dict[str, str] | None = None, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", GLO_MAIN, *args], capture_output=True, text=True,
                          env=env or glo_env(), timeout=timeout, cwd=REPO)


def glo_popen(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", GLO_MAIN, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


def finished_summary(db: Path, run_id: str) -> dict:
    """The summary a finished run stored (its best, top trees, population, history, backend, ...); the run
    must have finished."""
    con = sqlite3.connect(db)
    try:
        status, text = con.execute("select status, summary_json from runs where id = ?", (run_id,)).fetchone()
    finally:
        con.close()
    assert status == "finished", status
    return json.loads(text)


def scalar(db: Path, sql: str) -> int:
    """One number from the database through plain sqlite3 (what a user would do)."""
    if not db.exists():
        return 0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def stored_search_state(db: Path, run_id: str) -> dict | None:
    """The search state a resume would start from: the last whole state with the log entries stored after it
    replayed (orchestrator.run.searchlog), exported; None before the first save."""
    from db.session import open_db
    from db.store import Store
    from orchestrator.config import from_stored
    from orchestrator.run.scheduler import Scheduler

    database = open_db(db)
    try:
        store = Store(database)
        if store.load_search_state(run_id) is None:
            return None
        sched = Scheduler(database, run_id, from_stored(store.get_run(run_id).config))
        screen = sched._screen()
        if screen is not None:  # the filter's verdicts are a fixed function of the tree: kept across calls, so
            task = sched.config.task  # (a test calling this per commit stays quick); per filter setting:
            memo = _SCREEN_MEMO.setdefault(repr((task.epsilon, task.class_reduction, task.epsilon_gradient)), {})

            def remembered(tree, _screen=screen, _memo=memo):  # type: ignore[no-untyped-def]
                if tree not in _memo:
                    _memo[tree] = _screen(tree)
                return _memo[tree]

            sched._screen = lambda: remembered  # type: ignore[method-assign]
        return sched.load_search().export_state()
    finally:
        database.dispose()


_SCREEN_MEMO: dict[str, dict] = {}


def load_generated(tmp_path: Path, name: str, code: str):  # type: ignore[no-untyped-def]
    """Import generated Python (`glo export`'s output) from a file, as a user who pastes it would."""
    import importlib.util

    path = tmp_path / f"{name}.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
