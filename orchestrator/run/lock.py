"""A run's scheduler as a submit-host daemon: its side files, its lock, and starting it detached.

Beside the database `runs.db` lives a directory `runs.db.runs/` holding, per run, `RUN.log` (what a
detached scheduler prints) and `RUN.lock`.  Whoever drives a run — `glo run` in the foreground, a
detached `glo run --detach`, or the systemd unit — holds an exclusive `flock` on `RUN.lock` for its
whole life; the file holds JSON `{pid, host, started_at, log, run_id}` naming the holder (`log` is
`$GLO_SCHEDULER_LOG` when set, e.g. the systemd unit's journalctl command).  The kernel
drops the lock when the process ends, however it ends (kill -9 included), so a stale file never
blocks a resume.  Readers (`glo status`, `glo stop`) only test the lock with a shared lock they
release at once, and never keep it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from db.paths import resolve_db_path  # not db.session: `glo status` must not import SQLAlchemy for it
from orchestrator.errors import SchedulerError

LOG_ENV = "GLO_SCHEDULER_LOG"  # where the scheduler's output goes when not to RUN.log (the systemd unit: journalctl)
_ACQUIRE_RETRY_S = 1.0  # a reader's shared test-lock lasts microseconds; a real holder outlasts this
_ACQUIRE_PATIENCE_S = 10.0  # ... unless the lock file names no live process: then wait this long


def side_dir(db_path: str | os.PathLike[str] | None) -> Path:
    """`<database>.runs/`: the logs and locks of the database's schedulers (not created here)."""
    return Path(str(resolve_db_path(db_path).resolve()) + ".runs")


def log_path(db_path: str | os.PathLike[str] | None, run_id: str) -> Path:
    return side_dir(db_path) / f"{run_id}.log"


def lock_path(db_path: str | os.PathLike[str] | None, run_id: str) -> Path:
    return side_dir(db_path) / f"{run_id}.lock"


def _read_holder(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _names_live_process(holder: dict[str, Any]) -> bool:
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if holder.get("host") and holder["host"] != socket.gethostname():
        return True  # another host's scheduler (a shared file system): it cannot be checked from here
    return pid_alive(pid)


def pid_alive(pid: int) -> bool:
    """A process with this pid exists on this machine (one of another user's counts too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def held_message(run_id: str, holder: dict[str, Any], log: str | os.PathLike[str] | None) -> str:
    who = f"pid {holder['pid']} on {holder.get('host') or '?'}" if holder.get("pid") else "another process"
    return (f"run {run_id} is already driven by a scheduler ({who}, log {holder.get('log') or log}); "
            f"stop it with: glo stop {run_id}")


class SchedulerLock:
    """The exclusive lock of one run's scheduler, held from `acquire()` to `release()` (or exit).

    The descriptor is not inheritable (Python's default), so the scheduler's worker processes never
    hold the lock after the scheduler is gone."""

    def __init__(self, db_path: str | os.PathLike[str] | None, run_id: str) -> None:
        self.run_id = run_id
        self.path = lock_path(db_path, run_id)
        self.log = log_path(db_path, run_id)
        self._fd: int | None = None

    def acquire(self) -> SchedulerLock:
        """Take the lock or raise SchedulerError naming the process that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        started = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(fd)
                    raise
                waited = time.monotonic() - started
                if waited >= _ACQUIRE_RETRY_S:
                    holder = _read_holder(self.path)
                    # a scheduler writes its pid right after taking the lock; a file naming no live process
                    # means a reader (glo status) is holding its test lock, e.g. descheduled on a busy host
                    if _names_live_process(holder) or waited >= _ACQUIRE_PATIENCE_S:
                        os.close(fd)
                        raise SchedulerError(held_message(self.run_id, holder, self.log)) from None
                time.sleep(0.05)
        info = {"run_id": self.run_id, "pid": os.getpid(), "host": socket.gethostname(), "started_at": time.time(),
                "log": os.environ.get(LOG_ENV) or str(self.log)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)  # an empty file: nobody drives this run
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self) -> SchedulerLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def scheduler_info(db_path: str | os.PathLike[str] | None, run_id: str) -> dict[str, Any]:
    """Whether a scheduler drives `run_id` now: {alive, pid, host, started_at, log, lock}.

    Never creates anything and keeps no lock: a shared test-lock, released at once.  `log` is the
    detached scheduler's log file when one exists (None otherwise); pid/host/started_at are None when
    no scheduler is alive."""
    lock = lock_path(db_path, run_id)
    log = log_path(db_path, run_id)
    info: dict[str, Any] = {"alive": False, "pid": None, "host": None, "started_at": None,
                            "log": str(log) if log.exists() else None, "lock": str(lock)}
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return info
    except OSError as exc:  # e.g. another user's unreadable lock file: say so rather than guess
        return {**info, "error": f"cannot read {lock}: {exc.strerror or exc}"}
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            info["alive"] = True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    if info["alive"]:
        holder: dict[str, Any] = {}
        for _ in range(20):  # the holder writes its JSON just after taking the lock
            holder = _read_holder(lock)
            if holder.get("pid"):
                break
            time.sleep(0.05)
        info.update(pid=holder.get("pid"), host=holder.get("host"), started_at=holder.get("started_at"))
        if holder.get("log"):
            info["log"] = holder["log"]
    return info


def tail(path: str | os.PathLike[str], limit: int = 3000) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - limit))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def start_detached(db_path: str | os.PathLike[str] | None, run_id: str, run_args: Sequence[str], *,
                   wait_s: float = 30.0) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """Start `glo run RUN_ARGS` (which must name --db and the run) as a daemon: its own session (no
    terminal, so no SIGHUP when the terminal goes), stdin from /dev/null, stdout and stderr appended to
    the run's log.  Waits (at most `wait_s`) until the child holds the run's lock or has exited; returns
    the child and the last `scheduler_info` (alive False with `child.returncode` set: it died)."""
    log = log_path(db_path, run_id)
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "orchestrator", "run", *run_args]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop(LOG_ENV, None)
    with open(log, "ab") as fh:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        fh.write(f"==== {stamp} glo run {' '.join(run_args)} (detached by pid {os.getpid()})\n".encode())
        fh.flush()
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                 start_new_session=True, close_fds=True)
    deadline = time.monotonic() + wait_s
    info = scheduler_info(db_path, run_id)
    while True:
        if info["alive"] and info["pid"] == child.pid:
            return child, info
        if child.poll() is not None:
            return child, scheduler_info(db_path, run_id)
        if time.monotonic() >= deadline:
            return child, info
        time.sleep(0.1)
        info = scheduler_info(db_path, run_id)


def stop_scheduler(db_path: str | os.PathLike[str] | None, run_id: str, *, timeout_s: float = 120.0) -> dict[str, Any]:
    """SIGTERM the process holding the run's lock and wait (at most `timeout_s`) until it lets go.

    Returns the holder's info with `stopped` (the lock was released in time).  Raises SchedulerError
    when no scheduler drives the run or when it runs on another host (signals do not cross hosts)."""
    import signal

    info = scheduler_info(db_path, run_id)
    if not info["alive"]:
        raise SchedulerError(f"run {run_id} has no live scheduler (nothing holds {info['lock']})")
    pid, host = info["pid"], info["host"]
    if not pid:
        raise SchedulerError(f"run {run_id}: a process holds {info['lock']} but names no pid; see {info['log']}")
    if host and host != socket.gethostname():
        raise SchedulerError(f"run {run_id} is driven by pid {pid} on {host}, not this host; "
                               f"run glo stop {run_id} there")
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass  # ended between the test and the signal
    except PermissionError:
        raise SchedulerError(f"run {run_id}: not allowed to signal pid {pid} (another user's scheduler)") from None
    deadline = time.monotonic() + timeout_s
    while True:
        now = scheduler_info(db_path, run_id)
        if not now["alive"] or now["pid"] != pid:
            return {**info, "stopped": True}
        if time.monotonic() >= deadline:
            return {**info, "stopped": False}
        time.sleep(0.1)
