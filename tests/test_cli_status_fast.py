"""`glo status` reads with sqlite3 alone (db/fastread.py): the same answer as db.queries.status, and a process
that imports neither SQLAlchemy, numpy nor the scheduler."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from db import fastread
from db.errors import NotFoundError, StorageError
from db.migrations import SCHEMA_VERSION
from db.queries import HELD_JOBS_SHOWN, expected_evaluations, status
from db.session import open_db
from tests.orch_helpers import REPO, glo, glo_env, write_config


@pytest.fixture(scope="module")
def finished_db(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("fast")
    cfg = write_config(tmp / "c.toml", population=10, generations=2, cma_iterations=1, per_job=2,
                       extra="[search.fidelity]\nsteps = [30]\npromote_fraction = 0.3\n")  # two rungs: 10, 30 steps
    db = tmp / "runs.db"
    r = glo("run", str(cfg), "--db", str(db), "--run-id", "fast", "--no-progress", env=glo_env())
    assert r.returncode == 0, r.stderr[-2000:]
    con = sqlite3.connect(db)  # a held job and one that was held, for the held_jobs list
    with con:
        con.execute("update jobs set hold_code = 13, hold_subcode = 2, hold_reason = 'transfer', host = 'n1', "
                    "releases = 1 where id = 1")
        con.execute("update jobs set state = 'held', hold_code = 26, hold_reason = 'policy', last_error = ? where id = 2",
                    ("x" * 900,))
    con.close()
    return db


def test_fast_status_is_the_full_status(finished_db):
    db = open_db(finished_db)
    try:
        for run in ("fast", None):
            fast, path = fastread.status(finished_db, run)
            full = status(db, run).to_json()
            assert fast == full and list(fast) == list(full)  # the same JSON, key order included
            assert path == finished_db
        assert len(fast["held_jobs"]) == 2 and fast["held_jobs"][0]["state"] == "held"
        assert len(fast["held_jobs"][0]["last_error"]) == 500
        rungs = fast["trainings_per_budget"]  # each rung's trainings: promotion's cost, with the rest of status
        assert [b["steps"] for b in rungs] == [10, 30] and all(b["trainings"] > 0 for b in rungs)
        assert sum(b["trainings"] for b in rungs) == fast["evaluations"]["done"]
    finally:
        db.dispose()


def test_fast_status_errors_and_fallback(finished_db, tmp_path, monkeypatch):
    with pytest.raises(NotFoundError, match="no run 'nope'"):
        fastread.status(finished_db, "nope")
    with pytest.raises(StorageError, match="no GLO database at"):
        fastread.status(tmp_path / "missing.db", None)
    (tmp_path / "other.db").write_bytes(b"")
    assert fastread.status(tmp_path / "other.db", None) is None  # no schema: the full path says what it is
    monkeypatch.setattr(fastread, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    assert fastread.status(finished_db, None) is None  # another version: the full path (upgrade or refuse)


def test_fast_status_constants_follow_the_full_path():
    assert fastread.SCHEMA_VERSION == SCHEMA_VERSION and fastread.HELD_JOBS_SHOWN == HELD_JOBS_SHOWN
    for cfg in ({}, {"search": {"ga": {"population_size": 12, "generations": 3, "elites": 2},
                                "cma": {"top_k": 2, "iterations": 5, "popsize": 6}}}):
        assert fastread.expected_evaluations(cfg) == expected_evaluations(cfg)


def test_glo_status_process_imports_only_what_it_reads_with(finished_db):
    code = ("import atexit, sys\n"
            "heavy = ('sqlalchemy', 'numpy', 'orchestrator.run.scheduler', 'cma', 'matplotlib', 'db.queries')\n"
            "atexit.register(lambda: print('HEAVY', json.dumps(sorted(m for m in heavy if m in sys.modules)), file=sys.stderr))\n"
            "import json\n"
            "from orchestrator.cli import main\n"
            f"sys.argv = ['glo', 'status', '--db', {str(finished_db)!r}, '--json']\n"
            "main()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["run_id"] == "fast"
    heavy = json.loads(done.stderr.strip().splitlines()[-1].removeprefix("HEAVY "))
    assert heavy == []


def test_glo_status_table_and_other_commands_still_register(finished_db):
    r = glo("status", "--db", str(finished_db))
    assert r.returncode == 0 and "GLO run fast" in r.stdout and "held now" in r.stdout
    assert "trainings per budget" in r.stdout and "at 30 steps" in r.stdout
    r = glo("--help")
    assert r.returncode == 0 and all(name in r.stdout for name in ("condor", "evaluate", "loss", "status", "stop"))
    from orchestrator.cli import main

    assert "evaluate" in main.commands and "status" in main.commands
