"""Shared pieces of the diagnostics tests: data, models, tape gradients, event reading.

Gradients come from `tf.GradientTape` on the same batch and weights; event files are read
with TensorFlow's own reader (`summary_iterator`), not with the package's writer code.
"""

import glob
import os

import keras
import numpy as np

BATCH = 8


class InverseTime(keras.optimizers.schedules.LearningRateSchedule):
    """0.1 / (1 + t)."""

    def __call__(self, step):
        return 0.1 / (1.0 + keras.ops.cast(step, "float32"))


class Ramp(keras.optimizers.schedules.LearningRateSchedule):
    """0.5 + 0.05·t."""

    def __call__(self, step):
        return 0.5 + 0.05 * keras.ops.cast(step, "float32")


def data(batches):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(batches * BATCH, 3)).astype("float32")
    return x, rng.normal(size=(batches * BATCH, 2)).astype("float32")


def compiled_model(optimizer, **compile_kwargs):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(2)]
    )
    model.compile(optimizer=optimizer, loss="mse", **compile_kwargs)
    return model


def tape_gradients(model, x, y):
    import tensorflow as tf  # noqa: PLC0415

    with tf.GradientTape() as tape:
        loss = keras.losses.MeanSquaredError()(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    return [np.asarray(g, dtype=np.float64) for g in grads]


def batch_gradients(model, x, y, batches):
    """Tape gradients of each batch index in `batches`, at the model's current weights."""
    return [
        tape_gradients(model, x[i * BATCH:(i + 1) * BATCH], y[i * BATCH:(i + 1) * BATCH])
        for i in batches
    ]


def norm(grads):
    return float(np.sqrt(sum(np.sum(np.square(g, dtype=np.float64)) for g in grads)))


def summary_values(directory):
    """(step, `Summary.Value`) of every event file directly in `directory`, file by file."""
    import tensorflow as tf  # noqa: PLC0415

    for path in sorted(glob.glob(os.path.join(directory, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                yield event.step, value


def read_events(log_dir, run="train"):
    """{tag: {step: array}} over the event files of `<log_dir>/<run>`; steps never repeat."""
    import tensorflow as tf  # noqa: PLC0415

    out = {}
    for step, value in summary_values(os.path.join(log_dir, run)):
        series = out.setdefault(value.tag, {})
        assert step not in series, f"{value.tag} written twice at step {step}"
        series[step] = tf.make_ndarray(value.tensor)
    return out


def fit(model, x, y, callbacks, **kwargs):
    return model.fit(
        x, y, batch_size=BATCH, shuffle=False, verbose=0, callbacks=callbacks, **kwargs
    )
