"""Shared by the momentum-family tests: problems, runners, comparisons and fixtures.

Nothing here implements an optimizer: each test file writes its own NumPy reference.
"""

import json
import pathlib

import keras
import numpy as np
from keras import ops

STEPS = 100
FIXTURES = json.loads((pathlib.Path(__file__).parent / "fixtures" / "family.json").read_text())


class Table(keras.optimizers.schedules.LearningRateSchedule):
    """`values[t]` for update t, the last value afterwards."""

    def __init__(self, values):
        self.values = [float(v) for v in values]

    def __call__(self, step):
        index = ops.minimum(ops.cast(step, "int32"), len(self.values) - 1)
        return ops.take(ops.convert_to_tensor(self.values, "float32"), index)

    def get_config(self):
        return {"values": self.values}


keras.saving.register_keras_serializable(package="tests_family")(Table)


def float32(value):
    """A hyperparameter as the optimizers see it: rounded to float32."""
    return float(np.float32(value))


def quadratic(seed, shapes=((4, 3), (3,), (2, 2, 2))):
    """Random convex quadratics, one per variable: f(θ) = ½·θᵀAθ − bᵀθ on the flattened θ.

    Returns float32-representable initial values and `gradient(theta)` in float64.
    """
    rng = np.random.default_rng(seed)
    problems = []
    for shape in shapes:
        n = int(np.prod(shape))
        q = rng.normal(size=(n, n))
        problems.append((q @ q.T / n + 0.2 * np.eye(n), rng.normal(size=n)))
    theta0 = [rng.normal(size=s).astype(np.float32).astype(np.float64) for s in shapes]

    def gradient(theta):
        return [(a @ p.reshape(-1) - b).reshape(p.shape) for p, (a, b) in zip(theta, problems)]

    return theta0, gradient


def variables_for(initial, names=None):
    names = names or [f"w{i}" for i in range(len(initial))]
    return [keras.Variable(np.asarray(x, "float32"), name=n) for x, n in zip(initial, names)]


def run(optimizer, variables, gradient, steps=STEPS):
    """Applies `gradient(weights, t)` (NumPy) for `steps` updates; the weights after each."""
    trajectory = []
    for t in range(steps):
        weights = [ops.convert_to_numpy(v).astype(np.float64) for v in variables]
        grads = [ops.convert_to_tensor(g.astype(np.float32)) for g in gradient(weights, t)]
        optimizer.apply(grads, variables)
        trajectory.append([ops.convert_to_numpy(v).astype(np.float64) for v in variables])
    return trajectory


def relative_error(got, want):
    """Largest ‖got − want‖/‖want‖ over variables (Frobenius norms)."""
    return max(np.linalg.norm(g - w) / np.linalg.norm(w) for g, w in zip(got, want))


def assert_trajectories_close(ours, reference, rtol=1e-5):
    """Every step of two trajectories agrees to `rtol`, norm-wise per variable."""
    assert len(ours) == len(reference)
    worst = max(relative_error(got, want) for got, want in zip(ours, reference))
    assert worst <= rtol, f"largest relative difference {worst:.3g} > {rtol}"
    return worst


def fixture_case(name):
    return next(case for case in FIXTURES["cases"] if case["name"] == name)


def run_fixture(optimizer, case, names=None):
    """Our optimizer on the fixture's gradients; returns (ours, expected) at recorded steps."""
    variables = variables_for(FIXTURES["initial"], names)
    gradients = FIXTURES["gradients"]
    trajectory = run(optimizer, variables, lambda _, t: [np.array(g) for g in gradients[t]],
                     steps=len(gradients))
    steps = sorted(case["trajectory"], key=int)
    ours = [trajectory[int(step) - 1] for step in steps]
    expected = [[np.array(w) for w in case["trajectory"][step]] for step in steps]
    return ours, expected, variables


def regression_data(n=128, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    return x, (x @ rng.normal(size=(8, 1))).astype("float32")


def small_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(1),
    ])


def fit_losses(optimizer, epochs=5, **fit_kwargs):
    x, y = regression_data()
    model = small_model()
    model.compile(optimizer, "mse")
    history = model.fit(x, y, epochs=epochs, batch_size=16, verbose=0, **fit_kwargs)
    return history.history["loss"], model
