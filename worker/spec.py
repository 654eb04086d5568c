"""The worker's wire formats: the job spec it reads and the result file it writes.

Both are versioned JSON.  The orchestrator writes a spec, a job (local subprocess or HTCondor)
runs `python -m worker SPEC.json --out RESULT.json`, and the orchestrator reads the result.
Workers never see the database or the orchestrator's config: this file is the whole contract.
This module imports no TensorFlow, so the orchestrator can build and check specs.

Spec (version 1)::

    {
      "glo_worker_spec": 1,
      "task": "mnist" | "cifar10" | "fashion_mnist" | "cifar100" | "custom",
      "steps": 2000,                 # SGD steps per candidate
      "batch_size": 100,
      "learning_rate": 0.01,
      "seed": 0,                     # weights, split and batch order
      "validation_size": 5000,       # held out of the training images (fixed, seeded split)
      "train_subset": null,          # optional: train on only this many of the remaining images
      "data_path": null,             # optional: a file or directory holding the task's .npz
      "test_accuracy": false,        # also measure accuracy on the test set
      "curve_interval": null,        # optional: validation accuracy every S steps
      "epsilon": 1e-7,               # predictions are clipped to [epsilon, 1] before the loss
      "class_reduction": "mean",     # "mean": L = -(1/n) Σ_classes f (the paper's formula);
                                     # "sum": L = -Σ_classes f (x*log(y) is then exactly Keras' CE)
      "fuse": null,                  # optional: train this many candidates at once as one fused model
                                     # (worker/fused.py); 1 = one after another; left out = the device's
                                     # measured default (DEFAULT_FUSE below)
      "candidates": [{"id": "run1-g0-3", "tree": {...tree JSON...}}, ...],
                                     # a candidate may carry "scale": a finite number > 0 its loss is
                                     # multiplied by (task.loss_scale = "calibrated": cross-entropy's gradient
                                     # scale, orchestrator/search/calibration.py); written only when != 1, so
                                     # every spec hash from before the field stays the same
      # task "custom" only (a user's model and data set, issue 20):
      "model": "pkg.module:function",  # (input_shape, num_classes) -> keras.Model ending in a softmax
      "preprocess": "scale",         # "scale" | "standardize" | "none"
      "data_sha256": "...",          # the data file's sha256: a node holding another file refuses it
      "model_fingerprint": "..."     # optional: the architecture the submit host built (the worker refuses
                                     # to train a model that builds otherwise)
    }

Result file (version 1), rewritten atomically after every finished candidate::

    {"glo_worker_result": 1, "spec_hash": "...", "results": [CandidateResult, ...]}

Exit codes: 0 done; 65 bad spec; 66 missing data; 70 internal error.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from worker.lossexpr import LossExprError, Node
from worker.lossexpr.reduction import CLASS_REDUCTIONS

#: What the prediction clip `clip(y, epsilon, 1)` passes back below epsilon.  "straight-through" (the default):
#: the clipped value forward, the gradient of the loss at that value backward as if no clip were there, and the
#: model's output softmax floored at epsilon in its backward (worker/tf_loss.py), so no loss can sit at the
#: clip's corner with an exactly zero gradient (docs/cifar10-collapse.md: Baikal froze there on CIFAR-10 and
#: reported a silent 0.100).  "zero": TensorFlow's clip_by_value, no gradient below epsilon --
#: what every run before the setting existed trained with (its cache keys and specs omit the field).
EPSILON_GRADIENTS = ("straight-through", "zero")
EPSILON_GRADIENT_DEFAULT = "straight-through"
EPSILON_GRADIENT_LEGACY = "zero"

SPEC_VERSION = 1
RESULT_VERSION = 1
#: The built-in tasks and the paper network each trains: fashion_mnist (Xiao et al. 2017: 28x28 grey images
#: of clothing, MNIST's layout) the MNIST network unchanged, cifar100 (CIFAR-10's layout, 100 classes) the
#: CIFAR-10 network with 100 outputs -- the first tasks beyond the paper's two (issue 20).
TASK_NETWORK = {"mnist": "mnist", "cifar10": "cifar10", "fashion_mnist": "mnist", "cifar100": "cifar10"}
#: A user's own task (issue 20): their data file (`data_path`, Keras' npz layout) and their model (`model`,
#: a dotted name); the number of classes comes from the labels.
CUSTOM_TASK = "custom"
#: The tasks a name alone defines (a custom one needs its data and model, i.e. a config)
BUILTIN_TASKS = tuple(TASK_NETWORK)
TASKS = (*BUILTIN_TASKS, CUSTOM_TASK)
#: Classes per built-in task: the labels are 0..C-1, the network's softmax has C outputs.
TASK_CLASSES = {"mnist": 10, "cifar10": 10, "fashion_mnist": 10, "cifar100": 100}
#: How a custom task's images become the model's float32 input: "scale" divides uint8 pixels by 255 (float
#: data passes unchanged), "standardize" subtracts the training split's per-channel mean and divides by its
#: standard deviation, "none" only casts.
PREPROCESSES = ("scale", "standardize", "none")
#: `module.path:function` -- what `model` may be: identifiers only, so that nothing but an import by name can
#: follow from it (worker/usermodel.py).
MODEL_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
#: The spec's (and [task]'s) fields that only a custom task has: its model, preprocessing and identity
CUSTOM_FIELDS = ("model", "preprocess", "data_sha256", "model_fingerprint")


def model_name_problem(name: object) -> str | None:
    """Why `name` is not a usable `module:function` model name, or None."""
    if not isinstance(name, str) or not MODEL_NAME_PATTERN.fullmatch(name):
        return f"must be 'package.module:function' (identifiers only), got {name!r}"
    return None


def sha256_problem(value: object) -> str | None:
    """Why `value` is not a sha256 hex digest (data_sha256, model_fingerprint), or None."""
    if not isinstance(value, str) or not SHA256_PATTERN.fullmatch(value):
        return f"must be 64 lower-case hex digits, got {value!r}"
    return None

EXIT_OK = 0
EXIT_BAD_SPEC = 65  # sysexits EX_DATAERR
EXIT_MISSING_DATA = 66  # sysexits EX_NOINPUT
EXIT_INTERNAL = 70  # sysexits EX_SOFTWARE
EXIT_BAD_NODE = 75  # sysexits EX_TEMPFAIL: this machine cannot train (no TensorFlow, no GPU, out of memory)
#: What each exit means to whoever ran the worker (every backend reads them from here)
EXIT_MEANINGS = {EXIT_BAD_SPEC: "bad spec", EXIT_MISSING_DATA: "missing data", EXIT_INTERNAL: "internal error",
                 EXIT_BAD_NODE: "bad node"}
#: Exits that retrying cannot cure: the run stops with the worker's message
FATAL_EXITS = (EXIT_BAD_SPEC, EXIT_MISSING_DATA)

STATUS_OK = "ok"
STATUS_NONFINITE = "nonfinite"
#: the training froze at the clip's zero-gradient corner (worker/collapse.py): fitness 0, as for a non-finite one
STATUS_COLLAPSED = "collapsed"
STATUS_ERROR = "error"
#: Every status a result may carry.  Only STATUS_ERROR is a failure (the scheduler retries or fails it); the
#: others are measurements, and all but STATUS_OK have fitness 0 (the paper's rule for a NaN training).
RESULT_STATUSES = (STATUS_OK, STATUS_NONFINITE, STATUS_COLLAPSED, STATUS_ERROR)
#: The statuses of a training that ran but scores 0 by rule (its result says why: `nonfinite_step`, `extra`).
ZERO_FITNESS_STATUSES = (STATUS_NONFINITE, STATUS_COLLAPSED)
#: result.extra[EXTRA_COLLAPSE]: a collapsed training's verdict (worker.collapse.Collapse.to_json), whose
#: "reason" is the sentence `glo show` and the dashboard print.
EXTRA_COLLAPSE = "collapse"
#: result.extra[EXTRA_LOSS_SCALE]: the factor the candidate's loss was multiplied by (only when != 1.0)
EXTRA_LOSS_SCALE = "loss_scale"


class SpecError(ValueError):
    """The spec is malformed; the message names the offending field."""


class BadNodeError(RuntimeError):
    """The machine, not the candidate, is at fault: retrying elsewhere can succeed (exit EXIT_BAD_NODE)."""


#: `fuse` when the spec leaves it out, per device kind (measured by `make bench` / `make bench-gpu`, see
#: bench/README.md).  CPU: 1 -- on the project's 2-core machines a fused step of K costs what K separate
#: steps cost (candidate-steps/s x1.06 at K = 4 and x1.01 at K = 16, and x1.06 at K = 1, i.e. nothing
#: from fusing itself); the CPU is already busy with one model's batch of 100.  GPU: 16 -- not measured yet
#: (no GPU was lent to the session that wrote this); one 2,000-step MNIST training leaves a modern GPU mostly
#: idle, so set it from `make bench-gpu`'s best K.  Here, not in worker/fused.py, because the orchestrator
#: sizes jobs by it (`BackendConfig.fuse_width`) and must not import TensorFlow.
DEFAULT_FUSE = {"CPU": 1, "GPU": 16}


@dataclass(frozen=True)
class CandidateSpec:
    """One loss to train.  `scale` multiplies the loss (worker.tf_loss.make_loss): 1.0 trains the tree as it
    is; a calibrated run sends each tree's calibration scale, and the result echoes it (`EXTRA_LOSS_SCALE`)."""

    id: str
    tree: Node
    scale: float = 1.0

    def to_json(self) -> dict[str, Any]:
        """The spec's candidate entry; "scale" only when != 1.0, so that older spec hashes stay the same."""
        return {"id": self.id, "tree": self.tree.to_json(), **({"scale": self.scale} if self.scale != 1.0 else {})}


@dataclass(frozen=True)
class WorkerSpec:
    task: str
    candidates: tuple[CandidateSpec, ...]
    steps: int = 2000
    batch_size: int = 100
    learning_rate: float = 0.01
    seed: int = 0
    validation_size: int = 5000
    train_subset: int | None = None
    data_path: str | None = None
    test_accuracy: bool = False
    curve_interval: int | None = None
    epsilon: float = 1e-7
    class_reduction: str = "mean"
    epsilon_gradient: str = EPSILON_GRADIENT_LEGACY  # a spec without the field: what it meant when written
    train_fraction: float | None = None  # train on this fraction of the training images (after train_subset)
    fuse: int | None = None  # candidates trained at once as one fused model; None: the device's default
    model: str | None = None  # custom task: "module:function" building the user's model
    preprocess: str | None = None  # custom task: one of PREPROCESSES
    data_sha256: str | None = None  # custom task: the data file's sha256
    model_fingerprint: str | None = None  # custom task: the architecture the orchestrator's build had

    def to_json(self) -> dict[str, Any]:
        return {
            "glo_worker_spec": SPEC_VERSION,
            "task": self.task,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "seed": self.seed,
            "validation_size": self.validation_size,
            "train_subset": self.train_subset,
            "data_path": self.data_path,
            "test_accuracy": self.test_accuracy,
            "curve_interval": self.curve_interval,
            "epsilon": self.epsilon,
            "class_reduction": self.class_reduction,
            "candidates": [c.to_json() for c in self.candidates],
            # only when set, so that every spec written before the field existed keeps its hash
            **({"train_fraction": self.train_fraction} if self.train_fraction is not None else {}),
            **({"fuse": self.fuse} if self.fuse is not None else {}),
            **({"epsilon_gradient": self.epsilon_gradient}
               if self.epsilon_gradient != EPSILON_GRADIENT_LEGACY else {}),
            **{k: getattr(self, k) for k in CUSTOM_FIELDS if getattr(self, k) is not None},
        }

    def spec_hash(self) -> str:
        """sha256 of the canonical JSON: ties a result to exactly the spec that produced it."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()

    @staticmethod
    def from_json(data: Any) -> "WorkerSpec":
        if not isinstance(data, dict):
            raise SpecError("spec must be a JSON object")
        version = data.get("glo_worker_spec")
        if version != SPEC_VERSION:
            raise SpecError(f"glo_worker_spec: expected version {SPEC_VERSION}, got {version!r}")
        known = {
            "glo_worker_spec", "task", "steps", "batch_size", "learning_rate", "seed", "validation_size",
            "train_subset", "data_path", "test_accuracy", "curve_interval", "epsilon", "class_reduction",
            "epsilon_gradient", "candidates", "train_fraction", "fuse", *CUSTOM_FIELDS,
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"unknown spec field(s): {', '.join(unknown)}")
        task = data.get("task")
        if task not in TASKS:
            raise SpecError(f"task: must be one of {', '.join(TASKS)}, got {task!r}")

        def integer(name: str, default: int | None, minimum: int, optional: bool = False) -> int | None:
            value = data.get(name, default)
            if value is None and optional:
                return None
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise SpecError(f"{name}: must be an integer >= {minimum}, got {value!r}")
            return value

        def real(name: str, default: float, positive: bool = True) -> float:
            value = data.get(name, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise SpecError(f"{name}: must be a finite number, got {value!r}")
            if positive and value <= 0:
                raise SpecError(f"{name}: must be > 0, got {value!r}")
            return float(value)

        data_path = data.get("data_path")
        if data_path is not None and not isinstance(data_path, str):
            raise SpecError(f"data_path: must be a string or null, got {data_path!r}")
        test_accuracy = data.get("test_accuracy", False)
        if not isinstance(test_accuracy, bool):
            raise SpecError(f"test_accuracy: must be true or false, got {test_accuracy!r}")
        epsilon = real("epsilon", 1e-7)
        if epsilon >= 1:
            raise SpecError(f"epsilon: must be in (0, 1), got {epsilon!r}")

        class_reduction = data.get("class_reduction", "mean")
        if class_reduction not in CLASS_REDUCTIONS:
            raise SpecError(f"class_reduction: must be one of {', '.join(CLASS_REDUCTIONS)}, got {class_reduction!r}")

        epsilon_gradient = data.get("epsilon_gradient", EPSILON_GRADIENT_LEGACY)
        if epsilon_gradient not in EPSILON_GRADIENTS:
            raise SpecError(f"epsilon_gradient: must be one of {', '.join(EPSILON_GRADIENTS)}, "
                            f"got {epsilon_gradient!r}")

        fraction = data.get("train_fraction")
        if fraction is not None and (isinstance(fraction, bool) or not isinstance(fraction, (int, float))
                                     or not 0.0 < float(fraction) <= 1.0):
            raise SpecError(f"train_fraction: must be a number in (0, 1], got {fraction!r}")

        custom = {k: data.get(k) for k in CUSTOM_FIELDS}
        if task == CUSTOM_TASK:
            if not data_path:
                raise SpecError("data_path: task 'custom' needs the data file's path")
            if (problem := model_name_problem(custom["model"])) is not None:
                raise SpecError(f"model: {problem}")
            if custom["preprocess"] is None:
                custom["preprocess"] = "scale"
            if custom["preprocess"] not in PREPROCESSES:
                raise SpecError(f"preprocess: must be one of {', '.join(PREPROCESSES)}, got {custom['preprocess']!r}")
            for key in ("data_sha256", "model_fingerprint"):
                if custom[key] is not None and (problem := sha256_problem(custom[key])) is not None:
                    raise SpecError(f"{key}: {problem}")
            if isinstance(data.get("fuse"), int) and data["fuse"] > 1:
                raise SpecError(f"fuse: {data['fuse']} -- a custom model trains one candidate at a time (fused "
                                "training knows only the paper's layer kinds); use fuse = 1")
        else:
            given = sorted(k for k, v in custom.items() if v is not None)
            if given:
                raise SpecError(f"{', '.join(given)}: only for task 'custom', not {task!r}")

        raw = data.get("candidates")
        if not isinstance(raw, list) or not raw:
            raise SpecError("candidates: must be a non-empty list")
        candidates = []
        seen: set[str] = set()
        for i, item in enumerate(raw):
            if not isinstance(item, dict) or not {"id", "tree"} <= set(item) <= {"id", "tree", "scale"}:
                raise SpecError(f"candidates[{i}]: must be an object with 'id', 'tree' and optionally 'scale'")
            cid = item["id"]
            if not isinstance(cid, str) or not cid:
                raise SpecError(f"candidates[{i}].id: must be a non-empty string")
            if cid in seen:
                raise SpecError(f"candidates[{i}].id: duplicate id {cid!r}")
            seen.add(cid)
            try:
                tree = Node.from_json(item["tree"])
            except LossExprError as exc:
                raise SpecError(f"candidates[{i}].tree: {exc}") from None
            scale = item.get("scale", 1.0)
            if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) \
                    or scale <= 0:
                raise SpecError(f"candidates[{i}].scale: must be a finite number > 0, got {scale!r}")
            candidates.append(CandidateSpec(cid, tree, float(scale)))

        return WorkerSpec(
            task=task,
            candidates=tuple(candidates),
            steps=integer("steps", 2000, 1),
            batch_size=integer("batch_size", 100, 1),
            learning_rate=real("learning_rate", 0.01),
            seed=integer("seed", 0, 0),
            validation_size=integer("validation_size", 5000, 1),
            train_subset=integer("train_subset", None, 1, optional=True),
            data_path=data_path,
            test_accuracy=test_accuracy,
            curve_interval=integer("curve_interval", None, 1, optional=True),
            epsilon=epsilon,
            class_reduction=class_reduction,
            epsilon_gradient=epsilon_gradient,
            train_fraction=None if fraction is None else float(fraction),
            fuse=integer("fuse", None, 1, optional=True),
            **custom,
        )


def load_spec(path: str | os.PathLike[str]) -> WorkerSpec:
    """Read and validate a spec file; every problem is a `SpecError` naming it."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise SpecError(f"cannot read spec {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"spec {path} is not valid JSON: {exc}") from None
    return WorkerSpec.from_json(data)


@dataclass
class CandidateResult:
    """What one training run measured.  `fitness` is the validation accuracy (0 if non-finite or collapsed:
    then `validation_accuracy`/`test_accuracy` are None, and a collapse's measured ones and its reason are in
    `extra["collapse"]`)."""

    candidate_id: str
    status: str  # one of RESULT_STATUSES
    fitness: float
    validation_accuracy: float | None = None
    test_accuracy: float | None = None
    curve: list[list[float]] | None = None  # [[step, validation_accuracy], ...]
    final_train_loss: float | None = None
    nonfinite_step: int | None = None
    error: str | None = None
    wall_seconds: float = 0.0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    device: str = ""
    tensorflow_version: str = ""
    spec_hash: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("final_train_loss", "validation_accuracy", "test_accuracy", "fitness"):
            value = out[key]
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = None  # JSON has no NaN/inf; the status field says what happened
        return out

    @staticmethod
    def from_json(data: Any) -> "CandidateResult":
        if not isinstance(data, dict):
            raise ValueError("result entry must be a JSON object")
        names = set(CandidateResult.__dataclass_fields__)
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown result field(s): {', '.join(unknown)}")
        for required in ("candidate_id", "status", "fitness"):
            if required not in data:
                raise ValueError(f"result entry lacks {required!r}")
        if data["status"] not in RESULT_STATUSES:
            raise ValueError(f"result status must be one of {', '.join(RESULT_STATUSES)}, got {data['status']!r}")
        fitness = data["fitness"]
        if isinstance(fitness, bool) or not isinstance(fitness, (int, float)) or not math.isfinite(fitness):
            raise ValueError(f"result fitness must be a finite number, got {fitness!r}")
        if data["status"] in ZERO_FITNESS_STATUSES and fitness != 0:  # what the search is told must be the rule's
            raise ValueError(f"a {data['status']} result must have fitness 0, got {fitness!r}")
        return CandidateResult(**data)


def collapse_reason(extra: Any) -> str | None:
    """The stored reason of a collapsed training, from a result's (or a stored evaluation's) `extra`; else None."""
    record = extra.get(EXTRA_COLLAPSE) if isinstance(extra, dict) else None
    reason = record.get("reason") if isinstance(record, dict) else None
    return reason if isinstance(reason, str) and reason else None


def write_results(path: str | os.PathLike[str], spec_hash: str, results: list[CandidateResult]) -> None:
    """Atomically (write temp file, fsync, rename) replace the result file with `results`."""
    path = Path(path)
    payload = {"glo_worker_result": RESULT_VERSION, "spec_hash": spec_hash, "results": [r.to_json() for r in results]}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def record_exit(path: str | os.PathLike[str], spec_hash: str, code: int, message: str) -> None:
    """Add the worker's exit status to the result file (creating it, empty, when there is none yet).

    On a cluster the result file is the one thing sure to come back (condor transfers it on any exit),
    and without it a failed job would look like "result file missing" whatever the cause: so the
    orchestrator can tell a bad spec or a bad node from a crash even where it never sees the exit code."""
    path = Path(path)
    payload: dict[str, Any] = {"glo_worker_result": RESULT_VERSION, "spec_hash": spec_hash, "results": []}
    try:
        old = json.loads(path.read_text())
        if isinstance(old, dict) and old.get("spec_hash") == spec_hash and isinstance(old.get("results"), list):
            payload["results"] = old["results"]
    except (OSError, ValueError):
        pass
    payload["worker_exit"] = {"code": int(code), "message": message[-2000:]}
    tmp = path.with_name(f".{path.name}.exit")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)


def read_worker_exit(path: str | os.PathLike[str]) -> tuple[int, str] | None:
    """(code, message) that `record_exit` left in a result file, or None."""
    try:
        data = json.loads(Path(path).read_text())
        ex = data.get("worker_exit") if isinstance(data, dict) else None
        if isinstance(ex, dict) and isinstance(ex.get("code"), int):
            return ex["code"], str(ex.get("message", ""))
    except (OSError, ValueError):
        pass
    return None


def read_results(path: str | os.PathLike[str]) -> tuple[str, list[CandidateResult]]:
    """(spec_hash, results) of a result file; ValueError naming the file for anything malformed."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ValueError(f"cannot read result file {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"result file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("glo_worker_result") != RESULT_VERSION:
        raise ValueError(f"result file {path}: not a version-{RESULT_VERSION} GLO result")
    spec_hash = data.get("spec_hash")
    raw = data.get("results")
    if not isinstance(spec_hash, str) or not isinstance(raw, list):
        raise ValueError(f"result file {path}: needs 'spec_hash' (string) and 'results' (list)")
    try:
        return spec_hash, [CandidateResult.from_json(r) for r in raw]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"result file {path}: {exc}") from None
