"""Other backends: JAX and PyTorch on a machine without TensorFlow.

`scripts/backend_run.py` runs in a subprocess with `KERAS_BACKEND=jax` or `torch`, with
every `import tensorflow*` failing: `import keras_momentum` must work, and a small `fit`
with `SGD`, a `Warmup` schedule, `skip_nonfinite` and `ReduceLROnPlateau` must follow a
float64 NumPy replay of the same updates and plateau decisions. Fused kernels and
`tf.distribute` are TensorFlow-only: no kernel is selected, and the chief test says True.
"""

import json

import numpy as np
import pytest
from _processes import environment, run

pytestmark = pytest.mark.all_backends

BATCH, STEPS_PER_EPOCH, EPOCHS = 8, 4, 3  # as in scripts/backend_run.py


def warmup(step):
    """`Warmup(0.1, warmup_steps=3)`: linear from 0, then constant."""
    return 0.1 * min(step / 3, 1.0)


def replay(x, y, kernel, bias):
    """Keras-formulation momentum SGD on mean squared error, with the plateau rule (mode max)."""
    kernel, bias = np.array(kernel, np.float64), np.array(bias, np.float64)
    velocity_kernel, velocity_bias = np.zeros_like(kernel), np.zeros_like(bias)
    multiplier, best, step, losses = 1.0, None, 0, []
    for _ in range(EPOCHS):
        batch_losses = []
        for b in range(STEPS_PER_EPOCH):
            xb, yb = x[b * BATCH:(b + 1) * BATCH], y[b * BATCH:(b + 1) * BATCH]
            residual = xb @ kernel + bias - yb
            batch_losses.append(np.mean(residual**2))
            rate = np.float32(warmup(step)) * multiplier
            velocity_kernel = 0.9 * velocity_kernel - rate * (2 / BATCH) * xb.T @ residual
            velocity_bias = 0.9 * velocity_bias - rate * (2 / BATCH) * residual.sum(axis=0)
            kernel, bias, step = kernel + velocity_kernel, bias + velocity_bias, step + 1
        losses.append(float(np.mean(batch_losses)))
        if best is None or losses[-1] > best + 1e-4:  # mode "max", min_delta 1e-4
            best = losses[-1]
        else:  # patience 0
            multiplier *= 0.5
    return kernel, bias, multiplier, losses


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_fit_without_tensorflow(backend):
    done = run("backend_run.py", env=environment(KERAS_BACKEND=backend), timeout=180)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == backend
    assert result["tensorflow_modules"] == []
    assert result["version"] == "0.1.0"
    x, y = np.array(result["x"], np.float64), np.array(result["y"], np.float64)
    kernel, bias, multiplier, losses = replay(x, y, *result["initial"])
    np.testing.assert_allclose(result["loss"], losses, rtol=1e-5)
    np.testing.assert_allclose(result["final"][0], kernel, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result["final"][1], bias, rtol=1e-4, atol=1e-5)
    assert result["multiplier"] == multiplier
    assert result["iterations"] == EPOCHS * STEPS_PER_EPOCH
    assert result["nonfinite_steps"] == 0
    assert result["is_chief"] is True
    assert result["fused_kernels"] is False
