"""Backup copies (`backend.backup_copies`, speculative execution): a job out far longer than the run's median
gets a copy on a slot the search leaves free; the first copy to finish wins and the other is removed.

A real `glo run` on the local backend with the fake worker, one job made slow by where it runs
($GLO_FAKE_WORKER_PLACES: a slow node), against the same run with no slow job and no copies: the copies must
change nothing the search sees (same final population), only which job delivered."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from db.session import open_db
from db.snapshots import JobRow
from orchestrator.config import load_config
from orchestrator.run.scheduler import Scheduler
from tests.orch_helpers import finished_summary, glo, glo_env, write_config

SLOW_S = 30.0  # the slow node's time per candidate: a run that waited for it would take this long


def _config(path: Path, copies: int) -> Path:
    return write_config(path, seed=3, population=6, generations=2, per_job=1, in_flight=6, cma_iterations=1,
                        extra=f"backup_copies = {copies}")


def _run(tmp: Path, name: str, copies: int, places: str = "") -> tuple[Path, dict]:
    db = tmp / f"{name}.db"
    env = glo_env(log=tmp / f"{name}.log", sleep=0.2)
    env["GLO_FAKE_WORKER_PLACES"] = places
    r = glo("run", str(_config(tmp / f"{name}.toml", copies)), "--db", str(db), "--run-id", name, env=env,
            timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return db, finished_summary(db, name)


def _rows(db: Path, sql: str, *args: object) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def _uids(db: Path, job_id: int) -> list[str]:
    return [u for (u,) in _rows(db, "SELECT candidate_uid FROM job_candidates WHERE job_id = ? "
                                    "ORDER BY candidate_uid", job_id)]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, int]:
    """The run with no slow node and no copies: its summary, and how many jobs its generation 0 made (the
    first copy of the other runs is the job after those)."""
    tmp = tmp_path_factory.mktemp("baseline")
    db, summary = _run(tmp, "base", 0)
    assert "backups" not in summary
    assert _rows(db, "SELECT count(*) FROM jobs j JOIN job_attempts a ON a.job_id = j.id "
                     "WHERE a.attempt > 1 OR a.outcome != 'done'") == [(0,)]
    gen0 = _rows(db, "SELECT count(DISTINCT jc.job_id) FROM job_candidates jc JOIN candidates c "
                     "ON c.uid = jc.candidate_uid WHERE c.generation = 0 AND c.phase = 'discovery'")[0][0]
    assert gen0 >= 2
    return summary, gen0


def _same_search(a: dict, b: dict) -> None:
    for key in ("best", "top_trees", "population", "history"):
        assert a[key] == b[key], key


def test_a_copy_of_a_job_stuck_on_a_slow_node_wins_and_the_slow_one_is_removed(tmp_path: Path, baseline) -> None:
    base, gen0 = baseline
    db, summary = _run(tmp_path, "copy", 1, places=f"job-2/a1={SLOW_S}")
    _same_search(summary, base)  # the copy changes which job delivered, nothing the search saw
    copy = gen0 + 1
    assert _uids(db, copy) == _uids(db, 2)  # the first copy is of the slow job
    (slow,) = _rows(db, "SELECT outcome, error, ended_at - submitted_at FROM job_attempts WHERE job_id = 2")
    assert slow[0] == "superseded" and slow[1] == f"superseded: job {copy} trained its candidates first"
    assert slow[2] < SLOW_S  # removed, not waited for
    assert _rows(db, "SELECT outcome FROM job_attempts WHERE job_id = ?", copy) == [("done",)]
    assert _rows(db, "SELECT state FROM jobs WHERE id IN (2, ?) ORDER BY id", copy) == [("done",), ("done",)]
    # trained once as far as the results go: one evaluation stored, one worker finished it, two started it
    (cand,) = _uids(db, 2)
    infix = _rows(db, "SELECT infix FROM candidates WHERE uid = ?", cand)[0][0]
    log = (tmp_path / "copy.log").read_text().splitlines()
    assert log.count(f"start {cand.split('/', 1)[1]} {infix}") == 2
    assert log.count(f"done {cand.split('/', 1)[1]} {infix}") == 1
    assert _rows(db, "SELECT status FROM candidates WHERE uid = ?", cand) == [("evaluated",)]
    assert summary["backups"]["submitted"] >= 1 and summary["backups"]["won"] >= 1
    assert summary["backups"]["superseded"] >= 1


def test_a_copy_that_crashes_ends_alone_while_the_job_it_copies_goes_on(tmp_path: Path, baseline) -> None:
    base, gen0 = baseline
    copy = gen0 + 1
    db, summary = _run(tmp_path, "crash", 1, places=f"job-2/a1=8;job-{copy}/a1=crash")
    _same_search(summary, base)
    assert _uids(db, copy) == _uids(db, 2)
    state, attempts, error = _rows(db, "SELECT state, attempts, last_error FROM jobs WHERE id = ?", copy)[0]
    assert state == "failed" and attempts == 1  # not retried: the job it copies still trained the candidate
    assert "(exit 70)" in error and "job 2 still trains its candidates" in error
    (cand,) = _uids(db, 2)
    assert _rows(db, "SELECT status FROM candidates WHERE uid = ?", cand) == [("evaluated",)]
    assert summary["best"] is not None


def _job(job_id: int, uids: tuple[str, ...], submitted_at: float, state: str = "running") -> JobRow:
    return JobRow(job_id, "r", "local", f"local:{job_id}", state, 1, "", "", "", uids, submitted_at,
                  submitted_at, None)


def test_the_backup_plan_copies_the_longest_running_first_and_only_on_free_slots(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path / "c.toml", 2))
    database = open_db(tmp_path / "plan.db", create=True)
    try:
        sched = Scheduler.create(database, cfg, run_id="r")
        now = time.time()
        for uid in ("r/a", "r/b", "r/c", "r/d"):
            sched.outstanding[uid] = SimpleNamespace(status="pending")  # type: ignore[assignment]
        # jobs out for 100, 50, 30 and 1 s; the median finished job took 10 s: due after 15 s
        for jid, uid, age in ((1, "r/a", 100.0), (2, "r/b", 50.0), (3, "r/c", 30.0), (4, "r/d", 1.0)):
            sched.jobs[jid] = _job(jid, (uid,), now - age)
            sched.running.add(jid)
        assert sched.backup_plan(now) == []  # no job has finished yet: nothing says what "long" is
        sched.durations.extend([9.0, 10.0, 11.0])
        # 6 slots, 4 in flight: the two oldest get one copy each
        assert sched.backup_plan(now) == [("r/a",), ("r/b",)]
        sched.config = cfg.__class__(**{**cfg.__dict__, "backend": cfg.backend.__class__(
            **{**cfg.backend.__dict__, "max_in_flight": 12})})
        # 8 free: each of the three due jobs one copy, then a second each (2 copies at most); job 4 is not due
        assert sched.backup_plan(now) == [("r/a",), ("r/b",), ("r/c",), ("r/a",), ("r/b",), ("r/c",)]
        sched.jobs[5] = _job(5, ("r/a",), now - 2.0)  # job 1 has a copy already: one more at most
        sched.running.add(5)
        assert sched.backup_plan(now) == [("r/a",), ("r/b",), ("r/c",), ("r/b",), ("r/c",)]
        sched.outstanding["r/b"] = SimpleNamespace(status="evaluated")  # type: ignore[assignment]
        assert ("r/b",) not in sched.backup_plan(now)  # settled: nothing to copy
        sched.outstanding["r/e"] = SimpleNamespace(status="pending")  # type: ignore[assignment]
        sched.jobs[6] = _job(6, ("r/e",), now - 500.0, state="submitted")
        sched.running.add(6)
        assert ("r/e",) not in sched.backup_plan(now)  # still in the cluster's queue: a copy would queue too
        sched.ready.append(99)
        assert sched.backup_plan(now) == []  # a job waits for a slot: it goes first
    finally:
        database.dispose()
