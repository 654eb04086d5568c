"""The process environment TensorFlow reads once, when it is imported: set here, before any worker module does.

Why oneDNN is on by default: TensorFlow turns its oneDNN CPU kernels on by itself only on CPUs with
AVX-512-class features; on an AVX2-only CPU they stay off and the paper's MNIST CNN trains about 1.6x slower
(2-core AMD EPYC, AVX2 + FMA only: 1.87 vs 2.96 candidate-steps/s, `make bench`'s fused rows, 2026-12-02).
On a 2-core AMD EPYC with AVX-512, two concurrent 150-step trainings ran 7.2 steps/s each with
TF_ENABLE_ONEDNN_OPTS=0 and 15.1 with =1 (fitness 0.7570 vs 0.7565: rounding, the families sum in different
orders).  Turning them on everywhere also makes every CPU run the same kernel family.
A value already in the environment
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
