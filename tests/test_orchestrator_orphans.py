"""A worker whose scheduler died between fork and prctl(PR_SET_PDEATHSIG) must not run.

The death signal only covers a parent that dies after prctl; a kill -9 landing while the
scheduler is still inside fork/exec left an orphan worker training on, and the resumed
scheduler, finding no result file yet, trained the same candidates again (seen as "trained
twice" in the kill -9 acceptance test when its kill landed just as CMA-ES jobs started).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

from orchestrator.procs import _die_with_parent

TOUCH = "import sys; open(sys.argv[1], 'w').close()"


def test_child_of_a_live_parent_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    r = subprocess.run([sys.executable, "-c", TOUCH, str(marker)],
                       preexec_fn=functools.partial(_die_with_parent, os.getpid()))
    assert r.returncode == 0 and marker.exists()


def test_child_whose_parent_is_already_gone_exits_before_running(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    gone = os.getpid() + 1_000_000  # the pid the child saw before its parent was replaced
    r = subprocess.run([sys.executable, "-c", TOUCH, str(marker)],
                       preexec_fn=functools.partial(_die_with_parent, gone))
    assert r.returncode == 1 and not marker.exists()
