"""Engine construction: every connection gets the same SQLite pragmas.

WAL lets `glo status` read while `glo run` writes; busy_timeout makes a briefly locked database
wait instead of failing; foreign keys are off by default in SQLite and must be switched on per
connection.  pysqlite's own transaction handling is disabled so that we emit BEGIN ourselves:
a read gets one consistent snapshot (plain BEGIN), a write takes the write lock up front
(BEGIN IMMEDIATE), which avoids the lock-upgrade deadlock that surfaces as "database is locked".
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.pool import NullPool, StaticPool

BUSY_TIMEOUT_MS = 30_000
WRITE_OPTION = "glo_write"


def make_engine(path: str | Path, *, single_connection: bool = False) -> Engine:
    """An engine on the SQLite file at `path` with GLO's pragmas.

    Readers get a fresh connection per transaction (NullPool: no handle is shared across threads, and a
    reader never holds a file open between queries).  `single_connection` keeps one connection for the
    engine's life (StaticPool): the writer's, because opening a connection and setting its pragmas costs
    more than a scheduler's small write transaction (`make bench`: 30 ms per candidate with a connection
    per write); the caller serializes its use (db.session.Database holds a lock around each write).
    """
    engine = create_engine(
        f"sqlite:///{Path(path)}",
        poolclass=StaticPool if single_connection else NullPool,
        connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: sqlite3.Connection, _record: object) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see module doc)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:  # type: ignore[no-untyped-def]
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def writer(engine: Engine) -> Engine:
    """The same engine, but transactions take the write lock at BEGIN."""
    return engine.execution_options(**{WRITE_OPTION: True})
