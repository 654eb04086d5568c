"""orchestrator.experiments.figures: every figure written (PNG + CSV) from small synthetic results, skipped
cleanly without its data, and labelled so that a reader does not stumble.

`synthetic_results` and `make_search_db` are shared with tests/test_experiments_report.py."""

from __future__ import annotations

import csv
import json
import math
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.experiments import figures
from tests.orch_helpers import REPO

PNG = b"\x89PNG\r\n\x1a\n"
EDGES = [i / 20 for i in range(21)]


def synthetic_results(*, run_id: str = "ev1", task: str = "mnist", data_label: str | None = None,
                      losses: tuple[tuple[str, str], ...] = (("ce", "-(x * log(y))"), ("baikal", "log(y) - x / y"),
                                                            ("baikal_cma", "2.8 * log(y) - 0.9 * x / y")),
                      seeds: tuple[int, ...] = (0, 1, 2), fractions: tuple[float, ...] = (0.1, 0.5, 1.0),
                      steps: int = 1000, curve_every: int | None = 250, histograms: bool = True,
                      seed: int = 5) -> dict[str, Any]:
    """An evaluation run's results in the shape db.queries.evaluation_results returns: every loss better than
    the one before it by 0.002, a per-seed effect shared by all losses (so the repeats pair), curves that
    rise to the final accuracy, and ce's output probabilities more extreme than the others'."""
    rng = random.Random(seed)
    seed_effect = {s: rng.gauss(0, 0.002) for s in seeds}
    records = []
    for i, (label, _) in enumerate(losses):
        for f in fractions:
            for s in seeds:
                final = 0.98 - 0.05 * (1 - f) + 0.002 * i + seed_effect[s] + rng.gauss(0, 0.0005)
                curve = None
                if curve_every:
                    curve = [[t, final - (final - 0.1) * math.exp(-5 * t / steps)] for t in range(0, steps, curve_every)]
                    curve.append([steps, final])
                hist = None
                if histograms:
                    extreme = 0.45 if label == "ce" else 0.35
                    counts = [int(1000 * (extreme if b in (0, 19) else (1 - 2 * extreme) / 18)) for b in range(20)]
                    hist = {"edges": list(EDGES), "counts": counts}
                records.append({"loss": label, "seed": s, "fraction": f, "status": "ok", "test_accuracy": final,
                                "validation_accuracy": final, "test_curve": curve, "probability_histogram": hist,
                                "candidate_id": f"{run_id}/e{i}-f{fractions.index(f)}-s{s}"})
    records.append({"loss": losses[-1][0], "seed": 99, "fraction": fractions[-1], "status": "nonfinite",
                    "test_accuracy": None, "validation_accuracy": None, "test_curve": None,
                    "probability_histogram": None, "candidate_id": f"{run_id}/bad"})
    return {"run_id": run_id, "task": task, "steps": steps,
            "data_label": data_label or figures.data_label_for(task),
            "losses": [{"label": label, "infix": infix} for label, infix in losses], "seeds": list(seeds),
            "fractions": list(fractions), "records": records}


def make_search_db(path: Path, run_id: str = "srch", *, finished: bool = True):  # type: ignore[no-untyped-def]
    """A small search run written straight into a fresh database: 3 generations of 6 (trained, cache hits,
    elites, duplicates, invalid trees, a failure; generation 2 unfinished when `finished` is False) and 2
    CMA-ES iterations of 3.  Returns the open Database."""
    from db import models
    from db.session import open_db

    db = open_db(path, create=True)
    now = time.time()
    config = {"task": {"name": "mnist", "steps": 100}, "search": {"ga": {"population_size": 6, "generations": 3,
                                                                         "elites": 1},
                                                                  "cma": {"top_k": 1, "iterations": 2}}}
    plan = {  # generation -> (status, fitness, error) per member
        0: [("evaluated", 0.40, ""), ("evaluated", 0.55, ""), ("resolved", 0.0, "invalid"),
            ("evaluated", 0.10, ""), ("failed", 0.0, "worker crashed"), ("resolved", 0.0, "invalid")],
        1: [("resolved", 0.55, "elite"), ("evaluated", 0.60, ""), ("cached", 0.40, ""),
            ("resolved", 0.60, "duplicate of g1-1"), ("evaluated", 0.30, ""), ("resolved", 0.0, "invalid")],
        2: [("resolved", 0.60, "elite"), ("evaluated", 0.70, ""), ("evaluated", 0.65, ""),
            ("cached", 0.55, ""), ("evaluated", 0.20, ""), ("evaluated", 0.50, "")],
    }
    if not finished:
        plan[2][4:] = [("pending", None, ""), ("pending", None, "")]
    infixes = ["log(y) * x", "x * log(y) / 2", "square(y)", "x / y", "sqrt(x * y)", "x + 1"]
    rows = []
    seq = 0
    for g, members in plan.items():
        for i, (status, fit, err) in enumerate(members):
            rows.append(("discovery", g, f"g{g}-{i}", "init" if g == 0 else "crossover", status, fit, err,
                         f"{infixes[i]} + {g}", []))
    for it, fits in enumerate([[0.66, 0.72, 0.61], [0.74, 0.69, 0.70]]):
        for j, fit in enumerate(fits):
            rows.append(("cma", it, f"c0-{it}-{j}", "cma", "evaluated", fit, "",
                         f"{1.123456789 + j:.9f} * log(y) * x", ["g2-1"]))
    history = [{"generation": g, "best": max(f for _, f, _ in plan[g] if f is not None),
                "mean": statistics.fmean(f for _, f, _ in plan[g] if f is not None), "best_id": f"g{g}-1",
                "best_tree": infixes[1]} for g in plan if finished or g < 2]
    with db.session(write=True) as s:
        s.add(models.Run(id=run_id, name="synthetic", config_json=json.dumps(config), seed=1, task="mnist",
                         backend="local", phase="done" if finished else "discovery", generation=2,
                         status="finished" if finished else "running", message="", created_at=now - 600,
                         updated_at=now, started_at=now - 600, finished_at=now if finished else None,
                         summary_json=json.dumps({"history": history}) if finished else None))
        s.flush()
        for phase, g, sid, origin, status, fit, err, infix, parents in rows:
            s.add(models.Candidate(uid=f"{run_id}/{sid}", run_id=run_id, search_id=sid, seq=seq, tree_json="{}",
                                   infix=infix, coefficients_json="[]", canonical_key=infix, eval_key=f"k:{infix}",
                                   generation=g, phase=phase, origin=origin, parents_json=json.dumps(parents),
                                   status=status, fitness=fit, error=err, created_at=now, told=status != "pending",
                                   resolved_at=None if status == "pending" else now))
            seq += 1
        if not finished:
            s.add(models.SearchState(run_id=run_id, kind="search", version=1, seq=1, updated_at=now,
                                     state_json=json.dumps({"history": history})))
    return db


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def assert_png_with_csv(png: Path | None, name: str, out: Path) -> list[dict[str, str]]:
    assert png == out / f"{name}.png"
    assert png.read_bytes()[:8] == PNG and png.stat().st_size > 10_000
    return read_csv(out / f"{name}.csv")


@pytest.fixture
def texts(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Every text of every figure saved (titles, axis labels, tick labels, legends), by file name; and a check
    that every axes has both axis labels."""
    import matplotlib.text

    seen: dict[str, list[str]] = {}
    original = figures._save

    def save(fig: Any, out_dir: Path, name: str) -> Path:
        fig.canvas.draw()
        for ax in fig.axes:
            assert ax.get_xlabel() or ax.get_shared_x_axes().get_siblings(ax) != [ax], f"{name}: no x label"
            assert ax.get_ylabel(), f"{name}: no y label"
        seen[name] = [t.get_text() for t in fig.findobj(matplotlib.text.Text) if t.get_text()]
        return original(fig, out_dir, name)

    monkeypatch.setattr(figures, "_save", save)
    return seen


def test_fig3_curves(tmp_path: Path, texts: dict[str, list[str]]) -> None:
    res = synthetic_results()
    rows = assert_png_with_csv(figures.fig3_curves(res, tmp_path), "fig3_curves", tmp_path)
    assert {r["loss"] for r in rows} == {"ce", "baikal", "baikal_cma"}
    assert {r["fraction"] for r in rows} == {"1.0"}  # the largest fraction by default
    ce_end = [r for r in rows if r["loss"] == "ce" and r["step"] == "1000"][0]
    finals = [r["test_accuracy"] for r in res["records"] if r["loss"] == "ce" and r["fraction"] == 1.0]
    assert int(ce_end["n"]) == 3 and float(ce_end["mean"]) == pytest.approx(statistics.fmean(finals))
    assert float(ce_end["std"]) == pytest.approx(statistics.stdev(finals))
    joined = " ".join(texts["fig3_curves"])
    assert "Fig. 3" in joined and "MNIST" in joined and "ce (3 runs)" in joined and "training step" in joined
    half = figures.fig3_curves(res, tmp_path / "half", fraction=0.5)
    assert {r["fraction"] for r in read_csv(half.with_suffix(".csv"))} == {"0.5"}
    assert "50% of the training set" in " ".join(texts["fig3_curves"])


def test_fig4_fractions(tmp_path: Path, texts: dict[str, list[str]]) -> None:
    rows = assert_png_with_csv(figures.fig4_fractions(synthetic_results(), tmp_path), "fig4_fractions", tmp_path)
    assert [(r["loss"], r["fraction"]) for r in rows][:3] == [("ce", "0.1"), ("baikal", "0.1"), ("baikal_cma", "0.1")]
    assert len(rows) == 9 and all(r["n"] == "3" for r in rows)
    joined = texts["fig4_fractions"]
    assert {"10%", "50%", "100%"} <= set(joined) and any("Fig. 4" in t for t in joined)


def test_fig5_length_names_the_jpeg_data(tmp_path: Path, texts: dict[str, list[str]]) -> None:
    label = figures.data_label_for("cifar10", "/data/cifar10_jpeg.npz")
    assert "JPEG" in label and "CIFAR-10" in label and figures.data_label_for("cifar10") == "CIFAR-10"
    res = synthetic_results(task="cifar10", data_label=label, fractions=(1.0,), steps=20_000, curve_every=5000)
    rows = assert_png_with_csv(figures.fig5_length(res, tmp_path), "fig5_length", tmp_path)
    assert {r["series"] for r in rows} == {"ce", "baikal", "baikal - ce"}  # ce against the first other loss
    diff = [r for r in rows if r["series"] == "baikal - ce" and r["step"] == "20000"][0]
    assert float(diff["mean"]) == pytest.approx(0.002, abs=0.002)
    joined = " ".join(texts["fig5_length"])
    assert "JPEG re-encoding" in joined and "Fig. 5" in joined and "20k" in joined
    other = figures.fig5_length(res, tmp_path / "o", losses=["ce", "baikal_cma"], data_label="CIFAR-10 (mine)")
    assert {r["series"] for r in read_csv(other.with_suffix(".csv"))} == {"ce", "baikal_cma", "baikal_cma - ce"}
    assert "CIFAR-10 (mine)" in " ".join(texts["fig5_length"])


def test_fig7_histogram(tmp_path: Path, texts: dict[str, list[str]]) -> None:
    rows = assert_png_with_csv(figures.fig7_histogram(synthetic_results(), tmp_path), "fig7_histogram", tmp_path)
    assert {r["loss"] for r in rows} == {"ce", "baikal_cma"} and len(rows) == 40  # ce and the best other loss
    ce = [r for r in rows if r["loss"] == "ce"]
    assert int(ce[0]["count"]) == 3 * 450  # summed over the 3 repeats
    assert sum(float(r["share"]) for r in ce) == pytest.approx(1.0)
    assert float(ce[0]["bin_low"]) == 0.0 and float(ce[-1]["bin_high"]) == 1.0
    assert any("%" in t for t in texts["fig7_histogram"])  # shares read as percentages
    chosen = figures.fig7_histogram(synthetic_results(), tmp_path / "b", losses=("baikal_cma",))
    assert {r["loss"] for r in read_csv(chosen.with_suffix(".csv"))} == {"baikal_cma"}


def test_figures_skip_without_their_data(tmp_path: Path) -> None:
    bare = synthetic_results(fractions=(1.0,), curve_every=None, histograms=False)
    for fn in (figures.fig3_curves, figures.fig4_fractions, figures.fig5_length, figures.fig7_histogram):
        assert fn(bare, tmp_path) is None
    nothing_ok = synthetic_results()
    for r in nothing_ok["records"]:
        r["status"] = "failed"
    for fn in (figures.fig3_curves, figures.fig4_fractions, figures.fig5_length, figures.fig7_histogram):
        assert fn(nothing_ok, tmp_path) is None
    empty = {"run_id": "e", "task": "mnist", "steps": 10, "losses": [], "seeds": [], "fractions": [1.0],
             "records": []}
    for fn in (figures.fig3_curves, figures.fig4_fractions, figures.fig5_length, figures.fig7_histogram):
        assert fn(empty, tmp_path) is None
    assert list(tmp_path.iterdir()) == []


def test_search_progress(tmp_path: Path, texts: dict[str, list[str]]) -> None:
    db = make_search_db(tmp_path / "s.db")
    out = tmp_path / "out"
    paths = figures.search_progress(db, "srch", out)
    assert [p.name for p in paths] == ["search_fitness.png", "search_cma.png", "search_sources.png"]  # no steps stored
    for p in paths:
        assert p.read_bytes()[:8] == PNG and p.with_suffix(".csv").exists()
    fit = read_csv(out / "search_fitness.csv")
    assert [r["generation"] for r in fit] == ["0", "1", "2"]
    assert float(fit[0]["best"]) == 0.55 and float(fit[0]["median"]) == pytest.approx(
        statistics.median([0.40, 0.55, 0.0, 0.10, 0.0, 0.0]))
    assert float(fit[2]["best_so_far"]) == 0.70 and fit[2]["complete"] == "True"
    cma = read_csv(out / "search_cma.csv")
    assert [(r["iteration"], r["best"], r["best_so_far"]) for r in cma] == [("0", "0.72", "0.72"),
                                                                            ("1", "0.74", "0.74")]
    assert cma[0]["base"] == "g2-1" and float(cma[0]["base_fitness"]) == 0.70
    src = {(r["phase"], r["generation"]): r for r in read_csv(out / "search_sources.csv")}
    g1 = src[("discovery", "1")]
    assert (g1["trained"], g1["cache hit"], g1["elite"], g1["duplicate"], g1["invalid"]) == ("2", "1", "1", "1", "1")
    assert src[("discovery", "0")]["failed"] == "1" and src[("cma", "1")]["trained"] == "3"
    assert "search srch, MNIST" in " ".join(texts["search_sources"])
    db.dispose()


def test_search_progress_of_a_running_search(tmp_path: Path) -> None:
    db = make_search_db(tmp_path / "r.db", "live", finished=False)
    paths = figures.search_progress(db, "live", tmp_path)
    fit = read_csv(tmp_path / "search_fitness.csv")
    assert [r["complete"] for r in fit] == ["True", "True", "False"] and fit[2]["n"] == "4"  # 2 still pending
    assert len(paths) == 3
    src = read_csv(tmp_path / "search_sources.csv")
    assert src[2]["pending"] == "2"
    db.dispose()


def test_search_progress_without_candidates(tmp_path: Path) -> None:
    from db import models

    db = make_search_db(tmp_path / "e.db")
    with db.session(write=True) as s:
        s.query(models.Candidate).delete()
    assert figures.search_progress(db, "srch", tmp_path / "out") == []
    assert not (tmp_path / "out").exists()
    db.dispose()


def test_importing_the_cli_loads_neither_matplotlib_nor_scipy() -> None:
    code = ("import sys, orchestrator.cli, orchestrator.cli.report, orchestrator.experiments.report; "
            "bad = [m for m in ('matplotlib', 'scipy') if m in sys.modules]; assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr


def test_budget_curve_counts_every_training_and_keeps_the_best_at_the_top_rung(tmp_path: Path) -> None:
    def cand(sid: str, status: str, fitness: float, steps: int | None, t: float) -> dict:
        return {"search_id": sid, "generation": 0, "phase": "discovery", "origin": "init", "status": status,
                "fitness": fitness, "error": "", "parents": [], "steps": steps, "resolved_at": t}

    data = {"run": {"id": "r", "task": "mnist"}, "history": [], "candidates": [
        cand("g0-0", "evaluated", 0.80, 200, 1.0),  # a fast short-budget loss: not at the top rung
        cand("g0-1", "evaluated", 0.60, 200, 2.0),
        cand("g0-2", "cached", 0.60, 200, 2.5),  # a cache hit costs nothing
        cand("g0-0-r1", "evaluated", 0.10, 1000, 3.0),  # collapses at 1,000 steps
        cand("g0-1-r1", "evaluated", 0.95, 1000, 4.0),
        cand("g0-3", "resolved", 0.0, None, 0.5)]}
    rows = figures.budget_curve(data)
    assert [(r["steps_spent"], r["best_at_top_rung"]) for r in rows] == [(200, None), (400, None), (1400, 0.10),
                                                                        (2400, 0.95)]
    path = figures._search_budget(data, tmp_path, "search r")
    assert path is not None and path.read_bytes()[:8] == PNG
