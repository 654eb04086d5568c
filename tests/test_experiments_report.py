"""`glo report` and orchestrator.experiments.report: the markdown page of a search run (with the evaluations of
its losses) and of an evaluation run, every link pointing at a file written; one-line errors."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import db.queries
from orchestrator.cli import main
from orchestrator.experiments.report import build_report, find_evaluations_of, run_kind, write_report
from orchestrator.experiments.stats import summarize
from tests.orch_helpers import glo, write_config
from tests.test_experiments_figures import PNG, make_search_db, synthetic_results

LINK = re.compile(r"\]\(([^)]+)\)")


def links_exist(report: Path) -> list[str]:
    targets = LINK.findall(report.read_text())
    for target in targets:
        assert (report.parent / target).is_file(), f"{report.name} links to missing {target}"
    return targets


def eval_of_search(run_id: str = "ev1") -> dict:
    return synthetic_results(run_id=run_id, fractions=(1.0,), losses=(("ce", "-(x * log(y))"),
                                                                      ("srch/c0-1-0", "1.123456789 * log(y) * x")))


def add_evaluation_run(database, run_id: str, labels: list[str]) -> None:  # type: ignore[no-untyped-def]
    """An evaluation run as `glo evaluate` stores it: a runs row whose config has an [evaluate] section."""
    from db import models

    now = time.time()
    config = {"task": {"name": "mnist", "steps": 1000},
              "evaluate": {"losses": [{"label": label, "tree": {}} for label in labels], "seeds": [0, 1, 2],
                           "fractions": [1.0]}}
    with database.session(write=True) as s:
        s.add(models.Run(id=run_id, name="", config_json=json.dumps(config), seed=0, task="mnist", backend="local",
                         phase="done", generation=0, status="finished", message="", created_at=now, updated_at=now,
                         started_at=now, finished_at=now))


def test_search_report(tmp_path: Path) -> None:
    database = make_search_db(tmp_path / "s.db")
    out = tmp_path / "report"
    path = write_report(database, "srch", out, evaluations=[])
    assert path == out / "report.md"
    text = path.read_text()
    assert text.startswith("# GLO search `srch` — synthetic")
    for heading in ("## Best losses", "## Progress", "## Evaluations of this search's losses"):
        assert f"\n{heading}\n" in text
    assert "| 1 | srch/c0-1-0 | cma | 1 | 0.7400 | `1.123 * log(y) * x` |" in text  # coefficients rounded
    assert "| 2 | srch/c0-0-1 | cma | 0 | 0.7200 |" in text
    assert "15 trained, 2 cache hits, 6 resolved" in text and "1 failed" in text
    assert "population 6, 3 generations, 1 elite |" in text
    assert "validation accuracy after 100 training steps" in text
    targets = links_exist(path)
    assert {"search_fitness.png", "search_cma.png", "search_sources.png", "search_sources.csv"} <= set(targets)
    assert "*None found" in text
    database.dispose()


def test_search_report_includes_its_evaluations(tmp_path: Path) -> None:
    database = make_search_db(tmp_path / "s.db")
    info = build_report(database, "srch", tmp_path / "r", evaluations=[eval_of_search()])
    text = Path(info["report"]).read_text()
    assert "### Evaluation `ev1`" in text and "#### Test accuracy" in text and "#### Figures" in text
    assert "- `srch/c0-1-0`: its mean test accuracy" in text and "significant at the 5% level" in text
    assert "eval-ev1/fig3_curves.png" in links_exist(Path(info["report"]))
    assert "*Fig. 4: test accuracy against the training-set fraction: results at a single" in text
    assert info["evaluations"][0]["run_id"] == "ev1"
    assert info["evaluations"][0]["statistics"] == summarize(eval_of_search())
    assert all(Path(f).is_file() for f in info["files"])
    database.dispose()


def test_evaluation_runs_of_a_search_are_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    database = make_search_db(tmp_path / "s.db")
    add_evaluation_run(database, "ev-mine", ["ce", "srch/c0-1-0"])
    add_evaluation_run(database, "ev-other", ["ce", "baikal"])
    asked: list[str] = []

    def evaluation_results(_db, run_id: str) -> dict:  # type: ignore[no-untyped-def]
        asked.append(run_id)
        return eval_of_search(run_id)

    monkeypatch.setattr(db.queries, "evaluation_results", evaluation_results, raising=False)
    assert run_kind(database, "ev-mine") == "evaluation" and run_kind(database, "srch") == "search"
    assert [r["run_id"] for r in find_evaluations_of(database, "srch")] == ["ev-mine"]
    assert asked == ["ev-mine"]  # the other evaluation run was not even read
    text = write_report(database, "srch", tmp_path / "r").read_text()
    assert "### Evaluation `ev-mine`" in text and "ev-other" not in text
    database.dispose()


def test_evaluation_report_from_results(tmp_path: Path) -> None:
    res = synthetic_results(run_id="ev2")
    info = build_report(None, None, tmp_path, results=res)
    assert info["kind"] == "evaluation" and info["run_id"] == "ev2"
    assert info["statistics"] == summarize(res)
    text = (tmp_path / "report.md").read_text()
    assert text.startswith("# GLO evaluation `ev2`")
    assert "| training set |" in text and "| `baikal_cma` | 100% | 3 |" in text
    assert "## Test accuracy" in text and "## Figures" in text
    assert "1 nonfinite" in text and "do not (non-finite loss, collapsed training, failed, or still pending)" in text
    assert "- `baikal` with 10% of the training set: its mean test accuracy" in text
    assert "- `baikal_cma` with the whole training set: its mean test accuracy" in text
    targets = links_exist(tmp_path / "report.md")
    assert {"fig3_curves.png", "fig4_fractions.png", "fig7_histogram.png",
            "fig4_fractions.csv"} <= set(targets)
    assert json.loads((tmp_path / "statistics.json").read_text()) == json.loads(json.dumps(summarize(res)))
    assert (tmp_path / "statistics.csv").read_text().startswith("loss,fraction,n,mean,std,welch_t")
    assert (tmp_path / "fig7_histogram.png").read_bytes()[:8] == PNG


def test_cli_report_of_a_search(tmp_path: Path) -> None:
    make_search_db(tmp_path / "s.db").dispose()
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["report", "srch", "--out", str(out), "--db", str(tmp_path / "s.db")])
    assert r.exit_code == 0, r.output
    assert r.output.strip() == str(out / "report.md")
    r = CliRunner().invoke(main, ["report", "--out", str(out), "--db", str(tmp_path / "s.db"), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["run_id"] == "srch" and info["kind"] == "search" and info["statistics"] is None
    assert info["best"][0]["candidate_id"] == "srch/c0-1-0"
    assert len(info["files"]) == 7 and all(Path(f).is_file() for f in info["files"])


def test_cli_report_of_an_evaluation_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    database = make_search_db(tmp_path / "s.db")
    add_evaluation_run(database, "ev3", ["ce", "baikal", "baikal_cma"])
    database.dispose()
    monkeypatch.setattr(db.queries, "evaluation_results", lambda _db, rid: synthetic_results(run_id=rid),
                        raising=False)
    r = CliRunner().invoke(main, ["report", "ev3", "--out", str(tmp_path / "o"), "--db", str(tmp_path / "s.db"),
                                  "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["kind"] == "evaluation" and {row["loss"] for row in info["statistics"]} == {"ce", "baikal",
                                                                                           "baikal_cma"}
    assert any(f.endswith("fig4_fractions.png") for f in info["files"])


@pytest.mark.parametrize("args", [
    ["report", "nope", "--out", "o"],
    ["report", "srch", "--out", "o", "--db", "missing.db"],
    ["report", "srch", "--out", "s.db/sub"],  # --out cannot be created
])
def test_cli_errors_are_one_line(args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_search_db(tmp_path / "s.db").dispose()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GLO_DB", raising=False)
    r = CliRunner().invoke(main, [*args, *([] if "--db" in args else ["--db", "s.db"])])
    assert r.exit_code != 0
    assert r.output.startswith("Error:") and len(r.output.strip().splitlines()) == 1, r.output


@pytest.mark.slow
def test_reports_of_a_real_search_and_its_evaluation_end_to_end(tmp_path: Path) -> None:
    """`glo run` and `glo evaluate` with the fake worker, then `glo report` in fresh processes: the real tables,
    the search's history, and the evaluation found from the search's report through db.queries."""
    cfg = write_config(tmp_path / "c.toml", population=8, generations=2, cma_iterations=2)
    dbp = str(tmp_path / "r.db")
    r = glo("run", str(cfg), "--db", dbp, "--run-id", "real")
    assert r.returncode == 0, r.stderr
    evaluated = "evaluate" in main.commands
    if evaluated:
        r = glo("evaluate", "ce", "real/g1-0", "--repeats", "2", "--curve-every", "5", "--train-fraction", "0.5",
                "--train-fraction", "1.0", "--config", str(cfg), "--db", dbp, "--run-id", "ev", "--no-progress")
        assert r.returncode == 0, r.stderr
    r = glo("report", "real", "--out", str(tmp_path / "rep"), "--db", dbp, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    names = {Path(f).relative_to(tmp_path / "rep").as_posix() for f in info["files"]}
    assert {"report.md", "search_fitness.png", "search_cma.png", "search_sources.png"} <= names
    links_exist(Path(info["report"]))
    history = json.loads(db_summary(tmp_path / "r.db"))["history"]
    fitness = (tmp_path / "rep" / "search_fitness.csv").read_text().splitlines()
    assert len(fitness) == 1 + len(history)
    for line, h in zip(fitness[1:], history):  # the best per generation is the one the search recorded
        assert float(line.split(",")[3]) == pytest.approx(h["best"])
    if not evaluated:
        return
    assert [e["run_id"] for e in info["evaluations"]] == ["ev"]
    assert {"eval-ev/fig3_curves.png", "eval-ev/fig4_fractions.png",
            "eval-ev/fig7_histogram.png"} <= names
    r = glo("report", "ev", "--out", str(tmp_path / "ev"), "--db", dbp, "--json")
    assert r.returncode == 0, r.stderr
    ev = json.loads(r.stdout)
    assert ev["kind"] == "evaluation" and [(x["loss"], x["fraction"], x["n"]) for x in ev["statistics"]] == [
        ("ce", 0.5, 2), ("real/g1-0", 0.5, 2), ("ce", 1.0, 2), ("real/g1-0", 1.0, 2)]
    links_exist(Path(ev["report"]))


def db_summary(path: Path) -> str:
    import sqlite3

    con = sqlite3.connect(path)
    try:
        return con.execute("select summary_json from runs where id = 'real'").fetchone()[0]
    finally:
        con.close()


def _store_trainings(database, run_id: str, steps: int) -> None:  # type: ignore[no-untyped-def]
    """Give each trained candidate of a synthetic run the evaluation row a real training leaves (its steps)."""
    from sqlalchemy import select

    from db import models

    with database.session(write=True) as s:
        for i, c in enumerate(s.execute(select(models.Candidate).where(models.Candidate.run_id == run_id,
                                                                     models.Candidate.status == "evaluated")
                                        .order_by(models.Candidate.seq)).scalars()):
            ev = models.Evaluation(eval_key=f"{run_id}-{i}", canonical_key=c.canonical_key, coefficients_json="[]",
                                   task="mnist", budget_json="{}", steps=steps, seed_policy="fixed:0", status="ok",
                                   fitness=c.fitness, run_id=run_id, candidate_uid=c.uid, created_at=0.0)
            s.add(ev)
            s.flush()
            c.evaluation_id = ev.id
            c.resolved_at = float(i)


def test_report_sets_searches_side_by_side_at_an_equal_budget(tmp_path: Path) -> None:
    make_search_db(tmp_path / "s.db", "a").dispose()
    database = make_search_db(tmp_path / "s.db", "b", finished=False)  # fewer trainings: the smaller budget
    _store_trainings(database, "a", 100)
    _store_trainings(database, "b", 100)
    add_evaluation_run(database, "ev", ["ce"])
    info = build_report(database, "a", tmp_path / "r", evaluations=[], compare=["b"])
    text = (tmp_path / "r" / "report.md").read_text()
    assert "\n## Compared with other searches\n" in text and "search_compare.png" in links_exist(tmp_path / "r" /
                                                                                                "report.md")
    a, b = info["compared"]
    assert (a["run_id"], b["run_id"]) == ("a", "b") and a["init"] == b["init"] == "valid"
    assert b["steps_spent"] < a["steps_spent"] and b["trainings"] < a["trainings"]
    # at b's budget, a is judged on what it had found by then, not at its end
    assert a["best_at_equal_budget"] <= a["best_at_end"] and b["best_at_equal_budget"] == b["best_at_end"]
    assert f"| {b['steps_spent']:,} |" in text
    runs = {line.split(",")[0] for line in (tmp_path / "r" / "search_compare.csv").read_text().splitlines()[1:]}
    assert runs == {"a", "b"}
    with pytest.raises(Exception, match="--compare ev: not a search run"):
        build_report(database, "a", tmp_path / "r2", evaluations=[], compare=["ev"])
    with pytest.raises(Exception, match="no run 'nope'"):
        build_report(database, "a", tmp_path / "r2", evaluations=[], compare=["nope"])
    database.dispose()
    r = CliRunner().invoke(main, ["report", "a", "--compare", "b", "--out", str(tmp_path / "r3"), "--db",
                                  str(tmp_path / "s.db"), "--json"])
    assert r.exit_code == 0, r.output
    assert [row["run_id"] for row in json.loads(r.output)["compared"]] == ["a", "b"]


def test_report_compares_with_a_search_in_another_database(tmp_path: Path) -> None:
    """--compare-db: the side-by-side's other search ran in its own database (its own fitness cache, so it paid
    for every training itself); without it the run is looked for in --db and not found."""
    for path, rid, finished in (("a.db", "a", True), ("o.db", "b", False)):
        database = make_search_db(tmp_path / path, rid, finished=finished)
        _store_trainings(database, rid, 100)
        database.dispose()
    args = ["report", "a", "--compare", "b", "--db", str(tmp_path / "a.db"), "--json"]
    r = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "r"), "--compare-db", str(tmp_path / "o.db")])
    assert r.exit_code == 0, r.output
    a, b = json.loads(r.output)["compared"]
    assert (a["run_id"], b["run_id"]) == ("a", "b") and 0 < b["steps_spent"] < a["steps_spent"]
    r = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "r2")])
    assert r.exit_code != 0 and "no run 'b'" in r.output
    r = CliRunner().invoke(main, ["report", "a", "--compare-db", str(tmp_path / "o.db"), "--out", str(tmp_path / "r3"),
                                  "--db", str(tmp_path / "a.db")])
    assert r.exit_code != 0 and "give --compare RUN too" in r.output


def test_report_keeps_two_searches_of_one_name_from_different_databases(tmp_path: Path) -> None:
    """The usual side-by-side: the same config run twice (say init "paper" and "valid"), each in its own
    database, so both runs are called "a"; each keeps its own row, numbers and curve."""
    for path, finished in (("a.db", True), ("o.db", False)):
        database = make_search_db(tmp_path / path, "a", finished=finished)
        _store_trainings(database, "a", 100)
        database.dispose()
    r = CliRunner().invoke(main, ["report", "a", "--compare", "a", "--db", str(tmp_path / "a.db"), "--compare-db",
                                  str(tmp_path / "o.db"), "--out", str(tmp_path / "r"), "--json"])
    assert r.exit_code == 0, r.output
    mine, other = json.loads(r.output)["compared"]
    assert mine["run_id"] == other["run_id"] == "a" and mine["label"] != other["label"]
    assert 0 < other["steps_spent"] < mine["steps_spent"] and other["trainings"] < mine["trainings"]
    curves = {line.split(",")[0] for line in (tmp_path / "r" / "search_compare.csv").read_text().splitlines()[1:]}
    assert curves == {mine["label"], other["label"]}
    text = (tmp_path / "r" / "report.md").read_text()
    assert f"| `{mine['label']}` |" in text and f"| `{other['label']}` |" in text
