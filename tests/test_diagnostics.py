"""LearningRateLogger and GradientNormLogger: the values they write, read back from the files.

References are independent of the callbacks: gradients come from `tf.GradientTape` on the same
batch and weights (most runs use a zero learning rate, so the weights keep their initial values
and every batch's gradient is known before `fit`), learning rates and momenta from closed-form
schedules defined in `_diagnostics.py`. Event files are read with TensorFlow's reader.
"""

import keras
import numpy as np
import pytest
from _diagnostics import (
    BATCH, InverseTime, Ramp, batch_gradients, compiled_model, data, fit, norm, read_events,
    tape_gradients,
)

from keras_momentum import optimizers
from keras_momentum.callbacks import GradientNormLogger, LearningRateLogger
from keras_momentum.optimizers.diagnostics import RECORD_SLOTS

pytestmark = pytest.mark.tensorflow


@pytest.mark.parametrize("jit_compile", [True, False])
def test_gradient_norms_equal_tape_gradients(tmp_path, jit_compile):
    model = compiled_model(optimizers.SGD(0.0, momentum=0.9), jit_compile=jit_compile)
    x, y = data(4)
    expected = batch_gradients(model, x, y, range(4))
    fit(model, x, y, [GradientNormLogger(tmp_path)])
    events = read_events(tmp_path)
    assert sorted(events["gradient_norm/global"]) == [1, 2, 3, 4]
    paths = [v.path for v in model.trainable_variables]
    for step, grads in enumerate(expected, start=1):
        logged = events["gradient_norm/global"][step]
        assert logged == pytest.approx(norm(grads), rel=1e-5)
        per_layer = [events[f"gradient_norm/{p}"][step] for p in paths]
        assert per_layer == pytest.approx([norm([g]) for g in grads], rel=1e-5)
        assert norm(per_layer) == pytest.approx(logged, rel=1e-5)
        assert events["update_ratio/global"][step] == 0.0  # learning rate 0
    assert "learning_rate" not in events
    assert "gradient_norm/global_clipped" not in events  # written when the optimizer clips


def test_update_ratio_and_velocity_norm_of_the_first_update(tmp_path):
    model = compiled_model(optimizers.SGD(0.1, momentum=0.9))
    x, y = data(1)
    before = [np.asarray(w, dtype=np.float64) for w in model.get_weights()]
    grads = tape_gradients(model, x, y)
    fit(model, x, y, [GradientNormLogger(tmp_path, per_layer=False)])
    after = [np.asarray(w, dtype=np.float64) for w in model.get_weights()]
    events = read_events(tmp_path)
    moved = norm([a - b for a, b in zip(after, before)])
    assert events["update_ratio/global"][1] == pytest.approx(moved / norm(before), rel=1e-4)
    # Keras-style velocity after one update: v = -η·g.
    assert events["velocity_norm/global"][1] == pytest.approx(0.1 * norm(grads), rel=1e-5)


def _squares(model):
    """`L2Loss` operations in a trace of the model's train step, nested functions included."""
    import tensorflow as tf  # noqa: PLC0415

    spec = (tf.TensorSpec((BATCH, 3), tf.float32), tf.TensorSpec((BATCH, 2), tf.float32))
    graph = tf.function(model.train_step).get_concrete_function(spec).graph.as_graph_def()
    nodes = [*graph.node, *(n for f in graph.library.function for n in f.node_def)]
    return sum(node.op == "L2Loss" for node in nodes)


@pytest.mark.parametrize(
    ("flags", "passes"),
    [({}, 4), ({"update_ratio": False}, 2), ({"update_ratio": False, "velocity_norm": False}, 1)],
)
def test_left_out_scalars_leave_out_their_passes(tmp_path, flags, passes):
    # Passes over the gradients, the velocities (velocity norm) and, for the update
    # ratio, the weights before the update and their change: one reduction a variable each.
    model = compiled_model(optimizers.SGD(0.1, momentum=0.9))
    plain = _squares(model)
    x, y = data(2)
    expected = batch_gradients(model, x, y, [0])[0]
    logger = GradientNormLogger(tmp_path, **flags)
    fit(model, x, y, [logger])
    events = read_events(tmp_path)
    assert events["gradient_norm/global"][1] == pytest.approx(norm(expected), rel=1e-5)
    assert ("update_ratio/global" in events) == flags.get("update_ratio", True)
    assert ("velocity_norm/global" in events) == flags.get("velocity_norm", True)
    logger.set_model(model)  # the statistics it asks for, as at the start of a fit
    assert _squares(model) - plain == passes * len(model.trainable_variables)


def test_learning_rate_momentum_and_decay_are_those_of_each_update(tmp_path):
    optimizer = optimizers.SGD(InverseTime(), momentum=Ramp(), weight_decay=1e-3)
    model = compiled_model(optimizer)
    optimizer.plateau_state.assign([0.5, np.nan, 0.0, 0.0])  # as ReduceLROnPlateau would
    x, y = data(5)
    fit(model, x, y, [LearningRateLogger(tmp_path)])
    events = read_events(tmp_path)
    assert sorted(events["learning_rate"]) == [1, 2, 3, 4, 5]
    for step in range(1, 6):  # update `step` evaluates the schedules at step - 1
        assert events["learning_rate"][step] == pytest.approx(0.5 * 0.1 / step, rel=1e-6)
        assert events["momentum"][step] == pytest.approx(0.5 + 0.05 * (step - 1), rel=1e-6)
        assert events["weight_decay"][step] == pytest.approx(1e-3, rel=1e-6)
    assert not any(tag.startswith("gradient_norm") for tag in events)


def test_loss_scale_optimizer_logs_unscaled_norms(tmp_path):
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = compiled_model(optimizers.SGD(0.0))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    x, y = data(3)
    expected = batch_gradients(model, x, y, range(3))
    fit(model, x, y, [GradientNormLogger(tmp_path, per_layer=False)])
    logged = read_events(tmp_path)["gradient_norm/global"]
    assert sorted(logged) == [1, 2, 3]
    # float16 arithmetic; a loss scale (2**15 at first) left in would be off by far more.
    assert [logged[s] for s in (1, 2, 3)] == pytest.approx([norm(g) for g in expected], rel=2e-2)


def test_gradient_accumulation_logs_real_updates_only(tmp_path):
    model = compiled_model(optimizers.SGD(0.0, momentum=Ramp(), gradient_accumulation_steps=2))
    x, y = data(6)
    grads = batch_gradients(model, x, y, range(6))
    fit(model, x, y, [GradientNormLogger(tmp_path), LearningRateLogger(tmp_path)])
    events = read_events(tmp_path)
    assert sorted(events["gradient_norm/global"]) == [1, 2, 3]
    assert sorted(events["momentum"]) == [1, 2, 3]
    for step in (1, 2, 3):
        first, second = grads[2 * step - 2], grads[2 * step - 1]
        mean = [(a + b) / 2 for a, b in zip(first, second)]
        assert events["gradient_norm/global"][step] == pytest.approx(norm(mean), rel=1e-5)
        assert events["momentum"][step] == pytest.approx(0.5 + 0.05 * (step - 1), rel=1e-6)


def test_steps_per_execution_logs_every_update_inside_an_execution(tmp_path):
    model = compiled_model(optimizers.SGD(0.0), steps_per_execution=3)
    x, y = data(6)
    grads = batch_gradients(model, x, y, range(6))
    fit(model, x, y, [GradientNormLogger(tmp_path)])
    logged = read_events(tmp_path)["gradient_norm/global"]
    assert sorted(logged) == [1, 2, 3, 4, 5, 6]
    assert [logged[s] for s in range(1, 7)] == pytest.approx([norm(g) for g in grads], rel=1e-5)


def test_an_execution_longer_than_the_ring_keeps_its_latest_records(tmp_path):
    slots = RECORD_SLOTS
    updates = 2 * slots + 6
    model = compiled_model(optimizers.SGD(InverseTime()), steps_per_execution=updates)
    x, y = data(updates)
    fit(model, x, y, [LearningRateLogger(tmp_path, update_freq=2)])
    logged = read_events(tmp_path)["learning_rate"]
    # slots + 3 even updates record; the ring keeps the latest `slots` of them.
    assert sorted(logged) == list(range(updates - 2 * slots + 2, updates + 1, 2))
    assert logged[updates] == pytest.approx(0.1 / updates, rel=1e-6)


def test_steps_start_at_one_and_continue_in_a_later_fit(tmp_path):
    model = compiled_model(optimizers.SGD(InverseTime(), momentum=0.9))
    x, y = data(3)
    fit(model, x, y, [LearningRateLogger(tmp_path)])
    # The gradient logger joins later: the traced step must be rebuilt to record norms.
    fit(model, x, y, [LearningRateLogger(tmp_path), GradientNormLogger(tmp_path, update_freq=2)],
        initial_epoch=1, epochs=3)
    events = read_events(tmp_path)  # raises if a step is written twice
    assert sorted(events["learning_rate"]) == list(range(1, 10))
    assert sorted(events["gradient_norm/global"]) == [4, 6, 8]
    assert all(value > 0 for value in events["gradient_norm/global"].values())
    assert events["learning_rate"][9] == pytest.approx(0.1 / 9, rel=1e-6)
    assert "velocity_norm/global" in events


def test_builtin_adam_through_instrument_with_clipping(tmp_path):
    model = compiled_model(optimizers.instrument(keras.optimizers.Adam(0.01, global_clipnorm=0.05)))
    x, y = data(2)
    first = norm(batch_gradients(model, x, y, [0])[0])
    fit(model, x, y, [GradientNormLogger(tmp_path), LearningRateLogger(tmp_path)])
    events = read_events(tmp_path)
    assert events["gradient_norm/global"][1] == pytest.approx(first, rel=1e-5)
    assert first > 0.05
    assert events["gradient_norm/global_clipped"][1] == pytest.approx(0.05, rel=1e-5)
    assert events["learning_rate"][2] == pytest.approx(0.01, rel=1e-6)
    assert "momentum" not in events and "velocity_norm/global" not in events


def test_histograms_match_numpy(tmp_path):
    model = compiled_model(optimizers.SGD(0.0))
    x, y = data(4)
    grads = batch_gradients(model, x, y, (1, 3))
    fit(model, x, y, [GradientNormLogger(tmp_path, per_layer=False, histogram_freq=2)])
    events = read_events(tmp_path)
    for variable, by_step in zip(model.trainable_variables, zip(*grads)):
        logged = events[f"gradient_histogram/{variable.path}"]
        assert sorted(logged) == [2, 4]
        for step, grad in zip((2, 4), by_step):
            counts, edges = np.histogram(grad, bins=30, range=(grad.min(), grad.max()))
            assert logged[step].shape == (30, 3)
            np.testing.assert_allclose(logged[step][:, 0], edges[:-1], rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(logged[step][:, 1], edges[1:], rtol=1e-5, atol=1e-7)
            np.testing.assert_array_equal(logged[step][:, 2], counts)


def test_variables_sharing_a_path_get_distinct_tags(tmp_path):
    first, second = keras.layers.Dense(4, name="proj"), keras.layers.Dense(2, name="proj")
    first.build((None, 3))
    second.build((None, 4))

    class Twice(keras.Model):
        def call(self, inputs):
            return second(first(inputs))

    model = Twice()
    model.first, model.second = first, second
    model.compile(optimizer=optimizers.SGD(0.0), loss="mse")
    x, y = data(1)
    grads = tape_gradients(model, x, y)
    assert [v.path for v in model.trainable_variables] == ["proj/kernel", "proj/bias"] * 2
    fit(model, x, y, [GradientNormLogger(tmp_path)])
    events = read_events(tmp_path)
    tags = ["proj/kernel", "proj/bias", "proj/kernel_1", "proj/bias_1"]
    logged = [events[f"gradient_norm/{tag}"][1] for tag in tags]
    assert logged == pytest.approx([norm([g]) for g in grads], rel=1e-5)


def test_lookahead_and_loss_scale_wrappers_are_looked_through(tmp_path):
    keras.mixed_precision.set_global_policy("mixed_float16")
    inner = optimizers.SGD(0.0, momentum=0.9)
    model = compiled_model(optimizers.Lookahead(inner, sync_period=2))
    assert model.optimizer.inner_optimizer.inner_optimizer is inner  # compile added the scaler
    x, y = data(3)
    expected = batch_gradients(model, x, y, range(3))
    fit(model, x, y, [GradientNormLogger(tmp_path, per_layer=False)])
    logged = read_events(tmp_path)["gradient_norm/global"]
    assert sorted(logged) == [1, 2, 3]
    assert [logged[s] for s in (1, 2, 3)] == pytest.approx([norm(g) for g in expected], rel=2e-2)


class WeightTrace(keras.callbacks.Callback):
    """The model's weights (float64) before the first batch and after every batch."""

    def on_train_begin(self, logs=None):
        self.weights = [[np.asarray(w, np.float64) for w in self.model.get_weights()]]

    def on_train_batch_end(self, batch, logs=None):
        self.weights.append([np.asarray(w, np.float64) for w in self.model.get_weights()])


UPDATE_RATIO_CASES = {
    # Δθ known from the gradient, the velocity (scale 1 or η), or a copy of the weights.
    "plain": lambda: optimizers.SGD(0.3),
    "plain_coupled_decay": lambda: optimizers.SGD(
        0.3, weight_decay=0.1, weight_decay_mode="coupled"
    ),
    "keras_momentum": lambda: optimizers.SGD(InverseTime(), momentum=0.9),
    "pytorch_momentum": lambda: optimizers.SGD(0.3, momentum=0.9, formulation="pytorch"),
    "pytorch_dampening": lambda: optimizers.SGD(
        0.3, momentum=0.9, dampening=0.5, formulation="pytorch", weight_decay=0.1,
        weight_decay_mode="coupled",
    ),
    "generic_kernels": lambda: optimizers.SGD(0.3, momentum=0.9, fused=False),
    "nesterov": lambda: optimizers.SGD(0.3, momentum=0.9, nesterov=True),
    "decoupled_decay": lambda: optimizers.SGD(
        0.3, momentum=0.9, weight_decay=0.1, weight_decay_mode="decoupled"
    ),
    "clipped": lambda: optimizers.SGD(0.3, global_clipnorm=0.01),
    "qhm": lambda: optimizers.QHM(0.3, momentum=0.9, nu=0.7),
    "adamw": lambda: optimizers.instrument(keras.optimizers.AdamW(0.01, weight_decay=0.1)),
}


@pytest.mark.parametrize("update_freq", [1, 2])
@pytest.mark.parametrize("case", UPDATE_RATIO_CASES)
def test_update_ratio_is_the_weight_change_of_each_update(tmp_path, case, update_freq):
    # update_freq > 1 takes the other path: θ before the update recovered from θ after it.
    model = compiled_model(UPDATE_RATIO_CASES[case]())
    x, y = data(4)
    trace = WeightTrace()
    fit(model, x, y, [trace, GradientNormLogger(tmp_path, update_freq, per_layer=False)])
    logged = read_events(tmp_path)["update_ratio/global"]
    steps = list(range(update_freq, 5, update_freq))
    assert sorted(logged) == steps
    for step in steps:
        before, after = trace.weights[step - 1], trace.weights[step]
        moved = norm([a - b for a, b in zip(after, before)])
        assert moved > 0
        assert logged[step] == pytest.approx(moved / norm(before), rel=1e-4), step
