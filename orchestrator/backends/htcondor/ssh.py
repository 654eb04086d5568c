"""`backend.kind = "ssh"`: GLO on a laptop, the schedd on a submit host reached over one SSH connection.

The laptop needs neither HTCondor daemons nor TensorFlow: files go to and come from the submit host over
SFTP, or over exec channels where its sshd offers no SFTP subsystem (orchestrator.backends.htcondor.sshconn decides, once per
connection) -- spec.json in, the run's event log read from the last offset, result.json back --, and the schedd is
driven with HTCondor's command-line tools there (`condor_submit -terse`, `condor_q -json`,
`condor_history -json`, `condor_hold` / `condor_release` / `condor_rm`, `condor_status`).  The connection
itself (ssh config, agent, known_hosts, reconnects) is orchestrator.backends.htcondor.sshconn.

Over SSH the login user *is* the job owner, so plain SFTP mkdir gives directories the jobs can write.
`remote_setup` (e.g. `source /etc/profile.d/condor.sh`) runs before every command, for pools whose tools
are not on the login shell's default PATH.

Errors (one line each): `condor_submit` not on the remote PATH and a full remote disk are TransportError
(configuration: retrying will not help); a schedd or collector that does not answer, or a command that
does not finish in `command_timeout_s`, is TransportUnavailable (the core retries later).
"""

from __future__ import annotations

import json
import re
import secrets
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, TypeVar

from condor.submit import SubmitOutputError, SubmittedCluster, parse_submit_output
from orchestrator import procs
from orchestrator.backends.htcondor.sshconn import DEFAULT_KNOWN_HOSTS, SshConnection, SshSettings
from orchestrator.backends.htcondor.transport import Action, TransportError, TransportUnavailable

if TYPE_CHECKING:
    from orchestrator.config import SshConfig

T = TypeVar("T")

#: What HTCondor's tools print when the schedd (or collector) cannot be reached, as opposed to refusing.
_UNREACHABLE = re.compile(r"CEDAR:6001|SECMAN:2007|Failed to connect|Failed to fetch ads|Can't find address|"
                          r"communication error|Unable to connect|connection refused|timed out", re.IGNORECASE)
_NO_SPACE = re.compile(r"No space left on device|Disk quota exceeded", re.IGNORECASE)
#: condor_hold / condor_release / condor_rm lines that are fine: done, already so, or the job is gone.
_ACT_OK = re.compile(r"^(Job \S+ (held|released|marked for removal|not found|already .*|not held.*)"
                     r"|.*Couldn't find/\w+ all jobs.*|.*There are no jobs in the queue.*"
                     r"|All jobs .* have been marked for removal)$", re.IGNORECASE)
_TOTALS = re.compile(r"(\d+)\s+Succeeded,\s*(\d+)\s+Failed,\s*(\d+)\s+Not Found,\s*(\d+)\s+Bad Status,"
                     r"\s*(\d+)\s+Already Done,\s*(\d+)\s+Permission Denied")
_ACT_TOOLS: dict[str, str] = {"hold": "condor_hold", "release": "condor_release", "remove": "condor_rm"}
_LOG_LINE = re.compile(r"^\s*log\s*=\s*(/\S+)\s*$", re.MULTILINE | re.IGNORECASE)
_EXPR = re.compile(r"^/Expr\((.*)\)/$", re.DOTALL)


def ssh_transport(cfg: SshConfig) -> tuple[SshTransport, PurePosixPath]:
    """The transport for [backend.ssh], and the absolute directory on the submit host that holds the runs.

    A relative remote_dir is taken relative to the login directory, which is asked for over the connection
    (so this connects, and a wrong host, key or user is reported now rather than at the first job)."""
    settings = SshSettings(
        host=cfg.host, user=cfg.user or "", port=cfg.port, identity_file=cfg.identity_file or "",
        known_hosts=cfg.known_hosts or DEFAULT_KNOWN_HOSTS, host_key_policy=cfg.host_key_policy,
        keepalive_s=cfg.keepalive_s, connect_timeout_s=cfg.connect_timeout_s, ssh_config=cfg.ssh_config,
    )
    transport = SshTransport(settings, remote_dir=cfg.remote_dir, remote_setup=cfg.remote_setup)
    return transport, transport.remote_root()


class SshTransport:
    """The `Transport` (orchestrator.backends.htcondor.transport) over SSH: SFTP for files, HTCondor's tools for the
    schedd.  One connection per transport (one per run), kept alive and re-made when it drops."""

    kind = "ssh"

    def __init__(self, settings: SshSettings, *, remote_dir: str = "glo-runs", remote_setup: str = "",
                 command_timeout_s: float = 300.0) -> None:
        self.counts: Counter[str] = Counter()
        self.settings = settings
        self.remote_dir = remote_dir
        self.remote_setup = remote_setup
        self.command_timeout_s = command_timeout_s
        self.conn = SshConnection(settings, self.counts)  # it adds "roundtrip", "connect", "reconnect"
        self._root: PurePosixPath | None = None

    @property
    def host(self) -> str:
        return self.conn.target.alias

    def remote_root(self) -> PurePosixPath:
        """remote_dir as an absolute path (`~/x` and relative paths are under the login directory)."""
        if self._root is None:
            d = self.remote_dir.strip() or "."
            if d == "~" or d.startswith("~/"):
                d = d[2:] or "."
            root = PurePosixPath(d)
            if not root.is_absolute():
                root = PurePosixPath(self.conn.home()) / root
            self._root = root
        return self._root

    def _path(self, path: PurePosixPath | str) -> str:
        p = PurePosixPath(path)
        return str(p if p.is_absolute() else self.remote_root() / p)

    # -- files -----------------------------------------------------------------------------------------
    def make_dirs(self, path: PurePosixPath) -> None:
        """mkdir -p as the login user, who is also the jobs' owner: the shadow can write there."""
        self.counts["mkdir"] += 1
        p = self._path(path)
        self._file_op("create the directory", p, lambda: self.conn.mkdirs(p))

    def write_file(self, path: PurePosixPath, data: bytes) -> None:
        self.counts["write"] += 1
        p = self._path(path)
        self._file_op("write", p, lambda: self.conn.write_atomic(p, data), needed=len(data))

    def read_file(self, path: PurePosixPath) -> bytes | None:
        self.counts["read"] += 1
        p = self._path(path)
        return self._file_op("read", p, lambda: self.conn.read(p))

    def read_from(self, path: PurePosixPath, offset: int) -> bytes:
        """New bytes of a growing file (the run's event log): never re-reads what was read before."""
        self.counts["read"] += 1
        p = self._path(path)
        return self._file_op("read", p, lambda: self.conn.read_from(p, offset))

    def file_size(self, path: PurePosixPath) -> int | None:
        p = self._path(path)
        return self._file_op("stat", p, lambda: self.conn.size(p))

    def _file_op(self, what: str, path: str, fn: Callable[[], T], needed: int = 0) -> T:
        """fn(), with an SFTP error turned into one line; SFTP says only "Failure" for a full disk, so
        that case is checked with df."""
        try:
            return fn()
        except TransportError:
            raise
        except OSError as exc:
            if exc.errno is None and self.conn.disk_full(path, needed):
                raise TransportError(f"remote disk full at {path} on {self.host} (cannot {what} it)") from exc
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise TransportError(f"cannot {what} {path} on {self.host}: {reason}") from exc

    # -- the schedd ------------------------------------------------------------------------------------
    def submit(self, description: str) -> SubmittedCluster:
        """Write the description beside the event log it names (else into remote_dir), run
        `condor_submit -terse` there, and read the cluster from its output."""
        self.counts["submit"] += 1
        run_dir = self._submit_dir(description)
        path = f"{run_dir}/.submit-{secrets.token_hex(6)}.sub"
        self._file_op("create the directory", run_dir, lambda: self.conn.mkdirs(run_dir))
        self._file_op("write", path, lambda: self.conn.write_atomic(path, description.encode()),
                      needed=len(description))
        done = self._condor(["condor_submit", "-terse", path], cwd=run_dir, where=path)
        try:
            cluster = parse_submit_output(done.stdout)
        except SubmitOutputError as exc:
            raise TransportError(f"condor_submit on {self.host}: {exc}") from exc
        self._file_op("remove", path, lambda: self.conn.remove(path))
        return cluster

    def _submit_dir(self, description: str) -> str:
        m = _LOG_LINE.search(description)
        return str(PurePosixPath(m.group(1)).parent) if m else str(self.remote_root())

    def query(self, constraint: str, projection: Sequence[str]) -> list[dict[str, Any]]:
        """condor_q -json (empty output means an empty queue, not an error)."""
        self.counts["query"] += 1
        argv = ["condor_q", "-json", *_constraint_args(constraint), *_projection_args(projection)]
        return _ads(self._json(argv), projection)

    def history(self, constraint: str, projection: Sequence[str], match: int | None = None) -> list[dict[str, Any]]:
        """condor_history -json, newest first, at most `match`."""
        self.counts["history"] += 1
        argv = ["condor_history", "-json", *_constraint_args(constraint), *_projection_args(projection)]
        if match is not None:
            argv += ["-match", str(int(match))]
        return _ads(self._json(argv), projection)

    def act(self, action: Action, job_ids: Sequence[str], reason: str = "") -> None:
        """condor_hold / condor_release / condor_rm on the jobs; a job already gone (or already in that
        state) is not an error."""
        if not job_ids:
            return
        self.counts["act"] += 1
        tool = _ACT_TOOLS[action]
        argv = [tool, *(["-reason", reason] if reason else []), *job_ids]
        done = self._condor(argv, check=False)
        if done.returncode == 0:
            return
        lines = [ln.strip() for ln in (done.stdout + "\n" + done.stderr).splitlines() if ln.strip()]
        bad = [ln for ln in lines if not _ACT_OK.match(ln)]
        if bad or not lines:
            raise TransportError(f"{tool} {' '.join(job_ids)} on {self.host} failed (exit {done.returncode}): "
                                 f"{bad[0] if bad else 'no output'}")

    def remove_matching(self, constraint: str, reason: str = "") -> int:
        """condor_rm -totals -constraint C; the number of jobs it removed."""
        self.counts["act"] += 1
        argv = ["condor_rm", "-totals", *(["-reason", reason] if reason else []), "-constraint", constraint]
        done = self._condor(argv, check=False)
        m = _TOTALS.search(done.stdout + "\n" + done.stderr)
        if m is None:
            raise TransportError(f"condor_rm -constraint on {self.host} failed (exit {done.returncode}): "
                                 f"{_last_line(done.stderr or done.stdout)}")
        return int(m.group(1))

    def machines(self) -> set[str]:
        """The pool's execute machines (condor_status -af Machine, unique)."""
        self.counts["machines"] += 1
        done = self._condor(["condor_status", "-af", "Machine"])
        return {ln.strip() for ln in done.stdout.splitlines() if ln.strip() and ln.strip() != "undefined"}

    def close(self) -> None:
        self.conn.close()

    # -- running the tools -----------------------------------------------------------------------------
    def _json(self, argv: list[str]) -> list[dict[str, Any]]:
        done = self._condor(argv)
        text = done.stdout.strip()
        if not text:
            return []
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise TransportError(f"{argv[0]} on {self.host} printed something other than JSON: "
                                 f"{text[:120]!r}") from exc
        if not isinstance(data, list):
            raise TransportError(f"{argv[0]} on {self.host} printed JSON that is not a list of ads")
        return data

    def _condor(self, argv: list[str], *, cwd: str | None = None, check: bool = True,
                where: str = "") -> procs.Completed:
        """Run an HTCondor tool after remote_setup; its failures as one-line Transport errors."""
        try:
            done = self.conn.run(argv, setup=self.remote_setup, cwd=cwd, timeout=self.command_timeout_s,
                                 check=False)
        except procs.CommandError as exc:  # timed out
            raise TransportUnavailable(f"{argv[0]} on {self.host} did not finish within "
                                       f"{self.command_timeout_s:g} s (is the schedd answering?)") from exc
        if done.returncode == 0:
            return done
        error = self._tool_error(argv[0], done, where)
        if error is not None or check:
            raise error or TransportError(f"{argv[0]} on {self.host} failed (exit {done.returncode}): "
                                          f"{_last_line(done.stderr or done.stdout)}")
        return done

    def _tool_error(self, tool: str, done: procs.Completed, where: str) -> TransportError | None:
        """The failures that have a clear cause: tool not found, schedd not answering, disk full."""
        text = done.stderr + "\n" + done.stdout
        if done.returncode == 127 or re.search(rf"{re.escape(tool)}: (command )?not found", text):
            return TransportError(f"{tool} not found on {self.host}'s PATH; set backend.ssh.remote_setup to a "
                                  "script that puts HTCondor on the PATH (e.g. source /etc/profile.d/condor.sh)")
        if _NO_SPACE.search(text):
            return TransportError(f"remote disk full at {where or self.remote_root()} on {self.host} ({tool}: "
                                  f"{_first_match_line(text, _NO_SPACE)})")
        if _UNREACHABLE.search(text):
            return TransportUnavailable(f"the schedd on {self.host} did not answer {tool}: "
                                        f"{_first_match_line(text, _UNREACHABLE)}")
        return None


def _constraint_args(constraint: str) -> list[str]:
    c = constraint.strip()
    return ["-constraint", c] if c and c.lower() != "true" else []


def _projection_args(projection: Sequence[str]) -> list[str]:
    return ["-attributes", ",".join(projection)] if projection else []


def _ads(raw: list[dict[str, Any]], projection: Sequence[str]) -> list[dict[str, Any]]:
    """Each ad with exactly the projection's attributes (None when absent), as CondorTransport returns them;
    an unevaluated expression ("/Expr(...)/" in condor's JSON) becomes its text."""
    keys = list(projection)
    out = []
    for ad in raw:
        if not isinstance(ad, dict):
            continue
        ad = {k: _plain(v) for k, v in ad.items()}
        out.append({k: ad.get(k) for k in keys} if keys else ad)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, str):
        m = _EXPR.match(value)
        if m:
            return m.group(1)
    return value


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def _first_match_line(text: str, pattern: re.Pattern[str]) -> str:
    for ln in text.splitlines():
        if pattern.search(ln):
            return ln.strip()
    return _last_line(text)
