"""The SSH backend's transport against a real OpenSSH server (tests/sshd.py) and, for the `condor` tests,
the real test pool: logins as the pool's job user `submituser`, whose condor_submit reaches the pool.

Nothing is mocked: host keys are refused or accepted by paramiko against a real sshd, connections are
dropped by closing them or by stopping sshd, and jobs run in HTCondor.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from condor.submit import CondorJobSettings, render_batch
from orchestrator import procs
from orchestrator.backends.htcondor.ssh import SshTransport, ssh_transport
from orchestrator.backends.htcondor.sshconn import (
    AuthenticationFailed,
    ConnectionLost,
    HostKeyChanged,
    HostKeyUnknown,
    HostNotFound,
    SshConnection,
)
from orchestrator.backends.htcondor.transport import TransportError, TransportUnavailable
from orchestrator.config import SshConfig
from tests.condor_pool import Pool
from tests.sshd import LOGIN_USER, Sshd, free_port, make_key, pool_setup_script, running_sshd

#: A job that needs nothing of the pool but a shell: condor's tiny-job settings.
TINY = CondorJobSettings(request_gpus=0, request_cpus=1, request_memory="32MB", request_disk="1MB")


@pytest.fixture(scope="module")
def sshd() -> Iterator[Sshd]:
    with running_sshd() as server:
        yield server


@pytest.fixture(scope="module")
def sshd_no_sftp() -> Iterator[Sshd]:
    """An sshd whose sshd_config has no `Subsystem sftp` line (as some HPC sites run it)."""
    with running_sshd(sftp=False) as server:
        yield server


@pytest.fixture(params=["sftp", "exec"])
def file_sshd(request: pytest.FixtureRequest) -> Sshd:
    """Each file test twice: against a server with SFTP, and against one without (files over exec channels)."""
    return request.getfixturevalue("sshd" if request.param == "sftp" else "sshd_no_sftp")


@pytest.fixture
def transport(sshd: Sshd) -> Iterator[SshTransport]:
    t = SshTransport(sshd.settings(), remote_dir=str(sshd.user_dir(f"runs-{time.monotonic_ns()}")))
    yield t
    t.close()


@pytest.fixture
def files_transport(file_sshd: Sshd) -> Iterator[SshTransport]:
    t = SshTransport(file_sshd.settings(), remote_dir=str(file_sshd.user_dir(f"runs-{time.monotonic_ns()}")))
    yield t
    t.close()


def file_state(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


# ---------------------------------------------------------------------------------------------------------
# Commands


def test_awkward_arguments_arrive_intact(sshd: Sshd) -> None:
    args = ["a b", "it's", '"double"', "$HOME", "; echo injected", "`id`", "*", "", "new\nline", "back\\slash"]
    conn = SshConnection(sshd.settings())
    try:
        done = conn.run(["printf", "%s\\0", *args])
    finally:
        conn.close()
    assert done.stdout.split("\0")[:-1] == args


def test_a_failing_command_raises_command_error_with_its_output(sshd: Sshd) -> None:
    conn = SshConnection(sshd.settings())
    try:
        with pytest.raises(procs.CommandError) as info:
            conn.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
        done = conn.run(["sh", "-c", "exit 4"], check=False)
    finally:
        conn.close()
    exc = info.value
    assert (exc.returncode, exc.stdout, exc.stderr) == (3, "out\n", "err\n")
    assert exc.argv[:2] == ["ssh", f"{LOGIN_USER}@127.0.0.1:{sshd.port}"] and "exit 3" in str(exc)
    assert done.returncode == 4


def test_the_setup_snippet_runs_before_the_command_in_cwd(sshd: Sshd) -> None:
    setup = sshd.write_setup("setup-env.sh", {"GLO_SETUP_VAR": "from setup; not a command"})
    conn = SshConnection(sshd.settings())
    try:
        done = conn.run(["sh", "-c", 'printf "%s|%s" "$GLO_SETUP_VAR" "$PWD"'], setup=setup, cwd="/tmp")
    finally:
        conn.close()
    assert done.stdout == "from setup; not a command|/tmp"


# ---------------------------------------------------------------------------------------------------------
# Files over SFTP, or over exec channels where the server has no SFTP subsystem


def expected_transfer(sshd: Sshd) -> str:
    return "sftp" if sshd.sftp else "exec"


def test_files_write_read_and_read_from_an_offset(files_transport: SshTransport, file_sshd: Sshd) -> None:
    transport = files_transport
    root = transport.remote_root()
    d = root / "run" / "job-1" / "a0"
    transport.make_dirs(d)
    transport.make_dirs(d)  # exists: fine
    log = d / "events.log"
    assert transport.read_file(log) is None and transport.file_size(log) is None
    assert transport.read_from(log, 0) == b""
    transport.write_file(log, b"first\n")
    transport.write_file(d / "spec.json", b"{}")
    got = transport.read_from(log, 0)
    transport.write_file(log, b"first\nsecond\n")  # a growing log (rewritten atomically here)
    got += transport.read_from(log, len(got))
    assert got == b"first\nsecond\n" == transport.read_file(log)
    assert transport.read_from(log, len(got)) == b""
    assert transport.file_size(log) == len(got)
    names = transport.conn.run(["ls", "-A", str(d)]).stdout.split()
    assert sorted(names) == ["events.log", "spec.json"]  # no temporary files left behind
    owner = transport.conn.run(["stat", "-c", "%U", str(d)]).stdout.strip()
    assert owner == LOGIN_USER
    assert transport.counts["roundtrip"] > 0 and transport.counts["write"] == 3
    assert transport.conn.file_transfer == expected_transfer(file_sshd)
    transport.conn.remove(str(d / "spec.json"))
    transport.conn.remove(str(d / "spec.json"))  # already gone: fine
    assert transport.read_file(d / "spec.json") is None


def test_binary_and_large_files_arrive_byte_for_byte(files_transport: SshTransport, file_sshd: Sshd) -> None:
    """Every byte value, a file larger than a channel window, and a file name with a space and a quote."""
    data = bytes(range(256)) * 4096 + b"\r\n\x00end"  # ~1 MiB
    path = files_transport.remote_root() / "it's a file.bin"
    files_transport.make_dirs(path.parent)
    files_transport.write_file(path, data)
    assert files_transport.read_file(path) == data
    assert files_transport.file_size(path) == len(data)
    assert files_transport.read_from(path, len(data) - 7) == data[-7:]
    assert files_transport.conn.file_transfer == expected_transfer(file_sshd)


def test_without_sftp_the_refusal_is_noticed_once_per_connection(sshd_no_sftp: Sshd) -> None:
    """sshd logs each refused subsystem request: after many file operations it refused exactly one, and no
    SFTP session was ever opened."""
    before = sshd_no_sftp.log_path.read_text(errors="replace").count("subsystem request for sftp")
    t = SshTransport(sshd_no_sftp.settings(), remote_dir=str(sshd_no_sftp.user_dir(f"runs-{time.monotonic_ns()}")))
    try:
        root = t.remote_root()
        for i in range(5):
            t.make_dirs(root / f"d{i}")
            t.write_file(root / f"d{i}" / "f", b"x" * i)
            assert t.read_file(root / f"d{i}" / "f") == b"x" * i
    finally:
        t.close()
    log = sshd_no_sftp.log_path.read_text(errors="replace")
    assert log.count("subsystem request for sftp") - before == 1, log[-2000:]
    assert "subsystem not found" in log or "failed" in log


def test_a_failed_write_without_sftp_names_the_file_and_leaves_nothing(sshd_no_sftp: Sshd) -> None:
    """A directory the login user cannot write: one TransportError line naming path and host, no file."""
    t = SshTransport(sshd_no_sftp.settings(), remote_dir="/")
    try:
        with pytest.raises(TransportError) as info:
            t.write_file(PurePosixPath("/root/glo-nope"), b"data")
        message = str(info.value)
        assert message.startswith("cannot write /root/glo-nope on 127.0.0.1: ") and "\n" not in message
        assert "Permission denied" in message
        assert not Path("/root/glo-nope").exists()
        assert not [p for p in Path("/root").iterdir() if p.name.startswith(".glo-nope")]
    finally:
        t.close()


@pytest.mark.parametrize("remote_dir", ["~/glo-runs", "glo-runs"])
def test_a_relative_remote_dir_is_under_the_login_directory(file_sshd: Sshd, remote_dir: str) -> None:
    t = SshTransport(file_sshd.settings(), remote_dir=remote_dir)
    try:
        assert t.remote_root() == PurePosixPath(f"/home/{LOGIN_USER}/glo-runs")
    finally:
        t.close()


def test_a_server_that_refuses_every_session_is_one_line(tmp_path: Path) -> None:
    """`MaxSessions 0`: the login works but no channel opens (paramiko's ChannelException).  Each operation
    fails with one TransportError naming the host and the refusal, not a paramiko traceback."""
    with running_sshd(extra_config=("MaxSessions 0",)) as server:
        t = SshTransport(server.settings(), remote_dir="glo-runs")
        try:
            for op in (t.remote_root, lambda: t.conn.run(["true"]),
                       lambda: t.write_file(PurePosixPath("/tmp/x"), b"")):
                with pytest.raises(TransportError) as info:
                    op()
                message = str(info.value)
                assert f"{server.user}@127.0.0.1:{server.port}" in message and "\n" not in message
                assert "the server refused to open a channel" in message, message
                assert not isinstance(info.value, TransportUnavailable)  # retrying would not help
        finally:
            t.close()


def test_ssh_transport_from_the_backend_config(sshd: Sshd) -> None:
    """What make_transport uses: [backend.ssh] -> transport and the absolute directory of the runs."""
    cfg = SshConfig(host="127.0.0.1", user=LOGIN_USER, port=sshd.port, identity_file=str(sshd.user_key),
                    known_hosts=str(sshd.known_hosts), remote_dir="glo-runs")
    t, root = ssh_transport(cfg)
    try:
        assert t.kind == "ssh" and root == PurePosixPath(f"/home/{LOGIN_USER}/glo-runs")
    finally:
        t.close()


def test_a_full_remote_disk_is_named(file_sshd: Sshd) -> None:
    sshd = file_sshd
    mount = sshd.user_dir(f"small-fs-{time.monotonic_ns()}")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0777", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    t = SshTransport(sshd.settings(), remote_dir=str(mount))
    try:
        with pytest.raises(TransportError) as info:
            t.write_file(PurePosixPath(mount) / "big", b"x" * 200_000)
        assert str(info.value).startswith(f"remote disk full at {mount}/big on 127.0.0.1")
        assert not isinstance(info.value, TransportUnavailable)
    finally:
        t.close()
        subprocess.run(["umount", str(mount)], check=True)


# ---------------------------------------------------------------------------------------------------------
# Host keys and logins


def test_an_unknown_host_key_is_refused_and_nothing_is_written(sshd: Sshd, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    conn = SshConnection(sshd.settings(known_hosts=str(known)))
    with pytest.raises(HostKeyUnknown) as info:
        conn.connect()
    message = str(info.value)
    assert "\n" not in message
    assert f"ssh -o UserKnownHostsFile={known} -p {sshd.port} {LOGIN_USER}@127.0.0.1" in message
    assert 'host_key_policy = "accept-new"' in message and "SHA256:" in message
    assert not known.exists()


def test_a_changed_host_key_is_refused_and_known_hosts_kept(sshd: Sshd, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    other = make_key(tmp_path / "other_host_key")
    known.write_text(f"{sshd.host_key_name} {other}\n")
    before = file_state(known)
    for policy in ("reject", "accept-new"):
        conn = SshConnection(sshd.settings(known_hosts=str(known), host_key_policy=policy))
        with pytest.raises(HostKeyChanged) as info:
            conn.connect()
        assert "CHANGED" in str(info.value) and "man-in-the-middle" in str(info.value)
        assert f"ssh-keygen -R '{sshd.host_key_name}'" in str(info.value)
    assert file_state(known) == before


def test_a_wrong_user_key_is_refused_with_the_keys_tried(sshd: Sshd, tmp_path: Path) -> None:
    wrong = tmp_path / "id_wrong"
    make_key(wrong)
    before = file_state(sshd.known_hosts)
    conn = SshConnection(sshd.settings(identity_file=str(wrong)))
    with pytest.raises(AuthenticationFailed) as info:
        conn.connect()
    assert f"authentication failed for {LOGIN_USER}@127.0.0.1:{sshd.port}" in str(info.value)
    assert str(wrong) in str(info.value)
    assert not isinstance(info.value, TransportUnavailable)
    assert file_state(sshd.known_hosts) == before


def test_accept_new_adds_the_key_then_it_is_known(sshd: Sshd, tmp_path: Path) -> None:
    known = tmp_path / "ssh" / "known_hosts"
    conn = SshConnection(sshd.settings(known_hosts=str(known), host_key_policy="accept-new"))
    try:
        assert conn.run(["id", "-un"]).stdout.strip() == LOGIN_USER
    finally:
        conn.close()
    assert known.read_text() == f"{sshd.host_key_name} {sshd.host_public}\n"
    strict = SshConnection(sshd.settings(known_hosts=str(known)))
    try:
        strict.connect()
    finally:
        strict.close()


def test_ssh_config_alias_user_port_identity_and_proxyjump(sshd: Sshd, tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text(f"""
Host glo-submit
  HostName 127.0.0.1
  Port {sshd.port}
  User {LOGIN_USER}
  IdentityFile {sshd.user_key}
  ProxyJump glo-jump
Host glo-jump
  HostName 127.0.0.1
  Port {sshd.port}
  User {LOGIN_USER}
  IdentityFile {sshd.user_key}
""")
    settings = sshd.settings(host="glo-submit", port=None, user="", identity_file="", ssh_config=str(config))
    conn = SshConnection(settings)
    try:
        assert conn.target.proxy_jump == "glo-jump" and conn.destination == f"{LOGIN_USER}@127.0.0.1:{sshd.port}"
        assert conn.run(["sh", "-c", "echo $SSH_CLIENT"]).stdout.startswith("127.0.0.1 ")
        assert conn.counts["connect"] == 2  # the jump host, then the submit host through it
    finally:
        conn.close()


def test_an_unknown_host_name_is_a_configuration_error(sshd: Sshd) -> None:
    conn = SshConnection(sshd.settings(host="no-such-host.invalid"))
    with pytest.raises(HostNotFound, match="unknown host 'no-such-host.invalid'"):
        conn.connect()


def test_a_closed_port_is_unavailable_not_an_error(sshd: Sshd) -> None:
    conn = SshConnection(sshd.settings(port=free_port()))
    with pytest.raises(TransportUnavailable, match="connection refused"):
        conn.connect()


# ---------------------------------------------------------------------------------------------------------
# Dropped connections


def test_a_closed_connection_is_remade_on_the_next_call(transport: SshTransport) -> None:
    path = transport.remote_root() / "f"
    transport.write_file(path, b"kept")
    transport.conn.paramiko_transport.close()
    assert transport.read_file(path) == b"kept"
    assert transport.counts["reconnect"] == 1


def test_a_command_cut_off_mid_run_is_lost_then_the_next_one_works(sshd: Sshd) -> None:
    conn = SshConnection(sshd.settings())
    result: list[BaseException | procs.Completed] = []
    started = sshd.log_path.read_text().count("Starting session: command")
    thread = threading.Thread(target=lambda: result.append(_capture(lambda: conn.run(["sleep", "5"]))))
    thread.start()
    try:
        _wait_for("the remote sleep to start",
                  lambda: sshd.log_path.read_text().count("Starting session: command") > started)
        conn.paramiko_transport.close()
        thread.join(20)
        assert isinstance(result[0], ConnectionLost) and "outcome is unknown" in str(result[0])
        assert conn.run(["echo", "again"]).stdout == "again\n"
    finally:
        conn.close()


def test_sshd_stopped_is_unavailable_and_restarted_works(sshd: Sshd, transport: SshTransport) -> None:
    path = transport.remote_root() / "f"
    transport.write_file(path, b"before")
    sshd.stop()
    try:
        with pytest.raises(TransportUnavailable, match="connection refused"):
            transport.read_file(path)
        with pytest.raises(TransportUnavailable):
            transport.conn.run(["true"])
    finally:
        sshd.start()
    assert transport.read_file(path) == b"before"
    assert transport.counts["reconnect"] == 1


def _capture(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except BaseException as exc:  # noqa: BLE001 -- handed to the test thread
        return exc


def _wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


# ---------------------------------------------------------------------------------------------------------
# HTCondor through SSH (the real pool)


@pytest.fixture
def pool_setup(sshd: Sshd, condor_pool: Pool) -> str:
    return pool_setup_script(sshd, condor_pool)


@pytest.fixture
def pool_transport(sshd: Sshd, condor_pool: Pool, pool_setup: str) -> Iterator[SshTransport]:
    t = SshTransport(sshd.settings(), remote_dir=str(condor_pool.jobs_dir("ssh")), remote_setup=pool_setup,
                     command_timeout_s=120)
    yield t
    with contextlib.suppress(TransportError):
        t.remove_matching(f'GloRunId == "{t.remote_root().name}"', "test over")
    t.close()


def submit_job(t: SshTransport, script: str) -> tuple[str, PurePosixPath]:
    """One GLO-style job (render_batch) running `sh -c SCRIPT spec.json --out result.json`; its id and
    run directory.  The run id is the remote directory's name."""
    run_dir = t.remote_root()
    job_dir = run_dir / "job-1" / "a0"
    t.make_dirs(job_dir)
    t.write_file(job_dir / "spec.json", b'{"spec": "through ssh"}\n')
    text = render_batch(["/bin/sh", "-c", script], TINY, run_dir=str(run_dir), run_id=run_dir.name, items=[(1, 0)])
    cluster = t.submit(text)
    assert cluster.job_ids == [f"{cluster.cluster}.0"]
    return cluster.job_ids[0], run_dir


def follow_log(t: SshTransport, log: PurePosixPath, until: str, seen: bytearray, timeout: float = 90.0) -> None:
    """Read the event log from the last offset (as the cluster core does) until `until` appears."""
    def more() -> bool:
        seen.extend(t.read_from(log, len(seen)))
        return until.encode() in seen
    _wait_for(f"{until!r} in {log}", more, timeout)


ATTRS = ["ClusterId", "ProcId", "JobStatus", "GloRunId", "HoldReason", "ExitCode", "RemoveReason"]


@pytest.mark.condor
def test_submit_follow_query_history_result_and_machines(pool_transport: SshTransport) -> None:
    t = pool_transport
    job_id, run_dir = submit_job(t, 'sleep 1; cp "$0" "$2"')
    run = f'GloRunId == "{run_dir.name}"'
    queued = t.query(run, ATTRS)
    assert [f"{a['ClusterId']}.{a['ProcId']}" for a in queued] == [job_id]
    assert set(queued[0]) == set(ATTRS) and queued[0]["GloRunId"] == run_dir.name
    seen = bytearray()
    follow_log(t, run_dir / "events.log", "Job terminated", seen)
    assert bytes(seen) == t.read_file(run_dir / "events.log")
    assert t.read_file(run_dir / "job-1" / "a0" / "result.json") == b'{"spec": "through ssh"}\n'
    ads = _wait_for("the job in the history", lambda: t.history(run, ATTRS, 5))
    assert ads[0]["JobStatus"] == 4 and ads[0]["ExitCode"] == 0
    assert t.query(run, ATTRS) == []
    local = subprocess.run(["condor_status", "-af", "Machine"], capture_output=True, text=True, check=True).stdout
    assert t.machines() == set(local.split())
    assert t.counts["submit"] == 1 and t.counts["roundtrip"] > 0
    names = t.conn.run(["ls", "-A", str(run_dir)]).stdout.split()
    assert not [n for n in names if n.endswith(".sub")]  # the submitted description was cleaned up


@pytest.mark.condor
def test_hold_release_remove_and_remove_matching(pool_transport: SshTransport) -> None:
    t = pool_transport
    job_id, run_dir = submit_job(t, "sleep 120")
    run = f'GloRunId == "{run_dir.name}"'
    t.act("hold", [job_id], "GLO test: hold; with 'quotes' and $x")
    ad = t.query(run, ATTRS)[0]
    assert ad["JobStatus"] == 5 and ad["HoldReason"].startswith("GLO test: hold; with 'quotes' and $x")
    t.act("hold", [job_id])  # already held: fine
    t.act("release", [job_id])
    assert t.query(run, ATTRS)[0]["JobStatus"] in (1, 2)
    t.act("remove", [job_id], "GLO test: removed")
    t.act("remove", [job_id, "99999.0"])  # already removed, and one that never was: fine
    ads = _wait_for("the removed job in the history", lambda: t.history(run, ATTRS, 1))
    assert ads[0]["JobStatus"] == 3 and "GLO test: removed" in ads[0]["RemoveReason"]
    submit_job(t, "sleep 120")
    assert t.remove_matching(run, "GLO test: cancelled") == 1
    assert t.remove_matching(run) == 0


def test_condor_submit_not_on_the_path_says_what_to_set(sshd: Sshd) -> None:
    t = SshTransport(sshd.settings(), remote_dir=str(sshd.user_dir("no-path")), remote_setup="")
    try:
        if t.conn.run(["sh", "-c", "command -v condor_submit"], check=False).returncode == 0:
            pytest.skip(f"condor_submit is on {LOGIN_USER}'s default PATH here")
        with pytest.raises(TransportError) as info:
            t.submit("executable = /bin/true\nqueue\n")
    finally:
        t.close()
    assert str(info.value) == ("condor_submit not found on 127.0.0.1's PATH; set backend.ssh.remote_setup to a "
                               "script that puts HTCondor on the PATH (e.g. source /etc/profile.d/condor.sh)")
    assert not isinstance(info.value, TransportUnavailable)


@pytest.mark.condor
def test_a_schedd_that_does_not_answer_is_unavailable(sshd: Sshd, condor_pool: Pool, pool_setup: str) -> None:
    """A pool whose daemons are not running: its config, with the tools of the test pool."""
    assert condor_pool.dir is not None
    config = sshd.server_dir / "stopped_condor_config"
    config.write_text(f"RELEASE_DIR = {condor_pool.dir}/htcondor\nLOCAL_DIR = {sshd.server_dir}/stopped-pool\n"
                      "CONDOR_HOST = 127.0.0.1\nCOLLECTOR_HOST = 127.0.0.1:9\n")
    config.chmod(0o644)
    setup = sshd.write_setup("stopped-setup.sh", {"CONDOR_CONFIG": str(config),
                                                  "PATH": f"{condor_pool.dir}/htcondor/bin:$PATH"})
    t = SshTransport(sshd.settings(), remote_dir=str(sshd.user_dir("stopped")), remote_setup=setup)
    try:
        for call in (lambda: t.query("true", ["ClusterId"]), lambda: t.submit("executable = /bin/true\nqueue\n"),
                     t.machines, lambda: t.act("remove", ["1.0"])):
            with pytest.raises(TransportUnavailable, match="did not answer"):
                call()
    finally:
        t.close()


@pytest.mark.condor
def test_a_job_goes_on_while_the_connection_is_closed_mid_run(pool_transport: SshTransport) -> None:
    t = pool_transport
    _, run_dir = submit_job(t, 'sleep 2; cp "$0" "$2"')
    seen = bytearray()
    follow_log(t, run_dir / "events.log", "Job submitted", seen)
    t.conn.paramiko_transport.close()
    follow_log(t, run_dir / "events.log", "Job terminated", seen)
    assert t.counts["reconnect"] >= 1
    assert t.read_file(run_dir / "job-1" / "a0" / "result.json") == b'{"spec": "through ssh"}\n'


@pytest.mark.condor
def test_a_job_goes_on_while_sshd_is_stopped_and_restarted(sshd: Sshd, pool_transport: SshTransport) -> None:
    t = pool_transport
    job_id, run_dir = submit_job(t, 'sleep 3; cp "$0" "$2"')
    run = f'GloRunId == "{run_dir.name}"'
    seen = bytearray()
    follow_log(t, run_dir / "events.log", "Job submitted", seen)
    sshd.stop()
    try:
        with pytest.raises(TransportUnavailable):
            t.query(run, ATTRS)
    finally:
        sshd.start()
    follow_log(t, run_dir / "events.log", "Job terminated", seen)
    assert t.read_file(run_dir / "job-1" / "a0" / "result.json") == b'{"spec": "through ssh"}\n'
    assert _wait_for("the job in the history", lambda: t.history(run, ATTRS, 1))[0]["JobStatus"] == 4
