"""`make bench-gpu` (bench/gpu.sh runs it): what GLO's worker does with one GPU, within a time budget.

* `evaluations`: for K = 1, 4, 16, 32, 64, one real worker job (`python -m worker`, a process of its own:
  start, TensorFlow and CUDA start-up, data, model build, tracing, 2,000 steps of batch 100, validation
  accuracy on 5,000 images) holding K candidates trained as one fused model (`fuse = K`).
  Evaluations per GPU-hour = K x 3600 / the job's wall time; `steady` leaves the job's fixed cost out
  (train + eval time only, what a job of many groups approaches).
* `variants`: at one K, the same job with XLA (GLO_XLA=1), mixed precision (GLO_PRECISION=mixed_bfloat16,
  mixed_float16) and both, each compared per candidate with the float32 job: equal within the fused
  trainer's tolerance (|fitness difference| <= 0.005, the same status and non-finite step) or not.
* `loss_cost`: tree-built ce and baikal against Keras' cross-entropy per step (tests/bench/bench_worker.py)
  on this device.

Every job is skipped (and said so) when what is measured so far says it would not end within the budget
(GLO_BENCH_GPU_BUDGET_S, default 450 s, so that the whole command stays inside 8 minutes).

Knobs: GLO_BENCH_GPU_KS (default "1,4,16,32,64"), GLO_BENCH_GPU_STEPS (default 2000),
GLO_BENCH_GPU_VALIDATION (default 5000), GLO_BENCH_GPU_VARIANT_K (default 16), GLO_BENCH_GPU_BUDGET_S,
GLO_DATA_DIR (where mnist.npz is: bench/gpu.sh points it at .bench-gpu/data).  On a machine without
MNIST (tests, a CPU try-out), GLO_BENCH_GPU_SYNTHETIC=1 writes an MNIST-shaped file.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOLERANCE = 0.005  # worker/fused.py: |fitness fused - fitness alone|


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def candidate_trees(k: int) -> list[dict]:
    """K distinct losses: the paper's three, then valid random trees of the GA's initial population (seeded)."""
    from orchestrator.search import GAConfig
    from orchestrator.search.operators import Primitives, random_tree
    from worker.lossexpr import named_loss

    trees = [named_loss(n) for n in ("ce", "baikal", "baikal_cma")]
    seen = {json.dumps(t.to_json(), sort_keys=True) for t in trees}
    cfg = GAConfig()
    prims, rng = Primitives(cfg.weights()), random.Random(2024)
    while len(trees) < k:
        t = random_tree(rng, prims, cfg.init_max_depth)
        text = json.dumps(t.to_json(), sort_keys=True)
        if t.is_valid() and text not in seen:
            seen.add(text)
            trees.append(t)
    return [{"id": f"c{i:02d}", "tree": t.to_json()} for i, t in enumerate(trees[:k])]


def job(k: int, steps: int, validation: int, tmp: Path, label: str, env_extra: dict[str, str]) -> dict:
    """One worker process training K candidates fused; its wall time and results."""
    spec = {"glo_worker_spec": 1, "task": "mnist", "steps": steps, "batch_size": 100, "learning_rate": 0.01,
            "seed": 0, "validation_size": validation, "class_reduction": "sum", "fuse": k,
            "candidates": candidate_trees(k)}
    d = tmp / f"{label}-k{k}"
    d.mkdir(parents=True)
    (d / "spec.json").write_text(json.dumps(spec))
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               GLO_DATA_DOWNLOAD="0", **env_extra)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "worker", "spec.json", "--out", "result.json", "-q"], cwd=d,
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        return {"k": k, "label": label, "error": f"exit {done.returncode}: {done.stderr.strip()[-800:]}",
                "wall_seconds": round(wall, 1)}
    results = json.loads((d / "result.json").read_text())["results"]
    first = results[0]
    train = sum(r["train_seconds"] for r in results)
    evals = sum(r["eval_seconds"] for r in results)
    ok = [r for r in results if r["status"] == "ok"]
    return {"k": k, "label": label, "device": first["device"], "steps": steps, "wall_seconds": round(wall, 2),
            "train_seconds": round(train, 2), "eval_seconds": round(evals, 2),
            "first_step_seconds": round(first["extra"].get("first_step_seconds", 0.0), 2),
            "evaluations_per_gpu_hour": round(k * 3600 / wall, 1),
            "evaluations_per_gpu_hour_steady": round(k * 3600 / max(train + evals, 1e-9), 1),
            "candidate_steps_per_second": first["extra"].get("steps_per_second"),
            "ok": len(ok), "nonfinite": sum(r["status"] == "nonfinite" for r in results),
            "fused_results": sum(bool(r["extra"].get("fused")) for r in results),
            "compute_dtype": first["extra"].get("compute_dtype", "float32"),
            "fallback": next((r["extra"]["fused_fallback"] for r in results if "fused_fallback" in r["extra"]), None),
            "mean_fitness_ok": round(sum(r["fitness"] for r in ok) / len(ok), 4) if ok else None,
            "results": {r["candidate_id"]: [r["status"], r["fitness"], r["nonfinite_step"]] for r in results}}


def compare(base: dict, other: dict) -> dict:
    """Per candidate: the same status and non-finite step, fitness within TOLERANCE."""
    if "error" in base or "error" in other:
        return {"equal_within_tolerance": None}
    diffs, same = [], True
    for cid, (status, fit, bad) in base["results"].items():
        o_status, o_fit, o_bad = other["results"][cid]
        same &= o_status == status and o_bad == bad
        diffs.append(abs(o_fit - fit))
    worst = max(diffs) if diffs else 0.0
    return {"equal_within_tolerance": bool(same and worst <= TOLERANCE), "max_fitness_difference": round(worst, 4),
            "same_statuses": bool(same)}


def _synthetic_mnist(tmp: Path) -> str:
    import numpy as np

    rng = np.random.default_rng(0)

    def make(n):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(y):
            x[i, 2 * c:2 * c + 6, 4:24] = 250
        return x, y

    (xtr, ytr), (xte, yte) = make(6000), make(1000)
    np.savez(tmp / "mnist.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    return str(tmp)


def run(budget_s: float | None = None) -> dict:
    t_start = time.perf_counter()
    budget = budget_s if budget_s is not None else float(os.environ.get("GLO_BENCH_GPU_BUDGET_S", 450))
    ks = [int(k) for k in os.environ.get("GLO_BENCH_GPU_KS", "1,4,16,32,64").split(",") if k.strip()]
    steps = _env_int("GLO_BENCH_GPU_STEPS", 2000)
    validation = _env_int("GLO_BENCH_GPU_VALIDATION", 5000)
    out: dict = {"steps": steps, "validation_size": validation, "budget_seconds": budget, "goal_evaluations_per_gpu_hour": 3000,
                 "evaluations": [], "variants": [], "skipped": []}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if os.environ.get("GLO_BENCH_GPU_SYNTHETIC") == "1":
            os.environ["GLO_DATA_DIR"] = _synthetic_mnist(tmp)
            out["data"] = "synthetic (GLO_BENCH_GPU_SYNTHETIC=1)"
        else:
            out["data"] = os.environ.get("GLO_DATA_DIR", "(the worker's search)")

        def left() -> float:
            return budget - (time.perf_counter() - t_start)

        def predict(k: int) -> float:
            """A job's expected wall from the last one measured: fixed cost + work growing with K."""
            if not out["evaluations"]:
                return 0.0
            last = out["evaluations"][-1]
            if "error" in last:
                return 0.0
            fixed = last["wall_seconds"] - last["train_seconds"] - last["eval_seconds"]
            return fixed + (last["train_seconds"] + last["eval_seconds"]) * k / last["k"]

        for k in ks:
            guess = predict(k)
            if guess > left():
                out["skipped"].append(f"K={k}: about {guess:.0f} s expected, {left():.0f} s left")
                continue
            r = job(k, steps, validation, tmp, "fp32", {})
            out["evaluations"].append(r)
            print(f"bench-gpu: K={k}: {r.get('evaluations_per_gpu_hour', r.get('error'))} evaluations/GPU-hour "
                  f"({r['wall_seconds']} s)", file=sys.stderr, flush=True)
        good = [r for r in out["evaluations"] if "error" not in r]
        if good:
            best = max(good, key=lambda r: r["evaluations_per_gpu_hour"])
            out["best"] = {"k": best["k"], "evaluations_per_gpu_hour": best["evaluations_per_gpu_hour"],
                           "device": best["device"]}
        vk = _env_int("GLO_BENCH_GPU_VARIANT_K", 16)
        base = next((r for r in good if r["k"] == vk), good[-1] if good else None)
        if base is not None:
            variants = (("xla", {"GLO_XLA": "1"}), ("mixed_bfloat16", {"GLO_PRECISION": "mixed_bfloat16"}),
                        ("mixed_float16", {"GLO_PRECISION": "mixed_float16"}),
                        ("xla+mixed_bfloat16", {"GLO_XLA": "1", "GLO_PRECISION": "mixed_bfloat16"}))
            for label, env in variants:
                if base["wall_seconds"] > left():
                    out["skipped"].append(f"{label} at K={base['k']}: about {base['wall_seconds']:.0f} s, {left():.0f} s left")
                    continue
                r = job(base["k"], steps, validation, tmp, label.replace("+", "-"), env)
                r.update(compare(base, r))
                if "evaluations_per_gpu_hour" in r:
                    r["speedup_vs_fp32"] = round(r["evaluations_per_gpu_hour"] / base["evaluations_per_gpu_hour"], 3)
                out["variants"].append(r)
                print(f"bench-gpu: {label} K={base['k']}: {r.get('evaluations_per_gpu_hour', r.get('error'))} "
                      f"evaluations/GPU-hour, equal to fp32: {r.get('equal_within_tolerance')}", file=sys.stderr, flush=True)
        if left() > 30:
            from tests.bench.bench_worker import step_times

            out["loss_cost"] = step_times(_env_int("GLO_BENCH_GPU_ROUNDS", 6), _env_int("GLO_BENCH_GPU_BLOCK", 20),
                                          xla=os.environ.get("GLO_BENCH_XLA", "1") == "1")
        else:
            out["skipped"].append("loss_cost: no time left")
    for r in out["evaluations"] + out["variants"]:
        r.pop("results", None)
    out["bench_seconds"] = round(time.perf_counter() - t_start, 1)
    return out


def markdown(res: dict) -> str:
    device = res.get("best", {}).get("device") or next((r.get("device") for r in res["evaluations"] if r.get("device")), "?")
    lines = [f"### `make bench-gpu` on {device}", "",
             f"{res['steps']}-step MNIST evaluations (batch 100, validation {res['validation_size']}), one worker job "
             f"of K fused candidates each; goal >= {res['goal_evaluations_per_gpu_hour']} per GPU-hour.", "",
             "| K | job wall (s) | evaluations / GPU-hour | steady (no job start) | candidate-steps/s |",
             "|---|---|---|---|---|"]
    for r in res["evaluations"]:
        if "error" in r:
            lines.append(f"| {r['k']} | {r['wall_seconds']} | error: {r['error'][:80]} | | |")
        else:
            lines.append(f"| {r['k']} | {r['wall_seconds']} | {r['evaluations_per_gpu_hour']:.0f} | "
                         f"{r['evaluations_per_gpu_hour_steady']:.0f} | {r['candidate_steps_per_second'] or 0:.0f} |")
    if res["variants"]:
        lines += ["", "| variant | K | evaluations / GPU-hour | vs fp32 | equal to fp32 within 0.005 |", "|---|---|---|---|---|"]
        for r in res["variants"]:
            note = f" -- not fused: {r['fallback'][:70]}" if r.get("fallback") else ""
            lines.append(f"| {r['label']} | {r['k']} | {r.get('evaluations_per_gpu_hour', r.get('error', '')[:60])} | "
                         f"{r.get('speedup_vs_fp32', '-')} | {r.get('equal_within_tolerance')} "
                         f"(max diff {r.get('max_fitness_difference', '-')}){note} |")
    lc = res.get("loss_cost")
    if lc:
        lines += ["", f"Loss cost per step on this device: tree ce / Keras CE = {lc['ratio_tree_ce_vs_keras_ce']:.3f}, "
                      f"tree baikal / Keras CE = {lc['ratio_tree_baikal_vs_keras_ce']:.3f}"
                      + (f"; XLA / plain (tree ce) = {lc['ratio_xla_vs_plain_tree_ce']:.3f}" if "ratio_xla_vs_plain_tree_ce" in lc
                         else "") + "."]
    for s in res["skipped"]:
        lines.append(f"- skipped: {s}")
    lines.append(f"\n(bench took {res['bench_seconds']} s)")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.gpu")
    p.add_argument("--out", required=True)
    p.add_argument("--markdown")
    args = p.parse_args(argv)
    res = run()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    text = markdown(res)
    if args.markdown:
        Path(args.markdown).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
