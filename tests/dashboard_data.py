"""Synthetic GLO databases for the dashboard's tests, screenshots and benchmark, written with plain SQL
inserts (fast: 100,000 evaluations in seconds) into a file created by the real schema migrations.

The run looks like a real one: discovery generations then CMA-ES iterations, realistic losses
(cross-entropy and Baikal variants with coefficients), cache hits, candidates the search settled,
failed candidates, jobs of two candidates each, held jobs with HTCondor hold codes, and a
validation-accuracy curve on some evaluations.
"""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

from db.session import open_db
from orchestrator.config import from_dict
from worker.lossexpr import parse, to_infix

#: Loss shapes the synthetic search "discovers" (each drawn with random coefficients).
TEMPLATES = ("x * log(y)", "log(y) - x / y", "x * log(y) - square(y)", "log(y) - x / y + x", "x * log(y) + y",
             "sqrt(y) * x - x / y", "log(y) * x * x", "x * log(y * y)", "log(y) - square(x - y)")
HOLD = ("Error from slot1@gpu-node-07.example.org: Failed to transfer files (input spec.json): Connection timed out",
        13, 2)


def _tree(rng: random.Random, template: str, with_coefs: bool) -> tuple[dict[str, Any], str]:
    tree = parse(template)
    if with_coefs:
        tree = tree.with_coefficients([round(rng.uniform(0.3, 3.0), 12) for _ in range(tree.size())])
    return tree.to_json(), to_infix(tree)


def build_database(path: str | Path, *, run_id: str = "big", evaluations: int = 100_000, per_generation: int = 1000,
                   cma_share: float = 0.2, name: str = "synthetic search", seed: int = 0, curves_every: int = 50,
                   held_jobs: int = 5, running: bool = False) -> dict[str, Any]:
    """Write one run with `evaluations` trainings (plus cache hits, settled and failed candidates) into a new
    GLO database at `path`; returns counts for the caller to check against."""
    path = Path(path)
    open_db(path, create=True).dispose()  # the real schema, every migration applied
    rng = random.Random(seed)
    now = time.time()
    t0 = now - 3 * 86400
    config = from_dict({"run": {"name": name, "seed": seed}}).to_dict()
    config["backend"]["kind"] = "condor"
    budget = {"batch_size": 100, "class_reduction": "sum", "epsilon": 1e-07, "learning_rate": 0.01, "steps": 2000,
              "train_subset": None, "validation_size": 5000}
    budget_json = json.dumps(budget, sort_keys=True)
    cands: list[tuple] = []
    evals: list[tuple] = []
    jobs: list[tuple] = []
    job_cands: list[tuple] = []
    cma_from = int(evaluations * (1 - cma_share))
    seq = 0
    n_eval = n_cached = n_failed = n_resolved = 0
    done_keys: list[tuple[str, int, float, str, str]] = []  # eval_key, evaluation id, fitness, tree, infix
    pending_job: list[str] = []
    ts = t0

    def add_job(uids: list[str], state: str, error: str = "", hold: tuple | None = None) -> None:
        jid = len(jobs) + 1
        hold_reason, code, sub = hold if hold else ("", None, None)
        jobs.append((jid, run_id, "condor", f"{1000 + jid // 50}.{jid % 50}", state, 1 if not error else 3, error,
                     hold_reason, f"/scratch/glo/{run_id}/job-{jid}", None, code, sub,
                     f"gpu-node-{jid % 23:02d}.example.org", 0, 1 if hold else 0, "[]", ts, ts, ts, ts,
                     ts if state in ("done", "failed") else None))
        for u in uids:
            job_cands.append((jid, u))

    while n_eval < evaluations:
        phase = "discovery" if n_eval < cma_from else "cma"
        gen = (seq // per_generation) if phase == "discovery" else (n_eval - cma_from) // 40
        search_id = f"g{gen}-{seq}" if phase == "discovery" else f"c0-{gen}-{seq}"
        uid = f"{run_id}/{search_id}"
        ts += 2.0
        roll = rng.random()
        progress = n_eval / evaluations
        if phase == "discovery" and roll < 0.12:  # settled by the search: invalid, elite, duplicate
            reason = rng.choice(("invalid", "invalid", "elite", f"duplicate of g{gen}-{max(0, seq - 7)}"))
            tree_json, infix = _tree(rng, "x" if reason == "invalid" else rng.choice(TEMPLATES), False)
            fit = 0.0 if reason == "invalid" else rng.uniform(0.5, 0.9)
            cands.append((uid, run_id, search_id, seq, json.dumps(tree_json), infix, "[]", f"s1:{infix}",
                          hashlib.sha256(infix.encode()).hexdigest(), gen, phase,
                          rng.choice(("crossover", "mutation")), json.dumps([f"g{max(0, gen - 1)}-1"]), "resolved",
                          fit, reason, None, 1, ts, ts))
            n_resolved += 1
        elif done_keys and roll < 0.22:  # a cache hit on an earlier training
            key, eid, fit, tree_text, infix = rng.choice(done_keys[-2000:])
            cands.append((uid, run_id, search_id, seq, tree_text, infix, "[]", f"s1:{infix}", key, gen, phase,
                          "mutation", "[]", "cached", fit, "", eid, 1, ts, ts))
            n_cached += 1
        elif roll < 0.235:  # given up after retries
            tree_json, infix = _tree(rng, rng.choice(TEMPLATES), True)
            cands.append((uid, run_id, search_id, seq, json.dumps(tree_json), infix, "[]", f"s1:{infix}",
                          hashlib.sha256((infix + "f").encode()).hexdigest(), gen, phase, "crossover", "[]",
                          "failed", 0.0, "job 17 failed 3 times: worker exited 70 (internal error)", None, 1, ts, ts))
            add_job([uid], "failed", "worker exited 70: Traceback (most recent call last): ... ResourceExhaustedError")
            n_failed += 1
        else:  # trained
            tree_json, infix = _tree(rng, rng.choice(TEMPLATES), phase == "cma" or rng.random() < 0.3)
            key = hashlib.sha256(f"{infix}|{seq}".encode()).hexdigest()
            fit = min(0.9995, max(0.0, rng.gauss(0.78 + 0.12 * progress, 0.04)))
            eid = len(evals) + 1
            metrics: dict[str, Any] = {"validation_accuracy": fit}
            if curves_every and eid % curves_every == 0:
                metrics["curve"] = [[s, round(fit * (1 - 0.6 * 0.5 ** (s / 300)), 4)] for s in range(200, 2001, 200)]
            evals.append((eid, key, f"s1:{infix}", json.dumps(tree_json.get("coef") and [tree_json["coef"]] or []),
                          "mnist", budget_json, 2000, "fixed:0", "ok", fit, json.dumps(metrics, sort_keys=True),
                          31.0, 28.5, 1.2, "GPU:0 (NVIDIA A100)", run_id, uid, ts))
            cands.append((uid, run_id, search_id, seq, json.dumps(tree_json), infix, "[]", f"s1:{infix}", key, gen,
                          phase, "cma" if phase == "cma" else rng.choice(("crossover", "mutation", "init")),
                          json.dumps([f"g{max(0, gen - 1)}-3"]), "evaluated", fit, "", eid, 1, ts, ts))
            done_keys.append((key, eid, fit, json.dumps(tree_json), infix))
            pending_job.append(uid)
            if len(pending_job) == 2:
                add_job(pending_job, "done")
                pending_job = []
            n_eval += 1
        seq += 1
    if pending_job:
        add_job(pending_job, "done")
    for i in range(held_jobs):  # jobs on hold now, carrying pending candidates
        uids = []
        for _ in range(2):
            tree_json, infix = _tree(rng, rng.choice(TEMPLATES), True)
            search_id = f"c0-{gen}-{seq}"
            uid = f"{run_id}/{search_id}"
            cands.append((uid, run_id, search_id, seq, json.dumps(tree_json), infix, "[]", f"s1:{infix}",
                          hashlib.sha256(f"p{seq}".encode()).hexdigest(), gen, "cma", "cma", "[]", "pending", None,
                          "", None, 0, ts, None))
            uids.append(uid)
            seq += 1
        add_job(uids, "held", "", HOLD if i else ("Job held by the owner (condor_hold)", 1, 0))
    con = sqlite3.connect(path)
    try:
        with con:
            con.execute("INSERT INTO runs (id, name, config_json, seed, task, backend, phase, generation, status, pid, "
                        "message, created_at, updated_at, started_at, finished_at, summary_json) "
                        "VALUES (?, ?, ?, ?, 'mnist', 'condor', ?, ?, ?, NULL, '', ?, ?, ?, ?, NULL)",
                        (run_id, name, json.dumps(config), seed, "cma", gen, "running" if running else "stopped",
                         t0, ts, t0, None))
            con.executemany("INSERT INTO evaluations (id, eval_key, canonical_key, coefficients_json, task, budget_json, "
                            "steps, seed_policy, status, fitness, metrics_json, wall_seconds, train_seconds, "
                            "eval_seconds, device, run_id, candidate_uid, created_at) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", evals)
            con.executemany("INSERT INTO candidates (uid, run_id, search_id, seq, tree_json, infix, coefficients_json, "
                            "canonical_key, eval_key, generation, phase, origin, parents_json, status, fitness, error, "
                            "evaluation_id, told, created_at, resolved_at) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", cands)
            con.executemany("INSERT INTO jobs (id, run_id, backend, backend_job_id, state, attempts, last_error, "
                            "hold_reason, work_dir, lease_deadline, hold_code, hold_subcode, host, evictions, releases, "
                            "bad_nodes_json, created_at, updated_at, submitted_at, started_at, finished_at) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", jobs)
            con.executemany("INSERT INTO job_candidates (job_id, candidate_uid) VALUES (?, ?)", job_cands)
    finally:
        con.close()
    return {"run_id": run_id, "evaluated": n_eval, "cached": n_cached, "failed": n_failed, "resolved": n_resolved,
            "pending": 2 * held_jobs, "jobs": len(jobs), "held": held_jobs, "candidates": len(cands)}
