"""Glue for `glo run`: open the database, build or resume the scheduler, run its loop."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from db.session import open_db
from orchestrator.config import GloConfig
from orchestrator.scheduler import Scheduler


def run_search(db_path: str | Path | None, *, config: GloConfig | None = None, resume: str | None = None,
               run_id: str | None = None, show_progress: bool | None = None) -> tuple[str, str]:
    """(run_id, final status).  Exactly one of `config` (a new run) and `resume` (a run id)."""
    db = open_db(db_path, create=True)
    try:
        if resume is not None:
            sched = Scheduler.resume(db, resume, show_progress=show_progress)
        else:
            assert config is not None
            sched = Scheduler.create(db, config, run_id=run_id, show_progress=show_progress)
        logging.getLogger("glo").info("run %s: %s", sched.run_id, "resuming" if resume else "starting")
        status = asyncio.run(sched.run())
        return sched.run_id, status
    finally:
        db.dispose()
