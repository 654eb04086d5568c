"""`glo experiment CONFIG`: a whole paper experiment -- discovery, then evaluation, then the report.

The config is an ordinary `glo run` config plus an [experiment] table:

    [experiment]
    losses = ["best", "baikal", "ce"]  # "best": the discovery run's best loss; "transfer": the best loss of
                                       # the run in --transfer-from (else baikal), and no search is run here
    steps = 20000                      # each evaluation training
    repeats = 10                       # paired seeds 0..K-1
    seeds = [100, 101]                 # or these training seeds (instead of repeats), e.g. to keep them
                                       # apart from the search's own (task.seed and, with fidelity.seeds,
                                       # the next ones)
    curve_every = 1000                 # test accuracy every S steps (Figs. 3, 5)
    fractions = [1.0]                  # training-set fractions (Fig. 4)
    learning_rates = [0.01, 0.1, 1.0]  # a grid: each loss also at its own rate, chosen on validation accuracy
    selection_seeds = [1000, 1001]     # the seeds that choose the rate (never the test seeds; the default)
    search_learning_rate = "tuned"     # "tuned": first choose ce's rate on the grid (at the evaluation's
                                       # settings), then search at it; "task": search at task.learning_rate

Runs have fixed ids (`<run.name>-rate`, `<run.name>-search`, `<run.name>-eval`), so running it again resumes
where it stopped: a finished step is kept, a stopped or crashed one is resumed, a missing one is started.

Why tune the search's rate: a short training's fitness rewards a larger step first, so a search at an untuned
rate pays a loss for being cross-entropy with a larger gradient.  At ce's own best rate that is worth nothing,
and only what a rate cannot give -- a different shape -- can win.  The rate run trains ce exactly as the
evaluation's selection trainings do (same steps, data, seeds), so the evaluation finds them in the cache.
Before anything trains it prints how long the whole takes at the speed measured in this database for
this task (or, when there is none yet, measured by a short probe training on this machine).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from orchestrator.config import (
    EXPERIMENT_SECTION,
    ConfigError,
    GloConfig,
    from_dict,
    learning_rate_grid,
    read_config_data,
    run_settings,
)

EXPERIMENT_KEYS = {"losses", "steps", "repeats", "seeds", "curve_every", "fractions", "learning_rates", "selection_seeds",
                   "search_learning_rate"}
#: experiment.search_learning_rate: search at the task's rate, or at ce's rate chosen on the grid first
SEARCH_RATES = ("task", "tuned")


@dataclass(frozen=True)
class Experiment:
    config: GloConfig  # the discovery run's config (its [task] and [backend] serve the evaluation too)
    losses: tuple[str, ...]
    steps: int
    repeats: int
    curve_every: int | None
    fractions: tuple[float, ...]
    seeds: tuple[int, ...] = ()  # the evaluation's training seeds; () is 0..repeats-1
    learning_rates: tuple[float, ...] = ()  # each loss's own rate from this grid too; () none
    selection_seeds: tuple[int, ...] = ()  # the seeds that choose a rate on the grid
    search_learning_rate: str = "task"  # one of SEARCH_RATES

    @property
    def eval_seeds(self) -> list[int]:
        return list(self.seeds) if self.seeds else list(range(self.repeats))

    @property
    def search_run(self) -> str:
        return f"{self.config.run.name or 'experiment'}-search"

    @property
    def eval_run(self) -> str:
        return f"{self.config.run.name or 'experiment'}-eval"

    @property
    def rate_run(self) -> str:
        return f"{self.config.run.name or 'experiment'}-rate"

    @property
    def needs_search(self) -> bool:
        return "best" in self.losses

    @property
    def tunes_search_rate(self) -> bool:
        return self.needs_search and self.search_learning_rate == "tuned"


def load_experiment(path: str | Path, overrides: Sequence[str] = ()) -> Experiment:
    p = Path(path)
    data = read_config_data(p, overrides)
    exp = data.get(EXPERIMENT_SECTION)
    if not isinstance(exp, dict):
        raise ConfigError(f"{p}: experiment: an [experiment] table is needed (losses, steps, repeats, curve_every)")
    unknown = set(exp) - EXPERIMENT_KEYS
    if unknown:
        raise ConfigError(f"{p}: experiment.{sorted(unknown)[0]}: unknown key (known: {', '.join(sorted(EXPERIMENT_KEYS))})")
    losses = exp.get("losses", ["best", "baikal", "ce"])
    if not isinstance(losses, list) or not losses or not all(isinstance(x, str) and x for x in losses):
        raise ConfigError(f"{p}: experiment.losses: must be a list of losses, got {losses!r}")
    ints = {}
    for key, default, lo in (("steps", 2000, 1), ("repeats", 5, 1)):
        v = exp.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ConfigError(f"{p}: experiment.{key}: must be an integer >= {lo}, got {v!r}")
        ints[key] = v
    seeds = exp.get("seeds")
    if seeds is not None:
        if (not isinstance(seeds, list) or not seeds or len(set(map(repr, seeds))) != len(seeds)
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
            raise ConfigError(f"{p}: experiment.seeds: must be a non-empty list of distinct integers >= 0, got {seeds!r}")
        if "repeats" in exp and exp["repeats"] != len(seeds):
            raise ConfigError(f"{p}: experiment.seeds: {len(seeds)} seeds but repeats = {exp['repeats']}; give one of them")
        ints["repeats"] = len(seeds)
    curve = exp.get("curve_every")
    if curve is not None and (isinstance(curve, bool) or not isinstance(curve, int) or curve < 1):
        raise ConfigError(f"{p}: experiment.curve_every: must be an integer >= 1, got {curve!r}")
    fractions = exp.get("fractions", [1.0])
    if not isinstance(fractions, list) or not all(isinstance(f, (int, float)) and 0 < f <= 1 for f in fractions):
        raise ConfigError(f"{p}: experiment.fractions: must be a list of numbers in (0, 1], got {fractions!r}")
    try:
        config = from_dict(run_settings(data))
        rates, selection = learning_rate_grid("experiment", exp.get("learning_rates"), exp.get("selection_seeds"),
                                              seeds or list(range(ints["repeats"])))
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None
    search_rate = exp.get("search_learning_rate", "task")
    if search_rate not in SEARCH_RATES:
        raise ConfigError(f"{p}: experiment.search_learning_rate: must be one of {', '.join(SEARCH_RATES)}, "
                          f"got {search_rate!r}")
    if search_rate == "tuned" and not rates:
        raise ConfigError(f"{p}: experiment.search_learning_rate: \"tuned\" needs experiment.learning_rates (the grid "
                          "ce's rate is chosen on)")
    return Experiment(config, tuple(losses), ints["steps"], ints["repeats"], curve, tuple(float(f) for f in fractions),
                      tuple(seeds or ()), rates, selection, search_rate)


# -- how long it takes ----------------------------------------------------------------------------------------
def measured_speed(db: Any, task: str, backend: str) -> float | None:
    """Median training steps per second of this task's trainings already in the database on this backend."""
    import json

    from sqlalchemy import select

    from db import models

    with db.session() as s:
        rows = s.execute(select(models.Evaluation.metrics_json).join(
            models.Run, models.Run.id == models.Evaluation.run_id).where(
            models.Evaluation.task == task, models.Run.backend == backend).limit(500)).all()
    speeds = []
    for (text,) in rows:
        sps = (json.loads(text).get("extra") or {}).get("steps_per_second")
        if isinstance(sps, (int, float)) and sps > 0:
            speeds.append(float(sps))
    return statistics.median(speeds) if speeds else None


def probe_speed(config: GloConfig, steps: int = 40) -> float | None:
    """Steps per second of the task's model trained here for a few steps (ce), or None when it cannot run."""
    import json
    import subprocess
    import sys
    import tempfile

    from worker.lossexpr import named_loss
    from worker.spec import CandidateSpec, read_results

    spec = config.task.worker_spec([CandidateSpec("probe", named_loss("ce"))])
    raw = spec.to_json() | {"steps": steps}
    with tempfile.TemporaryDirectory() as d:
        Path(d, "spec.json").write_text(json.dumps(raw))
        done = subprocess.run([sys.executable, "-m", "worker", "spec.json", "--out", "result.json", "-q"], cwd=d,
                              capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            message = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            print(f"the speed probe failed (exit {done.returncode}): {message}", file=sys.stderr)
            return None
        _hash, results = read_results(Path(d, "result.json"))
    sps = results[0].extra.get("steps_per_second") if results else None
    return float(sps) if sps else None


def estimate_seconds(exp: Experiment, steps_per_second: float, parallel: int) -> dict[str, float]:
    """Rough wall time of the discovery and the evaluation at a given speed (per training, `parallel` at once
    sharing the machine's cores when local)."""
    from db.queries import expected_evaluations

    t = exp.config.task
    valid_share = 0.4  # measured: about 4 in 10 of a generation's trees are new, valid and trained
    searches = expected_evaluations(exp.config.to_dict()) * valid_share if exp.needs_search else 0
    # test cells at the task's rate, the selection grid, and (at most) each loss again at a chosen rate
    grid = len(exp.learning_rates) * len(exp.selection_seeds) + (exp.repeats if exp.learning_rates else 0)
    cells = len(exp.losses) * (exp.repeats + grid) * len(exp.fractions)
    per_step = 1.0 / steps_per_second
    overhead = 10.0  # TensorFlow start, data, first step, per job
    evals = 0.0 if exp.curve_every is None else (exp.steps / exp.curve_every) * 1.5  # test-set passes
    discovery = searches * (t.steps * per_step + overhead / max(1, exp.config.backend.candidates_per_job))
    evaluation = cells * (exp.steps * per_step + evals + overhead)
    share = parallel if exp.config.backend.kind != "local" else 1  # local: the jobs share the same cores
    return {"discovery": discovery / share, "evaluation": evaluation / share}


# -- the steps ------------------------------------------------------------------------------------------------
def _status(db: Any, run_id: str) -> str | None:
    from db.errors import NotFoundError
    from db.queries import get_run

    try:
        return get_run(db, run_id).status
    except NotFoundError:
        return None


def _run_or_resume(db_path: str | None, db: Any, run_id: str, config: GloConfig, echo: Callable[[str], None]) -> str:
    from orchestrator.run.runner import run_search

    status = _status(db, run_id)
    if status == "finished":
        echo(f"{run_id}: finished before; kept")
        return status
    if status == "cancelled":
        raise ConfigError(f"run {run_id} was cancelled; delete it or use another run.name to start again")
    echo(f"{run_id}: {'resuming' if status else 'starting'}")
    _rid, status = run_search(db_path, config=None if status else config, resume=run_id if status else None,
                              run_id=None if status else run_id, show_progress=False)
    return status


def resolve_losses(exp: Experiment, db: Any, transfer_db: str | None) -> tuple[list[str], list[str]]:
    """The LOSS arguments of the evaluation and their labels: "best" becomes the search's RUN/CANDIDATE, and
    "transfer" the other database's best formula (labelled "transfer: <formula, 4 digits>") or baikal."""
    from db.queries import best
    from db.session import open_db
    from orchestrator.experiments.report import short_formula

    out: list[str] = []
    labels: list[str] = []
    for loss in exp.losses:
        if loss == "best":
            rows = best(db, exp.search_run, 1)
            if not rows:
                raise ConfigError(f"run {exp.search_run} found no loss to evaluate")
            out.append(rows[0].uid)
            labels.append(rows[0].uid)
        elif loss == "transfer":
            found = None
            if transfer_db and Path(transfer_db).exists():
                other = open_db(transfer_db)
                searches = [r for r in _runs(other) if r["status"] == "finished" and r["kind"] == "search"]
                if searches:
                    rows = best(other, searches[-1]["run_id"], 1)
                    found = rows[0] if rows else None
            out.append(found.infix if found else "baikal")
            labels.append(f"transfer: {short_formula(found.infix)}" if found else "baikal")
        else:
            out.append(loss)
            labels.append(loss)
    return out, labels


def _runs(db: Any) -> list[dict[str, Any]]:
    from db.queries import get_run, list_runs, run_kind

    return [{**r, "kind": run_kind(get_run(db, r["run_id"]).config)} for r in list_runs(db)]


def _stored_config(db: Any, run_id: str) -> GloConfig:
    """The effective config a run stored (all defaults filled in), which is what it ran with."""
    from db.queries import get_run

    return from_dict(get_run(db, run_id).config)


def tune_rate(exp: Experiment, db_path: str | None, db: Any, echo: Callable[[str], None]) -> float:
    """ce's chosen rate on the experiment's grid: ce trained at every grid rate with the selection seeds, at the
    evaluation's settings (its steps, the whole training set), chosen on validation accuracy -- the same
    trainings, and so the same choice, as ce's selection in the evaluation that follows."""
    from db.queries import evaluation_results
    from orchestrator.experiments.evaluation import evaluation_config
    from orchestrator.experiments.stats import fmt_rate, rate_choices

    cfg = evaluation_config(("ce",), config_path=None, task=None, steps=exp.steps, seeds=[], fractions=(1.0,),
                            curve_every=None, overrides=(), db_path=db_path, name=exp.rate_run, base=exp.config,
                            learning_rates=list(exp.learning_rates), selection_seeds=list(exp.selection_seeds))
    status = _run_or_resume(db_path, db, exp.rate_run, cfg, echo)
    if status != "finished":
        raise ConfigError(f"run {exp.rate_run} {status}; run the same command again to resume it")
    choice = rate_choices(evaluation_results(db, exp.rate_run)).get(("ce", 1.0))
    if choice is None:
        raise ConfigError(f"run {exp.rate_run} chose no rate for ce (every selection training failed?)")
    means = ", ".join(f"{fmt_rate(r)}: {m:.4f}" for r, m in zip(exp.learning_rates, choice.means) if m is not None)
    echo(f"ce's rate: {fmt_rate(choice.rate)} (validation accuracy by rate, {exp.steps} steps: {means})"
         + ("; at the grid's edge: extend the grid" if choice.edge else "") + "; the search trains at it")
    return choice.rate


def run_experiment(config_path: str, db_path: str | None, out_dir: str, *, overrides: Sequence[str] = (),
                   transfer_db: str | None = None, estimate_only: bool = False,
                   echo: Callable[[str], None] = print) -> Path | None:
    """Discovery (when a loss is "best"), evaluation, report; each step kept, resumed or started."""
    import os

    from db.session import open_db
    from orchestrator.experiments.evaluation import evaluation_config

    exp = load_experiment(config_path, overrides)
    db = open_db(db_path, create=True)
    task = exp.config.task
    speed = measured_speed(db, task.name, exp.config.backend.kind)
    source = "measured in this database"
    own_worker = tuple(exp.config.backend.worker_command) == ("{python}", "-m", "worker")
    if speed is None and exp.config.backend.kind == "local" and own_worker:
        echo("measuring the training speed here (a 40-step probe) ...")
        speed, source = probe_speed(exp.config), "measured by a probe just now"
    if speed is None:
        echo("training speed unknown (no trainings of this task in this database yet): no estimate")
    else:
        est = estimate_seconds(exp, speed, min(exp.config.backend.max_in_flight, os.cpu_count() or 1))
        echo(f"estimate at {speed:.1f} steps/s ({source}, {task.name}, backend {exp.config.backend.kind}): "
             f"discovery ~{math.ceil(est['discovery'] / 60)} min, evaluation of {len(exp.losses)} losses x "
             f"{exp.repeats} seeds x {exp.steps} steps"
             + (f" (and each at {len(exp.learning_rates)} rates x {len(exp.selection_seeds)} selection seeds, then "
                "at its chosen rate)" if exp.learning_rates else "")
             + f" ~{math.ceil(est['evaluation'] / 60)} min")
    if estimate_only:
        return None
    t0 = time.monotonic()
    search_config = exp.config
    if exp.tunes_search_rate:
        rate = tune_rate(exp, db_path, db, echo)
        search_config = replace(exp.config, task=replace(exp.config.task, learning_rate=rate))
    if exp.needs_search:
        status = _run_or_resume(db_path, db, exp.search_run, search_config, echo)
        if status != "finished":
            raise ConfigError(f"run {exp.search_run} {status}; run the same command again to resume it")
        search_config = _stored_config(db, exp.search_run)  # a resumed search keeps the rate it started with
    losses, labels = resolve_losses(exp, db, transfer_db)
    echo(f"evaluating: {', '.join(labels)}")
    ev_cfg = evaluation_config(tuple(losses), config_path=None, task=None, steps=exp.steps,
                               seeds=exp.eval_seeds, fractions=exp.fractions, curve_every=exp.curve_every,
                               overrides=(), db_path=db_path, name=exp.eval_run, base=search_config, labels=labels,
                               learning_rates=list(exp.learning_rates), selection_seeds=list(exp.selection_seeds))
    status = _run_or_resume(db_path, db, exp.eval_run, ev_cfg, echo)
    if status != "finished":
        raise ConfigError(f"run {exp.eval_run} {status}; run the same command again to resume it")
    from orchestrator.experiments.report import write_report

    report = write_report(db, exp.eval_run, Path(out_dir))
    if exp.needs_search:
        write_report(db, exp.search_run, Path(out_dir) / "search")
    echo(f"done in {(time.monotonic() - t0) / 60:.1f} min: {report}")
    return report
