"""A user's own model (task "custom", issue 20): imported by its dotted name, checked, fingerprinted.

`model = "package.module:function"` names a function `(input_shape, num_classes) -> keras.Model` whose
output is a softmax over the classes.  The module is imported with `importlib.import_module` from the
installed packages or from a directory on the job's PYTHONPATH -- the name is all that travels (checked
against `worker.spec.MODEL_NAME_PATTERN`); nothing stored in the database or in a result file is ever
imported or evaluated.  A config is code, like a Makefile: whoever can write one can run code on the nodes.

The fingerprint is what the cache keys of a custom task name besides the data's sha256: the sha256 of the
built model's layer kinds, in order, each layer's activation, and every weight's shape and dtype.  The
orchestrator builds the model once before a run (`python -m worker.usermodel`, a subprocess: the orchestrator
imports no TensorFlow) and puts the fingerprint in the specs; a node whose module builds another
architecture refuses the job (exit 65), so a fitness in the cache is always the named model's.

    python -m worker.usermodel MODULE:FUNCTION H,W,C NUM_CLASSES   ->   {"fingerprint": "...", "params": N}
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
from collections.abc import Callable

from worker import tf_env  # noqa: F401  -- TensorFlow's environment, before TensorFlow is imported

# isort: split

import keras  # noqa: E402
import numpy as np  # noqa: E402

from worker.spec import EXIT_BAD_SPEC, SpecError, model_name_problem  # noqa: E402


def import_model(name: str) -> Callable[..., keras.Model]:
    """The function `name` ("module:function") names; SpecError says why it cannot be had."""
    problem = model_name_problem(name)
    if problem is not None:
        raise SpecError(f"model: {problem}")
    module_name, func_name = name.split(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or the module's own code failing: either way it does not import
        raise SpecError(f"model {name!r}: module {module_name!r} does not import here "
                        f"({type(exc).__name__}: {exc}); install it, or name its directory in PYTHONPATH "
                        f"(PYTHONPATH={os.environ.get('PYTHONPATH', '(unset)')})") from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise SpecError(f"model {name!r}: module {module_name!r} has no function {func_name!r}")
    return func


def build_user_model(name: str, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """Build and check the user's model: a keras.Model from (input_shape, num_classes) whose output is
    (batch, num_classes) probabilities; SpecError says what is wrong."""
    func = import_model(name)
    try:
        model = func(tuple(input_shape), int(num_classes))
    except Exception as exc:
        raise SpecError(f"model {name!r} failed to build for input {tuple(input_shape)}, {num_classes} classes: "
                        f"{type(exc).__name__}: {exc}") from None
    if not isinstance(model, keras.Model):
        raise SpecError(f"model {name!r} returned {type(model).__name__}, not a keras.Model")
    probe = np.random.default_rng(0).uniform(0.0, 1.0, (2, *input_shape)).astype(np.float32)
    try:
        out = np.asarray(model(probe, training=False))
    except Exception as exc:
        raise SpecError(f"model {name!r} does not take input of shape (batch, {', '.join(map(str, input_shape))}):"
                        f" {type(exc).__name__}: {' '.join(str(exc).split())[:300]}") from None
    if out.shape != (2, num_classes):
        raise SpecError(f"model {name!r} outputs shape {out.shape[1:]} per image, not ({num_classes},): its last "
                        f"layer must have one unit per class")
    if not (np.isfinite(out).all() and (out >= 0).all() and np.allclose(out.sum(axis=1), 1.0, atol=1e-3)):
        raise SpecError(f"model {name!r} does not output probabilities (rows must be >= 0 and sum to 1): end it "
                        "in a Dense layer with activation='softmax'")
    return model


def fingerprint(model: keras.Model) -> str:
    """sha256 of the architecture: layer kinds in order, activations, every weight's shape and dtype (names
    and initial values left out: the same code builds the same fingerprint on every machine)."""
    parts = []
    for layer in model.layers:
        act = getattr(layer, "activation", None)
        parts.append([type(layer).__name__, getattr(act, "__name__", None) if act is not None else None,
                      [[list(w.shape), str(w.dtype)] for w in layer.weights]])
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        if len(args) != 3:
            raise SpecError("usage: python -m worker.usermodel MODULE:FUNCTION H,W,C NUM_CLASSES")
        name, shape_text, classes_text = args
        shape = tuple(int(s) for s in shape_text.split(","))
        keras.utils.set_random_seed(0)
        model = build_user_model(name, shape, int(classes_text))
    except SpecError as exc:
        print(f"glo-worker: bad model: {exc}", file=sys.stderr)
        return EXIT_BAD_SPEC
    print(json.dumps({"fingerprint": fingerprint(model), "params": int(model.count_params())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
