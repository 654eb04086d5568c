"""Generated loss code (python and keras) equals the worker's tree-built loss, for both class reductions."""


import numpy as np
import pytest

from orchestrator.config import TaskConfig, from_dict
from orchestrator.export import export
from tests.orch_helpers import load_generated
from worker.lossexpr import named_loss, parse

tf = pytest.importorskip("tensorflow")




@pytest.mark.tf
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_exported_code_equals_worker_loss(tmp_path, reduction):
    from worker.tf_loss import make_loss

    rng = np.random.default_rng(3)
    labels = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 16)]
    probs = rng.dirichlet(np.ones(10), 16).astype(np.float32)
    for i, tree in enumerate([named_loss("ce"), named_loss("baikal_cma"), parse("sqrt(y) - square(x) + 2")]):
        keras = load_generated(tmp_path, f"k{i}{reduction}", export(tree, "keras", class_reduction=reduction))
        numpy_ = load_generated(tmp_path, f"n{i}{reduction}", export(tree, "python", class_reduction=reduction))
        want = float(make_loss(tree, 1e-7, reduction)(tf.constant(labels), tf.constant(probs)))
        assert float(keras.glo_loss(tf.constant(labels), tf.constant(probs))) == pytest.approx(want, rel=1e-5)
        assert numpy_.glo_loss(labels, probs) == pytest.approx(want, rel=1e-5)


def test_class_reduction_is_part_of_the_cache_budget():
    mean, summed = TaskConfig(), from_dict({"task": {"class_reduction": "sum"}}).task
    assert summed.class_reduction == "sum"
    assert mean.budget() != summed.budget()


def test_task_defaults_are_the_papers_per_task():
    cifar = from_dict({"task": {"name": "cifar10"}}).task
    assert (cifar.batch_size, cifar.learning_rate) == (1024, 0.05)
    mnist = from_dict({"task": {"name": "mnist"}}).task
    assert (mnist.batch_size, mnist.learning_rate, mnist.steps) == (100, 0.01, 2000)
    assert from_dict({"task": {"name": "cifar10", "batch_size": 64}}).task.batch_size == 64


def test_export_rejects_unknown_reduction():
    with pytest.raises(ValueError, match="class_reduction"):
        export(named_loss("ce"), "keras", class_reduction="max")
