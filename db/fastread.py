"""`glo status` answered with the standard library's sqlite3 alone: the same answer as `db.queries.status`.

A read command should import only what it reads with.  Through SQLAlchemy's ORM, `glo status` spent most of
its time importing (SQLAlchemy, the models) before it read a row; here it opens the file read-only
(`mode=ro`), reads in one transaction (one WAL snapshot, as db.queries does) and returns plain data.

Only a database at exactly the schema version below is read this way.  Anything else -- an older file that
db.session would upgrade first, a newer one it refuses, no schema at all, a file SQLite cannot open
read-only -- returns None and the caller takes the full path (db.queries), which says or does what is right.
tests/test_worker_fused.py checks that both paths answer the same and that the version is db.migrations'.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from db.errors import NotFoundError, StorageError
from db.paths import resolve_db_path

SCHEMA_VERSION = 5  # = db.migrations.SCHEMA_VERSION (not imported: that module imports SQLAlchemy)
HELD_JOBS_SHOWN = 20  # how many held jobs `glo status` lists (db.queries and the dashboard use this one too)


def run_kind(config: Any) -> str:
    """'evaluation' for a `glo evaluate` run (its stored config has an [evaluate] section), else 'search'."""
    return "evaluation" if isinstance(config, dict) and config.get("evaluate") else "search"

#: Generation 0's members and how many of them could train (the search resolves the others as "invalid"):
#: the evidence that the initial population is not wasted (db.queries runs this same statement).  A member's
#: training at a higher rung is a candidate of its generation too (origin "promoted", one of
#: orchestrator.search.candidate.ORIGINS), not another member.
GENERATION0_SQL = ("SELECT count(*), coalesce(sum(status = 'resolved' AND (error = 'invalid' OR error LIKE "
                   "'filtered%')), 0) FROM candidates WHERE run_id = ? AND phase = 'discovery' AND generation = 0 "
                   "AND origin != 'promoted'")
#: Candidates the zero-training filter rejected (the search stores its reason as "filtered (...): ...").
FILTERED_SQL = "SELECT count(*) FROM candidates WHERE run_id = ? AND status = 'resolved' AND error LIKE 'filtered%'"
#: Trainings per budget (steps): a multi-fidelity search's trainings per rung, the evidence of what promotion
#: costs (each rung is an ordinary training with its own cache key; db.queries and the dashboard run it too).
TRAININGS_PER_BUDGET_SQL = ("SELECT e.steps, count(*) FROM candidates c JOIN evaluations e ON e.id = c.evaluation_id "
                            "WHERE c.run_id = ? AND c.status = 'evaluated' GROUP BY e.steps ORDER BY e.steps")


#: The candidate a training belongs to for "best": a promotion's further training seeds (search id
#: `g<gen>-<i>-r<rung>-s<k>`, search.fidelity.seeds) belong to its first, `g<gen>-<i>-r<rung>`; every other
#: candidate is its own.
_BEST_GROUP = ("CASE WHEN c.origin = 'promoted' AND instr(c.search_id, '-s') > 0 "
               "THEN substr(c.search_id, 1, instr(c.search_id, '-s') - 1) ELSE c.search_id END")
#: A run's measured candidates, best first: the longest training first (a multi-fidelity search's top rung
#: and CMA-ES samples outrank what only had the short budget), then fitness, then hand-out order.  A promotion
#: trained on several seeds is one row: its first training's uid, the mean fitness over its seeds (a failed
#: one counts 0, as the search tells it) and `trainings`.  The one definition of "best" (db.queries' best and
#: status run it too).
BEST_SQL = ("SELECT c.run_id || '/' || " + _BEST_GROUP + " AS uid, avg(coalesce(c.fitness, 0)) AS fitness, "
            "c.infix, c.tree_json, count(*) AS trainings, max(coalesce(e.steps, 0)) AS steps "
            "FROM candidates c LEFT JOIN evaluations e ON e.id = c.evaluation_id "
            "WHERE c.run_id = ? AND (c.status IN ('evaluated', 'cached') AND c.fitness IS NOT NULL "
            "OR c.origin = 'promoted' AND c.status = 'failed') "
            "GROUP BY " + _BEST_GROUP + " HAVING sum(c.status != 'failed') > 0 "
            "ORDER BY steps DESC, fitness DESC, min(c.seq)")


#: A steady-state search's discovery trainings settled so far (its budget is search.ga.max_trainings).
DISCOVERY_TRAININGS_SQL = ("SELECT count(*) FROM candidates WHERE run_id = ? AND phase = 'discovery' "
                           "AND status IN ('evaluated', 'cached', 'failed')")


def steady_progress(con: Any, run_id: str, config: dict[str, Any]) -> dict[str, Any] | None:
    """A steady-state search's progress in trainings, {"mode", "trainings", "max_trainings"} (None for a
    generational search or an evaluation, whose progress is the generation): what `glo status`, db.queries
    and the dashboard show instead of a generation number."""
    ga = config.get("search", {}).get("ga", {}) if isinstance(config, dict) else {}
    if ga.get("mode") != "steady-state" or run_kind(config) != "search":
        return None
    done = con.execute(DISCOVERY_TRAININGS_SQL, (run_id,)).fetchone()[0]
    return {"mode": "steady-state", "trainings": int(done or 0), "max_trainings": int(ga.get("max_trainings", 0))}


def generation0(row: tuple[int, int], config: dict[str, Any]) -> dict[str, Any] | None:
    """GENERATION0_SQL's row as `glo status` reports it (None for a run without a discovery phase)."""
    members, untrainable = int(row[0] or 0), int(row[1] or 0)
    if not members:
        return None
    init = config.get("search", {}).get("ga", {}).get("init", "paper")  # runs older than ga.init drew the paper's way
    return {"members": members, "trainable": members - untrainable, "init": init}


def trainings_per_budget(rows: Any) -> list[dict[str, int]]:
    """TRAININGS_PER_BUDGET_SQL's rows as `glo status --json` reports them: [{"steps", "trainings"}, ...]."""
    return [{"steps": int(steps), "trainings": int(n)} for steps, n in rows if steps is not None]


def expected_evaluations(config: dict[str, Any]) -> int:
    """About how many candidates a run hands out -- an evaluation's grid (losses x fractions x seeds, and with a
    learning-rate grid its selection trainings and at most the seeds again at the chosen rates), a search's
    GA generations, promotions and CMA-ES budget -- the one formula for `glo status`, db.queries, the dashboard
    and the scheduler's progress bar.  0 for a config it cannot read."""
    try:
        ev = config.get("evaluate") if isinstance(config, dict) else None
        if isinstance(ev, dict):
            # per loss and fraction: the test seeds at the task's rate; with a rate grid, each rate's selection
            # seeds and, at most, the test seeds once more at the chosen rate
            seeds = len(ev.get("seeds") or [])
            grid = len(ev.get("learning_rates") or [])
            per_loss = seeds + (grid * len(ev.get("selection_seeds") or []) + seeds if grid else 0)
            return len(ev.get("losses") or []) * max(1, len(ev.get("fractions") or [1.0])) * per_loss
        return _expected_search(config)
    except (TypeError, ValueError, AttributeError):
        return 0


def _expected_search(config: dict[str, Any]) -> int:
    search = config.get("search", {})
    ga, cma = search.get("ga", {}), search.get("cma", {})
    pop, gens = int(ga.get("population_size", 80)), int(ga.get("generations", 20))
    elites = int(ga.get("elites", 6))
    top_k, iters = int(cma.get("top_k", 1)), int(cma.get("iterations", 50))
    popsize = cma.get("popsize") or 4 + int(3 * math.log(6))  # ~6 coefficients
    if ga.get("mode") == "steady-state":  # its budget, promotions included, is exact
        return int(ga.get("max_trainings", pop * gens)) + top_k * iters * int(popsize)
    promoted = 0  # [search.fidelity]: at most the promoted fraction of each rung's members, per generation,
    fidelity = search.get("fidelity")  # each trained on fidelity.seeds seeds
    if fidelity:
        members = pop - elites
        for _rung in fidelity.get("steps", []):
            members = math.ceil(float(fidelity.get("promote_fraction", 0.25)) * members)
            promoted += members * int(fidelity.get("seeds", 1))
    return pop + (gens - 1) * (pop - elites) + gens * promoted + top_k * iters * int(popsize)


def quantile(sorted_vals: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of already sorted values: the dashboard's and the
    report figures' medians and quartiles."""
    pos = (len(sorted_vals) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


#: Candidates of a run waiting in a job that is submitted, running or held: "in flight" wherever it is shown.
IN_FLIGHT_SQL = ("SELECT count(*) FROM job_candidates jc JOIN jobs j ON j.id = jc.job_id "
                 "JOIN candidates c ON c.uid = jc.candidate_uid "
                 "WHERE j.run_id = ? AND j.state IN ('submitted', 'running', 'held') AND c.status = 'pending'")
#: Candidate states that count as done for progress (a result, a cache hit, a failure, or settled untrained).
SETTLED = ("evaluated", "cached", "failed", "resolved")


def progress(counts: dict[str, int], first_eval: float | None, last_eval: float | None, config: dict[str, Any],
             run: Any, now: float) -> dict[str, Any]:
    """Rate, expected total, time left and elapsed time of a run, from its candidate counts per status and
    the first and last times a training came back: the one formula `glo status` and the dashboard show.
    The rate counts trainings between the first result and the last; a run that is not running has no
    time left to estimate (finished: 0)."""
    done = int(counts.get("evaluated", 0))
    settled = sum(int(counts.get(k, 0)) for k in SETTLED)
    rate = None
    if done >= 2 and first_eval is not None and last_eval is not None and last_eval > first_eval:
        rate = (done - 1) / (last_eval - first_eval) * 3600.0
    expected = expected_evaluations(config)
    eta = None
    if run["status"] == "finished":
        eta = 0.0
    elif rate and rate > 0 and run["status"] == "running":
        eta = max(0.0, expected - settled) / rate * 3600.0
    end = run["finished_at"] or (now if run["status"] == "running" else run["updated_at"])
    return {"done": done, "settled": settled, "evaluations_per_hour": rate, "expected_evaluations": expected,
            "eta_seconds": eta, "elapsed_seconds": max(0.0, end - run["created_at"])}


#: A job's attempts, oldest first (db.queries, db.store and the dashboard read them with this one query).
ATTEMPTS_SQL = "SELECT * FROM job_attempts WHERE job_id = ? ORDER BY attempt, id"


def attempt_json(r: Any) -> dict[str, Any]:
    """One job_attempts row as plain data: what `glo show RUN/job-N`, `glo status --json` and the dashboard's
    job page show for each attempt."""
    return {"attempt": r["attempt"], "backend_job_id": r["backend_job_id"], "host": r["host"] or "",
            "submitted_at": r["submitted_at"], "started_at": r["started_at"], "ended_at": r["ended_at"],
            "outcome": r["outcome"] or "", "error": r["error"] or "", "hold_code": r["hold_code"],
            "hold_subcode": r["hold_subcode"], "hold_reason": r["hold_reason"] or "", "holds": r["holds"] or 0,
            "releases": r["releases"] or 0, "evictions": r["evictions"] or 0, "exit_code": r["exit_code"],
            "exit_signal": r["exit_signal"],
            "notes": [{"at": at, "what": what} for at, what in json.loads(r["notes_json"] or "[]")]}


def no_result_warning(status: str, evaluations: dict[str, int], best: dict[str, Any] | None) -> str | None:
    """Why a finished run has nothing to use -- not one candidate trained, or a best fitness of 0 -- or None.

    A search whose every tree lacked x or y "finishes" having trained nothing; saying only "finished" would
    let the user take its best ("-") for a result.  `glo status` shows this line and `glo run` prints it and
    exits with orchestrator.cli.runs.EXIT_NO_RESULT (db.queries uses this one too)."""
    if status != "finished":
        return None
    trained = evaluations.get("done", 0) + evaluations.get("cached", 0)
    if trained == 0:
        return (f"no usable result: not one candidate was trained ({evaluations.get('resolved', 0)} resolved by "
                f"the search without training, {evaluations.get('failed', 0)} failed)")
    if best is None or not (best.get("fitness") or 0.0) > 0.0:
        return f"no usable result: the best fitness of the {trained} trained candidate(s) is 0"
    return None


def _connect(path: Path) -> sqlite3.Connection | None:
    try:
        con = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True, timeout=30, isolation_level=None)
        con.execute("PRAGMA busy_timeout=30000")
        con.execute("PRAGMA query_only=ON")
        has = con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'").fetchone()
        version = con.execute("SELECT max(version) FROM schema_version").fetchone()[0] if has else None
    except sqlite3.Error:
        return None
    if version != SCHEMA_VERSION:
        con.close()
        return None
    return con


def status(db_path: str | os.PathLike[str] | None, run_id: str | None = None) -> tuple[dict[str, Any], Path] | None:
    """(db.queries.Status.to_json() of the run -- the latest when None --, the database's path), or None when
    only the full path can answer.  A missing file and an unknown run raise what db.session / db.queries raise."""
    path = resolve_db_path(db_path)
    if not path.exists():
        raise StorageError(f"no GLO database at {path} (pass --db PATH or set GLO_DB)")
    con = _connect(path)
    if con is None:
        return None
    try:
        with snapshot(con):
            return read_status(con, run_id), path
    except sqlite3.Error:
        return None


@contextmanager
def snapshot(con: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One read transaction on `con`, then `con` closed: every query inside sees the same snapshot, and the
    ROLLBACK says nothing was meant to be written (the dashboard's reads and `glo status`'s share it)."""
    try:
        con.execute("BEGIN")
        yield con
    finally:
        try:
            con.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        con.close()


def read_status(con: sqlite3.Connection, run_id: str | None) -> dict[str, Any]:
    """The status of a run (default: the latest) on an open connection, inside the caller's transaction:
    what `glo status`, `--json` and db.queries.Status hold."""
    con.row_factory = sqlite3.Row
    rid = run_id
    if rid is None:
        row = con.execute("SELECT id FROM runs ORDER BY created_at DESC LIMIT 1").fetchone()
        if row is None:
            raise NotFoundError("no runs in this database yet")
        rid = row["id"]
    run = con.execute("SELECT * FROM runs WHERE id = ?", (rid,)).fetchone()
    if run is None:
        raise NotFoundError(f"no run {rid!r} in this database (see `glo runs`)")
    rid = run["id"]
    counts = dict(con.execute("SELECT status, count(*) FROM candidates WHERE run_id = ? GROUP BY status", (rid,)).fetchall())
    jobs = dict(con.execute("SELECT state, count(*) FROM jobs WHERE run_id = ? GROUP BY state", (rid,)).fetchall())
    running = con.execute(IN_FLIGHT_SQL, (rid,)).fetchone()[0]
    best = con.execute(BEST_SQL + " LIMIT 1", (rid,)).fetchone()
    first, last = con.execute("SELECT min(resolved_at), max(resolved_at) FROM candidates "
                              "WHERE run_id = ? AND status = 'evaluated'", (rid,)).fetchone()
    held = con.execute(
        "SELECT id, backend_job_id, state, attempts, hold_reason, hold_code, hold_subcode, host, releases, last_error "
        "FROM jobs WHERE run_id = ? AND (state = 'held' OR hold_code IS NOT NULL) "
        "ORDER BY (state != 'held'), updated_at DESC LIMIT ?", (rid, HELD_JOBS_SHOWN)).fetchall()

    gen0 = con.execute(GENERATION0_SQL, (rid,)).fetchone()
    filtered = con.execute(FILTERED_SQL, (rid,)).fetchone()[0]
    per_budget = trainings_per_budget(con.execute(TRAININGS_PER_BUDGET_SQL, (rid,)).fetchall())
    config = json.loads(run["config_json"])
    p = progress(counts, first, last, config, run, time.time())
    done = p["done"]
    evaluations = {"done": done, "running": int(running or 0), "failed": counts.get("failed", 0),
                   "cached": counts.get("cached", 0), "resolved": counts.get("resolved", 0),
                   "filtered": int(filtered or 0), "queued": int(jobs.get("queued", 0))}
    best_json = None if best is None else {"candidate_id": best["uid"], "fitness": best["fitness"],
                                           "infix": best["infix"]}
    return {
        "run_id": rid, "name": run["name"], "status": run["status"], "phase": run["phase"],
        "generation": run["generation"], "task": run["task"],
        "evaluations": evaluations, "best": best_json,
        "evaluations_per_hour": p["evaluations_per_hour"], "eta_seconds": p["eta_seconds"],
        "expected_evaluations": p["expected_evaluations"], "elapsed_seconds": p["elapsed_seconds"],
        "message": run["message"], "backend": run["backend"], "jobs": {k: int(v) for k, v in jobs.items()},
        "held_jobs": [{"job_id": j["id"], "backend_job_id": j["backend_job_id"], "state": j["state"],
                       "attempts": j["attempts"], "hold_reason": j["hold_reason"], "hold_code": j["hold_code"],
                       "hold_subcode": j["hold_subcode"], "host": j["host"], "releases": j["releases"],
                       "last_error": j["last_error"][:500],
                       "attempts_history": [attempt_json(a) for a in con.execute(ATTEMPTS_SQL, (j["id"],))]}
                      for j in held],
        "warning": no_result_warning(run["status"], evaluations, best_json),
        "generation0": generation0(tuple(gen0), config),
        "trainings_per_budget": per_budget,
        "steady": steady_progress(con, rid, config),
    }
