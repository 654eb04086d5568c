"""`python -m worker` exit codes and messages for the cheap failures (no TensorFlow import needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from worker.lossexpr import named_loss
from worker.spec import EXIT_BAD_NODE, EXIT_BAD_SPEC, EXIT_MISSING_DATA, read_results, read_worker_exit


def _run(tmp_path, spec: dict | str, **env) -> subprocess.CompletedProcess:
    path = tmp_path / "spec.json"
    path.write_text(spec if isinstance(spec, str) else json.dumps(spec))
    full_env = {k: v for k, v in os.environ.items() if k != "GLO_DATA_DIR"}
    full_env.update({"GLO_DATA_DOWNLOAD": "0", "KERAS_HOME": str(tmp_path / "kh"), **env})
    return subprocess.run([sys.executable, "-m", "worker", str(path), "--out", str(tmp_path / "r.json")],
                          capture_output=True, text=True, env=full_env, timeout=60)


def _spec(**kw) -> dict:
    spec = {"glo_worker_spec": 1, "task": "mnist", "candidates": [{"id": "a", "tree": named_loss("ce").to_json()}]}
    spec.update(kw)
    return spec


def test_bad_spec_exit_65_names_the_field(tmp_path):
    proc = _run(tmp_path, _spec(steps=0))
    assert proc.returncode == EXIT_BAD_SPEC == 65
    assert "bad spec" in proc.stderr and "steps" in proc.stderr
    # On a cluster the result file is what comes back: it carries the exit status, and no results.
    assert read_worker_exit(tmp_path / "r.json") == (65, proc.stderr.strip().removeprefix("glo-worker: "))
    assert read_results(tmp_path / "r.json") == ("", [])


def test_unparsable_spec_and_bad_tree_exit_65(tmp_path):
    assert _run(tmp_path, "{not json").returncode == EXIT_BAD_SPEC
    proc = _run(tmp_path, _spec(candidates=[{"id": "a", "tree": {"op": "exp", "args": [{"op": "x"}]}}]))
    assert proc.returncode == EXIT_BAD_SPEC and "candidates[0].tree" in proc.stderr


def test_missing_data_exit_66_lists_places(tmp_path):
    proc = _run(tmp_path, _spec(data_path=str(tmp_path / "nowhere")), GLO_DATA_DIR=str(tmp_path / "env"))
    assert proc.returncode == EXIT_MISSING_DATA == 66
    assert "missing data" in proc.stderr
    for place in ("nowhere", "env", "kh", "GLO_DATA_DOWNLOAD=0"):
        assert place in proc.stderr


def test_missing_data_is_recorded_in_the_result_file_with_the_spec_hash(tmp_path):
    proc = _run(tmp_path, _spec(data_path=str(tmp_path / "nowhere")))
    code, message = read_worker_exit(tmp_path / "r.json")
    assert (code, proc.returncode) == (66, 66) and "Places tried" in message
    spec_hash, results = read_results(tmp_path / "r.json")
    assert len(spec_hash) > 8 and results == []


def test_a_required_gpu_that_is_not_there_is_a_bad_node(tmp_path):
    """The cluster backends set GLO_REQUIRE_GPU=1 for jobs that request GPUs: a node whose GPU TensorFlow
    cannot see must say so (exit 75, retried elsewhere) instead of training on its CPU."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (120, 28, 28)).astype(np.uint8)
    y = rng.integers(0, 10, 120).astype(np.uint8)
    np.savez(tmp_path / "mnist.npz", x_train=x[:100], y_train=y[:100], x_test=x[100:], y_test=y[100:])
    spec = _spec(steps=2, batch_size=10, validation_size=20, data_path=str(tmp_path))
    proc = _run(tmp_path, spec, GLO_REQUIRE_GPU="1", CUDA_VISIBLE_DEVICES="GPU-a0223334")
    assert proc.returncode == EXIT_BAD_NODE == 75, proc.stderr
    assert "bad node: no GPU visible" in proc.stderr and "GPU-a0223334" in proc.stderr
    assert read_worker_exit(tmp_path / "r.json")[0] == 75
