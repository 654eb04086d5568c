"""`glo evaluate`: a grid of full trainings (losses x fractions x paired seeds) through the ordinary scheduler,
cached, resumable, with the statistics against ce.  The fake worker reports seed-dependent test accuracies."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
import time
import urllib.request
from pathlib import Path

from tests.browser import Dashboard
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


def _experiment(name: str, *, population: int, popsize: int, experiment: str) -> str:
    """A tiny `glo experiment` config on the fake worker: its best loss against ce, 2 seeds, 20 steps."""
    return f"""
[run]
name = "{name}"
seed = 1
[task]
steps = 10
[search.ga]
population_size = {population}
generations = 2
elites = 2
init_max_depth = 3
[search.cma]
iterations = 1
popsize = {popsize}
[backend]
worker_command = ["{sys.executable}", "{FAKE_WORKER}"]
[experiment]
losses = ["best", "ce"]
steps = 20
repeats = 2
{experiment}"""


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
    cfg.write_text(_experiment("tiny", population=10, popsize=4, experiment="curve_every = 10\n"))
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


# -- each loss at its own learning rate ------------------------------------------------------------------

CE, BAIKAL = "x * log(y)", "log(y) - x / y"


def test_an_lr_grid_chooses_each_losss_rate_on_selection_seeds_and_tests_it_there(tmp_path: Path) -> None:
    """ce is best at 0.1 and baikal at 0.03 (the fake worker's accuracy falls off in decades from there): each
    is chosen from the selection trainings, which measure no test accuracy at all, then tested at its rate with
    the test seeds and compared with ce at ce's rate."""
    cfg = _config(tmp_path / "c.toml")
    db, log = tmp_path / "r.db", tmp_path / "trainings.log"
    env = glo_env(log) | {"GLO_FAKE_WORKER_BEST_LR": f"{CE}=0.1;{BAIKAL}=0.03"}
    r = glo("evaluate", "ce", "baikal", "--repeats", "2", "--lr-grid", "0.3,0.01,0.1,0.03", "--selection-seeds",
            "7,8", "--config", str(cfg), "--db", str(db), "--run-id", "g", "--json", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    res = out["results"]
    assert res["learning_rates"] == [0.01, 0.03, 0.1, 0.3] and res["selection_seeds"] == [7, 8]
    # 2 losses x 4 rates x 2 selection seeds, 2 x 2 at the task's rate (0.01), 2 x 2 at the chosen rates
    assert _trainings(log) == 16 + 4 + 4
    assert len(res["selection_records"]) == 16 and len(res["rate_records"]) == 4 and len(res["records"]) == 4
    assert all(rec["test_accuracy"] is None for rec in res["selection_records"])  # the test set picks nothing
    assert all(rec["seed"] in (0, 1) and rec["test_accuracy"] is not None for rec in res["rate_records"])
    chosen = {row["loss"]: row for row in out["summary_chosen_rates"]}
    assert chosen["ce"]["learning_rate"] == 0.1 and chosen["baikal"]["learning_rate"] == 0.03
    assert not chosen["ce"]["edge"] and not chosen["baikal"]["edge"]
    assert chosen["baikal"]["n_pairs"] == 2 and chosen["baikal"]["paired_p_one"] is not None
    at_task = {row["loss"]: row for row in out["summary"]}
    assert at_task["ce"]["mean"] < chosen["ce"]["mean"]  # ce at 0.01 is a decade from its best
    con = sqlite3.connect(db)
    budgets = [json.loads(b) for (b,) in con.execute("select budget_json from evaluations")]
    selection = [b for b in budgets if not b.get("test_accuracy")]
    assert len(selection) == 16 and {b["learning_rate"] for b in selection} == {0.01, 0.03, 0.1, 0.3}
    # The report: both tables, the rates, and the figure of accuracy against the rate.
    rep = glo("report", "g", "--db", str(db), "--out", str(tmp_path / "rep"), env=env)
    assert rep.returncode == 0, rep.stderr[-3000:]
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "at the task's learning rate (0.01)" in text and "Each loss at its own learning rate" in text
    assert "`baikal` at lr 0.03" in text and "`ce`'s at its best rate, lr 0.1" in text
    assert (tmp_path / "rep" / "learning_rates.png").stat().st_size > 0 and "extend the grid" not in text


def test_a_rate_at_the_grids_edge_is_flagged_and_the_tasks_own_rate_is_not_trained_twice(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "c.toml")  # the task's rate: 0.01
    db, log = tmp_path / "r.db", tmp_path / "trainings.log"
    env = glo_env(log) | {"GLO_FAKE_WORKER_BEST_LR": f"{CE}=1.0;{BAIKAL}=0.001"}
    r = glo("evaluate", "ce", "baikal", "--repeats", "2", "--lr-grid", "0.01,0.03,0.1", "--config", str(cfg),
            "--db", str(db), "--json", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    chosen = {row["loss"]: row for row in out["summary_chosen_rates"]}
    assert chosen["ce"]["learning_rate"] == 0.1 and chosen["ce"]["edge"] is True
    assert chosen["baikal"]["learning_rate"] == 0.01 and chosen["baikal"]["edge"] is True
    assert out["results"]["selection_seeds"] == [1000, 1001]  # the default
    # baikal's chosen rate is the task's: its test trainings at 0.01 serve both tables
    assert _trainings(log) == 12 + 4 + 2
    assert chosen["baikal"]["n"] == 2
    text = glo("evaluate", "--resume", "nosuch", "--db", str(db), env=env)
    assert text.returncode != 0
    plain = glo("evaluate", "ce", "baikal", "--repeats", "2", "--lr-grid", "0.01,0.03,0.1", "--config", str(cfg),
                "--db", str(db), env=env)
    assert "grid edge: extend the grid" in plain.stdout, plain.stdout


def test_a_killed_lr_grid_evaluation_resumes_without_training_twice(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "c.toml", per_job=1)
    db, log = tmp_path / "r.db", tmp_path / "trainings.log"
    env = glo_env(log, sleep=0.3) | {"GLO_FAKE_WORKER_BEST_LR": f"{CE}=0.1;{BAIKAL}=0.03"}
    args = ("evaluate", "ce", "baikal", "--repeats", "2", "--lr-grid", "0.01,0.03,0.1", "--selection-seeds", "5",
            "--config", str(cfg), "--db", str(db))
    proc = glo_popen(*args, "--run-id", "k", env=env)
    deadline = time.monotonic() + 60
    while _trainings(log) < 7 and time.monotonic() < deadline:  # past the selection, into the chosen rates
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    r = glo("evaluate", "--resume", "k", "--db", str(db), "--json", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    done = [line.split()[1] for line in log.read_text().splitlines() if line.startswith("done ")]
    # 2 x 3 selection, 2 x 2 at 0.01, 2 x 2 at the chosen 0.1 and 0.03: each once
    assert len(done) == len(set(done)) == 6 + 4 + 4
    chosen = {row["loss"]: row["learning_rate"] for row in json.loads(r.stdout)["summary_chosen_rates"]}
    assert chosen == {"ce": 0.1, "baikal": 0.03}


def test_lr_grid_input_errors_name_the_problem(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    for args, message in ((["--lr-grid", "0.1,x"], "--lr-grid"), (["--lr-grid", "0.1,-1"], "learning_rates"),
                          (["--lr-grid", "0.1,0.1"], "twice"),
                          (["--lr-grid", "0.1,0.3", "--selection-seeds", "0", "--repeats", "2"], "also a test seed"),
                          (["--selection-seeds", "5"], "only with")):
        r = glo("evaluate", "ce", *args, "--db", str(db))
        assert r.returncode != 0 and message in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
    assert not db.exists() or scalar(db, "select count(*) from runs") == 0


def test_experiment_tunes_the_search_rate_on_ces_grid_and_the_evaluation_reuses_those_trainings(tmp_path: Path) -> None:
    cfg = tmp_path / "exp.toml"
    body = _experiment("tuned", population=8, popsize=2,
                       experiment="learning_rates = [0.01, 0.1, 1.0]\nselection_seeds = [1000]\n")
    cfg.write_text(body + 'search_learning_rate = "tuned"\n')
    db, log, out = tmp_path / "r.db", tmp_path / "trainings.log", tmp_path / "out"
    env = glo_env(log) | {"GLO_FAKE_WORKER_BEST_LR": f"{CE}=0.1"}
    r = glo("experiment", str(cfg), "--db", str(db), "--out", str(out), env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ce's rate: 0.1" in r.stdout and "tuned-rate: starting" in r.stdout
    rates = dict(sqlite3.connect(db).execute(
        "select id, json_extract(config_json, '$.task.learning_rate') from runs").fetchall())
    assert rates == {"tuned-rate": 0.01, "tuned-search": 0.1, "tuned-eval": 0.1}
    # ce's three selection trainings in the evaluation are the rate run's, from the cache
    assert scalar(db, "select count(*) from candidates where run_id = 'tuned-eval' and status = 'cached' "
                      "and search_id like 'e1-%-l%'") == 3
    text = (out / "report.md").read_text()
    assert "Each loss at its own learning rate" in text and "at the task's learning rate (0.1)" in text
    # glo best, glo status and the dashboard say what the evaluation found of the search's best loss
    best = json.loads(glo("best", "tuned-search", "--db", str(db), "-k", "3", "--json", env=env).stdout)
    evaluated = [row for row in best if row["beats_ce_at_its_best_rate"] is not None]
    assert [row["candidate_id"] for row in evaluated] == [best[0]["candidate_id"]]
    assert "beats ce at ce's best rate?" in glo("best", "tuned-search", "--db", str(db), env=env).stdout
    status = json.loads(glo("status", "tuned-search", "--db", str(db), "--json", env=env).stdout)
    fair = status["best_vs_ce_at_its_best_rate"]
    assert fair["evaluation"] == "tuned-eval" and fair["baseline_rate"] == 0.1
    assert fair["beats"] == evaluated[0]["beats_ce_at_its_best_rate"]
    with Dashboard(db, env=env) as server:
        with urllib.request.urlopen(server.url + "api/run?id=tuned-search", timeout=30) as resp:
            run = json.loads(resp.read())
        assert run["fair_evidence"] is True
        assert run["leaderboard"][0]["vs_tuned_ce"]["beats"] == fair["beats"]
        with urllib.request.urlopen(server.url + "api/run?id=tuned-eval", timeout=30) as resp:
            ev = json.loads(resp.read())["evaluation"]
        assert {row["loss"]: row["learning_rate"] for row in ev["summary_chosen_rates"]}["ce"] == 0.1
    trained = _trainings(log)
    again = glo("experiment", str(cfg), "--db", str(db), "--out", str(out), env=env, timeout=300)
    assert again.returncode == 0 and "tuned-rate: finished before; kept" in again.stdout
    assert _trainings(log) == trained
    cfg.write_text(body + 'search_learning_rate = "fast"\n')
    bad = glo("experiment", str(cfg), "--db", str(db), "--out", str(out), env=env)
    assert bad.returncode != 0 and "experiment.search_learning_rate" in bad.stderr


def test_the_expected_count_of_a_grid_evaluation_bounds_its_trainings() -> None:
    from db.fastread import expected_evaluations

    plain = {"evaluate": {"losses": [{}, {}], "seeds": [0, 1], "fractions": [1.0]}}
    assert expected_evaluations(plain) == 4
    grid = {"evaluate": {**plain["evaluate"], "learning_rates": [0.1, 0.3, 1.0], "selection_seeds": [1000]}}
    # each loss: 2 at the task's rate, 3 selection trainings, at most 2 more at its chosen rate
    assert expected_evaluations(grid) == 2 * (2 + 3 + 2)
