"""Find, load and split a task's data set.  Pure numpy: no TensorFlow needed to fail fast.

Layouts are Keras' own: an ``.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test`` uint8 arrays
(MNIST images (N, 28, 28); CIFAR-10 images (N, 32, 32, 3) RGB, labels (N,) or (N, 1)).
Recognised file names, per task:

* mnist:   ``mnist.npz`` (Keras' cache file name)
* fashion_mnist: ``fashion_mnist.npz`` (MNIST's layout; Keras caches its own download as four .gz files,
  which its loader reads)
* cifar100: ``cifar100.npz`` (CIFAR-10's layout, fine labels 0..99)
* cifar10: ``cifar10.npz`` (the keras layout saved as npz) or ``cifar10_jpeg.npz`` -- CIFAR-10 re-encoded
  through JPEG and decoded back to uint8 pixels (same keys, shapes and dtypes; see shared/data/README.md).
  It is close to, not identical with, CIFAR-10.

Places tried, in order: the spec's ``data_path`` (a file, or a directory holding one of the names),
``$GLO_DATA_DIR``, the Keras cache (``~/.keras/datasets``), then Keras' own download
(skipped when ``GLO_DATA_DOWNLOAD=0``, which tests and offline nodes set).
Nothing is unpickled: ``np.load(allow_pickle=False)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worker.spec import TASK_CLASSES, SpecError, WorkerSpec

FILE_NAMES = {"mnist": ("mnist.npz",), "cifar10": ("cifar10.npz", "cifar10_jpeg.npz"),
              "fashion_mnist": ("fashion_mnist.npz",), "cifar100": ("cifar100.npz",)}
#: What reports and figures call each task's data
TASK_LABELS = {"mnist": "MNIST", "cifar10": "CIFAR-10", "fashion_mnist": "Fashion-MNIST", "cifar100": "CIFAR-100"}
JPEG_FILE = "cifar10_jpeg.npz"


def data_label(task: str, *sources: str | None) -> str:
    """The data's honest name for reports and figures: the task's, except that a training that read
    cifar10_jpeg.npz (any of `sources`: data paths, a result's data_source) is on the JPEG re-encoding, whose
    pixels are not CIFAR-10's own."""
    if task == "cifar10" and any(s and Path(s).name == JPEG_FILE for s in sources):
        return f"CIFAR-10 (JPEG re-encoding, {JPEG_FILE})"
    return TASK_LABELS.get(task, task)
IMAGE_SHAPES = {"mnist": (28, 28), "cifar10": (32, 32, 3), "fashion_mnist": (28, 28), "cifar100": (32, 32, 3)}


class MissingDataError(RuntimeError):
    """No usable data file was found; `tried` lists every place looked at, with why it failed."""

    def __init__(self, task: str, tried: list[str]):
        self.task = task
        self.tried = tried
        super().__init__(f"no {task} data found; tried: " + "; ".join(tried))


@dataclass(frozen=True)
class TaskData:
    """uint8 images and int32 labels, already split.  `source` says which file they came from."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str


def candidate_places(task: str, data_path: str | None) -> list[Path]:
    """Files to try, in order of preference (without the download fallback)."""
    places: list[Path] = []

    def add_dir_or_file(p: Path) -> None:
        if p.is_dir() or not p.suffix:
            places.extend(p / name for name in FILE_NAMES[task])
        else:
            places.append(p)

    if data_path:
        add_dir_or_file(Path(data_path).expanduser())
    env = os.environ.get("GLO_DATA_DIR")
    if env:
        for part in env.split(os.pathsep):
            if part:
                add_dir_or_file(Path(part).expanduser())
    cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser() / "datasets"
    places.extend(cache / name for name in FILE_NAMES[task])
    return places


def _read_npz(task: str, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The four arrays of a Keras-layout npz, checked; ValueError says what is wrong."""
    with np.load(path, allow_pickle=False) as d:
        missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in d.files]
        if missing:
            raise ValueError(f"lacks array(s) {', '.join(missing)}")
        arrays = tuple(np.asarray(d[k]) for k in ("x_train", "y_train", "x_test", "y_test"))
    return _check(task, *arrays)


def _check(task: str, xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray):
    shape = IMAGE_SHAPES[task]
    for name, x, y in (("train", xtr, ytr), ("test", xte, yte)):
        if x.dtype != np.uint8 or x.shape[1:] != shape:
            raise ValueError(f"x_{name} must be uint8 of shape (N, {', '.join(map(str, shape))}), "
                             f"got {x.dtype} {x.shape}")
        y = y.reshape(-1)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"y_{name} has {y.shape[0]} labels for {x.shape[0]} images")
        if y.size and (y.min() < 0 or y.max() >= TASK_CLASSES[task]):
            raise ValueError(f"y_{name} labels must be in 0..{TASK_CLASSES[task] - 1}, got {y.min()}..{y.max()}")
    return xtr, ytr.reshape(-1).astype(np.int32), xte, yte.reshape(-1).astype(np.int32)


def _download(task: str):
    """Keras' own loader (its download + cache).  Imported lazily: only this step needs Keras."""
    import keras  # noqa: PLC0415

    loader = {"mnist": keras.datasets.mnist, "cifar10": keras.datasets.cifar10,
              "fashion_mnist": keras.datasets.fashion_mnist, "cifar100": keras.datasets.cifar100}[task]
    (xtr, ytr), (xte, yte) = loader.load_data()
    return _check(task, np.asarray(xtr), np.asarray(ytr), np.asarray(xte), np.asarray(yte))


def load_arrays(task: str, data_path: str | None) -> tuple[tuple[np.ndarray, ...], str]:
    """(x_train, y_train, x_test, y_test), source -- or MissingDataError listing the places tried."""
    tried: list[str] = []
    for path in candidate_places(task, data_path):
        if not path.is_file():
            tried.append(f"{path} (not found)")
            continue
        try:
            return _read_npz(task, path), str(path)
        except (OSError, ValueError) as exc:
            tried.append(f"{path} (unusable: {exc})")
    if os.environ.get("GLO_DATA_DOWNLOAD", "1") == "0":
        tried.append("Keras download (disabled by GLO_DATA_DOWNLOAD=0)")
    else:
        try:
            return _download(task), f"keras.datasets.{task}"
        except Exception as exc:  # network, checksum, disk: all mean "no data"
            tried.append(f"Keras download (failed: {type(exc).__name__}: {exc})")
    raise MissingDataError(task, tried)


def split(spec: WorkerSpec, xtr: np.ndarray, ytr: np.ndarray) -> tuple[np.ndarray, ...]:
    """Seeded, fixed train/validation split (the paper's 55,000 / 5,000 for MNIST).

    The permutation depends only on the seed and the training-set size, so every candidate of
    every job with that seed sees the same validation images.
    """
    n = xtr.shape[0]
    if spec.validation_size >= n:
        raise SpecError(f"validation_size: {spec.validation_size} leaves no training images out of {n}")
    perm = np.random.default_rng(spec.seed).permutation(n)
    val_idx, train_idx = perm[: spec.validation_size], perm[spec.validation_size:]
    if spec.train_subset is not None:
        train_idx = train_idx[: spec.train_subset]
    if spec.train_fraction is not None:  # the paper's Fig. 4: the first fraction of the (seeded) order
        train_idx = train_idx[: max(1, round(len(train_idx) * spec.train_fraction))]
    return xtr[train_idx], ytr[train_idx], xtr[val_idx], ytr[val_idx]


def load_task(spec: WorkerSpec) -> TaskData:
    """Locate, load and split the spec's task data."""
    (xtr, ytr, xte, yte), source = load_arrays(spec.task, spec.data_path)
    x_train, y_train, x_val, y_val = split(spec, xtr, ytr)
    return TaskData(x_train, y_train, x_val, y_val, xte, yte, source)
