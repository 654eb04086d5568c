"""Statistics of an evaluation: mean ± sd of test accuracy per loss, and t-tests of each loss against ce.

The input is an evaluation run's results dict (see `orchestrator.experiments`).  Only records with
status "ok" and a finite test accuracy count.  Repeats are paired: every loss is trained with the
same K seeds, so the paired t-test compares a loss with the baseline seed by seed (at the same
training-set fraction); Welch's t-test compares the two samples without assuming equal variances.
The one-tailed p-values test the alternative "this loss has the higher mean test accuracy".
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

#: The paired one-tailed p below which a loss "beats" the baseline (reports, sentences, glo best).
ALPHA = 0.05
#: Keys of one `summarize` row, in table order.
ROW_KEYS = ("loss", "fraction", "n", "mean", "std", "welch_t", "welch_p_two", "welch_p_one",
            "paired_t", "paired_p_two", "paired_p_one", "n_pairs")


def fraction_key(f: Any) -> float:
    """A training-set fraction as a float that compares equal however it was written (0.1 vs 0.10000001)."""
    return round(float(f), 9)


def loss_labels(results: dict[str, Any]) -> list[str]:
    """The losses in the order the run gives them, then any that only the records name."""
    out: list[str] = []
    for loss in results.get("losses") or []:
        label = loss["label"] if isinstance(loss, dict) else str(loss)
        if label not in out:
            out.append(label)
    for rec in results.get("records") or []:
        if rec.get("loss") is not None and rec["loss"] not in out:
            out.append(rec["loss"])
    return out


def fractions(results: dict[str, Any]) -> list[float]:
    """The training-set fractions of the run and of its records, smallest first."""
    fs = {fraction_key(f) for f in results.get("fractions") or []}
    fs |= {fraction_key(r.get("fraction", 1.0)) for r in results.get("records") or []}
    return sorted(fs) or [1.0]


def counted(rec: dict[str, Any]) -> bool:
    """Whether a record counts: trained to the end ("ok") with a finite test accuracy."""
    acc = rec.get("test_accuracy")
    return rec.get("status") == "ok" and acc is not None and math.isfinite(float(acc))


def accuracies(results: dict[str, Any]) -> dict[tuple[str, float], dict[Any, float]]:
    """(loss, fraction) -> {seed: test accuracy} of the counted records (a repeated seed: the last one)."""
    out: dict[tuple[str, float], dict[Any, float]] = {}
    for rec in results.get("records") or []:
        if counted(rec):
            key = (rec["loss"], fraction_key(rec.get("fraction", 1.0)))
            out.setdefault(key, {})[rec.get("seed")] = float(rec["test_accuracy"])
    return out


def _finite(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    n = len(values)
    if n == 0:
        return None, None
    mean = math.fsum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


def _ttest(fn: Any, a: Sequence[float], b: Sequence[float], **kw: Any) -> tuple[float | None, float | None,
                                                                                  float | None]:
    """(t, two-tailed p, one-tailed p for a > b); None where the test is undefined (zero variance)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "catastrophic cancellation" for near-equal samples
        two = fn(a, b, **kw)
        one = fn(a, b, alternative="greater", **kw)
    t = _finite(two.statistic)
    if t is None:
        return None, None, None
    return t, _finite(two.pvalue), _finite(one.pvalue)


def summarize(results: dict[str, Any], baseline: str = "ce") -> list[dict[str, Any]]:
    """One row per (loss, fraction), losses in the run's order, fractions smallest first.

    Row keys: loss, fraction, n, mean, std (sample sd, ddof=1), welch_t, welch_p_two, welch_p_one,
    paired_t, paired_p_two, paired_p_one, n_pairs, baseline.  The tests compare the loss with
    `baseline` at the same fraction (one-tailed: alternative loss > baseline); they are None for the
    baseline's own row, when `baseline` is not in the run, when either side has fewer than 2
    values (Welch) or fewer than 2 common seeds (paired), and when the variance is zero.
    `n_pairs` is the number of seeds both have (None on the baseline row and without a baseline).
    """
    from scipy import stats as sps

    acc = accuracies(results)
    labels = loss_labels(results)
    has_baseline = baseline in labels
    rows: list[dict[str, Any]] = []
    for frac in fractions(results):
        base = acc.get((baseline, frac), {})
        for loss in labels:
            values = acc.get((loss, frac), {})
            mean, std = _mean_std(list(values.values()))
            row: dict[str, Any] = {"loss": loss, "fraction": frac, "n": len(values), "mean": mean, "std": std,
                                   "welch_t": None, "welch_p_two": None, "welch_p_one": None,
                                   "paired_t": None, "paired_p_two": None, "paired_p_one": None,
                                   "n_pairs": None, "baseline": baseline if has_baseline else None}
            if has_baseline and loss != baseline:
                a, b = list(values.values()), list(base.values())
                if len(a) >= 2 and len(b) >= 2:
                    row["welch_t"], row["welch_p_two"], row["welch_p_one"] = _ttest(
                        sps.ttest_ind, a, b, equal_var=False)
                seeds = [s for s in values if s in base]
                row["n_pairs"] = len(seeds)
                if len(seeds) >= 2:
                    row["paired_t"], row["paired_p_two"], row["paired_p_one"] = _ttest(
                        sps.ttest_rel, [values[s] for s in seeds], [base[s] for s in seeds])
            rows.append(row)
    return rows


def status_counts(results: dict[str, Any]) -> dict[str, int]:
    """How many records have each status ("ok" counts only those that count, see `counted`)."""
    out: dict[str, int] = {}
    for rec in results.get("records") or []:
        st = str(rec.get("status"))
        if st == "ok" and not counted(rec):
            st = "ok without test accuracy"
        out[st] = out.get(st, 0) + 1
    return out


# -- formatting --------------------------------------------------------------------------------------------

def fmt_p(p: float | None) -> str:
    """A p-value: 4 decimals, or scientific notation below 0.001; an en dash when undefined."""
    if p is None:
        return "–"
    if p == 0.0:
        return "0"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.4f}"


def fmt_t(t: float | None) -> str:
    return "–" if t is None else f"{t:.3f}"


def fmt_mean_sd(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "–"
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


def fmt_fraction(f: float) -> str:
    """0.05 -> '5%', 1.0 -> '100%', 0.125 -> '12.5%'."""
    return f"{f * 100:.4g}%"


def md_escape(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def format_table(rows: Iterable[dict[str, Any]]) -> str:
    """The rows of `summarize` as a markdown table (the paper's Fig. 2 table).

    Mean ± sd with 4 decimals; p-values with 4 decimals, in scientific notation below 0.001; "–"
    where undefined.  A training-set fraction column appears when the rows have more than one.
    """
    rows = list(rows)
    show_frac = len({r["fraction"] for r in rows}) > 1
    base = next((r.get("baseline") for r in rows if r.get("baseline")), None)
    vs = f" vs {base}" if base else ""
    head = (["loss"] + (["training set"] if show_frac else []) +
            ["n", "test accuracy (mean ± sd)", f"Welch t{vs}", "Welch p (2-tailed)", "Welch p (1-tailed)",
             f"paired t{vs}", "paired p (2-tailed)", "paired p (1-tailed)", "pairs"])
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join([":---"] + ([":---"] if show_frac else []) + ["---:"] * (len(head) - 1 - show_frac)) + "|"]
    for r in rows:
        cells = ([f"`{md_escape(r['loss'])}`"] + ([fmt_fraction(r["fraction"])] if show_frac else []) +
                 [str(r["n"]), fmt_mean_sd(r["mean"], r["std"]), fmt_t(r["welch_t"]), fmt_p(r["welch_p_two"]),
                  fmt_p(r["welch_p_one"]), fmt_t(r["paired_t"]), fmt_p(r["paired_p_two"]),
                  fmt_p(r["paired_p_one"]), "–" if r["n_pairs"] is None else str(r["n_pairs"])])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def verdict(row: dict[str, Any], baseline_mean: float | None, alpha: float = ALPHA, *,
            name_fraction: bool = False, baseline_rate: float | None = None) -> str | None:
    """One sentence: does this loss's mean beat the baseline's (`baseline_mean`, at the same fraction), and is
    the paired one-tailed p below `alpha`?  None for the baseline's own row and without a baseline.
    `name_fraction`: say "with the whole training set" too (for runs with several fractions).  A row of
    `chosen_rate_rows` names its rate, and `baseline_rate` the baseline's."""
    base = row.get("baseline")
    if not base or row["loss"] == base:
        return None
    name = f"`{row['loss']}`" + (f" at lr {fmt_rate(row['learning_rate'])}" if row.get("learning_rate") else "")
    where = "" if row["fraction"] == 1.0 else f" with {fmt_fraction(row['fraction'])} of the training set"
    if name_fraction and row["fraction"] == 1.0:
        where = " with the whole training set"
    if row["mean"] is None:
        return f"{name}{where}: no finished training with a test accuracy, so no comparison with `{base}`."
    if baseline_mean is None:
        return f"{name}{where}: `{base}` has no finished training with a test accuracy to compare with."
    diff = row["mean"] - baseline_mean
    p = row["paired_p_one"]
    # "beats" is a claim: a higher mean *and* a significant paired test; a higher mean alone is "is above"
    beats = "does not beat" if diff <= 0 else "beats" if p is not None and p < alpha else "is above"
    at = f" at its best rate, lr {fmt_rate(baseline_rate)}," if baseline_rate else ""
    text = (f"{name}{where}: its mean test accuracy {row['mean']:.4f} {beats} `{base}`'s{at} {baseline_mean:.4f} "
            f"(difference {diff:+.4f}).")
    pairs = row["n_pairs"] or 0
    if p is None:
        why = "fewer than 2 seeds trained with both losses" if pairs < 2 else "the paired differences do not vary"
        return text + f" The paired one-tailed t-test is undefined ({why}; {pairs} pair{'s' * (pairs != 1)})."
    if p < alpha:
        return text + f" Paired one-tailed p = {fmt_p(p)} < {alpha:g} ({pairs} seeds): significant at the {alpha * 100:g}% level."
    return (text + f" Paired one-tailed p = {fmt_p(p)} ≥ {alpha:g} ({pairs} seeds): not significant at the "
            f"{alpha * 100:g}% level.")


def verdicts(rows: Sequence[dict[str, Any]], alpha: float = ALPHA) -> list[str]:
    """`verdict` for every non-baseline row of `summarize`, in row order."""
    means = {(r["loss"], r["fraction"]): r["mean"] for r in rows}
    rates = {(r["loss"], r["fraction"]): r.get("learning_rate") for r in rows}
    several = len({r["fraction"] for r in rows}) > 1
    out = []
    for r in rows:
        key = (r.get("baseline"), r["fraction"])
        text = verdict(r, means.get(key), alpha, name_fraction=several, baseline_rate=rates.get(key))
        if text is not None:
            out.append(text)
    return out


# -- each loss at its own learning rate ------------------------------------------------------------------

#: A training whose accuracy stays below this many times chance (1 / classes) learned nothing: it is marked
#: "at chance" even when it finished with a finite loss (Baikal at lr 0.1 on MNIST: 0.098, status "ok").
CHANCE_FACTOR = 1.5


def at_chance(rec: dict[str, Any], classes: int | None) -> bool:
    """Whether a finished training ended at chance accuracy (test accuracy, else validation accuracy)."""
    acc = rec.get("test_accuracy")
    acc = rec.get("validation_accuracy") if acc is None else acc
    return (bool(classes) and rec.get("status") == "ok" and acc is not None
            and float(acc) < CHANCE_FACTOR / float(classes))


def rate_choices(results: dict[str, Any]) -> dict[tuple[str, float], Any]:
    """(loss, fraction) -> its `RateChoice` on the run's grid, from the selection trainings' validation
    accuracy (`orchestrator.search.evaluation.choose_rate`, the rule the run itself followed; a training that
    did not finish "ok" counts 0).  Empty without a grid; a loss whose selection is unfinished is left out."""
    from orchestrator.search.evaluation import choose_rate

    grid = results.get("learning_rates") or []
    need = len(results.get("selection_seeds") or [])
    by: dict[tuple[str, float], dict[int, list[float]]] = {}
    for rec in results.get("selection_records") or []:
        if rec.get("status") == "pending":
            continue
        acc = rec.get("validation_accuracy") if rec.get("status") == "ok" else 0.0
        key = (rec["loss"], fraction_key(rec.get("fraction", 1.0)))
        by.setdefault(key, {}).setdefault(int(rec["rate_index"]), []).append(float(acc or 0.0))
    out: dict[tuple[str, float], Any] = {}
    for key, validation in by.items():
        if all(len(validation.get(k, ())) >= need for k in range(len(grid))):
            choice = choose_rate(grid, validation)
            if choice is not None:
                out[key] = choice
    return out


def at_chosen_rates(results: dict[str, Any]) -> dict[str, Any]:
    """The results with `records` replaced by each loss's test trainings at its chosen rate (those at the
    task's rate where that is the one chosen), so that `summarize` compares every loss -- the baseline
    included -- at its own best rate, paired by seed.  Each record says its `learning_rate`."""
    from orchestrator.search.evaluation import same_rate

    choices = rate_choices(results)
    base_rate = results.get("learning_rate")
    records = []
    for (loss, frac), choice in choices.items():
        if base_rate is not None and same_rate(choice.rate, float(base_rate)):
            pool, match = results.get("records") or [], None
        else:
            pool, match = results.get("rate_records") or [], choice.index
        records += [r for r in pool if r["loss"] == loss and fraction_key(r.get("fraction", 1.0)) == frac
                    and r.get("rate_index") == match]
    return {**results, "records": records}


def chosen_rate_rows(results: dict[str, Any], baseline: str = "ce") -> list[dict[str, Any]]:
    """`summarize` at each loss's chosen rate, every row with its `learning_rate`, `edge` (the chosen rate
    is the grid's smallest or largest: the best may lie beyond) and the mean validation accuracy per grid
    rate (`validation_by_rate`).  Empty without a grid."""
    choices = rate_choices(results)
    if not choices:
        return []
    rows = summarize(at_chosen_rates(results), baseline)
    for row in rows:
        choice = choices.get((row["loss"], row["fraction"]))
        row["learning_rate"] = None if choice is None else choice.rate
        row["edge"] = None if choice is None else choice.edge
        row["validation_by_rate"] = None if choice is None else list(choice.means)
    return rows


def chance_records(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every finished training of the run (at any rate) that ended at chance accuracy."""
    classes = results.get("classes")
    pools = ("records", "rate_records", "selection_records")
    return [r for p in pools for r in results.get(p) or [] if at_chance(r, classes)]


def fmt_rate(rate: float | None) -> str:
    return "–" if rate is None else f"{rate:g}"


def format_rate_table(rows: Iterable[dict[str, Any]]) -> str:
    """`chosen_rate_rows` as a markdown table: the rate, mean ± sd, the paired test against the baseline at
    *its* chosen rate; an edge choice is flagged."""
    rows = list(rows)
    show_frac = len({r["fraction"] for r in rows}) > 1
    base = next((r.get("baseline") for r in rows if r.get("baseline")), None)
    vs = f" vs {base} at its rate" if base else ""
    head = (["loss"] + (["training set"] if show_frac else []) +
            ["chosen learning rate", "n", "test accuracy (mean ± sd)", f"paired t{vs}", "paired p (1-tailed)",
             "pairs"])
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join([":---"] + ([":---"] if show_frac else []) + ["---:"] * (len(head) - 1 - show_frac)) + "|"]
    for r in rows:
        rate = fmt_rate(r.get("learning_rate")) + (" (grid edge: extend the grid)" if r.get("edge") else "")
        cells = ([f"`{md_escape(r['loss'])}`"] + ([fmt_fraction(r["fraction"])] if show_frac else []) +
                 [rate, str(r["n"]), fmt_mean_sd(r["mean"], r["std"]), fmt_t(r["paired_t"]),
                  fmt_p(r["paired_p_one"]), "–" if r["n_pairs"] is None else str(r["n_pairs"])])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
