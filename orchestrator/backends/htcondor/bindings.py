"""`backend.kind = "condor"`: GLO on the submit host, talking to the schedd through the htcondor2 bindings.

Everything HTCondor-specific that is not about *where* the schedd is lives in the shared core
(orchestrator.backends.htcondor.core); this module is the transport: local files and the bindings' Schedd
and Collector.  The bindings block, so the core calls them from a worker thread.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from condor.submit import SubmittedCluster
from orchestrator.backends.htcondor.transport import Action, TransportError, TransportUnavailable

#: Words in an htcondor2 error that mean "could not reach the daemon" rather than "refused the request".
_UNREACHABLE = ("connect", "locate", "timed out", "timeout", "unable to find", "no such schedd", "communicat")


def _error(what: str, exc: BaseException) -> TransportError:
    text = " ".join(str(exc).split()) or type(exc).__name__
    cls = TransportUnavailable if any(w in text.lower() for w in _UNREACHABLE) else TransportError
    return cls(f"{what}: {text}")


def _plain(value: Any) -> Any:
    """ClassAd values as plain Python (an unevaluated expression becomes its text)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class CondorTransport:
    """The schedd on this machine (or the one named `schedd`), files on the local file system."""

    kind = "condor"

    def __init__(self, schedd_name: str = "") -> None:
        self.schedd_name = schedd_name
        self.counts: Counter[str] = Counter()
        self._schedd: Any = None

    def _get_schedd(self) -> Any:
        import htcondor2

        if self._schedd is None:
            try:
                if self.schedd_name:
                    ad = htcondor2.Collector().locate(htcondor2.DaemonType.Schedd, self.schedd_name)
                    self._schedd = htcondor2.Schedd(ad)
                else:
                    self._schedd = htcondor2.Schedd()
            except Exception as exc:  # htcondor2 raises HTCondorException and plain ones
                raise _error("cannot find the schedd", exc) from exc
        return self._schedd

    # -- files -------------------------------------------------------------------------------------
    def make_dirs(self, path: PurePosixPath) -> None:
        """mkdir -p; a directory made by root gets the owner of the nearest existing parent.

        Why: a schedd maps root's submissions to an unprivileged user (the test pool's `submituser`),
        and that user's shadow writes the event log, stdout, stderr and result.json into these
        directories.  A normal user submitting as themself never needs this."""
        self.counts["mkdir"] += 1
        p = Path(path)
        missing: list[Path] = []
        probe = p
        while not probe.exists():
            missing.append(probe)
            probe = probe.parent
        try:
            p.mkdir(parents=True, exist_ok=True)
            owner = probe.stat()
            if os.geteuid() == 0 and owner.st_uid != 0:
                for d in missing:
                    os.chown(d, owner.st_uid, owner.st_gid)
        except OSError as exc:
            raise TransportError(f"cannot create the job directory {p}: {exc.strerror or exc}") from exc

    def write_file(self, path: PurePosixPath, data: bytes) -> None:
        self.counts["write"] += 1
        p = Path(path)
        tmp = p.with_name(f".{p.name}.tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, p)
        except OSError as exc:
            raise TransportError(f"cannot write {p}: {exc.strerror or exc}") from exc

    def read_file(self, path: PurePosixPath) -> bytes | None:
        self.counts["read"] += 1
        try:
            return Path(path).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TransportError(f"cannot read {path}: {exc.strerror or exc}") from exc

    def read_from(self, path: PurePosixPath, offset: int) -> bytes:
        self.counts["read"] += 1
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                return fh.read()
        except FileNotFoundError:
            return b""
        except OSError as exc:
            raise TransportError(f"cannot read {path}: {exc.strerror or exc}") from exc

    def file_size(self, path: PurePosixPath) -> int | None:
        try:
            return Path(path).stat().st_size
        except FileNotFoundError:
            return None

    # -- the schedd ----------------------------------------------------------------------------------
    def submit(self, description: str) -> SubmittedCluster:
        import htcondor2

        self.counts["submit"] += 1
        try:
            result = self._get_schedd().submit(htcondor2.Submit(description))
        except Exception as exc:
            raise _error("the schedd refused the submission", exc) from exc
        first = result.first_proc()
        return SubmittedCluster(result.cluster(), first, first + result.num_procs() - 1)

    def query(self, constraint: str, projection: Sequence[str]) -> list[dict[str, Any]]:
        self.counts["query"] += 1
        try:
            ads = self._get_schedd().query(constraint=constraint, projection=list(projection))
        except Exception as exc:
            raise _error("schedd query failed", exc) from exc
        return [{k: _plain(ad.get(k)) for k in projection} for ad in ads]

    def history(self, constraint: str, projection: Sequence[str], match: int | None = None) -> list[dict[str, Any]]:
        self.counts["history"] += 1
        try:
            ads = self._get_schedd().history(constraint=constraint, projection=list(projection),
                                             match=-1 if match is None else match)
            return [{k: _plain(ad.get(k)) for k in projection} for ad in ads]
        except Exception as exc:
            raise _error("schedd history query failed", exc) from exc

    def act(self, action: Action, job_ids: Sequence[str], reason: str = "") -> None:
        import htcondor2

        if not job_ids:
            return
        self.counts["act"] += 1
        kind = {"hold": htcondor2.JobAction.Hold, "release": htcondor2.JobAction.Release,
                "remove": htcondor2.JobAction.Remove}[action]
        try:
            self._get_schedd().act(kind, list(job_ids), reason=reason or None)
        except Exception as exc:
            raise _error(f"condor {action} of {', '.join(job_ids)} failed", exc) from exc

    def remove_matching(self, constraint: str, reason: str = "") -> int:
        import htcondor2

        self.counts["act"] += 1
        try:
            ad = self._get_schedd().act(htcondor2.JobAction.Remove, constraint, reason=reason or None)
        except Exception as exc:
            raise _error("condor remove failed", exc) from exc
        try:
            return int(ad.get("TotalSuccess", 0))
        except (TypeError, ValueError):
            return 0

    def machines(self) -> set[str]:
        import htcondor2

        self.counts["machines"] += 1
        try:
            ads = htcondor2.Collector().query(htcondor2.AdType.Startd, projection=["Machine"])
        except Exception as exc:
            raise _error("collector query failed", exc) from exc
        return {str(ad.get("Machine")) for ad in ads if ad.get("Machine")}

    def close(self) -> None:
        self._schedd = None
