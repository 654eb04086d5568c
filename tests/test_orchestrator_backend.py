"""The local backend on its own: results, crash, timeout, corrupt file, adopt after a restart."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest

from orchestrator.backends.base import JobEvent, JobRequest
from orchestrator.backends.local import LocalBackend
from orchestrator.config import BackendConfig
from tests.orch_helpers import FAKE_WORKER, REPO
from worker.lossexpr import parse
from worker.spec import CandidateSpec, WorkerSpec


def spec(*infixes: str) -> WorkerSpec:
    return WorkerSpec(task="mnist", steps=5, candidates=tuple(CandidateSpec(f"c{i}", parse(t))
                                                              for i, t in enumerate(infixes)))


async def run_one(tmp: Path, sp: WorkerSpec, timeout_s: float = 30.0) -> JobEvent:
    events: asyncio.Queue[JobEvent] = asyncio.Queue()
    cfg = BackendConfig(worker_command=(sys.executable, str(FAKE_WORKER)), timeout_s=timeout_s)
    backend = LocalBackend(cfg, events, tmp)
    await backend.submit(JobRequest(1, 1, sp, tmp / "job"))
    while True:
        ev = await asyncio.wait_for(events.get(), 60)
        if ev.kind == "finished":
            await backend.shutdown(cancel_jobs=True)
            return ev


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_results_come_back(tmp_path: Path) -> None:
    ev = asyncio.run(run_one(tmp_path, spec("x * log(y)", "square(x - y)")))
    assert ev.error is None and [r.candidate_id for r in ev.results] == ["c0", "c1"]
    assert (tmp_path / "job" / "spec.json").exists() and (tmp_path / "job" / "stderr").exists()


def test_crash_keeps_partial_results_and_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLO_FAKE_WORKER_FAIL", "square")
    ev = asyncio.run(run_one(tmp_path, spec("x * log(y)", "square(x - y)")))
    assert [r.candidate_id for r in ev.results] == ["c0"]
    assert "exit 70" in (ev.error or "") and "crashing on square" in (ev.error or "") and not ev.fatal


def test_timeout_kills_the_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLO_FAKE_WORKER_SLEEP", "30")
    t0 = time.monotonic()
    ev = asyncio.run(run_one(tmp_path, spec("x * log(y)"), timeout_s=1.0))
    assert time.monotonic() - t0 < 15
    assert "timed out after 1 s" in (ev.error or "") and ev.results == ()


def test_corrupt_result_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLO_FAKE_WORKER_CORRUPT", "log")
    ev = asyncio.run(run_one(tmp_path, spec("x * log(y)")))
    assert ev.results == () and "corrupt result file" in (ev.error or "") and "not valid JSON" in (ev.error or "")


def test_adopt_picks_up_finished_results_only_for_the_same_spec(tmp_path: Path) -> None:
    sp = spec("x * log(y)", "square(x - y)")
    asyncio.run(run_one(tmp_path, sp))

    async def adopt(s: WorkerSpec) -> tuple[bool, list[JobEvent]]:
        events: asyncio.Queue[JobEvent] = asyncio.Queue()
        backend = LocalBackend(BackendConfig(), events, tmp_path)
        ok = await backend.adopt(JobRequest(1, 1, s, tmp_path / "job"))
        return ok, [events.get_nowait() for _ in range(events.qsize())]

    ok, evs = asyncio.run(adopt(sp))
    assert ok and len(evs[0].results) == 2 and evs[0].error is None
    ok, evs = asyncio.run(adopt(spec("x * log(y)")))  # a different spec: the file is not ours
    assert not ok and evs == []
    (tmp_path / "job" / "result.json").unlink()
    assert asyncio.run(adopt(sp)) == (False, [])
    assert json.loads((tmp_path / "job" / "spec.json").read_text())["glo_worker_spec"] == 1


def test_every_backend_reads_exit_codes_one_way() -> None:
    """One classifier (orchestrator.backends.base) over worker.spec's codes: the local backend used to call a
    bad node (75) a crash and the cluster backends had their own table."""
    from orchestrator.backends.base import classify_exit
    from worker.spec import EXIT_BAD_NODE, EXIT_BAD_SPEC, EXIT_INTERNAL, EXIT_MISSING_DATA

    assert [(e.meaning, e.fatal, e.bad_node) for e in map(classify_exit, (EXIT_BAD_SPEC, EXIT_MISSING_DATA))] == [
        ("bad spec", True, False), ("missing data", True, False)]
    assert (classify_exit(EXIT_BAD_NODE).bad_node, classify_exit(EXIT_BAD_NODE).fatal) == (True, False)
    assert classify_exit(EXIT_INTERNAL).meaning == "internal error" and not classify_exit(EXIT_INTERNAL).fatal
    assert classify_exit(1).meaning == "crashed" and not classify_exit(1).fatal
    assert classify_exit(66).error("node7", "no mnist.npz") == "worker missing data (exit 66) on node7: no mnist.npz"
    assert classify_exit(70).error("", "") == "worker internal error (exit 70)"
    assert classify_exit(1).error("n1", "stopped at: ") == "worker crashed (exit 1) on n1: stopped at: "


def test_local_workers_share_the_cores_instead_of_each_taking_all(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Each local worker's TensorFlow gets cores // (jobs the backend has at its start, up to max_in_flight)
    threads, at least 1: two jobs submitted together share the cores, a job alone keeps them all; what the
    user set stays."""
    from orchestrator.backends.local import THREAD_VARIABLES, worker_environment

    cores = len(os.sched_getaffinity(0))
    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert [worker_environment(1)[v] for v in THREAD_VARIABLES] == [str(cores)] * len(THREAD_VARIABLES)
    assert worker_environment(cores + 5)["TF_NUM_INTRAOP_THREADS"] == "1"
    assert worker_environment(2, {"TF_NUM_INTRAOP_THREADS": "7"})["TF_NUM_INTRAOP_THREADS"] == "7"
    # and a real worker process sees it
    probe = ("import os, sys; open(sys.argv[-1], 'w').write(' '.join(os.environ.get(v, '-') for v in "
             f"{THREAD_VARIABLES!r}))")
    events: asyncio.Queue[JobEvent] = asyncio.Queue()
    backend = LocalBackend(BackendConfig(worker_command=(sys.executable, "-c", probe), max_in_flight=2), events,
                           tmp_path)

    async def go(jobs: list[int]) -> None:
        await backend.submit_many([JobRequest(j, 1, spec("x * log(y)"), tmp_path / f"job{j}") for j in jobs])
        finished = 0
        while finished < len(jobs):
            ev = await asyncio.wait_for(events.get(), 60)
            if ev.kind == "finished":
                assert ev.error  # the probe writes no result file a worker would
                finished += 1

    async def both() -> None:
        await go([1])
        assert (tmp_path / "job1" / "result.json").read_text() == f"{cores} {cores}"  # alone: every core
        await go([2, 3])  # two submitted together: each shares the cores with the other

    asyncio.run(both())
    want = str(max(1, cores // 2))
    for j in (2, 3):
        assert (tmp_path / f"job{j}" / "result.json").read_text() == f"{want} {want}"
