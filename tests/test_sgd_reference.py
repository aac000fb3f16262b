"""SGD trajectories against an independent NumPy implementation and torch.optim.SGD fixtures."""

import itertools
import json
import pathlib

import keras
import numpy as np
import pytest
from keras import ops

from _family import Table

from keras_momentum.optimizers import SGD

STEPS = 100


# --- Schedules written here (and Table in _family), not taken from keras_momentum.schedules
def learning_rates(scheduled):
    return [0.03 * 0.98**t if scheduled else 0.03 for t in range(STEPS)]


def momenta(scheduled):
    return [0.5 + 0.45 * t / (t + 20) if scheduled else 0.9 for t in range(STEPS)]


def decays(scheduled):
    return [1e-2 * (1 + t % 3) if scheduled else 2e-2 for t in range(STEPS)]


# --- Reference: the update equations from the issue, in NumPy ----------------------------
def reference(theta0, gradient_fn, formulation, nesterov, dampening, mode, lrs, mus, wds):
    theta = [t.copy() for t in theta0]
    velocity = [np.zeros_like(t) for t in theta0]
    for t in range(STEPS):
        grads = gradient_fn(theta)
        # Hyperparameters reach the update as float32 scalars (documented), constant or
        # scheduled, so the reference rounds them the same way.
        eta, mu, wd = (float(np.float32(h[t])) for h in (lrs, mus, wds))
        for i, (p, g) in enumerate(zip(theta, grads)):
            if mode == "coupled":
                g = g + wd * p
            else:
                p = p - eta * wd * p
            if formulation == "keras":
                velocity[i] = mu * velocity[i] - eta * g
                p = p + (mu * velocity[i] - eta * g if nesterov else velocity[i])
            else:
                velocity[i] = g if t == 0 else mu * velocity[i] + (1 - dampening) * g
                p = p - eta * (g + mu * velocity[i] if nesterov else velocity[i])
            theta[i] = p
    return theta


def quadratic(seed, shapes=((4, 3), (6,))):
    rng = np.random.default_rng(seed)
    mats = []
    for shape in shapes:
        n = int(np.prod(shape))
        q = rng.normal(size=(n, n))
        mats.append((q @ q.T / n + 0.1 * np.eye(n), rng.normal(size=n)))
    theta0 = [rng.normal(size=s) for s in shapes]

    def gradient_fn(theta):
        return [(a @ p.reshape(-1) - b).reshape(p.shape) for p, (a, b) in zip(theta, mats)]

    return theta0, mats, gradient_fn


def run_ours(optimizer, theta0, mats, dtype="float64", steps=STEPS, jit=False):
    variables = [keras.Variable(t.astype(dtype), dtype=dtype) for t in theta0]
    consts = [(ops.convert_to_tensor(a, dtype), ops.convert_to_tensor(b, dtype)) for a, b in mats]

    def step():
        grads = [
            ops.reshape(ops.sum(a * ops.reshape(v.value, (1, -1)), axis=1) - b, v.shape)
            for v, (a, b) in zip(variables, consts)
        ]
        optimizer.apply(grads, variables)

    step = _compiled(step, jit)
    for _ in range(steps):
        step()
    return [ops.convert_to_numpy(v) for v in variables]


def _compiled(function, jit):
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(function, jit_compile=jit)
    return function


COMBINATIONS = [
    (formulation, nesterov, dampening, mode, scheduled, fused)
    for formulation, nesterov, dampening in [
        ("keras", False, 0.0), ("keras", True, 0.0),
        ("pytorch", False, 0.0), ("pytorch", True, 0.0), ("pytorch", False, 0.3),
    ]
    for mode, scheduled, fused in itertools.product(("coupled", "decoupled"), (False, True), (None, False))
]


@pytest.mark.parametrize("formulation,nesterov,dampening,mode,scheduled,fused", COMBINATIONS)
def test_matches_numpy_reference(formulation, nesterov, dampening, mode, scheduled, fused):
    theta0, mats, gradient_fn = quadratic(seed=len(formulation) + 7 * nesterov + int(10 * dampening))
    lrs, mus, wds = learning_rates(scheduled), momenta(scheduled), decays(scheduled)
    optimizer = SGD(
        learning_rate=Table(lrs) if scheduled else lrs[0],
        momentum=Table(mus) if scheduled else mus[0],
        weight_decay=Table(wds) if scheduled else wds[0],
        weight_decay_mode=mode,
        nesterov=nesterov,
        dampening=dampening,
        formulation=formulation,
        fused=fused,
    )
    ours = run_ours(optimizer, theta0, mats)
    expected = reference(theta0, gradient_fn, formulation, nesterov, dampening, mode, lrs, mus, wds)
    for got, want in zip(ours, expected):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("formulation", ["keras", "pytorch"])
def test_float32_follows_reference(formulation):
    theta0, mats, gradient_fn = quadratic(seed=3)
    lrs, mus, wds = learning_rates(True), momenta(True), [0.0] * STEPS
    optimizer = SGD(Table(lrs), momentum=Table(mus), formulation=formulation)
    ours = run_ours(optimizer, theta0, mats, dtype="float32")
    expected = reference(theta0, gradient_fn, formulation, False, 0.0, "coupled", lrs, mus, wds)
    for got, want in zip(ours, expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_without_momentum_is_plain_gradient_descent():
    theta0, mats, gradient_fn = quadratic(seed=11)
    optimizer = SGD(0.05)
    ours = run_ours(optimizer, theta0, mats)
    expected = reference(theta0, gradient_fn, "keras", False, 0.0, "coupled", [0.05] * STEPS,
                         [0.0] * STEPS, [0.0] * STEPS)
    for got, want in zip(ours, expected):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert optimizer.velocities == []


def test_formulations_differ_when_learning_rate_changes():
    # Closed form, g = 1, μ = 0.9, η = 0.1 then 0.01:
    #   pytorch: v1 = 1, θ1 = −0.1; v2 = 1.9, θ2 = −0.1 − 0.019 = −0.119
    #   keras:   v1 = −0.1, θ1 = −0.1; v2 = −0.09 − 0.01 = −0.1, θ2 = −0.2
    results = {}
    for formulation in ("pytorch", "keras"):
        variable = keras.Variable(np.zeros(2, "float32"))
        optimizer = SGD(Table([0.1, 0.01]), momentum=0.9, formulation=formulation)
        for _ in range(2):
            optimizer.apply([ops.ones((2,))], [variable])
        results[formulation] = ops.convert_to_numpy(variable)
    np.testing.assert_allclose(results["pytorch"], -0.119, rtol=1e-6)
    np.testing.assert_allclose(results["keras"], -0.2, rtol=1e-6)


FIXTURES = json.loads((pathlib.Path(__file__).parent / "fixtures" / "sgd_torch.json").read_text())


@pytest.mark.parametrize("fused", [None, False])
@pytest.mark.parametrize("case", FIXTURES["cases"], ids=lambda c: c["case"]["name"])
def test_matches_torch_optim_sgd(case, fused):
    options = {k: v for k, v in case["case"].items() if k != "name"}
    weight_decay = options.pop("weight_decay", None)
    optimizer = SGD(
        Table(case["learning_rates"]),
        formulation="pytorch",
        weight_decay=weight_decay,
        weight_decay_mode="coupled",
        fused=fused,
        **options,
    )
    mats = [(np.array(a), np.array(b)) for a, b in zip(case["A"], case["b"])]
    theta0 = [np.array(x) for x in case["initial"]]
    steps = len(case["trajectory"])
    ours = run_ours(optimizer, theta0, mats, steps=steps)
    for got, want in zip(ours, case["trajectory"][-1]):
        # torch ran with float64 learning rates, ours are float32: compare norm-wise.
        want = np.array(want)
        assert np.linalg.norm(got - want) <= 1e-6 * np.linalg.norm(want)


FUSED_CASES = [
    dict(momentum=0.0),
    dict(momentum=0.9),
    dict(momentum=0.9, nesterov=True),
    dict(momentum=0.9, formulation="pytorch"),
    dict(momentum=0.9, nesterov=True, formulation="pytorch"),
    dict(momentum=0.9, weight_decay=0.01, weight_decay_mode="coupled"),
    dict(momentum=0.9, weight_decay=0.01, weight_decay_mode="decoupled", nesterov=True),
    dict(learning_rate=Table(learning_rates(True)), momentum=Table(momenta(True))),
]


@pytest.mark.tensorflow
@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("kwargs", FUSED_CASES, ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items() if a != "learning_rate"))
def test_fused_and_generic_paths_agree(kwargs, jit):
    """The fused TensorFlow kernels and the keras.ops path: one contract, float32, 300 steps."""
    theta0, mats, _ = quadratic(seed=5)
    kwargs = {"learning_rate": 0.03, **kwargs}
    results = [
        run_ours(SGD(fused=fused, **kwargs), theta0, mats, dtype="float32", steps=300, jit=jit)
        for fused in (None, False)
    ]
    for fused, generic in zip(*results):
        np.testing.assert_allclose(fused, generic, rtol=1e-6, atol=1e-6 * np.abs(generic).max())
