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

from orchestrator.search.config import ConfigError as SearchConfigError
from orchestrator.search.config import SearchConfig
from worker.lossexpr.numeric import CLASS_REDUCTIONS
from worker.spec import TASKS, CandidateSpec, WorkerSpec


class ConfigError(ValueError):
    """A bad config; the message starts with the dotted key (e.g. `search.ga.population_sz`)."""


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

    def budget(self) -> dict[str, Any]:
        """The fields that change a measured fitness (cache key material)."""
        return {"steps": self.steps, "batch_size": self.batch_size, "learning_rate": self.learning_rate,
                "validation_size": self.validation_size, "train_subset": self.train_subset,
                "epsilon": self.epsilon, "class_reduction": self.class_reduction}

    def seed_policy(self) -> str:
        return f"fixed:{self.seed}"

    def worker_spec(self, candidates: Sequence[CandidateSpec], *, test_accuracy: bool = False,
                    curve_interval: int | None = None) -> WorkerSpec:
        """The worker's spec training `candidates` with this task's settings (one mapping for every caller)."""
        return WorkerSpec(
            task=self.name, candidates=tuple(candidates), steps=self.steps, batch_size=self.batch_size,
            learning_rate=self.learning_rate, seed=self.seed, validation_size=self.validation_size,
            train_subset=self.train_subset, data_path=self.data_path, test_accuracy=test_accuracy,
            curve_interval=curve_interval, epsilon=self.epsilon, class_reduction=self.class_reduction,
        )


@dataclass(frozen=True)
class BackendConfig:
    kind: str = "local"
    max_in_flight: int = 2  # jobs at once (local: worker processes)
    candidates_per_job: int = 1  # M candidates per worker process: amortizes TensorFlow start-up
    timeout_s: float = 3600.0  # per job attempt
    max_attempts: int = 3  # submissions of a candidate before it is recorded as failed
    worker_command: tuple[str, ...] = ("{python}", "-m", "worker")  # {python}: this interpreter
    work_dir: str | None = None  # default: <db file>.work/ next to the database


@dataclass(frozen=True)
class GloConfig:
    run: RunConfig = field(default_factory=RunConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)

    def to_dict(self) -> dict[str, Any]:
        search = self.search.to_dict()
        search.pop("seed", None)  # it is run.seed
        out = {"run": asdict(self.run), "task": asdict(self.task), "search": search,
               "backend": asdict(self.backend)}
        out["backend"]["worker_command"] = list(self.backend.worker_command)
        return out

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


BACKENDS = ("local",)


#: The paper's training settings per task; a [task] key left out takes these, not MNIST's.
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "mnist": {"steps": 2000, "batch_size": 100, "learning_rate": 0.01},
    # SGD, batch 1024, learning rate 0.05 (decayed x0.1 every 350 epochs inside the worker).
    "cifar10": {"steps": 2000, "batch_size": 1024, "learning_rate": 0.05},
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
    )

    s = top.get("search", {})
    if not isinstance(s, Mapping):
        raise ConfigError("search: must be a table")
    for key in s:
        if key not in ("ga", "cma"):
            raise ConfigError(f"search.{key}: unknown key (known: cma, ga; the seed is run.seed)")
    from orchestrator.search.config import CMAConfig, GAConfig

    for sub, cls in (("ga", GAConfig), ("cma", CMAConfig)):
        _check_keys(f"search.{sub}", s.get(sub, {}), cls)
    try:
        search = SearchConfig.from_dict({"seed": run.seed, **s})
    except (SearchConfigError, TypeError, ValueError) as exc:
        raise ConfigError(f"search.{exc}") from None

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
        max_in_flight=_int("backend.max_in_flight", b.get("max_in_flight", 2), 1),
        candidates_per_job=_int("backend.candidates_per_job", b.get("candidates_per_job", 1), 1),
        timeout_s=_real("backend.timeout_s", b.get("timeout_s", 3600.0)),
        max_attempts=_int("backend.max_attempts", b.get("max_attempts", 3), 1),
        worker_command=tuple(cmd),
        work_dir=_str("backend.work_dir", b.get("work_dir"), optional=True),
    )
    return GloConfig(run=run, task=task, search=search, backend=backend)


def load_config(path: str | Path) -> GloConfig:
    """Read and validate a TOML file; every problem is a ConfigError naming file and key."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    try:
        return from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None
