"""The loggers run executions in which no update records on a statistics-free train function.

Which executions record follows from the update numbers alone (closed form below); the
logged values are checked against `tf.GradientTape` gradients, so a wrong choice of function
(an update due to record that ran without statistics) shows up as a missing or wrong step.
"""

import keras
import numpy as np
import pytest
from _diagnostics import batch_gradients, compiled_model, data, fit, norm, read_events

from keras_momentum import optimizers
from keras_momentum.callbacks import GradientNormLogger, LearningRateLogger
from keras_momentum.callbacks._recording_switch import RecordingSwitch

pytestmark = pytest.mark.tensorflow


def recording_executions(micro_batches, steps_per_execution, accumulation, frequencies):
    """How many executions hold an update whose number a frequency divides."""
    count = 0
    for start in range(0, micro_batches, steps_per_execution):
        updates = [
            m // accumulation
            for m in range(start + 1, min(start + steps_per_execution, micro_batches) + 1)
            if m % accumulation == 0
        ]
        count += any(u % f == 0 for u in updates for f in frequencies)
    return count


def test_only_executions_with_a_due_update_record(tmp_path):
    model = compiled_model(optimizers.SGD(0.0), steps_per_execution=3)
    x, y = data(12)
    grads = batch_gradients(model, x, y, range(12))
    fit(model, x, y, [GradientNormLogger(tmp_path, update_freq=4)])
    switch = model.train_function
    assert isinstance(switch, RecordingSwitch)
    # Executions cover updates 1-3, 4-6, 7-9, 10-12: the first holds no multiple of 4.
    assert (switch.recording_calls, switch.plain_calls) == (3, 1)
    assert recording_executions(12, 3, 1, [4]) == 3
    logged = read_events(tmp_path)["gradient_norm/global"]
    assert sorted(logged) == [4, 8, 12]
    assert [logged[s] for s in (4, 8, 12)] == pytest.approx(
        [norm(grads[s - 1]) for s in (4, 8, 12)], rel=1e-5
    )


def test_gradient_accumulation_counts_micro_batches(tmp_path):
    model = compiled_model(optimizers.SGD(0.0, momentum=0.9, gradient_accumulation_steps=2))
    x, y = data(8)
    grads = batch_gradients(model, x, y, range(8))
    fit(model, x, y, [GradientNormLogger(tmp_path, update_freq=2)])
    switch = model.train_function
    # Updates 2 and 4 are made by micro-batches 4 and 8.
    assert (switch.recording_calls, switch.plain_calls) == (2, 6)
    assert recording_executions(8, 1, 2, [2]) == 2
    logged = read_events(tmp_path)["gradient_norm/global"]
    assert sorted(logged) == [2, 4]
    for step in (2, 4):
        mean = [(a + b) / 2 for a, b in zip(grads[2 * step - 2], grads[2 * step - 1])]
        assert logged[step] == pytest.approx(norm(mean), rel=1e-5)


def test_the_statistics_free_function_records_nothing(tmp_path):
    optimizer = optimizers.SGD(0.1, momentum=0.9)
    model = compiled_model(optimizer)
    x, y = data(5)
    fit(model, x, y, [GradientNormLogger(tmp_path, update_freq=100)])
    switch = model.train_function
    assert (switch.recording_calls, switch.plain_calls) == (0, 5)
    assert len(optimizer.read_records()["steps"]) == 0
    # The logger's fit is over: nobody wants statistics, `train_on_batch` runs plain.
    model.train_on_batch(x[:8], y[:8])
    assert (switch.recording_calls, switch.plain_calls) == (0, 6)
    # Statistics enabled directly are wanted: an execution nobody announces records (update
    # 7 is not due, so the step's own conditional leaves the ring empty).
    optimizer.enable_statistics("gradient_norms", every=100)
    model.train_on_batch(x[:8], y[:8])
    assert (switch.recording_calls, switch.plain_calls) == (1, 6)


def test_histograms_and_scalars_of_different_frequencies(tmp_path):
    model = compiled_model(optimizers.SGD(0.0))
    x, y = data(6)
    grads = batch_gradients(model, x, y, range(6))
    fit(model, x, y, [GradientNormLogger(tmp_path, update_freq=5, histogram_freq=3)])
    switch = model.train_function
    assert (switch.recording_calls, switch.plain_calls) == (3, 3)  # updates 3, 5, 6
    events = read_events(tmp_path)
    assert sorted(events["gradient_norm/global"]) == [5]
    assert events["gradient_norm/global"][5] == pytest.approx(norm(grads[4]), rel=1e-5)
    kernel = model.trainable_variables[0].path
    histograms = events[f"gradient_histogram/{kernel}"]
    assert sorted(histograms) == [3, 6]
    for step in (3, 6):
        assert histograms[step][:, 2].sum() == grads[step - 1][0].size


def test_loggers_of_two_frequencies_share_one_switch(tmp_path):
    model = compiled_model(optimizers.SGD(0.0))
    x, y = data(6)
    fit(model, x, y, [LearningRateLogger(tmp_path, update_freq=2),
                      GradientNormLogger(tmp_path, update_freq=3)])
    switch = model.train_function
    assert (switch.recording_calls, switch.plain_calls) == (4, 2)  # 2, 3, 4, 6
    events = read_events(tmp_path)
    assert sorted(events["learning_rate"]) == [2, 4, 6]
    assert sorted(events["gradient_norm/global"]) == [3, 6]
    # A second fit keeps the switch and its statistics-free function.
    plain = switch.plain
    fit(model, x, y, [LearningRateLogger(tmp_path, update_freq=2),
                      GradientNormLogger(tmp_path, update_freq=3)], initial_epoch=1, epochs=2)
    assert model.train_function is switch and switch.plain is plain
    assert sorted(read_events(tmp_path)["learning_rate"]) == [2, 4, 6, 8, 10, 12]


@pytest.mark.parametrize("case", ["skip_nonfinite", "loss_scale"])
def test_where_the_host_cannot_count_the_updates_announced_executions_record(tmp_path, case):
    # Every execution of the loggers' fit runs the recording function (its conditional
    # picks the updates); a later fit without loggers runs the statistics-free one.
    if case == "skip_nonfinite":
        optimizer, freq = optimizers.SGD(0.0, skip_nonfinite=True), 2
    else:
        optimizer, freq = keras.optimizers.LossScaleOptimizer(optimizers.SGD(0.0)), 2
    model = compiled_model(optimizer)
    x, y = data(4)
    grads = batch_gradients(model, x, y, range(4))
    fit(model, x, y, [GradientNormLogger(tmp_path, update_freq=freq)])
    switch = model.train_function
    assert isinstance(switch, RecordingSwitch) and not switch.exact
    assert (switch.recording_calls, switch.plain_calls) == (4, 0)
    logged = read_events(tmp_path)["gradient_norm/global"]
    steps = list(range(freq, 5, freq))
    assert sorted(logged) == steps
    assert [logged[s] for s in steps] == pytest.approx([norm(grads[s - 1]) for s in steps], rel=1e-5)
    inner = optimizer.inner_optimizer if case == "loss_scale" else optimizer
    before = inner.read_records()
    fit(model, x, y, [], initial_epoch=1, epochs=2)
    assert (switch.recording_calls, switch.plain_calls) == (4, 4)
    assert list(inner.read_records()["steps"]) == list(before["steps"]) == steps


def test_records_any_matches_a_brute_force_count():
    optimizer = optimizers.SGD(0.1)
    optimizer.enable_statistics("gradient_norms", every=4)
    optimizer.enable_statistics("histograms", every=6)
    for first in range(1, 30):
        for last in range(first - 1, 40):
            expected = any(u % 4 == 0 or u % 6 == 0 for u in range(first, last + 1))
            assert optimizer.records_any(first, last) == expected, (first, last)
    assert not optimizers.SGD(0.1).records_any(1, 100)
    assert np.all([optimizer.records_any(u, u) for u in (4, 6, 8, 12)])


def test_every_update_records_the_next_update_finishes_the_latest_record(tmp_path):
    optimizer = optimizers.SGD(0.05, momentum=0.9)
    model = compiled_model(optimizer)
    x, y = data(4)
    optimizer.enable_statistics("gradient_norms", "update_ratio", "velocity_norm")
    grads = []
    for batch in range(3):
        xb, yb = x[8 * batch:8 * batch + 8], y[8 * batch:8 * batch + 8]
        grads.append(batch_gradients(model, xb, yb, [0])[0])
        model.train_on_batch(xb, yb)
    velocity = np.sqrt(sum(np.sum(np.square(np.asarray(v, np.float64)))
                           for v in optimizer.velocities))
    # Update 3's record waits for update 4 in the graph; the host can finish it now.
    assert list(optimizer.read_records(complete=False)["steps"]) == [1, 2]
    on_host = optimizer.read_records(complete=True)
    assert list(on_host["steps"]) == [1, 2, 3]
    assert on_host["columns"]["gradient_norm/global"][-1] == pytest.approx(norm(grads[2]), rel=1e-5)
    assert on_host["columns"]["velocity_norm/global"][-1] == pytest.approx(velocity, rel=1e-5)
    model.train_on_batch(x[24:], y[24:])
    in_graph = optimizer.read_records(complete=False)
    assert list(in_graph["steps"]) == [1, 2, 3]
    for name, column in on_host["columns"].items():
        assert in_graph["columns"][name][-1] == pytest.approx(column[-1], rel=1e-6), name


def test_each_update_waits_for_the_old_state_norms_not_for_every_gradient():
    """The update kernels are ordered after the reductions of the weights and velocities
    they overwrite, and nothing else is: a control input on the gradients' aggregation
    (an `IdentityN` of all gradients under the default strategy) would hold every update
    until the last gradient is computed, where without statistics each update starts as
    soon as its own gradient is ready."""
    import tensorflow as tf  # noqa: PLC0415

    model = compiled_model(optimizers.SGD(0.1, momentum=0.9))
    model.optimizer.enable_statistics("gradient_norms", "update_ratio", "velocity_norm")
    x, y = data(1)
    model.train_on_batch(x, y)
    specs = (tf.TensorSpec(x.shape, tf.float32), tf.TensorSpec(y.shape, tf.float32))
    graph = tf.function(model.train_step).get_concrete_function(specs).graph
    operations = graph.get_operations()
    kernels = [op for op in operations if op.type == "ResourceApplyKerasMomentum"]
    assert len(kernels) == len(model.trainable_variables)
    for kernel in kernels:
        # Beyond the reads TensorFlow orders before any write: the norms of the old state.
        assert {c.type for c in kernel.control_inputs} - {"ReadVariableOp"}
    aggregations = [op for op in operations if op.type == "IdentityN"]
    assert aggregations
    assert all(not op.control_inputs for op in aggregations)


def test_velocity_sums_are_found_in_the_row_that_carries_them():
    """Hand-made raw rows: with lag 1 a row carries the previous update's velocity sums,
    with lag 0 its own, and a row needing none (lag NaN) is complete by itself."""
    from keras_momentum.optimizers import _statistics as st  # noqa: PLC0415

    column = {name: len(st.HEADER) + i for i, name in enumerate(st.RAW)}
    table = [  # step, lag, Σ v² of the sources, Σ v²
        (3, 1.0, 30.0, 31.0),  # describes update 2, which has no row here
        (4, 1.0, 40.0, 41.0),
        (5, 1.0, 50.0, 51.0),  # update 5's own sums wait for update 6
        (8, np.nan, 0.0, np.nan),
        (9, 0.0, 90.0, 91.0),
    ]
    rows = np.zeros((len(table), st.record_size(1)), np.float32)
    for row, (step, lag, source, total) in zip(rows, table):
        row[1] = step  # step_low; step_high stays 0
        row[column["velocity_lag"]] = lag
        row[column["velocity_source_squares"]] = source
        row[column["velocity_squares"]] = total
    steps = st.decode_steps(rows)
    velocities, known = st.velocity_columns(rows, steps)
    assert list(known) == [True, True, False, True, True]
    np.testing.assert_array_equal(
        velocities, [[40, 41], [50, 51], [np.nan, np.nan], [0, np.nan], [90, 91]]
    )


def test_an_optimizer_whose_loggers_are_gone_pays_nothing(tmp_path):
    """After a fit with loggers at update_freq=1, a fit without them runs the
    statistics-free function and leaves the ring alone; the loggers' next fit records
    again with the functions already traced (no retrace)."""
    optimizer = optimizers.SGD(0.05, momentum=0.9)
    model = compiled_model(optimizer)
    x, y = data(3)

    def loggers():
        return [LearningRateLogger(tmp_path), GradientNormLogger(tmp_path)]

    fit(model, x, y, loggers())
    switch = model.train_function
    assert isinstance(switch, RecordingSwitch)
    recording = switch.recording
    assert (switch.recording_calls, switch.plain_calls) == (3, 0)
    ring = optimizer.read_records(complete=False)
    fit(model, x, y, [], initial_epoch=1, epochs=2)
    assert (switch.recording_calls, switch.plain_calls) == (3, 3)
    after = optimizer.read_records(complete=False)
    assert list(after["steps"]) == list(ring["steps"])
    np.testing.assert_array_equal(after["columns"]["gradient_norm/global"],
                                  ring["columns"]["gradient_norm/global"])
    grads = batch_gradients(model, x, y, range(3))
    fit(model, x, y, loggers(), initial_epoch=2, epochs=3)
    assert model.train_function is switch and switch.recording is recording
    assert (switch.recording_calls, switch.plain_calls) == (6, 3)
    logged = read_events(tmp_path)["gradient_norm/global"]
    # Updates 4-6 ran without statistics; 7-9 are logged, from the current weights.
    assert sorted(logged) == [1, 2, 3, 7, 8, 9]
    assert logged[7] == pytest.approx(norm(grads[0]), rel=1e-5)


class FailAtBatch2(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 2:
            raise RuntimeError("boom")


def test_after_a_fit_that_failed_a_fit_without_loggers_runs_statistics_free(tmp_path):
    # Keras skips `on_train_end` when a fit raises; the loggers' statistics must not go
    # on recording in later executions nobody announces.
    model = compiled_model(optimizers.SGD(0.05, momentum=0.9))
    x, y = data(4)
    with pytest.raises(RuntimeError, match="boom"):
        fit(model, x, y, [GradientNormLogger(tmp_path), FailAtBatch2()])
    switch = model.train_function
    assert (switch.recording_calls, switch.plain_calls) == (3, 0)
    fit(model, x, y, [])
    assert (switch.recording_calls, switch.plain_calls) == (3, 4)
    model.train_on_batch(x[:8], y[:8])
    assert (switch.recording_calls, switch.plain_calls) == (3, 5)


def test_statistics_enabled_directly_record_in_unannounced_executions(tmp_path):
    optimizer = optimizers.SGD(0.05, momentum=0.9)
    model = compiled_model(optimizer)
    x, y = data(2)
    fit(model, x, y, [GradientNormLogger(tmp_path)])
    switch = model.train_function
    assert not optimizer.statistics_wanted
    optimizer.enable_statistics("gradient_norms")
    assert optimizer.statistics_wanted
    fit(model, x, y, [])
    assert (switch.recording_calls, switch.plain_calls) == (4, 0)
    assert list(optimizer.read_records()["steps"]) == [1, 2, 3, 4]
