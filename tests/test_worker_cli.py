"""`python -m worker` exit codes and messages for the cheap failures (no TensorFlow import needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from worker.lossexpr import named_loss
from worker.spec import EXIT_BAD_SPEC, EXIT_MISSING_DATA


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
    assert not (tmp_path / "r.json").exists()


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
