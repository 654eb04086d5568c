"""`glo dashboard` without a browser: its JSON against `glo status`, the read-only guarantee, the incremental
totals, the statistics, and the command's refusals.  The page itself is tested in tests/test_dashboard_browser.py."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from db import dashboard_queries as q
from db.errors import StorageError
from db.session import open_db
from db.store import NewCandidate, Store
from tests.browser import Dashboard
from tests.dashboard_data import build_database
from tests.orch_helpers import glo, write_config

XSS_NAME = "<script>alert(1)</script>"


def _get(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _json(url: str) -> Any:
    status, _, body = _get(url)
    assert status == 200, body
    return json.loads(body)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small finished `glo run` (fake worker) named like a script, plus a run with a held job."""
    tmp = tmp_path_factory.mktemp("dash")
    cfg = write_config(tmp / "c.toml", population=12, generations=2, cma_iterations=2)
    cfg.write_text(cfg.read_text().replace('name = "test"', f"name = {json.dumps(XSS_NAME)}"))
    r = glo("run", str(cfg), "--db", str(tmp / "f.db"), "--run-id", "fin")
    assert r.returncode == 0, r.stderr
    add_held_run(tmp / "f.db")
    return tmp / "f.db"


HOLD_REASON = "Error from slot1@node-3: Failed to transfer files <b>spec.json</b>: Connection timed out"


def add_held_run(path: Path, run_id: str = "pool") -> int:
    """A cluster run with one job on hold (written through the Store API, as the condor backend would)."""
    db = open_db(path)
    try:
        store = Store(db)
        store.create_run(run_id, name="pool run", config={"run": {"name": "pool run"}, "backend": {"kind": "condor"}},
                         seed=0, task="mnist", backend="condor", pid=None)
        rows = store.record_asked(run_id, [NewCandidate(
            search_id="g0-0", tree_json={"op": "*", "args": [{"op": "x"}, {"op": "log", "args": [{"op": "y"}]}]},
            infix="x * log(y)", coefficients=[], canonical_key="s1:x*log(y)", eval_key="held-key", generation=0,
            phase="discovery", origin="init", parents=[])], state={})
        job = store.create_job(run_id, "condor", [rows[0].uid])
        store.transition_job(job.id, "submitted", backend_job_id="4711.0")
        store.transition_job(job.id, "held", hold_reason=HOLD_REASON, hold_code=13, hold_subcode=2,
                             host="node-3.example.org")
        store.update_run(run_id, status="stopped")
        return job.id
    finally:
        db.dispose()


@pytest.fixture(scope="module")
def server(finished: Path):  # type: ignore[no-untyped-def]
    with Dashboard(finished) as d:
        yield d


def test_run_json_agrees_with_glo_status(finished: Path, server: Dashboard) -> None:
    st = json.loads(glo("status", "fin", "--db", str(finished), "--json").stdout)
    run = _json(server.url + "api/run?id=fin")
    for key in ("done", "running", "failed", "cached", "resolved", "queued"):
        assert run["evaluations"][key] == st["evaluations"][key], key
    assert run["best"]["fitness"] == st["best"]["fitness"] and run["best"]["candidate_id"] == st["best"]["candidate_id"]
    assert run["name"] == XSS_NAME and run["phase"] == st["phase"] == "done"
    assert run["jobs"] == st["jobs"]
    assert run["evaluations_per_hour"] == pytest.approx(st["evaluations_per_hour"])
    assert run["scheduler"]["alive"] is False and run["scheduler"]["died"] is False
    fits = [row["fitness"] for row in run["leaderboard"]]
    assert fits == sorted(fits, reverse=True) and fits[0] == st["best"]["fitness"]
    best = json.loads(glo("best", "fin", "--db", str(finished), "-k", "5", "--json").stdout)
    assert [row["fitness"] for row in run["leaderboard"][:5]] == [b["fitness"] for b in best]
    gens = run["generations"]
    assert [g["generation"] for g in gens["discovery"]] == [0, 1] and len(gens["cma"]) == 2
    assert all(g["worst"] <= g["q1"] <= g["median"] <= g["q3"] <= g["best"] for g in gens["discovery"] + gens["cma"])
    runs = _json(server.url + "api/runs")["runs"]
    assert {r["run_id"] for r in runs} == {"fin", "pool"}


def test_candidate_job_and_held_job(finished: Path, server: Dashboard) -> None:
    run = _json(server.url + "api/run?id=fin")
    uid = run["leaderboard"][0]["candidate_id"]
    c = _json(server.url + "api/candidate?" + urllib.parse.urlencode({"uid": uid}))
    shown = json.loads(glo("show", uid, "--db", str(finished), "--json").stdout)
    assert c["canonical_key"] == shown["canonical_key"] and c["coefficients"] == shown["coefficients"]
    assert c["origin"] == shown["origin"] and [p["search_id"] for p in c["parents"]] == shown["parents"]
    assert c["evaluation"]["fitness"] == shown["evaluation"]["fitness"]
    assert c["keras"] == glo("export", uid, "--db", str(finished)).stdout
    assert c["tree_view"]["label"] == shown["tree"]["op"] and c["jobs"]
    pool = _json(server.url + "api/run?id=pool")
    (held,) = pool["held_jobs"]
    assert held["state"] == "held" and held["hold_reason"] == HOLD_REASON and held["hold_code"] == 13
    assert pool["evaluations"]["running"] == 1
    job = _json(server.url + f"api/job?id={held['job_id']}")
    assert job["hold_reason"] == HOLD_REASON and job["host"] == "node-3.example.org"
    assert job["candidates"][0]["infix"] == "x * log(y)"
    (attempt,) = job["attempts_history"]  # the job page's attempts table (issue #18)
    assert (attempt["attempt"], attempt["backend_job_id"], attempt["host"]) == (1, "4711.0", "node-3.example.org")
    assert attempt["hold_reason"] == HOLD_REASON and (attempt["hold_code"], attempt["hold_subcode"]) == (13, 2)
    assert attempt["outcome"] == "" and [n["what"] for n in attempt["notes"]] == [
        f"held: {HOLD_REASON} (code 13/2) on node-3.example.org"]
    assert _get(server.url + "api/run?id=nope")[0] == 404
    assert _get(server.url + "api/candidate?uid=fin/nope")[0] == 404
    assert _get(server.url + "api/job?id=abc")[0] == 400


def test_the_server_cannot_write_the_database(finished: Path, server: Dashboard, tmp_path: Path) -> None:
    before = (_digest(finished), finished.stat().st_mtime_ns)
    for path in ("", "run?id=fin", "api/runs", "api/run?id=fin", "api/run?id=pool", "api/evaluations",
                 "api/job?id=1", "api/candidate?uid=fin/g0-1", "api/meta", "static/app.js"):
        assert _get(server.url + path)[0] in (200, 404), path
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert _get(server.url + "api/runs", method=method)[0] == 405
    assert (_digest(finished), finished.stat().st_mtime_ns) == before
    # the connections it reads through refuse every write, whatever SQL is sent
    ro = q.ReadOnlyDB(finished)
    con = ro.connect()
    try:
        for sql in ("UPDATE runs SET name = 'x'", "DELETE FROM candidates", "CREATE TABLE t (x)", "PRAGMA user_version=7"):
            with pytest.raises(sqlite3.OperationalError, match="readonly|read-only|attempt to write"):
                con.execute(sql)
    finally:
        con.close()
    con = sqlite3.connect(ro.uri, uri=True)  # mode=ro alone, without query_only, still cannot write
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            con.execute("UPDATE runs SET name = 'x'")
    finally:
        con.close()
    from sqlalchemy import text

    sa = ro.sqlalchemy()
    with pytest.raises(StorageError), sa.session(write=True) as s:
        s.execute(text("UPDATE runs SET name = 'x'"))
    assert (_digest(finished), finished.stat().st_mtime_ns) == before


def test_security_headers_and_host_check(server: Dashboard) -> None:
    status, headers, body = _get(server.url)
    assert status == 200 and b"app.js" in body
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert headers["x-content-type-options"] == "nosniff"
    # a page on another site that rebinds its name to 127.0.0.1 sends its own Host: refused
    assert _get(server.url + "api/runs", headers={"Host": "evil.example.com"})[0] == 400
    status, headers, body = _get(server.url + "api/run?id=fin")
    assert headers["content-type"].startswith("application/json")
    assert XSS_NAME.encode() in body  # data, not markup: the page inserts it as text (see the browser tests)


def test_an_old_schema_is_refused_not_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    open_db(path, create=True).dispose()
    con = sqlite3.connect(path)
    with con:
        con.execute("DELETE FROM schema_version WHERE version = (SELECT max(version) FROM schema_version)")
    con.close()
    before = _digest(path)
    with pytest.raises(StorageError, match="upgrade it once"):
        q.ReadOnlyDB(path)
    assert _digest(path) == before
    with pytest.raises(StorageError, match="no GLO database"):
        q.ReadOnlyDB(tmp_path / "missing.db")
    r = glo("dashboard", "--db", str(tmp_path / "missing.db"), "--port", "0")
    assert r.returncode == 1 and "no GLO database" in r.stderr and "Traceback" not in r.stderr


def test_incremental_totals_follow_writes(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    build_database(path, run_id="s", evaluations=300, per_generation=40, held_jobs=2)
    ro = q.ReadOnlyDB(path)
    first = q.run_detail(ro, "s")
    assert first["evaluations"]["done"] == 300 and first["evaluations"]["pending"] == 4
    con = sqlite3.connect(path)
    with con:  # a pending candidate is trained (best of all), and the search hands out a new one
        uid, eid = con.execute("SELECT uid, (SELECT max(id) FROM evaluations) FROM candidates "
                               "WHERE status = 'pending' LIMIT 1").fetchone()
        con.execute("UPDATE candidates SET status = 'evaluated', fitness = 0.99999, evaluation_id = ?, resolved_at = ? "
                    "WHERE uid = ?", (eid, time.time(), uid))
        con.execute("INSERT INTO candidates (uid, run_id, search_id, seq, tree_json, infix, coefficients_json, "
                    "canonical_key, eval_key, generation, phase, origin, parents_json, status, fitness, error, told, "
                    "created_at) SELECT 's/new', 's', 'new', 99999, tree_json, infix, '[]', canonical_key, 'k-new', "
                    "generation, phase, origin, '[]', 'resolved', 0.0, 'invalid', 1, 0 FROM candidates LIMIT 1")
    con.close()
    again = q.run_detail(ro, "s")
    fresh = q.run_detail(q.ReadOnlyDB(path), "s")
    for key in ("evaluations", "best", "generations", "leaderboard", "cache", "evaluations_per_hour"):
        assert again[key] == fresh[key], key
    assert again["best"]["candidate_id"] == uid and again["evaluations"]["pending"] == 3
    assert again["evaluations"]["resolved"] == first["evaluations"]["resolved"] + 1
    db = open_db(path)
    from db.queries import status

    st = status(db, "s")
    db.dispose()
    assert again["best"]["fitness"] == st.best["fitness"]
    assert {k: again["evaluations"][k] for k in st.evaluations} == st.evaluations


def test_a_multi_fidelity_run_shows_its_rungs_and_its_top_rung_best(tmp_path: Path) -> None:
    """The run page agrees with `glo status --json` on what #16 asks the product to show: generation 0's
    trainable share, trainings per rung, and the best as BEST_SQL defines it (the longest training first), even
    when a short-budget training scored higher -- a loss fast at 10 steps may collapse at 30."""
    cfg = write_config(tmp_path / "c.toml", population=10, generations=2, cma_iterations=1,
                       extra="[search.fidelity]\nsteps = [30]\npromote_fraction = 0.3\n")
    path = tmp_path / "m.db"
    r = glo("run", str(cfg), "--db", str(path), "--run-id", "mf")
    assert r.returncode == 0, r.stderr
    con = sqlite3.connect(path)
    with con:  # a rung-0 training better than every top-rung one: the best by fitness alone, not by BEST_SQL
        uid = con.execute("SELECT c.uid FROM candidates c JOIN evaluations e ON e.id = c.evaluation_id "
                          "WHERE c.run_id = 'mf' AND c.status = 'evaluated' AND e.steps = 10 LIMIT 1").fetchone()[0]
        con.execute("UPDATE candidates SET fitness = 0.999999 WHERE uid = ?", (uid,))
    con.close()
    st = json.loads(glo("status", "mf", "--db", str(path), "--json").stdout)
    run = q.run_detail(q.ReadOnlyDB(path), "mf")
    assert [b["steps"] for b in st["trainings_per_budget"]] == [10, 30]
    assert run["trainings_per_budget"] == st["trainings_per_budget"]
    assert run["generation0"] == st["generation0"] and run["generation0"]["members"] == 10
    assert run["best"]["candidate_id"] == st["best"]["candidate_id"] != uid
    assert run["best"]["fitness"] == st["best"]["fitness"] < 0.999999


def test_welch_and_incomplete_beta() -> None:
    from orchestrator.dashboard.analysis import betainc, mean_sd, welch

    assert betainc(5.0, 0.5, 10 / (10 + 4.0)) == pytest.approx(0.07339, abs=1e-5)  # t = 2, df = 10, two-sided
    assert betainc(2.0, 3.0, 0.4) == pytest.approx(0.5248, abs=1e-4)
    res = welch([0.91, 0.92, 0.93, 0.92], [0.89, 0.90, 0.88, 0.90])
    assert res is not None and res["p"] < 0.01 and res["t"] > 0
    assert welch([0.9], [0.8, 0.7]) is None
    assert mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0)


def test_loss_shape_and_short_formula() -> None:
    from orchestrator.dashboard.analysis import loss_shape, short_formula
    from worker.lossexpr import named_loss

    ce = named_loss("ce").to_json()
    shape = loss_shape(ce)
    assert shape is not None and shape["minimum"] is None and all(v is not None for v in shape["loss"])
    assert loss_shape(named_loss("baikal").to_json())["minimum"] is not None
    from worker.lossexpr import parse

    tree = parse("2.339364177466066 * square(1.9493770228444238 * x * log(y))").to_json()
    assert short_formula(tree, "full") == "2.339 * square(1.949 * x * log(y))"
    assert short_formula(ce, "x * log(y)") == "x * log(y)"


def test_remote_host_needs_a_flag_and_warns(finished: Path) -> None:
    r = glo("dashboard", "--db", str(finished), "--host", "0.0.0.0", "--port", "0")
    assert r.returncode == 2 and "--allow-remote" in r.stderr
    with Dashboard(finished, "--host", "0.0.0.0", "--allow-remote") as d:
        assert d.proc.stderr is not None
        status, _, _ = _get(d.url.replace(d.url.split("/")[2].split(":")[0], "127.0.0.1", 1) + "api/meta")
        assert status == 200  # any Host header is accepted once remote access was asked for
        d.stop()
        err = d.proc.stderr.read()
        assert "WARNING" in err and "no login" in err


def test_glo_evaluate_results_are_shown(finished: Path, tmp_path: Path) -> None:
    """With `glo evaluate` in this GLO: an evaluation run's table and curves, on its page and its candidate's."""
    pytest.importorskip("orchestrator.cli.evaluate")
    db = tmp_path / "e.db"
    src, dst = sqlite3.connect(finished), sqlite3.connect(db)
    src.backup(dst)
    src.close()
    dst.close()
    best = json.loads(glo("best", "fin", "--db", str(db), "-k", "1", "--json").stdout)[0]["candidate_id"]
    cfg = write_config(tmp_path / "c.toml")
    r = glo("evaluate", best, "ce", "--repeats", "3", "--curve-every", "5", "--config", str(cfg), "--db", str(db),
            "--run-id", "ev")
    assert r.returncode == 0, r.stderr[-2000:]
    with Dashboard(db) as server:
        run = _json(server.url + "api/run?id=ev")
        assert run["kind"] == "evaluation" and run["expected_evaluations"] == 6
        ev = run["evaluation"]
        rows = {row["loss"]: row for row in ev["summary"]}
        assert rows[best]["n"] == rows["ce"]["n"] == 3 and rows[best]["welch_p_two"] is not None
        assert rows[best]["mean"] is not None and rows[best]["std"] is not None
        assert {c["label"] for c in ev["curves"]} == {best, "ce"}
        cand = _json(server.url + "api/candidate?" + urllib.parse.urlencode({"uid": best}))
        assert [e["run_id"] for e in cand["evaluation_runs"]] == ["ev"]
        (group,) = [g for g in cand["evaluation_groups"] if g["n"] == 3]
        assert group["test"]["mean"] == pytest.approx(rows[best]["mean"]) and group["p_test"] is not None
        listing = _json(server.url + "api/evaluations")
        assert [e["run_id"] for e in listing["evaluation_runs"]] == ["ev"]
        assert any(g["n"] == 3 for g in listing["groups"])
