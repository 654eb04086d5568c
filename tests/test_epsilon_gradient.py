"""task.epsilon_gradient: the prediction clip passes the loss's gradient straight through below epsilon (the
default), or none ("zero", TensorFlow's clip, every run before the setting).  The worker's loss, the
zero-training filter's numpy mirror of it and the exported Keras loss agree on it; old runs, specs and cache
keys keep meaning what they meant."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.config import TaskConfig, from_dict, from_stored, stored_task
from orchestrator.run.cachekey import eval_key
from orchestrator.search.filters import check, logit_gradient
from worker.lossexpr import named_loss, parse
from worker.lossexpr.numeric import compile_dy
from worker.spec import EPSILON_GRADIENT_DEFAULT, CandidateSpec, WorkerSpec

EPS = 1e-7


def _batch() -> tuple[np.ndarray, np.ndarray]:
    """Logits for 4 images of 10 classes; images 0 and 1 have their true class far under epsilon."""
    rng = np.random.default_rng(3)
    labels = np.array([0, 1, 2, 3])
    z = rng.normal(0.0, 1.0, (4, 10))
    z[0, 0] -= 25.0  # p(true) ~ 1e-11
    z[1, 1] -= 20.0
    return np.eye(10)[labels], z


def _worker_loss(tree, reduction: str, mode: str, x, z):
    """The worker's loss at logits z: its model's output softmax (floored in straight-through), then the loss."""
    import tensorflow as tf

    from worker.tf_loss import floored_softmax, make_loss

    softmax = floored_softmax(EPS) if mode == "straight-through" else tf.nn.softmax
    return make_loss(tree, EPS, reduction, mode)(tf.constant(x), softmax(z))


@pytest.mark.tf
@pytest.mark.parametrize("mode", ["straight-through", "zero"])
@pytest.mark.parametrize("name", ["ce", "baikal", "(y - x) / sqrt(y)"])
def test_the_filter_mirrors_the_worker_loss_gradient_in_both_modes(name: str, mode: str) -> None:
    import tensorflow as tf

    tree = named_loss(name) if name in ("ce", "baikal") else parse(name)
    x, z = _batch()
    for reduction in ("sum", "mean"):
        zt = tf.Variable(z, dtype=tf.float64)
        with tf.GradientTape() as tape:
            loss = _worker_loss(tree, reduction, mode, x, zt)
        g_tf = tape.gradient(loss, zt).numpy()
        loss_np, g_np = logit_gradient(compile_dy(tree), x, z, EPS, reduction, mode)
        assert loss_np == pytest.approx(float(loss), rel=1e-9)
        assert np.allclose(g_np, g_tf, rtol=1e-6, atol=1e-12), (name, mode, reduction)


@pytest.mark.tf
def test_straight_through_keeps_a_gradient_where_the_clip_passes_none() -> None:
    """The CIFAR-10 freeze in small, in float32 as the worker trains: ce on images whose true-class probability
    is under epsilon (image 0: exactly 0, underflowed) gets no gradient from TensorFlow's clip, and about ce's
    own (y_true - 1 = -1 per image, over the batch) from the straight-through one; values are the same either
    way, and so are the gradients of images above epsilon."""
    import tensorflow as tf

    x, z = _batch()
    z[0, 0] -= 200.0  # p(true) = 0.0 in float32
    out = {}
    for mode in ("straight-through", "zero"):
        zt = tf.Variable(z, dtype=tf.float32)
        with tf.GradientTape() as tape:
            loss = _worker_loss(named_loss("ce"), "sum", mode, x, zt)
        out[mode] = (float(loss), tape.gradient(loss, zt).numpy())
    (l_st, g_st), (l_zero, g_zero) = out["straight-through"], out["zero"]
    assert l_st == l_zero
    assert np.all(g_zero[:2] == 0.0)  # the images under epsilon: frozen
    assert g_st[0, 0] == pytest.approx(-1 / 4, rel=1e-3) and g_st[1, 1] == pytest.approx(-1 / 4, rel=1e-3)
    assert np.allclose(g_st[2:], g_zero[2:], rtol=1e-6, atol=0)  # above epsilon: softmax's own gradient


def test_the_default_is_straight_through_and_old_runs_resume_as_they_began() -> None:
    new = from_dict({})
    assert new.task.epsilon_gradient == EPSILON_GRADIENT_DEFAULT == "straight-through"
    stored = new.to_dict()
    del stored["task"]["epsilon_gradient"]  # a run stored before the setting existed
    assert from_stored(stored).task.epsilon_gradient == "zero"
    assert from_stored(new.to_dict()).task.epsilon_gradient == "straight-through"
    # the same rule for readers of a stored [task] alone (glo export)
    assert stored_task({"epsilon": 1e-7}) == {"epsilon": 1e-7, "epsilon_gradient": "zero"}
    assert stored_task({"epsilon_gradient": "straight-through"})["epsilon_gradient"] == "straight-through"
    with pytest.raises(Exception, match="task.epsilon_gradient"):
        from_dict({"task": {"epsilon_gradient": "identity"}})


def test_cache_keys_and_specs_tell_the_modes_apart_and_old_ones_are_unchanged() -> None:
    zero, st = TaskConfig(epsilon_gradient="zero"), TaskConfig()
    assert "epsilon_gradient" not in zero.budget()  # every key made before the setting stays what it was
    assert st.budget()["epsilon_gradient"] == "straight-through"
    assert eval_key("s1:x*log(y)", zero) != eval_key("s1:x*log(y)", st)
    cands = [CandidateSpec("c", named_loss("ce"))]
    old, new = zero.worker_spec(cands), st.worker_spec(cands)
    assert "epsilon_gradient" not in old.to_json() and new.to_json()["epsilon_gradient"] == "straight-through"
    assert WorkerSpec.from_json(old.to_json()).epsilon_gradient == "zero"
    assert WorkerSpec.from_json(new.to_json()) == new and old.spec_hash() != new.spec_hash()
    with pytest.raises(Exception, match="epsilon_gradient"):
        WorkerSpec.from_json({**new.to_json(), "epsilon_gradient": "identity"})


@pytest.mark.parametrize("name", ["ce", "baikal", "baikal_cma"])
def test_the_filter_passes_the_paper_losses_in_both_modes(name: str) -> None:
    for mode in ("straight-through", "zero"):
        assert check(named_loss(name), EPS, "sum", mode).ok


@pytest.mark.tf
def test_the_exported_keras_loss_has_the_same_gradient_as_the_worker(tmp_path) -> None:
    import importlib.util

    import tensorflow as tf

    from orchestrator.export import export
    from worker.tf_loss import make_loss

    x, z = _batch()  # not underflowed: a user's own model has a plain softmax, the exported clip is what it gets
    tree = named_loss("baikal")
    for mode in ("straight-through", "zero"):
        path = tmp_path / f"exported_{mode}.py"
        path.write_text(export(tree, "keras", epsilon=EPS, class_reduction="sum", epsilon_gradient=mode))
        spec = importlib.util.spec_from_file_location(f"exported_{mode.replace('-', '_')}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)  # our own generated text, written by this test
        grads = []
        for fn in (mod.glo_loss, make_loss(tree, EPS, "sum", mode)):
            zt = tf.Variable(z, dtype=tf.float64)
            with tf.GradientTape() as tape:
                loss = fn(tf.constant(x), tf.nn.softmax(zt))
            grads.append(tape.gradient(loss, zt).numpy())
        assert np.allclose(grads[0], grads[1], rtol=1e-9), mode


@pytest.mark.tf
def test_the_worker_models_softmax_is_floored_only_in_straight_through_mode() -> None:
    """Same weights and outputs as models.build (only the backward of the output softmax differs), for the
    unfused model and the fused net built from it."""
    import keras

    from worker import models
    from worker.tf_loss import FLOORED_SOFTMAX, build_model

    for task in ("mnist", "cifar10"):
        outs = {}
        for mode in ("straight-through", "zero"):
            keras.utils.set_random_seed(0)
            model, _pre, _pre_eval = build_model(task, EPS, mode)
            outs[mode] = (model.layers[-1].activation.__name__, [w.numpy() for w in model.weights])
        keras.utils.set_random_seed(0)
        plain = models.build(task)[0]
        assert outs["straight-through"][0] == FLOORED_SOFTMAX and outs["zero"][0] == "softmax"
        for a, b, c in zip(outs["straight-through"][1], outs["zero"][1], plain.weights, strict=True):
            assert np.array_equal(a, b) and np.array_equal(a, c.numpy())
