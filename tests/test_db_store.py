"""The storage layer: pragmas, migrations, guarded job transitions, the cache, the views."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from db.errors import IllegalTransitionError, NotFoundError, SchemaTooNewError, StorageError
from db.migrations import SCHEMA_VERSION
from db.session import open_db
from db.store import NewCandidate, NewEvaluation, Store


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    db = open_db(tmp_path / "t.db", create=True)
    s = Store(db)
    s.create_run("r1", name="t", config={"b": 1, "a": 2}, seed=0, task="mnist", backend="local", pid=None)
    return s


def cand(sid: str, key: str = "k1") -> NewCandidate:
    return NewCandidate(search_id=sid, tree_json={"op": "x"}, infix="x", coefficients=[1.0], canonical_key="c",
                        eval_key=key, generation=0, phase="discovery", origin="init", parents=[])


def evaluation(key: str = "k1", fitness: float = 0.9) -> NewEvaluation:
    return NewEvaluation(eval_key=key, canonical_key="c", coefficients=[1.0], task="mnist", budget={"steps": 10},
                         seed_policy="fixed:0", status="ok", fitness=fitness, metrics={}, wall_seconds=1.0,
                         train_seconds=0.5, eval_seconds=0.1, device="cpu")


def test_pragmas_and_schema(tmp_path: Path) -> None:
    open_db(tmp_path / "p.db", create=True)
    con = sqlite3.connect(tmp_path / "p.db")
    assert con.execute("pragma journal_mode").fetchone()[0] == "wal"
    assert con.execute("select max(version) from schema_version").fetchone()[0] == SCHEMA_VERSION
    views = {r[0] for r in con.execute("select name from sqlite_master where type = 'view'")}
    assert {"leaderboard", "job_states", "run_summary"} <= views


def test_newer_schema_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "n.db"
    open_db(path, create=True)
    con = sqlite3.connect(path)
    con.execute("insert into schema_version values (99, 0, 'from the future')")
    con.commit()
    con.close()
    for create in (False, True):
        with pytest.raises(SchemaTooNewError, match=f"schema version 99.*only up to version {SCHEMA_VERSION}"):
            open_db(path, create=create)
    assert sqlite3.connect(path).execute("select count(*) from schema_version").fetchone()[0] == SCHEMA_VERSION + 1


def test_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no GLO database"):
        open_db(tmp_path / "absent.db")
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("create table t (a)")
    with pytest.raises(StorageError, match="not a GLO database"):
        open_db(other, create=True)


def test_job_transitions_are_guarded(store: Store) -> None:
    store.record_asked("r1", [cand("g0-0")], {"s": 1})
    job = store.create_job("r1", "local", ["r1/g0-0"])
    assert job.state == "queued"
    with pytest.raises(IllegalTransitionError):
        store.transition_job(job.id, "running")
    j = store.transition_job(job.id, "submitted")
    assert j.attempts == 1
    store.transition_job(job.id, "running")
    store.transition_job(job.id, "done")
    for state in ("queued", "running", "failed"):
        with pytest.raises(IllegalTransitionError):
            store.transition_job(job.id, state)
    with pytest.raises(NotFoundError):
        store.transition_job(12345, "submitted")


def test_record_asked_is_idempotent_and_saves_state(store: Store) -> None:
    a = store.record_asked("r1", [cand("g0-0"), cand("g0-1", "k2")], {"n": 1})
    b = store.record_asked("r1", [cand("g0-0")], {"n": 2})
    assert a[0].uid == b[0].uid == "r1/g0-0" and a[0].seq == b[0].seq
    assert store.load_search_state("r1") == {"n": 2}


def test_cache_result_then_told(store: Store) -> None:
    store.record_asked("r1", [cand("g0-0"), cand("g0-1")], {})
    assert store.lookup_cache("k1") is None
    ev = store.store_result(["r1/g0-0", "r1/g0-1"], evaluation(), "r1")
    hit = store.lookup_cache("k1")
    assert hit is not None and hit.fitness == 0.9 and hit.id == ev.id
    rows = store.candidates("r1", told=False)
    assert [r.status for r in rows] == ["evaluated", "evaluated"]
    store.mark_told("r1", [r.uid for r in rows], {"told": 2})
    assert store.candidates("r1", told=False) == []
    con = sqlite3.connect(store.db.path)
    assert con.execute("select candidate_id, fitness, task, steps from leaderboard").fetchall() == [
        ("r1/g0-0", 0.9, "mnist", 10), ("r1/g0-1", 0.9, "mnist", 10)]


def test_a_jobs_results_in_one_call(store: Store) -> None:
    """store_results: several evaluations in one transaction, each resolving its candidates; an evaluation
    already stored (or twice in the batch) is reused, not inserted again."""
    store.record_asked("r1", [cand("g0-0"), cand("g0-1", "k2"), cand("g0-2", "k2"), cand("g0-3", "k3")], {})
    store.store_result(["r1/g0-3"], evaluation("k3", 0.3), "r1")
    evs = store.store_results([(["r1/g0-0"], evaluation("k1", 0.5)), (["r1/g0-1", "r1/g0-2"], evaluation("k2", 0.7)),
                               (["r1/g0-3"], evaluation("k3", 0.9))], "r1")
    assert [e.fitness for e in evs] == [0.5, 0.7, 0.3]  # k3 was there first
    assert [(r.status, r.fitness, r.evaluation_id) for r in store.candidates("r1")] == [
        ("evaluated", 0.5, evs[0].id), ("evaluated", 0.7, evs[1].id), ("evaluated", 0.7, evs[1].id),
        ("evaluated", 0.3, evs[2].id)]
    con = sqlite3.connect(store.db.path)
    assert con.execute("select eval_key, fitness from evaluations order by id").fetchall() == [
        ("k3", 0.3), ("k1", 0.5), ("k2", 0.7)]


def test_a_batch_is_one_transaction(store: Store) -> None:
    """Store.batch: the calls inside see each other's writes, another connection sees none of them until the
    block ends, then all of them; an error inside rolls every one back and is raised; nested blocks join."""
    store.record_asked("r1", [cand("g0-0")], {"n": 0})
    outside = sqlite3.connect(store.db.path)
    with store.batch():
        store.record_asked("r1", [cand("g0-1", "k2")], {"n": 1})
        job = store.create_job("r1", "local", ["r1/g0-1"])
        with store.batch():
            store.transition_job(job.id, "submitted")
        assert store.load_search_state("r1") == {"n": 1} and store.jobs("r1")[0].state == "submitted"
        assert outside.execute("select count(*) from candidates").fetchone()[0] == 1  # not yet committed
    assert outside.execute("select count(*) from candidates").fetchone()[0] == 2
    assert outside.execute("select state from jobs").fetchall() == [("submitted",)]
    with pytest.raises(IllegalTransitionError):
        with store.batch():
            store.record_asked("r1", [cand("g0-2", "k3")], {"n": 2})
            store.store_result(["r1/g0-2"], evaluation("k3"), "r1")
            store.transition_job(job.id, "queued", expect=["running"])
    assert outside.execute("select count(*) from candidates").fetchone()[0] == 2
    assert outside.execute("select count(*) from evaluations").fetchone()[0] == 0
    assert store.load_search_state("r1") == {"n": 1}
    with store.batch():  # the connection is usable again after the rollback
        store.record_asked("r1", [cand("g0-2", "k3")], {"n": 3})
    assert outside.execute("select count(*) from candidates").fetchone()[0] == 3


def test_the_search_is_saved_whole_or_as_log_entries_after_the_whole_state(store: Store) -> None:
    """A whole state replaces the log entries it covers; entries come back in order; never both at once."""
    store.record_asked("r1", [cand("g0-0")], state={"n": 1})
    store.record_asked("r1", [cand("g0-1", "k2")], state=None, log=[{"tell": "g0-0", "fitness": 0.5}, {"ask": ["a"]}])
    store.mark_told("r1", ["r1/g0-0"], state=None, log=[{"ask": []}])
    assert store.load_search_state("r1") == {"n": 1}
    assert store.load_search_log("r1") == [{"tell": "g0-0", "fitness": 0.5}, {"ask": ["a"]}, {"ask": []}]
    store.mark_told("r1", [], state={"n": 2})
    assert store.load_search_state("r1") == {"n": 2} and store.load_search_log("r1") == []
    with pytest.raises(ValueError, match="not both"):
        store.mark_told("r1", [], state={"n": 3}, log=[{"ask": []}])
    assert store.load_search_state("r1") == {"n": 2}


def test_config_key_order_survives(store: Store) -> None:
    assert list(store.get_run("r1").config) == ["b", "a"]  # the search's weights depend on order


def test_unknown_run(store: Store) -> None:
    with pytest.raises(NotFoundError, match="no run 'nope'"):
        store.get_run("nope")


def test_the_scheduler_reads_on_its_write_connection(tmp_path: Path) -> None:
    """After read_on_writer() (the scheduler's Database) reads open no connection of their own: they take the
    write connection, see what was just written, and threads still take turns; another Database on the same
    file keeps reading beside it (WAL), and a Database that never asked reads as before."""
    import threading

    from sqlalchemy import event, text

    db = open_db(tmp_path / "r.db", create=True)
    with db.session(write=True) as s:
        s.execute(text("CREATE TABLE t (i INTEGER)"))
    reader_opened: list[object] = []
    event.listen(db.engine, "connect", lambda conn, _rec: reader_opened.append(conn))
    with db.session() as s:  # before: a connection per read
        s.execute(text("SELECT count(*) FROM t")).one()
    assert len(reader_opened) == 1
    db.read_on_writer()

    def work(n: int) -> None:
        for i in range(30):
            with db.session(write=True) as s:
                s.execute(text("INSERT INTO t VALUES (:i)"), {"i": n * 100 + i})
            with db.session() as s:
                assert s.execute(text("SELECT count(*) FROM t WHERE i = :i"), {"i": n * 100 + i}).scalar() == 1

    threads = [threading.Thread(target=work, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(reader_opened) == 1  # no further reader connection

    def nested() -> None:  # a read inside the same thread's write: its own connection, not a wait on itself
        with db.session(write=True) as s:
            s.execute(text("INSERT INTO t VALUES (-1)"))
            with db.session() as r:
                r.execute(text("SELECT count(*) FROM t")).scalar()

    t = threading.Thread(target=nested, daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), "a read inside a write waited for its own thread's lock"
    assert len(reader_opened) == 2
    other = open_db(tmp_path / "r.db")
    with db.session() as s, other.session() as o:
        assert s.execute(text("SELECT count(*) FROM t")).scalar() == o.execute(text("SELECT count(*) FROM t")).scalar() == 91
    other.dispose()
    db.dispose()


def test_writes_share_one_connection_and_threads_take_turns(tmp_path: Path) -> None:
    """The write engine keeps one connection for the Database's life (opening one per transaction was the
    scheduler's main cost); a lock keeps two threads' transactions from interleaving on it."""
    import threading

    from sqlalchemy import event, text

    db = open_db(tmp_path / "w.db", create=True)
    opened: list[object] = []
    event.listen(db.write_engine.engine, "connect", lambda conn, _rec: opened.append(conn))
    with db.session(write=True) as s:
        s.execute(text("CREATE TABLE t (thread INTEGER, i INTEGER)"))

    def writer(n: int) -> None:
        for i in range(50):
            with db.session(write=True) as s:
                s.execute(text("INSERT INTO t VALUES (:n, :i)"), {"n": n, "i": i})
                s.execute(text("UPDATE t SET i = i WHERE thread = :n"), {"n": n})

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with db.session() as s:
        assert s.execute(text("SELECT count(*), count(DISTINCT thread) FROM t")).one() == (150, 3)
    assert len(opened) <= 1  # the connection made before the listener, or one made after it: never one per write
    other = sqlite3.connect(tmp_path / "w.db")  # and another process's writer is not locked out between writes
    other.execute("INSERT INTO t VALUES (9, 9)")
    other.commit()
    other.close()
    db.dispose()
