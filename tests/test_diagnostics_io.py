"""The diagnostics loggers' writing: failures, crash safety, HParams, and every backend.

The TensorFlow, JAX (one with TensorFlow made unimportable) and PyTorch runs happen in a
subprocess running `backend_diagnostics_run.py`, which compares with a NumPy reference and
reports JSON.
"""

import glob
import json
import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from _diagnostics import InverseTime, compiled_model, data, fit, read_events, summary_values
from tensorboard.plugins.hparams import metadata as hparams_metadata

from keras_momentum import optimizers
from keras_momentum.callbacks import GradientNormLogger, LearningRateLogger
from keras_momentum.optimizers.diagnostics import RECORD_SLOTS

pytestmark = pytest.mark.all_backends


@pytest.mark.tensorflow
def test_optimizer_without_instrumentation_is_rejected(tmp_path):
    model = compiled_model(keras.optimizers.Adam())
    with pytest.raises(TypeError, match=r"instrument\(keras\.optimizers\.Adam"):
        fit(model, *data(1), [GradientNormLogger(tmp_path)])


@pytest.mark.tensorflow
def test_unwritable_log_dir_warns_and_training_completes(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    model = compiled_model(optimizers.SGD(0.1))
    with pytest.warns(RuntimeWarning, match="cannot write"):
        history = fit(model, *data(2), [GradientNormLogger(blocker / "logs")], epochs=2)
    assert len(history.history["loss"]) == 2
    assert int(model.optimizer.iterations) == 4


class Fail(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 2:
            raise RuntimeError("boom")


class Slow(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        time.sleep(0.15)


@pytest.mark.tensorflow
def test_records_reach_disk_within_flush_secs_when_training_fails(tmp_path):
    # Batches slower than flush_secs / 2: each record is read and flushed within flush_secs.
    model = compiled_model(optimizers.SGD(0.1))
    logger = LearningRateLogger(tmp_path, flush_secs=0.2)
    with pytest.raises(RuntimeError, match="boom"):
        fit(model, *data(4), [Slow(), logger, Fail()])  # Keras skips on_train_end
    time.sleep(0.5)
    assert sorted(read_events(tmp_path)["learning_rate"]) == [1, 2, 3]


@pytest.mark.tensorflow
def test_records_left_by_a_failed_fit_are_written_by_the_next(tmp_path):
    model = compiled_model(optimizers.SGD(0.1))
    logger = LearningRateLogger(tmp_path)
    x, y = data(4)
    with pytest.raises(RuntimeError, match="boom"):
        fit(model, x, y, [logger, Fail()])
    fit(model, x, y, [logger])
    assert sorted(read_events(tmp_path)["learning_rate"]) == list(range(1, 8))


@pytest.mark.parametrize(
    ("backend", "hide_tensorflow"),
    [("tensorflow", False), ("jax", False), ("jax", True), ("torch", False)],
)
def test_each_backend_logs_what_numpy_replays(tmp_path, backend, hide_tensorflow):
    script = os.path.join(os.path.dirname(__file__), "backend_diagnostics_run.py")
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    args = [sys.executable, script, str(tmp_path)]
    done = subprocess.run(
        args + (["--hide-tensorflow"] if hide_tensorflow else []),
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == backend
    if hide_tensorflow:
        assert not result["tensorflow_loaded"]
    for name, (logged, expected) in result["compare"].items():
        assert sorted(logged) == sorted(expected), name
        for step in expected:
            assert logged[step] == pytest.approx(expected[step], rel=1e-5), (name, step)

@pytest.mark.tensorflow
def test_hparams_session_lists_the_optimizer_configuration(tmp_path):
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    model = compiled_model(optimizers.SGD(schedule, momentum=0.9))
    fit(model, *data(2), [LearningRateLogger(tmp_path, log_hparams=True)], epochs=2)
    records = list(summary_values(tmp_path))  # the session lives in log_dir itself
    assert [value.tag for _, value in records] == [hparams_metadata.SESSION_START_INFO_TAG]
    content = records[0][1].metadata.plugin_data.content
    hparams = hparams_metadata.parse_session_start_info_plugin_data(content).hparams
    assert hparams["optimizer"].string_value == "SGD"
    assert hparams["learning_rate"].string_value == "ExponentialDecay"
    assert hparams["learning_rate.decay_steps"].number_value == 10
    assert hparams["learning_rate.decay_rate"].number_value == pytest.approx(0.5)
    assert hparams["momentum"].number_value == pytest.approx(0.9)
    assert sorted(read_events(tmp_path)["learning_rate"]) == [1, 2, 3, 4]


@pytest.mark.tensorflow
def test_unserialisable_schedule_skips_hparams_with_a_warning(tmp_path):
    model = compiled_model(optimizers.SGD(InverseTime()))
    with pytest.warns(RuntimeWarning, match="HParams"):
        fit(model, *data(2), [LearningRateLogger(tmp_path, log_hparams=True)])
    assert list(summary_values(tmp_path)) == []
    assert sorted(read_events(tmp_path)["learning_rate"]) == [1, 2]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"update_freq": 0}, "`update_freq` must be an int >= 1, got 0"),
        ({"flush_secs": 0}, "`flush_secs` must be a number > 0, got 0"),
        ({"histogram_freq": -1}, "`histogram_freq` must be an int >= 0, got -1"),
        ({"histogram_freq": 1.5}, "`histogram_freq` must be an int >= 0, got 1.5"),
    ],
)
def test_invalid_arguments_are_named(tmp_path, arguments, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        GradientNormLogger(tmp_path, **arguments)


@pytest.mark.parametrize("name", ["per_layer", "update_ratio", "velocity_norm"])
def test_switches_must_be_bools(tmp_path, name):
    with pytest.raises(TypeError, match=f"`{name}` must be a bool, got 1"):
        GradientNormLogger(tmp_path, **{name: 1})


class Pause(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        time.sleep(0.02)


@pytest.mark.tensorflow
def test_each_record_carries_the_wall_time_of_its_own_batch(tmp_path):
    # The read after update `half` (half the ring is new) leaves record `half` for the
    # next update to finish, and the epoch's end writes it; it must keep the time of
    # batch `half`, not of a later one.
    half = RECORD_SLOTS // 2
    updates = half + 8
    model = compiled_model(optimizers.SGD(0.01, momentum=0.9))
    x, y = data(updates)
    fit(model, x, y, [Pause(), GradientNormLogger(tmp_path)])
    import tensorflow as tf  # noqa: PLC0415

    times = {}
    for path in glob.glob(os.path.join(tmp_path, "train", "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            if event.summary.value:
                times[event.step] = event.wall_time
    assert sorted(times) == list(range(1, updates + 1))
    gaps = np.diff([times[step] for step in range(1, updates + 1)])
    assert np.all(gaps > 0.01), gaps


@pytest.mark.tensorflow
def test_a_live_tensorboard_keeps_reading_both_loggers(tmp_path):
    # TensorBoard by default reads a run's event files one after the other and stops
    # polling a file once a newer one exists; it reloads here after every epoch, as a
    # live TensorBoard does while training runs.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: PLC0415

    accumulator = EventAccumulator(os.path.join(tmp_path, "train"), size_guidance={"tensors": 0})

    class Reload(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            accumulator.Reload()  # after the loggers' own epoch end (which flushes)

    model = compiled_model(optimizers.SGD(0.1, momentum=0.9))
    loggers = [LearningRateLogger(tmp_path), GradientNormLogger(tmp_path, per_layer=False)]
    fit(model, *data(3), [*loggers, Reload()], epochs=3)
    accumulator.Reload()
    for tag in ("learning_rate", "gradient_norm/global"):
        assert [event.step for event in accumulator.Tensors(tag)] == list(range(1, 10)), tag
    assert len(glob.glob(os.path.join(tmp_path, "train", "events.out.tfevents.*"))) == 1
