"""Acceptance: kill -9 of `glo run` at 5 different moments, then resume.

Each time: no stored evaluation is lost, none is trained twice (the fake worker logs every
finished training), the run finishes, and the final population/history/best equal those of an
uninterrupted run with the same seed.
"""

from __future__ import annotations

import collections
import signal
import time
from pathlib import Path

import pytest

from tests.orch_helpers import finished_summary, glo, glo_env, glo_popen, scalar, write_config

SLEEP = 0.03
KILL_AFTER = [0, 2, 5, 9, 14]  # evaluations stored when the kill lands (0: first jobs recorded)


def summary(db: Path, run_id: str) -> dict:
    data = finished_summary(db, run_id)
    return {k: data[k] for k in ("population", "history", "best", "top_trees")}


def done_counts(log: Path) -> collections.Counter:
    if not log.exists():
        return collections.Counter()
    return collections.Counter(line.split()[1] for line in log.read_text().splitlines() if line.startswith("done "))


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, int]:
    tmp = tmp_path_factory.mktemp("baseline")
    cfg = write_config(tmp / "c.toml")
    log = tmp / "worker.log"
    r = glo("run", str(cfg), "--db", str(tmp / "b.db"), "--run-id", "base", env=glo_env(log, SLEEP))
    assert r.returncode == 0, r.stderr
    trained = scalar(tmp / "b.db", "select count(*) from evaluations")
    assert trained >= 15, "the test needs enough trainings to kill in between"
    assert max(done_counts(log).values()) == 1
    return summary(tmp / "b.db", "base"), trained


@pytest.mark.parametrize("kill_after", KILL_AFTER)
def test_kill9_then_resume(tmp_path: Path, baseline: tuple[dict, int], kill_after: int) -> None:
    expected, expected_trained = baseline
    cfg = write_config(tmp_path / "c.toml")
    db = tmp_path / "k.db"
    log = tmp_path / "worker.log"
    env = glo_env(log, SLEEP)
    proc = glo_popen("run", str(cfg), "--db", str(db), "--run-id", "killed", env=env)
    deadline = time.monotonic() + 60
    def reached() -> bool:
        if kill_after == 0:  # candidates and jobs recorded, nothing trained yet
            return scalar(db, "select count(*) from jobs") > 0
        return scalar(db, "select count(*) from evaluations") >= kill_after

    while not reached():
        assert proc.poll() is None, "run finished before the kill point"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stored_before = scalar(db, "select count(*) from evaluations")

    r = glo("run", "--resume", "killed", "--db", str(db), env=env)
    assert r.returncode == 0, r.stderr

    stored_after = scalar(db, "select count(*) from evaluations")
    assert stored_after >= stored_before  # nothing stored was lost
    assert stored_after == expected_trained, r.stderr[-3000:]  # same trainings as the uninterrupted run
    counts = done_counts(log)
    assert not [k for k, n in counts.items() if n > 1], f"trained twice: {counts}"
    assert sum(counts.values()) <= stored_after
    got = summary(db, "killed")
    for key in expected:
        assert got[key] == expected[key], (key, got[key], expected[key], r.stderr[-2000:])
    adopted = r.stderr.count("re-adopted from the backend")
    print(f"kill after {kill_after}: {stored_before} stored at the kill, {stored_after} at the end, "
          f"{adopted} job(s) picked up from result files, {sum(counts.values())} trainings in all")


def test_sigterm_stops_cleanly_then_resume(tmp_path: Path, baseline: tuple[dict, int]) -> None:
    expected, expected_trained = baseline
    cfg = write_config(tmp_path / "c.toml")
    db = tmp_path / "t.db"
    env = glo_env(tmp_path / "worker.log", SLEEP)
    proc = glo_popen("run", str(cfg), "--db", str(db), "--run-id", "term", env=env)
    while scalar(db, "select count(*) from evaluations") < 6:
        assert proc.poll() is None
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    out, _err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "glo run --resume term" in out
    assert scalar(db, "select count(*) from runs where status = 'stopped'") == 1
    r = glo("run", "--resume", "term", "--db", str(db), env=env)
    assert r.returncode == 0, r.stderr
    assert scalar(db, "select count(*) from evaluations") == expected_trained
    assert not [k for k, n in done_counts(tmp_path / "worker.log").items() if n > 1]
    assert summary(db, "term") == expected


def test_cancel_a_running_run(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml")
    db = tmp_path / "c.db"
    proc = glo_popen("run", str(cfg), "--db", str(db), "--run-id", "cx", env=glo_env(sleep=SLEEP))
    while scalar(db, "select count(*) from evaluations") < 3:
        assert proc.poll() is None
        time.sleep(0.005)
    r = glo("cancel", "cx", "--db", str(db))
    assert r.returncode == 0, r.stderr
    proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert scalar(db, "select count(*) from runs where status = 'cancelled'") == 1
    r = glo("run", "--resume", "cx", "--db", str(db))
    assert r.returncode == 3 and "cancelled" in r.stderr
