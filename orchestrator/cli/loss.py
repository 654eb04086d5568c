"""`glo loss`: inspect and plot loss expressions (infix text or a built-in name).

Bad input exits with status 1 and a one-line message (click.ClickException), never a traceback.
"""

from __future__ import annotations

import json
import math
from typing import Any

import click

from worker.lossexpr import LossExprError, named_loss, resolve, to_infix
from worker.lossexpr.coefficients import kept_slots
from worker.lossexpr.numeric import binary_minimum
from worker.lossexpr.tree import Node

#: Points of y0 in (0, 1) per plotted curve.
PLOT_POINTS = 2000


def _tree(text: str) -> Node:
    try:
        if text.strip().isidentifier() and text.strip() not in ("x", "y"):
            return named_loss(text.strip())  # a bare word is a name: say which names exist
        return resolve(text)
    except LossExprError as exc:
        raise click.ClickException(f"{text!r}: {exc}") from None


def describe(tree: Node) -> dict[str, Any]:
    """The facts `glo loss show` reports, as JSON-ready values (exactly the documented keys)."""
    from worker.lossexpr.canonical import canonical_key
    from worker.lossexpr.onehot import is_trainable

    minimum = binary_minimum(tree)
    return {
        "infix": to_infix(tree),
        "canonical_key": canonical_key(tree),
        "valid": is_trainable(tree),  # the search's rule: depends on x and y on one-hot labels
        "nodes": tree.size(),
        "depth": tree.depth(),
        "coefficients": len(kept_slots(tree)),
        "binary_minimum": minimum if minimum is not None and math.isfinite(minimum) else None,
    }


@click.group()
def loss() -> None:
    """Inspect and plot loss expressions: infix text such as "log(y) - x / y", or ce, baikal, baikal_cma."""


@loss.command()
@click.argument("expr", metavar="EXPR|NAME")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def show(expr: str, as_json: bool) -> None:
    """Infix form, canonical key, validity, size, tunable coefficients and binary minimum."""
    info = describe(_tree(expr))
    if as_json:
        click.echo(json.dumps(info))
        return
    rows = dict(info)
    bm = rows["binary_minimum"]
    rows["binary_minimum"] = "none (not interior)" if bm is None else f"{bm:.6f}"
    rows["valid"] = "yes" if rows["valid"] else "no (must use both x and y)"
    width = max(len(k) for k in rows)
    for k, v in rows.items():
        click.echo(f"{k.replace('_', ' '):<{width}}  {v}")


@loss.command()
@click.argument("exprs", nargs=-1, required=True, metavar="EXPR|NAME...")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="PNG file to write.")
def plot(exprs: tuple[str, ...], out: str) -> None:
    """The paper's Fig. 6: two-class loss at x0 = 1 over y0 in (0, 1), one curve per loss."""
    trees = [(text.strip(), _tree(text)) for text in exprs]
    try:
        plot_losses(trees, out, points=PLOT_POINTS)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot write {out!r}: {exc}") from None
    click.echo(f"wrote {out}")


def _ylim(curves: list) -> tuple[float, float]:
    """Limits from the curves' central part (y0 in [0.1, 0.95]), so ±inf tails stay off-scale."""
    import numpy as np

    lo, hi = math.inf, -math.inf
    for ys, vals in curves:
        mid = (ys >= 0.1) & (ys <= 0.95) & np.isfinite(vals)
        if mid.any():
            lo, hi = min(lo, float(vals[mid].min())), max(hi, float(vals[mid].max()))
    if not math.isfinite(lo):
        return -1.0, 1.0
    span = max(hi - lo, 1e-6)
    return lo - 0.15 * span, hi + 0.15 * span


def plot_losses(trees: list[tuple[str, Node]], out: str, points: int = PLOT_POINTS) -> None:
    """Draw Fig. 6 for `trees` ((label, tree) pairs) into the PNG `out`, minima marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from worker.lossexpr.numeric import binary_loss

    ys = np.linspace(0.0, 1.0, points + 2)[1:-1]
    curves = [(ys, binary_loss(tree, ys)) for _, tree in trees]
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    try:
        for (label, tree), (_, vals) in zip(trees, curves):
            (line,) = ax.plot(ys, np.where(np.isfinite(vals), vals, np.nan), label=label)
            m = binary_minimum(tree)
            if m is not None:
                mv = float(binary_loss(tree, m))
                ax.plot([m], [mv], "o", color=line.get_color())
                ax.annotate(f"{m:.3f}", (m, mv), textcoords="offset points", xytext=(4, -12),
                            color=line.get_color(), fontsize=8)
        ax.set_ylim(*_ylim(curves))
        ax.set_xlim(0.0, 1.0)
        ax.set_xlabel("predicted probability of the true class, y0")
        ax.set_ylabel("loss (two classes, x0 = 1)")
        ax.set_title("Binary loss curves (GLO Fig. 6)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out, format="png")
    finally:
        plt.close(fig)
