"""`glo run/runs/status/best/show/export/cancel`: a thin CLI over orchestrator.runner and queries."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from functools import wraps
from typing import Any

import click

from db.errors import StorageError

DB_OPTION = click.option("--db", "db_path", type=click.Path(dir_okay=False), default=None,
                         help="SQLite file (default: $GLO_DB, else ./glo.db).")
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def _errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the project's own exceptions into one clean line and exit status 1 (no traceback)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from orchestrator.config import ConfigError
        from orchestrator.scheduler import SchedulerError

        try:
            return fn(*args, **kwargs)
        except (StorageError, ConfigError, SchedulerError) as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


def _open(db_path: str | None):  # type: ignore[no-untyped-def]
    from db.session import open_db

    return open_db(db_path)


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _fmt_fit(f: float | None) -> str:
    return "-" if f is None else f"{f:.4f}"


def _fmt_secs(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


@click.command("run")
@click.argument("config", required=False, type=click.Path(exists=True, dir_okay=False))
@DB_OPTION
@click.option("--backend", type=click.Choice(["local"]), default=None, help="Override backend.kind.")
@click.option("--resume", "resume", metavar="RUN_ID", default=None, help="Continue a stopped or crashed run.")
@click.option("--run-id", default=None, help="Name the new run (default: time stamp + random suffix).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
@_errors
def run_cmd(config: str | None, db_path: str | None, backend: str | None, resume: str | None,
            run_id: str | None, progress: bool | None) -> None:
    """Run a GLO search in the foreground (Ctrl-C stops cleanly; --resume continues)."""
    from dataclasses import replace

    from orchestrator.config import load_config
    from orchestrator.runner import run_search

    if (config is None) == (resume is None):
        raise click.UsageError("give either CONFIG.toml (a new run) or --resume RUN_ID")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    cfg = None
    if config is not None:
        cfg = load_config(config)
        if backend is not None:
            cfg = replace(cfg, backend=replace(cfg.backend, kind=backend))
    rid, status = run_search(db_path, config=cfg, resume=resume, run_id=run_id, show_progress=progress)
    click.echo(f"run {rid}: {status}")
    if status == "stopped":
        click.echo(f"resume with: glo run --resume {rid}" + (f" --db {db_path}" if db_path else ""))
        sys.exit(130)
    if status != "finished":
        sys.exit(1)


@click.command("runs")
@DB_OPTION
@JSON_OPTION
@_errors
def runs_cmd(db_path: str | None, as_json: bool) -> None:
    """List the runs in the database."""
    from db.queries import list_runs

    db = _open(db_path)
    rows = list_runs(db)
    if as_json:
        _echo_json(rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("run", "name", "task", "status", "phase", "gen", "trained", "cached", "failed", "best")
    for r in rows:
        table.add_row(r["run_id"], r["name"], r["task"], r["status"], r["phase"], str(r["generation"]),
                      str(r["evaluated"]), str(r["cached"]), str(r["failed"]), _fmt_fit(r["best_fitness"]))
    Console(width=140).print(table)


@click.command("status")
@click.argument("run", required=False)
@DB_OPTION
@JSON_OPTION
@_errors
def status_cmd(run: str | None, db_path: str | None, as_json: bool) -> None:
    """Phase, generation, evaluations, best loss, rate and time left of a run (default: latest)."""
    from db.queries import status

    st = status(_open(db_path), run)
    if as_json:
        _echo_json(st.to_json())
        return
    from rich.console import Console
    from rich.table import Table

    e = st.evaluations
    table = Table(title=f"GLO run {st.run_id}" + (f" ({st.name})" if st.name else ""), show_header=False)
    table.add_row("status", st.status + (f" — {st.message}" if st.message else ""))
    table.add_row("task", st.task)
    table.add_row("phase / generation", f"{st.phase} / {st.generation}")
    table.add_row("evaluations", f"{e['done']} trained, {e['running']} in flight, {e['failed']} failed, "
                  f"{e['cached']} cache hits, {e['resolved']} resolved by the search")
    table.add_row("best", "-" if st.best is None else f"{_fmt_fit(st.best['fitness'])}  {st.best['infix']}  "
                  f"({st.best['candidate_id']})")
    table.add_row("rate", "-" if st.evaluations_per_hour is None else f"{st.evaluations_per_hour:.0f} trainings/hour")
    table.add_row("elapsed / time left", f"{_fmt_secs(st.elapsed_seconds)} / {_fmt_secs(st.eta_seconds)}")
    Console(width=140).print(table)


@click.command("best")
@click.argument("run", required=False)
@click.option("-k", "k", type=click.IntRange(1), default=10, show_default=True, help="How many losses.")
@DB_OPTION
@JSON_OPTION
@_errors
def best_cmd(run: str | None, k: int, db_path: str | None, as_json: bool) -> None:
    """The k best distinct losses of a run (default: latest)."""
    from db.queries import best

    rows = best(_open(db_path), run, k)
    if as_json:
        _echo_json([{"candidate_id": r.uid, "infix": r.infix, "fitness": r.fitness, "phase": r.phase,
                     "generation": r.generation, "origin": r.origin} for r in rows])
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("#", "fitness", "loss f(x, y)", "candidate", "phase", "gen")
    for i, r in enumerate(rows, 1):
        table.add_row(str(i), _fmt_fit(r.fitness), r.infix, r.uid, r.phase, str(r.generation))
    Console(width=160).print(table)


@click.command("show")
@click.argument("candidate")
@DB_OPTION
@JSON_OPTION
@_errors
def show_cmd(candidate: str, db_path: str | None, as_json: bool) -> None:
    """Everything stored about one candidate (RUN_ID/ID, or ID in the latest run)."""
    from db.queries import candidate as get

    c, ev, jobs = get(_open(db_path), candidate)
    data = {
        "candidate_id": c.uid, "run_id": c.run_id, "infix": c.infix, "tree": c.tree, "status": c.status,
        "fitness": c.fitness, "error": c.error, "phase": c.phase, "generation": c.generation, "origin": c.origin,
        "parents": c.parents, "coefficients": c.coefficients, "canonical_key": c.canonical_key,
        "evaluation": None if ev is None else {
            "id": ev.id, "task": ev.task, "budget": ev.budget, "seed_policy": ev.seed_policy, "status": ev.status,
            "fitness": ev.fitness, "metrics": ev.metrics, "wall_seconds": ev.wall_seconds,
            "train_seconds": ev.train_seconds, "first_measured_by": ev.candidate_uid},
        "jobs": [{"job_id": j.id, "state": j.state, "attempts": j.attempts, "last_error": j.last_error,
                  "backend_job_id": j.backend_job_id, "work_dir": j.work_dir} for j in jobs],
    }
    if as_json:
        _echo_json(data)
        return
    for key in ("candidate_id", "infix", "status", "fitness", "error", "phase", "generation", "origin", "parents",
                "coefficients", "canonical_key"):
        if data[key] not in ("", None, []):
            click.echo(f"{key:>14}: {data[key]}")
    if ev is not None:
        click.echo(f"{'evaluation':>14}: {ev.task} {json.dumps(ev.budget, sort_keys=True)} seed {ev.seed_policy}, "
                   f"{ev.status}, {ev.wall_seconds:.1f} s")
    for j in data["jobs"]:
        click.echo(f"{'job':>14}: {j['job_id']} {j['state']} (attempts {j['attempts']}) {j['last_error'][:200]}")


@click.command("export")
@click.argument("candidate")
@click.option("--format", "fmt", type=click.Choice(["python", "keras"]), default="keras", show_default=True)
@click.option("--name", default="glo_loss", show_default=True, help="Function name.")
@DB_OPTION
@JSON_OPTION
@_errors
def export_cmd(candidate: str, fmt: str, name: str, db_path: str | None, as_json: bool) -> None:
    """Print a self-contained loss function for the candidate (paste into Keras training)."""
    from db.queries import candidate as get
    from db.queries import get_run
    from orchestrator.export import export
    from worker.lossexpr import Node

    db = _open(db_path)
    c, _ev, _jobs = get(db, candidate)
    run = get_run(db, c.run_id)
    task = run.config.get("task", {})
    eps = float(task.get("epsilon", 1e-7))
    fit = "-" if c.fitness is None else f"{c.fitness:.4f}"
    code = export(Node.from_json(c.tree), fmt, name=name, epsilon=eps,
                  class_reduction=task.get("class_reduction", "mean"), comment=f"candidate {c.uid}, fitness {fit} on {run.task}")
    if as_json:
        _echo_json({"candidate_id": c.uid, "format": fmt, "infix": c.infix, "code": code})
    else:
        click.echo(code, nl=False)


@click.command("cancel")
@click.argument("run")
@DB_OPTION
@JSON_OPTION
@_errors
def cancel_cmd(run: str, db_path: str | None, as_json: bool) -> None:
    """Cancel a run: its scheduler (if alive on this machine) stops; it cannot be resumed."""
    from db.session import open_db
    from db.store import Store

    db = open_db(db_path)
    store = Store(db)
    r = store.get_run(run)
    if r.status in ("finished", "cancelled"):
        raise click.ClickException(f"run {run} is already {r.status}")
    store.update_run(run, status="cancelled", message="cancelled by glo cancel", finished_at=time.time())
    signalled = False
    if r.status == "running" and r.pid:
        try:
            os.kill(r.pid, signal.SIGTERM)
            signalled = True
        except (ProcessLookupError, PermissionError):
            pass
    if as_json:
        _echo_json({"run_id": run, "status": "cancelled", "signalled_pid": r.pid if signalled else None})
    else:
        click.echo(f"run {run} cancelled" + (f" (stopping pid {r.pid})" if signalled else ""))


COMMANDS = [run_cmd, runs_cmd, status_cmd, best_cmd, show_cmd, export_cmd, cancel_cmd]
