"""Read queries behind `glo dashboard`, on a connection that cannot write.

The dashboard opens the file with SQLite's `mode=ro` *and* `PRAGMA query_only`, so nothing it
does can change a run, take the write lock, or upgrade the schema; each answer is one short
read transaction (one WAL snapshot), so it never holds up `glo run`'s writes or checkpoints.
Every function returns plain JSON-ready data (dicts, lists, numbers, strings): the web layer
only serialises it, and the page inserts every string as text.
"""

from __future__ import annotations

import heapq
import json
import math
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from db.errors import NotFoundError, StorageError
from db.fastread import (
    ATTEMPTS_SQL,
    BEST_SQL,
    GENERATION0_SQL,
    HELD_JOBS_SHOWN,
    IN_FLIGHT_SQL,
    SETTLED,
    TRAININGS_PER_BUDGET_SQL,
    attempt_json,
    generation0,
    progress,
    quantile,
    run_kind,
    snapshot,
    steady_progress,
    trainings_per_budget,
)
from db.migrations import SCHEMA_VERSION

BUSY_TIMEOUT_MS = 5_000
LEADERBOARD_SIZE = 20
ERRORS_SHOWN = 10
RECENT_JOBS_SHOWN = 20


class ReadOnlyDB:
    """A GLO database file opened for reading only (`mode=ro`, `query_only`), one connection per read."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).resolve()
        if not self.path.is_file():
            raise StorageError(f"no GLO database at {self.path} (pass --db PATH or set GLO_DB)")
        # the file name is percent-quoted: a '?' or '#' in it must not end the URI's path
        self.uri = f"file:{quote(str(self.path))}?mode=ro"
        with self.read() as con:
            version = _schema_version(con)
        if version == 0:
            raise StorageError(f"{self.path} is not a GLO database (no schema)")
        if version > SCHEMA_VERSION:
            raise StorageError(f"database {self.path} has schema version {version}, but this GLO supports only up "
                               f"to version {SCHEMA_VERSION}")
        if version < SCHEMA_VERSION:
            raise StorageError(f"database {self.path} has schema version {version}; the dashboard reads version "
                               f"{SCHEMA_VERSION} and never changes the file: upgrade it once with "
                               f"`glo status --db {self.path}`")
        self.version = version
        self.lock = threading.Lock()
        self.aggregates: dict[str, RunAggregate] = {}

    def connect(self, *, rows: bool = True) -> sqlite3.Connection:
        con = sqlite3.connect(self.uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False,
                              isolation_level=None)
        if rows:
            con.row_factory = sqlite3.Row
        con.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        con.execute("PRAGMA query_only=ON")
        return con

    def sqlalchemy(self):  # type: ignore[no-untyped-def]
        """A db.session.Database over the same read-only connections, for the project's SQLAlchemy read
        functions (db.queries); its 'write' engine is read-only too, so a write through it fails."""
        from sqlalchemy import create_engine, event
        from sqlalchemy.pool import NullPool

        from db.session import Database

        engine = create_engine("sqlite://", creator=lambda: self.connect(rows=False), poolclass=NullPool)

        @event.listens_for(engine, "begin")
        def _begin(conn) -> None:  # type: ignore[no-untyped-def]
            conn.exec_driver_sql("BEGIN")

        return Database(path=self.path, engine=engine, write_engine=engine)

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: every query inside sees the same snapshot."""
        try:
            con = self.connect()
        except sqlite3.Error as exc:
            raise StorageError(f"database {self.path}: {exc}") from exc
        try:
            with snapshot(con):
                yield con
        except sqlite3.Error as exc:
            raise StorageError(f"database {self.path}: {exc}") from exc


def _schema_version(con: sqlite3.Connection) -> int:
    if con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'").fetchone() is None:
        return 0
    return int(con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0])


def _loads(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def _finite(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


# -- runs ------------------------------------------------------------------------------------------------------------
def _run_row(con: sqlite3.Connection, run_id: str) -> sqlite3.Row:
    row = con.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"no run {run_id!r} in this database")
    return row


class RunAggregate:
    """Per-run totals kept up to date incrementally, so that polling a run of 100,000 evaluations costs
    milliseconds, not a scan of the candidates table.

    A settled candidate never changes again (pending -> evaluated | cached | failed | resolved is the
    only change, db.store), and new candidates get ever larger rowids.  So each refresh reads only the
    rows past the last rowid seen plus the rows still pending, and checks its status counts against the
    database's own (an index-only query); any mismatch rebuilds it from a full scan."""

    COLUMNS = ("rowid, status, phase, generation, fitness, evaluation_id, seq, resolved_at, "
               "CASE WHEN status = 'resolved' THEN error END")

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.max_rowid = 0
        self.pending: set[int] = set()
        self.counts: Counter[str] = Counter()
        self.groups: dict[tuple[str, int], list[float]] = {}
        self.group_stats: dict[tuple[str, int], dict[str, Any]] = {}
        self.best_by_eval: dict[int, tuple[float, int, int]] = {}  # evaluation id -> (fitness, -seq, rowid)
        self.copies: Counter[int] = Counter()
        self.first_eval: float | None = None
        self.last_eval: float | None = None
        self.reasons: Counter[str] = Counter()
        self.hits: list[tuple[float, int]] = []  # (resolved_at, rowid) of the latest cache hits

    def _absorb(self, rows: Iterable[tuple]) -> None:
        """Count settled and pending rows (a tight loop: a first look at a big run absorbs 100,000s)."""
        counts, groups, group_stats, best, copies = self.counts, self.groups, self.group_stats, self.best_by_eval, \
            self.copies
        pending, reasons, hits = self.pending, self.reasons, self.hits
        isfinite = math.isfinite
        first, last, max_rowid = self.first_eval, self.last_eval, self.max_rowid
        for rowid, status, phase, gen, fit, eid, seq, resolved_at, reason in rows:
            if rowid > max_rowid:
                max_rowid = rowid
            counts[status] += 1
            if status == "pending":
                pending.add(rowid)
                continue
            if fit is not None and isfinite(fit) and status in SETTLED:
                key = (phase, gen)
                vals = groups.get(key)
                if vals is None:
                    groups[key] = [fit]
                else:
                    vals.append(fit)
                group_stats.pop(key, None)
            if eid is not None and fit is not None and (status == "evaluated" or status == "cached"):
                cand = (fit, -seq, rowid)
                prev = best.get(eid)
                if prev is None or cand > prev:
                    best[eid] = cand
                copies[eid] += 1
            if status == "evaluated" and resolved_at is not None:
                if first is None or resolved_at < first:
                    first = resolved_at
                if last is None or resolved_at > last:
                    last = resolved_at
            elif status == "resolved":
                text = reason or ""
                reasons["duplicate" if text.startswith("duplicate of ") else
                        "filtered" if text.startswith("filtered (") else (text or "other")] += 1
            elif status == "cached":
                heapq.heappush(hits, (resolved_at or 0.0, rowid))
                if len(hits) > ERRORS_SHOWN:
                    heapq.heappop(hits)
        self.first_eval, self.last_eval, self.max_rowid = first, last, max_rowid

    def refresh(self, con: sqlite3.Connection) -> None:
        """Bring the totals to `con`'s snapshot (call with `lock` held)."""
        cur = con.cursor()
        cur.row_factory = None  # plain tuples: several times faster than sqlite3.Row for a big first look
        truth = {k: int(v) for k, v in cur.execute(
            "SELECT status, count(*) FROM candidates WHERE run_id = ? GROUP BY status", (self.run_id,))}
        if self.max_rowid == 0:
            self._absorb(cur.execute(f"SELECT {self.COLUMNS} FROM candidates WHERE run_id = ?", (self.run_id,)))
        else:
            self._absorb(cur.execute(f"SELECT {self.COLUMNS} FROM candidates WHERE rowid > ? AND +run_id = ?",
                                     (self.max_rowid, self.run_id)))
        waiting = sorted(self.pending)
        for i in range(0, len(waiting), 500):
            chunk = waiting[i:i + 500]
            marks = ",".join("?" * len(chunk))
            settled = [r for r in cur.execute(f"SELECT {self.COLUMNS} FROM candidates WHERE rowid IN ({marks})", chunk)
                       if r[1] != "pending"]
            for r in settled:
                self.pending.discard(r[0])
                self.counts["pending"] -= 1
            self._absorb(settled)
        if {k: v for k, v in self.counts.items() if v} != truth:  # e.g. another file at this path: start over
            self.reset()
            self._absorb(cur.execute(f"SELECT {self.COLUMNS} FROM candidates WHERE run_id = ?", (self.run_id,)))
        cur.close()

    def generations(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {"discovery": [], "cma": []}
        for key in sorted(self.groups):
            st = self.group_stats.get(key)
            if st is None:
                vals = sorted(self.groups[key])
                st = {"generation": key[1], "n": len(vals), "best": vals[-1], "worst": vals[0],
                      "median": quantile(vals, 0.5), "q1": quantile(vals, 0.25), "q3": quantile(vals, 0.75)}
                self.group_stats[key] = st
            out.setdefault(key[0], []).append(st)
        return out

    def top(self, k: int) -> list[tuple[int, int]]:
        """(rowid, copies) of the k best distinct losses, best first (ties: handed out first)."""
        best = heapq.nlargest(k, self.best_by_eval.items(), key=lambda item: item[1])
        return [(v[2], self.copies[eid]) for eid, v in best]


def _aggregate(db: ReadOnlyDB, con: sqlite3.Connection, run_id: str) -> RunAggregate:
    with db.lock:
        agg = db.aggregates.get(run_id)
        if agg is None:
            agg = db.aggregates[run_id] = RunAggregate(run_id)
    return agg


def run_status(db: ReadOnlyDB, con: sqlite3.Connection, run: sqlite3.Row, now: float | None = None,
               *, detail: bool = False) -> dict[str, Any]:
    """What `glo status` reports (db.queries.status), from one snapshot; with `detail`, also the
    per-generation fitness, the leaderboard and the cache/resolution totals of the run page."""
    rid = run["id"]
    agg = _aggregate(db, con, rid)
    with agg.lock:
        agg.refresh(con)
        counts = dict(agg.counts)
        top = agg.top(LEADERBOARD_SIZE if detail else 1)
        first, last = agg.first_eval, agg.last_eval
        filtered = agg.reasons.get("filtered", 0)  # rejected by the zero-training filter (db.fastread.FILTERED_SQL)
        extra: dict[str, Any] = {}
        if detail:
            extra["generations"] = agg.generations()
            extra["reasons"] = agg.reasons.most_common()
            extra["hits"] = [rowid for _, rowid in sorted(agg.hits, reverse=True)]
    jobs = dict(con.execute("SELECT state, count(*) FROM jobs WHERE run_id = ? GROUP BY state", (rid,)).fetchall())
    in_flight = con.execute(IN_FLIGHT_SQL, (rid,)).fetchone()[0]
    rows = _by_rowid(con, [r for r, _ in top],
                     "uid, infix, tree_json, fitness, phase, generation, origin, status, canonical_key")
    board = [{"candidate_id": rows[r]["uid"], "infix": rows[r]["infix"], "tree": _loads(rows[r]["tree_json"], None),
              "fitness": rows[r]["fitness"], "phase": rows[r]["phase"], "generation": rows[r]["generation"],
              "origin": rows[r]["origin"], "status": rows[r]["status"], "copies": n,
              "canonical_key": rows[r]["canonical_key"]}
             for r, n in top if r in rows]
    config = _loads(run["config_json"], {})
    p = progress(counts, first, last, config, run, time.time() if now is None else now)
    done = p["done"]
    out = {
        "run_id": rid, "name": run["name"], "kind": run_kind(config), "task": run["task"], "backend": run["backend"],
        "status": run["status"], "phase": run["phase"], "generation": run["generation"], "message": run["message"],
        "created_at": run["created_at"], "updated_at": run["updated_at"], "finished_at": run["finished_at"],
        "evaluations": {"done": done, "running": int(in_flight), "failed": int(counts.get("failed", 0)),
                        "cached": int(counts.get("cached", 0)), "resolved": int(counts.get("resolved", 0)),
                        "filtered": int(filtered),
                        "pending": int(counts.get("pending", 0)), "queued": int(jobs.get("queued", 0))},
        "settled": p["settled"], "expected_evaluations": p["expected_evaluations"],
        "best": _best(con, rid, config, board),
        "evaluations_per_hour": p["evaluations_per_hour"], "eta_seconds": p["eta_seconds"],
        "elapsed_seconds": p["elapsed_seconds"],
        "jobs": {k: int(v) for k, v in jobs.items()},
        "steady": steady_progress(con, rid, config),
    }
    if detail:
        out["config"] = config
        out["generation0"] = generation0(tuple(con.execute(GENERATION0_SQL, (rid,)).fetchone()), config)
        out["trainings_per_budget"] = trainings_per_budget(con.execute(TRAININGS_PER_BUDGET_SQL, (rid,)).fetchall())
        out["generations"] = extra["generations"]
        out["leaderboard"] = board
        hits = _by_rowid(con, extra["hits"], "uid, infix, tree_json, fitness, evaluation_id")
        measured = {}
        eids = [h["evaluation_id"] for h in hits.values() if h["evaluation_id"] is not None]
        if eids:
            marks = ",".join("?" * len(eids))
            measured = {r["id"]: r for r in con.execute(
                f"SELECT id, candidate_uid, run_id FROM evaluations WHERE id IN ({marks})", eids)}
        out["cache"] = {
            "resolutions": [{"reason": k, "count": v} for k, v in extra["reasons"]],
            "hits": [{"candidate_id": hits[r]["uid"], "infix": hits[r]["infix"], "fitness": hits[r]["fitness"],
                      "tree": _loads(hits[r]["tree_json"], None),
                      "measured_by": measured[hits[r]["evaluation_id"]]["candidate_uid"]
                      if hits[r]["evaluation_id"] in measured else None,
                      "measured_in": measured[hits[r]["evaluation_id"]]["run_id"]
                      if hits[r]["evaluation_id"] in measured else None}
                     for r in extra["hits"] if r in hits]}
    return out


def _best(con: sqlite3.Connection, rid: str, config: Any, board: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The run's best, as `glo status` and `glo best` define it (db.fastread.BEST_SQL).  Without rungs that is
    the leaderboard's first (the fittest, found from the incremental totals at no cost); a multi-fidelity run's
    best is its fittest at the longest training, which the totals do not track, so it is asked of SQLite."""
    search = config.get("search") if isinstance(config, dict) else None
    if not (isinstance(search, dict) and search.get("fidelity")):
        return None if not board else {k: board[0][k] for k in ("candidate_id", "fitness", "infix", "tree")}
    top = con.execute(BEST_SQL + " LIMIT 1", (rid,)).fetchone()
    if top is None:
        return None
    return {"candidate_id": top[0], "fitness": top[1], "infix": top[2], "tree": _loads(top[3], None)}


def _by_rowid(con: sqlite3.Connection, rowids: list[int], columns: str) -> dict[int, sqlite3.Row]:
    if not rowids:
        return {}
    marks = ",".join("?" * len(rowids))
    return {r["rowid"]: r for r in con.execute(f"SELECT rowid, {columns} FROM candidates WHERE rowid IN ({marks})",
                                               rowids)}


def evaluation_runs(db: ReadOnlyDB) -> list[dict[str, Any]]:
    """The `glo evaluate` runs, oldest first: id, status and the losses they evaluate (labels)."""
    with db.read() as con:
        out = []
        for r in con.execute("SELECT id, status, config_json FROM runs ORDER BY created_at"):
            config = _loads(r["config_json"], {})
            if run_kind(config) != "evaluation":
                continue
            ev = config["evaluate"]
            losses = (ev.get("losses") or []) if isinstance(ev, dict) else []
            labels = [str(d.get("label", "")) if isinstance(d, dict) else str(d) for d in losses]
            out.append({"run_id": r["id"], "status": r["status"], "labels": labels})
        return out


def list_runs(db: ReadOnlyDB) -> list[dict[str, Any]]:
    """Every run, newest first, with its status counts."""
    now = time.time()
    with db.read() as con:
        runs = con.execute("SELECT * FROM runs ORDER BY created_at DESC").fetchall()
        return [run_status(db, con, r, now) for r in runs]


def run_detail(db: ReadOnlyDB, run_id: str) -> dict[str, Any]:
    """Everything the run page shows, from one snapshot."""
    with db.read() as con:
        run = _run_row(con, run_id)
        out = run_status(db, con, run, detail=True)
        out["held_jobs"] = held_jobs(con, run_id)
        out["errors"] = recent_errors(con, run_id)
        out["recent_jobs"] = recent_jobs(con, run_id)
        return out


def _job_dict(r: sqlite3.Row) -> dict[str, Any]:
    return {"job_id": r["id"], "backend_job_id": r["backend_job_id"], "state": r["state"], "attempts": r["attempts"],
            "hold_reason": r["hold_reason"], "hold_code": r["hold_code"], "hold_subcode": r["hold_subcode"],
            "host": r["host"], "evictions": r["evictions"], "releases": r["releases"],
            "bad_nodes": _loads(r["bad_nodes_json"], []), "last_error": r["last_error"],
            "created_at": r["created_at"], "updated_at": r["updated_at"], "submitted_at": r["submitted_at"],
            "started_at": r["started_at"], "finished_at": r["finished_at"]}


def held_jobs(con: sqlite3.Connection, run_id: str) -> list[dict[str, Any]]:
    """Jobs held now (first), then jobs that were held and were released or resubmitted, latest first."""
    rows = con.execute(
        "SELECT * FROM jobs WHERE run_id = ? AND (state = 'held' OR hold_code IS NOT NULL OR hold_reason != '') "
        "ORDER BY state != 'held', updated_at DESC LIMIT ?", (run_id, HELD_JOBS_SHOWN)).fetchall()
    out = []
    for r in rows:
        d = _job_dict(r)
        d["last_error"] = (d["last_error"] or "")[:500]
        out.append(d)
    return out


def recent_errors(con: sqlite3.Connection, run_id: str) -> dict[str, list[dict[str, Any]]]:
    """The latest job errors and the latest candidates given up on (with their reasons)."""
    jobs = con.execute("SELECT id, state, attempts, host, last_error, updated_at FROM jobs WHERE run_id = ? "
                       "AND last_error != '' ORDER BY updated_at DESC LIMIT ?", (run_id, ERRORS_SHOWN)).fetchall()
    cands = con.execute("SELECT uid, infix, tree_json, error, resolved_at FROM candidates WHERE run_id = ? AND status = 'failed' "
                        "ORDER BY resolved_at DESC LIMIT ?", (run_id, ERRORS_SHOWN)).fetchall()
    return {"jobs": [{"job_id": r["id"], "state": r["state"], "attempts": r["attempts"], "host": r["host"],
                      "error": (r["last_error"] or "")[:2000], "at": r["updated_at"]} for r in jobs],
            "candidates": [{"candidate_id": r["uid"], "infix": r["infix"], "tree": _loads(r["tree_json"], None),
                            "error": (r["error"] or "")[:2000],
                            "at": r["resolved_at"]} for r in cands]}


def recent_jobs(con: sqlite3.Connection, run_id: str) -> list[dict[str, Any]]:
    rows = con.execute("SELECT j.*, (SELECT count(*) FROM job_candidates jc WHERE jc.job_id = j.id) AS n "
                       "FROM jobs j WHERE j.run_id = ? ORDER BY j.id DESC LIMIT ?",
                       (run_id, RECENT_JOBS_SHOWN)).fetchall()
    out = []
    for r in rows:
        d = _job_dict(r)
        d["candidates"] = r["n"]
        d["last_error"] = (d["last_error"] or "")[:300]
        out.append(d)
    return out


# -- candidates, jobs, evaluations -------------------------------------------------------------------------------------
def _evaluation_dict(r: sqlite3.Row) -> dict[str, Any]:
    metrics = _loads(r["metrics_json"], {})
    return {"id": r["id"], "task": r["task"], "budget": _loads(r["budget_json"], {}), "steps": r["steps"],
            "seed_policy": r["seed_policy"], "status": r["status"], "fitness": r["fitness"],
            "validation_accuracy": _finite(metrics.get("validation_accuracy")),
            "test_accuracy": _finite(metrics.get("test_accuracy")), "metrics": metrics,
            "coefficients": _loads(r["coefficients_json"], []), "canonical_key": r["canonical_key"],
            "wall_seconds": r["wall_seconds"], "train_seconds": r["train_seconds"], "device": r["device"],
            "run_id": r["run_id"], "candidate_uid": r["candidate_uid"], "created_at": r["created_at"]}


def candidate_detail(db: ReadOnlyDB, uid: str) -> dict[str, Any]:
    """One candidate: its own fields, the evaluation its fitness came from, every evaluation of the same
    function (other budgets, tasks, seeds), its parents and the jobs that carried it."""
    with db.read() as con:
        c = con.execute("SELECT * FROM candidates WHERE uid = ?", (uid,)).fetchone()
        if c is None:
            raise NotFoundError(f"no candidate {uid!r} in this database")
        run = _run_row(con, c["run_id"])
        ev = None
        if c["evaluation_id"] is not None:
            e = con.execute("SELECT * FROM evaluations WHERE id = ?", (c["evaluation_id"],)).fetchone()
            ev = _evaluation_dict(e) if e is not None else None
        same = [_evaluation_dict(e) for e in con.execute(
            "SELECT * FROM evaluations WHERE canonical_key = ? ORDER BY task, steps, seed_policy, id LIMIT 500",
            (c["canonical_key"],))]
        parents = []
        for pid in _loads(c["parents_json"], []):
            p = con.execute("SELECT uid, infix, fitness, status, origin FROM candidates WHERE uid = ?",
                            (f"{c['run_id']}/{pid}",)).fetchone()
            parents.append({"search_id": pid, "candidate_id": p["uid"] if p else None,
                            "infix": p["infix"] if p else None, "fitness": p["fitness"] if p else None,
                            "origin": p["origin"] if p else None})
        jobs = con.execute("SELECT j.* FROM job_candidates jc JOIN jobs j ON j.id = jc.job_id "
                           "WHERE jc.candidate_uid = ? ORDER BY j.id", (uid,)).fetchall()
        config = _loads(run["config_json"], {})
        return {
            "candidate_id": c["uid"], "run_id": c["run_id"], "run_name": run["name"], "run_task": run["task"],
            "search_id": c["search_id"], "seq": c["seq"], "infix": c["infix"], "tree": _loads(c["tree_json"], None),
            "coefficients": _loads(c["coefficients_json"], []), "canonical_key": c["canonical_key"],
            "eval_key": c["eval_key"], "generation": c["generation"], "phase": c["phase"], "origin": c["origin"],
            "parents": parents, "status": c["status"], "fitness": c["fitness"], "error": c["error"],
            "told": bool(c["told"]), "created_at": c["created_at"], "resolved_at": c["resolved_at"],
            "evaluation": ev, "same_function": same, "jobs": [_job_dict(j) for j in jobs],
            "task_config": config.get("task", {}) if isinstance(config, dict) else {},
        }


def evaluations_of_key(db: ReadOnlyDB, canonical_key: str, limit: int = 500) -> list[dict[str, Any]]:
    """Every training of one function (by canonical key), any run, task, budget or seed."""
    with db.read() as con:
        return [_evaluation_dict(e) for e in con.execute(
            "SELECT * FROM evaluations WHERE canonical_key = ? ORDER BY task, steps, seed_policy, id LIMIT ?",
            (canonical_key, limit))]


def job_detail(db: ReadOnlyDB, job_id: int) -> dict[str, Any]:
    with db.read() as con:
        j = con.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if j is None:
            raise NotFoundError(f"no job {job_id} in this database")
        out = _job_dict(j)
        out.update(run_id=j["run_id"], backend=j["backend"], work_dir=j["work_dir"],
                   lease_deadline=j["lease_deadline"])
        out["candidates"] = [{"candidate_id": r["uid"], "infix": r["infix"], "status": r["status"],
                              "fitness": r["fitness"], "error": r["error"]} for r in con.execute(
            "SELECT c.uid, c.infix, c.status, c.fitness, c.error FROM job_candidates jc "
            "JOIN candidates c ON c.uid = jc.candidate_uid WHERE jc.job_id = ? ORDER BY c.seq", (job_id,))]
        out["attempts_history"] = [attempt_json(a) for a in con.execute(ATTEMPTS_SQL, (job_id,))]
        return out


def evaluation_groups(db: ReadOnlyDB, *, min_seeds: int = 2, limit: int = 200) -> dict[str, Any]:
    """Evaluations of one function under one task and budget with several seeds (what `glo evaluate`-style
    repeated trainings produce), summarised: n, mean and sd of validation and test accuracy, and every
    curve recorded.  A search's own evaluations (one seed each) are counted, not listed."""
    with db.read() as con:
        total = con.execute("SELECT count(*) FROM evaluations").fetchone()[0]
        groups = con.execute(
            "SELECT canonical_key, task, budget_json, count(*) AS n, min(candidate_uid) AS candidate_uid "
            "FROM evaluations GROUP BY canonical_key, task, budget_json HAVING count(*) >= ? "
            "ORDER BY task, avg(fitness) DESC LIMIT ?", (min_seeds, limit)).fetchall()
        out = []
        for g in groups:
            rows = [_evaluation_dict(r) for r in con.execute(
                "SELECT * FROM evaluations WHERE canonical_key = ? AND task = ? AND budget_json = ? ORDER BY seed_policy",
                (g["canonical_key"], g["task"], g["budget_json"]))]
            infix = None
            for r in rows:
                if r["candidate_uid"]:
                    c = con.execute("SELECT infix FROM candidates WHERE uid = ?", (r["candidate_uid"],)).fetchone()
                    if c is not None:
                        infix = c["infix"]
                        break
            out.append({"canonical_key": g["canonical_key"], "task": g["task"], "budget": _loads(g["budget_json"], {}),
                        "n": g["n"], "infix": infix, "candidate_id": next((r["candidate_uid"] for r in rows
                                                                          if r["candidate_uid"]), None),
                        "evaluations": rows})
        return {"total_evaluations": total, "groups": out}
