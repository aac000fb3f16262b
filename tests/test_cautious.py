"""Cautious updates: timm's SGDW(caution=True) fixtures, and NumPy references for the rest."""

import json
import pathlib

import keras
import numpy as np
import pytest
from keras import ops

from _family import Table, float32, quadratic, variables_for

from keras_momentum.optimizers import LARS, QHM, SGD, AggMo, ScheduleFreeSGD
from keras_momentum.optimizers._cautious import mask_disagreeing

TIMM = json.loads((pathlib.Path(__file__).parent / "fixtures" / "cautious_timm.json").read_text())
RUNS = {run["case"]["name"]: run for run in TIMM["runs"]}
CONSTANT_RATE = ("momentum", "nesterov", "decoupled_decay")


def tolerance(tight):
    """float64 where the backend keeps it (JAX without x64 computes in float32)."""
    if ops.convert_to_numpy(keras.Variable(np.zeros(1), dtype="float64")).dtype == np.float64:
        return {"rtol": tight, "atol": tight / 100}
    return {"rtol": 1e-5, "atol": 1e-6}


def run_fixture(run, formulation):
    case = run["case"]
    rates = run["learning_rates"]
    optimizer = SGD(
        learning_rate=Table(rates) if case.get("schedule") else rates[0],
        momentum=case["momentum"], nesterov=case.get("nesterov", False),
        dampening=case.get("dampening", 0.0), weight_decay=case.get("weight_decay"),
        formulation=formulation, cautious=True,
    )
    variables = [keras.Variable(np.asarray(x), dtype="float64") for x in run["initial"]]
    problems = [(np.asarray(a), np.asarray(b)) for a, b in zip(run["A"], run["b"])]
    recorded = []
    for t in range(TIMM["steps"]):
        # Gradients in NumPy: Keras's matmul returns float32 on PyTorch.
        grads = [(a @ ops.convert_to_numpy(v).reshape(-1) - b).reshape(v.shape)
                 for v, (a, b) in zip(variables, problems)]
        optimizer.apply([ops.convert_to_tensor(g, "float64") for g in grads], variables)
        if t in run["recorded"]:
            recorded.append([ops.convert_to_numpy(v) for v in variables])
    return recorded


@pytest.mark.parametrize("name", list(RUNS))
def test_pytorch_formulation_matches_timm_sgdw(name):
    run = RUNS[name]
    for got, want in zip(run_fixture(run, "pytorch"), run["trajectory"]):
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, np.asarray(w), **tolerance(1e-10))


@pytest.mark.parametrize("name", CONSTANT_RATE)
def test_keras_formulation_moves_as_timm_at_a_constant_rate(name):
    run = RUNS[name]
    for got, want in zip(run_fixture(run, "keras"), run["trajectory"]):
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, np.asarray(w), **tolerance(1e-9))


def test_the_mask_keeps_agreeing_components_and_rescales():
    update = ops.convert_to_tensor([1.0, -1.0, 2.0, 0.0, 3.0])
    gradient = ops.convert_to_tensor([1.0, 1.0, -1.0, 1.0, 0.0])
    # u·g = [1, -1, -2, 0, 0]: one of five components descends when u is subtracted.
    np.testing.assert_allclose(ops.convert_to_numpy(mask_disagreeing(update, gradient)),
                               [5.0, 0.0, 0.0, 0.0, 0.0])
    added = mask_disagreeing(update, gradient, subtracted=False)
    np.testing.assert_allclose(ops.convert_to_numpy(added), [0.0, -2.5, 5.0, 0.0, 0.0])
    nothing = mask_disagreeing(update, ops.negative(update))
    np.testing.assert_allclose(ops.convert_to_numpy(nothing), np.zeros(5))


def test_without_momentum_caution_changes_nothing():
    theta0, gradient = quadratic(seed=5)
    results = []
    for cautious in (False, True):
        variables = variables_for(theta0)
        optimizer = SGD(0.05, cautious=cautious)
        for _ in range(5):
            grads = gradient([ops.convert_to_numpy(v).astype(np.float64) for v in variables])
            optimizer.apply([np.asarray(g, "float32") for g in grads], variables)
        results.append([ops.convert_to_numpy(v) for v in variables])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


# --- QHM, AggMo, LARS against their documented rules in NumPy -----------------------------
def cautious_numpy(update, gradient, subtracted=True):
    product = update * gradient
    mask = (product > 0 if subtracted else product < 0).astype(update.dtype)
    return update * (mask / max(mask.mean(), 1e-3))


# Hyperparameters reach the updates as float32 scalars (documented).
def qhm_reference(theta, grads_fn, steps, lr, beta, nu):
    lr, beta, nu = float32(lr), float32(beta), float32(nu)
    buffers = [np.zeros_like(p) for p in theta]
    for _ in range(steps):
        for i, g in enumerate(grads_fn(theta)):
            buffers[i] = beta * buffers[i] + (1 - beta) * g
            step = (1 - nu) * g + nu * buffers[i]
            theta[i] = theta[i] - lr * cautious_numpy(step, g)
    return theta


def agg_mo_reference(theta, grads_fn, steps, lr, betas):
    lr, betas = float32(lr), [float32(b) for b in betas]
    velocities = [[np.zeros_like(p) for p in theta] for _ in betas]
    for _ in range(steps):
        for i, g in enumerate(grads_fn(theta)):
            for k, beta in enumerate(betas):
                velocities[k][i] = beta * velocities[k][i] - g
            step = lr / len(betas) * sum(v[i] for v in velocities)
            theta[i] = theta[i] + cautious_numpy(step, g, subtracted=False)
    return theta


def lars_reference(theta, grads_fn, steps, lr, momentum, trust, epsilon=1e-8):
    lr, momentum, trust = float32(lr), float32(momentum), float32(trust)
    velocities = [np.zeros_like(p) for p in theta]
    for _ in range(steps):
        for i, g in enumerate(grads_fn(theta)):
            if theta[i].ndim > 1:
                w_norm, g_norm = np.linalg.norm(theta[i]), np.linalg.norm(g)
                g = trust * w_norm / (g_norm + epsilon) * g
            velocities[i] = momentum * velocities[i] + lr * g
            theta[i] = theta[i] - cautious_numpy(velocities[i], g)
    return theta


FAMILY = {
    "qhm": (lambda: QHM(0.1, momentum=0.9, nu=0.7, cautious=True),
            lambda th, gf, n: qhm_reference(th, gf, n, 0.1, 0.9, 0.7)),
    "agg_mo": (lambda: AggMo(0.05, betas=(0.0, 0.9, 0.99), cautious=True),
               lambda th, gf, n: agg_mo_reference(th, gf, n, 0.05, (0.0, 0.9, 0.99))),
    "lars": (lambda: LARS(1.0, momentum=0.9, trust_coefficient=0.02, cautious=True),
             lambda th, gf, n: lars_reference(th, gf, n, 1.0, 0.9, 0.02)),
}


@pytest.mark.parametrize("name", list(FAMILY))
def test_family_matches_numpy_reference(name):
    make, reference = FAMILY[name]
    theta0, gradient = quadratic(seed=17)
    steps = 20
    variables = [keras.Variable(np.asarray(x), dtype="float64") for x in theta0]
    optimizer = make()
    for _ in range(steps):
        grads = gradient([ops.convert_to_numpy(v) for v in variables])
        optimizer.apply([ops.convert_to_tensor(g, "float64") for g in grads], variables)
    expected = reference([x.copy() for x in theta0], gradient, steps)
    for v, want in zip(variables, expected):
        # Keras on JAX loses a little of float64 in these optimizers (also without caution).
        np.testing.assert_allclose(ops.convert_to_numpy(v), want, **tolerance(1e-6))


def test_optimizers_without_a_velocity_reject_cautious():
    with pytest.raises(ValueError, match=r"`cautious` is not an argument of ScheduleFreeSGD"):
        ScheduleFreeSGD(0.1, cautious=True)
    with pytest.raises(TypeError, match=r"`cautious` must be a bool, got 'yes'"):
        SGD(0.1, momentum=0.9, cautious="yes")
