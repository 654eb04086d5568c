"""Submit descriptions for GLO worker jobs, and what condor_submit says back.

A GLO job runs the worker in HTCondor's scratch directory: `spec.json` goes in, `result.json`
comes out (file transfer, no shared file system needed), the job's event log, stdout and
stderr stay in the job's work directory on the submit side.  The text rendered here is what
`condor_submit` reads and what the Python bindings' `htcondor2.Submit` takes, so one renderer
serves the bindings, SSH and a user who wants to submit a job by hand.

Quoting follows condor_submit's "new" syntax (as dask-jobqueue does): the whole value in double
quotes, `"` doubled, an item holding white space or `'` wrapped in single quotes with `'`
doubled.  Values are checked for newlines so that nothing can smuggle in another command
(a `queue`, say).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

#: Names of the files of one job, relative to its work directory (condor_submit's initialdir).
SPEC_FILE = "spec.json"
RESULT_FILE = "result.json"
LOG_FILE = "job.log"
STDOUT_FILE = "stdout.txt"
STDERR_FILE = "stderr.txt"
#: The one event log every job of a run writes (in the run directory, beside the job directories).
EVENT_LOG_FILE = "events.log"

_COMMAND_NAME = re.compile(r"^\+?[A-Za-z_][A-Za-z0-9_.]*$")
_BATCH_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SIZE = re.compile(r"^\d+(\.\d+)?\s*([KMGT]i?B?)?$", re.IGNORECASE)
#: Commands GLO writes itself; `extra` may not override them (they define the job's contract).
_RESERVED = frozenset({
    "universe", "executable", "arguments", "transfer_executable", "should_transfer_files",
    "when_to_transfer_output", "transfer_input_files", "transfer_output_files", "log", "output", "error",
    "queue", "initialdir", "container_image",
})


class SubmitDescriptionError(ValueError):
    """A setting that cannot go into a submit description (names the setting)."""


class SubmitOutputError(RuntimeError):
    """condor_submit's output did not say which cluster the job went to."""


@dataclass(frozen=True)
class CondorJobSettings:
    """What each GLO job asks of the pool (the cluster backends' [backend] settings)."""

    request_gpus: int = 1
    request_cpus: int = 1
    request_memory: str = "8GB"
    request_disk: str = "4GB"
    requirements: str = ""  # a ClassAd expression, passed through as written
    environment: Mapping[str, str] = field(default_factory=dict)  # e.g. GLO_DATA_DIR on the execute nodes
    max_runtime_s: int | None = None  # allowed_execute_duration: the pool puts an overlong job on hold
    extra: Mapping[str, str] = field(default_factory=dict)  # more submit commands, e.g. accounting_group
    container_image: str = ""  # run the worker in this image (container universe) instead of on the node

    def check(self) -> None:
        for name, value in (("request_gpus", self.request_gpus), ("request_cpus", self.request_cpus)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise SubmitDescriptionError(f"{name} must be a whole number >= 0, got {value!r}")
        for name, value in (("request_memory", self.request_memory), ("request_disk", self.request_disk)):
            if not _SIZE.match(str(value).strip()):
                raise SubmitDescriptionError(f"{name} must be a size like 8GB or 4096MB, got {value!r}")
        if self.max_runtime_s is not None and (not isinstance(self.max_runtime_s, int) or self.max_runtime_s <= 0):
            raise SubmitDescriptionError(f"max_runtime_s must be a positive whole number, got {self.max_runtime_s!r}")
        _one_line("requirements", self.requirements)
        _one_line("container_image", self.container_image)
        if any(c.isspace() for c in self.container_image):
            raise SubmitDescriptionError(f"container_image may not contain white space: {self.container_image!r}")
        for key, value in self.environment.items():
            if not _ENV_NAME.match(key):
                raise SubmitDescriptionError(f"environment: {key!r} is not a variable name")
            _one_line(f"environment.{key}", value)
        for key, value in self.extra.items():
            if not _COMMAND_NAME.match(key):
                raise SubmitDescriptionError(f"extra: {key!r} is not a submit command name")
            if key.lower() in _RESERVED:
                raise SubmitDescriptionError(f"extra: {key!r} is set by GLO itself and cannot be overridden")
            _one_line(f"extra.{key}", value)


def _one_line(name: str, value: str) -> None:
    if not isinstance(value, str):
        raise SubmitDescriptionError(f"{name} must be a string, got {type(value).__name__}")
    if "\n" in value or "\r" in value:
        raise SubmitDescriptionError(f"{name} must be a single line (a newline would start another command)")


def quote_item(item: str) -> str:
    """One argument (or environment value) in condor_submit's new syntax, without the outer quotes."""
    _one_line("argument", item)
    quoted = item.replace('"', '""')
    if not item or any(c.isspace() for c in item) or "'" in item:
        quoted = "'" + quoted.replace("'", "''") + "'"
    return quoted


def quote_arguments(args: Sequence[str]) -> str:
    """`arguments = <this>`: every item survives as one argv entry, spaces and quotes included."""
    return '"' + " ".join(quote_item(a) for a in args) + '"'


def quote_environment(env: Mapping[str, str]) -> str:
    """`environment = <this>`: NAME=value pairs in the new syntax, sorted for a stable text."""
    return '"' + " ".join(f"{k}={quote_item(v)}" for k, v in sorted(env.items())) + '"'


def classad_string(value: str) -> str:
    """A ClassAd string literal (custom job attributes such as +GloRunId)."""
    _one_line("attribute value", value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_submit(worker_command: Sequence[str], settings: CondorJobSettings, *,
                  attributes: Mapping[str, str | int] | None = None, batch_name: str = "") -> str:
    """The submit description of one GLO job, relative to the job's work directory.

    `worker_command` is the worker as the execute node starts it, e.g.
    ("/opt/glo/venv/bin/python", "-m", "worker"): its first item is the executable (not
    transferred: it lives on the node), the spec and result file names are appended.
    `attributes` become custom job ClassAd attributes (`+GloRunId = "..."`) that condor_q and
    condor_history can filter on.
    """
    lines = _job_lines(worker_command, settings, attributes=attributes, batch_name=batch_name)
    return "\n".join([*lines, "queue"]) + "\n"


#: The per-job variables of a batch: `render_batch` queues one job per (GloJob, GloAttempt) item.
BATCH_VARS = ("GloJob", "GloAttempt")


def render_batch(worker_command: Sequence[str], settings: CondorJobSettings, *, run_dir: str, run_id: str,
                 items: Sequence[tuple[int, int]], extra_requirements: str = "", batch_name: str = "") -> str:
    """One cluster of GLO jobs: a job per (job id, attempt) in `items`, each in its own work directory
    `<run_dir>/job-<id>/a<attempt>` (initialdir), all writing the run's one event log `<run_dir>/events.log`,
    each tagged `+GloRunId`, `+GloJobId`, `+GloAttempt` so that condor_q / condor_history find GLO's jobs.

    The items go inline into `queue GloJob, GloAttempt from ( ... )`, so the text alone is the whole
    submission: the bindings (htcondor2.Submit) and `condor_submit` over SSH read the same description.
    `extra_requirements` is and-ed to the configured requirements (e.g. nodes to avoid)."""
    if not items:
        raise SubmitDescriptionError("a batch needs at least one job")
    for job_id, attempt in items:
        if not (isinstance(job_id, int) and isinstance(attempt, int) and job_id >= 0 and attempt >= 0):
            raise SubmitDescriptionError(f"batch items must be (job id, attempt) whole numbers, got {(job_id, attempt)!r}")
    _one_line("run_dir", run_dir)
    if not run_dir.startswith("/") or any(c.isspace() or c in "$\"'" for c in run_dir):
        raise SubmitDescriptionError(f"the run directory must be an absolute path without white space, quotes "
                                     f"or $, got {run_dir!r}")
    _one_line("extra_requirements", extra_requirements)
    base = settings.requirements.strip()
    requirements = " && ".join(f"({r})" for r in (base, extra_requirements.strip()) if r)
    settings = replace(settings, requirements=requirements)
    lines = _job_lines(worker_command, settings, batch_name=batch_name, attributes={"GloRunId": run_id},
                       initialdir=f"{run_dir}/job-$(GloJob)/a$(GloAttempt)", log=f"{run_dir}/{EVENT_LOG_FILE}")
    lines += ["+GloJobId = $(GloJob)", "+GloAttempt = $(GloAttempt)", f"queue {', '.join(BATCH_VARS)} from ("]
    lines += [f"{job_id}, {attempt}" for job_id, attempt in items]
    lines.append(")")
    return "\n".join(lines) + "\n"


def _job_lines(worker_command: Sequence[str], settings: CondorJobSettings, *,
               attributes: Mapping[str, str | int] | None = None, batch_name: str = "",
               initialdir: str | None = None, log: str = LOG_FILE) -> list[str]:
    """Every command of a GLO job's description but the `queue` statement."""
    if not worker_command:
        raise SubmitDescriptionError("worker_command is empty")
    settings.check()
    executable, *args = worker_command
    _one_line("worker_command", executable)
    if any(c.isspace() for c in executable):
        raise SubmitDescriptionError(f"the executable path may not contain white space: {executable!r}")
    universe = "container" if settings.container_image else "vanilla"
    lines = [
        "# GLO worker job: spec.json in, result.json out (rendered by condor/submit.py)",
        f"universe                = {universe}",
    ]
    if settings.container_image:
        lines.append(f"container_image         = {settings.container_image}")
    lines += [
        f"executable              = {executable}",
        "transfer_executable     = false",
        f"arguments               = {quote_arguments([*args, SPEC_FILE, '--out', RESULT_FILE])}",
    ]
    if initialdir is not None:
        lines.append(f"initialdir              = {initialdir}")
    lines += [
        "should_transfer_files   = YES",
        "when_to_transfer_output = ON_EXIT",
        f"transfer_input_files    = {SPEC_FILE}",
        f"transfer_output_files   = {RESULT_FILE}",
        f"log                     = {log}",
        f"output                  = {STDOUT_FILE}",
        f"error                   = {STDERR_FILE}",
        f"request_cpus            = {settings.request_cpus}",
        f"request_memory          = {settings.request_memory}",
        f"request_disk            = {settings.request_disk}",
        f"request_gpus            = {settings.request_gpus}",
    ]
    env = {"PYTHONUNBUFFERED": "1", **settings.environment}
    lines.append(f"environment             = {quote_environment(env)}")
    if settings.requirements:
        lines.append(f"requirements            = {settings.requirements}")
    if settings.max_runtime_s is not None:
        lines.append(f"allowed_execute_duration = {settings.max_runtime_s}")
    if batch_name:
        if not _BATCH_NAME.match(batch_name):
            raise SubmitDescriptionError(f"batch_name may hold letters, digits and _ . - only, got {batch_name!r}")
        lines.append(f"batch_name              = {batch_name}")
    for key, value in (attributes or {}).items():
        if not _COMMAND_NAME.match("+" + key) or key.startswith("+"):
            raise SubmitDescriptionError(f"attribute name {key!r} is not a ClassAd attribute name")
        literal = str(value) if isinstance(value, int) and not isinstance(value, bool) else classad_string(str(value))
        lines.append(f"+{key} = {literal}")
    for key, value in settings.extra.items():
        lines.append(f"{key} = {value}")
    return lines


@dataclass(frozen=True)
class SubmittedCluster:
    """Which jobs condor_submit created: cluster and the proc range."""

    cluster: int
    first_proc: int
    last_proc: int

    @property
    def job_ids(self) -> list[str]:
        return [f"{self.cluster}.{p}" for p in range(self.first_proc, self.last_proc + 1)]


_TERSE = re.compile(r"^\s*(\d+)\.(\d+)\s*-\s*(\d+)\.(\d+)\s*$", re.MULTILINE)
_PLAIN = re.compile(r"(\d+)\s+job\(s\)\s+submitted\s+to\s+cluster\s+(\d+)\.")


def parse_submit_output(stdout: str) -> SubmittedCluster:
    """Read `condor_submit -terse` ("5.0 - 5.5") or plain ("6 job(s) submitted to cluster 5.") output."""
    m = _TERSE.search(stdout)
    if m:
        c1, p1, c2, p2 = (int(g) for g in m.groups())
        if c1 != c2 or p2 < p1:
            raise SubmitOutputError(f"condor_submit reported an odd range {m.group(0).strip()!r}")
        return SubmittedCluster(c1, p1, p2)
    m = _PLAIN.search(stdout)
    if m:
        count, cluster = int(m.group(1)), int(m.group(2))
        return SubmittedCluster(cluster, 0, count - 1)
    shown = stdout.strip()[:200] or "(nothing)"
    raise SubmitOutputError(f"condor_submit did not report a cluster; its output was: {shown}")
