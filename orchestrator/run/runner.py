"""Glue for `glo run`: take the run's scheduler lock, open the database, build or resume the scheduler,
run its loop."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from db.session import open_db
from db.store import Store
from orchestrator.config import GloConfig
from orchestrator.run.lock import SchedulerLock
from orchestrator.run.scheduler import Scheduler, SchedulerError, new_run_id


class NotResumableError(SchedulerError):
    """`--resume` of a run that is finished or cancelled: nothing to do, and retrying cannot help
    (`glo run` exits 3 so that a supervisor, e.g. the systemd unit, does not restart it)."""


def run_search(db_path: str | Path | None, *, config: GloConfig | None = None, resume: str | None = None,
               run_id: str | None = None, show_progress: bool | None = None) -> tuple[str, str]:
    """(run_id, final status).  Exactly one of `config` (a new run) and `resume` (a run id).

    The run's lock (orchestrator.run.lock) is held from before the run is created or resumed until it
    returns, so a second scheduler of the same run is refused with the first one's pid."""
    rid = resume if resume is not None else (run_id or new_run_id())
    db = open_db(db_path, create=True)
    try:
        if resume is not None:
            Store(db).get_run(resume)  # an unknown run is refused before any lock file is made for it
        with SchedulerLock(db.path, rid):
            if resume is not None:
                run = Store(db).get_run(resume)
                if run.status == "finished":
                    raise NotResumableError(f"run {resume} already finished; nothing to resume")
                if run.status == "cancelled":
                    raise NotResumableError(f"run {resume} was cancelled; start a new run instead")
                sched = Scheduler.resume(db, resume, show_progress=show_progress)
            else:
                assert config is not None
                sched = Scheduler.create(db, config, run_id=rid, show_progress=show_progress)
            logging.getLogger("glo").info("run %s: %s", sched.run_id, "resuming" if resume else "starting")
            status = asyncio.run(sched.run())
            return sched.run_id, status
    finally:
        db.dispose()
