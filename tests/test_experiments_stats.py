"""orchestrator.experiments.stats: mean ± sd and the t-tests against ce, checked against scipy and by hand."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from scipy import stats as sps

from orchestrator.experiments.stats import ROW_KEYS, fmt_p, format_table, summarize, verdicts

CE = [0.9912, 0.9905, 0.9918, 0.9909, 0.9915]
BAIKAL = [0.9925, 0.9921, 0.9930, 0.9918, 0.9927]
WORSE = [0.9901, 0.9910, 0.9899, 0.9911, 0.9904]


def rec(loss: str, seed: int, acc: float | None, *, fraction: float = 1.0, status: str = "ok") -> dict:
    return {"loss": loss, "seed": seed, "fraction": fraction, "status": status, "test_accuracy": acc,
            "validation_accuracy": None, "test_curve": None, "probability_histogram": None,
            "candidate_id": f"ev/{loss}-{seed}-{fraction}"}


def results(columns: dict[str, list[float | None]], *, fractions=(1.0,), extra: list[dict] | None = None,
            shuffle: bool = True) -> dict:
    records = [rec(loss, seed, acc, fraction=f) for f in fractions for loss, accs in columns.items()
               for seed, acc in enumerate(accs) if acc is not None]
    records += extra or []
    if shuffle:
        random.Random(3).shuffle(records)  # pairing is by seed, not by position
    return {"run_id": "ev", "task": "mnist", "steps": 1000, "data_label": "MNIST",
            "losses": [{"label": loss, "infix": ""} for loss in columns], "seeds": [0, 1, 2, 3, 4],
            "fractions": list(fractions), "records": records}


def by_loss(rows: list[dict]) -> dict[str, dict]:
    return {r["loss"]: r for r in rows}


def test_rows_match_scipy_on_fixed_numbers() -> None:
    rows = summarize(results({"ce": CE, "baikal": BAIKAL, "worse": WORSE}))
    assert [r["loss"] for r in rows] == ["ce", "baikal", "worse"]
    assert all(set(ROW_KEYS) <= set(r) for r in rows)
    got = by_loss(rows)
    for name, values in (("ce", CE), ("baikal", BAIKAL), ("worse", WORSE)):
        assert got[name]["n"] == 5 and got[name]["fraction"] == 1.0
        assert got[name]["mean"] == pytest.approx(statistics.fmean(values), abs=1e-15)
        assert got[name]["std"] == pytest.approx(statistics.stdev(values), rel=1e-12)  # ddof = 1
    for name, values in (("baikal", BAIKAL), ("worse", WORSE)):
        r = got[name]
        welch = sps.ttest_ind(values, CE, equal_var=False)
        welch1 = sps.ttest_ind(values, CE, equal_var=False, alternative="greater")
        paired = sps.ttest_rel(values, CE)
        paired1 = sps.ttest_rel(values, CE, alternative="greater")
        assert r["welch_t"] == pytest.approx(welch.statistic, rel=1e-12)
        assert r["welch_p_two"] == pytest.approx(welch.pvalue, rel=1e-12)
        assert r["welch_p_one"] == pytest.approx(welch1.pvalue, rel=1e-12)
        assert r["paired_t"] == pytest.approx(paired.statistic, rel=1e-12)
        assert r["paired_p_two"] == pytest.approx(paired.pvalue, rel=1e-12)
        assert r["paired_p_one"] == pytest.approx(paired1.pvalue, rel=1e-12)
        assert r["n_pairs"] == 5
    # the one-tailed p tests "loss > ce": small for the better loss, large for the worse one
    assert got["baikal"]["paired_p_one"] < 0.05 < got["worse"]["paired_p_one"]
    assert got["baikal"]["paired_p_one"] == pytest.approx(got["baikal"]["paired_p_two"] / 2, rel=1e-12)
    assert got["worse"]["paired_p_one"] == pytest.approx(1 - got["worse"]["paired_p_two"] / 2, rel=1e-12)


def test_t_statistics_by_hand() -> None:
    """Independently of scipy: the paired t is mean(d) / (sd(d) / sqrt(n)); Welch's t divides the difference of
    the means by sqrt(s1^2/n1 + s2^2/n2)."""
    r = by_loss(summarize(results({"ce": CE, "baikal": BAIKAL})))["baikal"]
    d = [a - b for a, b in zip(BAIKAL, CE)]
    assert r["paired_t"] == pytest.approx(statistics.fmean(d) / (statistics.stdev(d) / math.sqrt(5)), rel=1e-9)
    se = math.sqrt(statistics.variance(BAIKAL) / 5 + statistics.variance(CE) / 5)
    assert r["welch_t"] == pytest.approx((statistics.fmean(BAIKAL) - statistics.fmean(CE)) / se, rel=1e-9)
    # paired t with 4 degrees of freedom: the two-tailed p from the t distribution
    assert r["paired_p_two"] == pytest.approx(2 * sps.t.sf(abs(r["paired_t"]), 4), rel=1e-9)


def test_pairs_by_seed_and_counts_only_ok_records() -> None:
    extra = [rec("baikal", 5, 0.5, status="nonfinite"), rec("baikal", 6, None, status="failed"),
             rec("baikal", 7, None, status="pending"), rec("ce", 8, float("nan")), rec("ce", 9, None)]
    res = results({"ce": CE, "baikal": [None, *BAIKAL[1:]]}, extra=extra)
    r = by_loss(summarize(res))
    assert r["ce"]["n"] == 5 and r["baikal"]["n"] == 4 and r["baikal"]["n_pairs"] == 4
    assert r["baikal"]["paired_t"] == pytest.approx(sps.ttest_rel(BAIKAL[1:], CE[1:]).statistic, rel=1e-12)
    assert r["baikal"]["welch_t"] == pytest.approx(
        sps.ttest_ind(BAIKAL[1:], CE, equal_var=False).statistic, rel=1e-12)


def test_none_where_undefined() -> None:
    r = by_loss(summarize(results({"ce": CE, "one": [0.99], "same": CE, "empty": []})))
    base = r["ce"]
    assert all(base[k] is None for k in ("welch_t", "welch_p_two", "welch_p_one", "paired_t", "paired_p_two",
                                         "paired_p_one", "n_pairs"))
    one = r["one"]
    assert one["n"] == 1 and one["mean"] == 0.99 and one["std"] is None
    assert one["welch_t"] is None and one["paired_t"] is None and one["n_pairs"] == 1
    same = r["same"]  # identical to ce seed by seed: the paired differences have no variance
    assert same["paired_t"] is None and same["paired_p_one"] is None and same["n_pairs"] == 5
    assert same["welch_t"] == pytest.approx(0.0, abs=1e-9) and same["welch_p_two"] == pytest.approx(1.0)
    assert r["empty"]["n"] == 0 and r["empty"]["mean"] is None and r["empty"]["std"] is None
    no_base = summarize(results({"baikal": BAIKAL, "worse": WORSE}))
    assert all(row["welch_t"] is None and row["paired_t"] is None and row["n_pairs"] is None for row in no_base)
    other = by_loss(summarize(results({"baikal": BAIKAL, "worse": WORSE}), baseline="worse"))
    assert other["baikal"]["paired_t"] == pytest.approx(sps.ttest_rel(BAIKAL, WORSE).statistic, rel=1e-12)


def test_fractions_pair_within_their_fraction() -> None:
    res = results({"ce": CE, "baikal": BAIKAL}, fractions=(1.0, 0.1))
    for r in res["records"]:  # at 10 % every accuracy is 0.1 lower, the same for both losses
        if r["fraction"] == 0.1:
            r["test_accuracy"] -= 0.1
    rows = summarize(res)
    assert [(r["loss"], r["fraction"]) for r in rows] == [("ce", 0.1), ("baikal", 0.1), ("ce", 1.0),
                                                          ("baikal", 1.0)]
    small, full = rows[1], rows[3]
    assert small["paired_t"] == pytest.approx(full["paired_t"], rel=1e-6)
    assert small["mean"] == pytest.approx(full["mean"] - 0.1)


def test_format_table() -> None:
    rows = summarize(results({"ce": CE, "baikal": BAIKAL, "one": [0.99]}))
    text = format_table(rows)
    lines = text.strip().splitlines()
    assert len(lines) == 2 + 3
    assert len({line.count("|") for line in lines}) == 1
    assert "paired p (1-tailed)" in lines[0] and "vs ce" in lines[0] and "training set" not in lines[0]
    r = by_loss(rows)
    assert f"{r['ce']['mean']:.4f} ± {r['ce']['std']:.4f}" in lines[2]
    assert "| 0.9900 |" in lines[4] and lines[4].count("–") == 6 and lines[4].endswith("| 1 |")
    assert fmt_p(r["baikal"]["paired_p_one"]) in lines[3]
    multi = format_table(summarize(results({"ce": CE, "baikal": BAIKAL}, fractions=(0.05, 1.0))))
    assert "training set" in multi and "| 5% |" in multi and "| 100% |" in multi


def test_fmt_p() -> None:
    assert fmt_p(None) == "–"
    assert fmt_p(0.0234567) == "0.0235"
    assert fmt_p(0.00123) == "0.0012"
    assert fmt_p(0.000987) == "9.87e-04"
    assert fmt_p(3.2e-12) == "3.20e-12"
    assert fmt_p(0.0) == "0"


def test_verdicts() -> None:
    rows = summarize(results({"ce": CE, "baikal": BAIKAL, "worse": WORSE, "one": [0.995]}))
    text = verdicts(rows)
    assert len(text) == 3  # no sentence for ce itself
    assert text[0].startswith("`baikal`") and " beats `ce`" in text[0] and "< 0.05" in text[0]
    assert "significant at the 5% level" in text[0] and "not significant" not in text[0]
    assert "does not beat" in text[1] and "not significant" in text[1]
    assert " is above `ce`" in text[2] and "undefined" in text[2]  # a higher mean without a test is no win
    assert verdicts(summarize(results({"baikal": BAIKAL}))) == []


def _grid_results(selection: dict[tuple[str, float], list[float]], tests: dict[tuple[str, float], list[float]],
                  base_rate: float = 0.01) -> dict:
    grid = sorted({rate for _loss, rate in selection})
    sel = [{"loss": loss, "seed": 1000 + i, "fraction": 1.0, "status": "ok", "learning_rate": rate,
            "rate_index": grid.index(rate), "validation_accuracy": v, "test_accuracy": None}
           for (loss, rate), vs in selection.items() for i, v in enumerate(vs)]
    at = [{"loss": loss, "seed": i, "fraction": 1.0, "status": "ok", "learning_rate": rate,
           "rate_index": grid.index(rate) if rate in grid else None, "validation_accuracy": 0.5, "test_accuracy": t}
          for (loss, rate), ts in tests.items() for i, t in enumerate(ts)]
    return {"losses": [{"label": "ce"}, {"label": "f"}], "fractions": [1.0], "learning_rate": base_rate,
            "learning_rates": grid, "selection_seeds": [1000, 1001], "selection_records": sel,
            "records": [r for r in at if r["rate_index"] is None or r["learning_rate"] == base_rate],
            "rate_records": [r for r in at if r["learning_rate"] != base_rate], "classes": 10}


def test_the_rate_is_chosen_on_validation_accuracy_never_on_test_accuracy() -> None:
    from orchestrator.experiments.stats import chosen_rate_rows, rate_choices

    # On validation f is best at 0.1; its test accuracy would have picked 0.3 (and ce's 0.01).
    res = _grid_results({("ce", 0.01): [0.90, 0.91], ("ce", 0.1): [0.95, 0.95], ("ce", 0.3): [0.94, 0.93],
                         ("f", 0.01): [0.80, 0.80], ("f", 0.1): [0.96, 0.96], ("f", 0.3): [0.95, 0.95]},
                        {("ce", 0.01): [0.99, 0.99], ("ce", 0.1): [0.95, 0.96], ("f", 0.1): [0.97, 0.98],
                         ("f", 0.3): [0.99, 0.995]})
    choices = rate_choices(res)
    assert choices[("ce", 1.0)].rate == 0.1 and choices[("f", 1.0)].rate == 0.1
    assert not choices[("f", 1.0)].edge
    rows = {r["loss"]: r for r in chosen_rate_rows(res)}
    assert rows["f"]["mean"] == pytest.approx(0.975) and rows["ce"]["mean"] == pytest.approx(0.955)
    assert rows["f"]["n_pairs"] == 2
    # Changing every test accuracy changes no choice.
    for rec in res["rate_records"] + res["records"]:
        rec["test_accuracy"] = 1.0 - rec["test_accuracy"]
    assert rate_choices(res) == choices


def test_a_failed_selection_training_counts_zero_and_a_tie_takes_the_smaller_rate() -> None:
    from orchestrator.search.evaluation import choose_rate

    assert choose_rate([0.01, 0.1, 1.0], {0: [0.5, 0.5], 1: [0.9, 0.0], 2: [0.5, 0.5]}).rate == 0.01
    edge = choose_rate([0.01, 0.1, 1.0], {0: [0.1], 1: [0.2], 2: [0.3]})
    assert edge.rate == 1.0 and edge.edge and edge.means == (0.1, 0.2, 0.3)
    assert choose_rate([0.01, 0.1], {0: [0.5]}) is None  # not all told yet
    assert not choose_rate([0.1], {0: [0.5]}).edge  # one rate: nothing to extend


def test_a_training_at_chance_is_marked() -> None:
    from orchestrator.experiments.stats import at_chance

    assert at_chance({"status": "ok", "test_accuracy": 0.098}, 10)
    assert not at_chance({"status": "ok", "test_accuracy": 0.6}, 10)
    assert not at_chance({"status": "nonfinite", "test_accuracy": None}, 10)
    assert at_chance({"status": "ok", "test_accuracy": None, "validation_accuracy": 0.11}, 10)
    assert not at_chance({"status": "ok", "test_accuracy": 0.05}, None)
