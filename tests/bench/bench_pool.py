"""Pool utilisation: the generation barrier against steady-state evolution (issue 21).

A real `glo run` on the local backend with S slots (`backend.max_in_flight = S`, one candidate per job),
the fake worker sleeping a heavy-tailed time per job attempt (lognormal, median `MEDIAN_S`, sigma 1, and
with probability 2 % a straggler that takes 10x the median: tests/fake_worker.py $GLO_FAKE_WORKER_TIMES; drawn
afresh for each attempt, GLO_BENCH_POOL_TAIL=attempt, or once per candidate, =candidate) and scoring it
with search_synthetic's fitness (closeness to `TARGET`).  Both modes run with `backend.backup_copies` =
GLO_BENCH_POOL_BACKUPS (2; 0 is the product's default): a job out for longer than 1.5 x the median gets
copies on slots the search leaves free, the first to finish wins.  For each S the generational run goes first; the
steady-state run then gets `ga.max_trainings` = the trainings the generational one made, so both train
the same number.  Utilisation = busy slot-seconds (each job attempt's submission to its end, from
job_attempts) / (S x the discovery's wall time, first submission to last result).  No CMA-ES.
`useful_utilisation` counts only the attempts whose results were kept: a backup copy that lost (outcome
"superseded") is busy but wasted, so the goal is judged on it.

Where the rest of S x wall goes (`idle`): before the first result (ramp-up), between the first result and
the budget's last submission (each freed slot waits for the scheduler to tell, breed, store and submit:
`refill_latency_s` is that idle time per refill), and after the last submission (the drain: a spent
budget leaves slots idle in any mode).  Inside the busy time, `job_time_share` is the worker's own sleep
(recomputed from the candidate, tests/fake_worker.draw_seconds) and the rest is the worker's start-up and
the scheduler's handling at both ends.  `ideal` replays the same job times in the same order of submission
with no dispatch or start-up cost (steady-state: a free slot takes the next job at once; generational:
each generation's jobs, then the barrier; the original jobs' first attempts only: the bound *without*
backup copies), so `utilisation_of_job_time / ideal.utilisation` is what the
orchestrator keeps of what the job-time distribution allows.  A steady-state row's `ideal` also replays the
generational search on its job times (`generational_replayed`): the barrier's figure at a budget too long to
run generationally here (steady-state alone, GLO_BENCH_POOL_TRAININGS).

Knobs (environment): GLO_BENCH_POOL_SLOTS ("8,32"), GLO_BENCH_POOL_GENERATIONS (the generational run's
length; 30 by default: about 420 trainings), GLO_BENCH_POOL_MODES ("generational,steady-state"; steady-state
alone takes GLO_BENCH_POOL_TRAININGS, else what the generational run would train), GLO_BENCH_POOL_MEDIAN_S
(3).  The job-time distribution is the issue's; change the median only for both modes together.

    .venv/bin/python -m tests.bench --only pool          # about 20 min on 2 cores; PNG in out/bench_pool.png
    .venv/bin/python -m tests.bench.bench_pool --replay 1000,3000,5000   # the zero-overhead bound per budget
"""

from __future__ import annotations

import bisect
import heapq
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.fake_worker import draw_seconds

REPO = Path(__file__).resolve().parents[2]
FAKE_WORKER = REPO / "tests" / "fake_worker.py"
TARGET = "log(y) - x / y"
MEDIAN_S = float(os.environ.get("GLO_BENCH_POOL_MEDIAN_S", "3.0"))
SIGMA, STRAGGLER_P, STRAGGLER_X = 1.0, 0.02, 10.0
TIMES = f"{MEDIAN_S}:{SIGMA}:{STRAGGLER_P}:{STRAGGLER_X}"
#: "attempt": each job attempt draws its own time (slow because of where it ran: the issue's queue waits,
#: evictions, slow nodes; a backup copy draws afresh); "candidate": a candidate's every attempt takes the same
#: time (slow because of what it trains; no copy can help)
TAIL = os.environ.get("GLO_BENCH_POOL_TAIL", "attempt")
#: backend.backup_copies of both modes' runs (0: no backup copies, the product's default)
BACKUPS = int(os.environ.get("GLO_BENCH_POOL_BACKUPS", "2"))
#: steady-state's search.ga.max_in_flight = S + WAITING: that many candidates wait, bred, for the next free slot
WAITING = int(os.environ.get("GLO_BENCH_POOL_WAITING", "4"))
POPULATION, ELITES = 16, 2
GENERATIONS = int(os.environ.get("GLO_BENCH_POOL_GENERATIONS", "30"))
SLOTS = tuple(int(v) for v in os.environ.get("GLO_BENCH_POOL_SLOTS", "8,32").split(","))  # e.g. "32" to rerun one
MODES = tuple(m.strip() for m in os.environ.get("GLO_BENCH_POOL_MODES", "generational,steady-state").split(","))
#: steady-state's budget when it runs without the generational run: what that run would train (elites are
#: carried, not retrained; a duplicate the generational search resolves without training makes it a little less)
TRAININGS = int(os.environ.get("GLO_BENCH_POOL_TRAININGS", str(POPULATION + (GENERATIONS - 1) * (POPULATION - ELITES))))

CONFIG = """
[run]
name = "pool-{mode}-{slots}"
seed = 0
[task]
steps = 10
[search.ga]
population_size = {population}
generations = {generations}
elites = {elites}
{steady}
[search.cma]
top_k = 0
[backend]
max_in_flight = {slots}
candidates_per_job = 1
backup_copies = {backups}
timeout_s = 600
worker_command = ["{python}", "{worker}"]
"""


def _idle_between(intervals: list[tuple[float, float]], slots: int, a: float, b: float) -> float:
    """Idle slot-seconds in [a, b]: S x (b - a) minus the busy time of `intervals` that falls inside."""
    busy = sum(max(0.0, min(e, b) - max(s, a)) for s, e in intervals)
    return max(0.0, slots * (b - a) - busy)


def ideal_steady(times: list[float], slots: int) -> dict[str, float]:
    """The same job times handed out in the same order, each to the first free slot at once."""
    free = [0.0] * slots
    ends, last_start = [], 0.0
    for t in times:
        start = heapq.heappop(free)
        last_start = start
        heapq.heappush(free, start + t)
        ends.append(start + t)
    wall = max(ends)
    return {"wall_seconds": round(wall, 1), "utilisation": round(sum(times) / (slots * wall), 4),
            "drain_seconds": round(wall - last_start, 1)}


def ideal_generational(generations: list[list[float]], slots: int) -> dict[str, float]:
    """Each generation's job times in order of submission, each to the first free slot; the next generation
    starts when the last of them ends (the barrier)."""
    wall = 0.0
    for times in generations:
        free = [0.0] * slots
        for t in times:
            heapq.heappush(free, heapq.heappop(free) + t)
        wall += max(free)
    total = sum(sum(g) for g in generations)
    return {"wall_seconds": round(wall, 1), "utilisation": round(total / (slots * wall), 4) if wall else 0.0}


def _run(work: Path, mode: str, slots: int, max_trainings: int | None) -> dict[str, Any]:
    steady = "" if mode == "generational" else (
        f'mode = "steady-state"\nmax_trainings = {max_trainings}\nmax_in_flight = {slots + WAITING}')
    cfg = work / f"{mode}-{slots}.toml"
    cfg.write_text(CONFIG.format(mode=mode, slots=slots, population=POPULATION, generations=GENERATIONS,
                                 elites=ELITES, steady=steady, python=sys.executable, worker=FAKE_WORKER,
                                 backups=BACKUPS))
    db = work / f"{mode}-{slots}.db"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               GLO_FAKE_WORKER_TIMES=TIMES, GLO_FAKE_WORKER_TIMES_PER=TAIL, GLO_FAKE_WORKER_TARGET=TARGET)
    env.pop("GLO_DB", None)
    load_before = os.getloadavg()
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "orchestrator", "run", str(cfg), "--db", str(db), "--run-id", "r"],
                       capture_output=True, text=True, env=env, cwd=REPO)
    glo_seconds = time.time() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise RuntimeError(f"glo run ({mode}, S={slots}) failed: {r.stderr[-2000:]}")
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT a.submitted_at, a.ended_at, c.search_id, c.infix, c.generation, a.job_id, a.attempt, a.outcome, "
        "c.uid FROM job_attempts a JOIN job_candidates jc ON jc.job_id = a.job_id "
        "JOIN candidates c ON c.uid = jc.candidate_uid WHERE a.ended_at IS NOT NULL ORDER BY a.submitted_at").fetchall()
    attempts = [(a, b) for a, b, *_ in rows]
    start = min(a for a, _ in attempts)
    end = max(b for _, b in attempts)
    wall = end - start
    busy = sum(b - a for a, b in attempts)
    # useful: the attempts whose results were kept (not a backup copy removed because another finished first)
    useful = sum(r[1] - r[0] for r in rows if r[7] != "superseded")
    # each attempt's own sleep; a copy removed early slept only until then
    job_time = [min(draw_seconds(r[2], r[3], TIMES, f"job-{r[5]}/a{r[6]}" if TAIL == "attempt" else ""),
                    r[1] - r[0] if r[7] == "superseded" else float("inf")) for r in rows]
    first_job: dict[str, int] = {}  # a candidate's first job; any later one holding it is a backup copy
    for r in sorted(rows, key=lambda r: r[5]):
        first_job.setdefault(r[8], r[5])
    original = [r[5] == first_job[r[8]] for r in rows]
    # the budget's last hand-out: from then on slots can only drain (a fixed budget ends so in either mode)
    last_out = max(a for a, _ in attempts)
    busy_before = sum(min(b, last_out) - a for a, b in attempts if a < last_out)
    first_end = min(b for _, b in attempts)
    refills = sum(1 for a, _ in attempts if first_end <= a <= last_out)
    idle_ramp = _idle_between(attempts, slots, start, first_end)
    idle_mid = _idle_between(attempts, slots, first_end, last_out)
    idle_drain = _idle_between(attempts, slots, last_out, end)
    trained = con.execute("SELECT count(*) FROM candidates WHERE status = 'evaluated'").fetchone()[0]
    cached = con.execute("SELECT count(*) FROM candidates WHERE status = 'cached'").fetchone()[0]
    best_curve, best = [], 0.0
    for at, fit in con.execute("SELECT resolved_at, fitness FROM candidates WHERE status IN ('evaluated', 'cached') "
                               "ORDER BY resolved_at"):
        if fit is not None and fit > best:
            best = fit
            best_curve.append([round(at - start, 2), round(fit, 6)])
    con.close()
    # the zero-overhead bound without backup copies: the original jobs' times (their first attempts' draws)
    first_times = [t for r, t, o in zip(rows, job_time, original) if o and r[6] == 1]
    if mode == "generational":
        by_gen: dict[int, list[float]] = {}
        for r, t, o in zip(rows, job_time, original):
            if o and r[6] == 1:
                by_gen.setdefault(r[4], []).append(t)
        ideal = ideal_generational([by_gen[g] for g in sorted(by_gen)], slots)
    else:
        ideal = ideal_steady(first_times, slots)
        # the generational search on the same job times (its generation 0, then population - elites children
        # each), replayed with no dispatch cost: its barrier alone, where running it would take hours
        chunks = [first_times[:POPULATION]] + [first_times[i:i + POPULATION - ELITES]
                                               for i in range(POPULATION, len(first_times), POPULATION - ELITES)]
        ideal["generational_replayed"] = ideal_generational(chunks, slots)
    ends = sorted(b for _, b in attempts)
    return {"mode": mode, "slots": slots, "trainings": trained, "cached": cached, "jobs": len(attempts),
            "wall_seconds": round(wall, 1), "busy_slot_seconds": round(busy, 1),
            "utilisation": round(busy / (slots * wall), 4),
            "useful_utilisation": round(useful / (slots * wall), 4),
            "backup_copies": BACKUPS, "tail": TAIL, "waiting": WAITING if mode != "generational" else None,
            "backups": {"submitted": sum(1 for o in original if not o),
                        "won": sum(1 for r, o in zip(rows, original) if not o and r[7] == "done"),
                        "superseded": sum(1 for r in rows if r[7] == "superseded")},
            "utilisation_until_last_submission": round(busy_before / (slots * (last_out - start)), 4),
            "drain_seconds": round(end - last_out, 1), "drain_share": round((end - last_out) / wall, 4),
            "utilisation_of_job_time": round(sum(job_time) / (slots * wall), 4),
            "job_time_share": round(sum(job_time) / busy, 4),
            "overhead_in_job_s": round((busy - sum(job_time)) / len(attempts), 3),
            "idle": {"ramp_up_slot_seconds": round(idle_ramp, 1), "until_last_submission_slot_seconds":
                     round(idle_mid, 1), "drain_slot_seconds": round(idle_drain, 1),
                     "refills": refills, "refill_latency_s": round(idle_mid / refills, 3) if refills else None,
                     "first_result_s": round(first_end - start, 2),
                     "results_in_first_10_s": bisect.bisect_right(ends, start + 10.0)},
            "ideal": ideal, "best_fitness": round(best, 6), "best_against_wall": best_curve,
            "glo_run_seconds": round(glo_seconds, 1),
            "cpu_seconds": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 1),
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()]}


def _figure(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SLOTS), figsize=(5 * len(SLOTS), 3.6), sharey=True, squeeze=False)
    axes = axes[0]
    for ax, slots in zip(axes, SLOTS):
        mine = [r for r in rows if r["slots"] == slots]
        for row in mine:
            xs = [0.0] + [t for t, _ in row["best_against_wall"]] + [row["wall_seconds"]]
            ys = [0.0] + [f for _, f in row["best_against_wall"]] + [row["best_fitness"]]
            ax.step(xs, ys, where="post", label=f"{row['mode']} ({row['useful_utilisation']:.0%} busy with kept work)")
        ax.set_title(f"S = {slots} slots, {mine[0]['trainings']} trainings")
        ax.set_xlabel("wall time (s)")
        ax.legend(loc="lower right", fontsize=8)
    axes[0].set_ylabel(f"best fitness (closeness to {TARGET})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run() -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="glo-bench-pool-") as tmp:
        for slots in SLOTS:
            budget = TRAININGS
            if "generational" in MODES:
                gen = _run(Path(tmp), "generational", slots, None)
                rows.append(gen)
                budget = gen["trainings"]
            if "steady-state" in MODES:
                rows.append(_run(Path(tmp), "steady-state", slots, budget))
    png = REPO / "out" / "bench_pool.png"
    _figure(rows, png)
    return {"job_time": {"median_s": MEDIAN_S, "sigma": SIGMA, "straggler_p": STRAGGLER_P,
                         "straggler_factor": STRAGGLER_X},
            "population": POPULATION, "generations": GENERATIONS, "target": TARGET, "figure": str(png),
            "goal": "utilisation >= 0.95 in steady-state at S = 32 (judged on useful_utilisation: the busy time of "
                    "backup copies that lost counts as idle)", "rows": rows,
            "table": [{k: r[k] for k in ("mode", "slots", "trainings", "wall_seconds", "utilisation",
                                        "useful_utilisation", "utilisation_until_last_submission", "drain_seconds",
                                        "best_fitness")}
                      for r in rows]}


def replay_budgets(counts: list[int], slots: int = 32, orders: int = 20) -> list[dict[str, float]]:
    """No `glo run`: for each budget, `orders` draws of that many job times from the bench's distribution
    (tests/fake_worker.draw_seconds on made-up ids) replayed with no overhead (`ideal_steady`).  What the
    distribution alone allows a steady-state run of that budget: its mean utilisation and drain share."""
    out = []
    for n in counts:
        runs = [ideal_steady([draw_seconds(f"replay{k}-{i}", "", TIMES) for i in range(n)], slots)
                for k in range(orders)]
        out.append({"trainings": n, "slots": slots, "orders": orders,
                    "utilisation": round(sum(r["utilisation"] for r in runs) / orders, 4),
                    "drain_share": round(sum(r["drain_seconds"] / r["wall_seconds"] for r in runs) / orders, 4),
                    "wall_seconds": round(sum(r["wall_seconds"] for r in runs) / orders, 1)})
    return out


if __name__ == "__main__":
    if sys.argv[1:2] == ["--replay"]:  # e.g. --replay 1000,3000,5000: the zero-overhead bound, in seconds of CPU
        print(json.dumps(replay_budgets([int(v) for v in sys.argv[2].split(",")]), indent=1))
    else:
        print(json.dumps(run(), indent=1))
