"""task.name = "custom" (issue 20): a user's npz data set and Keras model, through `glo run` as a user runs it.

A synthetic 3-class task (8x8 images; class c has a bright band at rows 3c..3c+2) and a test module of
models written into a directory that only the jobs' PYTHONPATH names.  Real TensorFlow trains every
candidate (tens of steps on 240 images)."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from tests.orch_helpers import glo, glo_env, scalar

pytestmark = pytest.mark.slow

MODELS = '''
import keras

def small_cnn(input_shape, num_classes):
    inp = keras.Input(input_shape)
    h = keras.layers.Conv2D(8, 3, activation="relu")(inp)
    h = keras.layers.Flatten()(h)
    return keras.Model(inp, keras.layers.Dense(num_classes, activation="softmax")(h))

def mlp(input_shape, num_classes):
    inp = keras.Input(input_shape)
    h = keras.layers.Dense(16, activation="relu")(keras.layers.Flatten()(inp))
    return keras.Model(inp, keras.layers.Dense(num_classes, activation="softmax")(h))

def logits(input_shape, num_classes):
    inp = keras.Input(input_shape)
    return keras.Model(inp, keras.layers.Dense(num_classes)(keras.layers.Flatten()(inp)))

def wrong_width(input_shape, num_classes):
    inp = keras.Input(input_shape)
    return keras.Model(inp, keras.layers.Dense(num_classes + 1, activation="softmax")(keras.layers.Flatten()(inp)))
'''


def three_class(path: Path, n: int = 300, n_train: int = 240) -> Path:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n).astype(np.int64)
    x = rng.integers(0, 60, (n, 8, 8)).astype(np.uint8)
    for i, c in enumerate(y):
        x[i, 3 * c:3 * c + 2, :] = 250
    np.savez(path, x_train=x[:n_train], y_train=y[:n_train], x_test=x[n_train:], y_test=y[n_train:])
    path.chmod(0o644)
    return path


def models_dir(root: Path, source: str = MODELS) -> Path:
    d = root / "usermodels"
    d.mkdir(exist_ok=True)
    (d / "glo_test_models.py").write_text(source)
    return d


def custom_config(path: Path, data: Path, model: str, *, name: str = "custom-test", population: int = 6,
                  extra: str = "") -> Path:
    path.write_text(f"""
[run]
name = "{name}"
seed = 0

[task]
name = "custom"
data_path = "{data}"
model = "{model}"
steps = 20
batch_size = 32
learning_rate = 0.1
validation_size = 60
class_reduction = "sum"
{extra}

[search.ga]
population_size = {population}
generations = 1
elites = 1

[search.cma]
top_k = 1
iterations = 1
popsize = 2
""")
    return path


def env_with(models: Path) -> dict[str, str]:
    env = glo_env()
    env["PYTHONPATH"] = env["PYTHONPATH"] + os.pathsep + str(models)
    return env


def test_a_search_on_a_users_model_and_data_and_a_second_model_gets_no_cache_hits(tmp_path: Path) -> None:
    data, models = three_class(tmp_path / "three.npz"), models_dir(tmp_path)
    db = tmp_path / "r.db"
    for rid, model in (("cnn", "glo_test_models:small_cnn"), ("mlp", "glo_test_models:mlp"),
                       ("cnn-again", "glo_test_models:small_cnn")):
        cfg = custom_config(tmp_path / f"{rid}.toml", data, model)
        r = glo("run", str(cfg), "--db", str(db), "--run-id", rid, "--no-progress", env=env_with(models), timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
    trained = {rid: scalar(db, f"select count(*) from candidates where run_id = '{rid}' and status = 'evaluated'")
               for rid in ("cnn", "mlp", "cnn-again")}
    cached = {rid: scalar(db, f"select count(*) from candidates where run_id = '{rid}' and status = 'cached'")
              for rid in ("cnn", "mlp", "cnn-again")}
    assert trained["cnn"] >= 4 and trained["mlp"] >= 4
    assert cached["mlp"] == 0, cached  # the same trees, the same data, another model: nothing served
    assert trained["cnn-again"] == 0 and cached["cnn-again"] >= 4, (trained, cached)  # the same model: all served
    con = sqlite3.connect(db)
    budgets = [json.loads(b) for (b,) in con.execute("select budget_json from evaluations")]
    assert {b["model"] for b in budgets} == {"glo_test_models:small_cnn", "glo_test_models:mlp"}
    assert len({b["model_fingerprint"] for b in budgets}) == 2 and len({b["data_sha256"] for b in budgets}) == 1
    fitness = con.execute("select max(fitness) from evaluations where run_id = 'cnn'").fetchone()[0]
    assert fitness > 0.6  # three classes, a band per class: a real model learns it in 20 steps

    # Reading the results never imports the user's module: replace it by one that leaves a mark on import.
    marker = tmp_path / "imported"
    models_dir(tmp_path, f"open({str(marker)!r}, 'w').write('imported')\n" + MODELS)
    env = env_with(models)
    best = json.loads(glo("best", "cnn", "--db", str(db), "--json", env=env).stdout)[0]["candidate_id"]
    for args in (("status", "cnn"), ("show", best), ("export", best),
                 ("report", "cnn", "--out", str(tmp_path / "report"))):
        r = glo(*args, "--db", str(db), env=env)
        assert r.returncode == 0, (args, r.stderr[-2000:])
    assert not marker.exists()


def test_glo_evaluate_on_a_custom_task(tmp_path: Path) -> None:
    data, models = three_class(tmp_path / "three.npz"), models_dir(tmp_path)
    cfg = custom_config(tmp_path / "c.toml", data, "glo_test_models:small_cnn")
    db = tmp_path / "e.db"
    r = glo("evaluate", "ce", "(y - x) / sqrt(y)", "--config", str(cfg), "--repeats", "2", "--db", str(db), "--json",
            "--no-progress", env=env_with(models), timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {row["loss"]: row for row in json.loads(r.stdout)["summary"]}
    assert rows["ce"]["n"] == 2 and rows["(y - x) / sqrt(y)"]["n"] == 2


def bad_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


X8 = np.zeros((100, 8, 8), np.uint8)
Y3 = np.arange(100) % 3


@pytest.mark.parametrize("arrays, message", [
    ({"x_train": X8, "y_train": Y3, "x_test": X8}, "lacks array(s) y_test"),
    ({"x_train": X8[:, 0], "y_train": Y3, "x_test": X8, "y_test": Y3}, "x_train must be images"),
    ({"x_train": X8, "y_train": Y3.astype(float), "x_test": X8, "y_test": Y3}, "y_train must be integer labels"),
    ({"x_train": X8, "y_train": Y3[:90], "x_test": X8, "y_test": Y3}, "y_train has 90 labels for 100 images"),
    ({"x_train": X8, "y_train": Y3 - 1, "x_test": X8, "y_test": Y3}, "y_train labels must be >= 0"),
    ({"x_train": X8, "y_train": Y3, "x_test": X8[:, :4], "y_test": Y3}, "differ in image shape"),
    ({"x_train": X8.astype(np.float32) * np.nan, "y_train": Y3, "x_test": X8.astype(np.float32),
      "y_test": Y3}, "NaN or infinite"),
])
def test_a_bad_data_file_is_one_clear_line_and_stores_nothing(tmp_path: Path, arrays: dict, message: str) -> None:
    data = bad_npz(tmp_path / "bad.npz", **arrays)
    cfg = custom_config(tmp_path / "c.toml", data, "glo_test_models:small_cnn")
    db = tmp_path / "r.db"
    r = glo("run", str(cfg), "--db", str(db), env=env_with(models_dir(tmp_path)))
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "task.data_path" in lines[0] and message in lines[0], r.stderr
    assert scalar(db, "select count(*) from runs") == 0


@pytest.mark.parametrize("model, message", [
    ("os:system; rm -rf /", "must be 'package.module:function'"),
    ("glo_test_models.small_cnn", "must be 'package.module:function'"),
    ("no_such_module_here:f", "does not import here"),
    ("glo_test_models:absent", "has no function 'absent'"),
    ("glo_test_models:logits", "does not output probabilities"),
    ("glo_test_models:wrong_width", "not (3,)"),
])
def test_a_bad_model_is_one_clear_line_and_stores_nothing(tmp_path: Path, model: str, message: str) -> None:
    cfg = custom_config(tmp_path / "c.toml", three_class(tmp_path / "three.npz"), model)
    db = tmp_path / "r.db"
    r = glo("run", str(cfg), "--db", str(db), env=env_with(models_dir(tmp_path)), timeout=300)
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "task.model" in lines[0] and message in lines[0], r.stderr
    assert scalar(db, "select count(*) from runs") == 0


def test_custom_settings_are_checked(tmp_path: Path) -> None:
    data = three_class(tmp_path / "three.npz")
    for extra, message in (('preprocess = "whiten"', "task.preprocess: must be one of"),
                           ("train_subset = 10", None)):
        cfg = custom_config(tmp_path / "c.toml", data, "glo_test_models:small_cnn", extra=extra)
        if message is None:  # the split: validation_size = 240 of 240 training images
            cfg.write_text(cfg.read_text().replace("validation_size = 60", "validation_size = 240"))
            message = "leaves no training images out of 240"
        r = glo("run", str(cfg), "--db", str(tmp_path / "r.db"), env=env_with(models_dir(tmp_path)), timeout=300)
        assert r.returncode != 0 and message in r.stderr, r.stderr
    cfg = tmp_path / "m.toml"
    cfg.write_text('[task]\nname = "mnist"\nmodel = "glo_test_models:small_cnn"\n')
    r = glo("run", str(cfg), "--db", str(tmp_path / "r.db"))
    assert r.returncode != 0 and 'task.model: only for task.name = "custom"' in r.stderr, r.stderr
    cfg = custom_config(tmp_path / "f.toml", data, "glo_test_models:small_cnn")
    cfg.write_text(cfg.read_text() + "\n[backend]\nfuse = 4\n")
    r = glo("run", str(cfg), "--db", str(tmp_path / "r.db"), env=env_with(models_dir(tmp_path)))
    assert r.returncode != 0 and "backend.fuse: 4 -- a custom model" in r.stderr, r.stderr


def test_the_worker_refuses_another_file_or_another_architecture(tmp_path: Path) -> None:
    """What a node does with a spec whose data_sha256 or model_fingerprint its files do not match: exit 66 /
    65 with the reason, so the run stops instead of caching a fitness under the wrong key."""
    import subprocess
    import sys

    from worker.lossexpr.infix import parse

    data, models = three_class(tmp_path / "three.npz"), models_dir(tmp_path)
    spec = {"glo_worker_spec": 1, "task": "custom", "data_path": str(data), "model": "glo_test_models:small_cnn",
            "steps": 2, "batch_size": 16, "validation_size": 60,
            "candidates": [{"id": "ce", "tree": parse("x * log(y)").to_json()}]}
    env = env_with(models)
    for field, code, message in (("data_sha256", 66, "the run's file is"),
                                 ("model_fingerprint", 65, "builds another architecture here")):
        (tmp_path / "s.json").write_text(json.dumps({**spec, field: "0" * 64}))
        r = subprocess.run([sys.executable, "-m", "worker", str(tmp_path / "s.json"), "--out",
                            str(tmp_path / "o.json")], capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == code and message in r.stderr, r.stderr[-2000:]


@pytest.mark.parametrize("preprocess", ["standardize", "none"])
def test_float_images_with_channels_train_under_each_preprocess(tmp_path: Path, preprocess: str) -> None:
    """(N, H, W, C) float32 images, not uint8: the worker keeps them float32, preprocesses them as asked."""
    import subprocess
    import sys

    from worker.lossexpr.infix import parse

    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    x = rng.normal(5.0, 2.0, (300, 6, 6, 2)).astype(np.float32)
    for i, c in enumerate(y):
        x[i, 2 * c:2 * c + 2, :, 0] += 20.0
    data = tmp_path / "float.npz"
    np.savez(data, x_train=x[:240], y_train=y[:240], x_test=x[240:], y_test=y[240:])
    spec = {"glo_worker_spec": 1, "task": "custom", "data_path": str(data), "model": "glo_test_models:small_cnn",
            "preprocess": preprocess, "steps": 30, "batch_size": 32, "learning_rate": 0.05, "validation_size": 60,
            "class_reduction": "sum", "test_accuracy": True,
            "candidates": [{"id": "ce", "tree": parse("x * log(y)").to_json()}]}
    (tmp_path / "s.json").write_text(json.dumps(spec))
    r = subprocess.run([sys.executable, "-m", "worker", str(tmp_path / "s.json"), "--out", str(tmp_path / "o.json")],
                       capture_output=True, text=True, env=env_with(models_dir(tmp_path)), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (result,) = json.loads((tmp_path / "o.json").read_text())["results"]
    assert result["status"] == "ok" and result["fitness"] > 0.6, result
