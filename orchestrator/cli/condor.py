"""`glo condor job/show`: train chosen losses on an HTCondor pool by hand.

`glo condor job` writes a directory holding a worker spec and a condor_submit-able job for it
(the same spec and submit description a cluster backend would use); `glo condor show` reads
the job's event log and result file back.  Use it to re-train a found loss at full budget with
test accuracy, or to compare it with cross-entropy over several seeds, without a GLO run.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import click

from condor.submit import (
    LOG_FILE,
    RESULT_FILE,
    SPEC_FILE,
    CondorJobSettings,
    SubmitDescriptionError,
    render_submit,
)
from orchestrator.cli.runs import DB_OPTION, JSON_OPTION, _errors
from worker.lossexpr.reduction import CLASS_REDUCTIONS
from worker.spec import BUILTIN_TASKS, CUSTOM_TASK, SpecError, WorkerSpec

SUBMIT_FILE = "job.sub"


@click.group()
def condor() -> None:
    """HTCondor jobs by hand: write a condor_submit-able job for some losses, then read its results."""


def _job_environment(items: tuple[str, ...], data_dir: str | None) -> dict[str, str]:
    """--env NAME=VALUE items and --data-dir -> the job's environment (names are checked by CondorJobSettings)."""
    env: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.ClickException(f"--env {item!r}: expected NAME=VALUE")
        if name in env:
            raise click.ClickException(f"--env {name} is given twice")
        env[name] = value
    if data_dir:
        if "GLO_DATA_DIR" in env:
            raise click.ClickException("--env GLO_DATA_DIR and --data-dir set the same variable: give one")
        env["GLO_DATA_DIR"] = data_dir
    return env


@condor.command("job")
@click.argument("losses", nargs=-1, required=True, metavar="LOSS...")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory to write spec.json and job.sub into (created; never overwritten).")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="Take the training settings from this GLO config's [task].")
@click.option("--task", type=click.Choice(list(BUILTIN_TASKS)),
              help="A built-in task (default: the config's, else mnist); a custom one comes with --config.")
@click.option("--steps", type=click.IntRange(min=1), help="SGD steps (default: the config's, else the paper's 2000).")
@click.option("--seed", type=click.IntRange(min=0), help="Training seed.")
@click.option("--class-reduction", type=click.Choice(list(CLASS_REDUCTIONS)),
              help="Reduction over classes (default: the config's, else sum: the shipped configs' setting, "
                   "at which x * log(y) is Keras' cross-entropy and the paper's accuracies are reproduced).")
@click.option("--test-accuracy/--no-test-accuracy", default=True, show_default=True,
              help="Also measure accuracy on the test set.")
@click.option("--curve-interval", type=click.IntRange(min=1), help="Evaluate every S steps (a learning curve).")
@click.option("--python", "python", default="python3", show_default=True,
              help="The worker's Python on the execute nodes (an environment with GLO's [worker] extra).")
@click.option("--gpus", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--cpus", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--memory", default="8GB", show_default=True)
@click.option("--disk", default="4GB", show_default=True)
@click.option("--requirements", default="", help="A ClassAd expression, e.g. '(CUDACapability >= 7.0)'.")
@click.option("--data-dir", help="GLO_DATA_DIR on the execute nodes (else the Keras cache or a download there).")
@click.option("--env", "env_items", multiple=True, metavar="NAME=VALUE",
              help="Another variable in the job's environment, e.g. PYTHONPATH=/opt/glo/src (repeatable).")
@click.option("--max-runtime", type=click.IntRange(min=1), help="Seconds before the pool holds the job.")
@DB_OPTION
@JSON_OPTION
@_errors
def job_cmd(losses: tuple[str, ...], out_dir: str, config_path: str | None, task: str | None, steps: int | None,
            seed: int | None, class_reduction: str | None, test_accuracy: bool, curve_interval: int | None,
            python: str, gpus: int, cpus: int, memory: str, disk: str, requirements: str, data_dir: str | None,
            env_items: tuple[str, ...], max_runtime: int | None, db_path: str | None, as_json: bool) -> None:
    """Write OUT/spec.json and OUT/job.sub training each LOSS (a name such as baikal, infix text,
    or RUN/CANDIDATE from --db) one after another in one job; then `cd OUT && condor_submit job.sub`."""
    from orchestrator.config import TASK_DEFAULTS, TaskConfig, load_config
    from orchestrator.experiments.evaluation import candidate_specs

    if config_path:
        base = load_config(config_path).task
        if task and task != base.name:
            base = TaskConfig(name=task, **TASK_DEFAULTS[task])
    else:
        name = task or "mnist"
        base = TaskConfig(name=name, **TASK_DEFAULTS[name])
    base = dataclasses.replace(
        base, steps=steps or base.steps, seed=base.seed if seed is None else seed,
        class_reduction=class_reduction or (base.class_reduction if config_path else "sum"),
        # the submit side's path means nothing on an execute node: --data-dir sets GLO_DATA_DIR (a custom task
        # keeps its file's path: the node reads it there, else that file name in GLO_DATA_DIR)
        data_path=base.data_path if base.name == CUSTOM_TASK else None)
    spec = base.worker_spec(candidate_specs(losses, db_path), test_accuracy=test_accuracy, curve_interval=curve_interval)
    try:
        WorkerSpec.from_json(spec.to_json())  # the worker's own validation, before anything is written
        settings = CondorJobSettings(request_gpus=gpus, request_cpus=cpus, request_memory=memory, request_disk=disk,
                                     requirements=requirements, max_runtime_s=max_runtime,
                                     environment=_job_environment(env_items, data_dir))
        text = render_submit((python, "-m", "worker"), settings, attributes={"GloJob": "manual"})
    except (SpecError, SubmitDescriptionError) as exc:
        raise click.ClickException(str(exc)) from None
    out = Path(out_dir)
    taken = [n for n in (SPEC_FILE, SUBMIT_FILE, LOG_FILE, RESULT_FILE) if (out / n).exists()]
    if taken:
        raise click.ClickException(f"{out} already holds {', '.join(taken)}; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / SPEC_FILE).write_text(json.dumps(spec.to_json(), indent=1) + "\n")
    (out / SUBMIT_FILE).write_text(text)
    info = {"dir": str(out), "spec": str(out / SPEC_FILE), "submit_file": str(out / SUBMIT_FILE),
            "task": spec.task, "steps": spec.steps, "losses": [c.id for c in spec.candidates],
            "spec_hash": spec.spec_hash()}
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"wrote {info['spec']} ({len(spec.candidates)} loss(es), {spec.task}, {spec.steps} steps) "
               f"and {info['submit_file']}")
    click.echo(f"next: cd {out} && condor_submit {SUBMIT_FILE}; then: glo condor show {out}")


def _result_rows(out: Path, spec: WorkerSpec | None) -> tuple[list[dict[str, Any]], str]:
    """The result file's rows, and a note when it is missing or belongs to another spec."""
    from worker.spec import read_results

    path = out / RESULT_FILE
    if not path.exists():
        return [], "no result file yet"
    try:
        spec_hash, results = read_results(path)
    except ValueError as exc:
        return [], str(exc)
    note = ""
    if spec is not None and spec_hash != spec.spec_hash():
        note = "the result file was written for another spec"
    rows = [{"loss": r.candidate_id, "status": r.status, "validation_accuracy": r.validation_accuracy,
             "test_accuracy": r.test_accuracy, "train_seconds": r.train_seconds, "device": r.device}
            for r in results]
    return rows, note


@condor.command("show")
@click.argument("job_dir", type=click.Path(exists=True, file_okay=False))
@JSON_OPTION
@_errors
def show_cmd(job_dir: str, as_json: bool) -> None:
    """The state of the job in JOB_DIR (from its event log) and the results it has sent back."""
    from condor.events import EventLogError, EventLogFollower, read_event_log
    from worker.spec import load_spec

    out = Path(job_dir)
    try:
        spec = load_spec(out / SPEC_FILE) if (out / SPEC_FILE).exists() else None
    except SpecError as exc:
        raise click.ClickException(str(exc)) from None
    jobs: list[dict[str, Any]] = []
    log_note = ""
    if (out / LOG_FILE).exists():
        try:
            statuses = read_event_log(out / LOG_FILE)
        except EventLogError as exc:  # an event still being written, or text that is not an event
            with EventLogFollower(out / LOG_FILE) as follower:
                follower.poll()
                statuses = follower.statuses
            log_note = f"part of {LOG_FILE} could not be read yet: {exc}"
        jobs = [{"job_id": s.job_id, "state": s.glo_state, "condor_state": s.state, "reason": s.reason,
                 "host": s.host, "submitted_at": s.submitted_at, "ended_at": s.ended_at}
                for s in sorted(statuses.values(), key=lambda s: [int(p) for p in s.job_id.split(".")])]
    else:
        log_note = f"no {LOG_FILE} yet (not submitted, or condor_submit has not written it)"
    rows, result_note = _result_rows(out, spec)
    expected = [c.id for c in spec.candidates] if spec else []
    done = {r["loss"] for r in rows}
    info = {"dir": str(out), "jobs": jobs, "results": rows,
            "waiting_for": [c for c in expected if c not in done], "notes": [n for n in (log_note, result_note) if n]}
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for j in jobs:
        click.echo(f"job {j['job_id']}: {j['state']} - {j['reason']}")
    for note in info["notes"]:
        click.echo(note)
    if rows:
        click.echo(f"{'loss':<24} {'status':<10} {'validation':>10} {'test':>8} {'train s':>9}  device")
        for r in rows:
            val = "-" if r["validation_accuracy"] is None else f"{r['validation_accuracy']:.4f}"
            test = "-" if r["test_accuracy"] is None else f"{r['test_accuracy']:.4f}"
            click.echo(f"{r['loss']:<24} {r['status']:<10} {val:>10} {test:>8} {r['train_seconds']:>9.1f}  {r['device']}")
    if info["waiting_for"]:
        click.echo(f"no result yet for: {', '.join(info['waiting_for'])}")
