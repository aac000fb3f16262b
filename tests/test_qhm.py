"""QHM against a NumPy transcription of Ma & Yarats (2019) and pytorch_optimizer.QHM fixtures."""

import itertools

import keras
import numpy as np
import pytest
from keras import ops

from _family import (
    STEPS, Table, assert_trajectories_close, fit_losses, fixture_case, float32, quadratic, run,
    run_fixture, variables_for,
)
from keras_momentum.optimizers import QHM


def reference(theta0, gradient, learning_rates, momenta, nu, decay, mode):
    """The paper's QHM: b ← β·b + (1 − β)·g; θ ← θ − η·((1 − ν)·g + ν·b)."""
    theta = [t.copy() for t in theta0]
    buffers = [np.zeros_like(t) for t in theta0]
    trajectory = []
    for t in range(STEPS):
        grads = gradient(theta)
        eta, beta = learning_rates[t], momenta[t]
        for i, g in enumerate(grads):
            if mode == "coupled":
                g = g + decay * theta[i]
            elif mode == "decoupled":
                theta[i] = theta[i] - eta * decay * theta[i]
            buffers[i] = beta * buffers[i] + (1 - beta) * g
            theta[i] = theta[i] - eta * ((1 - nu) * g + nu * buffers[i])
        trajectory.append([t.copy() for t in theta])
    return trajectory


@pytest.mark.parametrize(
    "scheduled,mode", list(itertools.product((False, True), (None, "coupled", "decoupled")))
)
def test_matches_numpy_reference(scheduled, mode):
    theta0, gradient = quadratic(seed=3 + scheduled)
    if scheduled:
        learning_rates = [float32(0.1 * 0.99**t) for t in range(STEPS)]
        momenta = [float32(0.5 + 0.4 * t / STEPS) for t in range(STEPS)]
    else:
        learning_rates, momenta = [float32(0.1)] * STEPS, [float32(0.9)] * STEPS
    decay = float32(0.03)
    optimizer = QHM(
        Table(learning_rates) if scheduled else 0.1,
        momentum=Table(momenta) if scheduled else 0.9,
        nu=0.6,
        weight_decay=decay if mode else None,
        weight_decay_mode=mode or "decoupled",
    )
    ours = run(optimizer, variables_for(theta0), lambda w, _: gradient(w))
    expected = reference(theta0, gradient, learning_rates, momenta, float32(0.6), decay, mode)
    assert_trajectories_close(ours, expected)


def test_two_steps_by_hand():
    # g = 1, β = 0.5, ν = 0.5, η = 0.1: b1 = 0.5, step1 = 0.1·(0.5 + 0.25) = 0.075;
    # b2 = 0.75, step2 = 0.1·(0.5 + 0.375) = 0.0875.
    variable = keras.Variable(np.zeros(2, "float32"))
    optimizer = QHM(0.1, momentum=0.5, nu=0.5)
    for _ in range(2):
        optimizer.apply([ops.ones((2,))], [variable])
    np.testing.assert_allclose(ops.convert_to_numpy(variable), -0.1625, rtol=1e-6)


def test_limits_are_sgd_and_normalised_momentum():
    theta0, gradient = quadratic(seed=5)
    sgd = run(QHM(0.05, momentum=0.9, nu=0.0), variables_for(theta0), lambda w, _: gradient(w))
    plain = run(keras.optimizers.SGD(0.05), variables_for(theta0), lambda w, _: gradient(w))
    assert_trajectories_close(sgd, plain)
    # ν = 1 is heavy ball with velocity (1 − β)·Σβ^k·g, i.e. SGD momentum at rate η·(1 − β).
    qhm = run(QHM(0.5, momentum=0.9, nu=1.0), variables_for(theta0), lambda w, _: gradient(w))
    heavy = run(keras.optimizers.SGD(0.05, momentum=0.9), variables_for(theta0),
                lambda w, _: gradient(w))
    assert_trajectories_close(qhm, heavy)


# pytorch_optimizer.QHM(lr, momentum, nu, weight_decay, weight_decouple) maps to ours with
# the same values; weight_decouple=False is our "coupled" mode, True our "decoupled".
@pytest.mark.parametrize("name", ["qhm", "qhm_coupled_decay", "qhm_decoupled_decay"])
def test_matches_pytorch_optimizer(name):
    case = fixture_case(name)
    kwargs = case["kwargs"]
    decoupled = kwargs.get("weight_decouple", False)
    optimizer = QHM(
        kwargs["lr"], momentum=kwargs["momentum"], nu=kwargs["nu"],
        weight_decay=kwargs.get("weight_decay"),
        weight_decay_mode="decoupled" if decoupled else "coupled",
    )
    ours, expected, _ = run_fixture(optimizer, case)
    assert_trajectories_close(ours, expected)


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        ({"momentum": 1.0}, "momentum"),
        ({"momentum": -0.5}, "momentum"),
        ({"nu": 1.5}, "nu"),
        ({"nu": -0.1}, "nu"),
        ({"nu": "half"}, "nu"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"weight_decay": 0.1, "weight_decay_mode": "l2"}, "weight_decay_mode"),
    ],
)
def test_invalid_arguments(kwargs, argument):
    with pytest.raises((ValueError, TypeError), match=f"`{argument}`") as info:
        QHM(**kwargs)
    assert repr(kwargs[argument]) in str(info.value)


def test_config_round_trip():
    for optimizer in (
        QHM(0.01, momentum=0.95, nu=0.8, weight_decay=1e-4, clipnorm=1.0, name="q"),
        QHM(Table([0.1, 0.05]), momentum=Table([0.9, 0.99]), weight_decay_mode="coupled",
            weight_decay=Table([1e-3])),
    ):
        restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
        assert type(restored) is QHM
        assert restored.get_config() == optimizer.get_config()


def test_fit_reduces_loss_and_exposes_velocities():
    losses, model = fit_losses(QHM(0.05, momentum=0.9))
    assert losses[-1] < 0.2 * losses[0]
    velocities = model.optimizer._velocity_variables()
    assert [v.shape for v in velocities] == [v.shape for v in model.trainable_variables]
