"""`glo run/runs/status/best/show/export/cancel/stop`: a thin CLI over orchestrator.run.runner and queries."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click

from db.errors import StorageError
from orchestrator.errors import GloError

DB_OPTION = click.option("--db", "db_path", type=click.Path(dir_okay=False), default=None,
                         help="SQLite file (default: $GLO_DB, else ./glo.db).")
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


#: `glo run`'s exit statuses (README "Running in the background"; the systemd unit glo@.service reads them).
EXIT_ERROR = 1
#: `--resume` of a finished or cancelled run: nothing to do, a supervisor must not retry.
EXIT_NOT_RESUMABLE = 3
#: The run finished but has no usable result: not one candidate trained, or the best fitness is 0.
EXIT_NO_RESULT = 4
#: Stopped (Ctrl-C, SIGTERM, glo stop): resumable.
EXIT_STOPPED = 130


def _errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the project's own exceptions into one clean line and exit status 1 (no traceback)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (GloError, StorageError) as exc:  # orchestrator.errors: imports nothing, so a quick command stays quick
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


class NotResumable(click.ClickException):
    """`glo run --resume` of a finished or cancelled run: exit status 3 (a supervisor must not retry)."""

    exit_code = EXIT_NOT_RESUMABLE


@click.command("run")
@click.argument("config", required=False, type=click.Path(exists=True, dir_okay=False))
@DB_OPTION
@click.option("--backend", type=click.Choice(["local", "condor", "ssh"]), default=None, help="Override backend.kind.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config setting, e.g. --set backend.ssh.host=submit.example.org (repeatable).")
@click.option("--resume", "resume", metavar="RUN_ID", default=None, help="Continue a stopped or crashed run.")
@click.option("--run-id", default=None, help="Name the new run (default: time stamp + random suffix).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
@click.option("--detach", is_flag=True,
              help="Run the scheduler in the background (log in DB.runs/RUN.log); stop it with glo stop RUN.")
@_errors
def run_cmd(config: str | None, db_path: str | None, backend: str | None, overrides: tuple[str, ...],
            resume: str | None, run_id: str | None, progress: bool | None, detach: bool) -> None:
    """Run a GLO search in the foreground (Ctrl-C stops cleanly; --resume continues; --detach: in the background).

    Exit status: 0 finished, 4 finished with no usable result (nothing trained, or best fitness 0), 130
    stopped (resumable), 3 a --resume of a finished or cancelled run (nothing to do), 1 any other error
    (e.g. the run's scheduler is already alive)."""
    from orchestrator.config import load_config
    from orchestrator.run.runner import NotResumableError, run_search

    if (config is None) == (resume is None):
        raise click.UsageError("give either CONFIG.toml (a new run) or --resume RUN_ID")
    if resume is not None and (overrides or backend):
        raise click.UsageError("a resumed run keeps its stored config: --set and --backend apply to a new run")
    overrides = (*overrides, f"backend.kind={backend}") if backend else overrides
    cfg = None
    if config is not None:
        cfg = load_config(config, overrides)
    if detach:
        _run_detached(config, db_path, overrides, resume, run_id)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        rid, status = run_search(db_path, config=cfg, resume=resume, run_id=run_id, show_progress=progress)
    except NotResumableError as exc:
        raise NotResumable(str(exc)) from None
    click.echo(f"run {rid}: {status}")
    if status == "stopped":
        click.echo(f"resume with: glo run --resume {rid}" + (f" --db {db_path}" if db_path else ""))
        sys.exit(EXIT_STOPPED)
    if status != "finished":
        sys.exit(EXIT_ERROR)
    _exit_if_no_result(db_path, rid)


def _exit_if_no_result(db_path: str | None, rid: str) -> None:
    """A finished run that could not train one candidate, or whose best is 0, says so loudly at the end
    and exits EXIT_NO_RESULT: "finished" alone would pass it off as a result."""
    from db.queries import status

    warning = status(_open(db_path), rid).warning
    if warning:
        click.secho(f"WARNING: run {rid} finished with {warning}", fg="red", bold=True, err=True)
        sys.exit(EXIT_NO_RESULT)


def _run_detached(config: str | None, db_path: str | None, overrides: tuple[str, ...], resume: str | None,
                  run_id: str | None) -> None:
    """`glo run --detach`: check what can be checked here, start `glo run ... --no-progress` in its own
    session with its output in the run's log, and wait until it holds the run's lock."""
    from db.errors import NotFoundError
    from db.queries import get_run
    from db.session import open_db, resolve_db_path
    from orchestrator.run.lock import held_message, log_path, scheduler_info, start_detached, tail
    from orchestrator.run.scheduler import SchedulerError, new_run_id

    db_file = resolve_db_path(db_path).resolve()
    rid = resume if resume is not None else (run_id or new_run_id())
    if resume is not None or db_file.exists():
        db = open_db(db_file)  # a resume needs the database; a new run needs only a free run id
        try:
            try:
                row = get_run(db, rid)
            except NotFoundError:
                if resume is not None:
                    raise
            else:
                if resume is None:
                    raise click.ClickException(f"run {rid} already exists in {db_file}; resume it with --resume {rid}")
                if row.status == "finished":
                    raise NotResumable(f"run {rid} already finished; nothing to resume")
                if row.status == "cancelled":
                    raise NotResumable(f"run {rid} was cancelled; start a new run instead")
        finally:
            db.dispose()
    info = scheduler_info(db_file, rid)
    if info["alive"]:
        raise SchedulerError(held_message(rid, info, info["log"]))
    args = [str(Path(config).resolve())] if config is not None else ["--resume", rid]
    args += ["--db", str(db_file), "--no-progress"]
    if config is not None:
        args += ["--run-id", rid]
    for item in overrides:
        args += ["--set", item]
    child, info = start_detached(db_file, rid, args)
    log = log_path(db_file, rid)
    db_arg = f" --db {db_file}"
    if info["alive"] and info["pid"] == child.pid:
        click.echo(f"run {rid}: scheduler started in the background, pid {child.pid}")
        click.echo(f"log:    {log}")
        click.echo(f"status: glo status {rid}{db_arg}")
        click.echo(f"stop:   glo stop {rid}{db_arg}")
        return
    if child.returncode is None:
        click.echo(f"run {rid}: scheduler started in the background, pid {child.pid}, but it does not hold the "
                   f"run's lock yet; see its log {log}")
        return
    click.echo(f"run {rid}: the detached scheduler exited at once (exit {child.returncode}); the end of {log}:",
               err=True)
    click.echo(tail(log).rstrip(), err=True)
    sys.exit(child.returncode or 0)


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
    from types import SimpleNamespace

    from db.fastread import status as read_status  # sqlite3 alone: a read imports only what it reads with
    from orchestrator.run.lock import scheduler_info

    found = read_status(db_path, run)
    if found is None:  # another schema version (to upgrade, or too new), or a file sqlite3 cannot open read-only
        from db.queries import status

        db = _open(db_path)
        found = status(db, run).to_json(), db.path
    data, path = found
    st = SimpleNamespace(**data)
    sched = scheduler_info(path, st.run_id)
    fair = _fair_comparison(path, st.best["candidate_id"]) if st.best else None
    if as_json:
        _echo_json({**data, "scheduler": sched, "best_vs_ce_at_its_best_rate": None if fair is None else {
            "beats": fair.beats, **{k: getattr(fair, k) for k in fair.__dataclass_fields__}}})
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    e = st.evaluations
    table = Table(title=f"GLO run {st.run_id}" + (f" ({st.name})" if st.name else ""), show_header=False)
    table.add_row("status", st.status + (f" — {st.message}" if st.message else ""))
    if st.warning:
        table.add_row("[bold red]WARNING[/]", f"[bold red]{escape(st.warning)}[/]")
    table.add_row("task", st.task)
    steady = getattr(st, "steady", None)
    if steady:  # no generations: progress is trainings against the budget
        table.add_row("phase / trainings", f"{st.phase} / {steady['trainings']} of {steady['max_trainings']} "
                      "discovery trainings (steady-state)")
    else:
        table.add_row("phase / generation", f"{st.phase} / {st.generation}")
    table.add_row("evaluations", f"{e['done']} trained, {e['running']} in flight, {e['failed']} failed, "
                  f"{e['cached']} cache hits, {e['resolved']} resolved by the search"
                  + (f" ({e['filtered']} rejected by the zero-training filter)" if e.get("filtered") else ""))
    g0 = getattr(st, "generation0", None)
    if g0:
        table.add_row("generation 0", f"{g0['trainable']} of {g0['members']} trainable (ga.init = {g0['init']})")
    budgets = getattr(st, "trainings_per_budget", None) or []
    if len(budgets) > 1:  # a multi-fidelity search (or an evaluation of several lengths): trainings per rung
        table.add_row("trainings per budget", ", ".join(f"{b['trainings']} at {b['steps']} steps" for b in budgets))
    table.add_row("best", "-" if st.best is None else f"{_fmt_fit(st.best['fitness'])}  {st.best['infix']}  "
                  f"({st.best['candidate_id']})")
    if fair is not None:
        table.add_row("best vs tuned ce", escape(fair.sentence()))
    table.add_row("rate", "-" if st.evaluations_per_hour is None else f"{st.evaluations_per_hour:.0f} trainings/hour")
    table.add_row("elapsed / time left", f"{_fmt_secs(st.elapsed_seconds)} / {_fmt_secs(st.eta_seconds)}")
    if sched["alive"]:
        where = f"alive, pid {sched['pid']} on {sched['host']}"
    elif st.status == "running":
        where = f"not running (it died; continue with: glo run --resume {st.run_id})"
    else:
        where = "not running"
    table.add_row("scheduler", where)
    table.add_row("log", sched["log"] or "-")
    jobs = ", ".join(f"{n} {state}" for state, n in sorted((st.jobs or {}).items()))
    table.add_row("backend / jobs", f"{st.backend}: {jobs or 'none yet'}")
    for h in (st.held_jobs or [])[:5]:
        now = "held now" if h["state"] == "held" else f"was held, now {h['state']}"
        table.add_row(f"job {h['job_id']} ({h['backend_job_id'] or '-'})",
                      f"{now}: {h['hold_reason'] or '-'} (code {h['hold_code']}/{h['hold_subcode']}"
                      f"{', released ' + str(h['releases']) + 'x' if h['releases'] else ''})")
    Console(width=140).print(table)


@click.command("best")
@click.argument("run", required=False)
@click.option("-k", "k", type=click.IntRange(1), default=10, show_default=True, help="How many losses.")
@DB_OPTION
@JSON_OPTION
@_errors
def best_cmd(run: str | None, k: int, db_path: str | None, as_json: bool) -> None:
    """The k best distinct losses of a run (default: latest), and where an evaluation with a learning-rate
    grid tested one, whether it beats ce at ce's best rate."""
    from db.queries import best
    from orchestrator.experiments.evidence import comparison_for, fair_comparisons

    db = _open(db_path)
    rows = best(db, run, k)
    fair = fair_comparisons(db)
    found = {r.uid: comparison_for(fair, r.uid, r.canonical_key) for r in rows} if fair else {}
    if as_json:
        _echo_json([{"candidate_id": r.uid, "infix": r.infix, "fitness": r.fitness, "phase": r.phase,
                     "generation": r.generation, "origin": r.origin, "trainings": r.trainings,
                     "beats_ce_at_its_best_rate": None if found.get(r.uid) is None else found[r.uid].beats}
                    for r in rows])
        return
    from rich.console import Console
    from rich.table import Table

    columns = ["#", "fitness", "loss f(x, y)", "candidate", "phase", "gen"]
    table = Table(*columns, *(["beats ce at ce's best rate?"] if fair else []))
    for i, r in enumerate(rows, 1):
        fit = _fmt_fit(r.fitness) + (f" (mean of {r.trainings} seeds)" if r.trainings > 1 else "")
        verdict = [found[r.uid].verdict() if found.get(r.uid) else "not evaluated"] if fair else []
        table.add_row(str(i), fit, r.infix, r.uid, r.phase, str(r.generation), *verdict)
    Console(width=180).print(table)
    if not fair:
        print("(the fitness is validation accuracy at the run's one learning rate; to ask whether a loss beats ce at "
              "ce's best rate: glo evaluate RUN/CANDIDATE ce --lr-grid ...)")


def _fair_comparison(path: Any, uid: str) -> Any:
    """The evidence about one candidate against tuned ce, or None -- without opening the database through
    SQLAlchemy (or importing the statistics) unless it holds an evaluation with a rate grid."""
    import sqlite3
    from urllib.parse import quote

    from orchestrator.experiments.evidence import GRID_RUNS_SQL, comparison_for, fair_comparisons

    try:
        con = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)
        try:
            has_grid = con.execute(GRID_RUNS_SQL + " limit 1").fetchone()
            key = con.execute("select canonical_key from candidates where uid = ?", (uid,)).fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return None
    if not has_grid:
        return None
    return comparison_for(fair_comparisons(_open(str(path))), uid, key[0] if key else None)


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _attempt_lines(a: dict[str, Any]) -> list[str]:
    """One attempt of a job as `glo show` prints it: where and when it ran, how it ended and why, then
    everything that happened to it (holds with their reasons, releases, evictions) in order."""
    where = f" {a['backend_job_id']}" if a["backend_job_id"] else ""
    where += f" on {a['host']}" if a["host"] else ""
    outcome = a["outcome"] or "in flight (or its scheduler died)"
    exit_ = (f", killed by signal {a['exit_signal']}" if a["exit_signal"] is not None
             else f", exit {a['exit_code']}" if a["exit_code"] is not None else "")
    counts = ", ".join(f"{a[k]} {k}" for k in ("holds", "releases", "evictions") if a[k])
    lines = [f"attempt {a['attempt']}{where}: {outcome}{exit_}" + (f" ({counts})" if counts else "") +
             f"; submitted {_when(a['submitted_at'])}, started {_when(a['started_at'])}, ended {_when(a['ended_at'])}"]
    for note in a["notes"]:
        lines.append(f"  {_when(note['at'])}  {note['what'][:300]}")
    if a["error"]:
        lines.append(f"  why it ended: {a['error'][:500]}")
    return lines


def _job_json(j: Any, attempts: list[dict[str, Any]]) -> dict[str, Any]:
    return {"job_id": j.id, "run_id": j.run_id, "state": j.state, "attempts": j.attempts, "last_error": j.last_error,
            "backend_job_id": j.backend_job_id, "work_dir": j.work_dir, "host": j.host, "hold_reason": j.hold_reason,
            "hold_code": j.hold_code, "hold_subcode": j.hold_subcode, "evictions": j.evictions,
            "releases": j.releases, "bad_nodes": list(j.bad_nodes), "attempts_history": attempts}


@click.command("show")
@click.argument("candidate")
@DB_OPTION
@JSON_OPTION
@_errors
def show_cmd(candidate: str, db_path: str | None, as_json: bool) -> None:
    """Everything stored about one candidate (RUN_ID/ID, or ID in the latest run), or about one job
    (RUN_ID/job-N, or job-N in the latest run): every attempt, with its holds, evictions and how it ended."""
    from db.queries import candidate as get
    from db.queries import get_run, is_job_ident, job_attempts
    from orchestrator.config import stored_task
    from worker.lossexpr import Node
    from worker.spec import collapse_reason

    db = _open(db_path)
    if is_job_ident(candidate):
        _show_job(db, candidate, as_json)
        return
    c, ev, jobs = get(db, candidate)
    history = job_attempts(db, [j.id for j in jobs])
    data = {
        "candidate_id": c.uid, "run_id": c.run_id, "infix": c.infix, "tree": c.tree, "status": c.status,
        "fitness": c.fitness, "error": c.error, "phase": c.phase, "generation": c.generation, "origin": c.origin,
        "parents": c.parents, "coefficients": c.coefficients, "canonical_key": c.canonical_key,
        "evaluation": None if ev is None else {
            "id": ev.id, "task": ev.task, "budget": ev.budget, "seed_policy": ev.seed_policy, "status": ev.status,
            "fitness": ev.fitness, "metrics": ev.metrics, "wall_seconds": ev.wall_seconds,
            "train_seconds": ev.train_seconds, "first_measured_by": ev.candidate_uid},
        "jobs": [_job_json(j, history[j.id]) for j in jobs],
    }
    task = stored_task(get_run(db, c.run_id).config.get("task", {}))
    scaled = _trained_scale(task, Node.from_json(c.tree), c, ev)
    if scaled is not None:  # a calibrated run: the factor this candidate's loss trained with
        data["loss_scale"] = {"scale": scaled[0], "source": scaled[1]}
    if as_json:
        _echo_json(data)
        return
    for key in ("candidate_id", "infix", "status", "fitness", "error", "phase", "generation", "origin", "parents",
                "coefficients", "canonical_key"):
        if data[key] not in ("", None, []):
            click.echo(f"{key:>14}: {data[key]}")
    if scaled is not None:
        click.echo(f"{'loss scale':>14}: " + ("1.0 (cannot be calibrated: zero or non-finite gradient at the "
                                              "reference point; trained unscaled)" if scaled[1] == "uncalibrated"
                                              else f"{scaled[0]!r} (calibrated, {scaled[1]})"))
    if ev is not None:
        click.echo(f"{'evaluation':>14}: {ev.task} {json.dumps(ev.budget, sort_keys=True)} seed {ev.seed_policy}, "
                   f"{ev.status}, {ev.wall_seconds:.1f} s")
        if ev.metrics.get("test_accuracy") is not None:
            click.echo(f"{'test accuracy':>14}: {ev.metrics['test_accuracy']:.4f}")
        if ev.metrics.get("nonfinite_step") is not None:
            click.echo(f"{'non-finite':>14}: the loss went NaN/inf at step {ev.metrics['nonfinite_step']}; fitness 0")
        reason = collapse_reason(ev.metrics.get("extra"))
        if reason:  # why a fitness is 0 although the training ran to the end (worker/collapse.py)
            click.echo(f"{'collapsed':>14}: {reason}")
        plat = (ev.metrics.get("extra") or {}).get("platform")
        if plat:  # what decides whether this fitness can be reproduced elsewhere (README: Reproducibility)
            build = ", ".join(f"{k} {plat[k]}" for k in ("tensorflow", "cuda_version", "cudnn_version") if plat.get(k))
            click.echo(f"{'measured on':>14}: {plat.get('device')} / {plat.get('cpu')} ({plat.get('cpu_count')} CPUs, "
                       f"{plat.get('intra_op_threads')}/{plat.get('inter_op_threads')} intra/inter-op threads), {build}")
    for j in data["jobs"]:
        where = f" {j['backend_job_id']} on {j['host']}" if j["host"] else ""
        click.echo(f"{'job':>14}: {c.run_id}/job-{j['job_id']}{where} {j['state']} (attempts {j['attempts']}) "
                   f"{j['last_error'][:200]}")
        if j["hold_code"] is not None:
            click.echo(f"{'held':>14}: {j['hold_reason'][:200]} (code {j['hold_code']}/{j['hold_subcode']}, "
                       f"released {j['releases']}x)")
        for a in j["attempts_history"]:
            for line in _attempt_lines(a):
                click.echo(f"{'':>16}{line}")


def _trained_scale(task: dict[str, Any], tree: Any, c: Any, ev: Any) -> tuple[float, str] | None:
    """`export.trained_scale` for a stored candidate and its evaluation (None: the run is not calibrated)."""
    from orchestrator.export import trained_scale

    extra = None if ev is None else ev.metrics.get("extra")
    return trained_scale(task, tree, extra, measured_here=ev is not None and ev.candidate_uid == c.uid)


def _show_job(db: Any, ident: str, as_json: bool) -> None:
    """`glo show RUN/job-N`: the job, the candidates it carries, and every attempt with its reasons."""
    from db.queries import job

    j, attempts, cands = job(db, ident)
    data = {**_job_json(j, attempts), "backend": j.backend,
            "candidates": [{"candidate_id": c.uid, "infix": c.infix, "status": c.status, "fitness": c.fitness}
                           for c in cands]}
    if as_json:
        _echo_json(data)
        return
    click.echo(f"job {j.run_id}/job-{j.id}: {j.state} on {j.backend}, {j.attempts} attempt(s)"
               + (f", bad nodes {', '.join(j.bad_nodes)}" if j.bad_nodes else ""))
    if j.work_dir:
        click.echo(f"work dir: {j.work_dir}")
    for c in cands:
        click.echo(f"carries {c.uid}: {c.infix} ({c.status}, fitness {_fmt_fit(c.fitness)})")
    if not attempts:
        click.echo("no attempt yet (never submitted)")
    for a in attempts:
        for line in _attempt_lines(a):
            click.echo(line)


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
    from orchestrator.config import stored_task
    from orchestrator.export import export
    from worker.lossexpr import Node

    db = _open(db_path)
    c, ev, _jobs = get(db, candidate)
    run = get_run(db, c.run_id)
    task = stored_task(run.config.get("task", {}))
    eps = float(task.get("epsilon", 1e-7))
    fit = "-" if c.fitness is None else f"{c.fitness:.4f}"
    tree = Node.from_json(c.tree)
    scaled = _trained_scale(task, tree, c, ev)
    note = "" if scaled is None else f"\ncalibrated run: trained as {scaled[0]!r} * L ({scaled[1]})"
    code = export(tree, fmt, name=name, epsilon=eps, class_reduction=task.get("class_reduction", "mean"),
                  epsilon_gradient=task["epsilon_gradient"], scale=1.0 if scaled is None else scaled[0],
                  comment=f"candidate {c.uid}, fitness {fit} on {run.task}{note}")
    if as_json:
        _echo_json({"candidate_id": c.uid, "format": fmt, "infix": c.infix, "code": code,
                    **({"loss_scale": scaled[0]} if scaled is not None else {})})
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
    removed = _remove_cluster_jobs(r)
    if as_json:
        _echo_json({"run_id": run, "status": "cancelled", "signalled_pid": r.pid if signalled else None,
                    "removed_jobs": removed})
    else:
        click.echo(f"run {run} cancelled" + (f" (stopping pid {r.pid})" if signalled else "") +
                   (f"; {removed} job(s) removed from the queue" if removed else ""))


def _remove_cluster_jobs(r: Any) -> int | None:
    """A cluster run's jobs leave the pool's queue too (constraint on GloRunId), whether or not its
    scheduler is alive to do it; None for a local run."""
    from orchestrator.backends import BackendError, cancel_cluster_run
    from orchestrator.config import ConfigError, from_stored

    try:
        config = from_stored(r.config)
    except ConfigError:
        return None
    if not config.backend.cluster:
        return None
    try:
        return cancel_cluster_run(config.backend, r.id)
    except BackendError as exc:
        raise click.ClickException(f"run {r.id} is cancelled, but its jobs could not be removed from the queue: "
                                   f"{exc}\n(remove them by hand: condor_rm -constraint 'GloRunId == \"{r.id}\"')"
                                   ) from None


@click.command("stop")
@click.argument("run")
@DB_OPTION
@click.option("--timeout", "timeout_s", type=click.FloatRange(0), default=120.0, show_default=True,
              help="Seconds to wait for the scheduler to let go of the run.")
@JSON_OPTION
@_errors
def stop_cmd(run: str, db_path: str | None, timeout_s: float, as_json: bool) -> None:
    """Stop a run's scheduler cleanly (SIGTERM, as Ctrl-C): finished work is kept, the run can be resumed."""
    from db.queries import get_run
    from orchestrator.run.lock import scheduler_info, stop_scheduler

    db = _open(db_path)
    row = get_run(db, run)  # an unknown run: a clean "no run" error
    if not scheduler_info(db.path, run)["alive"]:
        raise click.ClickException(f"run {run} has no live scheduler (the run is {row.status}); nothing to stop")
    res = stop_scheduler(db.path, run, timeout_s=timeout_s)
    if not res["stopped"]:
        raise click.ClickException(
            f"run {run}: pid {res['pid']} still drives it {timeout_s:g} s after SIGTERM; see {res['log']} "
            f"(kill -9 {res['pid']} loses nothing stored: glo run --resume {run} goes on from the database)")
    final = get_run(db, run).status
    if as_json:
        _echo_json({"run_id": run, "pid": res["pid"], "status": final, "log": res["log"]})
        return
    click.echo(f"run {run}: scheduler pid {res['pid']} stopped; the run is {final}")
    if final == "stopped":
        click.echo(f"resume with: glo run --resume {run} --detach" + (f" --db {db_path}" if db_path else ""))


COMMANDS = [run_cmd, runs_cmd, status_cmd, best_cmd, show_cmd, export_cmd, cancel_cmd, stop_cmd]
