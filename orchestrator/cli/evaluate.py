"""`glo evaluate`: full trainings of chosen losses with test accuracy, K paired seeds each, and the paper's
statistics against cross-entropy.

An evaluation is a run of its own kind (its config has an [evaluate] section) that the ordinary
scheduler drives on any backend, with the same database, retries, cache and resume as a search: every
(loss, fraction, seed) cell is cached by loss, task, budget, fraction and seed, so asking again trains
nothing new, and `glo evaluate --resume RUN` (or `glo run --resume RUN`) continues a crashed one.
"""

from __future__ import annotations

import json
import logging
import sys

import click

from orchestrator.cli.runs import DB_OPTION, EXIT_ERROR, EXIT_STOPPED, JSON_OPTION, NotResumable, _errors
from worker.spec import BUILTIN_TASKS


def _parse_seeds(text: str | None, repeats: int, option: str = "--seeds") -> list[int]:
    if not text:
        return list(range(repeats))
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{option} must be whole numbers separated by commas, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise click.BadParameter(f"{option} must be distinct whole numbers >= 0, got {text!r}")
    return seeds


def _parse_rates(text: str | None) -> list[float] | None:
    """--lr-grid: learning rates separated by commas (their checks are the config's)."""
    if not text:
        return None
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"--lr-grid must be numbers separated by commas, got {text!r}") from None


@click.command("evaluate")
@click.argument("losses", nargs=-1, metavar="LOSS...")
@click.option("--task", type=click.Choice(list(BUILTIN_TASKS)),
              help="A built-in task (default: the config's, else mnist); a custom one comes with --config.")
@click.option("--steps", type=click.IntRange(min=1), help="SGD steps of each training (default: the config's).")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True,
              help="Trainings per loss, with seeds 0..K-1: the same seeds for every loss (paired).")
@click.option("--seeds", help="Explicit training seeds, e.g. 0,1,2 (instead of --repeats).")
@click.option("--train-fraction", "fractions", type=click.FloatRange(0.0, 1.0, min_open=True), multiple=True,
              help="Train on this fraction of the training set (repeatable: the paper's Fig. 4).")
@click.option("--curve-every", type=click.IntRange(min=1), help="Test accuracy every S steps (Figs. 3 and 5).")
@click.option("--lr-grid", "lr_grid", metavar="LR,LR,...",
              help="Give each loss its own learning rate from this grid, chosen on validation accuracy with "
                   "--selection-seeds (never the test seeds), and compare the losses at their chosen rates too.")
@click.option("--selection-seeds", metavar="S,S,...",
              help="The training seeds that choose each loss's rate on --lr-grid (default: 1000,1001).")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="Take [task] and [backend] from this GLO config.")
@click.option("--backend", type=click.Choice(["local", "condor", "ssh"]), help="Override backend.kind.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config setting.")
@click.option("--run-id", default=None, help="Name the evaluation run.")
@click.option("--resume", metavar="RUN_ID", default=None, help="Continue an evaluation that stopped or crashed.")
@click.option("--progress/--no-progress", default=None)
@DB_OPTION
@JSON_OPTION
@_errors
def evaluate_cmd(losses: tuple[str, ...], task: str | None, steps: int | None, repeats: int, seeds: str | None,
                 fractions: tuple[float, ...], curve_every: int | None, lr_grid: str | None,
                 selection_seeds: str | None, config_path: str | None, backend: str | None,
                 overrides: tuple[str, ...], run_id: str | None, resume: str | None, progress: bool | None,
                 db_path: str | None, as_json: bool) -> None:
    """Train each LOSS (a name such as ce or baikal, infix text, or RUN/CANDIDATE) K times with test
    accuracy and compare it with ce: mean ± sd, Welch's and the paired t-test, one- and two-tailed.  With
    --lr-grid, also each loss at its own best rate against ce at ce's best rate."""
    from db.queries import evaluation_results
    from db.session import open_db
    from orchestrator.experiments.evaluation import evaluation_config
    from orchestrator.run.runner import NotResumableError, run_search

    if bool(losses) == bool(resume):
        raise click.UsageError("give the losses to evaluate, or --resume RUN_ID")
    cfg = None
    if not resume:
        overrides = (*overrides, f"backend.kind={backend}") if backend else overrides
        cfg = evaluation_config(losses, config_path=config_path, task=task, steps=steps,
                                seeds=_parse_seeds(seeds, repeats), fractions=fractions, curve_every=curve_every,
                                overrides=overrides, db_path=db_path, learning_rates=_parse_rates(lr_grid),
                                selection_seeds=_parse_seeds(selection_seeds, 0, "--selection-seeds")
                                if selection_seeds else None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        rid, status = run_search(db_path, config=cfg, resume=resume, run_id=run_id, show_progress=progress)
    except NotResumableError as exc:
        raise NotResumable(str(exc)) from None
    results = evaluation_results(open_db(db_path), rid)
    from orchestrator.experiments.stats import (
        chance_records,
        chosen_rate_rows,
        fmt_rate,
        format_rate_table,
        format_table,
        summarize,
        verdicts,
    )

    rows = summarize(results)
    chosen = chosen_rate_rows(results)
    if as_json:
        click.echo(json.dumps({"run_id": rid, "status": status, "summary": rows, "summary_chosen_rates": chosen,
                               "results": results}, indent=2, default=str))
    else:
        click.echo(f"evaluation {rid}: {status} ({results['task']}, {results['steps']} steps, "
                   f"seeds {', '.join(map(str, results['seeds']))})")
        click.echo(f"at the task's learning rate, {fmt_rate(results['learning_rate'])}, for every loss:")
        click.echo(format_table(rows))
        if chosen:
            click.echo(f"each loss at its own rate from the grid {', '.join(map(fmt_rate, results['learning_rates']))} "
                       f"(chosen on validation accuracy, selection seeds {', '.join(map(str, results['selection_seeds']))}):")
            click.echo(format_rate_table(chosen))
            for sentence in verdicts(chosen):
                click.echo(f"- {sentence}")
        chance: dict[tuple[str, float], int] = {}
        for rec in chance_records(results):
            chance[(rec["loss"], rec["learning_rate"])] = chance.get((rec["loss"], rec["learning_rate"]), 0) + 1
        if chance:
            click.echo("note: trainings that ended at chance accuracy (a finite loss, nothing learned): " + ", ".join(
                f"{loss} at lr {fmt_rate(rate)} ({n})" for (loss, rate), n in chance.items()))
    if status == "stopped":
        sys.exit(EXIT_STOPPED)
    if status != "finished":
        sys.exit(EXIT_ERROR)


@click.command("experiment")
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Where the report goes.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a setting, [experiment] ones included (e.g. experiment.steps=500).")
@click.option("--transfer-from", type=click.Path(dir_okay=False),
              help='A database whose finished search gives the "transfer" loss (make cifar10: the MNIST one).')
@click.option("--estimate-only", is_flag=True, help="Print how long it would take, then stop.")
@DB_OPTION
@_errors
def experiment_cmd(config: str, out_dir: str, overrides: tuple[str, ...], transfer_from: str | None,
                   estimate_only: bool, db_path: str | None) -> None:
    """A whole experiment from CONFIG's [experiment]: the search, the evaluation of the losses it names
    against baikal and ce, and the report (run it again to resume where it stopped)."""
    from orchestrator.experiments.pipeline import run_experiment

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    run_experiment(config, db_path, out_dir, overrides=overrides, transfer_db=transfer_from,
                   estimate_only=estimate_only, echo=lambda line: click.echo(line, err=False))
