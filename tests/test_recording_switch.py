"""The loggers run executions in which no update records on a statistics-free train function.

Which executions record follows from the update numbers alone (closed form below); the
logged values are checked against `tf.GradientTape` gradients, so a wrong choice of function
(an update due to record that ran without statistics) shows up as a missing or wrong step.
"""

import keras
import pytest
from _diagnostics import batch_gradients, compiled_model, data, fit, norm, read_events

from keras_momentum import optimizers
from keras_momentum.callbacks import GradientNormLogger, LearningRateLogger
from keras_momentum.callbacks._train_function_switch import TrainFunctionSwitch
from keras_momentum.optimizers import diagnostics

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


class Capture(keras.callbacks.Callback):
    """Keeps the model's train function as it is at the end of the last epoch."""

    def on_epoch_end(self, epoch, logs=None):
        self.switch = self.model.train_function


def fit_capturing(model, x, y, loggers, **kwargs):
    capture = Capture()
    fit(model, x, y, [*loggers, capture], **kwargs)
    assert isinstance(capture.switch, TrainFunctionSwitch)
    return capture.switch


def test_only_executions_with_a_due_update_record(tmp_path):
    model = compiled_model(optimizers.SGD(0.0), steps_per_execution=3)
    x, y = data(12)
    grads = batch_gradients(model, x, y, range(12))
    switch = fit_capturing(model, x, y, [GradientNormLogger(tmp_path, update_freq=4)])
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
    switch = fit_capturing(model, x, y, [GradientNormLogger(tmp_path, update_freq=2)])
    # Updates 2 and 4 are made by micro-batches 4 and 8.
    assert (switch.recording_calls, switch.plain_calls) == (2, 6)
    assert recording_executions(8, 1, 2, [2]) == 2
    logged = read_events(tmp_path)["gradient_norm/global"]
    assert sorted(logged) == [2, 4]
    for step in (2, 4):
        mean = [(a + b) / 2 for a, b in zip(grads[2 * step - 2], grads[2 * step - 1])]
        assert logged[step] == pytest.approx(norm(mean), rel=1e-5)


def test_histograms_and_scalars_of_different_frequencies(tmp_path):
    model = compiled_model(optimizers.SGD(0.0))
    x, y = data(6)
    grads = batch_gradients(model, x, y, range(6))
    switch = fit_capturing(model, x, y, [GradientNormLogger(tmp_path, update_freq=5,
                                                            histogram_freq=3)])
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
    switch = fit_capturing(model, x, y, [LearningRateLogger(tmp_path, update_freq=2),
                                         GradientNormLogger(tmp_path, update_freq=3)])
    assert (switch.recording_calls, switch.plain_calls) == (4, 2)  # 2, 3, 4, 6
    events = read_events(tmp_path)
    assert sorted(events["learning_rate"]) == [2, 4, 6]
    assert sorted(events["gradient_norm/global"]) == [3, 6]


@pytest.mark.parametrize("case", ["skip_nonfinite", "loss_scale"])
def test_where_the_host_cannot_count_the_updates_announced_executions_record(tmp_path, case):
    # Every execution of the loggers' fit runs the recording function; the updates that
    # are not due write into the spare row and are never logged.
    if case == "skip_nonfinite":
        optimizer = optimizers.SGD(0.0, skip_nonfinite=True)
    else:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizers.SGD(0.0))
    model = compiled_model(optimizer)
    x, y = data(4)
    grads = batch_gradients(model, x, y, range(4))
    switch = fit_capturing(model, x, y, [GradientNormLogger(tmp_path, update_freq=2)])
    assert not switch.exact
    assert (switch.recording_calls, switch.plain_calls) == (4, 0)
    logged = read_events(tmp_path)["gradient_norm/global"]
    assert sorted(logged) == [2, 4]
    assert [logged[s] for s in (2, 4)] == pytest.approx([norm(grads[s - 1]) for s in (2, 4)],
                                                         rel=1e-5)


def test_records_any_matches_a_brute_force_count():
    recorder = diagnostics.attach(optimizers.SGD(0.1))
    recorder.request("scalars", ["gradient_norms"], 4)
    recorder.request("histograms", ["histograms"], 100, histogram_every=6)
    assert recorder.every == 4 and recorder.histogram_every == 6
    for first in range(1, 30):
        for last in range(first - 1, 40):
            expected = any(u % 4 == 0 or u % 6 == 0 for u in range(first, last + 1))
            assert recorder.records_any(first, last) == expected, (first, last)


def test_an_optimizer_whose_loggers_are_gone_pays_nothing(tmp_path):
    # After a fit with loggers, a fit without them runs the statistics-free function, and
    # so does a train function traced anew after `compile`; the loggers' next fit records
    # with the functions already traced.
    optimizer = optimizers.SGD(0.05, momentum=0.9)
    model = compiled_model(optimizer)
    x, y = data(3)

    def loggers():
        return [LearningRateLogger(tmp_path), GradientNormLogger(tmp_path)]

    first = loggers()
    switch = fit_capturing(model, x, y, first)
    recording = switch.recording
    assert (switch.recording_calls, switch.plain_calls) == (3, 0)
    fit(model, x, y, [], initial_epoch=1, epochs=2)
    assert model.train_function is switch
    assert (switch.recording_calls, switch.plain_calls) == (3, 3)
    assert list(optimizer.recorder.read()[0]) == [1, 2, 3]
    store = {}
    optimizer.save_own_variables(store)
    assert len(store) == 3 + len(model.trainable_variables)  # no diagnostics buffers
    fit(model, x, y, first, initial_epoch=2, epochs=3)
    assert model.train_function is switch and switch.recording is recording
    assert list(optimizer.recorder.read()[0]) == [1, 2, 3, 7, 8, 9]
    model.compile(optimizer=optimizer, loss="mse")  # a new train function, no logger
    fit(model, x, y, [], initial_epoch=3, epochs=4)
    assert list(optimizer.recorder.read()[0]) == [1, 2, 3, 7, 8, 9]
    assert sorted(read_events(tmp_path)["gradient_norm/global"]) == [1, 2, 3, 7, 8, 9]


class FailAtBatch2(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 2:
            raise RuntimeError("boom")


def test_after_a_fit_that_failed_a_fit_without_loggers_runs_statistics_free(tmp_path):
    # Keras skips `on_train_end` when a fit raises; executions nobody announces run plain.
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
