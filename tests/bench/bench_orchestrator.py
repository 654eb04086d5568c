"""Orchestrator cost: what GLO itself spends per candidate, and how long `glo status` makes a user wait.

* `per_candidate`: a real run (the real `Scheduler`, `Search`, SQLite `Store`, canonical keys, cache
  lookups) with a no-op evaluator -- a backend that answers every job at once with a fitness computed from
  the tree (the fake worker's formula, microseconds) -- on a database that already holds 1,000 and
  100,000 evaluations (and as many candidates and remembered canonical keys) of an earlier run.  Cost per
  candidate = the run's wall time / the candidates it handed out (breed, canonical key, cache lookup, DB
  writes).  Goal <= 5 ms.  The canonical-key helper processes (sympy) start once per scheduler, before the
  clock starts: their start-up is reported apart (`key_helper_start_seconds`).  Generation 0 (the valid
  init: ~80,000 draws, a canonical key and a filter verdict for each distinct trainable tree) is timed on its
  own too (`generation0_seconds`, and the rest per candidate beside it): a one-off per run, which this short
  run (4 generations) weighs four to five times more than a 20-generation one.
* `glo_status`: `glo status` on that database as a whole process (the console script next to this
  interpreter), as a user waits for it: wall time (median of GLO_BENCH_STATUS_REPEATS) and the CPU time
  the process used (user + sys: what the machine's load does not change).  Goal <= 300 ms.
* `breeding_vs_deap`: our crossover + mutations (orchestrator.search.ga.breed) against DEAP's `gp` doing
  the same on the same population (DEAP's PrimitiveTree, cxOnePoint and the paper's four mutations written
  with DEAP's own tree slicing), time per child, as a ratio (DEAP is a bench-only dependency: skipped
  when it does not import).

Each size runs two workloads (`WORKLOADS`): today's defaults, and the paper's GA (the workload the goal was
set on); each row splits the wall time into the search's own ask/tell (breeding, and under the defaults the
draws, filter verdicts and keys of every redrawn tree: `search_ms_per_candidate`, `filter_seconds`) and the
rest, the orchestrator's path (`orchestrator_ms_per_candidate`: scheduler, store, cache, jobs).

Knobs: GLO_BENCH_DB_SIZES (default "1000,100000"), GLO_BENCH_ORCH_WORKLOADS (default "default,paper"),
GLO_BENCH_ORCH_GENERATIONS (default 4, population 80), GLO_BENCH_ORCH_REPEATS (default 3: each row is the
median run by ms_per_candidate, with every run's figure beside it -- one run on this 2-core VM varies by
up to a fifth),
GLO_BENCH_STATUS_REPEATS (default 5), GLO_BENCH_BREED_ROUNDS (default 20), GLO_BENCH_PROFILE=1 (cProfile
the 100,000 run: top functions in the JSON).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


# -- a database with history ----------------------------------------------------------------------
def fill_db(path: Path, n: int) -> None:
    """A GLO database holding an earlier (finished) run with n trained candidates, n cache entries and n
    remembered canonical keys -- written with sqlite3 in one transaction (the schema is GLO's own)."""
    from db.session import open_db
    from db.store import Store
    from orchestrator.config import from_dict

    db = open_db(path, create=True)
    cfg = from_dict({"run": {"name": "history"}})
    Store(db).create_run("history", name="history", config=cfg.to_dict(), seed=0, task="mnist", backend="local", pid=0)
    db.dispose()
    con = sqlite3.connect(path)
    now = time.time()
    budget = json.dumps(cfg.task.budget(), sort_keys=True)
    with con:
        con.execute("update runs set status='finished', finished_at=? where id='history'", (now,))
        con.executemany(
            "insert into evaluations (id, eval_key, canonical_key, coefficients_json, task, budget_json, steps, "
            "seed_policy, status, fitness, metrics_json, wall_seconds, train_seconds, eval_seconds, device, run_id, "
            "candidate_uid, created_at) values (?, ?, ?, '[]', 'mnist', ?, 2000, 'fixed:0', 'ok', ?, '{}', 60, 55, 5, "
            "'bench', 'history', ?, ?)",
            ((i + 1, f"hist-eval-{i:08d}", f"s1:hist-{i}", budget, (i % 997) / 997, f"history/g{i // 80}-{i % 80}",
              now - n + i) for i in range(n)))
        con.executemany(
            "insert into candidates (uid, run_id, search_id, seq, tree_json, infix, coefficients_json, canonical_key, "
            "eval_key, generation, phase, origin, parents_json, status, fitness, error, evaluation_id, told, "
            "created_at, resolved_at) values (?, 'history', ?, ?, '{\"op\": \"x\"}', 'x', '[]', ?, ?, ?, 'discovery', "
            "'random', '[]', 'evaluated', ?, '', ?, 1, ?, ?)",
            ((f"history/g{i // 80}-{i % 80}", f"g{i // 80}-{i % 80}", i, f"s1:hist-{i}", f"hist-eval-{i:08d}", i // 80,
              (i % 997) / 997, i + 1, now - n + i, now - n + i) for i in range(n)))
        con.executemany("insert into canonical_keys (tree_sha, canonical_key, created_at) values (?, ?, ?)",
                        ((f"hist-tree-{i:08d}", f"s1:hist-{i}", now) for i in range(n)))
    con.close()


# -- a no-op evaluator ------------------------------------------------------------------------------
class NoopBackend:
    """Answers every job at once: fitness from the tree, no process, no files."""

    name = "noop"

    def __init__(self, events: asyncio.Queue) -> None:
        from tests.fake_worker import fitness_of

        self.events, self.fitness_of, self.jobs = events, fitness_of, 0

    async def submit(self, job) -> str:
        from orchestrator.backends import JobEvent
        from worker.spec import CandidateResult

        results = []
        for cand in job.spec.candidates:
            status, fitness = self.fitness_of(cand.tree)
            results.append(CandidateResult(cand.id, status, fitness if status == "ok" else 0.0))
        self.jobs += 1
        self.events.put_nowait(JobEvent(job.job_id, job.attempt, "finished", results=tuple(results)))
        return f"noop-{job.job_id}"

    async def adopt(self, job) -> bool:
        return False

    async def cancel(self, job_id: int) -> None:
        pass

    async def shutdown(self, *, cancel_jobs: bool) -> None:
        pass

    async def submit_many(self, jobs) -> list[str]:
        return [await self.submit(job) for job in jobs]

    def stats(self) -> dict:
        return {"backend": self.name, "jobs": self.jobs}


#: The search's settings per workload: "default" is today's defaults (generation 0 and every child drawn
#: trainable, screened by the zero-training filter and new to the run); "paper" is the paper's GA (random
#: trees, most of them untrainable and settled without a job; no filter) -- the workload issue 19's goal
#: was set on, where the search itself costs little and the orchestrator's own path is what is measured.
WORKLOADS: dict[str, dict] = {"default": {}, "paper": {"init": "paper", "zero_training_filter": False}}


class _Stopwatch:
    """Seconds spent inside wrapped callables (outermost calls only, so nested ones are not counted twice)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._depth: dict[str, int] = {}

    def wrap(self, label: str, fn):  # type: ignore[no-untyped-def]
        def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
            depth = self._depth.get(label, 0)
            self._depth[label] = depth + 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._depth[label] = depth
                if depth == 0:
                    self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - t0

        return timed


def per_candidate(db_path: Path, generations: int, profile: bool = False, workload: str = "default") -> dict:
    """One run on `db_path`: wall time per handed-out candidate, and how it splits between the search's own
    work (ask/tell: breeding, and under the default workload the draws, trainability checks, filter verdicts
    and canonical keys of every redrawn tree) and the orchestrator's (scheduler, store, cache, jobs)."""
    from db.session import open_db
    from orchestrator.config import from_dict
    from orchestrator.run.scheduler import Scheduler
    from orchestrator.search import filters
    from orchestrator.search.search import Search as BaseSearch

    cfg = from_dict({"run": {"name": "bench", "seed": 3}, "task": {"steps": 2000},
                     "search": {"ga": {"population_size": 80, "generations": generations, **WORKLOADS[workload]},
                                "cma": {"top_k": 1, "iterations": 2}},
                     "backend": {"max_in_flight": 1000, "candidates_per_job": 4}})
    from worker.lossexpr import parse
    from worker.lossexpr.canonical import canonical_key, canonical_keys, start_helpers

    t0 = time.perf_counter()
    # the symbolic helper processes (one per core, at most two) start once per scheduler: timed apart
    start_helpers()
    canonical_keys([parse("x * log(y) + 3"), parse("x * log(y) + 2")])  # one key each: every helper ready
    helper_start = time.perf_counter() - t0
    # Generation 0 on its own (the valid init's draws, canonical keys and filter verdicts), timed apart and
    # then forgotten (the key cache emptied) so that the run below starts as cold as a real one.
    from orchestrator.search import Search
    from orchestrator.search.filters import screen_for
    from worker.lossexpr import canonical

    t0 = time.perf_counter()
    screen = (screen_for(cfg.task.epsilon, cfg.task.class_reduction, cfg.task.epsilon_gradient)
              if cfg.search.ga.zero_training_filter else None)
    Search(cfg.search, key_fn=canonical_key, screen=screen).ask()
    gen0 = time.perf_counter() - t0
    canonical._cache.clear()
    watch = _Stopwatch()
    originals = {name: getattr(BaseSearch, name) for name in ("ask", "tell", "_start")}  # _start: generation 0
    original_check = filters.check
    for name, fn in originals.items():
        setattr(BaseSearch, name, watch.wrap("search", fn))
    filters.check = watch.wrap("filter", original_check)
    db = open_db(db_path, create=True)
    try:
        sched = Scheduler.create(db, cfg, run_id="bench", show_progress=False)
        backend = NoopBackend(sched.events)
        sched._backend = backend
        prof = None
        if profile:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        t0 = time.perf_counter()
        status = asyncio.run(sched.run())
        wall = time.perf_counter() - t0
        if prof is not None:
            prof.disable()
        con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        handed, trained = con.execute("select count(*), sum(status = 'evaluated') from candidates where run_id='bench'"
                                      ).fetchone()
        con.close()
    finally:
        db.dispose()
        for name, fn in originals.items():
            setattr(BaseSearch, name, fn)
        filters.check = original_check
    search_s = watch.seconds.get("search", 0.0)
    per = 1e3 / max(handed, 1)
    out = {"workload": workload, "status": status, "candidates": handed, "trained": trained, "jobs": backend.jobs,
           "key_helper_start_seconds": round(helper_start, 2),
           "wall_seconds": round(wall, 2), "ms_per_candidate": round(per * wall, 3),
           "generation0_seconds": round(gen0, 2),
           "ms_per_candidate_besides_generation0": round(per * max(wall - gen0, 0.0), 3),
           "search_seconds": round(search_s, 2), "filter_seconds": round(watch.seconds.get("filter", 0.0), 2),
           "search_ms_per_candidate": round(per * search_s, 3),
           "orchestrator_ms_per_candidate": round(per * max(wall - search_s, 0.0), 3)}
    if prof is not None:
        import io
        import pstats

        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(25)
        out["profile_top"] = [line.strip() for line in buf.getvalue().splitlines() if line.strip()][-25:]
    return out


def glo_status(db_path: Path, repeats: int) -> dict:
    """`glo status` (and `glo status --json`) as whole processes: wall and CPU time, medians."""
    script = Path(sys.executable).parent / "glo"
    base = [str(script)] if script.exists() else [sys.executable, "-c",
                                                  "import sys; from orchestrator.cli import main; sys.argv[0]='glo'; main()"]
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = {"command": " ".join(Path(base[0]).name if i == 0 else a for i, a in enumerate(base)) + " status",
           "goal_ms": 300}
    for label, extra in (("table", []), ("json", ["--json"])):
        walls, cpus = [], []
        for _ in range(repeats + 1):
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            done = subprocess.run([*base, "status", "bench", "--db", str(db_path), *extra], capture_output=True,
                                  text=True, env=env, cwd=tempfile.gettempdir(), timeout=120)
            wall = time.perf_counter() - t0
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            if done.returncode != 0:
                return {**out, "error": done.stderr.strip()[-500:]}
            walls.append(wall)
            cpus.append((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime))
        walls, cpus = walls[1:], cpus[1:]  # the first warms the page cache
        out[label] = {"wall_ms_median": round(1e3 * statistics.median(walls), 1),
                      "wall_ms_min": round(1e3 * min(walls), 1),
                      "cpu_ms_median": round(1e3 * statistics.median(cpus), 1)}
    return out


# -- DEAP ------------------------------------------------------------------------------------------
def breeding_vs_deap(rounds: int) -> dict:
    try:
        from deap import gp
    except ImportError:
        return {"skipped": "deap is not installed (pip install deap; `make bench` does)"}
    import operator

    from orchestrator.search import GAConfig
    from orchestrator.search.config import element_arity
    from orchestrator.search.ga import breed, elite_indices, roulette
    from orchestrator.search.operators import Primitives, random_tree
    from worker.lossexpr.tree import MAX_CONST

    cfg = GAConfig()
    prims = Primitives(cfg.weights())
    rng = random.Random(5)
    trees = [random_tree(rng, prims, cfg.init_max_depth) for _ in range(cfg.population_size)]
    fits = [rng.random() for _ in trees]

    pset = gp.PrimitiveSet("LOSS", 2)
    pset.renameArguments(ARG0="x", ARG1="y")
    names = {"+": "add", "-": "sub", "*": "mul", "/": "div", "log": "log", "square": "square", "sqrt": "sqrt"}
    for op, fn in (("+", operator.add), ("-", operator.sub), ("*", operator.mul), ("/", operator.truediv)):
        pset.addPrimitive(fn, 2, name=names[op])
    for op in ("log", "square", "sqrt"):
        pset.addPrimitive(lambda a: a, 1, name=names[op])
    prim_of = {p.name: p for arity in pset.primitives.values() for p in arity}
    term_of = {"x": pset.mapping["x"], "y": pset.mapping["y"]}

    def const(v: int):
        return gp.Terminal(v, False, object)

    def node_of(element: str):
        if element in ("1", "-1"):
            return const(int(element))
        if element in ("x", "y"):
            return term_of[element]
        return prim_of[names[element]]

    def to_deap(tree) -> gp.PrimitiveTree:
        out = []

        def walk(n):
            out.append(const(n.value) if n.op == "const" else node_of(n.op))
            for c in n.children:
                walk(c)

        walk(tree)
        return gp.PrimitiveTree(out)

    def leaf():
        return node_of(prims.draw(rng, 0))

    def deap_mutate(ind: gp.PrimitiveTree) -> gp.PrimitiveTree:
        """The paper's four mutations as ours applies them, children before parents, on DEAP's prefix list:
        in reverse prefix order a node comes after its whole subtree, and a replaced subtree moves only the
        indices already visited."""
        for i in reversed(range(len(ind))):
            node = ind[i]
            if isinstance(node, gp.Terminal) and not isinstance(node.value, str):
                if rng.random() < cfg.p_const_step:
                    ind[i] = const(max(-MAX_CONST, min(MAX_CONST, node.value + (1 if rng.random() < 0.5 else -1))))
                    node = ind[i]
            if rng.random() < cfg.p_replace_node and prims.by_arity[node.arity]:
                ind[i] = node_of(prims.draw(rng, node.arity))
                node = ind[i]
            sl = ind.searchSubtree(i)
            if node.arity:
                if rng.random() < cfg.p_shrink:
                    ind[sl] = [leaf()]
            elif rng.random() < cfg.p_grow:
                element = prims.draw(rng)
                ind[sl] = [node_of(element)] + [leaf() for _ in range(element_arity(element))]
        return ind

    def within(ind) -> bool:
        return len(ind) <= cfg.max_tree_size and ind.height <= cfg.max_tree_depth

    def deap_breed(pop: list[gp.PrimitiveTree]) -> int:
        out = [pop[i] for i in elite_indices(fits, cfg.elites)]
        while len(out) < cfg.population_size:
            i, j = roulette(rng, fits), roulette(rng, fits)
            a, b = gp.PrimitiveTree(pop[i]), gp.PrimitiveTree(pop[j])
            if rng.random() < cfg.crossover_prob:
                ca, cb = gp.cxOnePoint(gp.PrimitiveTree(a), gp.PrimitiveTree(b))
                a, b = (ca if within(ca) else a), (cb if within(cb) else b)
            for child in (a, b):
                if len(out) >= cfg.population_size:
                    break
                m = deap_mutate(gp.PrimitiveTree(child))
                out.append(m if within(m) else child)
        return len(out) - cfg.elites

    deap_pop = [to_deap(t) for t in trees]
    ours_t, deap_t = [], []
    children = cfg.population_size - cfg.elites
    for r in range(rounds):
        for which in (("ours", "deap") if r % 2 == 0 else ("deap", "ours")):
            t0 = time.perf_counter()
            if which == "ours":
                breed(rng, trees, fits, cfg, prims)
                ours_t.append((time.perf_counter() - t0) / children)
            else:
                deap_breed(deap_pop)
                deap_t.append((time.perf_counter() - t0) / children)
    ours, deap = statistics.median(ours_t), statistics.median(deap_t)
    return {"population": cfg.population_size, "rounds": rounds, "us_per_child_ours": round(1e6 * ours, 1),
            "us_per_child_deap": round(1e6 * deap, 1), "ratio_ours_vs_deap": round(ours / deap, 3)}


def run() -> dict:
    sizes = [int(s) for s in os.environ.get("GLO_BENCH_DB_SIZES", "1000,100000").split(",") if s.strip()]
    gens = _env_int("GLO_BENCH_ORCH_GENERATIONS", 4)
    repeats = max(1, _env_int("GLO_BENCH_ORCH_REPEATS", 3))
    workloads = [w.strip() for w in os.environ.get("GLO_BENCH_ORCH_WORKLOADS", "default,paper").split(",") if w.strip()]
    unknown = set(workloads) - set(WORKLOADS)
    if unknown:
        raise SystemExit(f"GLO_BENCH_ORCH_WORKLOADS: unknown {sorted(unknown)} (known: {sorted(WORKLOADS)})")
    out: dict = {"goal_ms_per_candidate": 5.0, "per_candidate": {}, "glo_status": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            db = Path(tmp) / f"history-{n}.db"
            t0 = time.perf_counter()
            fill_db(db, n)
            fill_s = time.perf_counter() - t0
            profile = os.environ.get("GLO_BENCH_PROFILE") == "1" and n == max(sizes)
            for workload in workloads:
                copy = Path(tmp) / f"history-{n}-{workload}.db"
                runs = []
                for r in range(repeats):  # each run on a fresh copy: every one starts from the same history
                    if r:
                        copy.unlink()
                        for extra in (Path(f"{copy}-wal"), Path(f"{copy}-shm")):
                            extra.unlink(missing_ok=True)
                    shutil.copyfile(db, copy)
                    runs.append(per_candidate(copy, gens, profile and r == 0, workload))
                runs.sort(key=lambda row: row["ms_per_candidate"])
                row = {"evaluations_in_db": n, "fill_seconds": round(fill_s, 1), "runs": repeats,
                       **runs[len(runs) // 2],
                       "ms_per_candidate_of_each_run": [x["ms_per_candidate"] for x in runs],
                       "orchestrator_ms_of_each_run": sorted(x["orchestrator_ms_per_candidate"] for x in runs)}
                out["per_candidate"][str(n) if workload == "default" else f"{n} {workload}"] = row
            # on the database with the bench's run in it (the first workload's)
            status_db = Path(tmp) / f"history-{n}-{workloads[0]}.db"
            out["glo_status"][str(n)] = glo_status(status_db, _env_int("GLO_BENCH_STATUS_REPEATS", 5))
    out["breeding_vs_deap"] = breeding_vs_deap(_env_int("GLO_BENCH_BREED_ROUNDS", 20))
    return out


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
