"""What the dashboard computes from stored data: loss-shape curves (Fig. 6), short formulas, Keras code, and
the statistics of repeated evaluations (mean ± sd, Welch's t-test).  Pure functions, no I/O."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

#: Points of y0 in (0, 1) per loss-shape curve sent to the page (a sparkline or the candidate's plot).
SHAPE_POINTS = 97


def _tree(tree_json: Any):  # type: ignore[no-untyped-def]
    from worker.lossexpr import Node

    return Node.from_json(tree_json)


@lru_cache(maxsize=4096)
def _shape_cached(key: str) -> dict[str, Any] | None:
    import json

    import numpy as np

    from worker.lossexpr.numeric import binary_loss, binary_minimum

    try:
        tree = _tree(json.loads(key))
    except Exception:  # noqa: BLE001 - a tree this code cannot read is shown without a plot
        return None
    ys = np.linspace(0.0, 1.0, SHAPE_POINTS + 2)[1:-1]
    vals = binary_loss(tree, ys)
    m = binary_minimum(tree)
    mv = float(binary_loss(tree, m)) if m is not None else None
    finite = [float(v) if math.isfinite(v) else None for v in vals]
    mid = [v for y, v in zip(ys, finite) if v is not None and 0.1 <= y <= 0.95]
    if mid:
        lo, hi = min(mid), max(mid)
        span = max(hi - lo, 1e-6)
        ylim = [lo - 0.15 * span, hi + 0.15 * span]
    else:
        ylim = [-1.0, 1.0]
    return {"y0": [round(float(y), 6) for y in ys], "loss": [None if v is None else round(v, 6) for v in finite],
            "minimum": None if m is None or mv is None or not math.isfinite(mv) else [round(m, 6), round(mv, 6)],
            "ylim": [round(ylim[0], 6), round(ylim[1], 6)]}


def loss_shape(tree_json: Any) -> dict[str, Any] | None:
    """The paper's Fig. 6 curve of a tree: two-class loss at x0 = 1 over y0 in (0, 1), its interior minimum,
    and y limits taken from the curve's central part (y0 in [0.1, 0.95]) so that infinite tails stay off-scale.
    Non-finite values are null."""
    import json

    if tree_json is None:
        return None
    return _shape_cached(json.dumps(tree_json, sort_keys=True))


def short_formula(tree_json: Any, infix: str) -> str:
    """The infix with coefficients shown to 4 significant digits (CMA-ES writes 16); the full text stays in
    `infix`."""
    if tree_json is None:
        return infix
    try:
        from worker.lossexpr import to_infix

        tree = _tree(tree_json)
        if not tree.has_coefficients():
            return infix
        return to_infix(tree.with_coefficients([float(f"{c:.4g}") for c in tree.coefficients()]))
    except Exception:  # noqa: BLE001 - fall back to the stored text
        return infix


def keras_code(tree_json: Any, *, uid: str, fitness: float | None, task: str, task_config: dict[str, Any]) -> str | None:
    """What `glo export RUN/CANDIDATE --format keras` prints for this candidate."""
    from orchestrator.export import export

    try:
        eps = float(task_config.get("epsilon", 1e-7))
        fit = "-" if fitness is None else f"{fitness:.4f}"
        return export(_tree(tree_json), "keras", name="glo_loss", epsilon=eps,
                      class_reduction=task_config.get("class_reduction", "mean"),
                      comment=f"candidate {uid}, fitness {fit} on {task}")
    except Exception:  # noqa: BLE001 - an unreadable tree has no code; the page says so
        return None


def tree_view(tree_json: Any) -> dict[str, Any] | None:
    """The tree as nested {label, coef, children} for the page to draw (labels are operator names or leaves)."""
    if tree_json is None:
        return None
    try:
        tree = _tree(tree_json)
    except Exception:  # noqa: BLE001
        return None

    def walk(node) -> dict[str, Any]:  # type: ignore[no-untyped-def]
        label = str(node.value) if node.op == "const" else node.op
        return {"label": label, "coef": None if node.coef == 1.0 else node.coef,
                "children": [walk(c) for c in node.children]}

    return walk(tree)


# -- statistics of repeated evaluations ---------------------------------------------------------------------------
def mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return None, None
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return m, None
    return m, math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-14:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbt) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbt) * _betacf(b, a, 1.0 - x) / b


def welch(a: list[float], b: list[float]) -> dict[str, float] | None:
    """Welch's two-sided t-test of mean(a) = mean(b): {t, df, p}; None with fewer than 2 values a side."""
    a = [v for v in a if v is not None and math.isfinite(v)]
    b = [v for v in b if v is not None and math.isfinite(v)]
    if len(a) < 2 or len(b) < 2:
        return None
    ma, sa = mean_sd(a)
    mb, sb = mean_sd(b)
    assert ma is not None and mb is not None and sa is not None and sb is not None
    va, vb = sa * sa / len(a), sb * sb / len(b)
    if va + vb == 0.0:
        return {"t": 0.0 if ma == mb else math.copysign(math.inf, ma - mb), "df": float(len(a) + len(b) - 2),
                "p": 1.0 if ma == mb else 0.0}
    t = (ma - mb) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va * va / (len(a) - 1) + vb * vb / (len(b) - 1))
    p = betainc(df / 2.0, 0.5, df / (df + t * t))
    return {"t": t, "df": df, "p": min(1.0, max(0.0, p))}


@lru_cache(maxsize=1)
def baseline_key() -> str | None:
    """Canonical key of cross-entropy (`ce`, x * log(y)): the baseline the p-values compare against."""
    try:
        from worker.lossexpr import named_loss
        from worker.lossexpr.canonical import canonical_key

        return canonical_key(named_loss("ce"))
    except Exception:  # noqa: BLE001 - no baseline, no p-values
        return None


def summarize_groups(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Adds to each group of repeated evaluations: mean ± sd of validation and test accuracy, and Welch's
    p-value against cross-entropy's group of the same task and budget (when that group exists)."""
    base = baseline_key()
    by_setting: dict[tuple[str, str], dict[str, Any]] = {}
    for g in groups:
        g["validation"] = dict(zip(("mean", "sd"), mean_sd([e["validation_accuracy"] if e["validation_accuracy"]
                                                            is not None else e["fitness"] for e in g["evaluations"]])))
        g["test"] = dict(zip(("mean", "sd"), mean_sd([e["test_accuracy"] for e in g["evaluations"]
                                                     if e["test_accuracy"] is not None])))
        g["n_test"] = sum(1 for e in g["evaluations"] if e["test_accuracy"] is not None)
        g["curves"] = sum(1 for e in g["evaluations"] if e["metrics"].get("curve"))
        g["is_baseline"] = base is not None and g["canonical_key"] == base
        if g["is_baseline"]:
            by_setting[(g["task"], _budget_key(g["budget"]))] = g
    for g in groups:
        ref = by_setting.get((g["task"], _budget_key(g["budget"])))
        g["p_validation"] = g["p_test"] = None
        if ref is None or g is ref:
            continue
        pv = welch(_vals(g, "validation_accuracy"), _vals(ref, "validation_accuracy"))
        pt = welch(_vals(g, "test_accuracy"), _vals(ref, "test_accuracy"))
        g["p_validation"] = None if pv is None else pv["p"]
        g["p_test"] = None if pt is None else pt["p"]
    return groups


def _budget_key(budget: dict[str, Any]) -> str:
    import json

    return json.dumps(budget, sort_keys=True)


def _vals(group: dict[str, Any], field: str) -> list[float]:
    out = []
    for e in group["evaluations"]:
        v = e[field]
        if v is None and field == "validation_accuracy":
            v = e["fitness"]
        if v is not None:
            out.append(v)
    return out
