"""Where jobs run.  `make_backend(config)` picks one by `backend.kind`."""

from __future__ import annotations

import asyncio
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from orchestrator.backends.base import Backend, BackendError, BackendUnavailable, JobEvent, JobRequest
from orchestrator.config import BackendConfig

if TYPE_CHECKING:
    from orchestrator.backends.htcondor.transport import Transport

__all__ = ["Backend", "BackendError", "BackendUnavailable", "JobEvent", "JobRequest", "make_backend"]


def make_backend(config: BackendConfig, events: asyncio.Queue[JobEvent], work_root: Path, run_id: str) -> Backend:
    if config.kind == "local":
        from orchestrator.backends.local import LocalBackend

        return LocalBackend(config, events, work_root)
    if config.cluster:
        from orchestrator.backends.htcondor.core import ClusterBackend

        transport, remote_root = make_transport(config)
        return ClusterBackend(config, events, work_root, run_id, transport, remote_root)
    raise ValueError(f"backend.kind: unknown backend {config.kind!r}")


def make_transport(config: BackendConfig) -> tuple[Transport, PurePosixPath | None]:
    """The way to the submit host for a cluster kind, and where runs live there (None: this machine)."""
    if config.kind == "condor":
        from orchestrator.backends.htcondor.bindings import CondorTransport

        return CondorTransport(), None
    if config.kind == "ssh":
        from orchestrator.backends.htcondor.ssh import ssh_transport

        return ssh_transport(config.ssh)
    raise ValueError(f"backend.kind {config.kind!r} has no submit host")


def cancel_cluster_run(config: BackendConfig, run_id: str) -> int:
    """Remove every job of a run from its pool's queue (`glo cancel`, with or without a live scheduler)."""
    from orchestrator.backends.htcondor.core import run_constraint

    transport, _ = make_transport(config)
    try:
        return transport.remove_matching(run_constraint(run_id), "GLO: run cancelled")
    finally:
        transport.close()
