"""Session fixtures: `condor_pool`, the real HTCondor pool the tests marked `condor` submit to."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.condor_pool import REPORT, Pool, PoolError, open_pool, plan_from_environment


@pytest.fixture(scope="session")
def condor_pool(request: pytest.FixtureRequest) -> Iterator[Pool]:
    """A pool for the whole session (see tests/condor_pool.py for which one): CONDOR_CONFIG and PATH point
    at it meanwhile.  Without one the test is skipped, or fails when $CI is set."""
    plan = plan_from_environment()
    if plan.action == "skip":
        pytest.skip(plan.reason)
    if plan.action == "fail":
        pytest.fail(plan.reason, pytrace=False)
    try:
        with open_pool(plan, keep_dir=lambda: request.session.testsfailed > 0) as pool:
            yield pool
    except PoolError as exc:
        pytest.fail(str(exc), pytrace=False)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Which pool the condor tests used, and how long starting it and building the job venv took."""
    for line in REPORT:
        terminalreporter.write_line(line)
