"""Where jobs run.  `make_backend(config)` picks one by `backend.kind`."""

from __future__ import annotations

import asyncio
from pathlib import Path

from orchestrator.backends.base import Backend, JobEvent, JobRequest
from orchestrator.config import BackendConfig

__all__ = ["Backend", "JobEvent", "JobRequest", "make_backend"]


def make_backend(config: BackendConfig, events: asyncio.Queue[JobEvent], work_root: Path) -> Backend:
    if config.kind == "local":
        from orchestrator.backends.local import LocalBackend

        return LocalBackend(config, events, work_root)
    raise ValueError(f"backend.kind: unknown backend {config.kind!r}")
