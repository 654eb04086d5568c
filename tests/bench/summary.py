"""The short markdown summary of a `make bench` run (bench/summary.md): each number beside its goal."""

from __future__ import annotations

import os
import platform
import time
from typing import Any


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
        return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min) on {os.cpu_count()} CPUs"
    except OSError:
        return f"{os.cpu_count()} CPUs"


def _goal(value: float | None, goal: float, smaller_is_better: bool = True) -> str:
    if value is None:
        return "-"
    met = value <= goal if smaller_is_better else value >= goal
    return "met" if met else "**missed**"


def render(res: dict[str, Any], load_before: str | None = None) -> str:
    lines = ["# `make bench` summary", "",
             f"{time.strftime('%Y-%m-%d %H:%M')}, {platform.node() or 'this machine'}, {platform.processor() or platform.machine()}; "
             f"load before: {load_before or '?'}; after: {load_average()}.", "",
             "Timings on a shared machine move with its load: the ratios (measured side by side, interleaved) are "
             "what to compare across runs.", ""]
    rows: list[tuple[str, str, str, str]] = []
    w = res.get("worker", {}).get("step_time")
    if w:
        for name, key in (("tree `ce` / Keras CE, per step", "ratio_tree_ce_vs_keras_ce"),
                          ("tree `baikal` / Keras CE, per step", "ratio_tree_baikal_vs_keras_ce")):
            rows.append((name, f"{w[key]:.3f}", "<= 1.03", _goal(w[key], 1.03)))
    for family, f in (res.get("fused", {}).get("throughput") or {}).items():
        if "error" in f:
            rows.append((f"fused ({family} kernels)", f"failed: {f['error'][:80]}", "fused = K", "no"))
            continue
        for k, v in f["per_k"].items():
            fused = v.get("fused")
            ok = "-" if fused is None else ("yes" if fused == [int(k)] and not v.get("fallback") else "no")
            rows.append((f"fused K={k}, {family} kernels ({v['conv']} convolutions): candidate-steps/s fused vs "
                         f"separate ({f['device']})",
                         f"{v['fused_candidate_steps_per_second']} vs {v['separate_candidate_steps_per_second']} "
                         f"(x{v['speedup']}); fused = {fused or '-'}", "fused = K", ok))
    j = res.get("job")
    if j:
        for r in j.get("jobs", []) + j.get("fused_jobs", []):
            if "error" in r:
                rows.append((f"job overhead, {r.get('candidates')} candidates", r["error"][:60], "<= 10 %", "-"))
                continue
            label = f"job overhead, {r['candidates']} candidates/job" + (f", fuse {r['fuse']}" if r["fuse"] > 1 else "")
            rows.append((label, f"{100 * r['overhead_fraction']:.1f} % ({r['fixed_seconds']} s fixed of "
                         f"{r['training_seconds_at_budget']:.0f} s at {j['budget_steps']} steps)", "<= 10 %",
                         _goal(r["overhead_fraction"], 0.10)))
    o = res.get("orchestrator")
    if o:
        for n, r in o.get("per_candidate", {}).items():
            size, _, workload = n.partition(" ")
            label = f"per candidate, {int(size):,} evaluations in the DB, {r.get('workload', workload or 'default')} search"
            if "orchestrator_ms_per_candidate" not in r:  # an older JSON: the whole wall time only
                rows.append((label, f"{r['ms_per_candidate']} ms ({r['candidates']} candidates)", "<= 5 ms",
                             _goal(r["ms_per_candidate"], 5.0)))
                continue
            # The goal (issue 19) is the orchestrator's own path; the search's ask/tell is shown beside it.
            runs = f", median of {r['runs']} runs" if r.get("runs", 1) > 1 else ""
            rows.append((label, f"orchestrator {r['orchestrator_ms_per_candidate']} ms (search "
                         f"{r['search_ms_per_candidate']} ms, all {r['ms_per_candidate']} ms; {r['candidates']} "
                         f"candidates{runs})", "<= 5 ms", _goal(r["orchestrator_ms_per_candidate"], 5.0)))
        for n, r in o.get("glo_status", {}).items():
            if "error" in r:
                rows.append((f"`glo status` process, {int(n):,} evaluations", r["error"][:60], "<= 300 ms", "-"))
                continue
            t = r["table"]
            rows.append((f"`glo status` process, {int(n):,} evaluations",
                         f"{t['wall_ms_median']} ms wall, {t['cpu_ms_median']} ms CPU", "<= 300 ms",
                         _goal(t["wall_ms_median"], 300)))
        d = o.get("breeding_vs_deap", {})
        if "ratio_ours_vs_deap" in d:
            rows.append(("breeding (crossover + mutations) ours / DEAP gp, per child",
                         f"{d['ratio_ours_vs_deap']} ({d['us_per_child_ours']} vs {d['us_per_child_deap']} us)", "-", "-"))
    for r in (res.get("pool") or {}).get("rows", []):
        steady = r["mode"] == "steady-state"
        replayed = (r.get("ideal") or {}).get("generational_replayed")
        beside = (f"; generational on the same job times, replayed: {100 * replayed['utilisation']:.1f} %"
                  if replayed else "")
        useful = r.get("useful_utilisation", r["utilisation"])  # rows of before backup copies: all useful
        rows.append((f"pool utilisation, {r['mode']}, S = {r['slots']} ({r['trainings']} trainings, "
                     f"{r['wall_seconds']} s, backup copies {r.get('backup_copies', 0)})",
                     f"{100 * useful:.1f} % with kept work ({100 * r['utilisation']:.1f} % busy; until the last "
                     f"submission {100 * r['utilisation_until_last_submission']:.1f} %{beside})",
                     ">= 95 % at S = 32" if steady and r["slots"] == 32 else "-",
                     _goal(useful, 0.95, smaller_is_better=False) if steady and r["slots"] == 32 else "-"))
    lines += ["| measure | value | goal | |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    secs = {k: v.get("bench_seconds") for k, v in res.items() if isinstance(v, dict)}
    lines += ["", "Seconds per bench: " + ", ".join(f"{k} {v}" for k, v in secs.items()) + ".", ""]
    return "\n".join(lines)
