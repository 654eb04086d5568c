"""The one choke point through which GLO runs external commands (workers, ssh, condor tools).

Why one module: every backend needs the same things -- argv only (never a shell), output
captured to files or memory, a timeout that kills the whole process group, and an error that
carries the command, exit code, stdout and stderr so the user sees what actually failed.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1


class CommandError(RuntimeError):
    """A command failed or timed out; the message says which, with the tail of its output."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stdout: str, stderr: str,
                 timed_out: bool = False) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.timed_out = timed_out
        what = "timed out" if timed_out else f"exited with status {returncode}"
        tail = (stderr.strip() or stdout.strip())[-1500:]
        super().__init__(f"command {' '.join(self.argv)!s} {what}" + (f":\n{tail}" if tail else ""))


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def _die_with_parent(parent_pid: int) -> None:
    """Child side: get SIGKILL when the scheduler dies (even by kill -9), so no orphan worker
    keeps training after its scheduler is gone; also start a new process group so a timeout
    can kill the worker and everything it started.

    The death signal only covers a parent that dies *after* prctl: one killed between fork
    and prctl has already gone, and its worker would train on unseen while a resumed
    scheduler reruns the same job (trained twice).  So check, after prctl, that the parent
    (`parent_pid`, taken before the fork) is still ours, and exit at once if not."""
    os.setsid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except OSError:
            pass
    if os.getppid() != parent_pid:
        os._exit(1)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: Path | None, limit: int = 4000) -> str:
    if path is None:
        return ""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


async def run_async(argv: Sequence[str], *, cwd: Path | None = None, timeout: float | None = None,
                    stdout_path: Path | None = None, stderr_path: Path | None = None,
                    env: dict[str, str] | None = None, started: asyncio.Event | None = None,
                    pid_out: list[int] | None = None) -> Completed:
    """Run `argv` to completion without blocking the event loop.

    Output goes to the given files (kept for the user) or is captured in memory.  A nonzero
    exit or a timeout raises CommandError; the process group is killed on timeout and on
    cancellation, so nothing outlives the job.
    """
    out_fh = open(stdout_path, "wb") if stdout_path else None
    err_fh = open(stderr_path, "wb") if stderr_path else None
    try:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                stdout=out_fh or subprocess.PIPE, stderr=err_fh or subprocess.PIPE,
                preexec_fn=functools.partial(_die_with_parent, os.getpid()),
            )
        except OSError as exc:
            raise CommandError(argv, None, "", f"cannot start: {exc}") from None
        if pid_out is not None:
            pid_out.append(proc.pid)
        if started is not None:
            started.set()
        try:
            out_b, err_b = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            _kill_group(proc.pid)
            await proc.wait()
            raise CommandError(argv, None, _tail(stdout_path), _tail(stderr_path), timed_out=True) from None
        except BaseException:  # cancelled: take the worker down with us
            _kill_group(proc.pid)
            try:
                await asyncio.shield(proc.wait())
            except BaseException:  # noqa: BLE001
                pass
            raise
        stdout = out_b.decode(errors="replace") if out_b is not None else _tail(stdout_path)
        stderr = err_b.decode(errors="replace") if err_b is not None else _tail(stderr_path)
        if proc.returncode != 0:
            raise CommandError(argv, proc.returncode, stdout, stderr)
        return Completed(tuple(argv), proc.returncode, stdout, stderr)
    finally:
        if out_fh:
            out_fh.close()
        if err_fh:
            err_fh.close()


def run_sync(argv: Sequence[str], *, cwd: Path | None = None, timeout: float | None = None,
             input_text: str | None = None, env: dict[str, str] | None = None) -> Completed:
    """Blocking variant for short control commands (condor_q, ssh ...)."""
    try:
        p = subprocess.run(list(argv), cwd=cwd, timeout=timeout, input=input_text, capture_output=True,
                           text=True, env=env)
    except subprocess.TimeoutExpired as exc:
        raise CommandError(argv, None, str(exc.stdout or ""), str(exc.stderr or ""), timed_out=True) from None
    except OSError as exc:
        raise CommandError(argv, None, "", f"cannot start: {exc}") from None
    if p.returncode != 0:
        raise CommandError(argv, p.returncode, p.stdout, p.stderr)
    return Completed(tuple(argv), p.returncode, p.stdout, p.stderr)
