"""LARS against a NumPy transcription of You et al. (2017), Algorithm 1, and
pytorch_optimizer.LARS fixtures."""

import keras
import numpy as np
import pytest
from keras import ops

from _family import (
    STEPS, Table, assert_trajectories_close, fit_losses, fixture_case, float32, quadratic, run,
    run_fixture, variables_for,
)
from keras_momentum.optimizers import LARS


def reference(theta0, gradient, learning_rates, momenta, decay, trust, epsilon, nesterov, adapted):
    """Algorithm 1: local rate λ = τ‖w‖/(‖∇‖ + β‖w‖); v ← m·v + γ·λ·(∇ + β·w); w ← w − v.

    Tensors not `adapted` take v ← m·v + γ·∇. Local rate 1 where a norm is zero.
    """
    theta = [t.copy() for t in theta0]
    velocities = [np.zeros_like(t) for t in theta0]
    trajectory = []
    for t in range(STEPS):
        grads = gradient(theta)
        gamma, m = learning_rates[t], momenta[t]
        for i, g in enumerate(grads):
            if adapted[i]:
                w_norm, g_norm = np.linalg.norm(theta[i]), np.linalg.norm(g)
                local = 1.0
                if w_norm > 0 and g_norm > 0:
                    local = trust * w_norm / (g_norm + decay * w_norm + epsilon)
                g = local * (g + decay * theta[i])
            velocities[i] = m * velocities[i] + gamma * g
            step = m * velocities[i] + gamma * g if nesterov else velocities[i]
            theta[i] = theta[i] - step
        trajectory.append([t.copy() for t in theta])
    return trajectory


@pytest.mark.parametrize(
    "nesterov,scheduled,exclude",
    [(False, False, None), (True, False, None), (False, True, None), (True, True, "w2$")],
)
def test_matches_numpy_reference(nesterov, scheduled, exclude):
    theta0, gradient = quadratic(seed=20 + 2 * nesterov + scheduled)
    if scheduled:
        learning_rates = [float32(0.05 * min(1.0, (t + 1) / 10)) for t in range(STEPS)]
        momenta = [float32(0.8 + 0.15 * t / STEPS) for t in range(STEPS)]
    else:
        learning_rates, momenta = [float32(0.05)] * STEPS, [float32(0.9)] * STEPS
    decay, trust, epsilon = float32(0.05), float32(0.5), float32(1e-3)
    optimizer = LARS(
        Table(learning_rates) if scheduled else 0.05,
        momentum=Table(momenta) if scheduled else 0.9,
        weight_decay=decay,
        trust_coefficient=trust,
        nesterov=nesterov,
        epsilon=epsilon,
        exclude_from_adaptation=exclude,
    )
    # Variables w0 (4, 3), w1 (3,) (never adapted: one dimension), w2 (2, 2, 2).
    adapted = [True, False, exclude is None]
    ours = run(optimizer, variables_for(theta0), lambda w, _: gradient(w))
    expected = reference(theta0, gradient, learning_rates, momenta, decay, trust, epsilon,
                         nesterov, adapted)
    assert_trajectories_close(ours, expected)


def test_trust_ratio_by_hand():
    # θ = (3, 4) (norm 5), g = (0, 1), λ = 0.2, τ = 0.1: r = 0.5/(1 + 1) = 0.25;
    # step = η·r·(g + λθ) = 1·0.25·(0.6, 1.8) = (0.15, 0.45).
    variable = keras.Variable(np.array([[3.0, 4.0]], "float32"))
    optimizer = LARS(1.0, momentum=0.0, weight_decay=0.2, trust_coefficient=0.1, epsilon=0.0)
    optimizer.apply([ops.convert_to_tensor([[0.0, 1.0]])], [variable])
    np.testing.assert_allclose(ops.convert_to_numpy(variable), [[2.85, 3.55]], rtol=1e-6)


def test_zero_norms_give_unit_trust_ratio():
    zeros = keras.Variable(np.zeros((2, 2), "float32"))
    still = keras.Variable(np.full((2, 2), 2.0, "float32"))
    optimizer = LARS(0.5, momentum=0.0, weight_decay=0.1, trust_coefficient=0.01)
    optimizer.apply([ops.ones((2, 2)), ops.zeros((2, 2))], [zeros, still])
    np.testing.assert_allclose(ops.convert_to_numpy(zeros), -0.5)  # −η·g
    np.testing.assert_allclose(ops.convert_to_numpy(still), 2.0 - 0.5 * 0.1 * 2.0)  # −η·λ·θ


def test_exclusions_and_keras_weight_decay_exclusion():
    variables = []
    for scope, name, shape in [("dense", "kernel", (2, 2)), ("dense", "bias", (2,)),
                               ("norm", "gamma", (2, 2)), ("other", "undecayed", (2, 2))]:
        with keras.name_scope(scope):
            variables.append(keras.Variable(np.ones(shape, "float32"), name=name))
    assert variables[2].path == "norm/gamma"
    optimizer = LARS(1.0, momentum=0.0, weight_decay=0.5, trust_coefficient=0.1,
                     exclude_from_adaptation=["^norm/"], epsilon=0.0)
    optimizer.exclude_from_weight_decay(var_names=["undecayed"])
    optimizer.build(variables)
    assert optimizer._adapted == [True, False, False, True]
    gradient = ops.full((2, 2), 0.5)
    optimizer.apply([gradient, ops.full((2,), 0.5), gradient, gradient], variables)
    got = [ops.convert_to_numpy(v)[0, 0] if i != 1 else ops.convert_to_numpy(v)[0]
           for i, v in enumerate(variables)]
    # kernel: ‖θ‖ = 2, ‖g‖ = 1, r = 0.2/(1 + 1) = 0.1, step 0.1·(0.5 + 0.5) = 0.1.
    # bias and norm/gamma: plain step 0.5. undecayed: r = 0.2/1, step 0.2·0.5 = 0.1.
    np.testing.assert_allclose(got, [0.9, 0.5, 0.5, 0.9], rtol=1e-6)


# pytorch_optimizer.LARS(lr, weight_decay, momentum, trust_coefficient, nesterov) maps to
# ours with the same values and epsilon=0 (it has none). Its learning rate is applied
# after the momentum average; with a constant rate, as here, the trajectories agree.
@pytest.mark.parametrize("name", ["lars", "lars_nesterov"])
def test_matches_pytorch_optimizer(name):
    case = fixture_case(name)
    kwargs = case["kwargs"]
    optimizer = LARS(kwargs["lr"], momentum=kwargs["momentum"],
                     weight_decay=kwargs.get("weight_decay", 0.0),
                     trust_coefficient=kwargs["trust_coefficient"],
                     nesterov=kwargs.get("nesterov", False), epsilon=0.0)
    ours, expected, _ = run_fixture(optimizer, case)
    assert_trajectories_close(ours, expected)


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        ({"momentum": 1.0}, "momentum"),
        ({"trust_coefficient": 0.0}, "trust_coefficient"),
        ({"trust_coefficient": -1e-3}, "trust_coefficient"),
        ({"epsilon": -1e-8}, "epsilon"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"nesterov": 1}, "nesterov"),
        ({"nesterov": True, "momentum": 0.0}, "nesterov"),
        ({"exclude_from_adaptation": 3}, "exclude_from_adaptation"),
        ({"exclude_from_adaptation": ["("]}, "exclude_from_adaptation"),
        ({"weight_decay_mode": "decoupled"}, "weight_decay_mode"),
        ({"learning_rate": -0.1}, "learning_rate"),
    ],
)
def test_invalid_arguments(kwargs, argument):
    kwargs = {"learning_rate": 0.1, **kwargs}
    with pytest.raises((ValueError, TypeError), match=f"`{argument}`"):
        LARS(**kwargs)


def test_config_round_trip():
    for optimizer in (
        LARS(0.1, momentum=0.95, weight_decay=1e-4, trust_coefficient=0.01, nesterov=True,
             epsilon=1e-6, exclude_from_adaptation=["bn", "scale$"], clipnorm=1.0, name="l"),
        LARS(Table([0.1, 0.2]), momentum=Table([0.9]), weight_decay=Table([1e-3]),
             exclude_from_adaptation="bias"),
    ):
        restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
        assert type(restored) is LARS
        assert restored.get_config() == optimizer.get_config()
        assert restored.exclude_from_adaptation == optimizer.exclude_from_adaptation


def test_fit_reduces_loss():
    losses, _ = fit_losses(LARS(0.05, weight_decay=1e-4, trust_coefficient=0.2))
    assert losses[-1] < 0.2 * losses[0]
