"""The status of each job in an HTCondor job event log (the file a submit description names with `log =`).

A job's event log is the cheapest truthful source of its state: the schedd appends one event per change
(submitted, executing, evicted, held, released, terminated, aborted), it sits in the job's work directory on
the submit side, and reading it needs no schedd query.  The text is parsed by HTCondor's own reader,
`htcondor2.JobEventLog`; this module only folds the parsed events into one `JobStatus` per job
("CLUSTER.PROC").

`apply_event` / `next_status` are the pure state machine, `read_event_log` reads a whole log once, and
`EventLogFollower` reads a growing log incrementally (only the events appended since its last poll).

Timestamps: an event log records the submit host's local wall-clock time without a zone, and
`JobEvent.timestamp` is that time read in the *reader's* local zone, so the epoch seconds here are right only
when this process runs in the submit host's zone (set TZ when reading a log copied from elsewhere).  The
LEGACY format ("MM/DD HH:MM:SS") has no year: HTCondor's reader takes the current one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import htcondor2
from htcondor2 import JobEventType

CondorState = Literal["idle", "running", "completed", "held", "removed"]
GloState = Literal["submitted", "running", "done", "failed", "held", "lost"]

_TERMINAL: frozenset[str] = frozenset({"completed", "removed"})


class EventLogError(Exception):
    """A file that HTCondor's reader cannot read as a job event log (the message names the path)."""


@dataclass(frozen=True)
class JobStatus:
    """One job's current state as its event log tells it (HTCondor's view; `glo_state` is GLO's).

    `hold_*` describe the hold the job is in, or was in when it was removed; a release clears them, and
    `holds` / `evictions` count how often either happened.  `host` is the slot it last ran on.
    """

    job_id: str
    state: CondorState = "idle"
    exit_code: int | None = None
    exit_signal: int | None = None
    hold_reason: str = ""
    hold_code: int | None = None
    hold_subcode: int | None = None
    remove_reason: str = ""
    host: str = ""
    evictions: int = 0
    holds: int = 0
    submitted_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    last_event: str = ""

    @property
    def glo_state(self) -> GloState:
        """GLO's job state; "lost" means HTCondor gave the job up, and the orchestrator decides on a resubmit."""
        if self.state == "idle":
            return "submitted"
        if self.state == "completed":
            return "done" if self.exit_code == 0 and self.exit_signal is None else "failed"
        if self.state == "removed":
            return "lost"
        return self.state  # "running" and "held" keep their names

    @property
    def reason(self) -> str:
        """One line for a human: why the job is where it is."""
        if self.state == "completed":
            if self.exit_signal is not None:
                return f"killed by signal {self.exit_signal}"
            return f"exit code {self.exit_code}"
        if self.state == "held":
            return self._hold_text()
        if self.state == "removed":
            text = f"removed: {self.remove_reason}" if self.remove_reason else "removed"
            return f"{text}; was {self._hold_text()}" if self.hold_code is not None or self.hold_reason else text
        if self.state == "running":
            text = f"running on {self.host}" if self.host else "running"
        else:
            text = "idle in the queue"
        return f"{text} (evicted {self.evictions}x)" if self.evictions else text

    def _hold_text(self) -> str:
        text = f"held: {self.hold_reason}" if self.hold_reason else "held"
        return f"{text} (code {self.hold_code}/{self.hold_subcode})" if self.hold_code is not None else text


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def next_status(previous: JobStatus | None, event: htcondor2.JobEvent) -> JobStatus | None:
    """The status of `event`'s job after `event` (pure); `previous` unchanged for an event naming no job.

    A job that completed or was removed stays so: a log never continues a finished job, and freezing it keeps
    a stray event from reviving one.
    """
    if event.cluster < 0 or event.proc < 0:
        return previous
    status = previous or JobStatus(job_id=f"{event.cluster}.{event.proc}")
    if status.state in _TERMINAL:
        return status
    kind = event.type
    when = float(event.timestamp)
    changes: dict[str, Any] = {"last_event": kind.name}

    if kind == JobEventType.SUBMIT:
        changes.update(state="idle", submitted_at=when)
    elif kind == JobEventType.EXECUTE:
        host = event.get("SlotName") or event.get("ExecuteHost") or ""
        changes.update(state="running", host=str(host), started_at=when)
    elif kind == JobEventType.JOB_EVICTED:
        # The claim ended before the job finished (preempted, vacated, file transfer failed, condor_rm):
        # the schedd puts it back in the queue; a hold or an abort, if any, follows as its own event.
        changes.update(state="held" if status.state == "held" else "idle", evictions=status.evictions + 1)
    elif kind in (JobEventType.SHADOW_EXCEPTION, JobEventType.JOB_RECONNECT_FAILED):
        # The shadow lost the job: the schedd requeues it.
        if status.state == "running":
            changes.update(state="idle")
    elif kind == JobEventType.JOB_HELD:
        changes.update(
            state="held",
            holds=status.holds + 1,
            hold_reason=str(event.get("HoldReason") or ""),
            hold_code=_int_or_none(event.get("HoldReasonCode")),
            hold_subcode=_int_or_none(event.get("HoldReasonSubCode")),
        )
    elif kind == JobEventType.JOB_RELEASED:
        # The hold is over, so its reason no longer describes the job; `holds` keeps the history.
        if status.state == "held":
            changes.update(state="idle", hold_reason="", hold_code=None, hold_subcode=None)
    elif kind == JobEventType.JOB_TERMINATED:
        normal = bool(event.get("TerminatedNormally"))
        changes.update(
            state="completed",
            exit_code=_int_or_none(event.get("ReturnValue")) if normal else None,
            exit_signal=None if normal else _int_or_none(event.get("TerminatedBySignal")),
            ended_at=when,
        )
    elif kind == JobEventType.JOB_ABORTED:
        # Removed (condor_rm, Schedd.act, periodic_remove); a hold that preceded it is kept as the likely why.
        changes.update(state="removed", remove_reason=str(event.get("Reason") or ""), ended_at=when)
    return replace(status, **changes)


def apply_event(statuses: Mapping[str, JobStatus], event: htcondor2.JobEvent) -> dict[str, JobStatus]:
    """A new mapping job id -> status with `event` folded in (pure: `statuses` is not changed)."""
    out = dict(statuses)
    if event.cluster >= 0 and event.proc >= 0:
        job_id = f"{event.cluster}.{event.proc}"
        status = next_status(out.get(job_id), event)
        if status is not None:
            out[job_id] = status
    return out


def _open(path: str) -> htcondor2.JobEventLog:
    try:
        return htcondor2.JobEventLog(path)
    except (htcondor2.HTCondorException, OSError) as exc:  # missing file, unreadable, ...
        raise EventLogError(f"{path}: cannot open as an HTCondor job event log: {exc}") from exc


def _offset(log: htcondor2.JobEventLog) -> int | None:
    """How far HTCondor's reader got (bytes), from the state its pickling saves; None if htcondor2 changed that."""
    try:
        offset = log.__getstate__()[1]
    except Exception:  # an internal detail: without it the follower loses its two safety checks, not its job
        return None
    return offset if isinstance(offset, int) else None


def _rewind(log: htcondor2.JobEventLog, offset: int) -> None:
    """Put the reader back at `offset` (an event boundary) the way unpickling does: reopen, then seek."""
    state, _ = log.__getstate__()
    log.__setstate__((state, offset))


class EventLogFollower:
    """Reads a job event log as it grows: each `poll()` reads only the events appended since the last one.

    The log is opened lazily, because the schedd creates it only when it logs the submit event.  No threads:
    the caller decides when to poll.

    Two quirks of HTCondor's reader (htcondor2 25.14) shape `poll()`:

    * It *consumes* an event's first 1-3 bytes when that is all the writer has appended so far, and then
      drops the whole event once the rest arrives.  So when a poll ends at the end of the file having taken
      bytes that gave no event, the follower puts the reader back at the end of the last event it returned.
    * It gives no error for text it cannot parse: it reports "no more events".  After at least one good
      event it then skips the bad text a line per call and goes on with the next event (the follower lets it:
      HTCondor's own tools read logs that way); at the start of a file it never gets past it.  Unread bytes
      are either an event the writer is still appending (the writer logs an event with one write, so it
      completes within moments) or a corrupt / foreign file; the follower tells them apart by time: when the
      reader has not got past the same byte for `stall_grace_s` seconds while more bytes follow it, `poll()`
      raises `EventLogError`.

    A poll that meets a half-written event header can take about a second: the reader sleeps once and
    retries before it gives up.
    """

    def __init__(self, path: str | os.PathLike[str], stall_grace_s: float = 30.0) -> None:
        self.path = Path(path)
        self.stall_grace_s = stall_grace_s
        self._log: htcondor2.JobEventLog | None = None
        self._statuses: dict[str, JobStatus] = {}
        self._events_read = 0
        self._stall: tuple[int, float] | None = None  # (reader offset, since when) while bytes lie past it

    @property
    def statuses(self) -> dict[str, JobStatus]:
        """Every job seen so far, with its latest status."""
        return dict(self._statuses)

    @property
    def events_read(self) -> int:
        """How many events have been read so far."""
        return self._events_read

    def poll(self) -> dict[str, JobStatus]:
        """The statuses that changed since the last poll (empty while the log does not exist yet)."""
        if self._log is None:
            if not self.path.exists():
                return {}
            self._log = _open(str(self.path))
        log = self._log
        changed: dict[str, JobStatus] = {}
        boundary = _offset(log)  # the end of the last event returned
        try:
            for event in log.events(stop_after=0):
                boundary = _offset(log)
                self._events_read += 1
                job_id = f"{event.cluster}.{event.proc}"
                old = self._statuses.get(job_id)
                new = next_status(old, event)
                if new is not None and new != old:
                    self._statuses[job_id] = changed[job_id] = new
        except htcondor2.HTCondorException as exc:  # ULOG_RD_ERROR, ULOG_MISSED_EVENT, ULOG_UNK_ERROR
            raise EventLogError(f"{self.path}: HTCondor could not read the event log: {exc}") from exc
        offset = _offset(log)
        size = self._size()
        if boundary is not None and offset is not None and offset > boundary and offset >= size:
            # It took the file's last bytes without returning an event: maybe the head of an event being
            # written, which it would drop.  (Not mid-file: there it is skipping a bad line, or the newline
            # of a "..." it saw before the writer finished it, and going back would stick it there.)
            try:
                _rewind(log, boundary)
            except htcondor2.HTCondorException as exc:
                raise EventLogError(f"{self.path}: cannot reopen the event log: {exc}") from exc
        self._check_tail(offset, size)
        return changed

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def _check_tail(self, offset: int | None, size: int) -> None:
        """Raise once the reader has been stuck before unread bytes for `stall_grace_s` seconds."""
        if offset is None:  # without the reader's offset, only a log that yields nothing at all is caught
            offset = size if self._events_read else 0
        if offset >= size:
            self._stall = None
            return
        now = time.monotonic()
        # Keyed on the offset alone: events appended after a corrupt spot must not keep postponing the error.
        if self._stall is None or self._stall[0] != offset:
            self._stall = (offset, now)
        if now - self._stall[1] >= self.stall_grace_s:
            what = "is not an HTCondor job event log" if self._events_read == 0 else "has unreadable text"
            raise EventLogError(
                f"{self.path} {what}: HTCondor's reader stops at byte {offset} of {size} "
                f"after {self._events_read} event(s)"
            )

    def close(self) -> None:
        """Release the file; a later `poll()` would reopen and re-read it from the start."""
        if self._log is not None:
            self._log.close()
            self._log = None
        self._statuses.clear()
        self._events_read = 0
        self._stall = None

    def __enter__(self) -> EventLogFollower:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_event_log(path: str | os.PathLike[str]) -> dict[str, JobStatus]:
    """Every job's status from the whole log, read once.

    Strict: a missing file, or any text HTCondor's reader cannot get past, raises `EventLogError` (an event
    being appended right now included: follow a live log with `EventLogFollower`).
    """
    if not Path(path).exists():
        raise EventLogError(f"{path}: no such job event log")
    with EventLogFollower(path, stall_grace_s=0.0) as follower:
        follower.poll()
        return follower.statuses
