"""The paper's figures from stored results: PNG (matplotlib, Agg) with the plotted numbers as CSV beside it.

Each function writes NAME.png and NAME.csv into `out_dir` and returns the PNG's path, or None (writing
nothing) when the data it needs is absent — no curves recorded, a single training-set fraction, no
histograms, no CMA-ES phase yet.  matplotlib is imported inside the functions only, so that importing
this module (and `glo status`) never pays for it.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from db.fastread import quantile
from orchestrator.experiments.stats import counted, fmt_fraction, fraction_key, fractions, loss_labels, summarize

#: Colour of the baseline (ce) in every figure; the other losses take matplotlib's tab10 in run order.
BASELINE_COLOR = "black"
DPI = 120


def data_label_for(task: str, data_path: str | None = None) -> str:
    """What to call the data in titles (worker.data.data_label: the JPEG re-encoding is named as such)."""
    from worker.data import data_label

    return data_label(task, data_path)


def data_label_of(results: dict[str, Any], data_label: str | None = None) -> str:
    """What to call the data of an evaluation: `data_label`, else the results' own, else the task's name."""
    return data_label or results.get("data_label") or data_label_for(results.get("task", ""))


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(labels: Sequence[str], baseline: str = "ce") -> dict[str, Any]:
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
               "tab:olive", "tab:cyan", "tab:gray"]
    out: dict[str, Any] = {}
    i = 0
    for label in labels:
        if label == baseline:
            out[label] = BASELINE_COLOR
        else:
            out[label] = palette[i % len(palette)]
            i += 1
    return out


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A CSV with a header; None as an empty cell, floats at full precision."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for row in rows:
            w.writerow(["" if v is None else (repr(v) if isinstance(v, float) else v) for v in row])


def _save(fig: Any, out_dir: Path, name: str) -> Path:
    plt = _pyplot()
    path = out_dir / f"{name}.png"
    try:
        fig.savefig(path, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return path


def _steps_formatter(max_step: float) -> Any:
    """Step ticks: "2,500" on a short axis, "25k" where the training runs to 10,000 steps or more."""
    from matplotlib.ticker import FuncFormatter

    def fmt(x: float, _pos: Any) -> str:
        if max_step >= 10_000 and x != 0:
            return f"{x / 1000:,.4g}k"
        return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.4g}"

    return FuncFormatter(fmt)


def _legend_below(fig: Any, ax: Any) -> None:
    """The loss legend of `ax` centred below the plot (never over the data), then the layout around it."""
    handles, labels = ax.get_legend_handles_labels()
    if not labels:
        fig.tight_layout()
        return
    ncol = 1 if max(len(x) for x in labels) > 40 else min(len(labels), 3)
    rows = math.ceil(len(labels) / ncol)
    bottom = (0.15 + 0.24 * rows) / fig.get_figheight()
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=9, frameon=False)


def _percent_log_axis(axis: Any) -> None:
    """A log axis of shares labelled in percent at 1, 2, 5 x 10^k ("0.1%", "2%", "50%")."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda y, _pos: f"{y * 100:.3g}%"))
    axis.set_minor_formatter(NullFormatter())


def _mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


def _records(results: dict[str, Any], loss: str, fraction: float) -> list[dict[str, Any]]:
    return [r for r in results.get("records") or []
            if r.get("loss") == loss and fraction_key(r.get("fraction", 1.0)) == fraction and counted(r)]


def _curves_by_seed(results: dict[str, Any], loss: str, fraction: float) -> dict[Any, dict[float, float]]:
    """seed -> {step: test accuracy} from the counted records' test curves (finite points only)."""
    out: dict[Any, dict[float, float]] = {}
    for r in _records(results, loss, fraction):
        curve = r.get("test_curve") or []
        points = {float(s): float(a) for s, a in curve if a is not None and math.isfinite(float(a))}
        if points:
            out[r.get("seed")] = points
    return out


def _curve_stats(by_seed: dict[Any, dict[float, float]]) -> list[dict[str, Any]]:
    """Per step (union over seeds): n, mean, sample sd, min, max of the seeds that recorded it."""
    steps = sorted({s for points in by_seed.values() for s in points})
    out = []
    for step in steps:
        vals = [points[step] for points in by_seed.values() if step in points]
        mean, sd = _mean_sd(vals)
        out.append({"step": step, "n": len(vals), "mean": mean, "std": sd, "min": min(vals), "max": max(vals)})
    return out


def _curve_fraction(results: dict[str, Any], fraction: float | None) -> float | None:
    """The fraction whose curves to draw: the one asked for, else the largest that has any curve."""
    if fraction is not None:
        return fraction_key(fraction)
    for f in reversed(fractions(results)):
        if any(_curves_by_seed(results, loss, f) for loss in loss_labels(results)):
            return f
    return None


def _int_step(step: float) -> Any:
    return int(step) if float(step).is_integer() else step


def _subtitle(results: dict[str, Any], data_label: str | None, fraction: float | None = None) -> str:
    parts = [data_label_of(results, data_label)]
    if fraction is not None and (fraction != 1.0 or len(fractions(results)) > 1):
        parts.append("the whole training set" if fraction == 1.0 else f"{fmt_fraction(fraction)} of the training set")
    if results.get("run_id"):
        parts.append(f"evaluation {results['run_id']}")
    return ", ".join(parts)


def _runs(loss: str, n: int) -> str:
    return f"{loss} ({n} run{'s' * (n != 1)})"


def _band(ax: Any, stats: list[dict[str, Any]], color: Any, label: str) -> None:
    import numpy as np

    xs = np.array([p["step"] for p in stats])
    mean = np.array([p["mean"] for p in stats])
    sd = np.array([p["std"] if p["std"] is not None else 0.0 for p in stats])
    ax.plot(xs, mean, color=color, label=label, linewidth=1.6, marker="o" if len(xs) <= 12 else None,
            markersize=3)
    if any(p["std"] is not None for p in stats):
        # an accuracy lies in [0, 1]: a band past it (a loss whose repeats diverge) would read as impossible
        ax.fill_between(xs, np.clip(mean - sd, 0.0, 1.0), np.clip(mean + sd, 0.0, 1.0), color=color, alpha=0.18,
                        linewidth=0)


# -- Fig. 3 ------------------------------------------------------------------------------------------------

def fig3_curves(results: dict[str, Any], out_dir: str | Path, *, fraction: float | None = None,
                baseline: str = "ce", data_label: str | None = None, name: str = "fig3_curves") -> Path | None:
    """Fig. 3: test accuracy during training, one line per loss (mean over repeats, band ± 1 sd).

    Left the whole training, right a zoom on its second half where the losses separate.  None when no
    record has a test curve."""
    frac = _curve_fraction(results, fraction)
    if frac is None:
        return None
    series = [(loss, _curves_by_seed(results, loss, frac)) for loss in loss_labels(results)]
    series = [(loss, by_seed, _curve_stats(by_seed)) for loss, by_seed in series if by_seed]
    if not series:
        return None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / f"{name}.csv", ["loss", "fraction", "step", "n", "mean", "std", "min", "max"],
              ([loss, frac, _int_step(p["step"]), p["n"], p["mean"], p["std"], p["min"], p["max"]]
               for loss, _, st in series for p in st))
    plt = _pyplot()
    colors = _colors(loss_labels(results), baseline)
    all_steps = sorted({p["step"] for _, _, st in series for p in st})
    zoom = len(all_steps) >= 4
    fig, axes = plt.subplots(1, 2 if zoom else 1, figsize=(12 if zoom else 7, 4.8), squeeze=False)
    axes = axes[0]
    for loss, by_seed, st in series:
        for ax in axes:
            _band(ax, st, colors[loss], _runs(loss, len(by_seed)))
    full = axes[0]
    full.set_title("whole training")
    if zoom:
        half = all_steps[-1] / 2.0
        ax = axes[1]
        ax.set_xlim(half, all_steps[-1] + 0.02 * all_steps[-1])
        # The zoom is for telling the good losses apart: a loss far below the best (one that collapsed) would
        # stretch it back to the whole range, so it is left out of the limits (and said so in the title).
        finals = {loss: st[-1]["mean"] for loss, _, st in series if st}
        top = max(finals.values())
        close = {loss for loss, final in finals.items() if final >= top - 0.1}
        inside = [(max(0.0, p["mean"] - (p["std"] or 0.0)), min(1.0, p["mean"] + (p["std"] or 0.0)))
                  for loss, _, st in series if loss in close for p in st if p["step"] >= half]
        lo, hi = min(v[0] for v in inside), max(v[1] for v in inside)
        span = max(hi - lo, 1e-3)
        ax.set_ylim(lo - 0.1 * span, min(1.0, hi + 0.1 * span) if hi < 1.0 else hi + 0.1 * span)
        far = sorted(set(finals) - close)
        ax.set_title("second half of training (zoom)" + (f"\nbelow the range: {', '.join(far)}" if far else ""),
                     fontsize=10 if far else None)
    for ax in axes:
        ax.set_xlabel("training step")
        ax.set_ylabel("test accuracy")
        ax.xaxis.set_major_formatter(_steps_formatter(all_steps[-1]))
        ax.grid(alpha=0.3)
    fig.suptitle("Test accuracy during training (GLO Fig. 3): mean over repeats, band ± 1 sd\n"
                 + _subtitle(results, data_label, frac), fontsize=11)
    _legend_below(fig, full)
    return _save(fig, out, name)


# -- Fig. 4 ------------------------------------------------------------------------------------------------

def fig4_fractions(results: dict[str, Any], out_dir: str | Path, *, baseline: str = "ce",
                   data_label: str | None = None, name: str = "fig4_fractions") -> Path | None:
    """Fig. 4: final test accuracy against the training-set fraction (mean ± 1 sd over repeats, log x).

    None unless some loss has results at two or more fractions."""
    rows = [r for r in summarize(results, baseline) if r["n"] > 0]
    by_loss: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_loss.setdefault(r["loss"], []).append(r)
    if not any(len(v) >= 2 for v in by_loss.values()):
        return None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / f"{name}.csv", ["loss", "fraction", "n", "mean", "std"],
              ([r["loss"], r["fraction"], r["n"], r["mean"], r["std"]] for r in rows))
    plt = _pyplot()
    colors = _colors(loss_labels(results), baseline)
    fig, ax = plt.subplots(figsize=(7, 4.8))
    k = len(by_loss)
    for i, (loss, rs) in enumerate(by_loss.items()):
        shift = 1.0 + 0.025 * (i - (k - 1) / 2)  # side by side, so that error bars do not hide each other
        xs = [r["fraction"] * shift for r in rs]
        ns = sorted({r["n"] for r in rs})
        n_txt = f"{ns[0]} run{'s' * (ns[0] != 1)}" if len(ns) == 1 else f"{ns[0]}–{ns[-1]} runs"
        ax.errorbar(xs, [r["mean"] for r in rs], yerr=[r["std"] or 0.0 for r in rs], color=colors[loss],
                    marker="o", markersize=4, capsize=3, linewidth=1.4, label=f"{loss} ({n_txt} per point)")
    fracs = sorted({r["fraction"] for r in rows})
    ax.set_xscale("log")
    ax.set_xticks(fracs)
    ax.set_xticklabels([fmt_fraction(f) for f in fracs])
    ax.minorticks_off()
    ax.set_xlim(fracs[0] / 1.4, fracs[-1] * 1.4)
    ax.set_xlabel("share of the training set used (log scale)")
    ax.set_ylabel("test accuracy (mean ± 1 sd)")
    ax.grid(alpha=0.3)
    steps = results.get("steps")
    ax.set_title("Test accuracy against training-set size (GLO Fig. 4)\n" + _subtitle(results, data_label)
                 + (f", {steps:,} steps each" if steps else ""), fontsize=11)
    _legend_below(fig, ax)
    return _save(fig, out, name)


# -- accuracy against the learning rate ----------------------------------------------------------------------

def learning_rate_sweep(results: dict[str, Any], out_dir: str | Path, *, baseline: str = "ce",
                        data_label: str | None = None, name: str = "learning_rates") -> Path | None:
    """Validation accuracy of each loss against the learning rate (the selection trainings: mean ± 1 sd over
    the selection seeds, log x), each loss's chosen rate ringed.  A training that did not finish counts 0, as
    in the choice.  None without a rate grid or before any selection training finished."""
    from orchestrator.experiments.stats import rate_choices

    grid = results.get("learning_rates") or []
    recs = [r for r in results.get("selection_records") or [] if r.get("status") != "pending"]
    if not grid or not recs:
        return None
    frac = max(fractions(results))  # the whole training set where the run has it
    by: dict[str, dict[float, list[float]]] = {}
    for r in recs:
        if fraction_key(r.get("fraction", 1.0)) != frac:
            continue
        acc = r.get("validation_accuracy") if r.get("status") == "ok" else 0.0
        by.setdefault(r["loss"], {}).setdefault(float(r["learning_rate"]), []).append(float(acc or 0.0))
    if not by:
        return None
    choices = rate_choices(results)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for loss, per_rate in by.items():
        for rate in sorted(per_rate):
            mean, sd = _mean_sd(per_rate[rate])
            choice = choices.get((loss, frac))
            rows.append([loss, rate, len(per_rate[rate]), mean, sd, bool(choice and choice.rate == rate)])
    write_csv(out / f"{name}.csv", ["loss", "learning_rate", "n", "validation_mean", "validation_std", "chosen"], rows)
    plt = _pyplot()
    colors = _colors(loss_labels(results), baseline)
    fig, ax = plt.subplots(figsize=(7, 4.8))
    for loss in loss_labels(results):
        mine = [r for r in rows if r[0] == loss]
        if not mine:
            continue
        n = sorted({r[2] for r in mine})
        ax.errorbar([r[1] for r in mine], [r[3] for r in mine], yerr=[r[4] or 0.0 for r in mine], color=colors[loss],
                    marker="o", markersize=4, capsize=3, linewidth=1.4,
                    label=f"{loss} ({n[-1]} selection run{'s' * (n[-1] != 1)} per rate)")
        for r in mine:
            if r[5]:
                ax.plot([r[1]], [r[3]], marker="o", markersize=12, markerfacecolor="none", color=colors[loss])
    ax.set_xscale("log")
    ax.set_xticks(grid)
    ax.set_xticklabels([f"{g:g}" for g in grid])
    ax.minorticks_off()
    ax.set_xlabel("learning rate (log scale); ringed: the rate each loss is tested at")
    ax.set_ylabel("validation accuracy (mean ± 1 sd)")
    ax.grid(alpha=0.3)
    steps = results.get("steps")
    ax.set_title("Validation accuracy against the learning rate\n" + _subtitle(results, data_label, frac)
                 + (f", {steps:,} steps each" if steps else ""), fontsize=11)
    _legend_below(fig, ax)
    return _save(fig, out, name)


# -- Fig. 5 ------------------------------------------------------------------------------------------------

def _default_pair(results: dict[str, Any], baseline: str) -> list[str]:
    labels = loss_labels(results)
    others = [x for x in labels if x != baseline]
    if baseline in labels:
        return [baseline] + others[:1]
    return others[:2]


def _best_pair(results: dict[str, Any], baseline: str) -> list[str]:
    """The baseline and the other loss with the highest mean test accuracy: Fig. 7 shows how a loss that
    trains well shapes the outputs (a loss that collapsed would only show a collapse)."""
    import statistics

    from orchestrator.experiments.stats import accuracies

    means: dict[str, float] = {}
    for (loss, _fraction), by_seed in accuracies(results).items():
        if loss != baseline and by_seed:
            means[loss] = max(means.get(loss, 0.0), statistics.fmean(by_seed.values()))
    if not means:
        return _default_pair(results, baseline)
    best = max(means, key=lambda x: means[x])
    return ([baseline] if baseline in loss_labels(results) else []) + [best]


def fig5_length(results: dict[str, Any], out_dir: str | Path, *, losses: Sequence[str] | None = None,
                fraction: float | None = None, baseline: str = "ce", data_label: str | None = None,
                name: str = "fig5_length") -> Path | None:
    """Fig. 5: test accuracy against training length, `ce` against a found loss (default: the baseline and
    the first other loss), mean ± 1 sd over repeats at every step the test curves recorded; below, the
    seed-by-seed difference to the baseline.  Meant for CIFAR-10, works for any task.  None without curves."""
    frac = _curve_fraction(results, fraction)
    if frac is None:
        return None
    chosen = list(losses) if losses else _default_pair(results, baseline)
    curves = {loss: _curves_by_seed(results, loss, frac) for loss in chosen}
    curves = {loss: c for loss, c in curves.items() if c}
    if not curves:
        return None
    stats = {loss: _curve_stats(c) for loss, c in curves.items()}
    diffs: dict[str, list[dict[str, Any]]] = {}
    if baseline in curves:
        base = curves[baseline]
        for loss, c in curves.items():
            if loss == baseline:
                continue
            paired = {seed: {s: pts[s] - base[seed][s] for s in pts if s in base[seed]}
                      for seed, pts in c.items() if seed in base}
            paired = {seed: pts for seed, pts in paired.items() if pts}
            if paired:
                diffs[loss] = _curve_stats(paired)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [[loss, _int_step(p["step"]), p["n"], p["mean"], p["std"]] for loss, st in stats.items() for p in st]
    rows += [[f"{loss} - {baseline}", _int_step(p["step"]), p["n"], p["mean"], p["std"]]
             for loss, st in diffs.items() for p in st]
    write_csv(out / f"{name}.csv", ["series", "step", "n", "mean", "std"], rows)
    plt = _pyplot()
    colors = _colors(loss_labels(results), baseline)
    if diffs:
        fig, (ax, dax) = plt.subplots(2, 1, figsize=(7.5, 6.6), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    else:
        fig, ax = plt.subplots(figsize=(7.5, 4.8))
        dax = None
    for loss, st in stats.items():
        ax.errorbar([p["step"] for p in st], [p["mean"] for p in st], yerr=[p["std"] or 0.0 for p in st],
                    color=colors.get(loss), marker="o", markersize=4, capsize=3, linewidth=1.4,
                    label=_runs(loss, len(curves[loss])))
    ax.set_ylabel("test accuracy (mean ± 1 sd)")
    ax.grid(alpha=0.3)
    ax.set_title("Test accuracy against training length (GLO Fig. 5)\n" + _subtitle(results, data_label, frac),
                 fontsize=11)
    last = dax if dax is not None else ax
    if dax is not None:
        for loss, st in diffs.items():
            dax.errorbar([p["step"] for p in st], [p["mean"] for p in st], yerr=[p["std"] or 0.0 for p in st],
                         color=colors.get(loss), marker="o", markersize=4, capsize=3, linewidth=1.4,
                         label=f"{loss} − {baseline} ({max(p['n'] for p in st)} seeds)")
        dax.axhline(0.0, color=BASELINE_COLOR, linewidth=0.8, linestyle="--")
        dax.set_ylabel(f"difference to {baseline}\n(same seed, mean ± 1 sd)")
        dax.grid(alpha=0.3)
        dax.legend(loc="best", fontsize=9)
    last.set_xlabel("training length (steps)")
    last.xaxis.set_major_formatter(_steps_formatter(max(p["step"] for st in stats.values() for p in st)))
    _legend_below(fig, ax)
    return _save(fig, out, name)


# -- Fig. 7 ------------------------------------------------------------------------------------------------

def _histogram(results: dict[str, Any], loss: str, fraction: float) -> tuple[list[float], list[int], int] | None:
    """The loss's probability histograms summed over its counted records (edges must agree; others are
    skipped): (edges, counts, records summed)."""
    edges: list[float] | None = None
    total: list[int] = []
    used = 0
    for r in _records(results, loss, fraction):
        h = r.get("probability_histogram")
        if not h or not h.get("edges") or not h.get("counts"):
            continue
        e, c = [float(x) for x in h["edges"]], [int(x) for x in h["counts"]]
        if len(e) != len(c) + 1:
            continue
        if edges is None:
            edges, total = e, c
        elif len(e) == len(edges) and all(abs(a - b) < 1e-9 for a, b in zip(e, edges)):
            total = [a + b for a, b in zip(total, c)]
        else:
            continue
        used += 1
    if edges is None or sum(total) == 0:
        return None
    return edges, total, used


def fig7_histogram(results: dict[str, Any], out_dir: str | Path, losses: Sequence[str] | None = None, *,
                   fraction: float | None = None, baseline: str = "ce", data_label: str | None = None,
                   name: str = "fig7_histogram") -> Path | None:
    """Fig. 7: histogram of the network's output probabilities on the test set, `ce` against a found loss
    (default: the baseline and the other loss with the best mean test accuracy), summed over repeats and shown as the share of all
    outputs per bin on a log scale.  None when no record has a histogram."""
    chosen = list(losses) if losses else _best_pair(results, baseline)
    fracs = [fraction_key(fraction)] if fraction is not None else list(reversed(fractions(results)))
    hists: dict[str, tuple[list[float], list[int], int]] = {}
    frac = None
    for f in fracs:  # the largest fraction that has a histogram
        hists = {loss: h for loss in chosen if (h := _histogram(results, loss, f)) is not None}
        if hists:
            frac = f
            break
    if not hists:
        return None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for loss, (edges, counts, _) in hists.items():
        total = sum(counts)
        rows += [[loss, edges[i], edges[i + 1], counts[i], counts[i] / total] for i in range(len(counts))]
    write_csv(out / f"{name}.csv", ["loss", "bin_low", "bin_high", "count", "share"], rows)
    plt = _pyplot()
    colors = _colors(loss_labels(results), baseline)
    fig, ax = plt.subplots(figsize=(8, 4.8))
    k = len(hists)
    for i, (loss, (edges, counts, used)) in enumerate(hists.items()):
        total = sum(counts)
        widths = [(edges[j + 1] - edges[j]) / k for j in range(len(counts))]
        lefts = [edges[j] + i * widths[j] for j in range(len(counts))]
        shares = [c / total for c in counts]
        ax.bar(lefts, [s if s > 0 else float("nan") for s in shares], width=widths, align="edge",
               color=colors.get(loss), alpha=0.85, edgecolor="white", linewidth=0.4,
               label=f"{loss} ({used} run{'s' * (used != 1)}, {total:,} outputs)")
    all_edges = next(iter(hists.values()))[0]
    ax.set_xlim(all_edges[0], all_edges[-1])
    ax.set_xticks([round(x, 2) for x in all_edges[::2]] if len(all_edges) > 11 else all_edges)
    ax.set_yscale("log")
    _percent_log_axis(ax.yaxis)
    ax.set_xlabel("output probability of the network (softmax, every class of every test image)")
    ax.set_ylabel("share of all outputs in the bin (log scale)")
    ax.grid(alpha=0.3, axis="y")
    ax.set_title("Output probabilities on the test set (GLO Fig. 7)\n" + _subtitle(results, data_label, frac),
                 fontsize=11)
    _legend_below(fig, ax)
    return _save(fig, out, name)


# -- a search run ------------------------------------------------------------------------------------------

def search_data(db: Any, run_id: str) -> dict[str, Any]:
    """What the progress figures need from a search run, read in one read-only transaction:
    {"run": {id, name, task, status, phase, generation}, "history": [...], "candidates": [{search_id,
    generation, phase, origin, status, fitness, error, parents}]}.  `history` is the summary's (a finished
    run) or the saved search state's (a run still going), [] when neither has one."""
    import json

    from sqlalchemy import select

    from db import models
    from db.errors import NotFoundError

    with db.session() as s:
        run = s.get(models.Run, run_id)
        if run is None:
            raise NotFoundError(f"no run {run_id!r} in this database (see `glo runs`)")
        history: list[dict[str, Any]] = []
        if run.summary_json:
            history = list(json.loads(run.summary_json).get("history") or [])
        if not history:  # a running run: its history as of the last whole save of its state (run.searchlog)
            state = s.execute(select(models.SearchState.state_json).where(
                models.SearchState.run_id == run_id, models.SearchState.kind == "search")).scalar()
            if state:
                history = list(json.loads(state).get("history") or [])
        C = models.Candidate
        E = models.Evaluation
        cands = s.execute(select(C.search_id, C.generation, C.phase, C.origin, C.status, C.fitness, C.error,
                                 C.parents_json, E.steps, C.resolved_at).outerjoin(E, E.id == C.evaluation_id)
                          .where(C.run_id == run_id).order_by(C.seq)).all()
        return {
            "run": {"id": run.id, "name": run.name, "task": run.task, "status": run.status, "phase": run.phase,
                    "generation": run.generation},
            "history": history,
            "candidates": [{"search_id": c[0], "generation": c[1], "phase": c[2], "origin": c[3], "status": c[4],
                            "fitness": c[5], "error": c[6] or "", "parents": json.loads(c[7] or "[]"),
                            "steps": c[8], "resolved_at": c[9]}
                           for c in cands],
        }


def _source(c: dict[str, Any]) -> str:
    """Where a candidate's fitness came from: trained, cache hit, elite, duplicate, invalid, ..."""
    st = c["status"]
    if st == "evaluated":
        return "trained"
    if st == "cached":
        return "cache hit"
    if st == "resolved":
        reason = (c["error"] or "").split(" ", 1)[0]
        return reason if reason in ("elite", "duplicate", "invalid", "filtered") else "resolved (other)"
    return st  # failed, pending


SOURCES = ("trained", "cache hit", "elite", "duplicate", "invalid", "filtered", "resolved (other)", "failed",
           "pending")
SOURCE_LABELS = {"trained": "trained", "cache hit": "cache hit (trained before)",
                 "elite": "elite (carried over)", "duplicate": "duplicate in its generation",
                 "invalid": "invalid tree (cannot depend on x and y)",
                 "filtered": "rejected by the zero-training filter", "resolved (other)": "resolved otherwise",
                 "failed": "failed (told 0)", "pending": "pending"}
SOURCE_COLORS = {"trained": "tab:blue", "cache hit": "tab:green", "elite": "tab:purple", "duplicate": "tab:olive",
                 "invalid": "tab:gray", "filtered": "tab:brown", "resolved (other)": "tab:cyan", "failed": "tab:red",
                 "pending": "lightgray"}


def search_progress(db: Any, run_id: str, out_dir: str | Path, *, data: dict[str, Any] | None = None,
                    data_label: str | None = None) -> list[Path]:
    """A search run's progress: search_fitness.png (best, median, mean and quartiles of the population's
    fitness per generation), search_cma.png (CMA-ES: each batch's fitnesses, best and median per iteration,
    best so far, per strategy), search_sources.png (per generation: trained, cache hits, elites, duplicates,
    invalid, failed).  Each with its CSV; returns the PNGs written (a figure without data is skipped).
    `data`: what `search_data(db, run_id)` returns, when the caller already has it."""
    data = data if data is not None else search_data(db, run_id)
    out = Path(out_dir)
    label = data_label or data_label_for(data["run"]["task"])
    sub = f"search {data['run']['id']}, {label}"
    paths = [_search_fitness(data, out, sub), _search_cma(data, out, sub), _search_sources(data, out, sub),
             _search_budget(data, out, sub)]
    return [p for p in paths if p is not None]


def budget_curve(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Best fitness at the top rung (the longest training the run has) against training steps spent.

    Trainings in the order their results arrived; a cache hit costs no steps.  Without [search.fidelity]
    every training is at the top rung, so this is the best fitness against steps spent."""
    trained = sorted((c for c in data["candidates"] if c["status"] == "evaluated" and c["steps"]),
                     key=lambda c: (c["resolved_at"] or 0.0))
    if not trained:
        return []
    top = max(int(c["steps"]) for c in trained)
    spent, best, rows = 0, None, []
    for c in trained:
        spent += int(c["steps"])
        if int(c["steps"]) == top and c["fitness"] is not None:
            best = float(c["fitness"]) if best is None else max(best, float(c["fitness"]))
        rows.append({"steps_spent": spent, "top_rung_steps": top, "best_at_top_rung": best})
    return rows


def _search_budget(data: dict[str, Any], out: Path, sub: str) -> Path | None:
    rows = budget_curve(data)
    if not rows or all(r["best_at_top_rung"] is None for r in rows):
        return None
    out.mkdir(parents=True, exist_ok=True)
    keys = ["steps_spent", "top_rung_steps", "best_at_top_rung"]
    write_csv(out / "search_budget.csv", keys, ([r[k] for k in keys] for r in rows))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    pts = [(r["steps_spent"], r["best_at_top_rung"]) for r in rows if r["best_at_top_rung"] is not None]
    ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", color="tab:red")
    ax.set_xlabel("training steps spent (all trainings, in the order results arrived)")
    ax.set_ylabel(f"best fitness at {rows[0]['top_rung_steps']} steps")
    ax.grid(alpha=0.3)
    ax.set_title(f"Discovery: best fitness at the top rung against training steps spent\n{sub}", fontsize=11)
    fig.tight_layout()
    return _save(fig, out, "search_budget")


def best_within(rows: list[dict[str, Any]], steps: int) -> float | None:
    """The best top-rung fitness a budget curve had reached once `steps` training steps were spent."""
    best = None
    for r in rows:
        if r["steps_spent"] > steps:
            break
        best = r["best_at_top_rung"]
    return best


def compare_budgets(datas: Sequence[dict[str, Any]], out_dir: str | Path,
                    labels: Sequence[str] | None = None) -> Path | None:
    """search_compare.png (+ CSV): several searches' best top-rung fitness against training steps spent, one
    curve each, so that two ways of searching (e.g. search.ga.init = "paper" without fidelity against the
    defaults) are compared at an equal budget of steps.  Each curve is at its own run's top rung, named in the
    legend.  `datas`: what `search_data` returns, one per run; `labels`: each run's name in the legend and CSV
    (default its id; two runs of one name from different databases need telling apart); None when no run has
    a top-rung fitness."""
    names = list(labels) if labels is not None else [d["run"]["id"] for d in datas]
    curves = [(name, budget_curve(d)) for name, d in zip(names, datas, strict=True)]
    curves = [(rid, rows) for rid, rows in curves if any(r["best_at_top_rung"] is not None for r in rows)]
    if not curves:
        return None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keys = ["run", "steps_spent", "top_rung_steps", "best_at_top_rung"]
    write_csv(out / "search_compare.csv", keys,
              ([rid, *(r[k] for k in keys[1:])] for rid, rows in curves for r in rows))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    equal = min(rows[-1]["steps_spent"] for _rid, rows in curves)
    for rid, rows in curves:
        pts = [(r["steps_spent"], r["best_at_top_rung"]) for r in rows if r["best_at_top_rung"] is not None]
        ax.step([p[0] for p in pts] + [rows[-1]["steps_spent"]], [p[1] for p in pts] + [pts[-1][1]],
                where="post", label=f"{rid} (fitness at {rows[0]['top_rung_steps']:,} steps)")
    if len(curves) > 1:
        ax.axvline(equal, color="gray", ls=":", lw=1, label=f"equal budget: {equal:,} steps")
    ax.set_xlabel("training steps spent (all trainings, in the order results arrived)")
    ax.set_ylabel("best fitness at the run's top rung")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Discovery: best top-rung fitness against training steps spent, per search", fontsize=11)
    fig.tight_layout()
    return _save(fig, out, "search_compare")


def _search_fitness(data: dict[str, Any], out: Path, sub: str) -> Path | None:
    gens: dict[int, list[float]] = {}
    for c in data["candidates"]:
        if c["phase"] == "discovery" and c["fitness"] is not None and c["status"] != "pending":
            gens.setdefault(int(c["generation"]), []).append(float(c["fitness"]))
    if not gens:
        return None
    hist = {int(h["generation"]): h for h in data["history"]}
    rows = []
    best_so_far = -math.inf
    for g in sorted(gens):
        vals = sorted(gens[g])
        best_so_far = max(best_so_far, vals[-1])
        rows.append({"generation": g, "n": len(vals), "complete": (g in hist) if hist else None, "best": vals[-1],
                     "q75": quantile(vals, 0.75), "median": quantile(vals, 0.5), "q25": quantile(vals, 0.25),
                     "mean": math.fsum(vals) / len(vals), "best_so_far": best_so_far})
    out.mkdir(parents=True, exist_ok=True)
    keys = ["generation", "n", "complete", "best", "q75", "median", "q25", "mean", "best_so_far"]
    write_csv(out / "search_fitness.csv", keys, ([r[k] for k in keys] for r in rows))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    xs = [r["generation"] for r in rows]
    ax.fill_between(xs, [r["q25"] for r in rows], [r["q75"] for r in rows], color="tab:blue", alpha=0.15,
                    linewidth=0, label="middle half (25–75%)")
    mk = "o" if len(xs) <= 30 else None
    ax.plot(xs, [r["best"] for r in rows], color="tab:red", marker=mk, markersize=4, label="best")
    ax.plot(xs, [r["median"] for r in rows], color="tab:blue", marker=mk, markersize=4, label="median")
    ax.plot(xs, [r["mean"] for r in rows], color="tab:blue", linestyle=":", label="mean")
    open_gens = [r["generation"] for r in rows if r["complete"] is False]
    if open_gens:
        ax.axvspan(min(open_gens) - 0.5, max(open_gens) + 0.5, color="lightgray", alpha=0.4,
                   label="generation not complete")
    ax.set_xlabel("generation")
    ax.set_ylabel("fitness (validation accuracy after the short training)")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(min(xs) - 0.5, max(xs) + 0.5)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=9)
    ax.set_title(f"Discovery: population fitness per generation\n{sub}", fontsize=11)
    fig.tight_layout()
    return _save(fig, out, "search_fitness")


def _search_cma(data: dict[str, Any], out: Path, sub: str) -> Path | None:
    fitness_of = {c["search_id"]: c["fitness"] for c in data["candidates"]}
    strategies: dict[int, dict[int, list[float]]] = {}
    base_of: dict[int, str] = {}
    for c in data["candidates"]:
        if c["phase"] != "cma" or c["fitness"] is None or c["status"] == "pending":
            continue
        try:
            k, it, _j = (int(p) for p in c["search_id"][1:].split("-"))
        except ValueError:
            continue
        strategies.setdefault(k, {}).setdefault(it, []).append(float(c["fitness"]))
        if c["parents"]:
            base_of.setdefault(k, c["parents"][0])
    if not strategies:
        return None
    rows = []
    for k in sorted(strategies):
        best_so_far = -math.inf
        for it in sorted(strategies[k]):
            vals = sorted(strategies[k][it])
            best_so_far = max(best_so_far, vals[-1])
            rows.append({"strategy": k, "iteration": it, "n": len(vals), "best": vals[-1],
                         "median": quantile(vals, 0.5), "worst": vals[0], "best_so_far": best_so_far,
                         "base": base_of.get(k), "base_fitness": fitness_of.get(base_of.get(k, ""))})
    out.mkdir(parents=True, exist_ok=True)
    keys = ["strategy", "iteration", "n", "best", "median", "worst", "best_so_far", "base", "base_fitness"]
    write_csv(out / "search_cma.csv", keys, ([r[k] for k in keys] for r in rows))
    plt = _pyplot()
    ks = sorted(strategies)
    fig, axes = plt.subplots(len(ks), 1, figsize=(9.5, 3.2 * len(ks) + 1.2), squeeze=False, sharex=True)
    from matplotlib.ticker import MaxNLocator

    for ax, k in zip(axes[:, 0], ks):
        mine = [r for r in rows if r["strategy"] == k]
        xs = [r["iteration"] for r in mine]
        pts = [(it, f) for it, vals in strategies[k].items() for f in vals]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=9, color="tab:gray", alpha=0.5,
                   label="each candidate", zorder=2)
        ax.plot(xs, [r["best"] for r in mine], color="tab:red", marker="o", markersize=3, label="best of batch")
        ax.plot(xs, [r["median"] for r in mine], color="tab:blue", marker="o", markersize=3,
                label="median of batch")
        ax.step(xs, [r["best_so_far"] for r in mine], where="post", color="tab:red", linestyle="--",
                linewidth=1, label="best so far")
        base_fit = mine[0]["base_fitness"]
        if base_fit is not None:
            ax.axhline(base_fit, color="black", linestyle=":", linewidth=1,
                       label=f"tree {mine[0]['base']} before CMA-ES")
        ax.set_ylabel("fitness (validation accuracy)")
        ax.set_title(f"strategy {k}" + (f": coefficients of {mine[0]['base']}" if mine[0]["base"] else ""),
                     fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1, 0].set_xlabel("CMA-ES iteration (one batch of candidates each)")
    fig.suptitle(f"Coefficient optimization (CMA-ES): fitness per iteration\n{sub}", fontsize=11)
    fig.tight_layout()
    return _save(fig, out, "search_cma")


def _search_sources(data: dict[str, Any], out: Path, sub: str) -> Path | None:
    groups: dict[tuple[str, int], dict[str, int]] = {}
    for c in data["candidates"]:
        if c["phase"] == "discovery":
            key = ("discovery", int(c["generation"]))
        else:
            try:
                key = (c["phase"], int(c["search_id"][1:].split("-")[1]))  # CMA-ES: c{strategy}-{iteration}-{j}
            except (IndexError, ValueError):
                key = (c["phase"], int(c["generation"]))
        counts = groups.setdefault(key, {s: 0 for s in SOURCES})
        src = _source(c)
        counts[src if src in counts else "resolved (other)"] += 1
    if not groups:
        return None
    phases = [p for p in ("discovery", "cma") if any(k[0] == p for k in groups)]
    phases += sorted({k[0] for k in groups} - set(phases))
    order = sorted(groups, key=lambda k: (phases.index(k[0]), k[1]))
    used = [s for s in SOURCES if any(groups[k][s] for k in order)]
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "search_sources.csv", ["phase", "generation", *SOURCES, "total"],
              ([k[0], k[1], *(groups[k][s] for s in SOURCES), sum(groups[k].values())] for k in order))
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    widths = [max(3, sum(1 for k in order if k[0] == p)) for p in phases]
    fig, axes = plt.subplots(1, len(phases), figsize=(max(8.5, 0.25 * len(order) + 4.5), 4.8), squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    xlabels = {"discovery": "discovery generation", "cma": "CMA-ES iteration (all strategies)"}
    for ax, phase in zip(axes[0], phases):
        keys = [k for k in order if k[0] == phase]
        xs = [k[1] for k in keys]
        bottom = [0] * len(keys)
        for s in used:
            vals = [groups[k][s] for k in keys]
            ax.bar(xs, vals, bottom=bottom, color=SOURCE_COLORS[s], label=SOURCE_LABELS[s], width=0.8)
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_xlabel(xlabels.get(phase, phase))
        ax.set_ylabel("candidates")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3, axis="y")
    axes[0, -1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=9, title="fitness from",
                       title_fontsize=9)
    fig.suptitle(f"Cache hits and resolutions: where each candidate's fitness came from\n{sub}", fontsize=11)
    fig.tight_layout()
    return _save(fig, out, "search_sources")
