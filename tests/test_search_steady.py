"""Steady-state evolution (issue 21): no generation barrier, a bounded number in flight, exact resume given
the order of results, and the generational mode unchanged (a golden written before the mode existed)."""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

import pytest

from orchestrator.search import CMAConfig, GAConfig, SearchConfig, SteadyStateSearch, new_search, search_from_state
from orchestrator.search.config import ConfigError, FidelityConfig
from orchestrator.search.steady import parse_steady_id
from tests import search_golden
from tests.orch_helpers import glo, glo_env, glo_popen, scalar, stored_search_state, write_config
from worker.lossexpr import to_infix
from worker.lossexpr.onehot import is_trainable

GOLDEN = Path(__file__).parent / "golden" / "search" / "generational.json"


def steady(seed: int = 3, *, population: int = 10, max_trainings: int = 40, in_flight: int = 6, fidelity=None,
           **ga) -> SearchConfig:
    return SearchConfig(seed=seed, ga=GAConfig(population_size=population, elites=2, mode="steady-state",
                                               max_trainings=max_trainings, max_in_flight=in_flight, **ga),
                        cma=CMAConfig(top_k=1, iterations=2), fidelity=fidelity)


class Driver:
    """Keeps what the search handed out in flight and tells one at a time, chosen by a seeded rng: a fixed
    order of results for a given seed (what a pool of jobs of random lengths does)."""

    def __init__(self, search, seed: int) -> None:
        self.search, self.rng, self.inflight = search, random.Random(seed), []
        self.max_discovery_in_flight = 0
        self.tells = 0
        self.last: tuple[str, float] | None = None  # the (id, fitness) told last

    def step(self) -> None:
        self.inflight.extend(self.search.ask())
        n = sum(1 for c in self.inflight if c.phase == "discovery")
        self.max_discovery_in_flight = max(self.max_discovery_in_flight, n)
        if self.inflight:
            c = self.inflight.pop(self.rng.randrange(len(self.inflight)))
            self.last = (c.id, search_golden.fitness(c.tree))
            self.search.tell(*self.last)
            self.tells += 1

    def run(self) -> None:
        while not self.search.finished:
            self.step()


def final(search) -> dict:
    return {"population": [(c.id, to_infix(c.tree), f) for c, f in search.population()],
            "best": (search.best()[0].id, search.best()[1]), "top": [(c.id, f) for c, f in search.top_trees()],
            "state": search.export_state()}


def test_the_generational_search_reproduces_its_golden():
    assert json.loads(json.dumps(search_golden.golden())) == json.loads(GOLDEN.read_text())


@pytest.mark.parametrize("in_flight", [1, 3, 8, 25])
@pytest.mark.parametrize("fid", [None, FidelityConfig(steps=(300, 900), promote_fraction=0.3, seeds=2)])
def test_never_more_than_max_in_flight_outstanding(in_flight: int, fid):
    d = Driver(new_search(steady(in_flight=in_flight, fidelity=fid), key_fn=to_infix), seed=in_flight)
    while not d.search.finished:
        d.step()
        assert len(d.search.outstanding()) <= in_flight or d.search.phase != "discovery"
    assert isinstance(d.search, SteadyStateSearch)
    assert d.max_discovery_in_flight == in_flight  # and the slots are used: a pool larger than the population
    st = d.search.stats()  # (25 > 10) is filled once two results are in
    assert st["trainings"] == 40 and st["mode"] == "steady-state" and st["phase"] == "done"


@pytest.mark.parametrize("in_flight", [6, 16])  # 16 > the population of 10: further initial trees in the state
@pytest.mark.parametrize("fid", [None, FidelityConfig(steps=(300,), promote_fraction=0.25, seeds=2)])
@pytest.mark.parametrize("cut", [0, 7, 23, 39])
def test_resume_at_any_point_gives_the_uninterrupted_run_given_the_same_order_of_results(cut: int, fid,
                                                                                        in_flight: int):
    cfg = steady(max_trainings=36, fidelity=fid, in_flight=in_flight)
    ref = Driver(new_search(cfg, key_fn=to_infix), seed=11)
    ref.run()
    d = Driver(new_search(cfg, key_fn=to_infix), seed=11)
    while d.tells < cut:
        d.step()
    # a kill -9 here: only the exported state survives (the driver's in-flight list is the pool's jobs)
    d.search = search_from_state(json.loads(json.dumps(d.search.export_state())), key_fn=to_infix)
    d.run()
    assert final(d.search) == final(ref.search)
    assert d.search.export_state()["steady"]["tells"] == ref.search.export_state()["steady"]["tells"]


def test_a_pool_larger_than_the_population_is_filled_at_once_with_further_initial_trees():
    """max_in_flight 25 > population 10: the first ask fills all 25 slots; the first 10 are generation 0
    exactly as with max_in_flight 10, the other 15 initial trees of canonical forms not handed out yet."""
    small = new_search(steady(in_flight=10), key_fn=to_infix).ask()
    s = new_search(steady(in_flight=25), key_fn=to_infix)
    first = s.ask()
    assert len(first) == 25 and len(s.outstanding()) == 25
    assert [(c.id, to_infix(c.tree), c.origin) for c in first[:10]] == [(c.id, to_infix(c.tree), c.origin)
                                                                        for c in small]
    assert [c.id for c in first[10:]] == [f"s{n}" for n in range(10, 25)]
    assert {c.origin for c in first[10:]} == {"init"} and not any(c.parents for c in first)
    assert all(is_trainable(c.tree) for c in first)
    assert len({to_infix(c.tree) for c in first}) == 25  # distinct canonical keys (key_fn = to_infix here)
    st = s.stats()
    assert st["further_initial"] == 15 and st["trainings"] == 25
    assert s.ask() == []  # all slots full: nothing more until a result is in


def test_further_initial_trees_join_the_population_and_breeding_starts_at_two_members():
    s = new_search(steady(population=10, in_flight=25), key_fn=to_infix)
    first = s.ask()
    s.tell(first[0].id, search_golden.fitness(first[0].tree))
    (again,) = s.ask()  # one member told: still nothing to breed from, so one more initial tree
    assert again.id == "s25" and again.origin == "init" and not again.parents
    s.tell(first[20].id, search_golden.fitness(first[20].tree))  # a further initial tree's result: a member
    assert [c.id for c, _ in s.population()] == ["s0", "s20"]
    (child,) = s.ask()
    assert child.origin != "init" and set(child.parents) <= {"s0", "s20"}
    for c in first[1:20] + first[21:] + [again, child]:
        s.tell(c.id, search_golden.fitness(c.tree))
    members = [c.id for c, _ in s.population()]
    assert len(members) == 10 and "s26" in members and s.stats()["replaced"] == 27 - 10  # 27 told


def test_with_the_papers_init_an_untrainable_further_initial_tree_is_resolved_and_joins_nothing():
    """init = "paper": generation 0's untrainable members join (as the paper has them); a further
    initial tree that cannot train is resolved with fitness 0, spends no budget and joins nothing."""
    # two seed losses and one paper draw: at most one untrainable member joins at once, so no child is bred
    s = new_search(steady(population=3, in_flight=12, init="paper", seed_losses=("x * log(y)", "(x - y) * (x - y)")),
                   key_fn=to_infix)
    joined = [c.id for c, _ in s.population()]
    assert len(joined) <= 1
    out = s.ask()
    assert len(out) == 12 and all(is_trainable(c.tree) for c in out)
    assert len({to_infix(c.tree) for c in out}) == 12
    st = s.stats()
    resolved = {r.candidate.id for r in s.resolved_without_training()}
    assert st["further_initial_drawn"] > st["further_initial"] > 0 and st["trainings"] == 12
    assert len(resolved) == st["invalid"] + st.get("filtered", 0) > len(joined)
    assert [c.id for c, _ in s.population()] == joined  # untrainable further initial trees joined nothing


def test_another_order_of_results_is_another_search_and_both_are_complete():
    a, b = (Driver(new_search(steady(), key_fn=to_infix), seed=s) for s in (1, 2))
    a.run(), b.run()
    assert a.search.stats()["trainings"] == b.search.stats()["trainings"] == 40
    assert [c.id for c, _ in a.search.population()] != [c.id for c, _ in b.search.population()]


def test_reissue_outstanding_hands_lost_candidates_out_again_without_spending_budget():
    d = Driver(new_search(steady(), key_fn=to_infix), seed=4)
    for _ in range(15):
        d.step()
    lost = sorted(c.id for c in d.search.outstanding())
    assert lost
    s = search_from_state(json.loads(json.dumps(d.search.export_state())), key_fn=to_infix, reissue_outstanding=True)
    assert s.outstanding() == []
    again = s.ask()
    assert set(lost) <= {c.id for c in again}
    d2 = Driver(s, seed=4)
    d2.inflight = again
    d2.run()
    assert s.stats()["trainings"] == 40


def _replacements(replacement: str):
    """(members before, the arriving member, the member that left) for every replacement of a run told one
    result at a time."""
    s = new_search(steady(population=6, max_trainings=30, in_flight=1, replacement=replacement), key_fn=to_infix)
    d = Driver(s, seed=0)
    out = []
    while s.phase == "discovery":
        before = [(c.id, f) for c, f in s.population()]
        d.step()
        after = [(c.id, f) for c, f in s.population()]
        assert len(after) <= 6
        gone = [m for m in before + [d.last] if m not in after]
        if gone:  # the arriving member itself may be the one that leaves ("worst")
            (g,) = gone
            out.append((before, d.last, g))
    assert len(out) >= 15
    return out


def _elites(members):
    """The 2 best by fitness, ties to the older (lower s<n>)."""
    return {m for m, _ in sorted(members, key=lambda m: (-m[1], parse_steady_id(m[0])[0]))[:2]}


def test_oldest_replacement_removes_the_oldest_member_that_is_not_an_elite():
    for before, new, gone in _replacements("oldest"):
        elites = _elites(before + [new])
        assert gone == next(m for m in before if m[0] not in elites)


def test_worst_replacement_removes_the_worst_member_that_is_not_an_elite():
    for before, new, gone in _replacements("worst"):
        elites = _elites(before + [new])
        rest = [m for m in before + [new] if m[0] not in elites]
        assert gone[1] == min(f for _, f in rest)


def test_asha_promotion_and_ranking_by_rung():
    fid = FidelityConfig(steps=(300, 900), promote_fraction=0.25, seeds=1)
    s = new_search(steady(max_trainings=60, fidelity=fid), key_fn=to_infix)
    d = Driver(s, seed=5)
    d.run()
    asked = s.stats()["asked_per_rung"]
    assert asked[1] > 0 and asked[2] > 0
    best, _f = s.best()
    assert parse_steady_id(best.id)[1] == 2 or best.phase == "cma"
    assert s.task_overrides(best.id if best.phase != "cma" else "s0-r2") == {"steps": 900}
    assert s.task_overrides("s3") == {}
    assert s.top_trees()[0][0].id.startswith("s")


def test_steady_state_config_defaults_validation_and_storage():
    g = GAConfig(population_size=12, generations=5, mode="steady-state")
    assert (g.max_trainings, g.max_in_flight, g.replacement, g.selection, g.tournament_size) == (60, 12, "oldest",
                                                                                                  "tournament", 4)
    cfg = SearchConfig(ga=g)
    assert SearchConfig.from_dict(cfg.to_dict()) == cfg
    assert "mode" not in SearchConfig().to_dict()["ga"]  # a generational run stores exactly what it stored before
    assert "max_trainings" not in SearchConfig().to_dict()["ga"]
    for bad, field in [({"max_trainings": 10}, "ga.max_trainings"), ({"mode": "async"}, "ga.mode"),
                       ({"mode": "steady-state", "replacement": "random"}, "ga.replacement"),
                       ({"mode": "steady-state", "selection": "rank"}, "ga.selection"),
                       ({"mode": "steady-state", "tournament_size": 99}, "ga.tournament_size"),
                       ({"mode": "steady-state", "max_in_flight": 0}, "ga.max_in_flight")]:
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            GAConfig(population_size=12, **bad)


def test_roulette_selection_runs_too():
    d = Driver(new_search(steady(selection="roulette"), key_fn=to_infix), seed=2)
    d.run()
    assert d.search.stats()["trainings"] == 40


def test_paper_offspring_resolves_untrainable_children_without_spending_budget():
    d = Driver(new_search(steady(init="paper", max_trainings=20), key_fn=to_infix), seed=2)
    d.run()
    st = d.search.stats()
    assert st["trainings"] == 20 and st["invalid"] > 0
    assert len(d.search.resolved_without_training()) == st["invalid"] + st.get("filtered", 0)


# -- through the scheduler: glo run / status / kill -9 + resume ------------------------------------------

STEADY_TOML = """
[search.ga]
mode = "steady-state"
max_trainings = 24
max_in_flight = 4
"""


def _steady_config(path: Path) -> Path:
    cfg = write_config(path, population=8, generations=3, per_job=1, in_flight=1, cma_iterations=1)
    text = cfg.read_text().replace("[search.ga]\n", STEADY_TOML.strip() + "\n", 1)
    cfg.write_text(text)
    return cfg


def _population(db: Path, run: str) -> list:
    import sqlite3

    con = sqlite3.connect(db)
    summary = json.loads(con.execute("select summary_json from runs where id = ?", (run,)).fetchone()[0])
    con.close()
    return [(p["search_id"], p["infix"], p["fitness"]) for p in summary["population"]]


def test_glo_run_steady_state_locally_and_status_shows_trainings(tmp_path: Path):
    cfg = _steady_config(tmp_path / "s.toml")
    db = tmp_path / "s.db"
    r = glo("run", str(cfg), "--db", str(db), "--run-id", "ss")
    assert r.returncode == 0, r.stderr
    assert scalar(db, "select count(*) from candidates where phase = 'discovery' and status != 'resolved'") == 24
    st = glo("status", "ss", "--db", str(db), "--json")
    data = json.loads(st.stdout)
    assert data["steady"] == {"mode": "steady-state", "trainings": 24, "max_trainings": 24}
    assert data["expected_evaluations"] == 24 + 1 * 1 * 4
    text = glo("status", "ss", "--db", str(db)).stdout
    assert "24 of 24" in text and "steady-state" in text


def test_kill9_and_resume_give_the_uninterrupted_population(tmp_path: Path):
    """One job at a time (backend.max_in_flight = 1), so the results arrive in the same order in both runs."""
    cfg = _steady_config(tmp_path / "s.toml")
    ref_db = tmp_path / "ref.db"
    assert glo("run", str(cfg), "--db", str(ref_db), "--run-id", "ref").returncode == 0
    db = tmp_path / "k.db"
    env = glo_env(sleep=0.15)
    proc = glo_popen("run", str(cfg), "--db", str(db), "--run-id", "k", env=env)
    deadline = time.time() + 60
    while scalar(db, "select count(*) from evaluations") < 9 and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before the kill point"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # the last whole state is older than the kill: the resume replays the asks and tells logged after it
    assert scalar(db, "select count(*) from search_log where run_id = 'k'") > 0
    r = glo("run", "--resume", "k", "--db", str(db))
    assert r.returncode == 0, r.stderr
    assert _population(db, "k") == _population(ref_db, "ref")
    # a finished run's state is saved whole (its log emptied), and whole saves were few: not one per result
    assert scalar(db, "select count(*) from search_log") == scalar(ref_db, "select count(*) from search_log") == 0
    assert scalar(ref_db, "select seq from search_states where run_id = 'ref'") <= 3


def test_a_crash_after_refilling_but_before_the_told_marks_resumes_to_the_uninterrupted_population(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The scheduler submits the jobs a batch of results made room for before it writes those results' told
    marks (one state save fewer before a freed slot is refilled).  A crash in that window leaves results the
    saved state has absorbed but the rows do not mark as told: the resume tells them again, the search
    refuses (AlreadyToldError), and the run ends as the uninterrupted one does (one job at a time, so the
    order of results is the same)."""
    import sqlite3

    from db.store import Store
    from orchestrator.config import load_config
    from orchestrator.run.runner import run_search

    cfg = _steady_config(tmp_path / "s.toml")
    ref_db = tmp_path / "ref.db"
    assert glo("run", str(cfg), "--db", str(ref_db), "--run-id", "ref").returncode == 0
    for key, value in glo_env().items():
        if key.startswith("GLO_FAKE_WORKER"):
            monkeypatch.setenv(key, value)
    original = Store.mark_told
    calls = []

    def crashing(self, run_id, uids, **kw):
        if uids:
            calls.append(len(uids))
            if len(calls) == 6:
                raise RuntimeError("crash between the refill and the told marks")
        return original(self, run_id, uids, **kw)

    monkeypatch.setattr(Store, "mark_told", crashing)
    db = tmp_path / "c.db"
    with pytest.raises(RuntimeError, match="crash between"):
        run_search(db, config=load_config(cfg), run_id="c", show_progress=False)
    state = stored_search_state(db, "c")  # what the resume starts from: the whole state and the log after it
    assert state is not None
    con = sqlite3.connect(db)
    unmarked = [sid for (sid,) in con.execute("select search_id from candidates where run_id = 'c' and "
                                              "status = 'evaluated' and told = 0")]
    con.close()
    assert unmarked and all(state["status"][sid] == "done" for sid in unmarked)  # the window was hit
    monkeypatch.setattr(Store, "mark_told", original)
    assert run_search(db, resume="c", show_progress=False)[1] == "finished"
    assert _population(db, "c") == _population(ref_db, "ref")
