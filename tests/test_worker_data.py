"""Data location, layout checks and the seeded split (no TensorFlow needed)."""

from __future__ import annotations

import numpy as np
import pytest

from worker.data import MissingDataError, load_arrays, load_task, split
from worker.lossexpr import named_loss
from worker.spec import SpecError, WorkerSpec


def _npz(path, n=50, shape=(28, 28), label_shape=()):
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 255, (n, *shape), dtype=np.uint8),
             y_train=rng.integers(0, 10, (n, *label_shape), dtype=np.uint8),
             x_test=rng.integers(0, 255, (10, *shape), dtype=np.uint8),
             y_test=rng.integers(0, 10, (10, *label_shape), dtype=np.uint8))


def _spec(**kw) -> WorkerSpec:
    from worker.spec import CandidateSpec
    base = dict(task="mnist", candidates=(CandidateSpec("a", named_loss("ce")),), validation_size=10)
    base.update(kw)
    return WorkerSpec(**base)


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("GLO_DATA_DOWNLOAD", "0")
    monkeypatch.delenv("GLO_DATA_DIR", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))


def test_spec_path_directory_and_file(tmp_path):
    _npz(tmp_path / "mnist.npz")
    (xtr, ytr, xte, yte), src = load_arrays("mnist", str(tmp_path))
    assert xtr.shape == (50, 28, 28) and ytr.dtype == np.int32 and src.endswith("mnist.npz")
    assert load_arrays("mnist", str(tmp_path / "mnist.npz"))[1] == src


def test_glo_data_dir_and_cifar_jpeg_name(tmp_path, monkeypatch):
    _npz(tmp_path / "cifar10_jpeg.npz", shape=(32, 32, 3), label_shape=(1,))
    monkeypatch.setenv("GLO_DATA_DIR", str(tmp_path))
    (xtr, ytr, _, yte), src = load_arrays("cifar10", None)
    assert xtr.shape == (50, 32, 32, 3) and ytr.shape == (50,) and yte.shape == (10,)
    assert src.endswith("cifar10_jpeg.npz")


def test_missing_lists_every_place(tmp_path, monkeypatch):
    monkeypatch.setenv("GLO_DATA_DIR", str(tmp_path / "envdir"))
    with pytest.raises(MissingDataError) as err:
        load_arrays("mnist", str(tmp_path / "specdir"))
    tried = "\n".join(err.value.tried)
    assert "specdir" in tried and "envdir" in tried and "keras_home" in tried and "GLO_DATA_DOWNLOAD=0" in tried


def test_wrong_layout_is_unusable_not_a_crash(tmp_path):
    _npz(tmp_path / "mnist.npz", shape=(32, 32, 3))
    with pytest.raises(MissingDataError, match="unusable"):
        load_arrays("mnist", str(tmp_path))


def test_split_is_seeded_and_disjoint():
    x = np.arange(100, dtype=np.uint8).reshape(100, 1, 1).repeat(28, 1).repeat(28, 2)
    y = np.zeros(100, np.int32)
    a = split(_spec(seed=3, validation_size=20), x, y)
    b = split(_spec(seed=3, validation_size=20), x, y)
    c = split(_spec(seed=4, validation_size=20), x, y)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not np.array_equal(a[2], c[2])
    train_ids, val_ids = set(a[0][:, 0, 0]), set(a[2][:, 0, 0])
    assert len(train_ids) == 80 and len(val_ids) == 20 and not train_ids & val_ids
    assert len(split(_spec(seed=3, validation_size=20, train_subset=15), x, y)[0]) == 15


def test_validation_larger_than_data_is_a_spec_error(tmp_path):
    _npz(tmp_path / "mnist.npz", n=30)
    with pytest.raises(SpecError, match="validation_size"):
        load_task(_spec(validation_size=30, data_path=str(tmp_path)))


def test_the_data_label_is_defined_once_and_names_the_jpeg_re_encoding() -> None:
    """Reports (db.queries) and figures (orchestrator.experiments.figures) name the data through one function."""
    from orchestrator.experiments.figures import data_label_for
    from worker.data import data_label

    assert data_label("mnist") == "MNIST" and data_label("cifar10", "/d/cifar10.npz") == "CIFAR-10"
    jpeg = data_label("cifar10", None, "", "/work/shared/data/cifar10_jpeg.npz")
    assert jpeg == "CIFAR-10 (JPEG re-encoding, cifar10_jpeg.npz)" == data_label_for("cifar10", "x/cifar10_jpeg.npz")
    assert data_label("mnist", "cifar10_jpeg.npz") == "MNIST"


def test_fashion_mnist_is_its_own_file_never_mnists(tmp_path, monkeypatch):
    """fashion_mnist takes MNIST's layout from fashion_mnist.npz; a directory holding only mnist.npz is no
    Fashion-MNIST (a search must never train one task on the other's images)."""
    _npz(tmp_path / "mnist.npz")
    with pytest.raises(MissingDataError, match="fashion_mnist.npz \\(not found\\)"):
        load_arrays("fashion_mnist", str(tmp_path))
    _npz(tmp_path / "fashion_mnist.npz", n=40)
    monkeypatch.setenv("GLO_DATA_DIR", str(tmp_path))
    (xtr, ytr, _, _), src = load_arrays("fashion_mnist", None)
    assert xtr.shape == (40, 28, 28) and ytr.dtype == np.int32 and src.endswith("fashion_mnist.npz")
    _npz(tmp_path / "fashion_mnist.npz", shape=(32, 32, 3))
    with pytest.raises(MissingDataError, match=r"x_train must be uint8 of shape \(N, 28, 28\)"):
        load_arrays("fashion_mnist", None)


def test_cifar100_labels_go_to_99_and_no_further(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (30, 32, 32, 3), dtype=np.uint8)
    y = np.arange(30, dtype=np.int64).reshape(-1, 1) * 3  # 0..87
    np.savez(tmp_path / "cifar100.npz", x_train=x, y_train=y, x_test=x[:5], y_test=y[:5])
    (_, ytr, _, _), _ = load_arrays("cifar100", str(tmp_path))
    assert ytr.max() == 87 and ytr.dtype == np.int32
    np.savez(tmp_path / "cifar100.npz", x_train=x, y_train=y + 20, x_test=x[:5], y_test=y[:5])
    with pytest.raises(MissingDataError, match=r"y_train labels must be in 0\.\.99, got 20\.\.107"):
        load_arrays("cifar100", str(tmp_path))
