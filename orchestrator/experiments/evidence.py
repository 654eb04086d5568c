"""Whether a loss beats cross-entropy at ce's own best learning rate, where a database holds the evidence.

The evidence is an evaluation run with a learning-rate grid (`glo evaluate --lr-grid`, or `glo experiment`
with `learning_rates`): in it each loss, ce included, was tested at the rate chosen for it on validation
accuracy (orchestrator.experiments.stats.chosen_rate_rows).  `glo best`, `glo status` and the dashboard
look a loss up here by its canonical key (the same function, coefficients included) or by the RUN/CANDIDATE
label it was evaluated under, and say what the newest such evaluation found -- or nothing, where no
evaluation asked the question: a fitness alone, measured at one shared rate, cannot answer it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

BASELINE = "ce"
#: The runs that can hold the evidence: their config names a learning-rate grid.  Cheap enough for `glo status`
#: and the dashboard to ask first, with plain sqlite3, before reading any evaluation.
GRID_RUNS_SQL = "select id, config_json from runs where config_json like '%\"learning_rates\"%' order by created_at"


@dataclass(frozen=True)
class FairComparison:
    """One loss against ce, each at its own chosen rate, in one evaluation run (whole training set)."""

    evaluation: str
    loss: str
    rate: float
    mean: float | None
    n: int
    baseline_rate: float
    baseline_mean: float | None
    paired_p_one: float | None
    n_pairs: int
    edge: bool  # this loss's or ce's rate is at the grid's edge

    @property
    def beats(self) -> bool:
        """Higher mean test accuracy than ce at ce's rate, with paired one-tailed p < ALPHA."""
        from orchestrator.experiments.stats import ALPHA

        return (self.mean is not None and self.baseline_mean is not None and self.mean > self.baseline_mean
                and self.paired_p_one is not None and self.paired_p_one < ALPHA)

    def verdict(self) -> str:
        """A few words for a table cell: "yes (+0.0035, p 0.0230, n 2)", "not significant (…)", "no (…)",
        with " edge" when a chosen rate is at the grid's edge."""
        from orchestrator.experiments.stats import fmt_p

        if self.mean is None or self.baseline_mean is None:
            return "not tested yet"
        if self.beats:
            word = "yes"
        elif self.mean > self.baseline_mean:
            word = "not significant"
        else:
            word = "no"
        p = "" if self.paired_p_one is None else f", p {fmt_p(self.paired_p_one)}"
        return f"{word} ({self.mean - self.baseline_mean:+.4f}{p}, n {self.n_pairs})" + (" edge" if self.edge else "")

    def sentence(self) -> str:
        """One line: both rates, both means, p and where it was measured."""
        from orchestrator.experiments.stats import fmt_p, fmt_rate

        if self.mean is None or self.baseline_mean is None:
            return f"against ce at ce's best rate: evaluation {self.evaluation} has no test result for both yet"
        word = ("beats" if self.beats else
                "is above, not significantly," if self.mean > self.baseline_mean else "does not beat")
        p = "undefined" if self.paired_p_one is None else fmt_p(self.paired_p_one)
        edge = "; a chosen rate is at the grid's edge (extend the grid)" if self.edge else ""
        return (f"{word} ce at ce's best rate: {self.mean:.4f} at lr {fmt_rate(self.rate)} against ce's "
                f"{self.baseline_mean:.4f} at lr {fmt_rate(self.baseline_rate)} (paired one-tailed p {p}, "
                f"{self.n_pairs} seeds; evaluation {self.evaluation}){edge}")


def grid_evaluations(db: Any) -> list[str]:
    """The evaluation runs with a learning-rate grid and ce among their losses, oldest first."""
    from sqlalchemy import text

    with db.session() as s:
        rows = s.execute(text(GRID_RUNS_SQL)).all()
    out = []
    for run_id, config_json in rows:
        ev = (json.loads(config_json or "{}").get("evaluate") or {})
        if ev.get("learning_rates") and any(d.get("label") == BASELINE for d in ev.get("losses") or []):
            out.append(run_id)
    return out


def fair_comparisons(db: Any) -> dict[str, FairComparison]:
    """Every loss of every grid evaluation against ce there, keyed by its canonical key and by its label (a
    RUN/CANDIDATE label names the search's candidate); a newer evaluation replaces an older one's entry."""
    from sqlalchemy import text

    from db.queries import evaluation_results
    from orchestrator.experiments.stats import chosen_rate_rows

    out: dict[str, FairComparison] = {}
    for run_id in grid_evaluations(db):
        results = evaluation_results(db, run_id)
        rows = [r for r in chosen_rate_rows(results, BASELINE) if r["fraction"] == 1.0]
        base = next((r for r in rows if r["loss"] == BASELINE), None)
        if base is None or base.get("learning_rate") is None:
            continue
        with db.session() as s:
            keys = dict(s.execute(text("select substr(search_id, 2, instr(search_id, '-') - 2), canonical_key "
                                       "from candidates where run_id = :r"), {"r": run_id}).all())
        labels = [d["label"] for d in results["losses"]]
        for r in rows:
            if r["loss"] == BASELINE or r.get("learning_rate") is None:
                continue
            comparison = FairComparison(
                evaluation=run_id, loss=r["loss"], rate=r["learning_rate"], mean=r["mean"], n=r["n"],
                baseline_rate=base["learning_rate"], baseline_mean=base["mean"], paired_p_one=r["paired_p_one"],
                n_pairs=r["n_pairs"] or 0, edge=bool(r.get("edge") or base.get("edge")))
            out[r["loss"]] = comparison
            key = keys.get(str(labels.index(r["loss"])))
            if key:
                out[key] = comparison
    return out


def comparison_for(comparisons: dict[str, FairComparison], uid: str, canonical_key: str | None
                   ) -> FairComparison | None:
    """The evidence about one candidate: under its RUN/CANDIDATE label, else under its canonical key."""
    return comparisons.get(uid) or (comparisons.get(canonical_key) if canonical_key else None)
