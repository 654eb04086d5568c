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

* custom: the file ``data_path`` names (any name), then that name in ``$GLO_DATA_DIR``: a user's data set
  (issue 20) -- images (N, H, W) or (N, H, W, C), uint8 or floating point; integer labels 0..C-1, the number
  of classes C being the largest label + 1.  When the spec carries ``data_sha256`` a file with another
  content is passed over, so a node never trains on other data than the run's cache keys name.

Places tried, in order: the spec's ``data_path`` (a file, or a directory holding one of the names),
``$GLO_DATA_DIR``, the Keras cache (``~/.keras/datasets``), then Keras' own download
(skipped when ``GLO_DATA_DOWNLOAD=0``, which tests and offline nodes set).
Nothing is unpickled: ``np.load(allow_pickle=False)``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worker.spec import CUSTOM_TASK, TASK_CLASSES, SpecError, WorkerSpec

FILE_NAMES = {"mnist": ("mnist.npz",), "cifar10": ("cifar10.npz", "cifar10_jpeg.npz"),
              "fashion_mnist": ("fashion_mnist.npz",), "cifar100": ("cifar100.npz",)}
#: What reports and figures call each task's data
TASK_LABELS = {"mnist": "MNIST", "cifar10": "CIFAR-10", "fashion_mnist": "Fashion-MNIST", "cifar100": "CIFAR-100",
               CUSTOM_TASK: "custom data"}
JPEG_FILE = "cifar10_jpeg.npz"


def data_label(task: str, *sources: str | None) -> str:
    """The data's honest name for reports and figures: the task's, except that a training that read
    cifar10_jpeg.npz (any of `sources`: data paths, a result's data_source) is on the JPEG re-encoding, whose
    pixels are not CIFAR-10's own."""
    if task == "cifar10" and any(s and Path(s).name == JPEG_FILE for s in sources):
        return f"CIFAR-10 (JPEG re-encoding, {JPEG_FILE})"
    if task == CUSTOM_TASK:
        names = sorted({Path(s).name for s in sources if s})
        return f"custom data ({', '.join(names)})" if names else TASK_LABELS[task]
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
    num_classes: int  # the softmax's width: the task's (TASK_CLASSES), or a custom file's largest label + 1


@dataclass(frozen=True)
class CustomDataInfo:
    """What the orchestrator learns from a custom data file before any job: enough to build the model
    (input_shape, num_classes), to key the cache (sha256), and to check the split (n_train)."""

    input_shape: tuple[int, ...]  # one image as the model sees it: (H, W, C); H x W images get C = 1
    num_classes: int
    n_train: int
    n_test: int
    sha256: str


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_input_shape(image_shape: tuple[int, ...]) -> tuple[int, ...]:
    """H x W images reach the model with one channel, as MNIST's do."""
    return (*image_shape, 1) if len(image_shape) == 2 else tuple(image_shape)


def describe_custom(path: str | os.PathLike[str]) -> CustomDataInfo:
    """Read and check a custom data file; ValueError names the file and the key or shape that is wrong."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: no such file")
    try:
        xtr, ytr, xte, yte = _read_npz(CUSTOM_TASK, p)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{p}: {exc}") from None
    return CustomDataInfo(model_input_shape(xtr.shape[1:]), custom_classes(ytr, yte), len(xtr), len(xte),
                          file_sha256(p))


def custom_classes(y_train: np.ndarray, y_test: np.ndarray) -> int:
    return int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1


def candidate_places(task: str, data_path: str | None) -> list[Path]:
    """Files to try, in order of preference (without the download fallback)."""
    places: list[Path] = []

    def add_dir_or_file(p: Path) -> None:
        if p.is_dir() or not p.suffix:
            places.extend(p / name for name in FILE_NAMES[task])
        else:
            places.append(p)

    if task == CUSTOM_TASK:  # the file the run names, or a file of that name in $GLO_DATA_DIR
        if data_path:
            places.append(Path(data_path).expanduser())
            for part in os.environ.get("GLO_DATA_DIR", "").split(os.pathsep):
                if part and (Path(part).expanduser() / Path(data_path).name) not in places:
                    places.append(Path(part).expanduser() / Path(data_path).name)
        return places
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


def _check_custom(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray):
    """A user's arrays: images of one shape, uint8 or finite floats (kept as float32), integer labels >= 0."""
    for name, x, y in (("train", xtr, ytr), ("test", xte, yte)):
        if x.ndim not in (3, 4):
            raise ValueError(f"x_{name} must be images (N, H, W) or (N, H, W, C), got shape {x.shape}")
        if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"x_{name} must be uint8 or floating point, got {x.dtype}")
        if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            raise ValueError(f"x_{name} holds NaN or infinite values")
        if not len(x):
            raise ValueError(f"x_{name} holds no images")
        y = y.reshape(-1) if y.ndim == 2 and y.shape[1:] == (1,) else y
        if y.ndim != 1:
            raise ValueError(f"y_{name} must be integer labels (N,) or (N, 1), got shape {y.shape}")
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"y_{name} must be integer labels 0..C-1, got {y.dtype}")
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"y_{name} has {y.shape[0]} labels for {x.shape[0]} images")
        if y.min() < 0:
            raise ValueError(f"y_{name} labels must be >= 0, got {y.min()}")
    if xtr.shape[1:] != xte.shape[1:] or xtr.dtype != xte.dtype:
        raise ValueError(f"x_train {xtr.dtype} {xtr.shape[1:]} and x_test {xte.dtype} {xte.shape[1:]} differ "
                         "in image shape or dtype")
    if custom_classes(ytr.reshape(-1), yte.reshape(-1)) < 2:
        raise ValueError("the labels name fewer than 2 classes")
    cast = (lambda a: a) if xtr.dtype == np.uint8 else (lambda a: a.astype(np.float32))
    return cast(xtr), ytr.reshape(-1).astype(np.int32), cast(xte), yte.reshape(-1).astype(np.int32)


def _check(task: str, xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray):
    if task == CUSTOM_TASK:
        return _check_custom(xtr, ytr, xte, yte)
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


def load_arrays(task: str, data_path: str | None,
                sha256: str | None = None) -> tuple[tuple[np.ndarray, ...], str]:
    """(x_train, y_train, x_test, y_test), source -- or MissingDataError listing the places tried.  With
    `sha256` a file of other content is passed over (custom tasks: the cache keys name the file's hash)."""
    tried: list[str] = []
    for path in candidate_places(task, data_path):
        if not path.is_file():
            tried.append(f"{path} (not found)")
            continue
        try:
            if sha256 is not None and (found := file_sha256(path)) != sha256:
                tried.append(f"{path} (sha256 {found[:12]}..., the run's file is {sha256[:12]}...)")
                continue
            return _read_npz(task, path), str(path)
        except (OSError, ValueError) as exc:
            tried.append(f"{path} (unusable: {exc})")
    if task == CUSTOM_TASK:  # nothing to download
        raise MissingDataError(task, tried or ["no data_path given"])
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
    (xtr, ytr, xte, yte), source = load_arrays(spec.task, spec.data_path, spec.data_sha256)
    x_train, y_train, x_val, y_val = split(spec, xtr, ytr)
    classes = custom_classes(ytr, yte) if spec.task == CUSTOM_TASK else TASK_CLASSES[spec.task]
    return TaskData(x_train, y_train, x_val, y_val, xte, yte, source, classes)
