"""The pool bench's own arithmetic (tests/bench/bench_pool.py): the zero-overhead replays and the idle time
that its report splits into ramp-up, refill latency and drain.  The bench itself is timed, so it is not run
here; what it computes from its timestamps is."""

from __future__ import annotations

import pytest

from tests.bench.bench_pool import _idle_between, ideal_generational, ideal_steady, replay_budgets
from tests.fake_worker import draw_seconds


def test_ideal_steady_hands_each_job_to_the_first_free_slot():
    # slot A: 4 s; slot B: 1 + 1 + 1 + 1 s -> both end at 4 s, no idle; the last job starts at 3 s
    assert ideal_steady([4.0, 1.0, 1.0, 1.0, 1.0], 2) == {"wall_seconds": 4.0, "utilisation": 1.0,
                                                          "drain_seconds": 1.0}
    # a straggler handed out last drains alone: 2 slots x 7 s, 9 s busy
    assert ideal_steady([1.0, 1.0, 6.0], 2) == {"wall_seconds": 7.0, "utilisation": round(8.0 / 14.0, 4),
                                                "drain_seconds": 6.0}


def test_ideal_generational_waits_for_each_generations_last_job():
    # generation 1: 4 | 1 -> 4 s; generation 2: 2 | 2 -> 2 s; 9 s busy of 2 x 6 s
    assert ideal_generational([[4.0, 1.0], [2.0, 2.0]], 2) == {"wall_seconds": 6.0, "utilisation": 0.75}


def test_idle_between_counts_only_the_window():
    jobs = [(0.0, 2.0), (1.0, 3.0)]
    assert _idle_between(jobs, 2, 0.0, 3.0) == pytest.approx(2.0)  # 6 slot-s, 4 busy
    assert _idle_between(jobs, 2, 2.0, 3.0) == pytest.approx(1.0)
    assert _idle_between(jobs, 4, 1.0, 2.0) == pytest.approx(2.0)


def test_the_fake_workers_job_time_is_a_pure_function_of_the_candidate():
    a = draw_seconds("s7", "log(y) - x / y", "3:1:0.02:10")
    assert a == draw_seconds("s7", "log(y) - x / y", "3:1:0.02:10") > 0
    assert a != draw_seconds("s8", "log(y) - x / y", "3:1:0.02:10")
    times = [draw_seconds(f"s{n}", "x * y", "3:1:0.02:10") for n in range(2000)]
    assert sum(t == 30.0 for t in times) == pytest.approx(40, abs=20)  # 2 % stragglers at 10 x the median
    assert sorted(times)[1000] == pytest.approx(3.0, rel=0.15)  # the median


def test_a_per_attempt_draw_is_a_pure_function_of_the_candidate_and_the_place_it_ran(tmp_path, monkeypatch):
    from tests.fake_worker import attempt_place, job_seconds

    times = "3:1:0.02:10"
    spec = tmp_path / "run" / "job-12" / "a2" / "spec.json"
    assert attempt_place(str(spec)) == "job-12/a2"
    here = draw_seconds("s7", "x * y", times, "job-12/a2")
    assert here == draw_seconds("s7", "x * y", times, "job-12/a2")
    assert here != draw_seconds("s7", "x * y", times, "job-13/a1") != draw_seconds("s7", "x * y", times)
    monkeypatch.setenv("GLO_FAKE_WORKER_TIMES", times)
    monkeypatch.setenv("GLO_FAKE_WORKER_TIMES_PER", "attempt")
    assert job_seconds("s7", "x * y", "job-12/a2") == here
    monkeypatch.setenv("GLO_FAKE_WORKER_TIMES_PER", "candidate")
    assert job_seconds("s7", "x * y", "job-12/a2") == draw_seconds("s7", "x * y", times)
    monkeypatch.setenv("GLO_FAKE_WORKER_PLACES", "job-12/a2=0.5;job-9/a1=crash")
    assert job_seconds("s7", "x * y", "job-12/a2") == 0.5  # a slow node, named


def test_the_replay_of_a_budget_is_bounded_and_a_longer_budget_drains_a_smaller_share():
    short, long = replay_budgets([64, 2048], slots=32, orders=3)
    for r in (short, long):
        assert 0 < r["utilisation"] <= 1 and 0 < r["drain_share"] < 1 and r["slots"] == 32
    assert long["drain_share"] < short["drain_share"] and long["utilisation"] > short["utilisation"]
