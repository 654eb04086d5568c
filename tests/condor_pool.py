"""Whether a live HTCondor pool answers here: tests marked `condor` run against it, else are skipped."""

from __future__ import annotations

import shutil
import subprocess

import pytest


def pool_answers() -> bool:
    """condor_version and condor_submit are on PATH and condor_version exits 0."""
    if shutil.which("condor_version") is None or shutil.which("condor_submit") is None:
        return False
    try:
        return subprocess.run(["condor_version"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


#: Use with the `condor` marker: `@pytest.mark.condor` then `@skip_without_pool`.
skip_without_pool = pytest.mark.skipif(not pool_answers(),
                                       reason="no HTCondor pool here (condor_version does not answer)")
