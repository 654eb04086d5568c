"""One SSH connection to a submit host (paramiko): commands, file access, reconnects.

Why a module of its own: the `ssh` backend (orchestrator.backends.htcondor.ssh) must reach a submit host the way
the user's own `ssh` does -- ~/.ssh/config (Host alias, HostName, User, Port, IdentityFile, ProxyJump,
ProxyCommand), the SSH agent and ~/.ssh/known_hosts -- and it must keep working over hours while a
laptop's network comes and goes.  Everything about the connection lives here; the backend only says
which commands to run and which files to read.

Files travel over SFTP; a server that refuses the SFTP subsystem (an sshd_config without `Subsystem sftp`,
as some HPC sites run it) is noticed once per connection, and from then on every file operation is one
exec channel running a POSIX sh script (`cat`, `tail -c`, `wc -c`, `mkdir -p`, `mv`): the same results,
the same atomic write, one round trip each.

Security: a host key that is not in known_hosts is refused by default (never paramiko's AutoAddPolicy);
`host_key_policy = "accept-new"` adds an unknown key to known_hosts, like OpenSSH's
`StrictHostKeyChecking=accept-new`, and a *changed* key is refused under every policy.

Errors are one-line exceptions.  Which class says whether waiting helps:

* `TransportUnavailable` (retry later): connection refused or timed out, the network or host is down,
  the SSH handshake broke off, the connection dropped (`ConnectionLost`), a host name that stopped
  resolving *after* it had worked (a laptop offline).
* `TransportError` (fix the configuration; retrying will not help): a host name that never resolved
  (`HostNotFound`), an unknown (`HostKeyUnknown`) or changed (`HostKeyChanged`) host key, a login the server
  refused (`AuthenticationFailed`), a missing identity file, an unreadable ~/.ssh/config, and a request the
  live server refused (a session channel over its MaxSessions, say): paramiko's own exceptions never leave
  this module.
"""

from __future__ import annotations

import base64
import contextlib
import getpass
import hashlib
import logging
import os
import posixpath
import re
import secrets
import select
import shlex
import socket
import stat
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import paramiko

from orchestrator import procs
from orchestrator.backends.htcondor.transport import TransportError, TransportUnavailable

T = TypeVar("T")
log = logging.getLogger("glo.ssh")

HOST_KEY_POLICIES = ("reject", "accept-new")
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
DEFAULT_SSH_CONFIG = "~/.ssh/config"
SYSTEM_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts"
#: The keys OpenSSH tries when neither the settings nor ~/.ssh/config name an IdentityFile.
DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
_READ_CHUNK = 32768
#: How long a command's output may stay silent after its exit status before it counts as complete without EOF.
_EOF_GRACE_S = 2.0


class HostNotFound(TransportError):
    """The host name does not resolve (and never did in this process: most likely a typo)."""


class HostKeyUnknown(TransportError):
    """The server's host key is not in known_hosts and the policy is "reject"."""


class HostKeyChanged(TransportError):
    """The server's host key differs from the one in known_hosts (possible man-in-the-middle)."""


class AuthenticationFailed(TransportError):
    """The server accepted none of the keys tried for the user."""


class ConnectionLost(TransportUnavailable):
    """The connection dropped while a command ran: whether it took effect is unknown."""


class _SftpRefused(Exception):
    """Internal: the server offers no SFTP subsystem, so files travel over exec channels instead.  Never
    leaves this module (not a TransportError: nothing failed that the caller must hear about)."""


#: How the exec-channel file scripts say "no such file" (a status that cat, tail, wc and sh never use).
_NO_FILE = 44
#: The file operations over exec channels (sh -c SCRIPT sh ARGS...): POSIX sh and utilities only, so that any
#: submit host whose sshd refuses the SFTP subsystem still serves them.  Each is one round trip.
_EXEC_HOME = "cd && pwd -P"
_EXEC_MKDIRS = 'mkdir -p -m "$2" -- "$1"'
_EXEC_WRITE = ('t=$(dirname -- "$1")/.$(basename -- "$1").$2.tmp; trap \'rm -f -- "$t"\' EXIT; '
               'cat > "$t" || exit 1; n=$(wc -c < "$t") || exit 1; '
               '[ "$n" -eq "$3" ] || { echo "wrote $n of $3 bytes to $t" >&2; exit 1; }; mv -f -- "$t" "$1"')
_EXEC_READ = f'[ -e "$1" ] || exit {_NO_FILE}; exec cat -- "$1"'
_EXEC_READ_FROM = 'if [ -e "$1" ]; then exec tail -c +$(($2 + 1)) -- "$1"; fi'
_EXEC_SIZE = f'[ -e "$1" ] || exit {_NO_FILE}; exec wc -c < "$1"'
_EXEC_REMOVE = 'exec rm -f -- "$1"'


@dataclass(frozen=True)
class SshSettings:
    """How to reach the submit host.  Empty / None fields are taken from ~/.ssh/config, as `ssh` would.

    host: a ~/.ssh/config Host alias or a host name.  user: default the config's User, else the local
    user.  port: default the config's Port, else 22.  identity_file: default the config's IdentityFile
    entries, else ~/.ssh/id_{ed25519,ecdsa,rsa} (those that exist); the agent's keys are tried too when
    use_agent.  known_hosts: the user's known_hosts file (/etc/ssh/ssh_known_hosts is read as well).
    keepalive_s: seconds between keepalive messages (0: none).  reconnect_attempts / reconnect_backoff_s:
    how often and how patiently a dropped connection is re-made (the delay doubles, at most 30 s) before
    an operation gives up with TransportUnavailable.  io_timeout_s: how long one SFTP request may wait.
    """

    host: str
    user: str = ""
    port: int | None = None
    identity_file: str = ""
    known_hosts: str = DEFAULT_KNOWN_HOSTS
    host_key_policy: str = "reject"
    keepalive_s: float = 30.0
    connect_timeout_s: float = 20.0
    ssh_config: str = DEFAULT_SSH_CONFIG
    use_agent: bool = True
    reconnect_attempts: int = 4
    reconnect_backoff_s: float = 1.0
    io_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if not self.host or any(c.isspace() for c in self.host):
            raise TransportError(f"ssh: host must be a host name or ~/.ssh/config alias, got {self.host!r}")
        if self.host_key_policy not in HOST_KEY_POLICIES:
            raise TransportError(f"ssh: host_key_policy must be one of {', '.join(HOST_KEY_POLICIES)}, "
                                 f"got {self.host_key_policy!r}")
        if self.port is not None and not 0 < self.port < 65536:
            raise TransportError(f"ssh: port must be 1-65535, got {self.port!r}")
        if self.keepalive_s < 0 or self.connect_timeout_s <= 0 or self.io_timeout_s <= 0:
            raise TransportError("ssh: keepalive_s must be >= 0, connect_timeout_s and io_timeout_s > 0")
        if self.reconnect_attempts < 1 or self.reconnect_backoff_s < 0:
            raise TransportError("ssh: reconnect_attempts must be >= 1 and reconnect_backoff_s >= 0")


@dataclass(frozen=True)
class ResolvedHost:
    """Where `SshSettings.host` leads after ~/.ssh/config: what is actually connected to."""

    alias: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...]
    identity_explicit: bool  # from the settings (a missing file is an error) rather than config/defaults
    proxy_jump: str = ""
    proxy_command: str = ""
    known_hosts: str = ""

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"

    @property
    def host_key_name(self) -> str:
        """The name known_hosts stores the key under: `host`, or `[host]:port` off port 22."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


def resolve(settings: SshSettings, proxy_jump: str | None = None) -> ResolvedHost:
    """Apply ~/.ssh/config to the settings (explicit settings win, as ssh's command-line options do).
    `proxy_jump` overrides the config's ProxyJump (used for the hops of a jump chain)."""
    entry = _ssh_config_entry(settings)
    user = settings.user or entry.get("user") or getpass.getuser()
    try:
        port = settings.port or int(entry.get("port", 22))
    except ValueError:
        raise TransportError(f"ssh config: Port of {settings.host} is not a number: {entry.get('port')!r}") from None
    if settings.identity_file:
        identities, explicit = (os.path.expanduser(settings.identity_file),), True
    else:
        configured = tuple(os.path.expanduser(p) for p in entry.get("identityfile", []))
        candidates = configured or tuple(os.path.expanduser(p) for p in DEFAULT_IDENTITIES)
        identities, explicit = tuple(p for p in candidates if os.path.isfile(p)), False
    jump = entry.get("proxyjump", "") if proxy_jump is None else proxy_jump
    command = entry.get("proxycommand", "")
    return ResolvedHost(
        alias=settings.host, hostname=entry.get("hostname", settings.host), port=port, user=user,
        identity_files=identities, identity_explicit=explicit,
        proxy_jump="" if jump.lower() == "none" else jump,
        proxy_command="" if command.lower() == "none" else command,
        known_hosts=os.path.expanduser(settings.known_hosts),
    )


def _ssh_config_entry(settings: SshSettings) -> dict:
    """The ~/.ssh/config entry for the host (empty when there is no config file)."""
    path = os.path.expanduser(settings.ssh_config) if settings.ssh_config else ""
    if not path or not os.path.isfile(path):
        return {}
    try:
        return dict(paramiko.SSHConfig.from_path(path).lookup(settings.host))
    except (OSError, ValueError, paramiko.SSHException) as exc:
        raise TransportError(f"cannot read the ssh config {path}: {exc}") from exc


def parse_jump(spec: str) -> tuple[str, str, int | None]:
    """One ProxyJump hop `[user@]host[:port]` or `ssh://[user@]host[:port]` -> (user, host, port)."""
    hop = spec.strip().removeprefix("ssh://")
    user, _, hostport = hop.rpartition("@")
    m = re.fullmatch(r"\[(.+)\](?::(\d+))?|([^:]+)(?::(\d+))?", hostport)
    if not m or not hostport:
        raise TransportError(f"ssh: cannot read the ProxyJump hop {spec!r}")
    host = m.group(1) or m.group(3)
    port = m.group(2) or m.group(4)
    return user, host, int(port) if port else None


def fingerprint(key: paramiko.PKey) -> str:
    """The key's SHA256 fingerprint as OpenSSH prints it (`ssh-keygen -lf`)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def command_line(argv: Sequence[str], *, setup: str = "", cwd: str | None = None) -> str:
    """The one remote shell line for argv: every argument shell-quoted (spaces, quotes, $ and ; arrive
    as they were), after `cd DIR &&` and the user's setup snippet (`source /etc/profile.d/condor.sh`).
    The setup is the user's own shell text, so it is not quoted."""
    if not argv:
        raise ValueError("command_line: empty argv")
    line = " ".join(shlex.quote(str(a)) for a in argv)
    if cwd:
        line = f"cd {shlex.quote(cwd)} && {line}"
    if setup.strip():
        line = f"{setup.strip()} && {line}"
    return line


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """What to do with a host key that is in no known_hosts file (a changed key never gets here:
    paramiko raises BadHostKeyException for it)."""

    def __init__(self, conn: SshConnection, target: ResolvedHost) -> None:
        self.conn = conn
        self.target = target

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if self.conn.settings.host_key_policy == "accept-new":
            _append_known_host(self.target.known_hosts, hostname, key)
            client.get_host_keys().add(hostname, key.get_name(), key)
            return
        raise HostKeyUnknown(self.conn.unknown_key_message(hostname, key))


def _append_known_host(path: str, name: str, key: paramiko.PKey) -> None:
    """Add one line to known_hosts, as `ssh` does for accept-new (the rest of the file is kept as it is;
    paramiko's save_host_keys would rewrite it)."""
    p = Path(path)
    try:
        p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        prefix = ""
        if p.exists() and p.stat().st_size:
            with open(p, "rb") as fh:
                fh.seek(-1, os.SEEK_END)
                prefix = "" if fh.read(1) == b"\n" else "\n"
        fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as fh:
            fh.write(f"{prefix}{name} {key.get_name()} {key.get_base64()}\n")
    except OSError as exc:
        raise TransportError(f"cannot add the host key of {name} to {path}: {exc.strerror or exc}") from exc


class SshConnection:
    """One kept-alive SSH connection (with one SFTP session) to a submit host, re-made when it drops.

    Thread-safe: the cluster core calls transports from worker threads.  Commands run on channels of their
    own; SFTP requests are serialized.  `counts["roundtrip"]` counts requests that crossed the network (one
    per command, one per SFTP request); `counts["connect"]` / `counts["reconnect"]` count connections made.
    """

    def __init__(self, settings: SshSettings, counts: Counter[str] | None = None, *,
                 proxy_jump: str | None = None) -> None:
        self.settings = settings
        self.counts: Counter[str] = counts if counts is not None else Counter()
        self.target = resolve(settings, proxy_jump)
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._jump: SshConnection | None = None
        self._ever_connected = False
        self._lock = threading.RLock()
        self._sftp_lock = threading.Lock()
        #: True once the server refused the SFTP subsystem: decided once per SshConnection (the server's
        #: configuration does not change between reconnects), files then go over exec channels.
        self.sftp_refused = False

    @property
    def destination(self) -> str:
        """user@hostname:port, for messages."""
        return self.target.destination

    @property
    def paramiko_transport(self) -> paramiko.Transport | None:
        """The live paramiko Transport, or None (tests close it to simulate a dropped connection)."""
        client = self._client
        return client.get_transport() if client is not None else None

    # -- connecting ------------------------------------------------------------------------------------
    def connect(self) -> None:
        """Connect now (otherwise the first operation does): surfaces configuration errors early."""
        self._ensure()

    def _ensure(self) -> paramiko.SSHClient:
        """The live client; (re)connects with exponential backoff when there is none or it dropped."""
        with self._lock:
            client = self._client
            if client is not None and _alive(client):
                return client
            self._discard(client)
            delay = self.settings.reconnect_backoff_s
            for attempt in range(1, self.settings.reconnect_attempts + 1):
                try:
                    self._client = self._connect_once()
                except TransportUnavailable as exc:
                    if attempt == self.settings.reconnect_attempts:
                        raise type(exc)(f"{exc} (gave up after {attempt} attempt(s))") from exc
                    time.sleep(delay)
                    delay = min(delay * 2, 30.0)
                    continue
                self.counts["reconnect" if self._ever_connected else "connect"] += 1
                self._ever_connected = True
                return self._client
            raise AssertionError("unreachable")

    def _connect_once(self) -> paramiko.SSHClient:
        target = self.target
        keys = self._identity_files()
        sock = self._open_socket()
        client = paramiko.SSHClient()
        self._load_host_keys(client)
        client.set_missing_host_key_policy(_HostKeyPolicy(self, target))
        timeout = self.settings.connect_timeout_s
        try:
            client.connect(target.hostname, target.port, username=target.user, sock=sock, key_filename=list(keys),
                           allow_agent=self._agent_available(), look_for_keys=False, timeout=timeout,
                           banner_timeout=timeout, auth_timeout=timeout)
        except Exception as exc:
            client.close()
            _close_quietly(sock)
            mapped = self._connect_error(exc, keys)
            if mapped is exc:
                raise
            raise mapped from exc
        transport = client.get_transport()
        if transport is not None and self.settings.keepalive_s > 0:
            transport.set_keepalive(max(1, int(self.settings.keepalive_s)))
        return client

    def _identity_files(self) -> tuple[str, ...]:
        target = self.target
        if target.identity_explicit:
            missing = [p for p in target.identity_files if not os.path.isfile(p)]
            if missing:
                raise TransportError(f"ssh: identity file {missing[0]} does not exist (backend.ssh.identity_file)")
        return target.identity_files

    def _agent_available(self) -> bool:
        return self.settings.use_agent and bool(os.environ.get("SSH_AUTH_SOCK"))

    def _load_host_keys(self, client: paramiko.SSHClient) -> None:
        """System and user known_hosts; never written here (accept-new appends one line itself)."""
        try:
            if os.path.isfile(SYSTEM_KNOWN_HOSTS):
                client.load_system_host_keys(SYSTEM_KNOWN_HOSTS)
            if os.path.isfile(self.target.known_hosts):
                client.get_host_keys().load(self.target.known_hosts)
        except (OSError, paramiko.SSHException) as exc:
            raise TransportError(f"cannot read known_hosts ({self.target.known_hosts}): {exc}") from exc

    def _open_socket(self) -> socket.socket | paramiko.Channel | paramiko.ProxyCommand:
        """A byte stream to the SSH server: direct TCP, a ProxyJump hop's direct-tcpip channel, or a
        ProxyCommand."""
        target = self.target
        if target.proxy_jump:
            return self._jump_channel()
        if target.proxy_command:
            try:
                return paramiko.ProxyCommand(target.proxy_command)
            except (OSError, paramiko.SSHException) as exc:
                raise TransportError(f"ssh: ProxyCommand {target.proxy_command!r} failed: {exc}") from exc
        try:
            return socket.create_connection((target.hostname, target.port), timeout=self.settings.connect_timeout_s)
        except socket.gaierror as exc:
            cls = TransportUnavailable if self._ever_connected else HostNotFound
            raise cls(f"unknown host {target.hostname!r} ({exc.strerror}); check backend.ssh.host "
                      f"and ~/.ssh/config") from exc
        except ConnectionRefusedError as exc:
            raise TransportUnavailable(f"cannot connect to {target.hostname}:{target.port}: connection refused "
                                       "(is sshd running there?)") from exc
        except TimeoutError as exc:
            raise TransportUnavailable(f"cannot connect to {target.hostname}:{target.port}: timed out after "
                                       f"{self.settings.connect_timeout_s:g} s") from exc
        except OSError as exc:
            raise TransportUnavailable(f"cannot connect to {target.hostname}:{target.port}: "
                                       f"{exc.strerror or exc}") from exc

    def _jump_channel(self) -> paramiko.Channel:
        """ProxyJump: connect to the last hop (through the earlier ones), then a direct-tcpip channel."""
        hops = [h for h in self.target.proxy_jump.split(",") if h.strip()]
        user, host, port = parse_jump(hops[-1])
        if self._jump is None:
            hop_settings = replace(self.settings, host=host, user=user, port=port, identity_file="")
            self._jump = SshConnection(hop_settings, self.counts, proxy_jump=",".join(hops[:-1]) or "none")
        transport = self._jump._ensure().get_transport()
        assert transport is not None
        try:
            return transport.open_channel("direct-tcpip", (self.target.hostname, self.target.port), ("127.0.0.1", 0),
                                          timeout=self.settings.connect_timeout_s)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise TransportUnavailable(f"cannot reach {self.target.hostname}:{self.target.port} through the jump "
                                       f"host {self._jump.destination}: {exc}") from exc

    def _connect_error(self, exc: Exception, keys: Sequence[str]) -> Exception:
        """paramiko's exception -> ours (one line, says what to do)."""
        t = self.target
        if isinstance(exc, TransportError):
            return exc
        if isinstance(exc, paramiko.BadHostKeyException):
            return HostKeyChanged(self.changed_key_message(exc.key, exc.expected_key))
        if isinstance(exc, paramiko.AuthenticationException) or "No authentication methods" in str(exc):
            tried = [f"identity file {k}" for k in keys] + (["the ssh-agent's keys"] if self._agent_available()
                                                             else [])
            what = ", ".join(tried) or "no keys at all (no identity file, no ssh-agent)"
            return AuthenticationFailed(
                f"authentication failed for {t.user}@{t.hostname}:{t.port}: the server accepted none of the keys "
                f"tried ({what}); set backend.ssh.identity_file or user, or add the public key to the server's "
                f"~{t.user}/.ssh/authorized_keys")
        if isinstance(exc, (OSError, EOFError, paramiko.SSHException)):
            text = " ".join(str(exc).split()) or type(exc).__name__
            return TransportUnavailable(f"SSH handshake with {t.hostname}:{t.port} failed: {text}")
        return exc

    def unknown_key_message(self, name: str, key: paramiko.PKey) -> str:
        t = self.target
        ssh = ["ssh"]
        if t.known_hosts != os.path.expanduser(DEFAULT_KNOWN_HOSTS):
            ssh += ["-o", f"UserKnownHostsFile={t.known_hosts}"]
        if t.proxy_jump:
            ssh += ["-J", t.proxy_jump]
        if t.port != 22:
            ssh += ["-p", str(t.port)]
        ssh.append(f"{t.user}@{t.hostname}")
        return (f"host key of {name} is unknown ({key.get_name()} {fingerprint(key)}, not in {t.known_hosts}); "
                f"refused. If that fingerprint is right, accept it by running `{shlex.join(ssh)}` once "
                f"(answer yes), or set backend.ssh.host_key_policy = \"accept-new\"")

    def changed_key_message(self, got: paramiko.PKey, expected: paramiko.PKey) -> str:
        t = self.target
        return (f"host key of {t.host_key_name} has CHANGED (server offers {got.get_name()} {fingerprint(got)}, "
                f"{t.known_hosts} has {expected.get_name()} {fingerprint(expected)}): refused -- possibly a "
                f"man-in-the-middle attack, or the host was reinstalled. If the new key is right, remove the old "
                f"one with `ssh-keygen -R '{t.host_key_name}' -f {t.known_hosts}` and accept the new one")

    # -- dropping --------------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (and a jump host's); the next operation connects again."""
        with self._lock:
            self._discard(self._client)
            if self._jump is not None:
                self._jump.close()

    def _discard(self, client: paramiko.SSHClient | None) -> None:
        """Forget `client` (if it is still the current one) and its SFTP session."""
        with self._lock:
            if client is None or client is not self._client:
                return
            sftp, self._sftp, self._client = self._sftp, None, None
            _close_quietly(sftp)
            _close_quietly(client)

    def _retrying(self, what: str, op: Callable[[paramiko.SSHClient], T]) -> T:
        """Run an idempotent operation; if the connection turns out dead, reconnect once and run it again."""
        for attempt in (1, 2):
            client = self._ensure()
            try:
                return op(client)
            except TimeoutError as exc:
                self._discard(client)
                raise TransportUnavailable(f"{self.destination} did not answer {what} within "
                                           f"{self.settings.io_timeout_s:g} s") from exc
            except (OSError, EOFError, paramiko.SSHException) as exc:
                if _alive(client):
                    if isinstance(exc, OSError):  # an SFTP status (no such file, permission, disk full)
                        raise
                    # the connection is fine but the server said no (e.g. a channel refused: MaxSessions)
                    if isinstance(exc, paramiko.ChannelException):
                        why = f"the server refused to open a channel ({exc.text}; a limit such as MaxSessions?)"
                    else:
                        why = f"the server refused it ({' '.join(str(exc).split()) or type(exc).__name__})"
                    raise TransportError(f"{what} on {self.destination} failed: {why}") from exc
                self._discard(client)
                if attempt == 2:
                    raise ConnectionLost(f"connection to {self.destination} lost during {what}") from exc
        raise AssertionError("unreachable")

    # -- commands --------------------------------------------------------------------------------------
    def run(self, argv: Sequence[str], *, setup: str = "", cwd: str | None = None, timeout: float | None = 300.0,
            check: bool = True) -> procs.Completed:
        """Run argv on the host through the login shell (one quoted command line, see `command_line`).

        A nonzero exit raises procs.CommandError (argv "ssh DEST ARGV...", exit code, stdout, stderr) unless
        check is false; exceeding `timeout` raises it with timed_out.  Opening the channel is retried after a
        reconnect; once the command was sent, a dropped connection raises ConnectionLost (its outcome is
        unknown, so it is not run twice)."""
        out, err, code = self._exec(argv, setup=setup, cwd=cwd, timeout=timeout)
        stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
        if check and code != 0:
            raise procs.CommandError(["ssh", self.destination, *argv], code, stdout, stderr)
        return procs.Completed(tuple(argv), code, stdout, stderr)

    def _exec(self, argv: Sequence[str], *, setup: str = "", cwd: str | None = None, timeout: float | None = 300.0,
              stdin: bytes | None = None) -> tuple[bytes, bytes, int]:
        """stdout and stderr as bytes (a file's content travels in them when SFTP is refused) and the exit
        status of argv, with `stdin` sent to it first; errors as in `run`."""
        line = command_line(argv, setup=setup, cwd=cwd)
        shown = ["ssh", self.destination, *argv]
        chan = self._retrying(f"`{argv[0]}`", lambda client: _open_session(client, self.settings.connect_timeout_s))
        self._trip()
        try:
            chan.exec_command(line)
            if stdin is not None:
                chan.sendall(stdin)
                chan.shutdown_write()
            return self._collect(chan, shown, timeout)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            if chan.get_transport().is_active():
                raise TransportError(f"running `{argv[0]}` on {self.destination} failed: {exc}") from exc
            raise ConnectionLost(f"connection to {self.destination} lost while running `{argv[0]}`; "
                                 "its outcome is unknown") from exc
        finally:
            chan.close()

    def _collect(self, chan: paramiko.Channel, shown: list[str], timeout: float | None) -> tuple[bytes, bytes, int]:
        """stdout, stderr and exit status of a running command, reading both streams as they come.

        The exit status is not flow-controlled, so it can arrive while output is still held back by the
        channel window (a file read over an exec channel, say): the end is the server's EOF after the exit
        status -- or, for a command that left a background process holding its output open, no more output
        for _EOF_GRACE_S after it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        out, err = bytearray(), bytearray()
        last_data = time.monotonic()
        while True:
            while chan.recv_ready():
                out += chan.recv(_READ_CHUNK)
                last_data = time.monotonic()
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(_READ_CHUNK)
                last_data = time.monotonic()
            if (chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready()
                    and (chan.eof_received or time.monotonic() - last_data > _EOF_GRACE_S)):
                break
            if chan.closed or not chan.get_transport().is_active():
                if chan.exit_status_ready():
                    break
                raise EOFError("channel closed before the command's exit status arrived")
            if deadline is not None and time.monotonic() > deadline:
                raise procs.CommandError(shown, None, out.decode(errors="replace"), err.decode(errors="replace"),
                                         timed_out=True)
            select.select([chan], [], [], 0.05)
        code = chan.recv_exit_status()
        if code == -1 and not chan.get_transport().is_active():
            raise EOFError("connection closed while the command ran")
        return bytes(out), bytes(err), code

    # -- files (SFTP) ----------------------------------------------------------------------------------
    def _sftp_call(self, what: str, fn: Callable[[paramiko.SFTPClient], T]) -> T:
        """fn(sftp) on this connection's one SFTP session (serialized), retried once after a reconnect."""
        def op(client: paramiko.SSHClient) -> T:
            with self._sftp_lock:
                return fn(self._sftp_for(client))
        return self._retrying(what, op)

    def _sftp_for(self, client: paramiko.SSHClient) -> paramiko.SFTPClient:
        """This connection's SFTP session, opened on first use.  A server that refuses the subsystem (an
        sshd_config without `Subsystem sftp`, as some HPC sites run it) raises _SftpRefused, once: from
        then on every file operation goes over exec channels."""
        with self._lock:
            if self.sftp_refused:
                raise _SftpRefused
            if self._sftp is None or client is not self._client:
                self._trip()
                chan = _open_session(client, self.settings.connect_timeout_s)  # refused here: not about SFTP
                try:
                    chan.invoke_subsystem("sftp")
                except (EOFError, paramiko.SSHException) as exc:
                    _close_quietly(chan)
                    if not _alive(client):
                        raise
                    self.sftp_refused = True
                    log.warning("%s offers no SFTP subsystem (%s): moving files over exec channels instead",
                                self.destination, " ".join(str(exc).split()) or type(exc).__name__)
                    raise _SftpRefused from exc
                sftp = paramiko.SFTPClient(chan)
                sftp.get_channel().settimeout(self.settings.io_timeout_s)
                if client is self._client:
                    self._sftp = sftp
                return sftp
            return self._sftp

    @property
    def file_transfer(self) -> str:
        """How files travel on this connection: "sftp", or "exec" once the server refused SFTP."""
        return "exec" if self.sftp_refused else "sftp"

    def _files(self, what: str, over_sftp: Callable[[paramiko.SFTPClient], T], over_exec: Callable[[], T]) -> T:
        """A file operation over SFTP, or over an exec channel when the server has no SFTP subsystem."""
        if not self.sftp_refused:
            try:
                return self._sftp_call(what, over_sftp)
            except _SftpRefused:
                pass
        return over_exec()

    def _exec_file(self, what: str, script: str, *args: str, stdin: bytes | None = None) -> bytes | None:
        """Run one of the _EXEC_* scripts: its stdout, or None when it says the file does not exist.  A
        failure is an OSError with the script's last stderr line, as SFTP's errors are (errno None, so
        the backend checks for a full disk as after an SFTP "Failure")."""
        try:
            out, err, code = self._exec(["sh", "-c", script, "sh", *args], timeout=self.settings.io_timeout_s,
                                        stdin=stdin)
        except procs.CommandError as exc:  # timed out
            raise TransportUnavailable(f"{self.destination} did not answer {what} within "
                                       f"{self.settings.io_timeout_s:g} s") from exc
        if code == _NO_FILE:
            return None
        if code != 0:
            lines = [ln.strip() for ln in err.decode(errors="replace").splitlines() if ln.strip()]
            raise OSError(lines[-1] if lines else f"{what} exited with status {code}")
        return out

    def _trip(self, n: int = 1) -> None:
        self.counts["roundtrip"] += n

    def home(self) -> str:
        """The login directory (where relative paths point)."""
        def op(sftp: paramiko.SFTPClient) -> str:
            self._trip()
            return sftp.normalize(".")
        def over_exec() -> str:
            out = self._exec_file("finding the home directory", _EXEC_HOME) or b""
            return out.decode(errors="replace").strip()
        return self._files("finding the home directory", op, over_exec)

    def mkdirs(self, path: str, mode: int = 0o755) -> None:
        """mkdir -p over SFTP: one stat when it exists, else up to the nearest existing parent and down."""
        def op(sftp: paramiko.SFTPClient) -> None:
            missing: list[str] = []
            probe = posixpath.normpath(path)
            while probe not in ("/", ".", ""):
                self._trip()
                try:
                    if stat.S_ISDIR(sftp.stat(probe).st_mode or 0):
                        break
                    raise NotADirectoryError(20, "Not a directory", probe)
                except FileNotFoundError:
                    missing.append(probe)
                    probe = posixpath.dirname(probe)
            for d in reversed(missing):
                self._trip()
                try:
                    sftp.mkdir(d, mode)
                except OSError:
                    self._trip()
                    if not _is_dir(sftp, d):  # made meanwhile by someone else: fine
                        raise
        self._files(f"mkdir {path}", op, lambda: self._exec_file(f"mkdir {path}", _EXEC_MKDIRS, path, f"{mode:o}"))

    def write_atomic(self, path: str, data: bytes) -> None:
        """Write to a temporary name beside `path`, then posix-rename over it: readers never see half a file.

        Not pipelined: paramiko drops the status of pipelined writes, so a full disk would leave a silently
        truncated file.  The size is checked before the rename as well."""
        tmp = posixpath.join(posixpath.dirname(path), f".{posixpath.basename(path)}.{secrets.token_hex(4)}.tmp")

        def op(sftp: paramiko.SFTPClient) -> None:
            try:
                self._trip(2 + len(data) // _READ_CHUNK)  # open, writes, close
                with sftp.open(tmp, "wb") as fh:
                    fh.write(data)
                self._trip()
                written = sftp.stat(tmp).st_size
                if written != len(data):
                    raise OSError(f"wrote {written} of {len(data)} bytes to {tmp}")
                self._trip()
                sftp.posix_rename(tmp, path)
            except BaseException:
                with contextlib.suppress(Exception):
                    self._trip()
                    sftp.remove(tmp)
                raise
        def over_exec() -> None:  # the same temporary name, size check and rename, in one script
            self._exec_file(f"writing {path}", _EXEC_WRITE, path, secrets.token_hex(4), str(len(data)), stdin=data)
        self._files(f"writing {path}", op, over_exec)

    def read(self, path: str) -> bytes | None:
        """The whole file, or None when it does not exist."""
        def op(sftp: paramiko.SFTPClient) -> bytes | None:
            self._trip()
            try:
                fh = sftp.open(path, "rb")
            except FileNotFoundError:
                return None
            with fh:
                data = _read_all(fh, self._trip)
            self._trip()
            return data
        return self._files(f"reading {path}", op, lambda: self._exec_file(f"reading {path}", _EXEC_READ, path))

    def read_from(self, path: str, offset: int) -> bytes:
        """The bytes from `offset` to the end as of now (b"" when none or no file).  One stat when the file
        has not grown, which is the usual case when following a log; else open, seek, read, close."""
        def op(sftp: paramiko.SFTPClient) -> bytes:
            self._trip()
            try:
                size = sftp.stat(path).st_size or 0
            except FileNotFoundError:
                return b""
            if size <= offset:
                return b""
            self._trip()
            with sftp.open(path, "rb") as fh:
                fh.seek(offset)
                want = size - offset
                self._trip(1 + want // _READ_CHUNK)
                data = fh.read(want)
            self._trip()
            return data
        return self._files(f"reading {path}", op,
                           lambda: self._exec_file(f"reading {path}", _EXEC_READ_FROM, path, str(int(offset))) or b"")

    def size(self, path: str) -> int | None:
        """The file's size, or None when it does not exist."""
        def op(sftp: paramiko.SFTPClient) -> int | None:
            self._trip()
            try:
                return sftp.stat(path).st_size
            except FileNotFoundError:
                return None
        def over_exec() -> int | None:
            out = self._exec_file(f"stat {path}", _EXEC_SIZE, path)
            return None if out is None else int(out.split()[0])
        return self._files(f"stat {path}", op, over_exec)

    def remove(self, path: str) -> None:
        """Delete a file; one that is already gone is fine."""
        def op(sftp: paramiko.SFTPClient) -> None:
            self._trip()
            try:
                sftp.remove(path)
            except FileNotFoundError:
                pass
        self._files(f"removing {path}", op, lambda: self._exec_file(f"removing {path}", _EXEC_REMOVE, path))

    def disk_full(self, path: str, needed: int = 0) -> bool:
        """Whether the file system holding `path` (or its nearest existing parent) is out of space or inodes.

        Why a command: SFTP (version 3) reports ENOSPC as a bare "Failure", so after a failed write this is
        how the backend tells a full disk from other failures."""
        script = ('d=$1; while [ ! -d "$d" ] && [ "$d" != / ]; do d=$(dirname "$d"); done; '
                  'df -Pk -- "$d" | tail -n 1; df -Pi -- "$d" | tail -n 1')
        try:
            done = self.run(["sh", "-c", script, "sh", path], timeout=60)
        except (procs.CommandError, TransportError):
            return False
        lines = done.stdout.strip().splitlines()
        try:
            avail_kb = int(lines[0].split()[3])
            free_inodes = int(lines[1].split()[3]) if len(lines) > 1 else 1
        except (IndexError, ValueError):
            return False
        return avail_kb * 1024 <= max(needed, 0) + 4096 or free_inodes == 0


def _open_session(client: paramiko.SSHClient, timeout: float) -> paramiko.Channel:
    transport = client.get_transport()
    if transport is None or not transport.is_active():
        raise EOFError("SSH session not active")
    return transport.open_session(timeout=timeout)


def _read_all(fh: paramiko.SFTPFile, trip: Callable[[int], None]) -> bytes:
    chunks = []
    while True:
        trip(1)
        chunk = fh.read(_READ_CHUNK)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _is_dir(sftp: paramiko.SFTPClient, path: str) -> bool:
    try:
        return stat.S_ISDIR(sftp.stat(path).st_mode or 0)
    except OSError:
        return False


def _alive(client: paramiko.SSHClient) -> bool:
    transport = client.get_transport()
    return transport is not None and transport.is_active()


def _close_quietly(thing: object) -> None:
    close = getattr(thing, "close", None)
    if close is not None:
        with contextlib.suppress(Exception):
            close()


