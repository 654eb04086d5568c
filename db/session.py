"""Opening a database and the one session scope (`Database.session`) through which every read and write goes."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from db.engine import make_engine, writer
from db.errors import DatabaseLockedError, StorageError
from db.migrations import SCHEMA_VERSION, check_version, migrate
from db.paths import DEFAULT_DB, resolve_db_path  # noqa: F401  (defined apart: no SQLAlchemy to import it)


def _translate(exc: SQLAlchemyError, path: Path) -> StorageError:
    orig = getattr(exc, "orig", None)
    msg = str(orig or exc).strip()
    if isinstance(exc, OperationalError) and "locked" in msg:
        return DatabaseLockedError(f"database {path} stayed locked: {msg}")
    if isinstance(exc, DBAPIError):
        return StorageError(f"database {path}: {msg}")
    return StorageError(f"database {path}: {msg}")


@dataclass
class Database:
    """An open GLO database file: a read engine (a connection per transaction) and a write engine that
    keeps one connection for the Database's life, used by one write transaction at a time."""

    path: Path
    engine: Engine
    write_engine: Engine
    #: The write connection's engine without BEGIN IMMEDIATE: reads on that one connection (`read_on_writer`).
    solo_engine: Engine | None = None
    _write_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _reads_on_writer: bool = field(default=False, repr=False)
    _lock_owner: int | None = field(default=None, repr=False)  # the thread inside a transaction on the one connection
    _batch: Session | None = field(default=None, repr=False)  # the open `batch` transaction (its thread: _lock_owner)

    def read_on_writer(self) -> None:
        """From now on this process's reads take the write connection too (under its lock, with a plain
        BEGIN) instead of opening and configuring a connection per read.

        For the scheduler: it reads between its writes all the time (a cache lookup and a remembered key
        per candidate, a job per event), one thread at a time, and a fresh connection with its pragmas costs
        more than those small reads.  Other processes (`glo status`, the dashboard) keep reading at once
        beside it: WAL lets them."""
        if self.solo_engine is not None:
            self._reads_on_writer = True

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Make every transaction this thread opens inside the block (reads and writes) one write transaction,
        committed when the block ends -- or, on any error, rolled back whole and the error raised.

        For the scheduler: handling one event or one batch of asked candidates is a handful of small writes
        (a job's transitions, its results, its candidates' marks), and a commit each cost more than the rows
        (`make bench`'s orchestrator cost).  All of them land together, which a resume already expects of
        each step (write ahead of the backend and of the tell).  A block must not await: other threads of
        the process queue for the one connection meanwhile.  Nested blocks join the outer one."""
        if self._batch is not None and self._lock_owner == threading.get_ident():
            yield
            return
        with self.session(write=True) as s:
            self._batch = s
            try:
                yield
            finally:
                self._batch = None

    @contextmanager
    def session(self, *, write: bool = False) -> Iterator[Session]:
        """One transaction: commits on success, rolls back on any error, and turns database
        errors into StorageError so that callers handle one exception family.  Write transactions
        take the write connection's lock (threads of one process queue here, other processes at
        SQLite's own lock).  Inside this thread's `batch` block: that block's transaction."""
        if self._batch is not None and self._lock_owner == threading.get_ident():
            try:
                yield self._batch
            except SQLAlchemyError as exc:
                raise _translate(exc, self.path) from exc
            return
        # a read inside this thread's own transaction on the one connection (never done today) falls back to
        # a connection of its own rather than waiting for a lock its own thread holds
        solo = self._reads_on_writer and not write and self._lock_owner != threading.get_ident()
        with self._write_lock if write or solo else nullcontext():
            engine = self.write_engine if write else self.solo_engine if solo else self.engine
            session = Session(engine, expire_on_commit=False)
            if write or solo:
                self._lock_owner = threading.get_ident()
            try:
                yield session
                if write:
                    session.commit()
                else:
                    session.rollback()  # reads end their snapshot; nothing to keep
            except SQLAlchemyError as exc:
                session.rollback()
                raise _translate(exc, self.path) from exc
            except BaseException:
                session.rollback()
                raise
            finally:
                session.close()
                if write or solo:
                    self._lock_owner = None

    def dispose(self) -> None:
        self.engine.dispose()
        self.write_engine.dispose()


def open_db(path: str | os.PathLike[str] | None = None, *, create: bool = False) -> Database:
    """Open (and with `create`, create or migrate) the database.

    Readers (`create=False`) need an existing file at a known schema version; `glo run` opens
    with `create=True`.  A reader that finds an older version upgrades the file first: every
    migration only adds (tables, columns, views) in one transaction, and the models would not
    read the old layout.
    """
    p = resolve_db_path(path)
    if not create and not p.exists():
        raise StorageError(f"no GLO database at {p} (pass --db PATH or set GLO_DB)")
    if create:
        p.parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(p)
    try:
        if create:
            migrate(writer(engine), str(p))
        else:
            with engine.connect() as conn:
                version = check_version(conn, str(p))
                conn.rollback()
            if version == 0:
                raise StorageError(f"{p} is not a GLO database (no schema); run `glo run` to create one")
            if version < SCHEMA_VERSION:
                migrate(writer(engine), str(p))
    except SQLAlchemyError as exc:
        engine.dispose()
        raise _translate(exc, p) from exc
    except BaseException:
        engine.dispose()
        raise
    solo = make_engine(p, single_connection=True)
    return Database(path=p, engine=engine, write_engine=writer(solo), solo_engine=solo)
