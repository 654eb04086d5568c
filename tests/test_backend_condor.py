"""`backend.kind = "condor"` against a real HTCondor pool: a search, faults in the pool, kill -9 and resume.

Every test runs `glo run` as a user would (a subprocess on the submit host, the htcondor2 bindings),
and jobs run as the pool's job user with their own Python (tests/condor_pool.py).  The fake worker
(tests/fake_worker.py) trains nothing, so a run takes seconds; one test trains with real TensorFlow.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.cluster_helpers import (
    assert_complete,
    condor,
    condor_config,
    count,
    finish,
    mnist_like,
    rows,
    running_job,
    wait_for,
)
from tests.condor_pool import Pool
from tests.orch_helpers import glo, glo_env, glo_popen, scalar

pytestmark = [pytest.mark.condor, pytest.mark.slow]


# -- a real search ----------------------------------------------------------------------------------------


def test_a_search_trains_with_tensorflow_on_the_pool(condor_pool: Pool, tmp_path: Path) -> None:
    """At least 12 candidates trained by the real worker in pool jobs (each asking for one of the pool's
    simulated GPUs, the GPU check off since nothing CUDA runs on them), `glo status` and `glo best` show
    the run, and the jobs were followed through the event log: at most one schedd query per minute."""
    work = condor_pool.jobs_dir("tf-search")
    mnist_like(work / "mnist.npz")
    python = condor_pool.job_python(tf=True)
    cfg = condor_config(tmp_path / "c.toml", condor_pool, work, python=python, population=40, generations=1,
                        per_job=4, worker=[python, "-m", "worker"],
                        task="steps = 15\nbatch_size = 32\nlearning_rate = 0.1\nvalidation_size = 60\n"
                             "class_reduction = \"sum\"",
                        env={"GLO_DATA_DIR": str(work), "GLO_DATA_DOWNLOAD": "0"},
                        condor={"request_gpus": 1, "check_gpu": False, "request_memory": "1500MB"})
    db = tmp_path / "r.db"
    t0 = time.monotonic()
    r = glo("run", str(cfg), "--db", str(db), "--run-id", "tf", env=glo_env(), timeout=900)
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr[-4000:]
    trained = rows(db, "select count(*) from candidates where run_id = 'tf' and status = 'evaluated'")[0][0]
    assert trained >= 12
    devices = {d for (d,) in rows(db, "select distinct device from evaluations where run_id = 'tf'")}
    assert devices == {"CPU"}  # the real worker trained them (the fake one says "fake")
    hosts = {h for (h,) in rows(db, "select distinct host from jobs where run_id = 'tf'")}
    assert all(h for h in hosts), hosts  # every job's record names the machine it ran on
    summary = json.loads(rows(db, "select summary_json from runs where id = 'tf'")[0][0])
    backend = summary["backend"]
    print(f"backend stats after {elapsed:.1f} s: {json.dumps(backend)}")  # shown by pytest -rP
    assert backend["backend"] == "condor" and backend["jobs"] == scalar(db, "select count(*) from jobs")
    assert backend["transport"].get("query", 0) <= 1 + elapsed / 60.0, backend
    assert backend["transport"].get("history", 0) == 0, backend  # nothing had to be looked up: the log told all

    status = json.loads(glo("status", "tf", "--db", str(db), "--json").stdout)
    assert status["status"] == "finished" and status["evaluations"]["done"] == trained
    best = json.loads(glo("best", "tf", "--db", str(db), "-k", "3", "--json").stdout)
    assert len(best) == 3 and best[0]["fitness"] >= best[-1]["fitness"] > 0.0
    for d in rows(db, "select work_dir from jobs where run_id = 'tf'"):
        assert (Path(d[0]) / "result.json").exists() and (Path(d[0]) / "stderr.txt").exists()


# -- faults in the pool -------------------------------------------------------------------------------------


def test_a_held_job_is_released_then_removed_and_resubmitted(condor_pool: Pool, tmp_path: Path) -> None:
    """condor_hold puts a job on hold (code 1).  With code 1 counted as transient and one release allowed,
    the first hold is released; the second is one too many: the job is removed and its candidates
    resubmitted.  The hold's reason and codes are on the job's record and in `glo status --json`."""
    work = condor_pool.jobs_dir("hold")
    cfg = condor_config(tmp_path / "c.toml", condor_pool, work, sleep=2.0,
                        condor={"release_hold_codes": [1], "max_releases": 1})
    db = tmp_path / "r.db"
    proc = glo_popen("run", str(cfg), "--db", str(db), "--run-id", "h", env=glo_env())
    job_id, condor_id = running_job(db, "h", proc)
    condor("condor_hold", "-reason", "GLO test: first hold", condor_id)
    wait_for("the release", lambda: rows(db, "select 1 from jobs where id = ? and releases = 1", job_id), proc)
    wait_for("the job to run again", lambda: rows(
        db, "select 1 from jobs where id = ? and state = 'running'", job_id), proc)
    condor("condor_hold", "-reason", "GLO test: second hold", condor_id)
    wait_for("the resubmission", lambda: rows(db, "select 1 from jobs where id = ? and attempts = 2", job_id), proc)
    status = json.loads(glo("status", "h", "--db", str(db), "--json").stdout)
    held = [j for j in status["held_jobs"] if j["job_id"] == job_id]
    assert held and held[0]["hold_code"] == 1 and "GLO test: second hold" in held[0]["hold_reason"]
    finish(proc)
    assert_complete(db, "h", work)
    (state, attempts, code, reason, releases, last_error), = rows(
        db, "select state, attempts, hold_code, hold_reason, releases, last_error from jobs where id = ?", job_id)
    assert (state, attempts, code, releases) == ("done", 2, 1, 1)
    assert "second hold" in reason and "removed after 1 release(s)" in last_error
    view = rows(db, "select hold_code, hold_reason from job_states where job_id = ?", job_id)
    assert view == [(1, reason)]


def test_a_job_removed_behind_glos_back_is_rerun(condor_pool: Pool, tmp_path: Path) -> None:
    work = condor_pool.jobs_dir("rm")
    cfg = condor_config(tmp_path / "c.toml", condor_pool, work, sleep=2.0)
    db = tmp_path / "r.db"
    proc = glo_popen("run", str(cfg), "--db", str(db), "--run-id", "rm", env=glo_env())
    job_id, condor_id = running_job(db, "rm", proc)
    condor("condor_rm", "-reason", "an admin cleaning up", condor_id)
    finish(proc)
    assert_complete(db, "rm", work)
    (attempts, last_error), = rows(db, "select attempts, last_error from jobs where id = ?", job_id)
    assert attempts == 2 and "removed from the queue outside GLO" in last_error
    assert "an admin cleaning up" in last_error


def test_hold_then_rm_then_vacate_of_one_job_keeps_every_attempt(condor_pool: Pool, tmp_path: Path) -> None:
    """Issue #18: one job held by condor_hold (released: code 1 counted as transient), then removed by
    condor_rm (resubmitted), then vacated (back in the queue, then done).  The job row keeps only the last
    error; job_attempts keeps both attempts with every reason, and `glo show RUN/job-N` prints them."""
    work = condor_pool.jobs_dir("history")
    cfg = condor_config(tmp_path / "c.toml", condor_pool, work, sleep=3.0,
                        condor={"release_hold_codes": [1], "max_releases": 3})
    db = tmp_path / "r.db"
    proc = glo_popen("run", str(cfg), "--db", str(db), "--run-id", "hist", env=glo_env())
    job_id, first_id = running_job(db, "hist", proc)
    condor("condor_hold", "-reason", "GLO test: held by hand", first_id)
    wait_for("the release", lambda: rows(db, "select 1 from jobs where id = ? and releases = 1", job_id), proc)
    wait_for("the job to run again", lambda: rows(
        db, "select 1 from jobs where id = ? and state = 'running'", job_id), proc)
    condor("condor_rm", "-reason", "GLO test: removed by hand", first_id)
    (second_id,), = wait_for("the resubmission to run", lambda: rows(
        db, "select backend_job_id from jobs where id = ? and attempts = 2 and state = 'running'", job_id), proc)
    assert second_id != first_id
    condor("condor_vacate_job", second_id)
    wait_for("the eviction", lambda: rows(db, "select 1 from jobs where id = ? and evictions = 1", job_id), proc)
    finish(proc)
    assert_complete(db, "hist", work)
    (state, last_error), = rows(db, "select state, last_error from jobs where id = ?", job_id)
    assert state == "done" and "evicted from" in last_error  # the job row alone forgot the hold and removal

    history = json.loads(glo("show", f"hist/job-{job_id}", "--db", str(db), "--json").stdout)
    first, second = history["attempts_history"]
    assert (first["attempt"], first["backend_job_id"], first["outcome"]) == (1, first_id, "retried")
    assert (first["hold_code"], first["holds"], first["releases"]) == (1, 1, 1)
    assert "GLO test: held by hand" in first["hold_reason"]
    assert "removed from the queue outside GLO" in first["error"] and "GLO test: removed by hand" in first["error"]
    assert [n["what"].split(":")[0] for n in first["notes"]] == ["held", "released"]
    assert first["submitted_at"] <= first["started_at"] <= first["ended_at"]
    assert first["host"]
    assert (second["attempt"], second["backend_job_id"], second["outcome"]) == (2, second_id, "done")
    assert second["evictions"] == 1 and second["exit_code"] == 0 and second["holds"] == 0
    assert any("evicted from" in n["what"] for n in second["notes"]) and second["error"] == ""
    assert second["submitted_at"] >= first["ended_at"]

    shown = glo("show", f"hist/job-{job_id}", "--db", str(db))
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    print(text)  # shown by pytest -rP: what the user reads
    for needle in ("attempt 1", "attempt 2", "GLO test: held by hand", "released", "GLO test: removed by hand",
                   "evicted from", first_id, second_id):
        assert needle in text, (needle, text)
    status = json.loads(glo("status", "hist", "--db", str(db), "--json").stdout)
    (held,) = [j for j in status["held_jobs"] if j["job_id"] == job_id]
    assert held["attempts_history"] == history["attempts_history"]
    cand = rows(db, "select candidate_uid from job_candidates where job_id = ?", job_id)[0][0]
    shown_cand = json.loads(glo("show", cand, "--db", str(db), "--json").stdout)
    assert [j["attempts_history"] for j in shown_cand["jobs"] if j["job_id"] == job_id] == [history["attempts_history"]]


def test_a_bad_node_exit_is_retried_and_the_node_recorded(condor_pool: Pool, tmp_path: Path) -> None:
    """The worker says "bad node" (exit 75) once: the job is resubmitted -- on a one-machine pool without
    excluding that machine, which would leave it nowhere to run -- and the machine is named on the job."""
    work = condor_pool.jobs_dir("badnode")
    cfg = condor_config(tmp_path / "c.toml", condor_pool, work, env={"GLO_FAKE_WORKER_BADNODE": "y"})
    db = tmp_path / "r.db"
    proc = glo_popen("run", str(cfg), "--db", str(db), "--run-id", "bn", env=glo_env())
    err = finish(proc)
    assert_complete(db, "bn", work)
    bad = rows(db, "select attempts, bad_nodes_json, last_error, host from jobs where bad_nodes_json != '[]'")
    assert len(bad) == 1
    attempts, nodes, last_error, host = bad[0]
    machine = host.rsplit("@", 1)[-1]
    assert attempts == 2 and json.loads(nodes) == [machine] and f"bad node {machine}" in last_error
    assert "this machine cannot train" in last_error
    assert "every machine of the pool" in err  # one machine: not excluded, said so


def test_a_missing_result_file_is_a_failed_attempt(condor_pool: Pool, tmp_path: Path) -> None:
    """The worker exits 0 but writes no result.json: HTCondor holds the job (output transfer, code 12/2);
    GLO removes it, records why, and resubmits its candidates."""
    work = condor_pool.jobs_dir("noresult")
    cfg = condor_config(tmp_path / "c.toml", condor_pool, work, env={"GLO_FAKE_WORKER_NORESULT": "y"})
    db = tmp_path / "r.db"
    proc = glo_popen("run", str(cfg), "--db", str(db), "--run-id", "nr", env=glo_env())
    finish(proc)
    assert_complete(db, "nr", work)
    (attempts, code, sub, last_error), = rows(
        db, "select attempts, hold_code, hold_subcode, last_error from jobs where hold_code is not null")
    assert (attempts, code, sub) == (2, 12, 2) and "the worker left no result file" in last_error
    assert "without a result file" in last_error  # the worker's stderr, brought along


# -- kill -9 and resume ----------------------------------------------------------------------------------------


def test_kill_9_with_six_jobs_in_the_pool_then_resume_readopts_them(condor_pool: Pool, tmp_path: Path) -> None:
    """The scheduler dies (SIGKILL) while 6 jobs are queued or running; the jobs go on in the pool; the
    resumed scheduler re-adopts every one of them (none submitted again) and the run ends with the
    final population of an uninterrupted run of the same seed."""
    work = condor_pool.jobs_dir("kill9")
    cfg = condor_config(tmp_path / "c.toml", condor_pool, work, population=20, generations=2, per_job=1,
                        sleep=1.5)
    db = tmp_path / "r.db"
    proc = glo_popen("run", str(cfg), "--db", str(db), "--run-id", "k", env=glo_env())
    in_pool = "select id, backend_job_id from jobs where run_id = 'k' and state in ('submitted', 'running') " \
              "and backend_job_id is not null"
    wait_for("6 jobs in the pool", lambda: len(rows(db, in_pool)) >= 6, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    in_flight = rows(db, in_pool)  # (a job marked submitted without an id never reached the pool: write-ahead)
    assert len(in_flight) >= 6
    r = glo("run", "--resume", "k", "--db", str(db), env=glo_env(), timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    summary = assert_complete(db, "k", work)
    for job_id, condor_id in in_flight:  # re-adopted: the same HTCondor job, never a second attempt
        assert rows(db, "select attempts, backend_job_id, state from jobs where id = ?", job_id) == \
            [(1, condor_id, "done")]
    assert max(n for (n,) in rows(db, "select attempts from jobs where run_id = 'k'")) == 1

    # The same search uninterrupted (on the local backend: the fake worker's fitness is the same anywhere).
    local_cfg = tmp_path / "local.toml"
    text = cfg.read_text().replace('kind = "condor"', 'kind = "local"')
    local_cfg.write_text(text.split("[backend.condor]")[0].replace(f'work_dir = "{work}"', ""))
    r = glo("run", str(local_cfg), "--db", str(tmp_path / "l.db"), "--run-id", "u", env=glo_env(), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    uninterrupted = json.loads(rows(tmp_path / "l.db", "select summary_json from runs where id = 'u'")[0][0])
    assert summary["population"] == uninterrupted["population"]
    assert summary["best"] == uninterrupted["best"]


def test_cancel_removes_the_runs_jobs_from_the_queue(condor_pool: Pool, tmp_path: Path) -> None:
    """`glo cancel` of a run whose scheduler is gone still removes its jobs (constraint on GloRunId)."""
    work = condor_pool.jobs_dir("cancel")
    cfg = condor_config(tmp_path / "c.toml", condor_pool, work, sleep=30.0, per_job=1, population=20)
    db = tmp_path / "r.db"
    proc = glo_popen("run", str(cfg), "--db", str(db), "--run-id", "cx", env=glo_env())
    wait_for("jobs in the queue", lambda: count(db, "select count(*) from jobs where run_id = 'cx' and "
                                                    "backend_job_id is not null") >= 3, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    def queued() -> int:
        out = condor("condor_q", "-constraint", 'GloRunId == "cx"', "-af", "ClusterId").stdout
        return len(out.split())

    assert queued() >= 3
    r = glo("cancel", "cx", "--db", str(db), "--json", env=glo_env())
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["removed_jobs"] >= 3
    wait_for("an empty queue", lambda: queued() == 0, timeout=60)


# -- a user's own task ----------------------------------------------------------------------------------------


def test_a_custom_model_and_data_set_train_on_the_pool(condor_pool: Pool, tmp_path: Path) -> None:
    """task.name = "custom" (issue 20) on the pool: the jobs import the user's model module from a directory
    only their PYTHONPATH names, and read the user's data file; the orchestrator's fingerprint (built here,
    with the same module) matches every node's, or the worker would have refused the job."""
    from tests.test_custom_task import models_dir, three_class

    work = condor_pool.jobs_dir("custom")
    data = three_class(work / "three.npz")
    models = models_dir(work)
    models.chmod(0o755)
    (models / "glo_test_models.py").chmod(0o644)
    python = condor_pool.job_python(tf=True)
    job_pythonpath = f"{condor_pool.job_env()['PYTHONPATH']}{os.pathsep}{models}"
    cfg = condor_config(tmp_path / "c.toml", condor_pool, work, python=python, population=6, generations=1,
                        per_job=3, worker=[python, "-m", "worker"],
                        task=f'name = "custom"\ndata_path = "{data}"\nmodel = "glo_test_models:small_cnn"\n'
                             "steps = 15\nbatch_size = 32\nlearning_rate = 0.1\nvalidation_size = 60\n"
                             'class_reduction = "sum"',
                        env={"PYTHONPATH": job_pythonpath, "GLO_DATA_DOWNLOAD": "0"},
                        condor={"request_gpus": 1, "check_gpu": False, "request_memory": "1500MB"})
    env = glo_env()
    env["PYTHONPATH"] = env["PYTHONPATH"] + os.pathsep + str(models)  # the submit host fingerprints the model
    db = tmp_path / "r.db"
    r = glo("run", str(cfg), "--db", str(db), "--run-id", "custom", env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    trained = count(db, "select count(*) from candidates where run_id = 'custom' and status = 'evaluated'")
    assert trained >= 4
    assert {d for (d,) in rows(db, "select distinct device from evaluations")} == {"CPU"}  # the real worker
    budgets = [json.loads(b) for (b,) in rows(db, "select budget_json from evaluations")]
    assert {b["model"] for b in budgets} == {"glo_test_models:small_cnn"} and all(b["model_fingerprint"]
                                                                                   for b in budgets)
    assert max(f for (f,) in rows(db, "select fitness from evaluations")) > 0.6
    assert count(db, "select count(*) from jobs where run_id = 'custom'") >= 2


def test_a_steady_state_search_on_the_pool(condor_pool: Pool, tmp_path: Path) -> None:
    """search.ga.mode = "steady-state" (issue 21) on the pool: at least 30 trainings with no generation
    barrier (never more outstanding than max_in_flight), and `glo status` and the dashboard's run JSON show
    the progress in trainings."""
    from tests.browser import Dashboard

    work = condor_pool.jobs_dir("steady")
    cfg = condor_config(tmp_path / "c.toml", condor_pool, work, population=8, generations=1, per_job=1,
                        sleep=0.3)
    cfg.write_text(cfg.read_text().replace("[search.ga]\n", '[search.ga]\nmode = "steady-state"\n'
                                           "max_trainings = 32\nmax_in_flight = 4\n", 1))
    db = tmp_path / "r.db"
    r = glo("run", str(cfg), "--db", str(db), "--run-id", "steady", env=glo_env(), timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    discovery = count(db, "select count(*) from candidates where run_id = 'steady' and phase = 'discovery' "
                          "and status in ('evaluated', 'cached')")
    assert discovery == 32
    assert count(db, "select count(*) from candidates where run_id = 'steady' and status = 'evaluated'") >= 30
    assert {h for (h,) in rows(db, "select distinct substr(search_id, 1, 1) from candidates "
                                   "where phase = 'discovery'")} == {"s"}
    st = json.loads(glo("status", "steady", "--db", str(db), "--json").stdout)
    assert st["status"] == "finished" and st["steady"] == {"mode": "steady-state", "trainings": 32,
                                                           "max_trainings": 32}
    assert "32 of 32 discovery trainings" in glo("status", "steady", "--db", str(db)).stdout
    with Dashboard(db) as server:
        import urllib.request

        with urllib.request.urlopen(server.url + "api/run?id=steady", timeout=30) as resp:
            run = json.loads(resp.read())
    assert run["steady"] == st["steady"]


def test_a_backup_copy_wins_over_a_job_stuck_on_a_slow_node_and_the_stuck_one_is_removed(
        condor_pool: Pool, tmp_path: Path) -> None:
    """backend.backup_copies on the pool: job 2 runs on a "slow node" (the fake worker reads its GloJobId and
    GloAttempt from the job ad and sleeps 300 s); once generation 0 has nothing else to run, a copy goes to the
    free slot, finishes first, and job 2 is removed from the pool (condor_rm), its attempt "superseded"."""
    work = condor_pool.jobs_dir("backup")
    cfg = condor_config(tmp_path / "c.toml", condor_pool, work, population=6, per_job=1, sleep=0.3,
                        env={"GLO_FAKE_WORKER_PLACES": "job-2/a1=300"})
    cfg.write_text(cfg.read_text().replace("[backend]\n", "[backend]\nmax_in_flight = 2\nbackup_copies = 1\n", 1))
    db = tmp_path / "r.db"
    r = glo("run", str(cfg), "--db", str(db), "--run-id", "backup", env=glo_env(), timeout=280)
    assert r.returncode == 0, r.stderr[-4000:]
    summary = assert_complete(db, "backup", work)  # every candidate settled, none trained twice
    assert summary["backups"]["won"] >= 1
    (uid,) = [u for (u,) in rows(db, "select candidate_uid from job_candidates where job_id = 2")]
    copies = [j for (j,) in rows(db, "select job_id from job_candidates where candidate_uid = ? and job_id != 2", uid)]
    assert copies, "job 2 got no backup copy"
    (outcome, error, condor_id), = rows(db, "select outcome, error, backend_job_id from job_attempts where job_id = 2")
    assert outcome == "superseded" and error.startswith(f"superseded: job {copies[0]} trained")
    assert rows(db, "select outcome from job_attempts where job_id = ?", copies[0]) == [("done",)]
    history = wait_for("job 2 in the pool's history", lambda: condor(  # removed from the pool, not left running
        "condor_history", condor_id, "-limit", "1", "-af", "JobStatus").stdout.strip(), timeout=60)
    assert history == "3"  # JobStatus 3: removed
    assert not condor("condor_q", condor_id, "-af", "ClusterId").stdout.strip()
