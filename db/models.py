"""Typed SQLAlchemy models: the persistent state of every run.

Everything the scheduler knows lives here, so a crashed `glo run` can be resumed from the file
alone.  Timestamps are UTC epoch seconds (REAL) so that sqlite3 users can do arithmetic on them.
JSON columns hold plain data written by `json.dumps` -- never pickles.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: Run lifecycle.  `running` is also what a crashed run looks like (its pid is gone).
RUN_STATUSES = ("running", "stopped", "finished", "failed", "cancelled")

#: Job states and the legal transitions between them (see db.store.transition_job).
JOB_STATES = ("queued", "submitted", "running", "done", "failed", "held", "lost")
JOB_TRANSITIONS: dict[str, frozenset[str]] = {
    "queued": frozenset({"submitted", "done", "failed"}),  # done: settled elsewhere (cache)
    "submitted": frozenset({"running", "done", "failed", "held", "lost", "queued"}),
    "running": frozenset({"done", "failed", "held", "lost", "queued", "submitted"}),  # submitted: evicted
    # submitted: released; done: a backup copy of it delivered (its attempt "superseded")
    "held": frozenset({"queued", "submitted", "running", "failed", "lost", "done"}),
    "lost": frozenset({"queued", "failed"}),
    "done": frozenset(),
    "failed": frozenset(),
}
ACTIVE_JOB_STATES = ("submitted", "running", "held")

#: Candidate status: pending (asked, not resolved yet), cached (fitness from the cache),
#: evaluated (trained here), failed (gave up after retries; told 0.0), resolved (the search
#: settled it without training, e.g. invalid or duplicate).
CANDIDATE_STATUSES = ("pending", "cached", "evaluated", "failed", "resolved")


class Base(DeclarativeBase):
    pass


class SchemaVersion(Base):
    __tablename__ = "schema_version"
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    applied_at: Mapped[float] = mapped_column(Float)
    description: Mapped[str] = mapped_column(Text, default="")


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[str] = mapped_column(String, primary_key=True)
    name: Mapped[str] = mapped_column(String, default="")
    config_json: Mapped[str] = mapped_column(Text)  # the effective config, all defaults filled in
    seed: Mapped[int] = mapped_column(Integer)
    task: Mapped[str] = mapped_column(String)
    backend: Mapped[str] = mapped_column(String)
    phase: Mapped[str] = mapped_column(String, default="discovery")  # discovery | cma | done
    generation: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String, default="running")
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float] = mapped_column(Float)  # of the current session (resume resets it)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    summary_json: Mapped[str | None] = mapped_column(Text, nullable=True)


class Evaluation(Base):
    """The fitness cache: one row per (loss, task, budget, seed policy), shared by all runs."""

    __tablename__ = "evaluations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    eval_key: Mapped[str] = mapped_column(String, unique=True)  # sha256 of the fields below
    canonical_key: Mapped[str] = mapped_column(Text)
    coefficients_json: Mapped[str] = mapped_column(Text)
    task: Mapped[str] = mapped_column(String)
    budget_json: Mapped[str] = mapped_column(Text)  # steps, batch_size, learning_rate, ...
    steps: Mapped[int] = mapped_column(Integer)
    seed_policy: Mapped[str] = mapped_column(String)
    status: Mapped[str] = mapped_column(String)  # worker status: ok | nonfinite | collapsed (worker.spec)
    fitness: Mapped[float] = mapped_column(Float)
    metrics_json: Mapped[str] = mapped_column(Text, default="{}")
    wall_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    train_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    eval_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    device: Mapped[str] = mapped_column(String, default="")
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"), nullable=True)  # first measured by
    candidate_uid: Mapped[str | None] = mapped_column(String, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)


class CanonicalKey(Base):
    """The canonical key once computed for an exact tree (coefficients included), shared by all runs.

    Canonicalization is bounded in time: a tree whose symbolic step times out on a loaded machine
    gets its structural key instead.  Remembering the first answer makes the key a fixed function
    of the tree within a database, so a resumed or repeated run dedups and hits the cache exactly
    as the first one did."""

    __tablename__ = "canonical_keys"
    tree_sha: Mapped[str] = mapped_column(String, primary_key=True)  # sha256 of the tree's sorted JSON
    canonical_key: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)


class Candidate(Base):
    __tablename__ = "candidates"
    uid: Mapped[str] = mapped_column(String, primary_key=True)  # "<run_id>/<search id>"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    search_id: Mapped[str] = mapped_column(String)
    seq: Mapped[int] = mapped_column(Integer)  # order handed out by the search
    tree_json: Mapped[str] = mapped_column(Text)
    infix: Mapped[str] = mapped_column(Text)
    coefficients_json: Mapped[str] = mapped_column(Text)
    canonical_key: Mapped[str] = mapped_column(Text)
    eval_key: Mapped[str] = mapped_column(String, index=True)
    generation: Mapped[int] = mapped_column(Integer)
    phase: Mapped[str] = mapped_column(String)
    origin: Mapped[str] = mapped_column(String)
    parents_json: Mapped[str] = mapped_column(Text, default="[]")
    status: Mapped[str] = mapped_column(String, default="pending")
    fitness: Mapped[float | None] = mapped_column(Float, nullable=True)  # what the search was told
    error: Mapped[str] = mapped_column(Text, default="")
    evaluation_id: Mapped[int | None] = mapped_column(ForeignKey("evaluations.id"), nullable=True)
    told: Mapped[bool] = mapped_column(Boolean, default=False)  # the saved search state includes it
    created_at: Mapped[float] = mapped_column(Float)
    resolved_at: Mapped[float | None] = mapped_column(Float, nullable=True)

    __table_args__ = (UniqueConstraint("run_id", "search_id"), Index("ix_candidates_run_status", "run_id", "status"))


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    backend: Mapped[str] = mapped_column(String)
    backend_job_id: Mapped[str | None] = mapped_column(String, nullable=True)
    state: Mapped[str] = mapped_column(String, default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # submissions so far
    last_error: Mapped[str] = mapped_column(Text, default="")
    hold_reason: Mapped[str] = mapped_column(Text, default="")
    work_dir: Mapped[str] = mapped_column(Text, default="")
    lease_deadline: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Cluster jobs (schema v3): the hold GLO last saw (HTCondor's HoldReasonCode / SubCode), the machine the
    # job last ran on, and what happened to it in the pool (evictions, releases, machines it failed on).
    hold_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    hold_subcode: Mapped[int | None] = mapped_column(Integer, nullable=True)
    host: Mapped[str] = mapped_column(Text, default="")
    evictions: Mapped[int] = mapped_column(Integer, default=0)
    releases: Mapped[int] = mapped_column(Integer, default=0)
    bad_nodes_json: Mapped[str] = mapped_column(Text, default="[]")
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    submitted_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)

    __table_args__ = (Index("ix_jobs_run_state", "run_id", "state"),)


#: How an attempt ended (JobAttempt.outcome); "" while it is in flight (or when its scheduler died meanwhile).
#: "superseded": a copy of the same candidates (a backup, BackendConfig.backup_copies) finished first.
ATTEMPT_OUTCOMES = ("done", "retried", "failed", "lost", "superseded")


class JobAttempt(Base):
    """One submission of a job (schema v4): HTCondor keeps a history of every attempt, and so does GLO --
    the job row keeps only the latest state and error, so a hold, a removal and an eviction of one job
    would otherwise leave only the last of them.  Written by db.store in the same transaction as the job's
    own transition; `notes` lists what happened during the attempt (held ..., released, evicted ...)."""

    __tablename__ = "job_attempts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)  # 1, 2, ...: the job's `attempts` when it was submitted
    backend_job_id: Mapped[str | None] = mapped_column(String, nullable=True)  # the cluster id
    host: Mapped[str] = mapped_column(Text, default="")
    submitted_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    outcome: Mapped[str] = mapped_column(String, default="")
    error: Mapped[str] = mapped_column(Text, default="")  # why it ended badly
    hold_code: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the attempt's last hold
    hold_subcode: Mapped[int | None] = mapped_column(Integer, nullable=True)
    hold_reason: Mapped[str] = mapped_column(Text, default="")
    holds: Mapped[int] = mapped_column(Integer, default=0)
    releases: Mapped[int] = mapped_column(Integer, default=0)
    evictions: Mapped[int] = mapped_column(Integer, default=0)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    exit_signal: Mapped[int | None] = mapped_column(Integer, nullable=True)
    notes_json: Mapped[str] = mapped_column(Text, default="[]")  # [[epoch seconds, "held: ..."], ...]

    __table_args__ = (UniqueConstraint("job_id", "attempt"),)


class JobCandidate(Base):
    __tablename__ = "job_candidates"
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    candidate_uid: Mapped[str] = mapped_column(ForeignKey("candidates.uid"), primary_key=True)


class SearchState(Base):
    """The search's export_state (kind 'search'; the CMA-ES state travels inside it) as versioned JSON."""

    __tablename__ = "search_states"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    kind: Mapped[str] = mapped_column(String, primary_key=True, default="search")
    version: Mapped[int] = mapped_column(Integer, default=1)
    seq: Mapped[int] = mapped_column(Integer, default=0)  # bumped on every save
    state_json: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[float] = mapped_column(Float)


class SearchLogEntry(Base):
    """One ask or tell of the search since its state was last saved whole (schema v5): {"ask": [ids handed
    out]} or {"tell": id, "fitness": f}, in order.  The scheduler saves the whole state only every so often
    (its size grows with the run: megabytes after thousands of steady-state trainings) and these small rows in
    between, in the same transactions as what they did; a resume loads the state and replays the entries
    after it, which gives the same search exactly (its ask/tell is deterministic given the order of calls).
    Saving the state deletes the entries it covers."""

    __tablename__ = "search_log"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    entry_json: Mapped[str] = mapped_column(Text)
