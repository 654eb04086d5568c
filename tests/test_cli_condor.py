"""`glo condor job/show`: a hand-submittable job for chosen losses, and its state and results read back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import htcondor2
import pytest

from tests.cluster_helpers import mnist_like
from tests.condor_pool import Pool, open_up
from tests.orch_helpers import REPO, glo, write_config
from worker.lossexpr import named_loss, parse
from worker.spec import load_spec

GOLDEN = Path(__file__).parent / "golden" / "condor"


def test_job_writes_a_spec_the_worker_accepts_and_a_submit_file_htcondor_reads(tmp_path: Path) -> None:
    out = tmp_path / "job"
    r = glo("condor", "job", "baikal", "x * log(y)", "--out", str(out), "--steps", "20000", "--seed", "3",
            "--python", "/opt/glo/bin/python", "--data-dir", "/data/glo sets", "--env", "PYTHONPATH=/opt/glo/src",
            "--gpus", "1", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["losses"] == ["baikal", "loss-1"] and info["steps"] == 20000
    spec = load_spec(out / "spec.json")
    assert spec.spec_hash() == info["spec_hash"]
    assert [c.tree for c in spec.candidates] == [named_loss("baikal"), parse("x * log(y)")]
    assert (spec.task, spec.seed, spec.test_accuracy, spec.batch_size, spec.learning_rate, spec.class_reduction) == \
        ("mnist", 3, True, 100, 0.01, "sum")
    sub = htcondor2.Submit((out / "job.sub").read_text())
    assert sub["executable"] == "/opt/glo/bin/python"
    assert sub["arguments"] == '"-m worker spec.json --out result.json"'
    assert sub["environment"] == "\"GLO_DATA_DIR='/data/glo sets' PYTHONPATH=/opt/glo/src PYTHONUNBUFFERED=1\""
    assert sub["request_gpus"] == "1" and sub["transfer_input_files"] == "spec.json"

    again = glo("condor", "job", "ce", "--out", str(out))
    assert again.returncode == 1 and "already holds spec.json, job.sub" in again.stderr
    assert load_spec(out / "spec.json").spec_hash() == info["spec_hash"]  # nothing overwritten


def test_cifar10_takes_the_papers_settings(tmp_path: Path) -> None:
    r = glo("condor", "job", "ce", "--task", "cifar10", "--out", str(tmp_path / "c"))
    assert r.returncode == 0, r.stderr
    spec = load_spec(tmp_path / "c" / "spec.json")
    assert (spec.task, spec.batch_size, spec.learning_rate) == ("cifar10", 1024, 0.05)


@pytest.mark.parametrize("args, message", [
    (["log("], "'log(': unexpected end of input"),
    (["nosuchloss"], "nosuchloss"),
    (["baikal", "baikal"], "the same loss is given twice: baikal"),
    (["ce", "--memory", "lots"], "request_memory must be a size"),
    (["ce", "--requirements", "true\nqueue 9"], "requirements must be a single line"),
    (["ce", "--env", "PYTHONPATH"], "--env 'PYTHONPATH': expected NAME=VALUE"),
    (["ce", "--env", "BAD NAME=1"], "'BAD NAME' is not a variable name"),
    (["ce", "--env", "A=1", "--env", "A=2"], "--env A is given twice"),
    (["ce", "--env", "GLO_DATA_DIR=/a", "--data-dir", "/b"], "set the same variable"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    r = glo("condor", "job", *args, "--out", str(tmp_path / "j"))
    assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "j").exists()


def test_a_found_loss_from_the_database(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", population=10, generations=2, cma_iterations=1)
    db = tmp_path / "r.db"
    assert glo("run", str(cfg), "--db", str(db), "--run-id", "r").returncode == 0
    best = json.loads(glo("best", "r", "--db", str(db), "-k", "1", "--json").stdout)[0]
    r = glo("condor", "job", best["candidate_id"], "ce", "--db", str(db), "--out", str(tmp_path / "j"))
    assert r.returncode == 0, r.stderr
    spec = load_spec(tmp_path / "j" / "spec.json")
    assert spec.candidates[0].id == best["candidate_id"].replace("/", ":")
    assert spec.candidates[0].tree == parse(best["infix"])
    missing = glo("condor", "job", "r/g9-99", "--db", str(db), "--out", str(tmp_path / "k"))
    assert missing.returncode == 1 and "r/g9-99" in missing.stderr


def _tiny_inputs(root: Path) -> Path:
    """Synthetic MNIST in root/data and a 15-step task config root/tiny.toml; returns the data dir."""
    data = root / "data"
    data.mkdir()
    mnist_like(data / "mnist.npz", 300, 240)
    (root / "tiny.toml").write_text('[task]\nname = "mnist"\nsteps = 15\nbatch_size = 32\n'
                                    'learning_rate = 0.1\nvalidation_size = 60\n')
    return data


def test_show_reads_the_event_log_and_the_results(tmp_path: Path) -> None:
    """The job as HTCondor would run it: the spec alone in a scratch dir, the worker started with the
    submit file's arguments and environment, result.json transferred back next to the event log."""
    pytest.importorskip("tensorflow")
    data = _tiny_inputs(tmp_path)
    out = tmp_path / "job"
    r = glo("condor", "job", "ce", "baikal", "--config", str(tmp_path / "tiny.toml"), "--out", str(out),
            "--python", sys.executable, "--data-dir", str(data))
    assert r.returncode == 0, r.stderr

    waiting = json.loads(glo("condor", "show", str(out), "--json").stdout)
    assert waiting["jobs"] == [] and waiting["waiting_for"] == ["ce", "baikal"]

    sub = htcondor2.Submit((out / "job.sub").read_text())
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    shutil.copy(out / "spec.json", scratch / "spec.json")
    env = {**os.environ, "PYTHONPATH": str(REPO), "GLO_DATA_DIR": str(data)}
    argv = [sub["executable"], *sub["arguments"].strip('"').split()]
    done = subprocess.run(argv, cwd=scratch, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    shutil.copy(scratch / "result.json", out / "result.json")
    shutil.copy(GOLDEN / "success.job.log", out / "job.log")

    shown = json.loads(glo("condor", "show", str(out), "--json").stdout)
    assert [j["state"] for j in shown["jobs"]] == ["done"] and shown["jobs"][0]["reason"] == "exit code 0"
    assert [row["loss"] for row in shown["results"]] == ["ce", "baikal"] and shown["waiting_for"] == []
    for row in shown["results"]:
        assert row["status"] == "ok" and 0.0 <= row["validation_accuracy"] <= 1.0 and row["test_accuracy"] is not None
    text = glo("condor", "show", str(out)).stdout
    assert "job 1.0: done - exit code 0" in text and "baikal" in text


def test_show_a_held_job_and_a_result_for_another_spec(tmp_path: Path) -> None:
    out = tmp_path / "job"
    assert glo("condor", "job", "ce", "--out", str(out)).returncode == 0
    shutil.copy(GOLDEN / "held.job.log", out / "job.log")
    (out / "result.json").write_text(json.dumps({"glo_worker_result": 1, "spec_hash": "other", "results": []}))
    shown = json.loads(glo("condor", "show", str(out), "--json").stdout)
    assert shown["jobs"][0]["state"] == "held" and "(code 13/2)" in shown["jobs"][0]["reason"]
    assert "the result file was written for another spec" in shown["notes"]
    (out / "result.json").write_text("{not json")
    shown = json.loads(glo("condor", "show", str(out), "--json").stdout)
    assert any("not valid JSON" in n for n in shown["notes"])


@pytest.mark.condor
def test_live_pool_trains_the_job_and_show_reports_it(condor_pool: Pool) -> None:
    """On a real pool: submit, wait, show.  The job runs as the pool's job user, with the pool's job
    interpreter, GLO's code on PYTHONPATH (--env) and the synthetic data in a directory it can read."""
    pytest.importorskip("tensorflow")
    inputs = condor_pool.jobs_dir("tf-inputs")
    data = _tiny_inputs(inputs)
    open_up(inputs)
    out = condor_pool.jobs_dir("tf-job")
    env = [f"--env={name}={value}" for name, value in condor_pool.job_env().items()]
    r = glo("condor", "job", "ce", "baikal", "--config", str(inputs / "tiny.toml"), "--out", str(out),
            "--python", condor_pool.job_python(tf=True), "--data-dir", str(data), *env,
            "--gpus", "0", "--memory", "2GB", "--disk", "1GB")
    assert r.returncode == 0, r.stderr
    submitted = subprocess.run(["condor_submit", "-terse", "job.sub"], cwd=out, capture_output=True, text=True,
                               timeout=120)
    assert submitted.returncode == 0, submitted.stderr
    cluster = submitted.stdout.split(".")[0].strip()
    try:
        waited = subprocess.run(["condor_wait", "-wait", "900", "job.log", cluster], cwd=out, capture_output=True,
                                text=True, timeout=960)
        assert waited.returncode == 0, waited.stdout + waited.stderr
    finally:
        subprocess.run(["condor_rm", cluster], capture_output=True, timeout=60)
    shown = json.loads(glo("condor", "show", str(out), "--json").stdout)
    assert [j["state"] for j in shown["jobs"]] == ["done"], shown
    assert [row["loss"] for row in shown["results"]] == ["ce", "baikal"] and shown["waiting_for"] == []
    assert all(row["status"] == "ok" for row in shown["results"]), shown


def test_show_says_when_the_log_is_not_all_readable(tmp_path: Path) -> None:
    out = tmp_path / "job"
    assert glo("condor", "job", "ce", "--out", str(out)).returncode == 0
    (out / "job.log").write_text("this is not an event log\n")
    shown = json.loads(glo("condor", "show", str(out), "--json").stdout)
    assert shown["jobs"] == [] and any("could not be read yet" in n and "job.log" in n for n in shown["notes"])
