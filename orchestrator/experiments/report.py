"""`glo report`: one markdown page per run with its tables and figures (and those of its evaluations).

A search run is read from the database (read-only): the run row, `db.queries.status` and `best`, and the
candidates table for the progress figures.  An evaluation run comes as a results dict (the shape is
described in `orchestrator.experiments`), from `db.queries.evaluation_results(db, run_id)` when this GLO
has it, or handed in by the caller.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator.experiments import figures
from orchestrator.experiments.stats import (
    CHANCE_FACTOR,
    chance_records,
    chosen_rate_rows,
    fmt_fraction,
    fmt_rate,
    format_rate_table,
    format_table,
    loss_labels,
    md_escape,
    status_counts,
    summarize,
    verdicts,
)


class ReportError(RuntimeError):
    """A report that cannot be written, with a message a user can act on."""


# -- reading --------------------------------------------------------------------------------------------

def _run_row(db: Any, run_id: str | None) -> dict[str, Any]:
    """The runs row as a plain dict; the latest run when `run_id` is None."""
    from sqlalchemy import text

    from db.errors import NotFoundError

    with db.session() as s:
        if run_id is None:
            row = s.execute(text("select * from runs order by created_at desc limit 1")).mappings().first()
            if row is None:
                raise NotFoundError("no runs in this database yet")
        else:
            row = s.execute(text("select * from runs where id = :id"), {"id": run_id}).mappings().first()
            if row is None:
                raise NotFoundError(f"no run {run_id!r} in this database (see `glo runs`)")
        return dict(row)


def _kind(run: dict[str, Any]) -> str:
    """'search' or 'evaluation', as its stored config says (db.fastread.run_kind)."""
    from db.fastread import run_kind as config_kind

    return config_kind(json.loads(run.get("config_json") or "{}"))


def run_kind(db: Any, run_id: str) -> str:
    """'search' or 'evaluation'."""
    return _kind(_run_row(db, run_id))


def load_evaluation(db: Any, run_id: str) -> dict[str, Any]:
    """The results dict of an evaluation run (`db.queries.evaluation_results`)."""
    from db.queries import evaluation_results

    return evaluation_results(db, run_id)


def _evaluates(run: dict[str, Any], run_id: str) -> bool:
    """Whether an evaluation run's stored config names a loss of search `run_id` (label RUN/CANDIDATE)."""
    config = json.loads(run.get("config_json") or "{}")
    losses = (config.get("evaluate") or {}).get("losses") or []
    return any(isinstance(d, dict) and str(d.get("label", "")).strip().startswith(f"{run_id}/") for d in losses)


def find_evaluations_of(db: Any, run_id: str) -> list[dict[str, Any]]:
    """Results of the evaluation runs that evaluate this search's candidates (a loss given as RUN/CANDIDATE),
    oldest first."""
    from sqlalchemy import text

    from db.queries import evaluation_results

    with db.session() as s:
        runs = [dict(r) for r in s.execute(text("select * from runs order by created_at")).mappings().all()]
    return [evaluation_results(db, r["id"]) for r in runs
            if r["id"] != run_id and _kind(r) == "evaluation" and _evaluates(r, run_id)]


# -- writing --------------------------------------------------------------------------------------------

def _when(t: float | None) -> str:
    return "–" if t is None else datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _duration(s: float | None) -> str:
    if s is None:
        return "–"
    s = int(s)
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 60} min {s % 60:02d} s"


_NUMBER = re.compile(r"(?<![\w.])\d+\.\d{5,}(?:[eE][-+]?\d+)?")


def short_formula(infix: str) -> str:
    """A formula for reading: numbers with many digits rounded to 4 significant digits."""
    return _NUMBER.sub(lambda m: f"{float(m.group(0)):.4g}", infix)


def _n(k: Any, word: str) -> str:
    return f"{k} {word}{'s' * (k != 1)}"


def _safe_dir(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "evaluation"


class _Page:
    """The markdown lines and every file written for them."""

    def __init__(self, out_dir: Path) -> None:
        self.out = out_dir
        self.lines: list[str] = []
        self.files: list[Path] = []

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def figure(self, png: Path | None, caption: str, missing: str) -> None:
        if png is None:
            self.add(f"*{caption}: {missing}*", "")
            return
        rel = png.relative_to(self.out).as_posix()
        csv = png.with_suffix(".csv")
        self.files.append(png)
        if csv.exists():
            self.files.append(csv)
        self.add(f"![{caption}]({rel})", "",
                 f"*{caption}* (the numbers: [{csv.name}]({csv.relative_to(self.out).as_posix()}))", "")


def _kv_table(pairs: list[tuple[str, Any]]) -> list[str]:
    return ["| | |", "|:---|:---|", *(f"| {md_escape(k)} | {v} |" for k, v in pairs), ""]


def _evaluation_section(page: _Page, results: dict[str, Any], fig_dir: Path, level: int, baseline: str,
                        data_label: str | None) -> list[dict[str, Any]]:
    """The statistics table, one sentence per loss, and the figures of one evaluation run (its subsections
    are headings of `level`)."""
    h = "#" * level
    label = figures.data_label_of(results, data_label)
    fracs = [fmt_fraction(f) for f in results.get("fractions") or [1.0]]
    seeds = results.get("seeds") or sorted({r.get("seed") for r in results.get("records") or []}, key=str)
    counts = status_counts(results)
    total = sum(counts.values())
    page.add(*_kv_table([
        *([("run status", md_escape(results["status"]))] if results.get("status") else []),
        ("data", md_escape(label)),
        ("training steps", f"{results['steps']:,}" if results.get("steps") else "–"),
        ("repeats (training seeds, the same for every loss)", f"{len(seeds)}: {', '.join(map(str, seeds))}"),
        ("training-set fractions", ", ".join(fracs)),
        ("trainings" + (" at the task's rate" if results.get("learning_rates") else ""),
         f"{total}: " + (", ".join(f"{n} {st}" for st, n in sorted(counts.items())) or "none")),
        *([("learning rate", f"{fmt_rate(results['learning_rate'])} (the task's)")]
          if results.get("learning_rate") is not None else []),
        *([("learning-rate grid", f"{', '.join(map(fmt_rate, results['learning_rates']))}: "
            f"{len(results.get('selection_records') or [])} selection trainings (seeds "
            f"{', '.join(map(str, results.get('selection_seeds') or []))}), "
            f"{len(results.get('rate_records') or [])} test trainings at chosen rates other than the task's")]
          if results.get("learning_rates") else []),
    ]))
    not_counted = total - counts.get("ok", 0)
    if not_counted:
        page.add(f"Only the {counts.get('ok', 0)} trainings that finished (`ok`) with a test accuracy count below; "
                 f"{not_counted} do not (non-finite loss, collapsed training, failed, or still pending).", "")
    page.add(f"{h} Losses", "", "| loss | formula (x: true label, y: prediction) |", "|:---|:---|")
    infix = {loss["label"]: loss.get("infix", "") for loss in results.get("losses") or [] if isinstance(loss, dict)}
    for name in loss_labels(results):
        page.add(f"| `{md_escape(name)}` | `{md_escape(short_formula(infix.get(name) or '?'))}` |")
    page.add("")
    rows = summarize(results, baseline)
    rate = results.get("learning_rate")
    page.add(f"{h} Test accuracy" + (f" at the task's learning rate ({fmt_rate(rate)})" if rate is not None else ""),
             "", format_table(rows),
             f"Mean ± sample standard deviation over the repeats.  Each loss is tested against `{baseline}` at the "
             "same training-set fraction: Welch's t-test (unequal variances) and the paired t-test (pairs: the "
             f"same training seed); one-tailed p: the alternative is a higher mean accuracy than `{baseline}`.  "
             "– : undefined (the baseline itself, fewer than 2 values or pairs, or no variance).", "")
    sentences = verdicts(rows)
    if sentences:
        page.add(*(f"- {s}" for s in sentences), "")
    elif baseline not in loss_labels(results):
        page.add(f"No `{baseline}` in this evaluation, so no loss is tested against it.", "")
    if rate is not None and results.get("learning_rates"):
        page.add(f"The table above trains every loss at the task's learning rate, {fmt_rate(rate)}: a loss with a "
                 "larger gradient takes a larger step there, so it can win by step size alone.  The next table "
                 "gives each loss its own rate.", "")
    fig_dir.mkdir(parents=True, exist_ok=True)
    (fig_dir / "statistics.json").write_text(json.dumps(rows, indent=2) + "\n")
    figures.write_csv(fig_dir / "statistics.csv", list(rows[0]) if rows else ["loss"],
                       ([r[k] for k in rows[0]] for r in rows))
    page.files += [fig_dir / "statistics.json", fig_dir / "statistics.csv"]
    _rate_section(page, results, fig_dir, h, baseline, data_label)
    chance: dict[tuple[str, Any], list[str]] = {}
    for r in chance_records(results):
        chance.setdefault((r["loss"], r.get("learning_rate")), []).append(str(r["seed"]))
    if chance:
        page.add(f"{h} Trainings at chance accuracy", "",
                 "These finished with a finite loss (status `ok`) but learned nothing: accuracy below "
                 f"{CHANCE_FACTOR:g} x chance.  They count as measured, so such a rate loses the choice:", "",
                 *(f"- `{md_escape(loss)}` at lr {fmt_rate(rate)}: seed{'s' * (len(seeds) != 1)} {', '.join(seeds)}"
                   for (loss, rate), seeds in chance.items()), "")
    page.add(f"{h} Figures", "")
    page.figure(figures.fig3_curves(results, fig_dir, baseline=baseline, data_label=data_label),
                "Fig. 3: test accuracy during training", "no test curves recorded")
    page.figure(figures.fig4_fractions(results, fig_dir, baseline=baseline, data_label=data_label),
                "Fig. 4: test accuracy against the training-set fraction",
                "results at a single training-set fraction only")
    if results.get("task") == "cifar10":  # the paper's transfer figure; on MNIST it would repeat Fig. 3
        page.figure(figures.fig5_length(results, fig_dir, baseline=baseline, data_label=data_label),
                    "Fig. 5: test accuracy against training length", "no test curves recorded")
    page.figure(figures.fig7_histogram(results, fig_dir, baseline=baseline, data_label=data_label),
                "Fig. 7: histogram of the output probabilities on the test set", "no histograms recorded")
    return rows


def _rate_section(page: _Page, results: dict[str, Any], fig_dir: Path, h: str, baseline: str,
                  data_label: str | None) -> None:
    """Each loss at its own learning rate (a run with a rate grid): the chosen rates, the test accuracy there
    and the paired test against the baseline at *its* chosen rate, and the figure of validation accuracy
    against the rate."""
    grid = results.get("learning_rates") or []
    if not grid:
        return
    seeds = results.get("selection_seeds") or []
    page.add(f"{h} Each loss at its own learning rate", "",
             f"Each loss trained at every rate of the grid ({', '.join(fmt_rate(r) for r in grid)}) with the "
             f"selection seed{'s' * (len(seeds) != 1)} {', '.join(map(str, seeds))}, kept apart from the test seeds; "
             "the rate with the highest mean *validation* accuracy is the loss's rate (the test set chooses "
             "nothing), and the loss is then tested at that rate with the test seeds.  The paired test compares "
             f"each loss with `{baseline}` at `{baseline}`'s own chosen rate.", "")
    rows = chosen_rate_rows(results, baseline)
    if not rows:
        page.add("No loss has all its selection trainings yet.", "")
        return
    page.add(format_rate_table(rows))
    sentences = verdicts(rows)
    if sentences:
        page.add(*(f"- {s}" for s in sentences), "")
    edges = [r for r in rows if r.get("edge")]
    if edges:
        page.add("Chosen at the grid's edge (the best rate may lie beyond it; extend the grid): "
                 + ", ".join(f"`{md_escape(r['loss'])}` at {fmt_rate(r['learning_rate'])}" for r in edges) + ".", "")
    (fig_dir / "statistics_chosen_rates.json").write_text(json.dumps(rows, indent=2) + "\n")
    page.files.append(fig_dir / "statistics_chosen_rates.json")
    page.figure(figures.learning_rate_sweep(results, fig_dir, baseline=baseline, data_label=data_label),
                "Validation accuracy against the learning rate (the selection trainings)",
                "no selection training finished")


def _compare_section(page: _Page, db: Any, run_id: str, data: dict[str, Any], compare: list[str],
                     compare_db: Any = None) -> list[dict]:
    """Other searches beside this one: per run how it searched, what it spent, and its best top-rung fitness
    at the smallest run's budget (the equal-budget comparison), with the figure of all curves.  The others
    are read from `compare_db` when given: the fitness cache is per database, so a search run second in the
    same database reuses the first one's trainings and spends fewer steps than it would alone."""
    from db.queries import best

    other_db = compare_db if compare_db is not None else db
    # (label, database, id, search data) per run, never keyed by id: with --compare-db the other database
    # may hold a run of the same name (both "mnist-small-search"), and both must stay in the table
    runs = [(run_id, db, run_id, data)] + [(rid, other_db, rid, figures.search_data(other_db, rid)) for rid in compare]
    if len({rid for _l, _db, rid, _d in runs}) < len(runs):
        runs = [(f"{rid} ({'this' if i == 0 else 'compared'} database)", rdb, rid, d)
                for i, (_l, rdb, rid, d) in enumerate(runs)]
    curves = [figures.budget_curve(d) for _l, _db, _rid, d in runs]
    spent = [rows[-1]["steps_spent"] for rows in curves if rows]
    equal = min(spent) if spent else 0
    page.add("## Compared with other searches", "",
             f"Best fitness at each run's top rung (its longest training) after {equal:,} training steps, the "
             "budget of the run that spent least, and at the end of each run.", "",
             "| run | init | rungs (steps) | trainings | steps spent | best at equal budget | best at the end | "
             "best loss |", "|:---|:---|:---|---:|---:|---:|---:|:---|")
    rows_out = []
    for (label, rdb, rid, _d), rows in zip(runs, curves, strict=True):
        config = json.loads(_run_row(rdb, rid).get("config_json") or "{}")
        search = config.get("search", {})
        rungs = [config.get("task", {}).get("steps"), *(search.get("fidelity") or {}).get("steps", [])]
        top = best(rdb, rid, k=1)
        row = {"run_id": rid, "label": label, "init": search.get("ga", {}).get("init", "valid"), "rungs": rungs,
               "trainings": len(rows), "steps_spent": rows[-1]["steps_spent"] if rows else 0,
               "best_at_equal_budget": figures.best_within(rows, equal),
               "best_at_end": rows[-1]["best_at_top_rung"] if rows else None,
               "best_infix": top[0].infix if top else None}
        rows_out.append(row)
        fmt = lambda v: "–" if v is None else f"{v:.4f}"  # noqa: E731
        page.add(f"| `{md_escape(label)}` | {row['init']} | {', '.join(f'{r:,}' for r in rungs if r)} | {row['trainings']} | "
                 f"{row['steps_spent']:,} | {fmt(row['best_at_equal_budget'])} | {fmt(row['best_at_end'])} | "
                 f"`{md_escape(short_formula(row['best_infix'] or '–'))}` |")
    page.add("")
    page.figure(figures.compare_budgets([d for _l, _db, _rid, d in runs], page.out,
                                        labels=[label for label, _db, _rid, _d in runs]),
                "Best top-rung fitness against training steps spent, per search", "no run has a top-rung fitness")
    return rows_out


def _search_section(page: _Page, db: Any, run: dict[str, Any], data_label: str | None,
                    compare: list[str] | None = None, compare_db: Any = None) -> dict[str, Any]:
    from db.queries import best, status

    run_id = run["id"]
    st = status(db, run_id)
    config = json.loads(run.get("config_json") or "{}")
    ga = config.get("search", {}).get("ga", {})
    cma = config.get("search", {}).get("cma", {})
    task = config.get("task", {})
    ev = st.evaluations
    label = data_label or figures.data_label_for(run["task"], task.get("data_path"))
    page.add(f"# GLO search `{run_id}`" + (f" — {md_escape(run['name'])}" if run.get("name") else ""), "")
    page.add(*_kv_table([
        ("task", md_escape(label)),
        ("status", f"{run['status']}" + (f" ({md_escape(run['message'])})" if run.get("message") else "")),
        ("phase, generation", f"{run['phase']}, {run['generation']}"),
        ("backend", run.get("backend", "–")),
        ("created / finished", f"{_when(run.get('created_at'))} / {_when(run.get('finished_at'))}"),
        ("elapsed", _duration(st.elapsed_seconds)),
        ("discovery", f"population {ga.get('population_size', '–')}, {_n(ga.get('generations', '–'), 'generation')}, "
                      f"{_n(ga.get('elites', '–'), 'elite')}"),
        ("CMA-ES", f"the best {_n(cma.get('top_k', '–'), 'tree')}, {_n(cma.get('iterations', '–'), 'iteration')}"),
        ("fitness", f"validation accuracy after {task.get('steps', '?'):,} training steps"
         if isinstance(task.get("steps"), int) else "validation accuracy after the short training"),
        ("candidates", f"{ev['done']} trained, {_n(ev['cached'], 'cache hit')}, {ev['resolved']} resolved without "
                       f"training (elites, duplicates, invalid trees), {ev['failed']} failed, {ev['running']} running"),
        ("best", "–" if st.best is None else f"{st.best['fitness']:.4f}: `{md_escape(short_formula(st.best['infix']))}` "
                                             f"({st.best['candidate_id']})"),
    ]))
    top = best(db, run_id, k=10)
    page.add("## Best losses", "", "Distinct losses (by canonical form and coefficients), best fitness first.", "")
    if top:
        page.add("| # | candidate | phase | generation | fitness | formula |", "|---:|:---|:---|---:|---:|:---|")
        for i, c in enumerate(top, 1):
            page.add(f"| {i} | {c.uid} | {c.phase} | {c.generation} | {c.fitness:.4f} | "
                     f"`{md_escape(short_formula(c.infix))}` |")
        page.add("", "Coefficients are rounded to 4 significant digits here; `glo show RUN/ID` gives the exact "
                 "formula and `glo export RUN/ID` the loss as code.")
    else:
        page.add("*No candidate has a fitness yet.*")
    page.add("")
    data = figures.search_data(db, run_id)
    paths = {p.stem: p for p in figures.search_progress(db, run_id, page.out, data=data, data_label=label)}
    page.add("## Progress", "")
    page.figure(paths.get("search_fitness"), "Best, median and mean fitness per generation (discovery)",
                "no generation has fitnesses yet")
    page.figure(paths.get("search_cma"), "CMA-ES progress: fitness per iteration",
                "no CMA-ES phase yet")
    page.figure(paths.get("search_sources"),
                "Cache hits and resolutions: where each candidate's fitness came from", "no candidates yet")
    page.figure(paths.get("search_budget"),
                "Best fitness at the top rung (the longest training) against training steps spent",
                "no training has finished yet")
    compared = _compare_section(page, db, run_id, data, compare, compare_db) if compare else []
    return {"status": st.to_json(), "best": [{"candidate_id": c.uid, "fitness": c.fitness, "infix": c.infix}
                                             for c in top], "compared": compared}


def build_report(db: Any, run_id: str | None, out_dir: str | Path, *,
                 evaluations: list[dict[str, Any]] | None = None, results: dict[str, Any] | None = None,
                 baseline: str = "ce", data_label: str | None = None,
                 compare: list[str] | None = None, compare_db: Any = None) -> dict[str, Any]:
    """Write report.md and its figures into `out_dir`; returns {"run_id", "kind", "report", "files",
    "statistics", "evaluations"} (paths as strings; statistics: the `summarize` rows of an evaluation run,
    else None; evaluations: per included evaluation its run id and rows).

    A search run: summary, best losses, progress figures, then the evaluations of its losses — the
    results dicts in `evaluations`, or when None those that `find_evaluations_of` finds.  An evaluation
    run (runs.kind, or `results` given): its statistics, verdicts and figures.  `compare`: other search runs
    whose budget curves a search's report sets beside its own (`glo report --compare`), read from
    `compare_db` when given (`--compare-db`), else from `db`."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"cannot create {out}: {exc.strerror or exc}") from None
    page = _Page(out)
    info: dict[str, Any] = {"statistics": None, "evaluations": []}
    if results is None:
        run = _run_row(db, run_id)
        run_id = run["id"]
        kind = _kind(run)
        if kind == "evaluation":
            results = load_evaluation(db, run_id)
    else:
        run_id = results.get("run_id") or run_id or "evaluation"
        kind = "evaluation"
    if compare and kind == "evaluation":
        raise ReportError(f"--compare sets searches side by side; {run_id} is an evaluation run")
    for other in compare or []:
        if _kind(_run_row(compare_db if compare_db is not None else db, other)) != "search":
            raise ReportError(f"--compare {other}: not a search run")
    if kind == "evaluation":
        assert results is not None
        page.add(f"# GLO evaluation `{results.get('run_id', run_id)}`", "")
        info["statistics"] = _evaluation_section(page, results, out, 2, baseline, data_label)
    else:
        info.update(_search_section(page, db, run, data_label, compare, compare_db))
        if evaluations is None:
            evaluations = find_evaluations_of(db, run_id)
        page.add("## Evaluations of this search's losses", "")
        if not evaluations:
            page.add("*None found: no evaluation run (full trainings with test accuracy) of this search's losses "
                     "is in this database.*", "")
        for res in evaluations:
            eid = str(res.get("run_id") or "evaluation")
            page.add(f"### Evaluation `{eid}`", "")
            rows = _evaluation_section(page, res, out / _safe_dir(f"eval-{eid}"), 4, baseline, data_label)
            info["evaluations"].append({"run_id": eid, "statistics": rows})
    page.add(f"<sub>Written by `glo report` on {_when(datetime.now(tz=UTC).timestamp())}.</sub>", "")
    report = out / "report.md"
    report.write_text("\n".join(page.lines))
    files = [report, *page.files]
    return {"run_id": run_id, "kind": kind, "report": str(report), "files": [str(f) for f in files], **info}


def write_report(db: Any, run_id: str | None, out_dir: str | Path, *,
                 evaluations: list[dict[str, Any]] | None = None, results: dict[str, Any] | None = None,
                 baseline: str = "ce", data_label: str | None = None) -> Path:
    """`build_report`, returning the path of report.md."""
    return Path(build_report(db, run_id, out_dir, evaluations=evaluations, results=results, baseline=baseline,
                             data_label=data_label)["report"])
