"""What the unfused trainer (worker.train) and the fused one (worker.fused) share, so that neither imports the
other: the seeded batch order, the learning-rate schedule, and the sizes of what every training measures."""

from __future__ import annotations

import numpy as np

from worker import models
from worker.spec import TASK_NETWORK, WorkerSpec

EVAL_BATCH = 1000  # images per forward pass when measuring accuracy
FINAL_LOSS_WINDOW = 100  # final_train_loss = mean loss over the last this many steps
#: Bins of the test-set output-probability histogram (the paper's Fig. 7): 20 over [0, 1].
HISTOGRAM_EDGES = np.linspace(0.0, 1.0, 21)


class BatchStream:
    """Seeded batch indices: concatenated epoch permutations, cut into batches (no drop)."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size = n, batch_size
        self.rng = np.random.default_rng([seed, 1])
        self.buf = np.empty(0, np.int32)

    def next(self) -> np.ndarray:
        while len(self.buf) < self.batch_size:
            self.buf = np.concatenate([self.buf, self.rng.permutation(self.n).astype(np.int32)])
        out, self.buf = self.buf[: self.batch_size], self.buf[self.batch_size:]
        return out


def learning_rate(spec: WorkerSpec, n_train: int, step: int) -> float:
    """Constant for the MNIST network; the CIFAR-10 network decays ×0.1 every 350 epochs (staircase, as the
    tutorial), on CIFAR-100 too."""
    if TASK_NETWORK.get(spec.task) != "cifar10":  # a custom task: constant, as MNIST's
        return spec.learning_rate
    decay_steps = max(1, int(n_train / spec.batch_size * models.CIFAR_LR_DECAY_EPOCHS))
    return spec.learning_rate * models.CIFAR_LR_DECAY_FACTOR ** ((step - 1) // decay_steps)
