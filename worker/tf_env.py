"""The process environment TensorFlow reads once, when it is imported: set here, before any worker module does.

Why oneDNN is on by default: TensorFlow turns its oneDNN CPU kernels on by itself only on CPUs with
AVX-512-class features.  On an AVX2-only CPU (AMD EPYC here) they are off, and the paper's MNIST CNN then
trains at half the speed: two concurrent 150-step trainings ran 7.2 steps/s each with TensorFlow's plain kernels
and 15.1 with oneDNN's (same spec, same machine; the fitness differed in the 4th digit, 0.7570 vs 0.7565 --
rounding, the two families sum in different orders).  Turning them on everywhere also makes every CPU run the
same kernel family, so a laptop and an AVX-512 server agree more closely.  A value already in the environment
wins: `TF_ENABLE_ONEDNN_OPTS=0` gives the plain kernels back (tests/test_worker_fused.py runs both).
"""

from __future__ import annotations

import os

#: variable -> the worker's default; `os.environ` keeps a value the user set
DEFAULTS = {
    "TF_CPP_MIN_LOG_LEVEL": "2",  # TensorFlow's C++ start-up chatter would bury the worker's own lines
    "TF_ENABLE_ONEDNN_OPTS": "1",
}


def apply() -> None:
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)


def onednn_enabled() -> bool:
    """Whether this process asked TensorFlow for oneDNN kernels (read after `apply`)."""
    return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "").strip().lower() in {"1", "true"}


apply()
