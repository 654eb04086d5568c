"""`glo report`: a markdown page with a run's tables and figures (and those of its evaluations)."""

from __future__ import annotations

import click

from orchestrator.cli.runs import DB_OPTION, JSON_OPTION, _echo_json, _errors, _open


@click.command("report")
@click.argument("run", required=False)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for report.md, its figures (PNG) and their numbers (CSV); created if missing.")
@click.option("--baseline", default="ce", show_default=True,
              help="The loss every other loss of an evaluation is tested against.")
@click.option("--compare", "compare", multiple=True, metavar="RUN",
              help="Another search run to set beside RUN (repeatable): a table and search_compare.png of best "
                   "top-rung fitness against training steps spent, at an equal budget.")
@click.option("--compare-db", "compare_db_path", metavar="PATH",
              help="The database the --compare runs are in (default: --db's).  A search run second in the same "
                   "database reuses the first's cached trainings, so a fair side-by-side runs each in its own.")
@DB_OPTION
@JSON_OPTION
@_errors
def report_cmd(run: str | None, out_dir: str, baseline: str, compare: tuple[str, ...],
               compare_db_path: str | None, db_path: str | None, as_json: bool) -> None:
    """Write RUN's report (default: the latest run) into --out: report.md with tables and figures.

    A search: summary, best losses, fitness per generation, CMA-ES progress, cache hits and resolutions,
    and the evaluations of its losses.  An evaluation: per loss mean ± sd of test accuracy, Welch's and the
    paired t-test against ce (one- and two-tailed p), Figs. 3, 4, 5 and 7.  Prints the report's path; with
    --json, also every file written and the statistics."""
    from orchestrator.experiments.report import ReportError, build_report

    if compare_db_path and not compare:
        raise click.UsageError("--compare-db names where the --compare runs are: give --compare RUN too")
    db = _open(db_path)
    other = None
    try:
        other = _open(compare_db_path) if compare_db_path else None
        info = build_report(db, run, out_dir, baseline=baseline, compare=list(compare), compare_db=other)
    except ReportError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot write the report into {out_dir}: {exc.strerror or exc}") from None
    finally:
        db.dispose()
        if other is not None:
            other.dispose()
    if as_json:
        _echo_json(info)
        return
    click.echo(info["report"])
