"""The evidence layer: statistics, figures and a markdown report from stored results.

`stats` (mean ± sd, Welch's and the paired t-test against ce), `figures` (the paper's Figs. 3, 4, 5 and 7
and a search's progress, PNG + CSV), `report` (`glo report`).  Nothing here imports matplotlib or scipy at
import time.

An evaluation run's results, the input of `stats` and of the evaluation figures (plain data)::

    {"run_id": str, "task": one of worker.spec.TASKS, "steps": int, "data_label": str,
     "losses": [{"label": "ce", "infix": "x * log(y)"}, ...],   # in order; "ce" is the baseline when present
     "seeds": [0, 1, 2, ...], "fractions": [1.0] or [0.05, 0.1, ...],
     "records": [{"loss": "ce", "seed": 0, "fraction": 1.0,
                  "status": "ok" | "nonfinite" | "collapsed" | "failed" | "pending",
                  "test_accuracy": float | None, "validation_accuracy": float | None,
                  "test_curve": [[step, test_accuracy], ...] | None,
                  "probability_histogram": {"edges": [21 floats 0..1], "counts": [20 ints]} | None,
                  "candidate_id": str}, ...]}

Only records with status "ok" and a finite test accuracy count; repeats pair by seed.
"""
