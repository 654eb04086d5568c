"""Canonical keys remembered per exact tree: a fixed function of the tree within one database."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from db.migrations import SCHEMA_VERSION
from db.session import open_db
from db.store import Store
from orchestrator.run.cachekey import RememberedKeys, tree_sha
from tests.orch_helpers import glo, write_config
from worker.lossexpr import Node, parse


def counting(answer: str):
    calls: list[Node] = []

    def compute(tree: Node) -> str:
        calls.append(tree)
        return answer

    return compute, calls


def test_first_key_wins_across_instances_and_reopenings(tmp_path: Path) -> None:
    path = tmp_path / "k.db"
    tree = parse("log(y) - x / y")
    compute, calls = counting("s1:first")
    keys = RememberedKeys(Store(open_db(path, create=True)), compute)
    assert keys(tree) == "s1:first" and keys(tree) == "s1:first"
    assert len(calls) == 1  # memoized in the instance

    # A later run (say the symbolic step timed out this time) gets the stored key, not a new one.
    later, later_calls = counting("t1:fallback")
    assert RememberedKeys(Store(open_db(path, create=True)), later)(tree) == "s1:first"
    assert later_calls == []
    # Another tree is computed and remembered.
    assert RememberedKeys(Store(open_db(path, create=True)), later)(parse("x * log(y)")) == "t1:fallback"


def test_coefficients_make_a_different_tree(tmp_path: Path) -> None:
    a, b = parse("x * log(y)"), parse("2.0 * x * log(y)")
    assert tree_sha(a) != tree_sha(b)
    assert tree_sha(a) == tree_sha(parse("x*log(y)"))


def test_remember_is_first_writer_wins(tmp_path: Path) -> None:
    store = Store(open_db(tmp_path / "w.db", create=True))
    assert store.canonical_key_of("abc") is None
    assert store.remember_canonical_key("abc", "s1:one") == "s1:one"
    assert store.remember_canonical_key("abc", "s1:two") == "s1:one"
    assert store.canonical_key_of("abc") == "s1:one"


def test_a_batch_is_settled_at_once_with_the_same_keys(tmp_path: Path) -> None:
    """prefetch: the remembered keys read at once, the rest computed (with this instance's compute) and
    remembered in one write; then every call is a memo hit giving what one-at-a-time calls would have."""
    from sqlalchemy import event

    path = tmp_path / "b.db"
    trees = [parse(t) for t in ("x * log(y)", "log(y) - x / y", "x * x * log(y)", "square(x - y)")]
    first = RememberedKeys(Store(open_db(path, create=True)), counting("s2:kept")[0])
    assert first(trees[1]) == "s2:kept"  # remembered before the batch
    db = open_db(path, create=True)
    writes: list[object] = []
    event.listen(db.write_engine.engine, "commit", lambda conn: writes.append(conn))
    compute, calls = counting("s2:new")
    keys = RememberedKeys(Store(db), compute)
    keys.prefetch(trees + [trees[0]])
    assert sorted(map(str, calls)) == sorted(map(str, [trees[0], trees[2], trees[3]]))  # each missing tree once
    assert len(writes) == 1
    assert [keys(t) for t in trees] == ["s2:new", "s2:kept", "s2:new", "s2:new"] and len(calls) == 3
    keys.prefetch(trees)  # all known: nothing computed, nothing written
    assert len(calls) == 3 and len(writes) == 1
    later, later_calls = counting("t1:other")
    assert [RememberedKeys(Store(open_db(path, create=True)), later)(t) for t in trees] == [keys(t) for t in trees]
    assert later_calls == []


def test_parallel_keys_equal_one_at_a_time() -> None:
    """canonical_keys shares a batch among the helper processes: the same keys as canonical_key one by one.
    The further helpers start on a batch of PARALLEL_FROM uncached trees (computed by the running one) and
    share from the next batch on."""
    import random

    from orchestrator.search import GAConfig
    from orchestrator.search.operators import Primitives, random_tree
    from worker.lossexpr import canonical

    cfg = GAConfig()
    rng = random.Random(11)
    distinct: dict[Node, None] = {}
    while len(distinct) < max(40, canonical.PARALLEL_FROM):
        distinct[random_tree(rng, Primitives(cfg.weights()), 3)] = None
    trees = list(distinct)
    canonical.clear_cache()
    first = canonical.canonical_keys(trees)
    assert all(server.started() for server in canonical._SERVERS)
    canonical.clear_cache()
    together = canonical.canonical_keys(trees)  # shared among every helper now
    canonical.clear_cache()
    assert first == together == [canonical.canonical_key(t) for t in trees]
    assert len(set(together)) > 10


def test_a_small_batch_starts_no_further_key_helper() -> None:
    """A small run (a test, make demo) never pays for a second helper's start-up."""
    code = ("from worker.lossexpr import canonical, parse\n"
            "canonical.canonical_keys([parse(t) for t in ('x * log(y)', 'x * y', 'log(y) - x / y')])\n"
            "print(sum(s.started() for s in canonical._SERVERS))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout.strip()
    assert out == "1"


def test_a_version_1_file_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    store = Store(open_db(path, create=True))
    store.create_run("old", name="o", config={}, seed=0, task="mnist", backend="local", pid=None)
    con = sqlite3.connect(path)  # make it exactly what schema version 1 wrote
    con.execute("drop table canonical_keys")
    con.execute("drop table job_attempts")
    con.execute("delete from schema_version where version > 1")
    con.commit()
    con.close()
    store = Store(open_db(path, create=True))
    assert store.get_run("old").name == "o"
    assert "canonical_keys" in tables(path)
    con = sqlite3.connect(path)
    assert con.execute("select max(version) from schema_version").fetchone()[0] == SCHEMA_VERSION
    assert store.remember_canonical_key("t", "s1:x") == "s1:x"


def tables(path: Path) -> set[str]:
    con = sqlite3.connect(path)
    try:
        return {r[0] for r in con.execute("select name from sqlite_master where type = 'table'")}
    finally:
        con.close()


def test_a_run_remembers_the_key_of_every_candidate(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", population=10, generations=2, cma_iterations=1)
    db = tmp_path / "r.db"
    r = glo("run", str(cfg), "--db", str(db), "--run-id", "r")
    assert r.returncode == 0, r.stderr
    con = sqlite3.connect(db)
    remembered = dict(con.execute("select tree_sha, canonical_key from canonical_keys"))
    rows = con.execute("select tree_json, canonical_key from candidates where run_id = 'r'").fetchall()
    assert rows
    for tree_json, key in rows:
        assert remembered[tree_sha(Node.from_json(json.loads(tree_json)))] == key


def test_a_tree_that_cannot_train_gets_its_infix_key_and_is_not_remembered(tmp_path: Path) -> None:
    """Under the paper's random init most trees lack x or y: settled at 0 untrained, no fitness of theirs is
    ever cached, so they get ``t0:`` + infix (no sympy) and no remembered key; every other candidate's key is
    the remembered one."""
    cfg = write_config(tmp_path / "c.toml", population=24, generations=2, cma_iterations=1)
    db = tmp_path / "r.db"
    r = glo("run", str(cfg), "--db", str(db), "--run-id", "r", "--set", "search.ga.init=paper",
            "--set", "search.ga.zero_training_filter=false")
    assert r.returncode in (0, 4), r.stderr
    con = sqlite3.connect(db)
    remembered = dict(con.execute("select tree_sha, canonical_key from canonical_keys"))
    rows = con.execute("select tree_json, infix, canonical_key, status, error from candidates where run_id = 'r'"
                       ).fetchall()
    invalid = [row for row in rows if row[3] == "resolved" and row[4] == "invalid"]
    assert invalid and len(invalid) < len(rows)
    for tree_json, infix, key, status, error in rows:
        sha = tree_sha(Node.from_json(json.loads(tree_json)))
        if (status, error) == ("resolved", "invalid"):
            assert key == "t0:" + infix and sha not in remembered
        else:
            assert remembered[sha] == key


def test_a_version_2_file_gets_the_job_columns_of_version_3_even_from_a_reader(tmp_path: Path) -> None:
    """Schema v3 adds hold code, host, evictions, releases and bad nodes to jobs: a reader (glo status,
    glo show) opening a v2 file upgrades it, the rows stay, and the job_states view shows the new columns."""
    from db.queries import candidate

    path = tmp_path / "v2.db"
    store = Store(open_db(path, create=True))
    store.create_run("old", name="o", config={}, seed=0, task="mnist", backend="local", pid=None)
    con = sqlite3.connect(path)
    con.execute("drop view job_states")
    for col in ("hold_code", "hold_subcode", "host", "evictions", "releases", "bad_nodes_json"):
        con.execute(f"alter table jobs drop column {col}")
    con.execute("create view job_states as select id as job_id from jobs")
    con.execute("drop table job_attempts")
    con.execute("delete from schema_version where version > 2")
    con.commit()
    con.close()
    db = open_db(path)
    assert Store(db).get_run("old").name == "o"
    con = sqlite3.connect(path)
    assert con.execute("select max(version) from schema_version").fetchone()[0] == SCHEMA_VERSION
    cols = [r[1] for r in con.execute("pragma table_info(job_states)")]
    assert {"hold_code", "hold_subcode", "host", "evictions", "releases", "bad_nodes"} <= set(cols)
    with pytest.raises(Exception, match="no candidate"):
        candidate(db, "old/g0-0")


def test_a_version_3_file_gets_the_attempt_history_of_version_4(tmp_path: Path) -> None:
    """Schema v4 adds job_attempts.  A v3 file knew only each job's latest attempt: after the upgrade that
    one is a row (cluster id, machine, hold, outcome, error from the job row) with a note that the earlier
    ones were not kept, `glo show RUN/job-N` prints it, and the next transition writes into it."""
    path = tmp_path / "v3.db"
    store = Store(open_db(path, create=True))
    store.create_run("old", name="o", config={}, seed=0, task="mnist", backend="condor", pid=None)
    job = store.create_job("old", "condor", [])
    for attempt in (1, 2):
        store.transition_job(job.id, "submitted", backend_job_id=f"{40 + attempt}.0")
        store.transition_job(job.id, "running", host="slot1@node-7")
        store.transition_job(job.id, "held", hold_reason="disk quota", hold_code=13, hold_subcode=122)
        if attempt == 1:
            store.transition_job(job.id, "queued", last_error="held: disk quota (code 13/122); removed")
    con = sqlite3.connect(path)  # make it exactly what schema version 3 wrote
    con.execute("drop table job_attempts")
    con.execute("delete from schema_version where version > 3")
    con.commit()
    con.close()
    reader = glo("show", f"old/job-{job.id}", "--db", str(path), "--json")  # a reader upgrades the file
    assert reader.returncode == 0, reader.stderr
    (attempt,) = json.loads(reader.stdout)["attempts_history"]
    assert (attempt["attempt"], attempt["backend_job_id"], attempt["host"]) == (2, "42.0", "slot1@node-7")
    assert (attempt["hold_code"], attempt["hold_subcode"], attempt["hold_reason"]) == (13, 122, "disk quota")
    assert attempt["outcome"] == "" and "attempts 1-1 were not kept" in attempt["notes"][0]["what"]
    con = sqlite3.connect(path)
    assert con.execute("select max(version) from schema_version").fetchone()[0] == SCHEMA_VERSION >= 4
    con.close()
    store = Store(open_db(path))
    store.transition_job(job.id, "failed", last_error="held: disk quota (code 13/122); removed")
    (attempt,) = store.attempts(job.id)
    assert attempt["outcome"] == "failed" and "disk quota" in attempt["error"] and attempt["ended_at"]
    text = glo("show", f"old/job-{job.id}", "--db", str(path)).stdout
    assert "attempt 2 42.0 on slot1@node-7: failed" in text and "were not kept" in text
    missing = glo("show", "old/job-999", "--db", str(path))
    assert missing.returncode == 1 and "no job 999 in run 'old'" in missing.stderr and "Traceback" not in missing.stderr
