"""AggMo against a NumPy transcription of Lucas et al. (2019) and pytorch_optimizer.AggMo."""

import keras
import numpy as np
import pytest
from keras import ops

from _family import (
    STEPS, Table, assert_trajectories_close, fit_losses, fixture_case, float32, quadratic, run,
    run_fixture, variables_for,
)
from keras_momentum.optimizers import AggMo


def reference(theta0, gradient, learning_rates, betas, decay, mode):
    """The paper's AggMo: v_i ← β_i·v_i − g; θ ← θ + (γ/K)·Σ v_i."""
    theta = [t.copy() for t in theta0]
    velocities = [[np.zeros_like(t) for t in theta0] for _ in betas]
    trajectory = []
    for t in range(STEPS):
        grads = gradient(theta)
        gamma = learning_rates[t]
        for i, g in enumerate(grads):
            if mode == "coupled":
                g = g + decay * theta[i]
            elif mode == "decoupled":
                theta[i] = theta[i] - gamma * decay * theta[i]
            for k, beta in enumerate(betas):
                velocities[k][i] = beta * velocities[k][i] - g
            theta[i] = theta[i] + gamma / len(betas) * sum(v[i] for v in velocities)
        trajectory.append([t.copy() for t in theta])
    return trajectory


@pytest.mark.parametrize(
    "betas,scheduled,mode",
    [
        ((0.0, 0.9, 0.99), False, None),
        ((0.0, 0.9, 0.99), True, "coupled"),
        ((0.5, 0.95), False, "decoupled"),
        ((0.9,), True, None),
    ],
)
def test_matches_numpy_reference(betas, scheduled, mode):
    theta0, gradient = quadratic(seed=len(betas) + 10 * scheduled)
    learning_rates = [float32(0.05 * (0.98**t if scheduled else 1.0)) for t in range(STEPS)]
    decay = float32(0.02)
    optimizer = AggMo(
        Table(learning_rates) if scheduled else 0.05,
        betas=betas,
        weight_decay=decay if mode else None,
        weight_decay_mode=mode or "decoupled",
    )
    ours = run(optimizer, variables_for(theta0), lambda w, _: gradient(w))
    expected = reference(theta0, gradient, learning_rates, [float32(b) for b in betas], decay, mode)
    assert_trajectories_close(ours, expected)


def test_two_steps_by_hand():
    # g = 1, betas (0, 0.5), η = 0.2: v = (−1, −1), θ1 = −0.2; v = (−1, −1.5), θ2 = −0.45.
    variable = keras.Variable(np.zeros(2, "float32"))
    optimizer = AggMo(0.2, betas=(0.0, 0.5))
    for _ in range(2):
        optimizer.apply([ops.ones((2,))], [variable])
    np.testing.assert_allclose(ops.convert_to_numpy(variable), -0.45, rtol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(optimizer.velocities[1][0]), -1.5)


def test_single_beta_is_heavy_ball():
    theta0, gradient = quadratic(seed=2)
    ours = run(AggMo(0.05, betas=(0.9,)), variables_for(theta0), lambda w, _: gradient(w))
    heavy = run(keras.optimizers.SGD(0.05, momentum=0.9), variables_for(theta0),
                lambda w, _: gradient(w))
    assert_trajectories_close(ours, heavy)


# pytorch_optimizer.AggMo(lr, betas, weight_decay) maps to ours with weight_decay_mode=
# "coupled" (its default). Its buffers are −v (see the docstring); the weights agree.
@pytest.mark.parametrize("name", ["aggmo", "aggmo_coupled_decay"])
def test_matches_pytorch_optimizer(name):
    case = fixture_case(name)
    kwargs = case["kwargs"]
    optimizer = AggMo(kwargs["lr"], betas=kwargs["betas"], weight_decay=kwargs.get("weight_decay"),
                      weight_decay_mode="coupled")
    ours, expected, _ = run_fixture(optimizer, case)
    assert_trajectories_close(ours, expected)


def test_velocity_variables_hold_every_velocity():
    variables = variables_for([np.ones((2, 3)), np.ones(3)])
    optimizer = AggMo(0.1, betas=(0.0, 0.9, 0.99))
    optimizer.build(variables)
    velocities = optimizer._velocity_variables()
    assert len(velocities) == 6
    assert len({id(v) for v in velocities}) == 6
    assert sorted(tuple(v.shape) for v in velocities) == sorted([(2, 3)] * 3 + [(3,)] * 3)


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        ({"betas": ()}, "betas"),
        ({"betas": 0.9}, "betas"),
        ({"betas": "0.9"}, "betas"),
        ({"betas": (0.0, 1.0)}, "betas[1]"),
        ({"betas": (-0.1,)}, "betas[0]"),
        ({"betas": (0.5, None)}, "betas[1]"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"weight_decay": -0.1}, "weight_decay"),
    ],
)
def test_invalid_arguments(kwargs, argument):
    with pytest.raises((ValueError, TypeError), match=f"`{argument}`".replace("[", r"\[")):
        AggMo(**kwargs)


def test_config_round_trip():
    for optimizer in (
        AggMo(0.01, betas=[0.0, 0.99], weight_decay=1e-4, global_clipnorm=1.0, name="a"),
        AggMo(Table([0.1, 0.05]), weight_decay=Table([1e-3]), weight_decay_mode="coupled"),
    ):
        restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
        assert type(restored) is AggMo
        assert restored.get_config() == optimizer.get_config()
        assert restored.betas == optimizer.betas


def test_fit_reduces_loss():
    losses, _ = fit_losses(AggMo(0.02))
    assert losses[-1] < 0.2 * losses[0]


def test_sparse_embedding_gradients_are_densified():
    """On TensorFlow an Embedding's gradient is IndexedSlices; one beta is Keras's heavy ball."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, size=(64, 3)).astype("int32")
    y = rng.normal(size=(64, 1)).astype("float32")
    weights = []
    for optimizer in (AggMo(0.05, betas=(0.9,)), keras.optimizers.SGD(0.05, momentum=0.9)):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((3,), dtype="int32"), keras.layers.Embedding(10, 4),
                                  keras.layers.Flatten(), keras.layers.Dense(1)])
        model.compile(optimizer, "mse")
        model.fit(x, y, epochs=2, batch_size=16, verbose=0, shuffle=False)
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
