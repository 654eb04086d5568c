"""An evaluation's run config from what `glo evaluate`, `glo condor job` and `glo experiment` are given:
the LOSS arguments resolved to trees, the task and backend from a config file (or a discovery run's
config), and the [evaluate] grid.  Library code for the three commands; no click here, errors are
`orchestrator.errors` ones, which the CLI prints as one line."""

from __future__ import annotations

from typing import Any

from orchestrator.errors import LossArgumentError
from orchestrator.search.config import CANDIDATE_REF
from worker.lossexpr import LossExprError, resolve
from worker.lossexpr.tree import Node
from worker.spec import CandidateSpec


def candidate_specs(items: tuple[str, ...], db_path: str | None) -> list[CandidateSpec]:
    """LOSS arguments -> candidates: a built-in name, infix text, or RUN/CANDIDATE from the database
    (LossArgumentError naming the argument otherwise)."""
    out: list[CandidateSpec] = []
    for i, text in enumerate(items):
        lookup_error = ""
        if CANDIDATE_REF.match(text.strip()):
            from db.errors import StorageError
            from db.queries import candidate as get
            from db.session import open_db

            try:
                row, _ev, _jobs = get(open_db(db_path), text.strip())
                out.append(CandidateSpec(row.uid.replace("/", ":"), Node.from_json(row.tree)))
                continue
            except StorageError as exc:  # not a stored candidate: maybe infix such as x/y
                lookup_error = str(exc)
        try:
            tree = resolve(text)
        except LossExprError as exc:
            raise LossArgumentError(f"{text!r}: {lookup_error or exc}") from None
        out.append(CandidateSpec(text.strip() if text.strip().isidentifier() else f"loss-{i}", tree))
    ids = [c.id for c in out]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise LossArgumentError(f"the same loss is given twice: {', '.join(dup)}")
    return out


def evaluation_config(losses: tuple[str, ...], *, config_path: str | None, task: str | None, steps: int | None,
                      seeds: list[int], fractions: tuple[float, ...], curve_every: int | None,
                      overrides: tuple[str, ...], db_path: str | None, name: str = "", base: Any = None,
                      labels: list[str] | None = None, learning_rates: list[float] | None = None,
                      selection_seeds: list[int] | None = None) -> Any:
    """The run config of an evaluation: the file's [task] and [backend] (or the paper's task settings with
    class_reduction "sum", as `glo condor job` uses), test accuracy on, the grid in [evaluate].  With
    `base` (a discovery run's GloConfig, from `glo experiment`), its settings, trained on the whole
    training set (a discovery's train_subset is a speed trick that an evaluation does not take over).
    `learning_rates`: a grid on which each loss gets its own rate, chosen by `selection_seeds`' validation
    accuracy (orchestrator.search.evaluation)."""
    from orchestrator.config import apply_overrides, from_dict, read_config_data, run_settings

    data: dict[str, Any] = {}
    if base is not None:
        data = base.to_dict()
        data["task"]["train_subset"] = None
        config_path = config_path or "(the experiment's config)"
    elif config_path:  # a shipped config's [experiment] is for `glo experiment`: set aside here, as by `glo run`
        data = run_settings(read_config_data(config_path))
    data.pop("evaluate", None)
    # An evaluation trains fixed losses at one budget: the search's rungs are not its business, and a rung at
    # the evaluation's own horizon (the shipped configs' top rung) would fail "rungs above task.steps".
    if isinstance(data.get("search"), dict):
        data["search"].pop("fidelity", None)
    t = data.setdefault("task", {})
    if task is not None:
        if config_path and t.get("name", "mnist") != task:  # another task: its paper settings, not the file's
            t = data["task"] = {"class_reduction": t.get("class_reduction", "sum")}
        t["name"] = task
    if not config_path:
        t.setdefault("class_reduction", "sum")
    if steps is not None:
        t["steps"] = steps
    t["test_accuracy"] = True
    if curve_every is not None:
        t["curve_interval"] = curve_every
    data.setdefault("run", {})["name"] = name or data.get("run", {}).get("name") or "evaluate"
    specs = candidate_specs(losses, db_path)
    names = labels or [text.strip() for text in losses]
    data["evaluate"] = {"losses": [{"label": label, "tree": spec.tree.to_json()} for label, spec in zip(names, specs)],
                        "seeds": seeds, "fractions": list(fractions or (1.0,)), "curve_every": curve_every}
    if learning_rates:
        data["evaluate"]["learning_rates"] = list(learning_rates)
    if selection_seeds:  # without a grid: an error the config names
        data["evaluate"]["selection_seeds"] = list(selection_seeds)
    return from_dict(apply_overrides(data, overrides))
