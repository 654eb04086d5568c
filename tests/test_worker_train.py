"""Short TensorFlow training runs on synthetic data (seconds on a CPU)."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from worker.data import load_task  # noqa: E402
from worker.lossexpr import named_loss, parse  # noqa: E402
from worker.lossexpr.numeric import batch_loss  # noqa: E402
from worker.spec import WorkerSpec, read_results  # noqa: E402

pytestmark = pytest.mark.tf


def _mnist_like(path, n_train=400, n_test=100, seed=0):
    """Learnable MNIST-shaped data: class c has a bright band at rows 2c..2c+5."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(y):
            x[i, 2 * c:2 * c + 6, 4:24] = 250
        return x, y

    (xtr, ytr), (xte, yte) = make(n_train), make(n_test)
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)


def _spec(data_dir, candidates, **kw) -> WorkerSpec:
    raw = {"glo_worker_spec": 1, "task": "mnist", "steps": 30, "batch_size": 32, "learning_rate": 0.1, "seed": 0,
           "validation_size": 100, "data_path": str(data_dir), "test_accuracy": True, "curve_interval": 10,
           "candidates": [{"id": cid, "tree": tree.to_json()} for cid, tree in candidates]}
    raw.update(kw)
    return WorkerSpec.from_json(raw)


CANDIDATES = [("ce", named_loss("ce")), ("boom", parse("x / (y - y)")), ("baikal", named_loss("baikal"))]


@pytest.fixture(scope="module")
def mnist_runs(tmp_path_factory):
    """The same 3-candidate, 30-step spec run twice in one process."""
    from worker.train import run_spec

    d = tmp_path_factory.mktemp("mnist")
    _mnist_like(d / "mnist.npz")
    spec = _spec(d, CANDIDATES)
    data = load_task(spec)
    runs = []
    for i in range(2):
        out = d / f"result{i}.json"
        run_spec(spec, data, out)
        runs.append(read_results(out))
    return spec, runs


def test_30_step_mnist_run(mnist_runs):
    spec, runs = mnist_runs
    ce = runs[0][1][0]
    assert ce.status == "ok" and ce.candidate_id == "ce"
    assert ce.extra["steps_done"] == 30 and ce.extra["train_size"] == 300
    assert ce.fitness == ce.validation_accuracy and 0.0 <= ce.fitness <= 1.0
    assert ce.test_accuracy is not None and np.isfinite(ce.final_train_loss)
    assert [p[0] for p in ce.curve] == [10, 20, 30] and ce.curve[-1][1] == ce.validation_accuracy
    assert ce.device and ce.tensorflow_version == tf.__version__
    assert ce.extra["deterministic"] is True and ce.extra["xla"] is False
    assert ce.spec_hash == spec.spec_hash() == runs[0][0]
    assert ce.wall_seconds >= ce.train_seconds > 0 and ce.eval_seconds > 0


def test_multi_candidate_writes_every_result(mnist_runs):
    _, runs = mnist_runs
    assert [r.candidate_id for r in runs[0][1]] == ["ce", "boom", "baikal"]


def test_exploding_tree_is_fitness_zero_and_next_candidate_trains(mnist_runs):
    _, runs = mnist_runs
    boom, baikal = runs[0][1][1], runs[0][1][2]
    assert boom.status == "nonfinite" and boom.fitness == 0.0 and boom.nonfinite_step == 1
    assert boom.final_train_loss is None and boom.validation_accuracy is None
    assert baikal.status == "ok" and baikal.extra["steps_done"] == 30
    assert baikal.fitness > 0.5  # the bands are easy: a trained net beats chance by far


def test_same_spec_same_seed_same_accuracy(mnist_runs):
    _, (a, b) = mnist_runs
    for ra, rb in zip(a[1], b[1]):
        assert ra.fitness == rb.fitness and ra.curve == rb.curve
        assert ra.final_train_loss == rb.final_train_loss


def test_exploding_later_records_the_step(tmp_path):
    """Finite at first, non-finite once softmax saturates to exactly 1 (log(1 - 1)): stops at that step."""
    from worker.train import run_spec

    _mnist_like(tmp_path / "mnist.npz")
    tree = parse("(0 - x) * log(1 - y)")  # valid (reads x and y); rewards y_true -> 1 without bound
    spec = _spec(tmp_path, [("late", tree), ("ce", named_loss("ce"))], steps=20, curve_interval=None,
                 learning_rate=10.0)
    run_spec(spec, load_task(spec), tmp_path / "r.json")
    late, ce = read_results(tmp_path / "r.json")[1]
    assert late.status == "nonfinite" and late.fitness == 0.0
    assert 1 < late.nonfinite_step < 20 and late.extra["steps_done"] == late.nonfinite_step
    assert ce.candidate_id == "ce" and ce.extra["steps_done"] in (20, ce.nonfinite_step)


def test_tf_loss_matches_numpy_reference():
    from worker.tf_loss import make_loss

    rng = np.random.default_rng(1)
    y = rng.dirichlet(np.ones(10), size=8).astype(np.float32)
    y[0, 3] = 0.0  # an exact zero: clipped to epsilon before the tree sees it
    x = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 8)]
    for tree in (named_loss("ce"), named_loss("baikal"), named_loss("baikal_cma"), parse("sqrt(y) - square(x) + 2")):
        for reduction in ("mean", "sum"):
            got = float(make_loss(tree, 1e-7, reduction)(tf.constant(x), tf.constant(y)))
            want = batch_loss(tree, x, np.clip(y, 1e-7, 1.0), reduction)
            assert np.isfinite(got) and got == pytest.approx(want, rel=1e-4)


def test_sum_reduced_ce_tree_is_keras_crossentropy():
    """With class_reduction "sum", the tree x * log(y) is exactly Keras' categorical cross-entropy."""
    from worker.tf_loss import make_loss

    rng = np.random.default_rng(2)
    y = rng.dirichlet(np.ones(10), size=16).astype(np.float32)
    x = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 16)]
    keras_ce = float(tf.keras.losses.CategoricalCrossentropy()(x, y))
    tree_ce = float(make_loss(named_loss("ce"), 1e-7, "sum")(tf.constant(x), tf.constant(y)))
    assert tree_ce == pytest.approx(keras_ce, rel=1e-5)


def test_cifar_shaped_run(tmp_path):
    from worker import models
    from worker.train import run_spec

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (80, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, (80, 1), dtype=np.uint8)
    np.savez(tmp_path / "cifar10.npz", x_train=x[:60], y_train=y[:60], x_test=x[60:], y_test=y[60:])

    crops = models.cifar10_train(tf.constant(x[:16]), tf.constant([0, 1], tf.int64))
    assert crops.shape == (16, 24, 24, 3)
    assert np.allclose(np.mean(crops.numpy(), axis=(1, 2, 3)), 0, atol=1e-4)  # standardized per image
    again = models.cifar10_train(tf.constant(x[:16]), tf.constant([0, 1], tf.int64))
    other = models.cifar10_train(tf.constant(x[:16]), tf.constant([0, 2], tf.int64))
    assert np.array_equal(crops.numpy(), again.numpy()) and not np.array_equal(crops.numpy(), other.numpy())
    central = models.cifar10_eval(tf.constant(x[:4]))
    assert central.shape == (4, 24, 24, 3)
    probs = models.cifar10_model()(central)
    assert probs.shape == (4, 10) and np.allclose(np.sum(probs.numpy(), axis=1), 1, atol=1e-5)

    spec = WorkerSpec.from_json({
        "glo_worker_spec": 1, "task": "cifar10", "steps": 3, "batch_size": 16, "learning_rate": 0.05,
        "validation_size": 20, "data_path": str(tmp_path), "test_accuracy": True,
        "candidates": [{"id": "b", "tree": named_loss("baikal").to_json()}]})
    run_spec(spec, load_task(spec), tmp_path / "r.json")
    (r,) = read_results(tmp_path / "r.json")[1]
    assert r.status == "ok" and r.extra["steps_done"] == 3 and r.extra["train_size"] == 40
    assert r.test_accuracy is not None and 0 <= r.fitness <= 1


def test_evaluation_measures_test_curve_histogram_and_fraction(mnist_runs, tmp_path):
    """What `glo evaluate` reads: the test-set curve (Figs. 3, 5), the output-probability histogram (Fig. 7),
    and training on a fraction of the training set (Fig. 4)."""
    from worker.train import run_spec

    spec, runs = mnist_runs
    ce = runs[0][1][0]
    assert [p[0] for p in ce.extra["test_curve"]] == [10, 20, 30] and ce.extra["test_curve"][-1][1] == ce.test_accuracy
    hist = ce.extra["probability_histogram"]
    assert len(hist["edges"]) == 21 and len(hist["counts"]) == 20
    assert sum(hist["counts"]) == 100 * 10  # every class probability of every test image
    assert WorkerSpec.from_json(spec.to_json()).spec_hash() == spec.spec_hash()
    assert "train_fraction" not in spec.to_json()  # unset: every older spec keeps its hash

    small = _spec(spec.data_path, CANDIDATES[:1], train_fraction=0.2, steps=5, curve_interval=None)
    out = tmp_path / "r.json"
    run_spec(small, load_task(small), out)
    (res,) = read_results(out)[1]
    assert res.extra["train_size"] == 60  # 20% of the 300 training images
    assert "test_curve" not in res.extra and res.extra["probability_histogram"]


def test_every_result_records_what_decides_reproducibility(mnist_runs):
    """Same machine + spec + seed = same fitness; across machines the device, CPU, threads and builds decide."""
    _spec_, runs = mnist_runs
    for res in runs[0][1]:
        p = res.extra["platform"]
        assert p["device"] == res.device and p["tensorflow"] == tf.__version__
        assert p["cpu"] and p["cpu_count"] >= 1 and "intra_op_threads" in p
        assert isinstance(p["onednn"], bool)  # the kernel family (worker/tf_env.py)


def test_fashion_mnist_trains_the_paper_mnist_network(tmp_path):
    """The first built-in task beyond the paper's two: MNIST's layout and network, its own data file."""
    from worker.train import run_spec

    _mnist_like(tmp_path / "fashion_mnist.npz", seed=1)
    spec = _spec(tmp_path, [("ce", named_loss("ce"))], task="fashion_mnist")
    data = load_task(spec)
    assert data.source.endswith("fashion_mnist.npz")
    run_spec(spec, data, tmp_path / "r.json")
    (r,) = read_results(tmp_path / "r.json")[1]
    assert r.status == "ok" and r.extra["steps_done"] == 30 and r.extra["train_size"] == 300
    assert r.fitness > 0.3  # the bands are learnable in 30 steps; chance is 0.1


def test_cifar100_trains_the_cifar10_network_with_100_outputs(tmp_path):
    """CIFAR-100: CIFAR-10's layout, pipeline and learning-rate schedule, a softmax of 100, labels up to 99."""
    from worker import models
    from worker.train import run_spec

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (80, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 100, (80, 1), dtype=np.uint8)
    y[0] = 99
    np.savez(tmp_path / "cifar100.npz", x_train=x[:60], y_train=y[:60], x_test=x[60:], y_test=y[60:])
    model, _, pre_eval = models.build("cifar100")
    assert model.output_shape == (None, 100) and models.weight_decay_variables(model)
    spec = WorkerSpec.from_json({
        "glo_worker_spec": 1, "task": "cifar100", "steps": 3, "batch_size": 16, "learning_rate": 0.05,
        "validation_size": 20, "data_path": str(tmp_path), "test_accuracy": True,
        "candidates": [{"id": "ce", "tree": named_loss("ce").to_json()}]})
    run_spec(spec, load_task(spec), tmp_path / "r.json")
    (r,) = read_results(tmp_path / "r.json")[1]
    assert r.status == "ok" and r.extra["steps_done"] == 3 and r.extra["train_size"] == 40
    assert r.test_accuracy is not None and 0 <= r.fitness <= 1
