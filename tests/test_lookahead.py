"""Lookahead against a NumPy transcription of Zhang et al. (2019), pytorch_optimizer.Lookahead
fixtures, and in Keras workflows (graph, XLA, save/load, mixed precision)."""

import keras
import numpy as np
import pytest
from keras import ops

from _family import (
    STEPS, assert_trajectories_close, fit_losses, fixture_case, float32, quadratic,
    regression_data, run, run_fixture, small_model, variables_for,
)
from keras_momentum.optimizers import QHM, SGD, Lookahead


def reference(theta0, gradient, learning_rate, momentum, k, alpha):
    """Algorithm 1 with heavy-ball SGD inside: k fast steps, then φ ← φ + α(θ − φ), θ ← φ."""
    fast = [t.copy() for t in theta0]
    slow = [t.copy() for t in theta0]
    velocity = [np.zeros_like(t) for t in theta0]
    trajectory = []
    for t in range(STEPS):
        for i, g in enumerate(gradient(fast)):
            velocity[i] = momentum * velocity[i] - learning_rate * g
            fast[i] = fast[i] + velocity[i]
        if (t + 1) % k == 0:
            for i in range(len(fast)):
                slow[i] = slow[i] + alpha * (fast[i] - slow[i])
                fast[i] = slow[i].copy()
        trajectory.append([f.copy() for f in fast])
    return trajectory


@pytest.mark.parametrize(
    "inner,k,alpha",
    [
        (lambda: keras.optimizers.SGD(0.05, momentum=0.9), 5, 0.5),
        (lambda: SGD(0.05, momentum=0.9, formulation="pytorch"), 3, 0.8),
        (lambda: keras.optimizers.SGD(0.05, momentum=0.9), 1, 0.3),
    ],
    ids=["keras_sgd", "our_sgd", "every_step"],
)
def test_matches_numpy_reference(inner, k, alpha):
    theta0, gradient = quadratic(seed=60 + k)
    optimizer = Lookahead(inner(), sync_period=k, slow_step_size=alpha)
    ours = run(optimizer, variables_for(theta0), lambda w, _: gradient(w))
    expected = reference(theta0, gradient, float32(0.05), float32(0.9), k, float32(alpha))
    assert_trajectories_close(ours, expected)


# pytorch_optimizer.Lookahead(optimizer, k, alpha) maps to Lookahead(ours, sync_period=k,
# slow_step_size=alpha); torch.optim.SGD(lr, momentum) at a constant rate to Keras's SGD.
@pytest.mark.parametrize(
    "name,inner",
    [
        ("lookahead_sgd", lambda kw: keras.optimizers.SGD(kw["lr"], momentum=kw["momentum"])),
        ("lookahead_qhm", lambda kw: QHM(kw["lr"], momentum=kw["momentum"], nu=kw["nu"])),
    ],
)
def test_matches_pytorch_optimizer(name, inner):
    case = fixture_case(name)
    kwargs = case["kwargs"]
    optimizer = Lookahead(inner(kwargs["inner"][1]), sync_period=kwargs["k"],
                          slow_step_size=kwargs["alpha"])
    ours, expected, _ = run_fixture(optimizer, case)
    assert_trajectories_close(ours, expected)


def _apply(optimizer, variable, values):
    for value in values:
        optimizer.apply([ops.convert_to_tensor(np.full(2, value, "float32"))], [variable])
    return ops.convert_to_numpy(variable)


def test_counts_only_real_inner_updates():
    # Inner SGD(1.0) accumulating 2 micro-batches: mean gradients 1 then 3, θ = −1, −4;
    # sync after the second real update: φ = 0 + 0.5·(−4 − 0) = −2.
    variable = keras.Variable(np.zeros(2, "float32"))
    optimizer = Lookahead(SGD(1.0, gradient_accumulation_steps=2), sync_period=2)
    np.testing.assert_allclose(_apply(optimizer, variable, [1, 1, 3]), -1.0)
    np.testing.assert_allclose(_apply(optimizer, variable, [3]), -2.0)
    assert int(optimizer.iterations) == 2
    # Skipped non-finite steps do not count either.
    variable = keras.Variable(np.zeros(2, "float32"))
    optimizer = Lookahead(SGD(1.0, skip_nonfinite=True), sync_period=2)
    np.testing.assert_allclose(_apply(optimizer, variable, [1, np.nan]), -1.0)
    np.testing.assert_allclose(_apply(optimizer, variable, [1]), -1.0)  # φ = ½·(−2)


def test_delegates_learning_rate_and_iterations():
    inner = SGD(0.1, momentum=0.9)
    optimizer = Lookahead(inner)
    optimizer.learning_rate = 0.02
    assert float(ops.convert_to_numpy(inner.learning_rate)) == pytest.approx(0.02)
    assert float(ops.convert_to_numpy(optimizer.learning_rate)) == pytest.approx(0.02)
    variable = keras.Variable(np.zeros(2, "float32"))
    _apply(optimizer, variable, [1, 1, 1])
    assert int(optimizer.iterations) == int(inner.iterations) == 3
    assert len(optimizer.slow_weights) == 1
    assert len(optimizer.variables) == len(optimizer._variables) + len(inner.variables)


@pytest.mark.tensorflow
def test_fit_graph_and_xla_agree_and_reduce_loss():
    results = []
    for jit in (False, True):
        x, y = regression_data()
        model = small_model()
        model.compile(Lookahead(keras.optimizers.SGD(0.02, momentum=0.9), sync_period=3), "mse",
                      jit_compile=jit)
        losses = model.fit(x, y, epochs=4, batch_size=16, verbose=0, shuffle=False).history["loss"]
        assert losses[-1] < 0.2 * losses[0]
        results.append(model.get_weights())
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_fit_reduces_loss():
    losses, model = fit_losses(Lookahead(QHM(0.05, momentum=0.9)))
    assert losses[-1] < 0.2 * losses[0]
    assert int(model.optimizer.iterations) == 5 * 8


def test_save_load_continue_equals_uninterrupted(tmp_path):
    x, y = regression_data()

    def make():
        return Lookahead(keras.optimizers.SGD(0.02, momentum=0.9), sync_period=3,
                         slow_step_size=0.6)

    def fit(model, epochs):
        model.fit(x, y, epochs=epochs, batch_size=32, verbose=0, shuffle=False)

    reference_model = small_model()
    reference_model.compile(make(), "mse")
    fit(reference_model, 4)
    interrupted = small_model()
    interrupted.compile(make(), "mse")
    fit(interrupted, 2)  # 8 updates: mid-way through a period of 3
    interrupted.save(tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras")
    assert isinstance(restored.optimizer, Lookahead)
    assert isinstance(restored.optimizer.inner_optimizer, keras.optimizers.SGD)
    for a, b in zip(restored.optimizer.slow_weights, interrupted.optimizer.slow_weights):
        np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))
    fit(restored, 2)
    for a, b in zip(restored.get_weights(), reference_model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_trains_inside_loss_scale_optimizer():
    keras.mixed_precision.set_global_policy("mixed_float16")
    losses, model = fit_losses(Lookahead(SGD(0.02, momentum=0.9)), epochs=3)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(model.optimizer.inner_optimizer, Lookahead)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        ({"sync_period": 0}, "sync_period"),
        ({"sync_period": 2.0}, "sync_period"),
        ({"slow_step_size": 0.0}, "slow_step_size"),
        ({"slow_step_size": 1.5}, "slow_step_size"),
        ({"clipnorm": 1.0}, "clipnorm"),
    ],
)
def test_invalid_arguments(kwargs, argument):
    with pytest.raises((ValueError, TypeError), match=f"`{argument}`"):
        Lookahead(keras.optimizers.SGD(0.1), **kwargs)


def test_rejects_a_non_optimizer():
    with pytest.raises(TypeError, match="`optimizer`"):
        Lookahead("sgd")


def test_config_round_trip():
    for inner in (keras.optimizers.Adam(1e-3), QHM(0.01, momentum=0.9, weight_decay=1e-4)):
        optimizer = Lookahead(inner, sync_period=6, slow_step_size=0.7, name="look")
        restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
        assert type(restored) is Lookahead
        assert type(restored.inner_optimizer) is type(inner)
        assert restored.get_config() == optimizer.get_config()
