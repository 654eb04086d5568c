"""A custom task's identity (issue 20): what its cache keys name besides the loss and the budget.

A fitness measured on one model or data set must never be served for another.  So when a custom run's config
is first read, before any job: the data file is checked and hashed (sha256 of its bytes, `worker.data`'s
numpy-only reader), and the user's model is built once in a short subprocess of this Python
(`python -m worker.usermodel`; the orchestrator itself imports no TensorFlow) to take its architecture
fingerprint.  Both go into the stored config and every cache key (`TaskConfig.budget`), and into every spec:
a node holding another file passes it over (exit 66 when none matches), a node whose module builds another
architecture refuses the job (exit 65) -- so the first result of a run, and every later one, is checked
against the keys it will be cached under.  A resumed run keeps the stored identity.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

from orchestrator.errors import ConfigError
from orchestrator.procs import CommandError, run_sync

#: Seconds the fingerprint subprocess may take (it imports TensorFlow and builds the model once).
FINGERPRINT_TIMEOUT_S = 300.0


def resolve(task):  # TaskConfig -> TaskConfig (typed loosely: orchestrator.config imports this module lazily)
    """`task` with data_path made absolute, data_sha256 and model_fingerprint filled in; ConfigError names
    the file, key or shape that is wrong, or the model's own error."""
    from worker.data import describe_custom

    path = Path(task.data_path).expanduser().resolve()
    try:
        info = describe_custom(path)
    except ValueError as exc:
        raise ConfigError(f"task.data_path: {exc}") from None
    if task.data_sha256 is not None and task.data_sha256 != info.sha256:
        raise ConfigError(f"task.data_sha256: {path} has sha256 {info.sha256}, the config says {task.data_sha256}")
    if task.validation_size >= info.n_train:
        raise ConfigError(f"task.validation_size: {task.validation_size} leaves no training images out of "
                          f"{info.n_train} in {path}")
    fp = model_fingerprint(task.model, info.input_shape, info.num_classes)
    if task.model_fingerprint is not None and task.model_fingerprint != fp:
        raise ConfigError(f"task.model_fingerprint: {task.model} builds {fp} here, the config says "
                          f"{task.model_fingerprint}")
    return dataclasses.replace(task, data_path=str(path), data_sha256=info.sha256, model_fingerprint=fp)


def model_fingerprint(model: str, input_shape: tuple[int, ...], num_classes: int) -> str:
    """Build `model` in `python -m worker.usermodel` (this interpreter, this environment: PYTHONPATH must
    name the model's directory here too) and return its fingerprint; ConfigError carries the worker's line."""
    argv = [sys.executable, "-m", "worker.usermodel", model, ",".join(map(str, input_shape)), str(num_classes)]
    try:
        done = run_sync(argv, timeout=FINGERPRINT_TIMEOUT_S, env=dict(os.environ))
    except CommandError as exc:
        lines = [ln for ln in (exc.stderr or "").splitlines() if ln.startswith("glo-worker:")]
        why = lines[-1].removeprefix("glo-worker: ") if lines else f"{exc}"
        raise ConfigError(f"task.model: {why}") from None
    try:
        return str(json.loads(done.stdout.strip().splitlines()[-1])["fingerprint"])
    except (ValueError, KeyError, IndexError):
        raise ConfigError(f"task.model: the fingerprint subprocess printed no fingerprint: {done.stdout[-300:]!r}") \
            from None
