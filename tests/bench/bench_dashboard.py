"""`glo dashboard` on a big database: a run of 100,000 evaluations (written with plain SQL inserts by
tests/dashboard_data.py, not by a search), served by a real `glo dashboard`.

Measures: the first computation of the run's totals (a full read of its candidates; the server does it
in the background right after it starts), the run page's JSON once warm, the same while the run's
totals must catch up with new rows, the runs list, a candidate page's JSON, and (with Chromium) the
browser's time from navigation to the drawn run page: counts, charts and leaderboard.  Goal: the
run page renders in under 1 s.

Knobs: GLO_BENCH_DASH_EVALS (default 100000), GLO_BENCH_DASH_ROUNDS (default 5).
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

GOAL_S = 1.0


def _get(url: str) -> float:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as resp:
        resp.read()
    return time.perf_counter() - t0


def _median(xs: list[float]) -> float:
    return round(statistics.median(xs), 4)


def run() -> dict[str, Any]:
    from db import dashboard_queries as q
    from tests.browser import Dashboard, missing_reason
    from tests.dashboard_data import build_database

    n = int(os.environ.get("GLO_BENCH_DASH_EVALS", "100000"))
    rounds = int(os.environ.get("GLO_BENCH_DASH_ROUNDS", "5"))
    out: dict[str, Any] = {"evaluations": n, "goal_run_page_s": GOAL_S}
    with tempfile.TemporaryDirectory(prefix="glo-bench-dash-") as tmp:
        db = Path(tmp) / "big.db"
        t0 = time.perf_counter()
        counts = build_database(db, run_id="big", evaluations=n, per_generation=1000)
        out["build_db_s"] = round(time.perf_counter() - t0, 2)
        out["db_mb"] = round(db.stat().st_size / 2**20, 1)
        out["candidates"] = counts["candidates"]
        out["jobs"] = counts["jobs"]

        # in-process: a cold first look at the run (no background warm-up), then warm
        ro = q.ReadOnlyDB(db)
        t0 = time.perf_counter()
        q.run_detail(ro, "big")
        out["cold_run_totals_s"] = round(time.perf_counter() - t0, 3)

        with Dashboard(db) as server:
            base = server.url
            # wait for the server's background warm-up, then time the run page's JSON
            _get(base + "api/runs")
            warm = [_get(base + "api/run?id=big") for _ in range(rounds)]
            out["run_json_warm_s"] = _median(warm)
            out["run_json_warm_max_s"] = round(max(warm), 4)
            out["runs_json_s"] = _median([_get(base + "api/runs") for _ in range(rounds)])
            uid = sqlite3.connect(db).execute("SELECT uid FROM candidates WHERE status = 'evaluated' "
                                              "ORDER BY fitness DESC LIMIT 1").fetchone()[0]
            out["candidate_json_s"] = _median([_get(base + "api/candidate?" + urllib.parse.urlencode({"uid": uid}))
                                               for _ in range(rounds)])
            # the run goes on: 200 new candidates between two polls
            catch_up = []
            con = sqlite3.connect(db)
            for i in range(rounds):
                with con:
                    con.execute("INSERT INTO candidates (uid, run_id, search_id, seq, tree_json, infix, "
                                "coefficients_json, canonical_key, eval_key, generation, phase, origin, parents_json, "
                                "status, fitness, error, evaluation_id, told, created_at, resolved_at) "
                                "SELECT 'big/n' || ? || '-' || seq, run_id, 'n' || ? || '-' || seq, seq + 1000000 * "
                                "(? + 1), tree_json, infix, coefficients_json, canonical_key, eval_key, generation, "
                                "phase, origin, parents_json, status, fitness, error, evaluation_id, told, created_at, "
                                "resolved_at FROM candidates WHERE run_id = 'big' AND status = 'evaluated' LIMIT 200",
                                (i, i, i))
                catch_up.append(_get(base + "api/run?id=big"))
            con.close()
            out["run_json_after_200_new_s"] = _median(catch_up)
            reason = missing_reason()
            if reason:
                out["browser"] = f"skipped: {reason}"
            else:
                out.update(_browser(base, rounds))
    page = out.get("browser_run_page_s")
    out["goal_met"] = bool(page is not None and page < GOAL_S) if page is not None else out["run_json_warm_s"] < GOAL_S
    return out


def _browser(base: str, rounds: int) -> dict[str, Any]:
    """Navigation start -> the run page drawn (counts, both charts, 20 leaderboard rows), in Chromium."""
    from selenium.webdriver.common.by import By

    from tests.browser import chrome

    times = []
    with chrome() as driver:
        for _ in range(rounds):
            driver.get("about:blank")
            t0 = time.perf_counter()
            driver.get(base + "run?id=big")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if (len(driver.find_elements(By.CSS_SELECTOR, "#leaderboard tbody tr")) == 20
                        and len(driver.find_elements(By.CSS_SELECTOR, ".uplot")) == 2
                        and driver.find_elements(By.CSS_SELECTOR, "#count-done")):
                    break
                time.sleep(0.01)
            times.append(time.perf_counter() - t0)
        driver.get("about:blank")
    return {"browser_run_page_s": _median(times), "browser_run_page_max_s": round(max(times), 4)}
