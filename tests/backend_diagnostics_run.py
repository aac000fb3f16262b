"""Trains with the diagnostics loggers on one backend and compares with NumPy.

Run by `test_diagnostics_io.py` in a subprocess with `KERAS_BACKEND=jax`, `torch` or
`tensorflow` (the batch-end worker thread and the device's latest-only histograms meet
differently on each):

    python backend_diagnostics_run.py LOG_DIR [--hide-tensorflow]

`--hide-tensorflow` makes `import tensorflow` fail, as on a machine without TensorFlow.
The model is one Dense layer, whose mean-squared-error gradients have a closed form; the
reference replays SGD in float64. Some runs use Keras's SGD through `instrument`, the
momentum ones this package's SGD (Keras's again on PyTorch, where
`keras_momentum.optimizers.SGD` does not run yet: its sparse-gradient test mistakes torch
tensors, whose `indices` and `values` are methods, for `IndexedSlices`).

Prints one JSON line: the backend, whether TensorFlow got imported, and for each checked
series the logged and the expected `{step: value}` (a histogram as its low and high edge).
"""

import sys

if "--hide-tensorflow" in sys.argv:
    sys.modules["tensorflow"] = None  # `import tensorflow` now raises ImportError

import glob  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader  # noqa: E402
from tensorboard.util import tensor_util  # noqa: E402

from keras_momentum import optimizers  # noqa: E402
from keras_momentum.callbacks import GradientNormLogger, LearningRateLogger  # noqa: E402

BATCH = 8


@keras.saving.register_keras_serializable(package="tests_backend_diagnostics")
class InverseTime(keras.optimizers.schedules.LearningRateSchedule):
    """0.1 / (1 + t)."""

    def __call__(self, step):
        return 0.1 / (1.0 + keras.ops.cast(step, "float32"))

    def get_config(self):  # `instrument` rebuilds the optimizer from its configuration
        return {}


def momentum_sgd(learning_rate, momentum, **kwargs):
    if keras.backend.backend() == "torch":
        return optimizers.instrument(keras.optimizers.SGD(learning_rate, momentum, **kwargs))
    return optimizers.SGD(learning_rate, momentum=momentum, **kwargs)


def gradients(kernel, bias, x, y):
    """Gradients of mean((x·W + b − y)²) with respect to W and b."""
    residual = x @ kernel + bias - y
    upstream = 2.0 * residual / residual.size
    return [x.T @ upstream, upstream.sum(axis=0)]


def norm(arrays):
    return float(np.sqrt(sum(np.sum(a**2) for a in arrays)))


def read(log_dir):
    out = {}
    for path in sorted(glob.glob(os.path.join(log_dir, "train", "events.out.tfevents.*"))):
        for event in EventFileLoader(path).Load():
            for value in event.summary.value:
                array = tensor_util.make_ndarray(value.tensor)
                if array.ndim == 2:  # a histogram: rows of (left edge, right edge, count)
                    found = {f"{value.tag}/low": array[0, 0], f"{value.tag}/high": array[-1, 1]}
                else:
                    found = {value.tag: array}
                for tag, number in found.items():
                    series = out.setdefault(tag, {})
                    if str(event.step) in series:
                        raise AssertionError(f"{tag} written twice at step {event.step}")
                    series[str(event.step)] = float(number)
    return out


def train(log_dir, optimizer, batches, callbacks=None):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=optimizer, loss="mse")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(batches * BATCH, 3)).astype("float32")
    y = rng.normal(size=(batches * BATCH, 2)).astype("float32")
    kernel, bias = (np.asarray(w, dtype=np.float64) for w in model.get_weights())
    if callbacks is None:
        callbacks = [GradientNormLogger(log_dir), LearningRateLogger(log_dir)]
    model.fit(x, y, batch_size=BATCH, shuffle=False, verbose=0, callbacks=callbacks)
    batch_data = [
        (x[i * BATCH:(i + 1) * BATCH].astype(np.float64), y[i * BATCH:(i + 1) * BATCH])
        for i in range(batches)
    ]
    return model, kernel, bias, batch_data, read(log_dir)


def main():
    log_dir = sys.argv[1]
    compare = {}

    # Plain SGD on a schedule: replay the updates in float64.
    optimizer = optimizers.instrument(keras.optimizers.SGD(InverseTime()))
    model, kernel, bias, batch_data, logged = train(os.path.join(log_dir, "schedule"), optimizer, 4)
    expected_norm, expected_rate, expected_kernel = {}, {}, {}
    for step, (x, y) in enumerate(batch_data, start=1):
        grad_kernel, grad_bias = gradients(kernel, bias, x, y)
        expected_norm[str(step)] = norm([grad_kernel, grad_bias])
        expected_kernel[str(step)] = norm([grad_kernel])
        expected_rate[str(step)] = 0.1 / step
        kernel = kernel - 0.1 / step * grad_kernel
        bias = bias - 0.1 / step * grad_bias
    kernel_path = model.trainable_variables[0].path
    compare["schedule/gradient_norm/global"] = [logged["gradient_norm/global"], expected_norm]
    compare["schedule/kernel"] = [logged[f"gradient_norm/{kernel_path}"], expected_kernel]
    compare["schedule/learning_rate"] = [logged["learning_rate"], expected_rate]

    # Gradient accumulation with momentum and a zero rate: two real updates of mean gradients.
    optimizer = momentum_sgd(0.0, 0.9, gradient_accumulation_steps=2)
    model, kernel, bias, batch_data, logged = train(
        os.path.join(log_dir, "accumulate"), optimizer, 4
    )
    per_batch = [gradients(kernel, bias, x, y) for x, y in batch_data]
    expected_norm = {}
    for step in (1, 2):
        first, second = per_batch[2 * step - 2], per_batch[2 * step - 1]
        expected_norm[str(step)] = norm([(a + b) / 2 for a, b in zip(first, second)])
    compare["accumulate/gradient_norm/global"] = [logged["gradient_norm/global"], expected_norm]
    compare["accumulate/momentum"] = [logged["momentum"], {"1": 0.9, "2": 0.9}]

    # Momentum, every update logged: the update ratio against the weights before each
    # update and the velocities after it (the latest record finished at the fit's end).
    optimizer = momentum_sgd(0.05, 0.9)
    model, kernel, bias, batch_data, logged = train(
        os.path.join(log_dir, "momentum"), optimizer, 6
    )
    velocities = [np.zeros_like(kernel), np.zeros_like(bias)]
    expected_ratio, expected_velocity = {}, {}
    for step, (x, y) in enumerate(batch_data, start=1):
        grads = gradients(kernel, bias, x, y)
        velocities = [0.9 * v - 0.05 * g for v, g in zip(velocities, grads)]
        expected_ratio[str(step)] = norm(velocities) / norm([kernel, bias])
        expected_velocity[str(step)] = norm(velocities)
        kernel, bias = kernel + velocities[0], bias + velocities[1]
    compare["momentum/update_ratio"] = [logged["update_ratio/global"], expected_ratio]
    compare["momentum/velocity_norm"] = [logged["velocity_norm/global"], expected_velocity]

    # A fit longer than half the ring: reads during the fit, on JAX from the trainer's
    # state, which the next step donates.
    optimizer = optimizers.instrument(keras.optimizers.SGD(InverseTime()))
    long_dir = os.path.join(log_dir, "long")
    model, kernel, bias, batch_data, logged = train(
        long_dir, optimizer, 70, [GradientNormLogger(long_dir, per_layer=False)]
    )
    expected_norm = {}
    for step, (x, y) in enumerate(batch_data, start=1):
        grad_kernel, grad_bias = gradients(kernel, bias, x, y)
        expected_norm[str(step)] = norm([grad_kernel, grad_bias])
        kernel = kernel - 0.1 / step * grad_kernel
        bias = bias - 0.1 / step * grad_bias
    compare["long/gradient_norm/global"] = [logged["gradient_norm/global"], expected_norm]

    # Sparse logging: the executions that record nothing run a statistics-free function.
    optimizer = optimizers.instrument(keras.optimizers.SGD(InverseTime()))
    sparse_dir = os.path.join(log_dir, "sparse")
    model, kernel, bias, batch_data, logged = train(
        sparse_dir, optimizer, 6,
        [GradientNormLogger(sparse_dir, update_freq=3), LearningRateLogger(sparse_dir, update_freq=2)],
    )
    expected_norm, expected_rate = {}, {}
    for step, (x, y) in enumerate(batch_data, start=1):
        grad_kernel, grad_bias = gradients(kernel, bias, x, y)
        if step % 3 == 0:
            expected_norm[str(step)] = norm([grad_kernel, grad_bias])
        if step % 2 == 0:
            expected_rate[str(step)] = 0.1 / step
        kernel = kernel - 0.1 / step * grad_kernel
        bias = bias - 0.1 / step * grad_bias
    compare["sparse/gradient_norm/global"] = [logged["gradient_norm/global"], expected_norm]
    compare["sparse/learning_rate"] = [logged["learning_rate"], expected_rate]
    switch = model.train_function
    # Steps 1 and 5 record nothing; the ring then holds records of 2, 3, 4 and 6 only.
    compare["sparse/statistics_free_executions"] = [
        {"calls": getattr(switch, "plain_calls", None)}, {"calls": 2}
    ]

    # Histograms of every update: the device keeps the latest only, so each must be read
    # before the next execution (Keras runs batch ends in a worker thread, behind the loop).
    optimizer = optimizers.instrument(keras.optimizers.SGD(InverseTime()))
    histogram_dir = os.path.join(log_dir, "histograms")
    model, kernel, bias, batch_data, logged = train(
        histogram_dir, optimizer, 30,
        [GradientNormLogger(histogram_dir, per_layer=False, histogram_freq=1)],
    )
    low, high = {}, {}
    for step, (x, y) in enumerate(batch_data, start=1):
        grad_kernel, grad_bias = gradients(kernel, bias, x, y)
        low[str(step)], high[str(step)] = float(grad_kernel.min()), float(grad_kernel.max())
        kernel = kernel - 0.1 / step * grad_kernel
        bias = bias - 0.1 / step * grad_bias
    tag = f"gradient_histogram/{model.trainable_variables[0].path}"
    compare["histograms/kernel_low"] = [logged[f"{tag}/low"], low]
    compare["histograms/kernel_high"] = [logged[f"{tag}/high"], high]

    print(json.dumps({
        "backend": keras.backend.backend(),
        "tensorflow_loaded": sys.modules.get("tensorflow") is not None,
        "compare": compare,
    }))


if __name__ == "__main__":
    main()
