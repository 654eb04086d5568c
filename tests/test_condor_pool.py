"""Which pool the `condor` tests get, decided without starting one: in CI a missing pool is a failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.condor_pool import parse_exports, plan_from_environment, plan_pool

SCRIPT = Path("/shared/condor/pool/start.sh")


@pytest.mark.parametrize("exists, root, user_pool, ci, action", [
    (True, True, False, False, "start"),
    (True, True, True, True, "start"),    # the fresh test pool wins over a pool on PATH
    (True, False, True, False, "user"),   # not root: start.sh cannot run, use the user's pool
    (False, True, True, True, "user"),
    (False, True, False, False, "skip"),
    (True, False, False, False, "skip"),
    (False, True, False, True, "fail"),   # CI: a condor test that cannot run must fail, not skip
    (True, False, False, True, "fail"),
])
def test_the_plan_follows_the_facts(exists: bool, root: bool, user_pool: bool, ci: bool, action: str) -> None:
    plan = plan_pool(SCRIPT, exists, root, user_pool, ci)
    assert plan.action == action
    assert (plan.script == SCRIPT) == (action == "start")


def test_in_ci_without_the_pool_script_or_a_pool_on_path_it_fails(tmp_path: Path) -> None:
    environ = {"CI": "true", "GLO_TEST_POOL_SCRIPT": str(tmp_path / "nonexistent.sh"), "PATH": str(tmp_path)}
    plan = plan_from_environment(environ)
    assert plan.action == "fail"
    assert "nonexistent.sh is missing" in plan.reason and "CI is set" in plan.reason
    del environ["CI"]
    assert plan_from_environment(environ).action == "skip"


def test_the_exports_of_start_sh_are_read_with_path_expanded() -> None:
    out = ('export CONDOR_CONFIG=/tmp/p/condor_config\n'
           'export PATH="/tmp/p/htcondor/bin:/tmp/p/htcondor/sbin:$PATH"\n')
    assert parse_exports(out, "/usr/bin:/bin") == {
        "CONDOR_CONFIG": "/tmp/p/condor_config", "PATH": "/tmp/p/htcondor/bin:/tmp/p/htcondor/sbin:/usr/bin:/bin"}
