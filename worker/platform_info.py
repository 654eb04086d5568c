"""What decides whether a fitness can be reproduced: recorded with every training.

Within one machine, the same spec and seed give the same fitness (op determinism, seeded batches and
weights); across machines they need not, because floating-point results depend on the device, the CPU's
instruction set and thread counts, and the TensorFlow / CUDA / cuDNN builds.  So the worker records these
beside every result (`extra.platform`) and `glo show` prints them.
"""

from __future__ import annotations

import functools
import os
import platform
from typing import Any

from worker.tf_env import onednn_enabled


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def platform_info(device: str) -> dict[str, Any]:
    """Device, CPU, threads and library builds of this process (TensorFlow must be imported already)."""
    import tensorflow as tf

    build = {}
    try:
        info = tf.sysconfig.get_build_info()
        build = {k: info.get(k) for k in ("cuda_version", "cudnn_version") if info.get(k)}
    except Exception:  # a CPU build has no CUDA entries; the rest is still worth recording
        pass
    return {
        "device": device,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "onednn": onednn_enabled(),  # which CPU kernel family summed the floats (worker/tf_env.py)
        "tensorflow": tf.__version__,
        "python": platform.python_version(),
        **build,
    }
