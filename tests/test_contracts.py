"""The contracts say what their callers use: every member the scheduler calls on its search or its backend
is declared by `AskTell` or `Backend`, and every implementation has all of them (no getattr probing)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator.backends.base import Backend
from orchestrator.backends.htcondor.core import ClusterBackend
from orchestrator.backends.local import LocalBackend
from orchestrator.search.candidate import AskTell
from orchestrator.search.evaluation import EvaluationPlan
from orchestrator.search.search import Search
from orchestrator.search.steady import SteadyStateSearch

SCHEDULER = (Path(__file__).resolve().parents[1] / "orchestrator" / "run" / "scheduler.py").read_text()


def declared(protocol: type) -> set[str]:
    names = {n for n in vars(protocol) if not n.startswith("_")}
    return names | set(getattr(protocol, "__annotations__", {}))


def used(pattern: str) -> set[str]:
    return set(re.findall(pattern, SCHEDULER))


def test_the_scheduler_calls_only_what_asktell_declares() -> None:
    calls = used(r"self\.search\.(\w+)")
    assert calls, "the pattern no longer finds the scheduler's search calls"
    assert calls <= declared(AskTell), calls - declared(AskTell)
    assert "getattr(self.search" not in SCHEDULER


@pytest.mark.parametrize("impl", [Search, SteadyStateSearch, EvaluationPlan])
def test_each_search_implements_all_of_asktell(impl: type) -> None:
    missing = {n for n in declared(AskTell) if not hasattr(impl, n)}
    assert not missing, missing


def test_the_scheduler_calls_only_what_backend_declares() -> None:
    calls = used(r"self\._backend\.(\w+)") | used(r"\bbackend\(\)\.(\w+)") | used(r"self\.backend\.(\w+)")
    assert calls, "the pattern no longer finds the scheduler's backend calls"
    assert calls <= declared(Backend), calls - declared(Backend)
    assert "getattr(self._backend" not in SCHEDULER and "getattr(backend" not in SCHEDULER


@pytest.mark.parametrize("impl", [LocalBackend, ClusterBackend])
def test_each_backend_implements_all_of_backend(impl: type) -> None:
    missing = {n for n in declared(Backend) - {"name"} if not callable(getattr(impl, n, None))}
    assert not missing, missing
