"""A real OpenSSH server for the SSH backend's tests, on 127.0.0.1, started and stopped by the tests.

Why real: the SSH backend's promises (host keys refused or accepted, logins refused, reconnects after a
dropped connection or a restarted sshd, arguments arriving intact) are about what OpenSSH does, so the tests
talk to `/usr/sbin/sshd`, never to a stand-in.  `make test` installs openssh-server when it is missing.

What `running_sshd` sets up, all in throw-away directories (the user's own ~/.ssh is never read or written):

* a server directory, mode 0755 (the login user must read authorized_keys and the setup scripts in it):
  sshd_config, a fresh ed25519 host key, authorized_keys, the pid file, the log;
* a client directory, mode 0700: the login key (ed25519) and a known_hosts file holding the host key;
* sshd listening on 127.0.0.1 on a free port, logging in only `submituser` (the test pool's job user, so
  that its condor_submit reaches the pool; created with useradd when missing, so these tests run before
  any pool exists) with that key.

`UsePAM yes`: useradd leaves an account locked ("!" in /etc/shadow), and without PAM OpenSSH refuses every
login to a locked account, keys included.  `StrictModes no`: authorized_keys lives under /tmp, which is
world-writable.  Needs root (only root's sshd can log in as another user); without sshd or root the tests
are skipped, and fail when $CI is set, because a skip would let CI pass without ever testing SSH.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from orchestrator.backends.htcondor.sshconn import SshSettings

LOGIN_USER = "submituser"
SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")


def sshd_binary() -> str | None:
    """Where sshd is, or None."""
    found = shutil.which("sshd")
    return found or next((p for p in SSHD_CANDIDATES if os.access(p, os.X_OK)), None)


def require_sshd() -> str:
    """The sshd binary; skips the test (fails it under $CI) when sshd or root is missing."""
    binary = sshd_binary()
    problem = None
    if binary is None:
        problem = "openssh-server is not installed (`make test` as root installs it: make system-deps)"
    elif os.geteuid() != 0:
        problem = f"the SSH tests need root: only root's sshd can log in as {LOGIN_USER}"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"{problem}; CI is set, so this is a failure, not a skip", pytrace=False)
        pytest.skip(problem)
    assert binary is not None
    return binary


def ensure_login_user(name: str = LOGIN_USER) -> None:
    """Create the login user (with a home and bash) when missing: the pool's start.sh would make the same."""
    try:
        pwd.getpwnam(name)
        return
    except KeyError:
        pass
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True, capture_output=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_key(path: Path) -> str:
    """A fresh ed25519 key in OpenSSH format at `path` (0600) and `path`.pub; returns the public key line."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private)
    Path(f"{path}.pub").write_text(public + "\n")
    return public


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc): sshd's per-connection processes and what they run."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(text.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@dataclass
class Sshd:
    """One sshd for tests; `stop()` also ends its open connections (a host going away), `start()` brings
    it back on the same port with the same host key."""

    binary: str
    server_dir: Path
    client_dir: Path
    port: int
    user: str = LOGIN_USER
    proc: subprocess.Popen[bytes] | None = None
    host_public: str = ""
    sftp: bool = True  # False: no `Subsystem sftp` line, as on HPC sites that run sshd without it
    extra_config: tuple[str, ...] = ()  # more sshd_config lines (e.g. "MaxSessions 0")
    _log: Any = field(default=None, repr=False)

    @property
    def host_key_name(self) -> str:
        return f"[127.0.0.1]:{self.port}"

    @property
    def user_key(self) -> Path:
        return self.client_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.client_dir / "known_hosts"

    @property
    def log_path(self) -> Path:
        return self.server_dir / "sshd.log"

    def settings(self, **overrides: Any) -> SshSettings:
        """Client settings for this server that touch nothing of the user's own (~/.ssh, agent)."""
        base = SshSettings(host="127.0.0.1", port=self.port, user=self.user, identity_file=str(self.user_key),
                           known_hosts=str(self.known_hosts), ssh_config="", use_agent=False, connect_timeout_s=10,
                           reconnect_attempts=2, reconnect_backoff_s=0.2, io_timeout_s=30, keepalive_s=5)
        return replace(base, **overrides)

    def write_config(self) -> None:
        d = self.server_dir
        (d / "sshd_config").write_text("\n".join([
            "ListenAddress 127.0.0.1", f"Port {self.port}", f"HostKey {d / 'ssh_host_ed25519_key'}",
            f"PidFile {d / 'sshd.pid'}", f"AuthorizedKeysFile {d / 'authorized_keys'}", "StrictModes no",
            "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "UsePAM yes", f"AllowUsers {self.user}", *(["Subsystem sftp internal-sftp"] if self.sftp else []),
            "LogLevel VERBOSE", "PrintMotd no", "MaxStartups 100", *self.extra_config, "",
        ]))

    def start(self, timeout: float = 15.0) -> None:
        """Start sshd -D and wait until it accepts connections; the log tail says why when it does not."""
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        self._log = open(self.log_path, "ab")
        offset = self._log.tell()
        self.proc = subprocess.Popen([self.binary, "-D", "-e", "-f", str(self.server_dir / "sshd_config")],
                                     stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.proc.returncode}:\n{self.log_tail()}")
            if f"Server listening on 127.0.0.1 port {self.port}".encode() in self.log_path.read_bytes()[offset:]:
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd did not listen on 127.0.0.1:{self.port} within {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the listener and every connection it serves (by pid: only processes this sshd started)."""
        if self.proc is None:
            return
        pids = descendants(self.proc.pid)
        for pid in [self.proc.pid, *pids]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for pid in pids:
            _wait_gone(pid)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def user_dir(self, name: str) -> Path:
        """A new directory in the server directory that the login user owns (for SFTP tests)."""
        path = self.server_dir / name
        path.mkdir(mode=0o755)
        shutil.chown(path, self.user, self.user)
        return path

    def write_setup(self, name: str, exports: dict[str, str]) -> str:
        """A script the login user can read that exports the variables (values may use $PATH); returns the
        remote_setup snippet that sources it."""
        lines = [f'export {k}="{v}"' for k, v in exports.items()]
        path = self.server_dir / name
        path.write_text("# written by tests/sshd.py\n" + "\n".join(lines) + "\n")
        path.chmod(0o644)
        return f". {path}"


def _wait_gone(pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def running_sshd(user: str = LOGIN_USER, *, sftp: bool = True, extra_config: tuple[str, ...] = ()) -> Iterator[Sshd]:
    """A started sshd (see the module docstring), stopped and its directories removed afterwards; without
    `sftp` it offers no SFTP subsystem, `extra_config` adds sshd_config lines."""
    binary = require_sshd()
    ensure_login_user(user)
    server_dir = Path(tempfile.mkdtemp(prefix="glo-sshd-"))
    server_dir.chmod(0o755)
    client_dir = Path(tempfile.mkdtemp(prefix="glo-sshc-"))
    sshd = Sshd(binary, server_dir, client_dir, port=0, user=user, sftp=sftp, extra_config=extra_config)
    try:
        host_public = make_key(server_dir / "ssh_host_ed25519_key")
        (server_dir / "authorized_keys").write_text(make_key(sshd.user_key) + "\n")
        (server_dir / "authorized_keys").chmod(0o644)
        sshd.host_public = host_public
        _start_on_free_port(sshd)
        sshd.known_hosts.write_text(f"{sshd.host_key_name} {host_public}\n")
        yield sshd
    finally:
        sshd.stop()
        shutil.rmtree(server_dir, ignore_errors=True)
        shutil.rmtree(client_dir, ignore_errors=True)


def _start_on_free_port(sshd: Sshd, tries: int = 3) -> None:
    """Pick a free port and start; another process may take the port in between, so try a few."""
    for attempt in range(tries):
        sshd.port = free_port()
        sshd.write_config()
        try:
            sshd.start()
            return
        except RuntimeError:
            if attempt == tries - 1:
                raise


def pool_setup_script(sshd: Sshd, pool: Any) -> str:
    """remote_setup for the test pool (a tests.condor_pool.Pool): a script the login user sources that sets
    CONDOR_CONFIG and PATH.  Skips unless the pool's jobs run as the login user (the test pool's own)."""
    import pytest

    if pool.dir is None or pool.job_user != LOGIN_USER:
        pytest.skip(f"the SSH condor tests need the test pool, whose jobs run as {LOGIN_USER}")
    bins = [p for p in pool.env["PATH"].split(":") if p.startswith(str(pool.dir))]
    return sshd.write_setup("pool-setup.sh", {"CONDOR_CONFIG": pool.env["CONDOR_CONFIG"],
                                              "PATH": ":".join([*bins, "$PATH"])})
