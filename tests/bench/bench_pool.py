"""Pool utilisation: the generation barrier against steady-state evolution (issue 21).

A real `glo run` on the local backend with S slots (`backend.max_in_flight = S`, one candidate per job),
the fake worker sleeping a heavy-tailed time per candidate (lognormal, median `MEDIAN_S`, sigma 1, and
with probability 2 % a straggler that takes 10x the median: tests/fake_worker.py $GLO_FAKE_WORKER_TIMES) and scoring it
with search_synthetic's fitness (closeness to `TARGET`).  For each S the generational run goes first; the
steady-state run then gets `ga.max_trainings` = the trainings the generational one made, so both train
the same number.  Utilisation = busy slot-seconds (each job attempt's submission to its end, from
job_attempts) / (S x the discovery's wall time, first submission to last result).  No CMA-ES.

    .venv/bin/python -m tests.bench --only pool          # about 18 min on 2 cores; PNG in out/bench_pool.png
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
FAKE_WORKER = REPO / "tests" / "fake_worker.py"
TARGET = "log(y) - x / y"
MEDIAN_S, SIGMA, STRAGGLER_P, STRAGGLER_X = 3.0, 1.0, 0.02, 10.0
POPULATION, GENERATIONS, ELITES = 16, 12, 2
SLOTS = tuple(int(v) for v in os.environ.get("GLO_BENCH_POOL_SLOTS", "8,32").split(","))  # e.g. "32" to rerun one

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
timeout_s = 600
worker_command = ["{python}", "{worker}"]
"""


def _run(work: Path, mode: str, slots: int, max_trainings: int | None) -> dict[str, Any]:
    steady = "" if mode == "generational" else (
        f'mode = "steady-state"\nmax_trainings = {max_trainings}\nmax_in_flight = {slots}')
    cfg = work / f"{mode}-{slots}.toml"
    cfg.write_text(CONFIG.format(mode=mode, slots=slots, population=POPULATION, generations=GENERATIONS,
                                 elites=ELITES, steady=steady, python=sys.executable, worker=FAKE_WORKER))
    db = work / f"{mode}-{slots}.db"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               GLO_FAKE_WORKER_TIMES=f"{MEDIAN_S}:{SIGMA}:{STRAGGLER_P}:{STRAGGLER_X}", GLO_FAKE_WORKER_TARGET=TARGET)
    env.pop("GLO_DB", None)
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "orchestrator", "run", str(cfg), "--db", str(db), "--run-id", "r"],
                       capture_output=True, text=True, env=env, cwd=REPO)
    if r.returncode != 0:
        raise RuntimeError(f"glo run ({mode}, S={slots}) failed: {r.stderr[-2000:]}")
    con = sqlite3.connect(db)
    attempts = con.execute("SELECT submitted_at, ended_at FROM job_attempts WHERE ended_at IS NOT NULL").fetchall()
    start = min(a for a, _ in attempts)
    end = max(b for _, b in attempts)
    busy = sum(b - a for a, b in attempts)
    # the budget's last hand-out: from then on slots can only drain (a fixed budget ends so in either mode)
    last_out = max(a for a, _ in attempts)
    busy_before = sum(min(b, last_out) - a for a, b in attempts if a < last_out)
    trained = con.execute("SELECT count(*) FROM candidates WHERE status = 'evaluated'").fetchone()[0]
    best_curve, best = [], 0.0
    for at, fit in con.execute("SELECT resolved_at, fitness FROM candidates WHERE status IN ('evaluated', 'cached') "
                               "ORDER BY resolved_at"):
        if fit is not None and fit > best:
            best = fit
            best_curve.append([round(at - start, 2), round(fit, 6)])
    con.close()
    return {"mode": mode, "slots": slots, "trainings": trained, "jobs": len(attempts),
            "wall_seconds": round(end - start, 1), "busy_slot_seconds": round(busy, 1),
            "utilisation": round(busy / (slots * (end - start)), 4),
            "utilisation_until_last_submission": round(busy_before / (slots * (last_out - start)), 4),
            "drain_seconds": round(end - last_out, 1), "best_fitness": round(best, 6),
            "best_against_wall": best_curve, "glo_run_seconds": round(time.time() - t0, 1)}


def _figure(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SLOTS), figsize=(5 * len(SLOTS), 3.6), sharey=True, squeeze=False)
    axes = axes[0]
    for ax, slots in zip(axes, SLOTS):
        for row in (r for r in rows if r["slots"] == slots):
            xs = [0.0] + [t for t, _ in row["best_against_wall"]] + [row["wall_seconds"]]
            ys = [0.0] + [f for _, f in row["best_against_wall"]] + [row["best_fitness"]]
            ax.step(xs, ys, where="post", label=f"{row['mode']} ({row['utilisation']:.0%} busy)")
        ax.set_title(f"S = {slots} slots, {rows[0]['trainings']} trainings")
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
            gen = _run(Path(tmp), "generational", slots, None)
            rows.append(gen)
            rows.append(_run(Path(tmp), "steady-state", slots, gen["trainings"]))
    png = REPO / "out" / "bench_pool.png"
    _figure(rows, png)
    return {"job_time": {"median_s": MEDIAN_S, "sigma": SIGMA, "straggler_p": STRAGGLER_P,
                         "straggler_factor": STRAGGLER_X},
            "population": POPULATION, "generations": GENERATIONS, "target": TARGET, "figure": str(png),
            "goal": "utilisation >= 0.95 in steady-state at S = 32", "rows": rows,
            "table": [{k: r[k] for k in ("mode", "slots", "trainings", "wall_seconds", "utilisation",
                                        "utilisation_until_last_submission", "drain_seconds", "best_fitness")}
                      for r in rows]}


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
