"""The submit-host daemon: `glo run --detach`, the run's scheduler lock, `glo stop`, `glo status`'s scheduler.

Acceptance: detach -> status alive (pid, log) -> a second scheduler of the run is refused naming the pid
-> glo stop -> resume --detach -> the run finishes; a resume of a finished run exits 3.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from orchestrator.run.lock import SchedulerLock, lock_path, scheduler_info, start_detached
from orchestrator.run.scheduler import SchedulerError
from tests.orch_helpers import REPO, glo, glo_env, scalar, write_config

WAIT_S = 120.0  # generous: a loaded 2-core machine


def status_json(db: Path, run: str, env: dict[str, str] | None = None) -> dict:
    r = glo("status", run, "--db", str(db), "--json", env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def wait_for(what: str, cond, timeout: float = WAIT_S, every: float = 0.2):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def started_pid(out: str) -> int:
    m = re.search(r"started in the background, pid (\d+)", out)
    assert m, out
    return int(m.group(1))


def children_of(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry.name))
    return out


def open_files(pid: int) -> list[str]:
    files = []
    for fd in Path(f"/proc/{pid}/fd").glob("*"):
        try:
            files.append(os.readlink(fd))
        except OSError:
            continue
    return files


def test_detach_stop_resume_detach(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", population=8, generations=2, cma_iterations=1)
    db = tmp_path / "d.db"
    log = Path(str(db) + ".runs") / "bg.log"
    hanging = glo_env(sleep=600)  # the workers never finish: the run cannot end before glo stop

    r = glo("run", str(cfg), "--db", str(db), "--run-id", "bg", "--detach", env=hanging)
    assert r.returncode == 0, r.stdout + r.stderr
    pid = started_pid(r.stdout)
    assert str(log) in r.stdout and "glo stop bg" in r.stdout and "glo status bg" in r.stdout

    st = status_json(db, "bg")
    assert st["status"] == "running"
    assert st["scheduler"]["alive"] and st["scheduler"]["pid"] == pid and st["scheduler"]["log"] == str(log)
    human = glo("status", "bg", "--db", str(db))
    assert human.returncode == 0 and f"alive, pid {pid}" in human.stdout
    assert os.getsid(pid) == pid  # its own session: no terminal, no SIGHUP when the terminal goes
    wait_for("a job in flight", lambda: scalar(db, "select count(*) from jobs where state = 'running'"))
    if Path("/proc").is_dir():  # the scheduler's workers do not inherit the lock (it dies with the scheduler)
        workers = wait_for("a worker process", lambda: children_of(pid))
        lock = str(lock_path(db, "bg"))
        assert lock in open_files(pid) and all(lock not in open_files(w) for w in workers), workers

    for extra in ([], ["--detach"]):  # a second scheduler of the same run, in the foreground or detached
        second = glo("run", "--resume", "bg", "--db", str(db), *extra)
        assert second.returncode == 1, second.stdout + second.stderr
        assert f"pid {pid}" in second.stderr and "glo stop bg" in second.stderr
        assert "Traceback" not in second.stderr
    assert status_json(db, "bg")["scheduler"]["pid"] == pid  # the refused ones changed nothing

    stop = glo("stop", "bg", "--db", str(db), "--timeout", str(WAIT_S))
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert f"pid {pid} stopped" in stop.stdout and "the run is stopped" in stop.stdout
    st = status_json(db, "bg")
    assert st["status"] == "stopped" and not st["scheduler"]["alive"] and st["scheduler"]["pid"] is None
    assert st["scheduler"]["log"] == str(log)
    assert "not running" in glo("status", "bg", "--db", str(db)).stdout

    r = glo("run", "--resume", "bg", "--db", str(db), "--detach", env=glo_env(sleep=0.0))
    assert r.returncode == 0, r.stdout + r.stderr
    assert started_pid(r.stdout) != pid
    st = wait_for("the run to finish", lambda: (s := status_json(db, "bg"))["status"] == "finished"
                  and not s["scheduler"]["alive"] and s)
    assert st["phase"] == "done" and st["best"] is not None
    text = log.read_text()
    assert text.count("==== ") == 2 and "run bg: stopped" in text and "run bg: finished" in text

    for extra in ([], ["--detach"]):  # nothing left to do: exit 3, no restart loop under systemd
        again = glo("run", "--resume", "bg", "--db", str(db), *extra)
        assert again.returncode == 3 and "already finished" in again.stderr, again.stdout + again.stderr
    idle = glo("stop", "bg", "--db", str(db))
    assert idle.returncode == 1 and "Traceback" not in idle.stderr
    assert idle.stderr.strip() == "Error: run bg has no live scheduler (the run is finished); nothing to stop"


def test_stop_and_status_of_unknown_or_never_detached_runs(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", population=8, generations=1, cma_iterations=1)
    db = tmp_path / "f.db"
    r = glo("run", str(cfg), "--db", str(db), "--run-id", "fg")  # foreground: no log file, lock released
    assert r.returncode == 0, r.stderr
    st = status_json(db, "fg")
    assert st["scheduler"]["alive"] is False and st["scheduler"]["log"] is None
    for run, message in (("fg", "no live scheduler"), ("nope", "no run 'nope'")):
        r = glo("stop", run, "--db", str(db))
        assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = glo("run", "--resume", "nope", "--db", str(db), "--detach")
    assert r.returncode == 1 and "no run 'nope'" in r.stderr
    assert not lock_path(db, "nope").exists()


def test_lock_names_its_holder_and_dies_with_it(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    assert scheduler_info(db, "r")["alive"] is False  # nothing there yet: nothing is created
    assert not Path(str(db) + ".runs").exists()
    with SchedulerLock(db, "r"):
        info = scheduler_info(db, "r")
        assert info["alive"] and info["pid"] == os.getpid() and info["host"]
        with pytest.raises(SchedulerError, match=rf"pid {os.getpid()} on .*glo stop r"):
            SchedulerLock(db, "r").acquire()
    assert scheduler_info(db, "r")["alive"] is False

    # a holder killed with SIGKILL leaves its file behind, but not its lock
    code = ("import sys, time; from orchestrator.run.lock import SchedulerLock; "
            f"SchedulerLock({str(db)!r}, 'r').acquire(); print('held', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO,
                              env=glo_env())
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert scheduler_info(db, "r")["pid"] == holder.pid
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=WAIT_S)
    finally:
        holder.kill()
        holder.wait()
    assert scheduler_info(db, "r")["alive"] is False
    SchedulerLock(db, "r").acquire().release()

    # a reader's test lock (glo status) held longer than usual, e.g. on a busy host, is waited out
    reader = os.open(lock_path(db, "r"), os.O_RDONLY)
    fcntl.flock(reader, fcntl.LOCK_SH)
    timer = threading.Timer(1.3, os.close, (reader,))
    timer.start()
    try:
        SchedulerLock(db, "r").acquire().release()
    finally:
        timer.join()


def test_a_detached_scheduler_that_dies_at_once_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    db = tmp_path / "x.db"
    child, info = start_detached(db, "gone", ["--resume", "gone", "--db", str(db), "--no-progress"], wait_s=WAIT_S)
    assert child.returncode == 1 and not info["alive"]
    assert "no run 'gone'" in Path(info["log"]).read_text()
