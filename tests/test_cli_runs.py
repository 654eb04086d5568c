"""The glo run/runs/status/best/show/export/cancel commands, bad inputs, and the Keras export."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from db.migrations import SCHEMA_VERSION
from orchestrator.cli.runs import EXIT_NO_RESULT
from tests.orch_helpers import glo, glo_env, scalar, write_config


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small finished run shared by the read-only tests."""
    tmp = tmp_path_factory.mktemp("finished")
    cfg = write_config(tmp / "c.toml", population=12, generations=2, cma_iterations=2)
    r = glo("run", str(cfg), "--db", str(tmp / "f.db"), "--run-id", "fin")
    assert r.returncode == 0, r.stderr
    assert "run fin: finished" in r.stdout
    return tmp / "f.db"


def test_status_json_shape(finished: Path) -> None:
    r = glo("status", "--db", str(finished), "--json")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["run_id"] == "fin" and st["phase"] == "done" and st["status"] == "finished"
    assert set(st["evaluations"]) >= {"done", "running", "failed", "cached"}
    assert st["evaluations"]["done"] == scalar(finished, "select count(*) from evaluations")
    assert st["evaluations"]["running"] == 0
    assert isinstance(st["generation"], int)
    assert st["best"]["fitness"] == scalar(finished, "select max(fitness) from leaderboard")
    assert st["best"]["infix"]
    human = glo("status", "fin", "--db", str(finished))
    assert human.returncode == 0 and "trained" in human.stdout


def test_best_runs_show(finished: Path) -> None:
    r = glo("best", "--db", str(finished), "-k", "3", "--json")
    rows = json.loads(r.stdout)
    assert 1 <= len(rows) <= 3
    assert all({"candidate_id", "infix", "fitness"} <= set(row) for row in rows)
    assert [row["fitness"] for row in rows] == sorted((row["fitness"] for row in rows), reverse=True)
    runs = json.loads(glo("runs", "--db", str(finished), "--json").stdout)
    assert [run["run_id"] for run in runs] == ["fin"]
    shown = json.loads(glo("show", rows[0]["candidate_id"], "--db", str(finished), "--json").stdout)
    assert shown["fitness"] == rows[0]["fitness"] and shown["evaluation"]["task"] == "mnist"
    assert glo("show", "g0-0", "--db", str(finished)).returncode == 0  # bare id: latest run


def test_second_run_is_answered_from_the_cache(finished: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", population=12, generations=2, cma_iterations=2)
    log = tmp_path / "w.log"
    r = glo("run", str(cfg), "--db", str(finished), "--run-id", "again", env=glo_env(log))
    assert r.returncode == 0, r.stderr
    st = json.loads(glo("status", "again", "--db", str(finished), "--json").stdout)
    assert st["evaluations"]["done"] == 0 and st["evaluations"]["cached"] > 0
    assert not log.exists()  # the worker never ran


def test_export_keras_matches_worker_loss(finished: Path, tmp_path: Path) -> None:
    rows = json.loads(glo("best", "--db", str(finished), "-k", "5", "--json").stdout)
    files = []
    for i, row in enumerate(rows):
        r = glo("export", row["candidate_id"], "--format", "keras", "--db", str(finished))
        assert r.returncode == 0, r.stderr
        assert "eval(" not in r.stdout and "exec(" not in r.stdout
        path = tmp_path / f"exported_{i}.py"
        path.write_text(r.stdout)
        py = glo("export", row["candidate_id"], "--format", "python", "--db", str(finished))
        (tmp_path / f"exported_np_{i}.py").write_text(py.stdout)
        files.append((str(path), str(tmp_path / f"exported_np_{i}.py"), row["candidate_id"]))
    check = textwrap.dedent(f"""
        import importlib.util, json, sqlite3, sys
        import numpy as np
        import tensorflow as tf
        from worker.lossexpr import Node
        from worker.tf_loss import make_loss
        con = sqlite3.connect({str(finished)!r})
        rng = np.random.default_rng(0)
        worst = 0.0
        for keras_file, np_file, cid in {files!r}:
            mods = []
            for f in (keras_file, np_file):
                spec = importlib.util.spec_from_file_location("m", f)
                m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); mods.append(m)
            tree = Node.from_json(json.loads(con.execute("select tree_json from candidates where uid=?", (cid,)).fetchone()[0]))
            ref = make_loss(tree, 1e-7)
            for _ in range(5):
                labels = np.eye(10)[rng.integers(0, 10, 32)].astype("float32")
                probs = rng.dirichlet(np.ones(10), 32).astype("float32")
                a = float(mods[0].glo_loss(tf.constant(labels), tf.constant(probs)))
                b = float(ref(tf.constant(labels), tf.constant(probs)))
                c = mods[1].glo_loss(labels, probs)
                if np.isfinite(b):
                    worst = max(worst, abs(a - b) / max(1.0, abs(b)), abs(c - b) / max(1.0, abs(b)))
                else:
                    assert not np.isfinite(a), (cid, a, b)
        print(json.dumps({{"max_rel_diff": worst, "losses": len({files!r})}}))
    """)
    p = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=glo_env(), timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    print("keras export vs worker.tf_loss:", out)
    assert out["max_rel_diff"] < 1e-5


def test_malformed_config_names_the_key(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", extra="bogus = 1")
    r = glo("run", str(cfg), "--db", str(tmp_path / "x.db"))
    assert r.returncode != 0 and "backend.bogus: unknown key" in r.stderr
    cfg.write_text("[search.ga]\npopulation_sz = 3\n")
    r = glo("run", str(cfg), "--db", str(tmp_path / "x.db"))
    assert "search.ga.population_sz" in r.stderr and "Traceback" not in r.stderr
    cfg.write_text("[task]\nsteps = -5\n")
    assert "task.steps" in glo("run", str(cfg), "--db", str(tmp_path / "x.db")).stderr
    cfg.write_text("[task\n")
    assert "not valid TOML" in glo("run", str(cfg), "--db", str(tmp_path / "x.db")).stderr
    assert not (tmp_path / "x.db").exists()


def test_unknown_run_id(finished: Path) -> None:
    for args in (["status", "nope"], ["best", "nope"], ["run", "--resume", "nope"], ["cancel", "nope"],
                 ["show", "nope/g0-0"]):
        r = glo(*args, "--db", str(finished))
        assert r.returncode == 1 and "nope" in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)


def test_newer_schema_is_refused(finished: Path, tmp_path: Path) -> None:
    copy = tmp_path / "future.db"
    src = sqlite3.connect(finished)
    dst = sqlite3.connect(copy)
    src.backup(dst)
    dst.execute("insert into schema_version values (7, 0, 'future')")
    dst.commit()
    before = dst.execute("select count(*) from evaluations").fetchone()[0]
    dst.close()
    for args in (["status"], ["run", "--resume", "fin"]):
        r = glo(*args, "--db", str(copy))
        assert r.returncode == 1 and "schema version 7" in r.stderr and f"supports only up to version {SCHEMA_VERSION}" in r.stderr
    assert scalar(copy, "select count(*) from evaluations") == before


def test_corrupt_result_file_and_crashes_fail_cleanly(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", population=12, generations=2, cma_iterations=1, per_job=1,
                       max_attempts=2)
    env = glo_env(tmp_path / "w.log", corrupt="log(y)")  # (log(x) trees: the zero-training filter rejects most)
    r = glo("run", str(cfg), "--db", str(tmp_path / "c.db"), "--run-id", "bad", env=env)
    db = tmp_path / "c.db"
    st = json.loads(glo("status", "--db", str(db), "--json").stdout)
    assert st["status"] == "finished", r.stderr  # the search goes on to its end
    # (this small one trains little, all to fitness 0: then it finishes saying it has no usable result)
    assert r.returncode == (EXIT_NO_RESULT if st["warning"] else 0), r.stderr
    failed = scalar(db, "select count(*) from candidates where status = 'failed' and error like '%corrupt result file%'")
    assert failed > 0
    assert scalar(db, "select count(*) from jobs where state = 'failed' and attempts = 2") > 0
    assert scalar(db, "select count(*) from candidates where status = 'evaluated' and infix like '%log(y)%'") == 0
    assert st["evaluations"]["failed"] == failed


def test_a_search_that_cannot_draw_a_trainable_tree_says_so_in_one_line(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml")
    cfg.write_text(cfg.read_text().replace("init_max_depth = 3", "init_max_depth = 0"))  # leaves only
    r = glo("run", str(cfg), "--db", str(tmp_path / "c.db"), env=glo_env())
    assert r.returncode == 1 and "ga.init" in r.stderr and "none can train" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_missing_data_stops_the_run_with_the_workers_message(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", population=12, generations=2)
    text = cfg.read_text().replace(str(Path(__file__).parent / "fake_worker.py"), "-c")
    text = text.replace('worker_command = ["', 'worker_command = ["').replace(
        '"-c"]', '"-c", "import sys; print(\'no mnist data set: tried $GLO_DATA_DIR\', file=sys.stderr); sys.exit(66)"]')
    cfg.write_text(text)
    r = glo("run", str(cfg), "--db", str(tmp_path / "m.db"), "--run-id", "nodata")
    assert r.returncode == 1
    assert "missing data (exit 66)" in r.stderr and "no mnist data set" in r.stderr and "--resume nodata" in r.stderr
    assert scalar(tmp_path / "m.db", "select count(*) from runs where status = 'failed'") == 1


def test_cancel(finished: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml")
    db = tmp_path / "k.db"
    r = glo("run", str(cfg), "--db", str(db), "--run-id", "tocancel", env=glo_env(fail="x"))  # every job crashes
    assert r.returncode == EXIT_NO_RESULT  # finished, having trained nothing
    r = glo("cancel", "tocancel", "--db", str(db))
    assert r.returncode == 1 and "already finished" in r.stderr


# -- a search that trains nothing, or nothing better than 0 (issue #18) ----------------------------------------

#: The paper's node weights without x: every tree lacks x, so the search resolves all of them untrained.
NO_X_WEIGHTS = """
[search.ga.node_weights]
log = 3.0
y = 3.0
sqrt = 2.0
"+" = 1.0
"*" = 1.0
"1" = 1.0
"""


def test_a_search_that_trains_nothing_says_so_and_exits_no_result(tmp_path: Path) -> None:
    """The issue's run: population 24, 2 generations, seed 5, every tree without x.  `glo run` ends with a
    WARNING line and exit EXIT_NO_RESULT, no CMA-ES phase starts, and `glo status` (text and JSON) says it."""
    cfg = write_config(tmp_path / "c.toml", seed=5, population=24, generations=2, extra=NO_X_WEIGHTS)
    db = tmp_path / "r.db"
    r = glo("run", str(cfg), "--db", str(db), "--run-id", "none", "--set", "search.ga.init=paper")  # the draws
    assert r.returncode == EXIT_NO_RESULT == 4, r.stderr[-3000:]
    assert "run none: finished" in r.stdout
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("WARNING: run none finished with no usable result: not one candidate was trained"), last
    assert "48 resolved by the search" in last
    assert scalar(db, "select count(*) from candidates where phase = 'cma'") == 0
    assert scalar(db, "select count(*) from evaluations") == 0
    st = json.loads(glo("status", "none", "--db", str(db), "--json").stdout)
    assert st["status"] == "finished" and st["best"] is None
    assert st["warning"].startswith("no usable result: not one candidate was trained")
    human = glo("status", "none", "--db", str(db))
    assert human.returncode == 0 and "WARNING" in human.stdout and "no usable result" in human.stdout
    again = glo("run", "--resume", "none", "--db", str(db))
    assert again.returncode == 3  # finished is finished: a supervisor must not loop on it


def test_a_run_whose_best_fitness_is_zero_says_so_and_skips_cma(tmp_path: Path) -> None:
    """Every candidate trains, to fitness 0: exit EXIT_NO_RESULT with the best-is-0 warning, and CMA-ES does
    not start from a zero-fitness tree."""
    cfg = write_config(tmp_path / "c.toml", population=10, generations=2, cma_iterations=2)
    db = tmp_path / "r.db"
    r = glo("run", str(cfg), "--db", str(db), "--run-id", "zero", env={**glo_env(), "GLO_FAKE_WORKER_ZERO": "1"})
    assert r.returncode == EXIT_NO_RESULT, r.stderr[-3000:]
    assert "no usable result: the best fitness of the" in r.stderr and "is 0" in r.stderr
    assert scalar(db, "select count(*) from candidates where status = 'evaluated'") > 0
    assert scalar(db, "select count(*) from candidates where phase = 'cma'") == 0
    st = json.loads(glo("status", "zero", "--db", str(db), "--json").stdout)
    assert st["best"]["fitness"] == 0.0 and "best fitness" in st["warning"]


def test_a_run_with_a_result_has_no_warning(finished: Path) -> None:
    st = json.loads(glo("status", "fin", "--db", str(finished), "--json").stdout)
    assert st["warning"] is None and st["best"]["fitness"] > 0
    assert "WARNING" not in glo("status", "fin", "--db", str(finished)).stdout
