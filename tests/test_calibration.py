"""task.loss_scale = "calibrated": every loss trains at cross-entropy's gradient scale, and trees that
differ only by a positive factor are one trained loss (one cache entry, one duplicate, one exported loss)."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest

from db.session import open_db
from db.store import Store
from orchestrator.config import ConfigError, from_dict
from orchestrator.export import export, trained_scale
from orchestrator.run.cachekey import CalibratedKeys, RememberedKeys, eval_key
from orchestrator.search.calibration import Calibrator, calibration_scale, calibrator_for
from orchestrator.search.candidate import Candidate
from orchestrator.search.cma_phase import CMAPhase
from orchestrator.search.config import CMAConfig
from tests.orch_helpers import FAKE_WORKER, glo, glo_env, load_generated
from worker.lossexpr import named_loss, parse
from worker.lossexpr.coefficients import apply_pruned, kept_slots, scale_slot
from worker.lossexpr.numeric import batch_loss
from worker.spec import SpecError, WorkerSpec


# -- the calibration ------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("eg", ["straight-through", "zero"])
def test_ce_is_its_own_scale_and_a_factor_divides_out(reduction: str, eg: str) -> None:
    assert calibration_scale(named_loss("ce"), 1e-7, reduction, eg) == 1.0
    base = calibration_scale(parse("x * log(y)"), 1e-7, reduction, eg)
    tripled = calibration_scale(parse("3 * x * log(y)"), 1e-7, reduction, eg)
    assert base is not None and tripled is not None
    assert abs(tripled * 3 - base) <= 1e-12 * base
    baikal = calibration_scale(named_loss("baikal"), 1e-7, reduction, eg)
    scaled = calibration_scale(parse("2.5 * (log(y) - x / y)"), 1e-7, reduction, eg)
    assert baikal is not None and scaled is not None and abs(scaled * 2.5 - baikal) <= 1e-12 * baikal
    # positive: the sign of a loss is its direction, and calibration keeps it
    assert calibration_scale(parse("(0 - x) * log(y)"), 1e-7, reduction, eg) == pytest.approx(base, rel=1e-12)


def test_a_tree_without_a_usable_gradient_is_not_calibrated() -> None:
    assert calibration_scale(parse("y - x")) is None  # Σ_classes y = 1: zero gradient on the logits
    assert calibration_scale(parse("1000 * (y - x)")) is None  # the same verdict at any scale
    assert calibration_scale(parse("x * (y - y)")) is None
    assert calibration_scale(parse("x * log(y - 1)")) is None  # log of a negative: not finite
    assert Calibrator(1e-7, "mean", "straight-through").train_scale(parse("y - x")) == 1.0


def test_only_a_calibrated_task_gets_a_calibrator() -> None:
    assert calibrator_for(from_dict({}).task) is None
    assert calibrator_for(from_dict({"task": {"loss_scale": "calibrated"}}).task) is not None


# -- spec -------------------------------------------------------------------------------------------
def _raw(**cand: object) -> dict:
    return {"glo_worker_spec": 1, "task": "mnist", "candidates": [{"id": "a", "tree": parse("x*log(y)").to_json(),
                                                                  **cand}]}


def test_scale_one_keeps_the_spec_hash_and_other_scales_round_trip() -> None:
    plain = WorkerSpec.from_json(_raw())
    one = WorkerSpec.from_json(_raw(scale=1.0))
    assert one.spec_hash() == plain.spec_hash() and "scale" not in one.to_json()["candidates"][0]
    scaled = WorkerSpec.from_json(_raw(scale=0.25))
    assert scaled.candidates[0].scale == 0.25 and scaled.spec_hash() != plain.spec_hash()
    assert WorkerSpec.from_json(scaled.to_json()) == scaled


@pytest.mark.parametrize("bad", [0, -1, "a", float("nan"), float("inf"), True, None])
def test_a_bad_scale_is_a_spec_error_naming_the_field(bad: object) -> None:
    with pytest.raises(SpecError, match=r"candidates\[0\]\.scale"):
        WorkerSpec.from_json(_raw(scale=bad))


# -- config -------------------------------------------------------------------------------------------
def test_loss_scale_is_checked_and_enters_the_budget_only_when_set() -> None:
    with pytest.raises(ConfigError, match=r"task\.loss_scale"):
        from_dict({"task": {"loss_scale": "bogus"}})
    plain, cal = from_dict({}), from_dict({"task": {"loss_scale": "calibrated"}})
    assert "loss_scale" not in plain.task.budget() and "loss_scale" not in plain.to_dict()["task"]
    assert cal.task.budget()["loss_scale"] == "calibrated" and cal.to_dict()["task"]["loss_scale"] == "calibrated"
    assert from_dict(cal.to_dict()).task.loss_scale == "calibrated"


# -- keys -------------------------------------------------------------------------------------------
def test_calibrated_keys_are_scale_free_and_apart_from_plain_ones(tmp_path: Path) -> None:
    store = Store(open_db(tmp_path / "k.db", create=True))
    plain = RememberedKeys(store)
    keys = CalibratedKeys(store, Calibrator(1e-7, "mean", "straight-through").scale, plain)
    f, f3, half = parse("x * log(y)"), parse("3 * x * log(y)"), parse("0.5 * x * log(y)")
    assert keys(f) == keys(f3) == keys(half) and keys(f).startswith("c1:")
    assert plain(f) != plain(f3)  # uncalibrated, 3*f is another loss
    assert keys(parse("(0 - x) * log(y)")) != keys(f)  # the sign is the direction: never merged
    assert keys(named_loss("baikal")) != keys(f)
    # not calibratable: trains unscaled, so the factor counts
    assert keys(parse("y - x")).startswith("c1:u:") and keys(parse("y - x")) != keys(parse("2 * (y - x)"))
    # remembered beside the plain keys, not over them
    assert RememberedKeys(store)(f) == plain(f) and not plain(f).startswith("c1:")
    none, cal = from_dict({}).task, from_dict({"task": {"loss_scale": "calibrated"}}).task
    assert eval_key(keys(f), cal) != eval_key(keys(f), none)


def test_calibrated_key_runs_agree_on_the_grid_for_positive_multiples() -> None:
    from worker.lossexpr.canonical import scale_free_key

    for text in ("log(y) - x / y", "x * log(y) / (y + 1)", "square(x - y)", "sqrt(y) * x"):
        tree = parse(text)
        assert scale_free_key(tree) == scale_free_key(parse(f"7 * ({text})"))
        assert scale_free_key(tree) != scale_free_key(parse(f"(0 - 1) * ({text})"))


# -- CMA-ES -----------------------------------------------------------------------------------------
def test_the_overall_scale_slot_is_dropped_only_where_it_is_one() -> None:
    ce = parse("x * log(y)")
    assert kept_slots(ce) == [1, 3] and scale_slot(ce) == 1 and kept_slots(ce, drop_scale=True) == [3]
    baikal = named_loss("baikal")  # a difference at the root: no overall slot
    assert scale_slot(baikal) is None and kept_slots(baikal, drop_scale=True) == kept_slots(baikal)
    ratio = parse("(x * log(y)) / y")  # through the numerator of /
    assert scale_slot(ratio) == 2 and kept_slots(ratio, drop_scale=True) == [4]
    assert kept_slots(parse("x * y"), drop_scale=True) == [1]  # its only slot stays: something to tune
    # the dropped slot keeps the base's value (its sign), the tuned ones are set
    assert scale_slot(parse("(0 - x) * log(y)")) is None  # its factor is absorbed into the difference's terms
    base = parse("log(y) * (0 - x)").with_coefficients([1.0, -2.0, 1.0, 1.0, 1.0, 1.0])
    assert scale_slot(base) == 1 and kept_slots(base, drop_scale=True) == [2, 4, 5]
    tuned = apply_pruned(base, [0.5, 0.5, 0.5], drop_scale=True)
    assert tuned.coefficients() == [1.0, -2.0, 0.5, 1.0, 0.5, 0.5]


def test_cma_phase_tunes_fewer_coefficients_and_restores_the_flag() -> None:
    base = Candidate("g1-0", parse("x * log(y) * sqrt(y)"), "crossover", 1)
    cfg = CMAConfig(top_k=1, popsize=4, iterations=2)
    plain, dropped = CMAPhase(0, base, cfg, 7), CMAPhase(0, base, cfg, 7, drop_scale=True)
    assert dropped.n == plain.n - 1
    assert "drop_scale" not in plain.to_json()
    batch = dropped.ask()
    restored = CMAPhase.from_json(json.loads(json.dumps(dropped.to_json())))
    assert restored.drop_scale and [c.tree for c in restored.outstanding()] == [c.tree for c in batch]


# -- export -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_export_of_a_calibrated_candidate_is_scale_times_the_tree(tmp_path: Path, reduction: str) -> None:
    tree = named_loss("baikal")
    task = {"loss_scale": "calibrated", "epsilon": 1e-7, "class_reduction": reduction,
            "epsilon_gradient": "straight-through"}
    scale, source = trained_scale(task, tree)
    assert source == "recomputed" and scale == calibration_scale(tree, 1e-7, reduction)
    assert trained_scale(task, tree, {"loss_scale": 0.125}, measured_here=True) == (0.125, "stored")
    assert trained_scale(task, tree, {"loss_scale": 0.125}, measured_here=False)[1] == "recomputed"
    assert trained_scale({"loss_scale": "none"}, tree) is None
    module = load_generated(tmp_path, f"cal_{reduction}", export(tree, "python", class_reduction=reduction, scale=scale))
    rng = np.random.default_rng(5)
    labels = np.eye(10)[rng.integers(0, 10, 32)]
    probs = rng.dirichlet(np.ones(10), 32)
    unscaled = batch_loss(tree, labels, np.clip(probs, 1e-7, 1.0), reduction)
    assert module.glo_loss(labels, probs) == pytest.approx(scale * unscaled, rel=1e-12)
    assert "LOSS_SCALE" not in export(tree, "python", class_reduction=reduction)  # unscaled: as before


# -- a run ------------------------------------------------------------------------------------------
def _config(path: Path, loss_scale: str) -> Path:
    path.write_text(f"""
[task]
steps = 20
loss_scale = "{loss_scale}"

[backend]
max_in_flight = 1
candidates_per_job = 1
worker_command = ["{sys.executable}", "{FAKE_WORKER}"]
""")
    return path


def _evaluate(cfg: Path, db: Path, run_id: str, loss: str, env: dict[str, str]) -> None:
    r = glo("evaluate", loss, "--repeats", "1", "--config", str(cfg), "--db", str(db), "--run-id", run_id,
            "--json", env=env)
    assert r.returncode == 0, r.stderr[-3000:]


def _rows(db: Path, run_id: str) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute("select c.status, c.fitness, c.eval_key, c.uid from candidates c where c.run_id = ?",
                           (run_id,)).fetchall()
    finally:
        con.close()


def test_a_positive_multiple_is_a_cache_hit_only_when_calibrated(tmp_path: Path) -> None:
    log = tmp_path / "trainings.log"
    env = glo_env(log)
    cal, db = _config(tmp_path / "cal.toml", "calibrated"), tmp_path / "cal.db"
    _evaluate(cal, db, "a", "2 * x * log(y)", env)
    _evaluate(cal, db, "b", "3 * x * log(y)", env)
    (sa, fa, ka, ua), (sb, fb, kb, ub) = _rows(db, "a")[0], _rows(db, "b")[0]
    assert sa == "evaluated" and sb == "cached" and ka == kb and fa == fb
    assert sum(line.startswith("done ") for line in log.read_text().splitlines()) == 1
    con = sqlite3.connect(db)
    (metrics,) = con.execute("select metrics_json from evaluations").fetchone()
    con.close()
    stored = json.loads(metrics)["extra"]["loss_scale"]  # the worker trained 2*f at s(f) / 2
    assert stored == pytest.approx(calibration_scale(parse("x * log(y)")) / 2, rel=1e-12)
    # glo show prints the scale each candidate trained with: its own evaluation's, or recomputed for a hit
    shown = json.loads(glo("show", ub, "--db", str(db), "--json", env=env).stdout)
    assert shown["loss_scale"]["scale"] == pytest.approx(stored * 2 / 3, rel=1e-12)
    assert "loss scale" in glo("show", ua, "--db", str(db), env=env).stdout
    exported = json.loads(glo("export", ub, "--format", "python", "--db", str(db), "--json", env=env).stdout)
    assert exported["loss_scale"] == shown["loss_scale"]["scale"] and "LOSS_SCALE" in exported["code"]

    none, db2 = _config(tmp_path / "none.toml", "none"), tmp_path / "none.db"
    _evaluate(none, db2, "a", "2 * x * log(y)", env)
    _evaluate(none, db2, "b", "3 * x * log(y)", env)
    (sa, _, ka, ua), (sb, _, kb, _) = _rows(db2, "a")[0], _rows(db2, "b")[0]
    assert sa == sb == "evaluated" and ka != kb
    assert "loss_scale" not in json.loads(glo("show", ua, "--db", str(db2), "--json", env=env).stdout)


@pytest.mark.tf
def test_the_worker_trains_a_multiple_at_its_scale_like_the_tree(tmp_path: Path) -> None:
    """3·f at scale s/3 and f at scale s are the same trained loss: the same weights, up to float32 rounding
    (here: the same accuracy and training loss); 3·f unscaled is not."""
    pytest.importorskip("tensorflow")
    from tests.test_worker_train import _mnist_like, _spec
    from worker.data import load_task
    from worker.spec import CandidateSpec, read_results
    from worker.train import run_spec

    _mnist_like(tmp_path / "mnist.npz")
    f, f3 = parse("x * log(y)"), parse("3 * x * log(y)")
    spec = _spec(tmp_path, [("f", f)], steps=25, curve_interval=None, test_accuracy=False, fuse=1)
    spec = WorkerSpec.from_json({**spec.to_json(), "candidates": [
        CandidateSpec("f", f, 2.0).to_json(), CandidateSpec("f3", f3, 2.0 / 3).to_json(),
        CandidateSpec("f3raw", f3).to_json()]})
    run_spec(spec, load_task(spec), tmp_path / "r.json")
    a, b, raw = read_results(tmp_path / "r.json")[1]
    assert a.status == b.status == "ok"
    assert a.extra["loss_scale"] == 2.0 and b.extra["loss_scale"] == pytest.approx(2.0 / 3)
    assert "loss_scale" not in raw.extra
    assert b.fitness == pytest.approx(a.fitness, abs=0.011)  # at most one of 100 validation images apart
    assert b.final_train_loss == pytest.approx(a.final_train_loss, rel=1e-4)
    assert raw.final_train_loss != pytest.approx(a.final_train_loss, rel=1e-2)  # 3·f at scale 1 trains otherwise
