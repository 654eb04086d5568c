"""The read API behind the CLI: frozen snapshots, one read transaction (one snapshot) each.

Kept apart from db.store (writes) so that `glo status` can never change a run, and so that
every answer is internally consistent even while `glo run` writes (WAL + one BEGIN).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from sqlalchemy import func, select

from db import models
from db.errors import NotFoundError
from db.fastread import (
    ATTEMPTS_SQL,
    BEST_SQL,
    HELD_JOBS_SHOWN,  # noqa: F401 (re-exported for the status tests)
    attempt_json,
    expected_evaluations,  # noqa: F401 (re-exported: glo experiment reads it here)
    read_status,
    run_kind,  # noqa: F401 (re-exported: glo experiment reads it here)
)
from db.session import Database
from db.snapshots import CandidateRow, EvaluationRow, JobRow, RunRow


@dataclass(frozen=True)
class Status:
    run_id: str
    name: str
    status: str
    phase: str
    generation: int
    task: str
    evaluations: dict[str, int]  # done, running, failed, cached, resolved, queued
    best: dict[str, Any] | None  # candidate_id, fitness, infix
    evaluations_per_hour: float | None
    eta_seconds: float | None
    expected_evaluations: int
    elapsed_seconds: float
    message: str
    backend: str = "local"
    jobs: dict[str, int] | None = None  # job count per state
    held_jobs: list[dict[str, Any]] | None = None  # jobs held now or that were held (cluster backends)
    warning: str | None = None  # a finished run with no usable result (db.fastread.no_result_warning)
    generation0: dict[str, Any] | None = None  # members of generation 0 and how many could train
    trainings_per_budget: list[dict[str, int]] = field(default_factory=list)  # [{"steps", "trainings"}] per rung
    steady: dict[str, Any] | None = None  # a steady-state search's trainings and budget (db.fastread.steady_progress)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _latest_run_id(s: Any) -> str:
    rid = s.scalars(select(models.Run.id).order_by(models.Run.created_at.desc()).limit(1)).first()
    if rid is None:
        raise NotFoundError("no runs in this database yet")
    return rid


def _run(s: Any, run_id: str | None) -> models.Run:
    rid = run_id or _latest_run_id(s)
    run = s.get(models.Run, rid)
    if run is None:
        raise NotFoundError(f"no run {rid!r} in this database (see `glo runs`)")
    return run


def list_runs(db: Database) -> list[dict[str, Any]]:
    with db.session() as s:
        rows = s.execute(select(models.Run).order_by(models.Run.created_at)).scalars().all()
        out = []
        for r in rows:
            counts = dict(s.execute(select(models.Candidate.status, func.count()).where(
                models.Candidate.run_id == r.id).group_by(models.Candidate.status)).all())
            best = s.execute(select(func.max(models.Candidate.fitness)).where(
                models.Candidate.run_id == r.id, models.Candidate.status.in_(("evaluated", "cached")))).scalar()
            out.append({"run_id": r.id, "name": r.name, "task": r.task, "status": r.status, "phase": r.phase,
                        "generation": r.generation, "evaluated": counts.get("evaluated", 0),
                        "cached": counts.get("cached", 0), "failed": counts.get("failed", 0), "best_fitness": best,
                        "created_at": r.created_at})
        return out


def get_run(db: Database, run_id: str | None) -> RunRow:
    with db.session() as s:
        return RunRow.of(_run(s, run_id))




def status(db: Database, run_id: str | None = None) -> Status:
    """`glo status` of a run (default: the latest): db.fastread's one reading of a run's status, over this
    session's connection (one snapshot), so the fast path and this one cannot drift apart."""
    with db.session() as s:
        raw = s.connection().connection.dbapi_connection
        factory = raw.row_factory
        try:
            return Status(**read_status(raw, run_id))
        finally:
            raw.row_factory = factory


def _attempts(s: Any, job_id: int) -> list[dict[str, Any]]:
    return [attempt_json(r._mapping) for r in s.connection().exec_driver_sql(ATTEMPTS_SQL, (job_id,))]


def job_attempts(db: Database, job_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Every attempt of each job, oldest first (`glo show` of a candidate lists them under its jobs)."""
    with db.session() as s:
        return {jid: _attempts(s, jid) for jid in job_ids}


#: `glo show RUN/job-N` (or `job-N` in the latest run): N is the job id `glo status` and the dashboard show.
_JOB_IDENT = re.compile(r"(?:(?P<run>.+)/)?job-(?P<id>\d+)")


def is_job_ident(ident: str) -> bool:
    return _JOB_IDENT.fullmatch(ident) is not None


def job(db: Database, ident: str) -> tuple[JobRow, list[dict[str, Any]], list[CandidateRow]]:
    """A job by `RUN/job-N` (or `job-N` in the latest run): its row, its attempts, the candidates it carries."""
    m = _JOB_IDENT.fullmatch(ident)
    if m is None:
        raise NotFoundError(f"{ident!r} is not a job: give RUN/job-N, as `glo status` lists them")
    with db.session() as s:
        run_id = m["run"] or _latest_run_id(s)
        j = s.get(models.Job, int(m["id"]))
        if j is None or j.run_id != run_id:
            raise NotFoundError(f"no job {m['id']} in run {run_id!r} (see `glo status {run_id}`)")
        uids = tuple(s.scalars(select(models.JobCandidate.candidate_uid).where(models.JobCandidate.job_id == j.id)
                               .order_by(models.JobCandidate.candidate_uid)))
        cands = [CandidateRow.of(c) for c in s.scalars(select(models.Candidate).where(
            models.Candidate.uid.in_(uids)).order_by(models.Candidate.seq))]
        return JobRow.of(j, uids), _attempts(s, j.id), cands


def best(db: Database, run_id: str | None = None, k: int = 10) -> list[CandidateRow]:
    """Top-k distinct losses (by canonical key) of a run by fitness (db.fastread.BEST_SQL: a promotion
    trained on several seeds is its first training's row with the mean fitness and `trainings`)."""
    with db.session() as s:
        run = _run(s, run_id)
        ranked = [(row[0], row[1], row[4]) for row in s.connection().exec_driver_sql(BEST_SQL, (run.id,))]
        out: list[CandidateRow] = []
        seen: set[tuple[str, str]] = set()
        for uid, fitness, trainings in ranked:
            c = s.get(models.Candidate, uid)
            loss = (c.canonical_key, c.coefficients_json)  # one loss once, at its longest training
            if loss in seen:
                continue
            seen.add(loss)
            row = CandidateRow.of(c)
            out.append(row if trainings == 1 else replace(row, fitness=float(fitness), trainings=int(trainings)))
            if len(out) >= k:
                break
        return out


def candidate(db: Database, ident: str) -> tuple[CandidateRow, EvaluationRow | None, list[JobRow]]:
    """A candidate by uid (RUN/ID) or by bare search id in the latest run."""
    with db.session() as s:
        c = s.get(models.Candidate, ident)
        if c is None and "/" not in ident:
            c = s.get(models.Candidate, f"{_latest_run_id(s)}/{ident}")
        if c is None:
            raise NotFoundError(f"no candidate {ident!r} (use RUN_ID/ID as shown by `glo best`)")
        ev = s.get(models.Evaluation, c.evaluation_id) if c.evaluation_id else None
        job_ids = s.scalars(select(models.JobCandidate.job_id).where(models.JobCandidate.candidate_uid == c.uid)).all()
        jobs = []
        for jid in job_ids:
            j = s.get(models.Job, jid)
            uids = tuple(s.scalars(select(models.JobCandidate.candidate_uid).where(models.JobCandidate.job_id == jid)))
            jobs.append(JobRow.of(j, uids))
        return CandidateRow.of(c), (EvaluationRow.of(ev) if ev else None), jobs


def evaluation_results(db: Database, run_id: str) -> dict[str, Any]:
    """What an evaluation run measured, cell by cell (loss x fraction x seed), as plain data for the
    statistics, figures and report (orchestrator.experiments).  Cells not trained yet are "pending".
    `records` are the test trainings at the task's learning rate (`learning_rate`); with a rate grid
    (`learning_rates`), `selection_records` are the grid trainings with the `selection_seeds` (validation
    accuracy only) and `rate_records` the test trainings at the grid rates the losses chose."""
    with db.session() as s:
        run = _run(s, run_id)
        config = json.loads(run.config_json)
        ev_cfg = config.get("evaluate")
        if not ev_cfg:
            raise NotFoundError(f"run {run.id} is a search, not an evaluation (see `glo evaluate`)")
        losses = [{"label": d["label"], "infix": ""} for d in ev_cfg["losses"]]
        fractions = [float(f) for f in ev_cfg.get("fractions", [1.0])]
        rows = s.execute(select(models.Candidate, models.Evaluation).outerjoin(
            models.Evaluation, models.Evaluation.id == models.Candidate.evaluation_id).where(
            models.Candidate.run_id == run.id).order_by(models.Candidate.seq)).all()
        from orchestrator.search.evaluation import parse_cell_id  # the plan's own id grammar

        task = config.get("task", {})
        base_rate = float(task.get("learning_rate", 0.01))
        grid = [float(r) for r in ev_cfg.get("learning_rates") or []]
        selection_seeds = [int(x) for x in ev_cfg.get("selection_seeds") or []]
        records: list[dict[str, Any]] = []  # the test trainings at the task's rate (every figure's)
        selection: list[dict[str, Any]] = []  # grid trainings with the selection seeds (validation only)
        at_rates: list[dict[str, Any]] = []  # grid trainings with the test seeds (at a loss's chosen rate)
        for cand, ev in rows:
            try:
                i, j, seed, k = parse_cell_id(cand.search_id)
            except ValueError:
                continue
            losses[i]["infix"] = cand.infix
            metrics = json.loads(ev.metrics_json) if ev is not None else {}
            extra = metrics.get("extra") or {}
            status = {"evaluated": "ok", "cached": "ok", "failed": "failed", "pending": "pending"}.get(
                cand.status, cand.status)
            if ev is not None and ev.status != "ok":
                status = ev.status
            record = {
                "loss": losses[i]["label"], "seed": seed, "fraction": fractions[j], "status": status,
                "learning_rate": base_rate if k is None else grid[k], "rate_index": k,
                "test_accuracy": metrics.get("test_accuracy"), "validation_accuracy": metrics.get("validation_accuracy"),
                "test_curve": extra.get("test_curve"), "probability_histogram": extra.get("probability_histogram"),
                "candidate_id": cand.uid, "device": ev.device if ev is not None else None,
                "wall_seconds": ev.wall_seconds if ev is not None else None, "error": cand.error or None,
                "data_source": extra.get("data_source"),
            }
            (records if k is None else selection if seed in selection_seeds else at_rates).append(record)
        from worker.data import data_label  # numpy: only when results are read
        from worker.spec import TASK_CLASSES

        data = task.get("data_path") or ""
        return {"run_id": run.id, "task": run.task, "steps": int(task.get("steps", 0)),
                "data_label": data_label(run.task, data, *(r.get("data_source") for r in records)), "losses": losses,
                "seeds": list(ev_cfg["seeds"]), "fractions": fractions, "records": records,
                "status": run.status, "curve_every": ev_cfg.get("curve_every"),
                "learning_rate": base_rate, "learning_rates": grid, "selection_seeds": selection_seeds,
                "selection_records": selection, "rate_records": at_rates,
                "classes": TASK_CLASSES.get(run.task)}
