"""The HTCondor pool behind the tests marked `condor`: a fresh real pool per session wherever one can be started.

Which pool (`plan_pool`), in this order:

1. ``../shared/condor/pool/start.sh`` beside the checkout (or ``$GLO_TEST_POOL_SCRIPT``) exists and we are
   root: start a throw-away personal pool (HTCondor 25.14) in a new ``/tmp/glo-pool-*`` directory for
   the session, and stop it at the end.  This is what ``make test`` does here and in CI.
2. else ``condor_version`` on PATH answers: the user's own pool.
3. else the test is skipped, except when ``$CI`` is set: there a condor test that cannot run fails,
   because a skipped test would let CI pass without ever talking to HTCondor.

On the test pool every job runs as the unprivileged ``submituser`` (see the pool's README), so what a
job reads must be readable by that user: its job directory (`Pool.jobs_dir`), its interpreter
(`Pool.job_python`: a venv made from Debian's Python, because the test venv's interpreter lives in
root's 0700 home) and GLO's code (`Pool.code_dir`, copied afresh each session: jobs import it through
``PYTHONPATH``, `Pool.job_env`).  The pool is configured like execute nodes sharing the submit host's
file system: jobs see the host's /tmp and /var/tmp (no ``MOUNT_UNDER_SCRATCH``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
#: start.sh of the shared test pool, beside the checkout; $GLO_TEST_POOL_SCRIPT overrides it (tests point it
#: at a missing file to see what happens without one).
DEFAULT_POOL_SCRIPT = REPO.parent / "shared" / "condor" / "pool" / "start.sh"
#: Who runs every job on the test pool (the schedd maps root's submissions to this user).
JOB_USER = "submituser"
#: The interpreter job venvs are made from: Debian's, readable by everyone (python3.11-venv is in the image).
BASE_PYTHON = "/usr/bin/python3.11"
#: Built job venvs, one per package-version key, kept across sessions.  Not under /tmp or /var/tmp, which a
#: pool may give each job privately (MOUNT_UNDER_SCRATCH), hiding an interpreter kept there.
DEFAULT_JOBENV_ROOT = Path("/var/cache/glo-test-jobenv")
#: Where a fresh pool's directory goes: every directory above it must be searchable by others.
POOL_PARENT = Path("/tmp")
#: Lines for the end-of-session summary (pool used, how long the job venv took to build).
REPORT: list[str] = []


class PoolError(RuntimeError):
    """The test pool could not be started or prepared: always a failure, never a skip."""


# ---------------------------------------------------------------------------------------------------------
# Which pool


@dataclasses.dataclass(frozen=True)
class PoolPlan:
    """What the `condor_pool` fixture will do: "start" (script), "user" (a pool on PATH), "skip" or "fail"."""

    action: str
    reason: str
    script: Path | None = None


def plan_pool(script: Path, script_exists: bool, is_root: bool, user_pool_answers: bool, ci: bool) -> PoolPlan:
    """The decision alone, from the facts, so that it can be tested without starting anything."""
    if script_exists and is_root:
        return PoolPlan("start", f"a fresh test pool from {script}", script)
    if user_pool_answers:
        return PoolPlan("user", "the HTCondor pool that condor_version on PATH answers for")
    missing = (f"no HTCondor pool: {script} " + ("is missing" if not script_exists else "needs root")
               + " and condor_version on PATH does not answer")
    if ci:
        return PoolPlan("fail", f"{missing}; CI is set, so a condor test that cannot run is a failure "
                                "(put the shared pool beside the checkout, at ../shared/condor/pool)")
    return PoolPlan("skip", missing)


def plan_from_environment(environ: Mapping[str, str] | None = None) -> PoolPlan:
    """`plan_pool` with the facts of this process: $GLO_TEST_POOL_SCRIPT, uid, PATH, $CI."""
    environ = os.environ if environ is None else environ
    script = Path(environ.get("GLO_TEST_POOL_SCRIPT") or DEFAULT_POOL_SCRIPT)
    return plan_pool(script, script.is_file(), os.geteuid() == 0, pool_answers(environ.get("PATH", "")),
                     bool(environ.get("CI")))


def pool_answers(path: str | None = None) -> bool:
    """condor_version and condor_submit are on PATH and condor_version exits 0."""
    path = os.environ.get("PATH", "") if path is None else path
    exe = shutil.which("condor_version", path=path)
    if exe is None or shutil.which("condor_submit", path=path) is None:
        return False
    try:
        return subprocess.run([exe], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


# ---------------------------------------------------------------------------------------------------------
# The pool a session uses


@dataclasses.dataclass
class Pool:
    """A pool the tests submit to, and the places a job can read and write.

    dir: the test pool's directory (None for a user's own pool); env: the variables set for the session
    (CONDOR_CONFIG, PATH; empty for a user's pool); code_dir: GLO's packages for jobs (PYTHONPATH);
    jobs_root: where `jobs_dir` makes directories; job_user: their owner (None: whoever runs the tests);
    jobs_mode: their mode; jobenv_root: where job venvs are built (None: jobs use this interpreter).
    """

    dir: Path | None
    env: dict[str, str]
    code_dir: Path
    jobs_root: Path
    job_user: str | None = None
    jobs_mode: int = 0o755
    jobenv_root: Path | None = None

    def jobs_dir(self, name: str) -> Path:
        """A new, empty directory the job user can write: a job's initialdir (log, output, results)."""
        path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.jobs_root))
        path.chmod(self.jobs_mode)
        if self.job_user:
            shutil.chown(path, self.job_user, self.job_user)
        return path

    def job_python(self, tf: bool = False) -> str:
        """An interpreter the job user can run, with numpy and sympy (and TensorFlow when tf) importable."""
        if self.jobenv_root is None:
            return sys.executable
        return str(ensure_job_venv(self.jobenv_root, tf=tf, job_user=self.job_user))

    def job_env(self) -> dict[str, str]:
        """What a job's environment needs so that it imports GLO's code (worker, condor, tests.fake_worker)."""
        return {"PYTHONPATH": str(self.code_dir)}


@contextlib.contextmanager
def open_pool(plan: PoolPlan, keep_dir: Callable[[], bool] = lambda: False) -> Iterator[Pool]:
    """The session's pool for a "start" or "user" plan; a started pool is stopped (and its directory
    removed unless keep_dir() says so, e.g. after failures, for its logs) when the block ends."""
    if plan.action == "user":
        yield from _user_pool(plan)
        return
    if plan.action != "start" or plan.script is None:
        raise ValueError(f"open_pool cannot {plan.action}: {plan.reason}")
    pool_dir = Path(tempfile.mkdtemp(prefix="glo-pool-", dir=POOL_PARENT))
    pool_dir.chmod(0o755)
    _write_test_config(pool_dir)
    env = start_pool(plan.script, pool_dir)
    try:
        with _session_environment(env):
            yield Pool(dir=pool_dir, env=env, code_dir=copy_code(pool_dir / "code"), jobs_root=pool_dir / "jobs",
                       job_user=JOB_USER, jobenv_root=_jobenv_root())
    finally:
        stopped = stop_pool(plan.script, pool_dir)
        if stopped and not keep_dir():
            shutil.rmtree(pool_dir, ignore_errors=True)
        else:
            if stopped:  # what explains a failure stays (logs, job dirs); the 40 MB release goes
                shutil.rmtree(pool_dir / "htcondor", ignore_errors=True)
            REPORT.append(f"condor tests: pool directory kept: logs in {pool_dir}/local/log, jobs in {pool_dir}/jobs")


def _user_pool(plan: PoolPlan) -> Iterator[Pool]:
    """A pool already running (CONDOR_CONFIG and PATH are the user's).  Run by a user, its jobs run as
    that user and can use this interpreter.  Run by root, they run as another user: $GLO_TEST_JOB_USER
    owns the job dirs when set (else they are world-writable), and jobs get the world-readable job venv."""
    scratch = Path(tempfile.mkdtemp(prefix="glo-userpool-"))
    scratch.chmod(0o755)
    shared = os.geteuid() == 0
    job_user = (os.environ.get("GLO_TEST_JOB_USER") or None) if shared else None
    try:
        REPORT.append(f"condor tests: {plan.reason}")
        yield Pool(dir=None, env={}, code_dir=copy_code(scratch / "code"), jobs_root=_made(scratch / "jobs"),
                   job_user=job_user, jobs_mode=0o777 if shared and not job_user else 0o755,
                   jobenv_root=_jobenv_root() if shared else None)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _jobenv_root() -> Path:
    """Where job venvs are built: $GLO_TEST_JOBENV_DIR, else DEFAULT_JOBENV_ROOT."""
    return Path(os.environ.get("GLO_TEST_JOBENV_DIR") or DEFAULT_JOBENV_ROOT)


def _write_test_config(pool_dir: Path) -> None:
    """Jobs see the host's /tmp and /var/tmp, like execute nodes on a shared file system: the code and data
    the tests give them are under the pool's directory in /tmp, which a private /tmp would hide."""
    conf = pool_dir / "config.d"
    conf.mkdir(mode=0o755)
    # 4 slots' worth of CPUs on a 2-core machine: the fake worker mostly sleeps, and a pool where 4 jobs run
    # at once makes the queue-and-fault tests twice as fast without changing what they test.
    (conf / "50-glo-tests.conf").write_text("# written by GLO's tests/condor_pool.py\nMOUNT_UNDER_SCRATCH =\n"
                                            "NUM_CPUS = 4\n")


def start_pool(script: Path, pool_dir: Path) -> dict[str, str]:
    """Run start.sh on pool_dir; the variables its two `export` lines set, $PATH expanded.  The pool's
    logs are in pool_dir/local/log."""
    t0 = time.monotonic()
    done = subprocess.run(["bash", str(script), str(pool_dir)], capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        raise PoolError(f"{script} {pool_dir} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    env = parse_exports(done.stdout, os.environ.get("PATH", ""))
    if set(env) != {"CONDOR_CONFIG", "PATH"}:
        raise PoolError(f"{script} printed {done.stdout!r}, not the CONDOR_CONFIG and PATH exports")
    REPORT.append(f"condor tests: fresh pool in {pool_dir} ({script}), started in {time.monotonic() - t0:.1f} s")
    return env


def parse_exports(text: str, path: str) -> dict[str, str]:
    """`export K=V` / `export K="V"` lines -> {K: V}, with $PATH in V replaced by path."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("export "):
            key, value = line.removeprefix("export ").split("=", 1)
            env[key] = value.strip('"').replace("$PATH", path)
    return env


def stop_pool(script: Path, pool_dir: Path) -> bool:
    """stop.sh (beside start.sh) on pool_dir; whether it reports the pool gone."""
    done = subprocess.run(["bash", str(script.with_name("stop.sh")), str(pool_dir)], capture_output=True,
                          text=True, timeout=120)
    if done.returncode != 0:
        REPORT.append(f"condor tests: stopping the pool in {pool_dir} failed: {done.stderr[-1000:]}")
    return done.returncode == 0


@contextlib.contextmanager
def _session_environment(env: Mapping[str, str]) -> Iterator[None]:
    """os.environ holds env while the block runs (the `glo` subprocesses tests start inherit it), and the
    in-process htcondor2 bindings read the same config; both are put back afterwards."""
    import htcondor2

    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    htcondor2.reload_config()
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if os.environ.get("CONDOR_CONFIG"):
            htcondor2.reload_config()


def _made(path: Path) -> Path:
    path.mkdir(mode=0o755, parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------------------------------------------------
# What jobs run: GLO's code and an interpreter the job user can start


def copy_code(dest: Path) -> Path:
    """A fresh copy of the packages jobs import (worker, condor, and tests.fake_worker as package tests),
    readable by everyone; copied once per session because the working tree changes between sessions."""
    shutil.rmtree(dest, ignore_errors=True)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("worker", "condor"):
        shutil.copytree(REPO / package, dest / package, ignore=skip)
    (dest / "tests").mkdir(parents=True)
    for name in ("__init__.py", "fake_worker.py"):
        shutil.copy2(REPO / "tests" / name, dest / "tests" / name)
    open_up(dest)
    return dest


def open_up(root: Path) -> None:
    """Everyone may read everything under root and enter every directory (the job user is not the owner)."""
    for top, dirs, files in os.walk(root):
        for name in dirs:
            if not Path(top, name).is_symlink():
                _add_mode(Path(top, name), 0o755)
        for name in files:
            path = Path(top, name)
            if not path.is_symlink():
                _add_mode(path, 0o555 if os.access(path, os.X_OK) else 0o444)
    _add_mode(root, 0o755)


def _add_mode(path: Path, bits: int) -> None:
    mode = path.stat().st_mode & 0o7777
    if mode & bits != bits:
        path.chmod(mode | bits)


def job_packages(tf: bool) -> dict[str, str]:
    """The distributions a job venv gets, at the test venv's versions: numpy, sympy (and TensorFlow)."""
    names = ["numpy", "sympy"]
    if tf:
        names.append(_tensorflow_dist() or "tensorflow-cpu")
    return {name: importlib.metadata.version(name) for name in names}


def _tensorflow_dist() -> str | None:
    """tensorflow-cpu (the [worker-cpu] extra) or tensorflow ([worker]), whichever the test venv has."""
    for name in ("tensorflow-cpu", "tensorflow"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            importlib.metadata.version(name)
            return name
    return None


def jobenv_key() -> str:
    """Names one job venv: the base interpreter and the versions it holds.  A new numpy, sympy or
    TensorFlow in the test venv means a new venv (old ones stay, unused, in the cache)."""
    tf = _tensorflow_dist()
    versions = {"python": BASE_PYTHON, **job_packages(tf=False),
                **({tf: importlib.metadata.version(tf)} if tf else {})}
    return hashlib.sha256(json.dumps(versions, sort_keys=True).encode()).hexdigest()[:12]


def ensure_job_venv(root: Path, tf: bool, job_user: str | None) -> Path:
    """The interpreter of the job venv root/<key>, built or extended if needed, under a file lock so that
    concurrent sessions build it once.  A layer is complete only when its marker file exists (written
    last), so a build killed half-way is redone, not used."""
    if tf and _tensorflow_dist() is None:
        pytest.skip("TensorFlow is not installed in the test venv")
    _made(root).chmod(0o755)
    key = jobenv_key()
    venv = root / key
    with _file_lock(root / f"{key}.lock"):
        if not (venv / ".glo-base-complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            _timed_layer(venv, "numpy, sympy", job_packages(tf=False), job_user, create=True)
            (venv / ".glo-base-complete").write_text(json.dumps(job_packages(tf=False)) + "\n")
        if tf and not (venv / ".glo-tf-complete").exists():
            tf_only = {k: v for k, v in job_packages(tf=True).items() if k not in ("numpy", "sympy")}
            _timed_layer(venv, "+ " + ", ".join(tf_only), tf_only, job_user, create=False)
            (venv / ".glo-tf-complete").write_text(json.dumps(tf_only) + "\n")
    return venv / "bin" / "python"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _timed_layer(venv: Path, what: str, packages: Mapping[str, str], job_user: str | None, create: bool) -> None:
    """Install one layer into the job venv, check that the job user can import it, and report the time."""
    t0 = time.monotonic()
    if create:
        _run([BASE_PYTHON, "-m", "venv", str(venv)], f"making the job venv {venv}")
    _pip_install(venv, packages)
    open_up(venv)
    _check_imports(venv / "bin" / "python", packages, job_user)
    REPORT.append(f"condor tests: job venv {venv}: built {what} in {time.monotonic() - t0:.1f} s")


def _pip_install(venv: Path, packages: Mapping[str, str]) -> None:
    """The named versions, with every other distribution held to the test venv's version (constraints),
    so that jobs import what the tests import."""
    constraints = venv / "glo-test-constraints.txt"
    pins: dict[str, str] = {}
    for dist in importlib.metadata.distributions():  # the first one found is the one imported
        if dist.metadata["Name"] and dist.version:
            pins.setdefault(re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower(), dist.version)  # PEP 503
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in sorted(pins.items())))
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-input",
          "-c", str(constraints), *(f"{name}=={version}" for name, version in packages.items())],
         f"installing {', '.join(packages)} into {venv}")


def _check_imports(python: Path, packages: Mapping[str, str], job_user: str | None) -> None:
    """The job user starts the interpreter and imports the packages: a job would fail the same way."""
    modules = ",".join("tensorflow" if name.startswith("tensorflow") else name for name in packages)
    cmd = [str(python), "-c", f"import {modules}"]
    if job_user and os.geteuid() == 0:
        cmd = ["setpriv", f"--reuid={job_user}", f"--regid={job_user}", "--clear-groups", *cmd]
    _run(cmd, f"importing {modules} as {job_user or 'this user'}", cwd="/")


def _run(cmd: list[str], what: str, cwd: str | None = None) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=1800)
    if done.returncode != 0:
        raise PoolError(f"{what} failed (exit {done.returncode}): {' '.join(cmd)}\n{done.stderr[-3000:]}")


#: Deprecated: request the `condor_pool` fixture.  Kept so that a test marked `@skip_without_pool` still
#: gets the session's pool (and is skipped, or fails in CI, exactly when the fixture says so).
skip_without_pool = pytest.mark.usefixtures("condor_pool")
