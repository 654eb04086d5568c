"""`glo run` configuration: TOML (tomllib) -> frozen dataclasses, every key checked.

Sections: [run] name/seed, [task] the training budget, [search] the search helper's GA/CMA-ES
config ([search.ga], [search.cma]), [backend] how jobs run.  Every paper parameter has its
default; an unknown key or a bad value raises ConfigError naming the dotted key.  The effective
config (`GloConfig.to_dict()`, all defaults filled in) is stored with the run, and a resumed run
is rebuilt from that snapshot, never from the file again.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from orchestrator.errors import ConfigError
from orchestrator.search.calibration import LOSS_SCALE_NONE, LOSS_SCALES
from orchestrator.search.config import SearchConfig
from orchestrator.search.evaluation import DEFAULT_SELECTION_SEEDS, EvaluateConfig, same_rate
from worker.lossexpr.reduction import CLASS_REDUCTIONS
from worker.spec import (
    CUSTOM_FIELDS,
    CUSTOM_TASK,
    DEFAULT_FUSE,
    EPSILON_GRADIENT_DEFAULT,
    EPSILON_GRADIENT_LEGACY,
    EPSILON_GRADIENTS,
    PREPROCESSES,
    TASKS,
    CandidateSpec,
    WorkerSpec,
    model_name_problem,
    sha256_problem,
)


@dataclass(frozen=True)
class RunConfig:
    name: str = ""
    seed: int = 0  # the search's seed (breeding, CMA-ES)


@dataclass(frozen=True)
class TaskConfig:
    """What one candidate's training is: together with the seed policy, the cache key's budget."""

    name: str = "mnist"
    steps: int = 2000
    batch_size: int = 100
    learning_rate: float = 0.01
    validation_size: int = 5000
    train_subset: int | None = None
    data_path: str | None = None  # where the worker looks first (not part of the cache key)
    epsilon: float = 1e-7
    seed: int = 0  # training seed: every candidate trains from the same initial weights
    # "mean": L = -(1/n) Σ_classes f, the paper's formula; "sum": L = -Σ_classes f, the scale at
    # which x*log(y) is Keras' cross-entropy and at which the paper's accuracies are reproduced.
    class_reduction: str = "mean"
    # what the prediction clip passes back below epsilon (worker.spec.EPSILON_GRADIENTS)
    epsilon_gradient: str = EPSILON_GRADIENT_DEFAULT
    # "calibrated": every loss trains at cross-entropy's gradient scale at the start of training, so that a
    # search cannot win by a larger gradient alone (orchestrator/search/calibration.py); "none": as it is
    loss_scale: str = LOSS_SCALE_NONE
    # What `glo evaluate` measures besides the fitness; a search leaves them unset.
    train_fraction: float | None = None  # train on this fraction of the training images (the paper's Fig. 4)
    test_accuracy: bool = False  # also test accuracy (and its curve, and the output-probability histogram)
    curve_interval: int | None = None  # accuracy every this many steps
    # A lab mixing GPU models can keep their fitnesses apart in the cache: name the device class the run's
    # jobs train on (and pin it with backend.condor.requirements); it becomes part of every cache key.
    device_class: str | None = None
    # task.name = "custom" (issue 20): the user's model, by name, and how their images are preprocessed
    model: str | None = None  # "package.module:function", (input_shape, num_classes) -> keras.Model
    preprocess: str | None = None  # worker.spec.PREPROCESSES; "scale" when left out
    # Filled in when a custom run's config is first read (orchestrator/custom_task.py), stored with the run,
    # and part of every cache key: the data file's sha256 and the built model's architecture fingerprint.
    data_sha256: str | None = None
    model_fingerprint: str | None = None

    def budget(self) -> dict[str, Any]:
        """The fields that change a measured fitness or what is measured (cache key material).  The ones a
        search leaves unset are left out, so every key made before they existed stays the same."""
        out: dict[str, Any] = {
            "steps": self.steps, "batch_size": self.batch_size, "learning_rate": self.learning_rate,
            "validation_size": self.validation_size, "train_subset": self.train_subset,
            "epsilon": self.epsilon, "class_reduction": self.class_reduction}
        if self.epsilon_gradient != EPSILON_GRADIENT_LEGACY:  # every key made under the old clip stays its own
            out["epsilon_gradient"] = self.epsilon_gradient
        if self.loss_scale != LOSS_SCALE_NONE:  # every key made before the setting existed stays the same
            out["loss_scale"] = self.loss_scale
        if self.train_fraction is not None:
            out["train_fraction"] = self.train_fraction
        if self.test_accuracy:
            out["test_accuracy"] = True
        if self.curve_interval is not None:
            out["curve_interval"] = self.curve_interval
        if self.device_class:
            out["device_class"] = self.device_class
        for key in CUSTOM_FIELDS:  # a custom task's model and identity
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    def seed_policy(self) -> str:
        return f"fixed:{self.seed}"

    def worker_spec(self, candidates: Sequence[CandidateSpec], *, test_accuracy: bool = False,
                    curve_interval: int | None = None) -> WorkerSpec:
        """The worker's spec training `candidates` with this task's settings (one mapping for every caller)."""
        return WorkerSpec(
            task=self.name, candidates=tuple(candidates), steps=self.steps, batch_size=self.batch_size,
            learning_rate=self.learning_rate, seed=self.seed, validation_size=self.validation_size,
            train_subset=self.train_subset, data_path=self.data_path, test_accuracy=test_accuracy or self.test_accuracy,
            curve_interval=curve_interval or self.curve_interval, epsilon=self.epsilon,
            class_reduction=self.class_reduction, epsilon_gradient=self.epsilon_gradient,
            train_fraction=self.train_fraction, model=self.model, preprocess=self.preprocess,
            data_sha256=self.data_sha256, model_fingerprint=self.model_fingerprint,
        )


#: HTCondor hold codes (HoldReasonCode) that a release may cure: the file transfer or the execute node
#: failed, not the job.  6 process not created, 7/11/18 transfer handshakes, 12/13 output/input transfer,
#: 21 held by the startd, 22 user log, 32 out of resources, 34 checkpoint.  A missing result file
#: (12 with subcode 2, errno ENOENT) is the job's own failure and never released.
TRANSIENT_HOLD_CODES = (6, 7, 11, 12, 13, 18, 21, 22, 32, 34)


@dataclass(frozen=True)
class CondorConfig:
    """[backend.condor]: what each job asks of the pool and the hold/retry policy (kinds condor and ssh)."""

    request_gpus: int = 1
    request_cpus: int = 1
    request_memory: str = "8GB"
    request_disk: str = "4GB"
    requirements: str = ""  # a ClassAd expression, and-ed to GLO's own
    environment: dict[str, str] = field(default_factory=dict)  # on the execute nodes, e.g. GLO_DATA_DIR
    submit_extra: dict[str, str] = field(default_factory=dict)  # more submit commands (accounting_group ...)
    container_image: str = ""  # run the worker in this image (container universe)
    max_runtime_s: int | None = None  # allowed_execute_duration: an overlong job is held, then resubmitted
    check_gpu: bool = True  # request_gpus > 0 and no GPU visible: the worker exits "bad node"
    max_releases: int = 2  # releases of a transiently held job before it is removed and resubmitted
    release_hold_codes: tuple[int, ...] = TRANSIENT_HOLD_CODES
    avoid_bad_nodes: bool = True  # resubmit a bad-node failure with a requirement excluding that machine
    batch_size: int = 100  # jobs per submitted cluster
    poll_interval_s: float = 2.0  # how often the run's event log is read
    reconcile_interval_s: float = 60.0  # schedd queue/history queries: at most one per this many seconds


@dataclass(frozen=True)
class SshConfig:
    """[backend.ssh]: the submit host the `ssh` backend drives (its own settings come from ~/.ssh/config too)."""

    host: str = ""  # a Host alias of ~/.ssh/config or a host name
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    known_hosts: str | None = None  # default ~/.ssh/known_hosts
    host_key_policy: str = "reject"  # reject | accept-new (a changed key is always refused)
    remote_dir: str = "glo-runs"  # on the submit host; relative to the login directory unless absolute
    remote_setup: str = ""  # shell run before each command, e.g. "source /etc/profile.d/condor.sh"
    keepalive_s: int = 30
    connect_timeout_s: float = 20.0
    ssh_config: str = "~/.ssh/config"  # where Host aliases are looked up ("" for none)


@dataclass(frozen=True)
class BackendConfig:
    kind: str = "local"
    max_in_flight: int = 2  # jobs at once (local: worker processes; condor/ssh: jobs in the queue, default 500)
    candidates_per_job: int = 1  # M candidates per worker process: amortizes TensorFlow start-up
    # K candidates trained at once as one fused model (worker/fused.py); None ("auto" in TOML): the worker's
    # measured default for its device.  Jobs carry a multiple of `fuse_width` candidates when they can.
    fuse: int | None = None
    timeout_s: float = 3600.0  # per job attempt
    max_attempts: int = 3  # submissions of a candidate before it is recorded as failed
    # Backup copies (speculative execution): while the search has nothing to hand out and slots are free (a
    # generation's barrier, a spent budget's drain), a job running longer than `backup_after` x the median
    # duration of this run's finished jobs gets up to `backup_copies` copies on the free slots; the first to
    # finish wins and the others are removed.  Off (0) by default: a copy takes a pool slot that other users
    # could have had, and it helps only where a job is slow because of where it ran (queue, node, eviction).
    backup_copies: int = 0
    backup_after: float = 1.5
    worker_command: tuple[str, ...] = ("{python}", "-m", "worker")  # {python}: this interpreter
    work_dir: str | None = None  # default: <db file>.work/ next to the database
    condor: CondorConfig = field(default_factory=CondorConfig)
    ssh: SshConfig = field(default_factory=SshConfig)

    @property
    def cluster(self) -> bool:
        """Jobs go to an HTCondor pool (kind condor or ssh)."""
        return self.kind in CLUSTER_BACKENDS

    @property
    def fuse_width(self) -> int:
        """The K that jobs are sized to: `fuse` when set; under "auto" the default of the device the jobs will
        run on -- a GPU's for a pool whose jobs request GPUs, else a CPU's -- so that a GPU pool packs whole
        fused groups into each job without `candidates_per_job` set by hand."""
        if self.fuse is not None:
            return self.fuse
        on_gpu = self.cluster and self.condor.request_gpus > 0
        return DEFAULT_FUSE["GPU" if on_gpu else "CPU"]


@dataclass(frozen=True)
class GloConfig:
    run: RunConfig = field(default_factory=RunConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    evaluate: EvaluateConfig | None = None  # set: the run is a `glo evaluate` grid, not a search

    @property
    def kind(self) -> str:
        return "search" if self.evaluate is None else "evaluation"

    def to_dict(self) -> dict[str, Any]:
        search = self.search.to_dict()
        search.pop("seed", None)  # it is run.seed
        out = {"run": asdict(self.run), "task": asdict(self.task), "search": search,
               "backend": asdict(self.backend)}
        if self.task.loss_scale == LOSS_SCALE_NONE:  # a run's stored config (and digest) as before the setting
            del out["task"]["loss_scale"]
        if self.evaluate is not None:
            out["evaluate"] = self.evaluate.to_dict()
        out["backend"]["worker_command"] = list(self.backend.worker_command)
        out["backend"]["condor"]["release_hold_codes"] = list(self.backend.condor.release_hold_codes)
        return out

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


CLUSTER_BACKENDS = ("condor", "ssh")
BACKENDS = ("local", *CLUSTER_BACKENDS)


#: The paper's training settings per task; a [task] key left out takes these, not MNIST's.
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "mnist": {"steps": 2000, "batch_size": 100, "learning_rate": 0.01},
    "fashion_mnist": {"steps": 2000, "batch_size": 100, "learning_rate": 0.01},  # MNIST's: same network
    # SGD, batch 1024, learning rate 0.05 (decayed x0.1 every 350 epochs inside the worker).
    "cifar10": {"steps": 2000, "batch_size": 1024, "learning_rate": 0.05},
    "cifar100": {"steps": 2000, "batch_size": 1024, "learning_rate": 0.05},  # CIFAR-10's: same network
    CUSTOM_TASK: {"steps": 2000, "batch_size": 100, "learning_rate": 0.01},  # MNIST's: plain SGD, no decay
}


def _check_keys(section: str, data: Any, cls: type) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{section}: must be a table, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    for key in data:
        if key not in known:
            raise ConfigError(f"{section}.{key}: unknown key (known: {', '.join(sorted(known))})")
    return dict(data)


def _int(key: str, v: Any, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ConfigError(f"{key}: must be an integer >= {minimum}, got {v!r}")
    return v


def _real(key: str, v: Any, *, lo: float = 0.0, hi: float = math.inf) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo < v < hi:
        raise ConfigError(f"{key}: must be a number in ({lo}, {hi}), got {v!r}")
    return float(v)


def _str(key: str, v: Any, *, optional: bool = False) -> str | None:
    if v is None and optional:
        return None
    if not isinstance(v, str):
        raise ConfigError(f"{key}: must be a string, got {v!r}")
    return v


def _choice(key: str, v: Any, choices: tuple[str, ...]) -> str:
    if v not in choices:
        raise ConfigError(f"{key}: must be one of {', '.join(choices)}, got {v!r}")
    return v


def _custom_fields(name: str, t: Mapping[str, Any]) -> dict[str, Any]:
    """[task]'s model/preprocess/data_sha256/model_fingerprint, checked: a custom task needs data_path and
    model; the paper's tasks take none of them."""
    if name != CUSTOM_TASK:
        given = [k for k in CUSTOM_FIELDS if t.get(k) is not None]
        if given:
            raise ConfigError(f"task.{given[0]}: only for task.name = \"custom\" (a model and data of your own), "
                              f"not {name!r}")
        return {}
    if not t.get("data_path"):
        raise ConfigError('task.data_path: task.name = "custom" needs the .npz file of your data set '
                          "(x_train, y_train, x_test, y_test)")
    if t.get("model") is None:
        raise ConfigError('task.model: task.name = "custom" needs your model, as "package.module:function"')
    if (problem := model_name_problem(t["model"])) is not None:
        raise ConfigError(f"task.model: {problem}")
    out = {"model": t["model"], "preprocess": _choice("task.preprocess", t.get("preprocess", "scale"), PREPROCESSES)}
    for key in ("data_sha256", "model_fingerprint"):
        value = t.get(key)
        if value is not None and (problem := sha256_problem(value)) is not None:
            raise ConfigError(f"task.{key}: {problem}")
        out[key] = value
    return out


def stored_task(task: Mapping[str, Any]) -> dict[str, Any]:
    """A stored run's [task] (every default filled in as it was then), with each setting added since at the
    value the run trained with before it existed, not today's default: `epsilon_gradient` was "zero"
    (TensorFlow's clip) before it was a setting."""
    return {"epsilon_gradient": EPSILON_GRADIENT_LEGACY, **task}


def from_stored(data: Mapping[str, Any]) -> GloConfig:
    """A stored run's config (runs.config_json), read so that a resumed run goes on exactly as it began
    (`stored_task`, `search.config.stored_search`)."""
    from orchestrator.search.config import stored_search

    task = data.get("task") if isinstance(data, Mapping) else None
    if isinstance(task, Mapping):
        data = {**data, "task": stored_task(task)}
    search = data.get("search") if isinstance(data, Mapping) else None
    if isinstance(search, Mapping):
        data = {**data, "search": stored_search(search)}
    return from_dict(data)


def from_dict(data: Mapping[str, Any]) -> GloConfig:
    """Validate plain data (parsed TOML or a stored snapshot) into a GloConfig."""
    top = _check_keys("config", data, GloConfig) if isinstance(data, Mapping) else None
    if top is None:
        raise ConfigError("config: must be a table")
    r = _check_keys("run", top.get("run", {}), RunConfig)
    run = RunConfig(name=_str("run.name", r.get("name", "")) or "", seed=_int("run.seed", r.get("seed", 0), 0))

    t = _check_keys("task", top.get("task", {}), TaskConfig)
    name = t.get("name", "mnist")
    if name not in TASKS:
        raise ConfigError(f"task.name: must be one of {', '.join(TASKS)}, got {name!r}")
    subset = t.get("train_subset")
    paper = TASK_DEFAULTS[name]
    task = TaskConfig(
        name=name,
        steps=_int("task.steps", t.get("steps", paper["steps"]), 1),
        batch_size=_int("task.batch_size", t.get("batch_size", paper["batch_size"]), 1),
        learning_rate=_real("task.learning_rate", t.get("learning_rate", paper["learning_rate"])),
        validation_size=_int("task.validation_size", t.get("validation_size", 5000), 1),
        train_subset=None if subset is None else _int("task.train_subset", subset, 1),
        data_path=_str("task.data_path", t.get("data_path"), optional=True),
        epsilon=_real("task.epsilon", t.get("epsilon", 1e-7), hi=1.0),
        seed=_int("task.seed", t.get("seed", 0), 0),
        class_reduction=_choice("task.class_reduction", t.get("class_reduction", "mean"), CLASS_REDUCTIONS),
        epsilon_gradient=_choice("task.epsilon_gradient", t.get("epsilon_gradient", EPSILON_GRADIENT_DEFAULT),
                                 EPSILON_GRADIENTS),
        loss_scale=_choice("task.loss_scale", t.get("loss_scale", LOSS_SCALE_NONE), LOSS_SCALES),
        train_fraction=None if t.get("train_fraction") is None else _real(
            "task.train_fraction", t["train_fraction"], hi=1.0 + 1e-12),
        test_accuracy=_bool("task.test_accuracy", t.get("test_accuracy", False)),
        curve_interval=None if t.get("curve_interval") is None else _int("task.curve_interval", t["curve_interval"], 1),
        device_class=_str("task.device_class", t.get("device_class"), optional=True) or None,
        **_custom_fields(name, t),
    )

    s = top.get("search", {})
    if not isinstance(s, Mapping):
        raise ConfigError("search: must be a table")
    for key in s:
        if key not in ("ga", "cma", "fidelity"):
            raise ConfigError(f"search.{key}: unknown key (known: cma, fidelity, ga; the seed is run.seed)")
    from orchestrator.search.config import CMAConfig, FidelityConfig, GAConfig

    for sub, cls in (("ga", GAConfig), ("cma", CMAConfig), ("fidelity", FidelityConfig)):
        _check_keys(f"search.{sub}", s.get(sub, {}), cls)
    try:
        search = SearchConfig.from_dict({"seed": run.seed, **s})
    except (TypeError, ValueError) as exc:  # ConfigError included: the search's messages get the section prefix
        raise ConfigError(f"search.{exc}") from None
    if search.fidelity is not None and search.fidelity.steps[0] <= task.steps:
        raise ConfigError(f"search.fidelity.steps: rungs must be above task.steps = {task.steps}, "
                          f"got {list(search.fidelity.steps)}")

    b = _check_keys("backend", top.get("backend", {}), BackendConfig)
    kind = b.get("kind", "local")
    if kind not in BACKENDS:
        raise ConfigError(f"backend.kind: must be one of {', '.join(BACKENDS)}, got {kind!r}")
    cmd = b.get("worker_command", list(BackendConfig.worker_command))
    if isinstance(cmd, str):
        cmd = cmd.split()  # split on whitespace only: never handed to a shell
    if not isinstance(cmd, (list, tuple)) or not cmd or not all(isinstance(c, str) and c for c in cmd):
        raise ConfigError(f"backend.worker_command: must be a non-empty list of strings, got {cmd!r}")
    backend = BackendConfig(
        kind=kind,
        max_in_flight=_int("backend.max_in_flight", b.get("max_in_flight", 500 if kind in CLUSTER_BACKENDS else 2), 1),
        candidates_per_job=_int("backend.candidates_per_job", b.get("candidates_per_job", 1), 1),
        fuse=None if b.get("fuse", "auto") in ("auto", None) else _int("backend.fuse", b["fuse"], 1),
        timeout_s=_real("backend.timeout_s", b.get("timeout_s", 3600.0)),
        max_attempts=_int("backend.max_attempts", b.get("max_attempts", 3), 1),
        backup_copies=_int("backend.backup_copies", b.get("backup_copies", 0), 0),
        backup_after=_real("backend.backup_after", b.get("backup_after", 1.5)),
        worker_command=tuple(cmd),
        work_dir=_str("backend.work_dir", b.get("work_dir"), optional=True),
        condor=_condor(b.get("condor", {})),
        ssh=_ssh(b.get("ssh", {}), required=kind == "ssh"),
    )
    if task.model is not None and backend.fuse is not None and backend.fuse > 1:
        raise ConfigError(f"backend.fuse: {backend.fuse} -- a custom model (task.model) trains one candidate at a "
                          "time: fused training stacks only the paper networks' layer kinds; set backend.fuse = 1")
    evaluate = None if top.get("evaluate") is None else _evaluate(top["evaluate"])
    if task.name == CUSTOM_TASK and (task.data_sha256 is None or task.model_fingerprint is None):
        # last, once everything else checked out: it reads the file and builds the model (a new run only)
        from orchestrator.custom_task import resolve

        task = resolve(task)
    return GloConfig(run=run, task=task, search=search, backend=backend, evaluate=evaluate)


def _evaluate(data: Any) -> EvaluateConfig:
    """[evaluate]: written by `glo evaluate` (losses as tree JSON), checked again when a run is resumed."""
    from worker.lossexpr import LossExprError, Node

    e = _check_keys("evaluate", data, EvaluateConfig)
    losses = e.get("losses")
    if not isinstance(losses, list) or not losses:
        raise ConfigError("evaluate.losses: must be a non-empty list of {label, tree}")
    out = []
    for i, item in enumerate(losses):
        if not isinstance(item, Mapping) or set(item) != {"label", "tree"} or not isinstance(item["label"], str):
            raise ConfigError(f"evaluate.losses[{i}]: must be {{label, tree}}")
        try:
            Node.from_json(item["tree"])
        except LossExprError as exc:
            raise ConfigError(f"evaluate.losses[{i}].tree: {exc}") from None
        out.append((item["label"], item["tree"]))
    seeds = e.get("seeds")
    tuning = seeds == [] and bool(e.get("learning_rates"))  # a grid alone: choose a rate, test nothing
    if not isinstance(seeds, list) or not (seeds or tuning) or len(set(map(repr, seeds))) != len(seeds):
        raise ConfigError(f"evaluate.seeds: must be a non-empty list of distinct seeds, got {seeds!r}")
    seeds = [_int("evaluate.seeds[]", s, 0) for s in seeds]
    fractions = e.get("fractions", [1.0])
    if not isinstance(fractions, list) or not fractions:
        raise ConfigError(f"evaluate.fractions: must be a non-empty list, got {fractions!r}")
    fractions = [_real("evaluate.fractions[]", f, hi=1.0 + 1e-12) for f in fractions]
    curve = e.get("curve_every")
    rates, selection = learning_rate_grid("evaluate", e.get("learning_rates"), e.get("selection_seeds"), seeds)
    return EvaluateConfig(tuple(out), tuple(seeds), tuple(fractions),
                          None if curve is None else _int("evaluate.curve_every", curve, 1), rates, selection)


def learning_rate_grid(section: str, rates: Any, selection: Any, test_seeds: Sequence[int]
                       ) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """A learning-rate grid (sorted, each rate > 0, no repeats) and its selection seeds (distinct, none a test
    seed: the rate must not be chosen on the runs that are then tested); with no grid, no selection seeds.
    Selection seeds default to `DEFAULT_SELECTION_SEEDS`.  ConfigError naming `section.key` otherwise."""
    if rates is None or rates == []:
        if selection:
            raise ConfigError(f"{section}.selection_seeds: only with {section}.learning_rates (the grid they choose on)")
        return (), ()
    if not isinstance(rates, list):
        raise ConfigError(f"{section}.learning_rates: must be a list of learning rates, got {rates!r}")
    grid = sorted(_real(f"{section}.learning_rates[]", r) for r in rates)
    if any(same_rate(a, b) for a, b in zip(grid, grid[1:])):
        raise ConfigError(f"{section}.learning_rates: a rate is given twice in {rates!r}")
    if selection is None:
        selection = list(DEFAULT_SELECTION_SEEDS)
    if not isinstance(selection, list) or not selection or len(set(map(repr, selection))) != len(selection):
        raise ConfigError(f"{section}.selection_seeds: must be a non-empty list of distinct seeds, got {selection!r}")
    chosen_by = tuple(_int(f"{section}.selection_seeds[]", s, 0) for s in selection)
    shared = sorted(set(chosen_by) & set(test_seeds))
    if shared:
        raise ConfigError(f"{section}.selection_seeds: seed {shared[0]} is also a test seed; the seeds that choose "
                          "a loss's rate must be apart from the ones it is tested with")
    return tuple(grid), chosen_by


def _bool(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"{key}: must be true or false, got {v!r}")
    return v


def _str_table(key: str, v: Any) -> dict[str, str]:
    if not isinstance(v, Mapping) or not all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()):
        raise ConfigError(f"{key}: must be a table of strings, got {v!r}")
    return dict(v)


def _condor(data: Any) -> CondorConfig:
    """[backend.condor], checked here and by the submit renderer (sizes, names, single lines)."""
    from condor.submit import SubmitDescriptionError

    c = _check_keys("backend.condor", data, CondorConfig)
    d = CondorConfig()
    runtime = c.get("max_runtime_s")
    codes = c.get("release_hold_codes", list(d.release_hold_codes))
    if not isinstance(codes, (list, tuple)) or not all(isinstance(x, int) and not isinstance(x, bool) for x in codes):
        raise ConfigError(f"backend.condor.release_hold_codes: must be a list of HTCondor hold codes, got {codes!r}")
    cfg = CondorConfig(
        request_gpus=_int("backend.condor.request_gpus", c.get("request_gpus", d.request_gpus), 0),
        request_cpus=_int("backend.condor.request_cpus", c.get("request_cpus", d.request_cpus), 1),
        request_memory=_str("backend.condor.request_memory", c.get("request_memory", d.request_memory)) or "",
        request_disk=_str("backend.condor.request_disk", c.get("request_disk", d.request_disk)) or "",
        requirements=_str("backend.condor.requirements", c.get("requirements", "")) or "",
        environment=_str_table("backend.condor.environment", c.get("environment", {})),
        submit_extra=_str_table("backend.condor.submit_extra", c.get("submit_extra", {})),
        container_image=_str("backend.condor.container_image", c.get("container_image", "")) or "",
        max_runtime_s=None if runtime is None else _int("backend.condor.max_runtime_s", runtime, 1),
        check_gpu=_bool("backend.condor.check_gpu", c.get("check_gpu", d.check_gpu)),
        max_releases=_int("backend.condor.max_releases", c.get("max_releases", d.max_releases), 0),
        release_hold_codes=tuple(codes),
        avoid_bad_nodes=_bool("backend.condor.avoid_bad_nodes", c.get("avoid_bad_nodes", d.avoid_bad_nodes)),
        batch_size=_int("backend.condor.batch_size", c.get("batch_size", d.batch_size), 1),
        poll_interval_s=_real("backend.condor.poll_interval_s", c.get("poll_interval_s", d.poll_interval_s)),
        reconcile_interval_s=_real("backend.condor.reconcile_interval_s",
                                   c.get("reconcile_interval_s", d.reconcile_interval_s)),
    )
    try:
        job_settings(cfg).check()
    except SubmitDescriptionError as exc:
        raise ConfigError(f"backend.condor.{exc}") from None
    return cfg


def job_settings(cfg: CondorConfig, extra_environment: Mapping[str, str] | None = None) -> Any:
    """The submit renderer's CondorJobSettings for these settings."""
    from condor.submit import CondorJobSettings

    return CondorJobSettings(
        request_gpus=cfg.request_gpus, request_cpus=cfg.request_cpus, request_memory=cfg.request_memory,
        request_disk=cfg.request_disk, requirements=cfg.requirements,
        environment={**cfg.environment, **(extra_environment or {})}, max_runtime_s=cfg.max_runtime_s,
        extra=dict(cfg.submit_extra), container_image=cfg.container_image,
    )


def _ssh(data: Any, *, required: bool) -> SshConfig:
    s = _check_keys("backend.ssh", data, SshConfig)
    d = SshConfig()
    host = _str("backend.ssh.host", s.get("host", "")) or ""
    if required and not host:
        raise ConfigError("backend.ssh.host: the ssh backend needs the submit host (a name or a ~/.ssh/config alias)")
    port = s.get("port")
    cfg = SshConfig(
        host=host,
        user=_str("backend.ssh.user", s.get("user"), optional=True),
        port=None if port is None else _int("backend.ssh.port", port, 1),
        identity_file=_str("backend.ssh.identity_file", s.get("identity_file"), optional=True),
        known_hosts=_str("backend.ssh.known_hosts", s.get("known_hosts"), optional=True),
        host_key_policy=_choice("backend.ssh.host_key_policy", s.get("host_key_policy", d.host_key_policy),
                                ("reject", "accept-new")),
        remote_dir=_str("backend.ssh.remote_dir", s.get("remote_dir", d.remote_dir)) or d.remote_dir,
        remote_setup=_str("backend.ssh.remote_setup", s.get("remote_setup", "")) or "",
        keepalive_s=_int("backend.ssh.keepalive_s", s.get("keepalive_s", d.keepalive_s), 0),
        connect_timeout_s=_real("backend.ssh.connect_timeout_s", s.get("connect_timeout_s", d.connect_timeout_s)),
        ssh_config=_str("backend.ssh.ssh_config", s.get("ssh_config", d.ssh_config)) or "",
    )
    if port is not None and cfg.port is not None and cfg.port > 65535:
        raise ConfigError(f"backend.ssh.port: must be a TCP port (1-65535), got {port!r}")
    if "\n" in cfg.remote_setup or "\n" in cfg.remote_dir:
        raise ConfigError("backend.ssh.remote_setup: must be a single line")
    return cfg


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """`KEY=VALUE` settings (`backend.kind=ssh`, `task.steps=500`, `backend.ssh.host="submit"`) on top of the
    file's: the value is read as a TOML value (a number, true, a [list], a "string"), and taken as a plain
    string when it is none (so `backend.ssh.host=submit.example.org` needs no quotes)."""
    out = json.loads(json.dumps(data))
    for item in overrides:
        key, sep, text = item.partition("=")
        path = [k.strip() for k in key.split(".")]
        if not sep or not all(path):
            raise ConfigError(f"--set {item!r}: give KEY=VALUE with a dotted key, e.g. backend.kind=condor")
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        table = out
        for part in path[:-1]:
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise ConfigError(f"--set {item!r}: {part} is not a table")
        table[path[-1]] = value
    return out


#: The section `glo experiment` reads (orchestrator.experiments.pipeline): what to evaluate after the search.  Not a run
#: setting, so every other command that takes a config sets it aside, and a shipped config works with all of them.
EXPERIMENT_SECTION = "experiment"


def read_config_data(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The TOML file as plain data with the `--set` overrides applied; an unreadable file or bad TOML is a
    ConfigError naming the file.  Nothing is validated yet (see from_dict)."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    try:
        return apply_overrides(data, overrides)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


def run_settings(data: dict[str, Any]) -> dict[str, Any]:
    """The config data without the [experiment] section: what from_dict validates for a run."""
    return {k: v for k, v in data.items() if k != EXPERIMENT_SECTION}


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> GloConfig:
    """Read and validate a TOML file (with `--set` overrides); every problem is a ConfigError naming file
    and key."""
    data = read_config_data(path, overrides)
    try:
        return from_dict(run_settings(data))
    except ConfigError as exc:
        raise ConfigError(f"{Path(path)}: {exc}") from None
