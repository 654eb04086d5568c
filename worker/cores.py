"""How many cores this process may use: one definition for everything that sizes itself to the machine.

Read by the local backend (each worker's TensorFlow thread pools: the cores shared among its workers) and by
the canonical keys (how many sympy helper processes a batch is shared among).  Standard library only, no
side effects: the orchestrator imports it without pulling in anything of the worker's.
"""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity where the OS reports one, else the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
