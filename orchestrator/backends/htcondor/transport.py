"""How the cluster backends reach a schedd: the one place where `condor` and `ssh` differ.

The shared core (orchestrator.backends.htcondor.core) renders submit descriptions, follows the run's event
log, applies the hold/retry policy and re-adopts jobs.  What it needs from the submit host is this
small, synchronous surface: files in the run's directory on the submit host, the schedd's submit /
query / history / act, and the pool's machine names.  `CondorTransport` does it on this machine
through the htcondor2 bindings; `SshTransport` (orchestrator.backends.htcondor.ssh) does it on the submit host
over one SSH connection with the command-line tools.  The core calls these methods in a worker thread
(asyncio.to_thread), so they may block.

Paths are POSIX paths *on the submit host*.  Every method raises `TransportError` (or a subclass)
with a one-line message naming what failed; `TransportUnavailable` means the submit host or its
schedd could not be reached at all, and the core retries later instead of failing jobs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any, Literal, Protocol

from condor.submit import SubmittedCluster
from orchestrator.backends.base import BackendError, BackendUnavailable

Action = Literal["hold", "release", "remove"]


class TransportError(BackendError):
    """A submit-host operation failed (the message names the operation and the cause)."""


class TransportUnavailable(TransportError, BackendUnavailable):
    """The submit host or its schedd did not answer: nothing was done, try again later."""


class Transport(Protocol):
    #: "condor" (bindings, this machine) or "ssh" (command-line tools over SSH).
    kind: str
    #: Operations done so far, by name: "submit", "query", "history", "act", "machines",
    #: "write", "read", "mkdir" (ssh adds "roundtrip" for every request that crossed the network).
    counts: Counter[str]

    def make_dirs(self, path: PurePosixPath) -> None:
        """mkdir -p `path`, writable by the user the pool runs this submitter's jobs as."""

    def write_file(self, path: PurePosixPath, data: bytes) -> None:
        """Write `data` to `path` atomically (a temporary name, then rename)."""

    def read_file(self, path: PurePosixPath) -> bytes | None:
        """The whole file, or None when it does not exist."""

    def read_from(self, path: PurePosixPath, offset: int) -> bytes:
        """The bytes of `path` from `offset` on (b"" when none or the file does not exist)."""

    def file_size(self, path: PurePosixPath) -> int | None:
        """The size of `path`, or None when it does not exist."""

    def submit(self, description: str) -> SubmittedCluster:
        """Submit a description that ends with its own `queue` statement; one cluster."""

    def query(self, constraint: str, projection: Sequence[str]) -> list[dict[str, Any]]:
        """The schedd's queue (condor_q): the jobs matching `constraint`, with `projection`'s attributes."""

    def history(self, constraint: str, projection: Sequence[str], match: int | None = None) -> list[dict[str, Any]]:
        """Jobs that left the queue (condor_history), newest first, at most `match`."""

    def act(self, action: Action, job_ids: Sequence[str], reason: str = "") -> None:
        """Hold, release or remove the jobs "CLUSTER.PROC" (ones already gone are not an error)."""

    def remove_matching(self, constraint: str, reason: str = "") -> int:
        """Remove every job matching `constraint`; returns how many there were."""

    def machines(self) -> set[str]:
        """The `Machine` names of the pool's execute slots (for excluding a bad node)."""

    def close(self) -> None:
        """Release connections; the object may be used again (it reconnects)."""
