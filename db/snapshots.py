"""Frozen snapshots handed out by the store and the queries: no live ORM objects leave db/."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from db import models


@dataclass(frozen=True)
class RunRow:
    id: str
    name: str
    config: dict[str, Any]
    seed: int
    task: str
    backend: str
    phase: str
    generation: int
    status: str
    pid: int | None
    message: str
    created_at: float
    updated_at: float
    started_at: float
    finished_at: float | None
    summary: dict[str, Any] | None

    @staticmethod
    def of(r: models.Run) -> "RunRow":
        return RunRow(
            r.id, r.name, json.loads(r.config_json), r.seed, r.task, r.backend, r.phase, r.generation, r.status,
            r.pid, r.message, r.created_at, r.updated_at, r.started_at, r.finished_at,
            json.loads(r.summary_json) if r.summary_json else None,
        )


@dataclass(frozen=True)
class CandidateRow:
    uid: str
    run_id: str
    search_id: str
    seq: int
    tree: dict[str, Any]
    infix: str
    coefficients: list[float]
    canonical_key: str
    eval_key: str
    generation: int
    phase: str
    origin: str
    parents: list[str]
    status: str
    fitness: float | None
    error: str
    evaluation_id: int | None
    told: bool
    trainings: int = 1  # db.queries.best: a promotion trained on several seeds, its fitness their mean

    @staticmethod
    def of(c: models.Candidate) -> "CandidateRow":
        return CandidateRow(
            c.uid, c.run_id, c.search_id, c.seq, json.loads(c.tree_json), c.infix, json.loads(c.coefficients_json),
            c.canonical_key, c.eval_key, c.generation, c.phase, c.origin, json.loads(c.parents_json), c.status,
            c.fitness, c.error, c.evaluation_id, c.told,
        )


@dataclass(frozen=True)
class EvaluationRow:
    id: int
    eval_key: str
    canonical_key: str
    task: str
    budget: dict[str, Any]
    seed_policy: str
    status: str
    fitness: float
    metrics: dict[str, Any]
    wall_seconds: float
    train_seconds: float
    run_id: str | None
    candidate_uid: str | None

    @staticmethod
    def of(e: models.Evaluation) -> "EvaluationRow":
        return EvaluationRow(
            e.id, e.eval_key, e.canonical_key, e.task, json.loads(e.budget_json), e.seed_policy, e.status,
            e.fitness, json.loads(e.metrics_json), e.wall_seconds, e.train_seconds, e.run_id, e.candidate_uid,
        )


@dataclass(frozen=True)
class JobRow:
    id: int
    run_id: str
    backend: str
    backend_job_id: str | None
    state: str
    attempts: int
    last_error: str
    hold_reason: str
    work_dir: str
    candidate_uids: tuple[str, ...]
    created_at: float
    submitted_at: float | None
    finished_at: float | None
    hold_code: int | None = None
    hold_subcode: int | None = None
    host: str = ""
    evictions: int = 0
    releases: int = 0
    bad_nodes: tuple[str, ...] = ()

    @staticmethod
    def of(j: models.Job, uids: tuple[str, ...]) -> "JobRow":
        return JobRow(
            j.id, j.run_id, j.backend, j.backend_job_id, j.state, j.attempts, j.last_error, j.hold_reason,
            j.work_dir, uids, j.created_at, j.submitted_at, j.finished_at, j.hold_code, j.hold_subcode,
            j.host or "", j.evictions or 0, j.releases or 0, tuple(json.loads(j.bad_nodes_json or "[]")),
        )
