"""`glo evaluate`: a grid of full trainings (losses x fractions x paired seeds) through the ordinary scheduler,
cached, resumable, with the statistics against ce.  The fake worker reports seed-dependent test accuracies."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path

from tests.orch_helpers import FAKE_WORKER, glo, glo_env, glo_popen, scalar


def _config(path: Path, *, in_flight: int = 2, per_job: int = 2) -> Path:
    path.write_text(f"""
[task]
steps = 20

[backend]
max_in_flight = {in_flight}
candidates_per_job = {per_job}
worker_command = ["{sys.executable}", "{FAKE_WORKER}"]
""")
    return path


def _trainings(log: Path) -> int:
    return sum(1 for line in log.read_text().splitlines() if line.startswith("done ")) if log.exists() else 0


def test_evaluate_trains_the_grid_and_compares_with_ce(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "c.toml")
    db, log = tmp_path / "r.db", tmp_path / "trainings.log"
    env = glo_env(log)
    r = glo("evaluate", "ce", "baikal", "log(y) - x", "--repeats", "3", "--curve-every", "5", "--config", str(cfg),
            "--db", str(db), "--run-id", "ev", "--json", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["status"] == "finished" and _trainings(log) == 9
    results = out["results"]
    assert [loss["label"] for loss in results["losses"]] == ["ce", "baikal", "log(y) - x"]
    assert results["seeds"] == [0, 1, 2] and results["steps"] == 20
    assert len(results["records"]) == 9 and all(r["status"] == "ok" for r in results["records"])
    assert all(r["test_curve"][-1][0] == 20 and r["probability_histogram"] for r in results["records"])
    by = {(row["loss"], row["fraction"]): row for row in out["summary"]}
    ce, baikal = by[("ce", 1.0)], by[("baikal", 1.0)]
    assert ce["n"] == baikal["n"] == 3 and baikal["n_pairs"] == 3
    assert ce["welch_p_two"] is None and baikal["paired_p_two"] is not None
    # Each cell trained with its own seed: the spec of every job names one seed, and the test accuracies differ.
    assert len({r["test_accuracy"] for r in results["records"] if r["loss"] == "ce"}) == 3
    con = sqlite3.connect(db)
    budgets = [json.loads(b) for (b,) in con.execute("select budget_json from evaluations")]
    assert all(b["test_accuracy"] is True and b["curve_interval"] == 5 for b in budgets)
    assert {p for (p,) in con.execute("select seed_policy from evaluations")} == {"fixed:0", "fixed:1", "fixed:2"}

    # Asked again (a new evaluation run): everything comes from the cache, nothing is trained.
    again = glo("evaluate", "ce", "baikal", "log(y) - x", "--repeats", "3", "--curve-every", "5", "--config",
                str(cfg), "--db", str(db), "--run-id", "ev2", "--json", env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _trainings(log) == 9
    assert json.loads(again.stdout)["summary"] == out["summary"]
    assert scalar(db, "select count(*) from candidates where run_id = 'ev2' and status = 'cached'") == 9

    table = glo("evaluate", "--resume", "ev", "--db", str(db), env=env)
    assert table.returncode == 3  # finished: nothing to resume


def test_training_fractions_are_their_own_cells(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "c.toml")
    db, log = tmp_path / "r.db", tmp_path / "trainings.log"
    r = glo("evaluate", "ce", "baikal", "--repeats", "2", "--train-fraction", "0.1", "--train-fraction", "1.0",
            "--config", str(cfg), "--db", str(db), "--json", env=glo_env(log))
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert _trainings(log) == 8 and out["results"]["fractions"] == [0.1, 1.0]
    rows = {(row["loss"], row["fraction"]): row for row in out["summary"]}
    assert set(rows) == {("ce", 0.1), ("ce", 1.0), ("baikal", 0.1), ("baikal", 1.0)}
    assert rows[("ce", 0.1)]["mean"] < rows[("ce", 1.0)]["mean"]  # the fake worker's fraction penalty
    specs = [json.loads(p.read_text()) for p in (tmp_path / "r.db.work").rglob("spec.json")]
    assert sorted({s.get("train_fraction") for s in specs}, key=str) == [0.1, None]


def test_a_killed_evaluation_resumes_without_training_twice(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "c.toml", per_job=1)
    db, log = tmp_path / "r.db", tmp_path / "trainings.log"
    env = glo_env(log, sleep=0.4)
    proc = glo_popen("evaluate", "ce", "baikal", "--repeats", "4", "--config", str(cfg), "--db", str(db),
                     "--run-id", "k", env=env)
    deadline = time.monotonic() + 60
    while _trainings(log) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    r = glo("evaluate", "--resume", "k", "--db", str(db), "--json", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    done = [line.split()[1] for line in log.read_text().splitlines() if line.startswith("done ")]
    assert len(done) == len(set(done)) == 8
    assert len(json.loads(r.stdout)["results"]["records"]) == 8


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    for args, message in ((["nosuchloss"], "nosuchloss"), (["ce", "--seeds", "1,1"], "distinct"),
                          (["ce", "--set", "task.steps=0"], "task.steps")):
        r = glo("evaluate", *args, "--db", str(db))
        assert r.returncode != 0 and message in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_experiment_runs_search_evaluation_and_report_and_resumes(tmp_path: Path) -> None:
    """`glo experiment`: the search, the evaluation of its best loss against ce, the reports; run again, it
    keeps what finished and trains nothing."""
    cfg = tmp_path / "exp.toml"
    cfg.write_text(f"""
[run]
name = "tiny"
seed = 1
[task]
steps = 10
[search.ga]
population_size = 10
generations = 2
elites = 2
init_max_depth = 3
[search.cma]
iterations = 1
popsize = 4
[backend]
worker_command = ["{sys.executable}", "{FAKE_WORKER}"]
[experiment]
losses = ["best", "ce"]
steps = 20
repeats = 2
curve_every = 10
""")
    db, log, out = tmp_path / "r.db", tmp_path / "trainings.log", tmp_path / "out"
    r = glo("experiment", str(cfg), "--db", str(db), "--out", str(out), env=glo_env(log), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "tiny-search: starting" in r.stdout and "tiny-eval: starting" in r.stdout
    assert scalar(db, "select count(*) from runs where status = 'finished'") == 2
    assert scalar(db, "select count(*) from candidates where run_id = 'tiny-eval'") == 4
    report = (out / "report.md").read_text()
    assert "tiny-search/" in report and "fig3_curves.png" in report and (out / "search" / "report.md").exists()
    trained = _trainings(log)
    again = glo("experiment", str(cfg), "--db", str(db), "--out", str(out), env=glo_env(log), timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "tiny-search: finished before; kept" in again.stdout and "tiny-eval: finished before; kept" in again.stdout
    assert _trainings(log) == trained
    # The fake worker records no training speed, and a probe is only run for GLO's own worker: no estimate.
    assert "training speed unknown" in again.stdout
