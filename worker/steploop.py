"""The one training step loop, and the one way its outcome becomes results, for a single model and a fused group.

A single model is the fused case with K = 1: its step returns a scalar loss, a fused step a vector of K;
the loop reads both as K values.  Both trainers (worker/train.py, worker/fused.py) build their model, their
step function and their accuracy pass, then hand them here -- so the one-step-late non-finite check, the
timing of the first (tracing) step, the accuracy curve, the collapse verdicts and the result fields are
written once, and "fused equals unfused" cannot drift apart through two copies of the loop.

Non-finite losses: step k's loss is read after step k+1 is dispatched (a GPU's queue stays full instead of
syncing each step).  The first non-finite value freezes that model: status "nonfinite", fitness 0,
`nonfinite_step` = k (1-based); the loop stops once every model is frozen, wasting at most one step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from worker.collapse import CollapseDetector, CollapseHistory
from worker.data import TaskData
from worker.schedule import FINAL_LOSS_WINDOW, BatchStream, learning_rate
from worker.spec import (
    EXTRA_COLLAPSE,
    EXTRA_LOSS_SCALE,
    STATUS_COLLAPSED,
    STATUS_NONFINITE,
    STATUS_OK,
    CandidateResult,
    CandidateSpec,
    WorkerSpec,
)

#: accuracy(x, y, detectors or None) -> one accuracy per model; with detectors, the same pass feeds model i's
#: probabilities to detectors[i].
Accuracy = Callable[[np.ndarray, np.ndarray, "Sequence[CollapseDetector] | None"], list[float]]
#: step(batch indices, step number, learning rate) -> the step's loss: a scalar (K = 1) or K values, as tensors.
Step = Callable[[np.ndarray, int, float], Any]
#: make_result(candidate, status, fitness, **CandidateResult fields) -> CandidateResult (the trainer adds its
#: device, versions and platform).
MakeResult = Callable[..., CandidateResult]


@dataclass
class Loop:
    """What the step loop measured, per model."""

    k: int
    losses: list[list[float]]
    bad_step: list[int | None]
    curves: list[list[list[float]]] | None
    test_curves: list[list[list[float]]] | None
    histories: list[CollapseHistory]
    first_step_s: float = 0.0
    train_s: float = 0.0
    eval_s: float = 0.0
    alive: list[bool] = field(default_factory=list)


def detectors(spec: WorkerSpec, data: TaskData, k: int) -> list[CollapseDetector]:
    return [CollapseDetector(spec.epsilon, data.num_classes) for _ in range(k)]


def run_steps(spec: WorkerSpec, data: TaskData, k: int, step: Step, accuracy: Accuracy) -> Loop:
    """spec.steps SGD steps of K models on the spec's seeded batches; the accuracy curve every
    `spec.curve_interval` steps (on the test set too when the spec asks for test accuracy)."""
    n_train = len(data.x_train)
    batches = BatchStream(n_train, spec.batch_size, spec.seed)
    with_curve = bool(spec.curve_interval)
    loop = Loop(k=k, losses=[[] for _ in range(k)], bad_step=[None] * k,
                curves=[[] for _ in range(k)] if with_curve else None,
                test_curves=[[] for _ in range(k)] if with_curve and spec.test_accuracy else None,
                histories=[CollapseHistory() for _ in range(k)], alive=[True] * k)
    pending: tuple[int, Any] | None = None

    def check(p: tuple[int, Any]) -> bool:
        """Record step p's losses; False once every model has gone non-finite."""
        values = np.atleast_1d(np.asarray(p[1]))
        for i in range(k):
            if loop.alive[i]:
                value = float(values[i])
                loop.losses[i].append(value)
                if not math.isfinite(value):
                    loop.alive[i], loop.bad_step[i] = False, p[0]
        return any(loop.alive)

    t_train = time.perf_counter()
    for s in range(1, spec.steps + 1):
        loss = step(batches.next(), s, learning_rate(spec, n_train, s))
        if pending is not None and not check(pending):
            pending = None
            break
        pending = (s, loss)
        if s == 1:  # the first call traces (and with XLA compiles) the step: time it apart
            np.asarray(loss)
            loop.first_step_s = time.perf_counter() - t_train
        if loop.curves is not None and s % spec.curve_interval == 0:
            ok = check(pending)
            pending = None
            if not ok:
                break
            te = time.perf_counter()
            dets = detectors(spec, data, k)
            val = accuracy(data.x_val, data.y_val, dets)
            test = accuracy(data.x_test, data.y_test, None) if loop.test_curves is not None else None
            for i in range(k):
                if loop.alive[i]:
                    loop.curves[i].append([s, val[i]])
                    loop.histories[i].observe(s, dets[i].verdict())
                    if test is not None:
                        loop.test_curves[i].append([s, test[i]])
            loop.eval_s += time.perf_counter() - te
    if pending is not None:
        check(pending)
    loop.train_s = time.perf_counter() - t_train - loop.eval_s
    return loop


def results(spec: WorkerSpec, data: TaskData, loop: Loop, cands: Sequence[CandidateSpec], accuracy: Accuracy,
            histogram: Callable[[np.ndarray], list[dict]], make_result: MakeResult,
            extra: Callable[[int], dict[str, Any]]) -> list[CandidateResult]:
    """The final validation (and test) pass and one result per candidate, in `cands` order.

    `extra(i)` gives candidate i's trainer-specific fields (determinism, data source; a fused group's
    index and size).  Timings are the group's divided by K, and `steps_per_second` is candidate-steps per
    second, so cost estimates made from either trainer's results agree."""
    k = loop.k
    te = time.perf_counter()
    final_dets = detectors(spec, data, k)
    finals_val = finals_test = hists = None
    if any(loop.alive):
        finals_val = accuracy(data.x_val, data.y_val, final_dets)
        if spec.test_accuracy:
            finals_test = accuracy(data.x_test, data.y_test, None)
            hists = histogram(data.x_test)
    loop.eval_s += time.perf_counter() - te

    steady = loop.train_s - loop.first_step_s  # steps 2..N, without tracing/compilation
    group_sps = (spec.steps - 1) / steady if spec.steps > 1 and steady > 0 else None
    common = {"train_seconds": loop.train_s / k, "eval_seconds": loop.eval_s / k}
    out = []
    for i, cand in enumerate(cands):
        losses = loop.losses[i]
        fields = {"steps_done": len(losses), "first_step_seconds": loop.first_step_s,
                  "train_size": len(data.x_train), "validation_size": len(data.x_val), **extra(i)}
        if cand.scale != 1.0:  # what the loss was multiplied by: `glo show` prints it, `glo export` applies it
            fields[EXTRA_LOSS_SCALE] = cand.scale
        curve = loop.curves[i] if loop.curves is not None else None
        test_curve = loop.test_curves[i] if loop.test_curves is not None else None
        if test_curve is not None:
            fields["test_curve"] = test_curve
        if loop.bad_step[i] is not None:
            out.append(make_result(cand, STATUS_NONFINITE, 0.0, curve=curve, final_train_loss=losses[-1],
                                   nonfinite_step=loop.bad_step[i], extra=fields, **common))
            continue
        val = finals_val[i]
        test = finals_test[i] if finals_test is not None else None
        collapsed = loop.histories[i].observe(spec.steps, final_dets[i].verdict())
        fields["validation_predictions"] = final_dets[i].summary()
        if hists is not None:
            fields["probability_histogram"] = hists[i]
        if curve is not None and (not curve or curve[-1][0] != spec.steps):
            curve.append([spec.steps, val])
        if test_curve is not None and (not test_curve or test_curve[-1][0] != spec.steps):
            test_curve.append([spec.steps, test])
        fields["steps_per_second"] = k * group_sps if group_sps else None
        if k > 1:
            fields["group_steps_per_second"] = group_sps
        final = float(np.mean(losses[-FINAL_LOSS_WINDOW:]))
        if collapsed is not None:
            fields[EXTRA_COLLAPSE] = collapsed.to_json(val, test)
            out.append(make_result(cand, STATUS_COLLAPSED, 0.0, curve=curve, final_train_loss=final,
                                   extra=fields, **common))
            continue
        out.append(make_result(cand, STATUS_OK, val, validation_accuracy=val, test_accuracy=test, curve=curve,
                               final_train_loss=final, extra=fields, **common))
    return out
