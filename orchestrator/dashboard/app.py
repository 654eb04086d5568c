"""The dashboard's web application (Starlette): a few JSON endpoints and the static page that draws them.

Read-only by construction: only GET/HEAD routes exist, and the database is opened by
db.dashboard_queries.ReadOnlyDB (`mode=ro`, `query_only`).  The page is one static HTML file plus
app.js, which fetches JSON and inserts every value from the database as text (DOM text nodes, never
innerHTML); the Content-Security-Policy allows scripts from this server only, so even a string that
looked like markup could not run.
"""

from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from db import dashboard_queries as q
from db.errors import NotFoundError, StorageError
from orchestrator.dashboard import analysis
from orchestrator.experiments.evidence import GRID_RUNS_SQL, comparison_for, fair_comparisons
from worker.spec import collapse_reason

STATIC = Path(__file__).resolve().parent / "static"
PAGES = ("/", "/run", "/candidate", "/job", "/evaluations")
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "[::1]", "::1", "testserver"]

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]


class SecurityHeaders:
    """Adds the CSP and friends to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in SECURITY_HEADERS if k not in names]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def clean(value: Any) -> Any:
    """JSON-safe data: non-finite floats become null (JSON has no NaN; the page shows '-')."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(clean(data), status_code=status)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _scheduler(db: q.ReadOnlyDB, run: dict[str, Any]) -> dict[str, Any]:
    from orchestrator.run.lock import scheduler_info

    try:
        info = scheduler_info(db.path, run["run_id"])
    except OSError as exc:
        info = {"alive": False, "pid": None, "host": None, "log": None, "error": str(exc)}
    info["died"] = (not info.get("alive")) and run["status"] == "running"
    return {k: info.get(k) for k in ("alive", "pid", "host", "started_at", "log", "error", "died")}


def evaluation_view(db: q.ReadOnlyDB, run_id: str, status: str | None = None) -> dict[str, Any]:
    """A `glo evaluate` run's statistics table (mean ± sd of test accuracy, Welch and paired p-values against
    the baseline) and mean test-accuracy curves, through the evaluate feature's own read function and
    statistics (db.queries.evaluation_results, orchestrator.experiments.stats) when this GLO has them."""
    try:
        from db.queries import evaluation_results
        from orchestrator.experiments.stats import chosen_rate_rows, summarize
    except ImportError:
        return {"run_id": run_id, "status": status,
                "error": "This GLO cannot read evaluation results yet (glo evaluate is missing): update GLO."}
    try:
        results = evaluation_results(db.sqlalchemy(), run_id)
        summary = summarize(results)
        chosen = chosen_rate_rows(results)
    except (NotFoundError, StorageError) as exc:
        return {"run_id": run_id, "status": status, "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - a partly written run must not break the page
        return {"run_id": run_id, "status": status, "error": f"cannot summarise this evaluation yet: {exc}"}
    records = results.get("records") or []
    fractions = sorted({float(r.get("fraction", 1.0)) for r in records}) or [1.0]
    frac = fractions[-1]
    curves = []
    for loss in [d["label"] if isinstance(d, dict) else str(d) for d in results.get("losses") or []]:
        by_step: dict[float, list[float]] = {}
        for r in records:
            if r.get("loss") != loss or float(r.get("fraction", 1.0)) != frac or r.get("status") != "ok":
                continue
            for point in r.get("test_curve") or []:
                try:
                    step, acc = float(point[0]), float(point[1])
                except (TypeError, ValueError, IndexError):
                    continue
                if math.isfinite(acc):
                    by_step.setdefault(step, []).append(acc)
        if by_step:
            curves.append({"label": loss, "points": [[st, sum(v) / len(v)] for st, v in sorted(by_step.items())]})
    baseline = next((row.get("baseline") for row in summary if row.get("baseline")), None)
    return {"run_id": run_id, "status": results.get("status", status), "task": results.get("task"),
            "steps": results.get("steps"), "data_label": results.get("data_label"), "baseline": baseline,
            "summary": summary, "curves": curves, "losses": results.get("losses"),
            "learning_rate": results.get("learning_rate"), "learning_rates": results.get("learning_rates"),
            "summary_chosen_rates": chosen}


def _fair_comparisons(db: q.ReadOnlyDB) -> dict[str, Any]:
    """Every loss that an evaluation with a learning-rate grid tested against ce at ce's best rate
    (orchestrator.experiments.evidence); {} when the file holds none -- checked first with one cheap read."""
    with db.read() as con:
        if con.execute(GRID_RUNS_SQL + " limit 1").fetchone() is None:
            return {}
    try:
        return fair_comparisons(db.sqlalchemy())
    except Exception:  # noqa: BLE001 - an evaluation still being written must not break the run page
        return {}


def create_app(db_path: str | os.PathLike[str], *, allowed_hosts: list[str] | None = None,
               warm: bool = True) -> Starlette:
    """The app for one database.  `allowed_hosts` (the Host header's name) defaults to loopback names, which
    keeps a web page elsewhere from reaching this server through DNS rebinding; pass ["*"] for any."""
    db = q.ReadOnlyDB(db_path)

    def guarded(fn):  # type: ignore[no-untyped-def]
        def endpoint(request: Request) -> Response:
            try:
                return fn(request)
            except NotFoundError as exc:
                return _error(404, str(exc))
            except StorageError as exc:
                return _error(503, str(exc))

        return endpoint

    def page(_request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    @guarded
    def api_meta(_request: Request) -> Response:
        return _json({"db": str(db.path), "schema_version": db.version, "server_time": time.time(),
                      "read_only": True})

    @guarded
    def api_runs(_request: Request) -> Response:
        runs = q.list_runs(db)
        for r in runs:
            r["scheduler"] = _scheduler(db, r)
            if r["best"] is not None:
                r["best"]["short"] = analysis.short_formula(r["best"].pop("tree"), r["best"]["infix"])
        return _json({"db": str(db.path), "server_time": time.time(), "runs": runs})

    @guarded
    def api_run(request: Request) -> Response:
        rid = request.query_params.get("id")
        if not rid:
            return _error(400, "missing ?id=RUN_ID")
        run = q.run_detail(db, rid)
        run["scheduler"] = _scheduler(db, run)
        if run["kind"] == "evaluation":
            run["evaluation"] = evaluation_view(db, rid, run["status"])
        if run["best"] is not None:
            run["best"]["short"] = analysis.short_formula(run["best"].pop("tree"), run["best"]["infix"])
        for item in run["errors"]["candidates"] + run["cache"]["hits"]:
            item["short"] = analysis.short_formula(item.pop("tree", None), item["infix"])
        fair = _fair_comparisons(db) if run["leaderboard"] else {}
        for row in run["leaderboard"]:
            tree = row.pop("tree")
            row["short"] = analysis.short_formula(tree, row["infix"])
            row["shape"] = analysis.loss_shape(tree)
            found = comparison_for(fair, row["candidate_id"], row.get("canonical_key")) if fair else None
            row["vs_tuned_ce"] = None if found is None else {"beats": found.beats, "verdict": found.verdict(),
                                                             "sentence": found.sentence()}
        run["fair_evidence"] = bool(fair)
        run["server_time"] = time.time()
        return _json(run)

    @guarded
    def api_candidate(request: Request) -> Response:
        uid = request.query_params.get("uid")
        if not uid:
            return _error(400, "missing ?uid=RUN_ID/CANDIDATE")
        c = q.candidate_detail(db, uid)
        if c["evaluation"] is not None:  # why a training that ran to the end scored 0 (worker/collapse.py)
            c["evaluation"]["collapse_reason"] = collapse_reason(c["evaluation"]["metrics"].get("extra"))
        tree = c["tree"]
        c["short"] = analysis.short_formula(tree, c["infix"])
        c["shape"] = analysis.loss_shape(tree)
        c["tree_view"] = analysis.tree_view(tree)
        c["keras"] = analysis.keras_code(tree, uid=c["candidate_id"], fitness=c["fitness"], task=c["run_task"],
                                         task_config=c["task_config"])
        groups: dict[tuple[str, str, str], dict[str, Any]] = {}
        base = analysis.baseline_key()
        baseline = q.evaluations_of_key(db, base) if base and base != c["canonical_key"] else []
        for e in c["same_function"] + baseline:  # cross-entropy's trainings: the p-values' reference
            key = (e["canonical_key"], e["task"], analysis._budget_key(e["budget"]))
            g = groups.setdefault(key, {"task": e["task"], "budget": e["budget"], "canonical_key": e["canonical_key"],
                                        "n": 0, "evaluations": []})
            g["n"] += 1
            g["evaluations"].append(e)
        c["evaluation_groups"] = [g for g in analysis.summarize_groups(list(groups.values()))
                                  if g["canonical_key"] == c["canonical_key"]]
        c["evaluation_runs"] = [evaluation_view(db, e["run_id"], e["status"]) for e in q.evaluation_runs(db)
                                if c["candidate_id"] in e["labels"]]
        return _json(c)

    @guarded
    def api_job(request: Request) -> Response:
        try:
            job_id = int(request.query_params.get("id", ""))
        except ValueError:
            return _error(400, "missing or bad ?id=JOB_ID (a number)")
        return _json(q.job_detail(db, job_id))

    @guarded
    def api_evaluations(_request: Request) -> Response:
        data = q.evaluation_groups(db)
        groups = analysis.summarize_groups(data["groups"])
        for g in groups:
            if g["infix"] is None and g["candidate_id"] is None:
                g["infix"] = g["canonical_key"]
        runs = [evaluation_view(db, e["run_id"], e["status"]) for e in q.evaluation_runs(db)]
        return _json({"db": str(db.path), "total_evaluations": data["total_evaluations"], "groups": groups,
                      "evaluation_runs": runs})

    routes = [Route(p, page, methods=["GET", "HEAD"]) for p in PAGES] + [
        Route("/api/meta", api_meta, methods=["GET", "HEAD"]),
        Route("/api/runs", api_runs, methods=["GET", "HEAD"]),
        Route("/api/run", api_run, methods=["GET", "HEAD"]),
        Route("/api/candidate", api_candidate, methods=["GET", "HEAD"]),
        Route("/api/job", api_job, methods=["GET", "HEAD"]),
        Route("/api/evaluations", api_evaluations, methods=["GET", "HEAD"]),
        Mount("/static", app=StaticFiles(directory=str(STATIC)), name="static"),
    ]
    middleware = [Middleware(SecurityHeaders),
                  Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts or LOOPBACK_HOSTS)]
    app = Starlette(routes=routes, middleware=middleware)
    app.state.db = db
    if warm:
        threading.Thread(target=_warm, args=(db,), name="glo-dashboard-warm", daemon=True).start()
    return app


def _warm(db: q.ReadOnlyDB) -> None:
    """Read every run's totals once in the background, so that the first look at a big run is fast too."""
    try:
        q.list_runs(db)
        analysis.baseline_key()
    except Exception:  # noqa: BLE001 - a request will report the same problem properly
        pass
