"""Adaptive gradient clipping against optax's `adaptive_grad_clip` fixtures and NumPy."""

import json
import pathlib

import keras
import numpy as np
import pytest

from keras_momentum.optimizers import diagnostics
from keras import ops

from keras_momentum.optimizers import LARS, QHM, SGD, AggMo, ScheduleFreeSGD
from keras_momentum.optimizers._adaptive_clipping import clip, unit_axes

OPTAX = json.loads((pathlib.Path(__file__).parent / "fixtures" / "agc_optax.json").read_text())
WEIGHTS = [np.asarray(w, np.float32) for w in OPTAX["weights"]]
GRADIENTS = [np.asarray(g, np.float32) for g in OPTAX["gradients"]]
CASES = {case["clipping"]: [np.asarray(c, np.float32) for c in case["clipped"]]
         for case in OPTAX["cases"]}


def agc_numpy(gradient, weights, clipping):
    """Brock et al.'s unit-wise rule, units over all axes but the last (one for vectors)."""
    g, w = gradient.astype(np.float64), weights.astype(np.float64)
    if sum(d != 1 for d in w.shape) <= 1:
        axes = tuple(range(w.ndim))
    else:
        axes = tuple(range(w.ndim - 1))
    g_norm = np.sqrt(np.sum(g * g, axis=axes, keepdims=True))
    max_norm = clipping * np.maximum(np.sqrt(np.sum(w * w, axis=axes, keepdims=True)), 1e-3)
    return np.where(g_norm < max_norm, g, g * max_norm / np.maximum(g_norm, 1e-6))


@pytest.mark.parametrize("clipping", list(CASES))
def test_clip_matches_optax(clipping):
    for w, g, want in zip(WEIGHTS, GRADIENTS, CASES[clipping]):
        got = ops.convert_to_numpy(clip(ops.convert_to_tensor(g), keras.Variable(w), clipping))
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-9, err_msg=str(w.shape))


def test_units_are_all_axes_but_the_last():
    assert unit_axes(()) == ()
    assert unit_axes((7,)) == (0,)
    assert unit_axes((1, 5)) == (0, 1)  # one dimension longer than 1: one unit, as optax
    assert unit_axes((6, 4)) == (0,)
    assert unit_axes((3, 4, 5)) == (0, 1)
    assert unit_axes((2, 2, 3, 4)) == (0, 1, 2)


@pytest.mark.parametrize("make", [
    lambda **kw: SGD(1.0, **kw), lambda **kw: SGD(1.0, momentum=0.9, **kw),
])
def test_the_optimizer_steps_with_clipped_gradients(make):
    clipping = 0.3
    variables = [keras.Variable(w) for w in WEIGHTS]
    make(adaptive_clipnorm=clipping).apply([ops.convert_to_tensor(g) for g in GRADIENTS], variables)
    for v, w, want in zip(variables, WEIGHTS, CASES[clipping]):
        np.testing.assert_allclose(w - ops.convert_to_numpy(v), want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("keras_clip", [{"clipnorm": 0.05}, {"clipvalue": 0.01},
                                        {"global_clipnorm": 0.2}])
def test_keras_clipping_runs_first(keras_clip):
    variables = [keras.Variable(w) for w in WEIGHTS]
    optimizer = SGD(1.0, adaptive_clipnorm=0.3, **keras_clip)
    optimizer.apply([ops.convert_to_tensor(g) for g in GRADIENTS], variables)
    grads = [g.astype(np.float64) for g in GRADIENTS]
    if "clipnorm" in keras_clip:
        grads = [g * min(1.0, 0.05 / np.linalg.norm(g)) for g in grads]
    elif "clipvalue" in keras_clip:
        grads = [np.clip(g, -0.01, 0.01) for g in grads]
    else:
        total = np.sqrt(sum(np.sum(g * g) for g in grads))
        grads = [g * 0.2 / max(total, 0.2) for g in grads]
    for v, w, g in zip(variables, WEIGHTS, grads):
        np.testing.assert_allclose(w - ops.convert_to_numpy(v), agc_numpy(g, w, 0.3),
                                   rtol=1e-5, atol=1e-7)


def test_scalar_weights_are_one_unit():
    variable = keras.Variable(np.float32(0.5))
    SGD(1.0, adaptive_clipnorm=0.1).apply([ops.convert_to_tensor(np.float32(2.0))], [variable])
    np.testing.assert_allclose(ops.convert_to_numpy(variable), 0.45, rtol=1e-6)


def test_gradients_are_clipped_after_accumulation():
    variables = [keras.Variable(w) for w in WEIGHTS]
    optimizer = SGD(1.0, adaptive_clipnorm=0.3, gradient_accumulation_steps=2)
    halves = [(2 * g, np.zeros_like(g)) for g in GRADIENTS]  # their mean is the gradient
    for k in range(2):
        optimizer.apply([ops.convert_to_tensor(h[k]) for h in halves], variables)
    for v, w, want in zip(variables, WEIGHTS, CASES[0.3]):
        np.testing.assert_allclose(w - ops.convert_to_numpy(v), want, rtol=1e-5, atol=1e-7)


def test_fit_clips_inside_the_compiled_step():
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(SGD(1.0, adaptive_clipnorm=1e-3), loss="mse")
    before = [ops.convert_to_numpy(w) for w in model.trainable_weights]
    x, y = np.ones((4, 3), "float32"), 100 * np.ones((4, 2), "float32")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    for w, old in zip(model.trainable_weights, before):
        change = ops.convert_to_numpy(w) - old
        limit = 1e-3 * np.maximum(np.linalg.norm(old, axis=0 if old.ndim > 1 else None), 1e-3)
        assert np.all(np.linalg.norm(change, axis=0 if old.ndim > 1 else None) <= limit * 1.0001)


@pytest.mark.tensorflow
def test_sparse_gradients_are_densified():
    import tensorflow as tf

    weights = np.arange(12, dtype="float32").reshape(4, 3) / 10
    rows = tf.IndexedSlices(tf.ones((2, 3)), tf.constant([0, 2]), tf.constant([4, 3]))
    dense = ops.convert_to_numpy(tf.convert_to_tensor(rows))
    variable = keras.Variable(weights)
    SGD(1.0, adaptive_clipnorm=0.1).apply([rows], [variable])
    np.testing.assert_allclose(weights - ops.convert_to_numpy(variable),
                               agc_numpy(dense, weights, 0.1), rtol=1e-6)


@pytest.mark.parametrize("make", [SGD, QHM, AggMo, LARS, ScheduleFreeSGD])
def test_config_round_trip_and_clipping_configured(make):
    optimizer = make(learning_rate=0.1, adaptive_clipnorm=0.02)
    assert optimizer._clipping_configured()
    config = optimizer.get_config()
    assert config["adaptive_clipnorm"] == 0.02
    assert type(optimizer).from_config(config).get_config() == config
    assert not make(learning_rate=0.1)._clipping_configured()


@pytest.mark.parametrize("name", ["clipnorm", "clipvalue", "global_clipnorm"])
def test_keras_clipping_counts_as_configured(name):
    assert SGD(0.1, **{name: 1.0})._clipping_configured()


@pytest.mark.parametrize("value,error", [
    (0.0, ValueError), (-0.1, ValueError), (float("nan"), ValueError), ("0.1", TypeError),
])
def test_invalid_adaptive_clipnorm_is_rejected(value, error):
    with pytest.raises(error, match="adaptive_clipnorm"):
        SGD(0.1, adaptive_clipnorm=value)


def test_diagnostics_record_the_adaptively_clipped_norm():
    variables = [keras.Variable(w) for w in WEIGHTS]
    optimizer = SGD(1.0, adaptive_clipnorm=0.3)
    diagnostics.attach(optimizer).request("test", ["gradient_norms"], 1)
    optimizer.apply([ops.convert_to_tensor(g) for g in GRADIENTS], variables)
    columns = optimizer.recorder.read()[1]
    norm = np.sqrt(sum(np.sum(np.square(c, dtype=np.float64)) for c in CASES[0.3]))
    np.testing.assert_allclose(columns["gradient_norm/global_clipped"], [norm], rtol=1e-5)
    norm = np.sqrt(sum(np.sum(np.square(g, dtype=np.float64)) for g in GRADIENTS))
    np.testing.assert_allclose(columns["gradient_norm/global"], [norm], rtol=1e-5)
