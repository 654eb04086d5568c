"""`backend.kind = "ssh"`, all real: GLO -> sshd (127.0.0.1) -> condor_submit -> schedd -> startd -> worker ->
event log -> SFTP -> GLO.  The login user is the pool's job user `submituser`; the scheduler runs here as
`glo run` with its database and work directory on this side, as on a laptop."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster_helpers import (
    assert_complete,
    condor_config,
    finish,
    mnist_like,
    rows,
    wait_for,
)
from tests.condor_pool import Pool
from tests.orch_helpers import glo, glo_env, glo_popen
from tests.sshd import Sshd, descendants, make_key, pool_setup_script, running_sshd

pytestmark = [pytest.mark.condor, pytest.mark.slow]


@pytest.fixture(scope="module")
def sshd() -> Iterator[Sshd]:
    with running_sshd() as server:
        yield server


@pytest.fixture
def pool_setup(sshd: Sshd, condor_pool: Pool) -> str:
    return pool_setup_script(sshd, condor_pool)


def ssh_settings(sshd: Sshd, setup: str, **over: object) -> dict[str, object]:
    """[backend.ssh] for the test server, touching nothing of the user's own ~/.ssh."""
    return {"host": "127.0.0.1", "port": sshd.port, "user": sshd.user, "identity_file": str(sshd.user_key),
            "known_hosts": str(sshd.known_hosts), "ssh_config": "", "remote_setup": setup, "keepalive_s": 5,
            "connect_timeout_s": 10, **over}


def ssh_run_config(tmp_path: Path, pool: Pool, sshd: Sshd, setup: str, name: str, **kw: object) -> tuple[Path, Path]:
    """(config, remote work dir) of a small fake-worker search through SSH."""
    remote = pool.jobs_dir(name)
    ssh = ssh_settings(sshd, setup, **kw.pop("ssh", {}))  # type: ignore[arg-type]
    cfg = condor_config(tmp_path / "c.toml", pool, remote, kind="ssh", ssh=ssh, local_work=tmp_path / "work",
                        **kw)  # type: ignore[arg-type]
    return cfg, remote


def no_tensorflow_env() -> dict[str, str]:
    """`glo` as on a laptop without TensorFlow: importing it fails (a sitecustomize that blocks it)."""
    env = glo_env()
    block = Path(env.get("GLO_TEST_NOTF_DIR", "/tmp/glo-test-notf"))
    block.mkdir(exist_ok=True)
    (block / "sitecustomize.py").write_text(
        "import sys\nfor name in ('tensorflow', 'keras'):\n    sys.modules[name] = None  # ImportError on import\n")
    env["PYTHONPATH"] = f"{block}{os.pathsep}{env['PYTHONPATH']}"
    return env


def test_a_search_through_ssh_with_tensorflow_jobs(condor_pool: Pool, sshd: Sshd, pool_setup: str,
                                                   tmp_path: Path) -> None:
    """At least 12 candidates trained by the real worker in pool jobs submitted over SSH, by a `glo` that
    cannot import TensorFlow; `glo status` shows the run; round trips and schedd queries are counted."""
    remote = condor_pool.jobs_dir("ssh-tf")
    mnist_like(remote / "mnist.npz")
    python = condor_pool.job_python(tf=True)
    cfg = condor_config(tmp_path / "c.toml", condor_pool, remote, python=python, population=40, generations=1,
                        per_job=4, worker=[python, "-m", "worker"], kind="ssh", ssh=ssh_settings(sshd, pool_setup),
                        local_work=tmp_path / "work",
                        task="steps = 15\nbatch_size = 32\nlearning_rate = 0.1\nvalidation_size = 60\n"
                             "class_reduction = \"sum\"",
                        env={"GLO_DATA_DIR": str(remote), "GLO_DATA_DOWNLOAD": "0"})
    db = tmp_path / "r.db"
    t0 = time.monotonic()
    r = glo("run", str(cfg), "--db", str(db), "--run-id", "s", env=no_tensorflow_env(), timeout=900)
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr[-4000:]
    assert rows(db, "select count(*) from candidates where run_id = 's' and status = 'evaluated'")[0][0] >= 12
    assert {d for (d,) in rows(db, "select distinct device from evaluations")} == {"CPU"}
    backend = json.loads(rows(db, "select summary_json from runs where id = 's'")[0][0])["backend"]
    transport = backend["transport"]
    print(f"backend stats after {elapsed:.1f} s: {json.dumps(backend)}")  # shown by pytest -rP
    assert backend["backend"] == "ssh" and transport["submit"] == backend["clusters"]
    assert transport.get("query", 0) <= 1 + elapsed / 60.0, backend
    assert transport["roundtrip"] > 0 and transport.get("reconnect", 0) == 0
    for (work_dir,) in rows(db, "select work_dir from jobs"):  # results came back into the local mirror
        assert (Path(work_dir) / "result.json").exists() and str(tmp_path / "work") in work_dir
    status = json.loads(glo("status", "s", "--db", str(db), "--json").stdout)
    assert status["status"] == "finished" and status["backend"] == "ssh"


def test_the_connection_dropped_mid_run(condor_pool: Pool, sshd: Sshd, pool_setup: str, tmp_path: Path) -> None:
    """The server side of GLO's connection is killed while jobs run: GLO reconnects and finishes, no
    candidate lost, none trained twice."""
    cfg, remote = ssh_run_config(tmp_path, condor_pool, sshd, pool_setup, "ssh-drop", sleep=1.5)
    db = tmp_path / "r.db"
    proc = glo_popen("run", str(cfg), "--db", str(db), "--run-id", "d", env=glo_env())
    wait_for("a running job", lambda: rows(db, "select 1 from jobs where state = 'running'"), proc)
    assert sshd.proc is not None
    for pid in descendants(sshd.proc.pid):  # every connection the server serves; the listener stays
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    finish(proc)
    summary = assert_complete(db, "d", remote)
    assert summary["backend"]["transport"].get("reconnect", 0) >= 1


def test_sshd_stopped_then_restarted_mid_run(condor_pool: Pool, sshd: Sshd, pool_setup: str, tmp_path: Path) -> None:
    cfg, remote = ssh_run_config(tmp_path, condor_pool, sshd, pool_setup, "ssh-restart", sleep=1.5)
    db = tmp_path / "r.db"
    proc = glo_popen("run", str(cfg), "--db", str(db), "--run-id", "x", env=glo_env())
    wait_for("a running job", lambda: rows(db, "select 1 from jobs where state = 'running'"), proc)
    sshd.stop()
    time.sleep(4)  # the host is away for a while: jobs go on in the pool, GLO backs off
    assert proc.poll() is None, "glo run gave up while the submit host was away"
    sshd.start()
    finish(proc)
    summary = assert_complete(db, "x", remote)
    assert summary["backend"]["transport"].get("reconnect", 0) >= 1  # it did lose the host, and came back


def test_kill_9_then_resume_readopts_the_remote_jobs(condor_pool: Pool, sshd: Sshd, pool_setup: str,
                                                      tmp_path: Path) -> None:
    cfg, remote = ssh_run_config(tmp_path, condor_pool, sshd, pool_setup, "ssh-kill", population=20, generations=2,
                                 per_job=1, sleep=1.5)
    db = tmp_path / "r.db"
    proc = glo_popen("run", str(cfg), "--db", str(db), "--run-id", "k", env=glo_env())
    in_pool = "select id, backend_job_id from jobs where state in ('submitted', 'running') and backend_job_id " \
              "is not null"
    wait_for("4 jobs in the pool", lambda: len(rows(db, in_pool)) >= 4, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    in_flight = rows(db, in_pool)
    r = glo("run", "--resume", "k", "--db", str(db), env=glo_env(), timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    assert_complete(db, "k", remote)
    for job_id, condor_id in in_flight:
        assert rows(db, "select attempts, backend_job_id, state from jobs where id = ?", job_id) == \
            [(1, condor_id, "done")]


@pytest.mark.parametrize("problem", ["unknown host key", "changed host key", "wrong user key"])
def test_refused_logins_are_one_line_and_resume_works_once_fixed(condor_pool: Pool, sshd: Sshd, pool_setup: str,
                                                                 tmp_path: Path, problem: str) -> None:
    """Each refusal stops `glo run` with one line naming the problem, writes nothing to known_hosts and
    keeps what the run stored; once the cause is fixed, `glo run --resume` finishes the run."""
    known = tmp_path / "known_hosts"
    key = tmp_path / "id_ed25519"
    key.write_bytes(sshd.user_key.read_bytes())
    key.chmod(0o600)
    good_line = f"{sshd.host_key_name} {sshd.host_public}\n"
    if problem == "unknown host key":
        known.write_text("")
    elif problem == "changed host key":
        known.write_text(f"{sshd.host_key_name} {make_key(tmp_path / 'other_host_key')}\n")
    else:
        known.write_text(good_line)
        make_key(key)  # a key the server does not know
    before = known.read_bytes()
    cfg, remote = ssh_run_config(tmp_path, condor_pool, sshd, pool_setup, "ssh-refused",
                                 ssh={"known_hosts": str(known), "identity_file": str(key)})
    db = tmp_path / "r.db"
    r = glo("run", str(cfg), "--db", str(db), "--run-id", "f", env=glo_env())
    assert r.returncode == 1 and "Traceback" not in r.stderr
    message = r.stderr.strip().splitlines()[-2] if "resume" in r.stderr.splitlines()[-1] else r.stderr.strip()
    expected = {"unknown host key": "host_key_policy", "changed host key": "CHANGED",
                "wrong user key": "authentication failed"}[problem]
    assert expected in r.stderr, r.stderr
    assert known.read_bytes() == before
    assert message
    stored = rows(db, "select count(*) from candidates where run_id = 'f'")[0][0]
    assert stored > 0 and rows(db, "select status from runs")[0][0] == "failed"

    if problem == "wrong user key":
        key.write_bytes(sshd.user_key.read_bytes())
    else:
        known.write_text(good_line)
    r = glo("run", "--resume", "f", "--db", str(db), env=glo_env(), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_complete(db, "f", remote)
    assert rows(db, "select count(*) from candidates where run_id = 'f'")[0][0] >= stored


def test_condor_tools_missing_on_the_remote_path_is_one_line(condor_pool: Pool, sshd: Sshd, pool_setup: str,
                                                            tmp_path: Path) -> None:
    """Without remote_setup the login shell has no HTCondor tools: the run stops at its first submission
    with one line saying what to set, and keeps what it stored."""
    cfg, _remote = ssh_run_config(tmp_path, condor_pool, sshd, "", "ssh-nopath")
    db = tmp_path / "r.db"
    r = glo("run", str(cfg), "--db", str(db), "--run-id", "np", env=glo_env())
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "condor_submit not found" in r.stderr and "backend.ssh.remote_setup" in r.stderr, r.stderr
    assert rows(db, "select status from runs")[0][0] == "failed"
    assert rows(db, "select count(*) from candidates where run_id = 'np'")[0][0] > 0  # what it stored is kept


# -- submit hosts without SFTP, or refusing every channel (issue #18) ------------------------------------------


@pytest.fixture(scope="module")
def sshd_no_sftp() -> Iterator[Sshd]:
    """A submit host whose sshd_config has no `Subsystem sftp` line, as some HPC sites run it."""
    with running_sshd(sftp=False) as server:
        yield server


def test_a_search_through_an_sshd_without_sftp(condor_pool: Pool, sshd_no_sftp: Sshd, tmp_path: Path) -> None:
    """Specs, the event log, results: every file travels over exec channels, the run finishes complete,
    and the user is told once why files do not use SFTP."""
    setup = pool_setup_script(sshd_no_sftp, condor_pool)
    cfg, remote = ssh_run_config(tmp_path, condor_pool, sshd_no_sftp, setup, "ssh-nosftp")
    db = tmp_path / "r.db"
    r = glo("run", str(cfg), "--db", str(db), "--run-id", "ns", env=glo_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    assert r.stderr.count("offers no SFTP subsystem") == 1, r.stderr[-4000:]
    assert_complete(db, "ns", remote)
    assert "subsystem request for sftp" in sshd_no_sftp.log_path.read_text(errors="replace")


def test_a_submit_host_refusing_every_channel_is_one_line(condor_pool: Pool, tmp_path: Path) -> None:
    """`MaxSessions 0`: the login works, then no command or file channel opens.  `glo run` says so in one
    line naming the host, exits 1 without a traceback, and keeps what it stored."""
    with running_sshd(extra_config=("MaxSessions 0",)) as server:
        cfg, _remote = ssh_run_config(tmp_path, condor_pool, server, "", "ssh-nosession")
        db = tmp_path / "r.db"
        r = glo("run", str(cfg), "--db", str(db), "--run-id", "nc", env=glo_env())
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert f"{server.user}@127.0.0.1:{server.port}" in r.stderr
    assert "the server refused to open a channel" in r.stderr, r.stderr[-3000:]
    assert rows(db, "select status from runs")[0][0] == "failed"
