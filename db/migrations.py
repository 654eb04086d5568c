"""Schema versioning: a `schema_version` table and ordered forward migrations.

A database is at the highest version recorded in `schema_version`.  Opening it for writing
applies every newer migration in one transaction; a file newer than this code is refused with
SchemaTooNewError (naming both versions) instead of being read with wrong assumptions.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Connection, Engine, inspect, text

from db.errors import SchemaTooNewError, StorageError
from db.views import VIEWS


def _v1(conn: Connection) -> None:
    """Initial schema: runs, candidates, evaluations, jobs, job_candidates, search_states, views."""
    from db.models import Base

    Base.metadata.create_all(conn)
    for sql in VIEWS.values():
        conn.exec_driver_sql(sql)


def _v2(conn: Connection) -> None:
    """canonical_keys: the key first computed for each exact tree (see models.CanonicalKey)."""
    from db.models import CanonicalKey

    CanonicalKey.__table__.create(conn, checkfirst=True)  # a fresh file got it from _v1's create_all


#: Columns schema v3 adds to `jobs` (a fresh file gets them from _v1's create_all).
_V3_JOB_COLUMNS = {
    "hold_code": "INTEGER", "hold_subcode": "INTEGER", "host": "TEXT NOT NULL DEFAULT ''",
    "evictions": "INTEGER NOT NULL DEFAULT 0", "releases": "INTEGER NOT NULL DEFAULT 0",
    "bad_nodes_json": "TEXT NOT NULL DEFAULT '[]'",
}


def _v3(conn: Connection) -> None:
    """Cluster jobs: hold code/subcode, host, evictions, releases, bad nodes; job_states shows them."""
    have = {c["name"] for c in inspect(conn).get_columns("jobs")}
    for name, decl in _V3_JOB_COLUMNS.items():
        if name not in have:
            conn.exec_driver_sql(f"ALTER TABLE jobs ADD COLUMN {name} {decl}")
    conn.exec_driver_sql("DROP VIEW IF EXISTS job_states")
    conn.exec_driver_sql(VIEWS["job_states"])


def _v4(conn: Connection) -> None:
    """job_attempts: one row per submission of a job.  An older file knew only each job's latest attempt:
    that one is filled in from the job row (its earlier attempts are gone, and the row says so)."""
    from db.models import JobAttempt

    JobAttempt.__table__.create(conn, checkfirst=True)  # a fresh file got it from _v1's create_all
    outcome = ("CASE state WHEN 'done' THEN 'done' WHEN 'failed' THEN 'failed' WHEN 'lost' THEN 'lost' "
               "WHEN 'queued' THEN 'retried' ELSE '' END")
    conn.exec_driver_sql(
        "INSERT OR IGNORE INTO job_attempts (job_id, attempt, backend_job_id, host, submitted_at, started_at, "
        "ended_at, outcome, error, hold_code, hold_subcode, hold_reason, holds, releases, evictions, notes_json) "
        f"SELECT id, attempts, backend_job_id, host, submitted_at, started_at, finished_at, {outcome}, last_error, "
        "hold_code, hold_subcode, hold_reason, hold_code IS NOT NULL, releases, evictions, "
        "CASE WHEN attempts > 1 THEN json_array(json_array(updated_at, 'recorded before schema v4: attempts 1-' "
        "|| (attempts - 1) || ' were not kept; hold, release and eviction counts are the job''s totals')) "
        "ELSE '[]' END FROM jobs WHERE attempts > 0")


def _v5(conn: Connection) -> None:
    """search_log: the search's asks and tells since its state was last saved whole (models.SearchLogEntry)."""
    from db.models import SearchLogEntry

    SearchLogEntry.__table__.create(conn, checkfirst=True)  # a fresh file got it from _v1's create_all


#: (version, description, function).  Append only; never edit a released migration.
MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "initial schema", _v1),
    (2, "canonical_keys: one key per exact tree", _v2),
    (3, "jobs: hold code, host, evictions, releases, bad nodes", _v3),
    (4, "job_attempts: one row per submission of a job", _v4),
    (5, "search_log: asks and tells between saves of the whole search state", _v5),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def current_version(conn: Connection) -> int:
    """0 for an empty file; raises StorageError for a file that is not a GLO database."""
    tables = set(inspect(conn).get_table_names())
    if "schema_version" not in tables:
        if tables:
            raise StorageError(f"not a GLO database (has tables {', '.join(sorted(tables))} but no schema_version)")
        return 0
    row = conn.execute(text("SELECT max(version) FROM schema_version")).scalar()
    return int(row or 0)


def check_version(conn: Connection, path: str) -> int:
    version = current_version(conn)
    if version > SCHEMA_VERSION:
        raise SchemaTooNewError(path, version, SCHEMA_VERSION)
    return version


def migrate(engine: Engine, path: str) -> int:
    """Bring the database up to SCHEMA_VERSION; returns the version it was at before."""
    with engine.begin() as conn:
        before = check_version(conn, path)
        for version, description, fn in MIGRATIONS:
            if version > before:
                fn(conn)  # migration 1 also creates schema_version itself
                conn.execute(
                    text("INSERT INTO schema_version (version, applied_at, description) VALUES (:v, :t, :d)"),
                    {"v": version, "t": time.time(), "d": description},
                )
    return before
