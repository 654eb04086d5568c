"""Write-ahead order, checked after every committed transaction of a whole run.

A kill -9 can land between any two transactions, and a resume trusts the saved search state:
it never stores again what that state counts as settled, and never hands out again what it
counts as asked.  So after *each* commit the database alone must agree with its saved state:

* every candidate the state lists as resolved without training (invalid, elite, duplicate) has
  its row, resolved and told -- stored pending, a resume took it for an untrained candidate and
  trained it (or, for an invalid tree, trained what the uninterrupted run never trains);
* every candidate the state counts as handed out has its row -- without one, a resumed search
  waited on candidates the scheduler had never heard of ("nothing is in flight").

Deterministic: it inspects every crash point of one run instead of hoping a kill lands there.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from db.session import Database
from orchestrator.config import load_config
from orchestrator.run.runner import run_search
from tests.orch_helpers import glo_env, stored_search_state, write_config


def violations(db: Path, run_id: str) -> list[str]:
    """What a resume from this exact database would get wrong (empty: nothing)."""
    state = stored_search_state(db, run_id)  # the last whole state with the log after it replayed
    if state is None:
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = {sid: (status, bool(told)) for sid, status, told in con.execute(
            "select search_id, status, told from candidates where run_id = ?", (run_id,))}
    finally:
        con.close()
    out: list[str] = []
    for r in state["resolved"]:
        sid = r["candidate"]["id"]
        if rows.get(sid) != ("resolved", True):
            out.append(f"{sid}: settled by the search ({r['reason']}) but stored as {rows.get(sid)}")
    asked = [cid for cid, st in state["status"].items() if st == "asked"]
    for p in state["cma"]:
        if p["pending"] is not None:
            it = len(p["history"])
            asked += [f"c{p['index']}-{it}-{j}" for j in range(len(p["pending"]))]
    out += [f"{cid}: handed out but has no row" for cid in asked if cid not in rows]
    return out


def test_every_commit_leaves_a_resumable_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(write_config(tmp_path / "c.toml"))
    db_path = tmp_path / "w.db"
    for key, value in glo_env(sleep=0.0).items():
        if key.startswith("GLO_FAKE_WORKER"):
            monkeypatch.setenv(key, value)
    original = Database.session
    commits: list[int] = []
    problems: list[str] = []

    @contextmanager
    def checked(self: Database, *, write: bool = False) -> Iterator[Any]:
        with original(self, write=write) as s:
            yield s
        if write:
            commits.append(1)
            problems.extend(f"after commit {len(commits)}: {v}" for v in violations(db_path, "w"))

    monkeypatch.setattr(Database, "session", checked)
    _run_id, status = run_search(db_path, config=cfg, run_id="w", show_progress=False)
    assert status == "finished"
    assert len(commits) > 50, "the run should have crossed generations and CMA-ES batches"
    assert not problems, "\n".join(problems[:20])


def test_a_search_log_that_does_not_replay_stops_the_resume_with_an_error(tmp_path: Path) -> None:
    """The log's ask entries list the ids they handed out, and the replay checks them: a log the search would
    not repeat (another GLO's, or a damaged file) is refused by name instead of continuing another search."""
    import sqlite3

    from db.session import open_db
    from orchestrator.errors import SchedulerError
    from orchestrator.run.scheduler import Scheduler
    from tests.orch_helpers import glo

    cfg = write_config(tmp_path / "c.toml", population=8, generations=2, cma_iterations=1)
    db = tmp_path / "d.db"
    assert glo("run", str(cfg), "--db", str(db), "--run-id", "d").returncode == 0
    assert stored_search_state(db, "d") is not None  # a finished run: whole state, empty log, loads
    con = sqlite3.connect(db)
    with con:
        con.execute("insert into search_log (run_id, seq, entry_json) values ('d', 1, '{\"ask\": [\"g9-0\"]}')")
    con.close()
    database = open_db(db)
    try:
        sched = Scheduler(database, "d", load_config(cfg))
        with pytest.raises(SchedulerError, match=r"entry 1 of 1 of the search log handed out \['g9-0'\]"):
            sched.load_search()
    finally:
        database.dispose()
