"""A test-only worker: same CLI and spec/result files as `python -m worker`, no TensorFlow.

Fitness is a deterministic, smooth function of the tree (so CMA-ES has something to climb):
how much lower the loss is on right predictions than on wrong ones, squashed into (0, 1).
Every candidate start and finish is appended to $GLO_FAKE_WORKER_LOG (one line each) so that
tests can count trainings; $GLO_FAKE_WORKER_SLEEP adds a pause per candidate, and
$GLO_FAKE_WORKER_FAIL names infix substrings whose candidates make the worker crash, and
$GLO_FAKE_WORKER_CORRUPT substrings whose candidates make it leave a corrupt result file.
$GLO_FAKE_WORKER_ZERO=1 trains every candidate to fitness 0 (a task on which nothing learns).
$GLO_FAKE_WORKER_BEST_LR = "INFIX=LR;...;*=LR" gives each loss a best learning rate: its fitness (validation
and test accuracy alike) falls off with the distance of the spec's rate from it, in decades (the learning-rate
grid tests); a loss it does not name, without "*", is not affected.

For the pool-utilisation bench (tests/bench/bench_pool.py): $GLO_FAKE_WORKER_TIMES =
"MEDIAN:SIGMA:P:FACTOR" sleeps a lognormal time per candidate (median MEDIAN s, sigma SIGMA; with
probability P a straggler that takes FACTOR x MEDIAN s instead), drawn from a hash of the candidate so a rerun sleeps the
same -- or, with $GLO_FAKE_WORKER_TIMES_PER=attempt, from a hash of the candidate and the job attempt's
directory (job-N/aK), so that a copy or a retry of it draws afresh: a job slow because of where it ran
(queue, node, eviction) rather than because of what it trains; $GLO_FAKE_WORKER_TARGET = an infix makes
the fitness search_synthetic's (closeness to that loss).

$GLO_FAKE_WORKER_PLACES = "job-N/aK=SECONDS;job-M/aL=crash;..." makes one job attempt sleep that long
per candidate or crash (exit 70) whatever it holds: a slow node or a bad one, for the backup-copy tests.

Faults that strike once (the cluster tests' "a bad node, then a good one"): $GLO_FAKE_WORKER_BADNODE
and $GLO_FAKE_WORKER_NORESULT name infix substrings; the first job holding such a candidate exits
"bad node" (75, recorded in the result file like the real worker does) or exits 0 without writing any
result file.  Which faults have struck is remembered as files in $GLO_FAKE_WORKER_ONCE_DIR.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from worker.lossexpr import to_infix
from worker.lossexpr.numeric import batch_loss
from worker.spec import EXIT_BAD_NODE, CandidateResult, SpecError, load_spec, record_exit, write_results

_RNG = np.random.default_rng(1234)
_ONEHOT = np.eye(10)[_RNG.integers(0, 10, 64)]
_LABELS = 0.9 * _ONEHOT + 0.01  # smoothed, so that x in a denominator or log stays finite
_GOOD = np.clip(0.7 * _ONEHOT + 0.3 * _RNG.dirichlet(np.ones(10), 64), 1e-7, 1.0)
_BAD = np.clip(_RNG.dirichlet(np.ones(10), 64), 1e-7, 1.0)


def fitness_of(tree) -> tuple[str, float]:  # type: ignore[no-untyped-def]
    good, bad = batch_loss(tree, _LABELS, _GOOD), batch_loss(tree, _LABELS, _BAD)
    gap = bad - good
    if not math.isfinite(gap):
        return "nonfinite", 0.0
    return "ok", round(1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, gap)))), 12)


def rate_factor(infix: str, learning_rate: float) -> float:
    """$GLO_FAKE_WORKER_BEST_LR's factor on the fitness of `infix` trained at `learning_rate`: 1 at the loss's
    best rate, exp(-d^2) at d decades from it."""
    best = {}
    for entry in os.environ.get("GLO_FAKE_WORKER_BEST_LR", "").split(";"):
        name, _, rate = entry.rpartition("=")
        if name.strip():
            best[name.strip()] = float(rate)
    peak = best.get(infix, best.get("*"))
    if peak is None:
        return 1.0
    return math.exp(-math.log10(learning_rate / peak) ** 2)


def _test_measures(spec, fit: float, salt: int) -> tuple[float | None, dict]:  # type: ignore[no-untyped-def]
    """What `glo evaluate` asks for: a test accuracy that depends on the seed and the training fraction
    (deterministically, so repeats differ the way real ones do), its curve and a probability histogram."""
    if not spec.test_accuracy:
        return None, {}
    wiggle = (((spec.seed + 1) * (salt * 13 + 7)) % 11 - 5) / 1000.0
    test = max(0.0, min(1.0, fit + wiggle - 0.05 * (1.0 - (spec.train_fraction or 1.0))))
    extra: dict = {"probability_histogram": {"edges": [i / 20 for i in range(21)],
                                             "counts": [int(1000 * (1 - test)) if i < 19 else int(1000 * test)
                                                        for i in range(20)]}}
    if spec.curve_interval:
        steps = list(range(spec.curve_interval, spec.steps + 1, spec.curve_interval))
        extra["test_curve"] = [[s, round(test * s / spec.steps, 6)] for s in steps]
    return test, extra


def attempt_place(spec_path: str) -> str:
    """Which job attempt this is, "job-N/aK": from the spec's directory (local: <run>/job-N/aK/spec.json), or
    on an HTCondor execute node, whose scratch directory says nothing, from the job's own ad
    ($_CONDOR_JOB_AD: the +GloJobId and +GloAttempt GLO tags every job with)."""
    ad_file = os.environ.get("_CONDOR_JOB_AD")
    if ad_file and os.path.exists(ad_file):
        ad = dict(line.split(" = ", 1) for line in Path(ad_file).read_text().splitlines() if " = " in line)
        if "GloJobId" in ad and "GloAttempt" in ad:
            return f"job-{ad['GloJobId'].strip()}/a{ad['GloAttempt'].strip()}"
    parts = Path(spec_path).resolve().parts
    return "/".join(parts[-3:-1])


def place_fault(here: str) -> str | None:
    """What $GLO_FAKE_WORKER_PLACES says of the job attempt `here` ("job-N/aK"): seconds to sleep, "crash",
    or None."""
    for entry in os.environ.get("GLO_FAKE_WORKER_PLACES", "").split(";"):
        place, _, what = entry.partition("=")
        if place.strip() == here:
            return what.strip()
    return None


def job_seconds(candidate_id: str, infix: str, here: str) -> float | None:
    """The sleep of one candidate in the job attempt `here` ("job-N/aK"): what $GLO_FAKE_WORKER_PLACES names
    for it, else $GLO_FAKE_WORKER_TIMES' heavy-tailed draw (None when neither is set)."""
    fault = place_fault(here)
    if fault is not None and fault != "crash":
        return float(fault)
    times = os.environ.get("GLO_FAKE_WORKER_TIMES")
    if not times:
        return None
    per_attempt = os.environ.get("GLO_FAKE_WORKER_TIMES_PER", "candidate") == "attempt"
    return draw_seconds(candidate_id, infix, times, here if per_attempt else "")


def draw_seconds(candidate_id: str, infix: str, times: str, place: str = "") -> float:
    """The sleep of one candidate under "MEDIAN:SIGMA:P:FACTOR": a pure function of the candidate (and of the
    attempt's `place`, when given), so that the pool bench can tell afterwards how much of each job was the
    job itself (its sleep) and how much was start-up and dispatch."""
    median, sigma, p, factor = (float(v) for v in times.split(":"))
    key = f"{candidate_id} {infix}" + (f" {place}" if place else "")
    rng = np.random.default_rng(int(hashlib.sha256(key.encode()).hexdigest()[:12], 16))
    t = median * math.exp(sigma * rng.standard_normal())
    return median * factor if rng.random() < p else t


def _synthetic_fitness():  # type: ignore[no-untyped-def]
    target = os.environ.get("GLO_FAKE_WORKER_TARGET")
    if not target:
        return None
    from tests.bench.search_synthetic import make_fitness
    from worker.lossexpr import parse

    return make_fitness(parse(target))


def _strike_once(fault: str, infixes: list[str]) -> bool:
    """True the first time a job holds a candidate matching $GLO_FAKE_WORKER_<fault> (then never again)."""
    wanted = [w for w in os.environ.get(f"GLO_FAKE_WORKER_{fault}", "").split(";") if w]
    once_dir = os.environ.get("GLO_FAKE_WORKER_ONCE_DIR")
    if not wanted or not once_dir or not any(w in i for w in wanted for i in infixes):
        return False
    try:
        fd = os.open(os.path.join(once_dir, fault.lower()), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("spec")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    try:
        spec = load_spec(args.spec)
    except SpecError as exc:
        print(f"bad spec: {exc}", file=sys.stderr)
        return 65
    log = os.environ.get("GLO_FAKE_WORKER_LOG")
    sleep = float(os.environ.get("GLO_FAKE_WORKER_SLEEP", "0"))
    fail = [s for s in os.environ.get("GLO_FAKE_WORKER_FAIL", "").split(";") if s]
    corrupt = [s for s in os.environ.get("GLO_FAKE_WORKER_CORRUPT", "").split(";") if s]
    results: list[CandidateResult] = []
    infixes = [to_infix(c.tree) for c in spec.candidates]
    here = attempt_place(args.spec)  # read once: on an execute node it reads the job ad
    crash_here = place_fault(here) == "crash"
    synthetic = _synthetic_fitness()
    if _strike_once("BADNODE", infixes):
        print("glo-worker: bad node: fake: this machine cannot train", file=sys.stderr)
        record_exit(args.out, spec.spec_hash(), EXIT_BAD_NODE, "bad node: fake: this machine cannot train")
        return EXIT_BAD_NODE
    if _strike_once("NORESULT", infixes):
        print("fake worker: exiting 0 without a result file", file=sys.stderr)
        return 0
    for cand in spec.candidates:
        infix = to_infix(cand.tree)
        if log:
            with open(log, "a") as fh:
                fh.write(f"start {cand.id} {infix}\n")
        if any(f in infix for f in fail) or crash_here:
            print(f"fake worker: crashing on {infix}", file=sys.stderr)
            return 70
        if any(c in infix for c in corrupt):
            Path(args.out).write_text('{"glo_worker_result": 1, "results": [tru')
            return 0
        pause = job_seconds(cand.id, infix, here)
        time.sleep(sleep if pause is None else pause)
        if synthetic is not None:
            status, fit = "ok", synthetic(cand.tree)
        else:
            status, fit = ("ok", 0.0) if os.environ.get("GLO_FAKE_WORKER_ZERO") == "1" else fitness_of(cand.tree)
        fit = round(fit * rate_factor(infix, spec.learning_rate), 12)
        test, extra = _test_measures(spec, fit, len(infix))
        if getattr(cand, "scale", 1.0) != 1.0:  # echoed as the real worker does (worker/steploop.py)
            from worker.spec import EXTRA_LOSS_SCALE  # here: a test whose jobs import another checkout's worker

            extra = {**extra, EXTRA_LOSS_SCALE: cand.scale}
        results.append(CandidateResult(cand.id, status, fit, validation_accuracy=fit, test_accuracy=test,
                                       wall_seconds=sleep, train_seconds=sleep, device="fake",
                                       spec_hash=spec.spec_hash(), extra=extra))
        write_results(Path(args.out), spec.spec_hash(), results)
        if log:
            with open(log, "a") as fh:
                fh.write(f"done {cand.id} {infix}\n")
    write_results(Path(args.out), spec.spec_hash(), results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
