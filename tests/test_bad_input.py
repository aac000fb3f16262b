"""Invalid input is refused with a message that names the argument and shows the value.

A table of invalid arguments across optimizers, schedules and callbacks: wrong types,
out-of-range values, inconsistent combinations, unknown strings, unknown configuration keys
and non-scalar schedule steps. Each must raise `ValueError` or `TypeError` whose message
contains the argument's name and the value received (for a tensor, its shape). A log
directory that cannot be written, or that disappears during training, must not stop
training.
"""

import math
import shutil
import warnings

import keras
import numpy as np
import pytest

from keras_momentum.optimizers import diagnostics

from keras_momentum import callbacks, optimizers, schedules
from keras_momentum.optimizers import SGD


def cosine():
    return schedules.CosineDecay(0.1, 100)


def with_key(schedule, key, value):
    return type(schedule).from_config({**schedule.get_config(), key: value})


# (id, call, argument named in the message, the value as the message shows it)
CASES = [
    # SGD and the shared optimizer base
    ("sgd-negative-rate", lambda: SGD(-0.1), "learning_rate", "-0.1"),
    ("sgd-rate-as-string", lambda: SGD("0.1"), "learning_rate", "'0.1'"),
    ("sgd-rate-as-bool", lambda: SGD(True), "learning_rate", "True"),
    ("sgd-rate-nan", lambda: SGD(math.nan), "learning_rate", "nan"),
    ("sgd-momentum-one", lambda: SGD(0.1, momentum=1.0), "momentum", "1.0"),
    ("sgd-momentum-as-string", lambda: SGD(0.1, momentum="0.9"), "momentum", "'0.9'"),
    ("sgd-momentum-vector", lambda: SGD(0.1, momentum=np.array([0.9, 0.8])), "momentum", "[0.9, 0.8]"),
    ("sgd-momentum-config-dict", lambda: SGD(0.1, momentum={"class_name": "CosineDecay"}), "momentum", "'CosineDecay'"),
    ("sgd-unknown-formulation", lambda: SGD(0.1, formulation="tf"), "formulation", "'tf'"),
    ("sgd-dampening-keras", lambda: SGD(0.1, momentum=0.9, dampening=0.1), "dampening", "0.1"),
    ("sgd-nesterov-no-momentum", lambda: SGD(0.1, nesterov=True), "nesterov", "True"),
    ("sgd-fused-true", lambda: SGD(0.1, fused=True), "fused", "True"),
    ("sgd-weight-decay-string", lambda: SGD(0.1, weight_decay="1e-4"), "weight_decay", "'1e-4'"),
    ("sgd-unknown-decay-mode", lambda: SGD(0.1, weight_decay=0.1, weight_decay_mode="l2"), "weight_decay_mode", "'l2'"),
    ("sgd-skip-nonfinite-int", lambda: SGD(0.1, skip_nonfinite=1), "skip_nonfinite", "1"),
    ("sgd-negative-clipnorm", lambda: SGD(0.1, clipnorm=-1.0), "clipnorm", "-1.0"),
    ("sgd-unknown-argument", lambda: SGD(0.1, momentun=0.9), "momentun", "0.9"),
    ("sgd-unknown-config-key", lambda: SGD.from_config({**SGD(0.1).get_config(), "nesterov_": True}), "nesterov_", "True"),
    # QHM, AggMo, LARS, ScheduleFreeSGD, Lookahead
    ("qhm-nu-above-one", lambda: optimizers.QHM(nu=1.5), "nu", "1.5"),
    ("qhm-nu-schedule", lambda: optimizers.QHM(nu=cosine()), "nu", "CosineDecay"),
    ("agg_mo-empty-betas", lambda: optimizers.AggMo(betas=[]), "betas", "[]"),
    ("agg_mo-beta-one", lambda: optimizers.AggMo(betas=(0.0, 1.0)), "betas[1]", "1.0"),
    ("agg_mo-betas-string", lambda: optimizers.AggMo(betas="0.9"), "betas", "'0.9'"),
    ("lars-zero-trust", lambda: optimizers.LARS(1.0, trust_coefficient=0.0), "trust_coefficient", "0.0"),
    ("lars-bad-pattern", lambda: optimizers.LARS(1.0, exclude_from_adaptation="["), "exclude_from_adaptation", "'['"),
    ("lars-decay-mode", lambda: optimizers.LARS(1.0, weight_decay_mode="decoupled"), "weight_decay_mode", "'decoupled'"),
    ("schedule_free-momentum-zero", lambda: optimizers.ScheduleFreeSGD(momentum=0.0), "momentum", "0.0"),
    ("schedule_free-fractional-warmup", lambda: optimizers.ScheduleFreeSGD(warmup_steps=2.5), "warmup_steps", "2.5"),
    ("schedule_free-negative-r", lambda: optimizers.ScheduleFreeSGD(r=-1.0), "r", "-1.0"),
    ("lookahead-not-an-optimizer", lambda: optimizers.Lookahead("sgd"), "optimizer", "'sgd'"),
    ("lookahead-sync-zero", lambda: optimizers.Lookahead(SGD(0.1), sync_period=0), "sync_period", "0"),
    ("lookahead-step-above-one", lambda: optimizers.Lookahead(SGD(0.1), slow_step_size=1.5), "slow_step_size", "1.5"),
    ("lookahead-clipnorm", lambda: optimizers.Lookahead(SGD(0.1), clipnorm=1.0), "clipnorm", "1.0"),
    ("instrument-a-string", lambda: optimizers.instrument("adam"), "optimizer", "'adam'"),
    ("statistics-unknown-kind", lambda: diagnostics.attach(SGD(0.1)).request(None, ["norms"], 1), "kinds", "'norms'"),
    # schedules
    ("warmup-negative-steps", lambda: schedules.Warmup(cosine(), warmup_steps=-1), "warmup_steps", "-1"),
    ("warmup-unknown-shape", lambda: schedules.Warmup(cosine(), 5, shape="quadratic"), "shape", "'quadratic'"),
    ("warmup-exponential-from-zero", lambda: schedules.Warmup(cosine(), 5, shape="exponential"), "initial_learning_rate", "0.0"),
    ("warmup-schedule-as-string", lambda: schedules.Warmup("cosine", 5), "schedule", "'cosine'"),
    ("warmup-unknown-config-key", lambda: with_key(schedules.Warmup(cosine(), 5), "warmup", 3), "warmup", "3"),
    ("cosine-unknown-config-key", lambda: with_key(cosine(), "alpha", 0.1), "alpha", "0.1"),
    ("cosine-zero-steps", lambda: schedules.CosineDecay(0.1, 0), "decay_steps", "0"),
    ("cosine-vector-step", lambda: cosine()(np.zeros(3)), "step", "(3,)"),
    ("cosine-matrix-step", lambda: cosine()(keras.ops.zeros((2, 2))), "step", "(2, 2)"),
    ("cosine-string-step", lambda: cosine()("3"), "step", "'3'"),
    ("multistep-decreasing", lambda: schedules.MultiStepDecay(0.1, milestones=[30, 10]), "milestones", "[30, 10]"),
    ("sequential-boundaries", lambda: schedules.Sequential([0.1, 0.01], boundaries=[5, 10]), "boundaries", "[5, 10]"),
    ("one_cycle-pct", lambda: schedules.OneCycle(0.1, total_steps=100, pct_start=1.5), "pct_start", "1.5"),
    ("cyclical-mode", lambda: schedules.Cyclical(0.01, 0.1, step_size=10, mode="sine"), "mode", "'sine'"),
    ("epochs-zero-steps", lambda: schedules.epochs(2, 0), "steps_per_epoch", "0"),
    # callbacks
    ("plateau-factor-one", lambda: callbacks.ReduceLROnPlateau(factor=1.0), "factor", "1.0"),
    ("plateau-factor-string", lambda: callbacks.ReduceLROnPlateau(factor="0.5"), "factor", "'0.5'"),
    ("plateau-mode", lambda: callbacks.ReduceLROnPlateau(mode="up"), "mode", "'up'"),
    ("plateau-patience", lambda: callbacks.ReduceLROnPlateau(patience=-1), "patience", "-1"),
    ("plateau-min-delta", lambda: callbacks.ReduceLROnPlateau(min_delta=-0.1), "min_delta", "-0.1"),
    ("plateau-verbose", lambda: callbacks.ReduceLROnPlateau(verbose="loud"), "verbose", "'loud'"),
    ("plateau-monitor", lambda: callbacks.ReduceLROnPlateau(monitor=3), "monitor", "3"),
    ("rate-logger-log-dir", lambda: callbacks.LearningRateLogger(5), "log_dir", "5"),
    ("rate-logger-update-freq", lambda: callbacks.LearningRateLogger("logs", update_freq="epoch"), "update_freq", "'epoch'"),
    ("rate-logger-hparams", lambda: callbacks.LearningRateLogger("logs", log_hparams="yes"), "log_hparams", "'yes'"),
    ("norm-logger-flush", lambda: callbacks.GradientNormLogger("logs", flush_secs=0), "flush_secs", "0"),
    ("norm-logger-per-layer", lambda: callbacks.GradientNormLogger("logs", per_layer="no"), "per_layer", "'no'"),
]


@pytest.mark.parametrize(("call", "argument", "value"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_input_names_argument_and_value(call, argument, value):
    with pytest.raises((ValueError, TypeError)) as raised:
        call()
    message = str(raised.value)
    assert argument in message, message
    assert value in message, message


def test_the_table_is_large_and_unique():
    assert len(CASES) >= 30
    assert len({c[0] for c in CASES}) == len(CASES)


def small_fit(callback_list, epochs=2):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=SGD(0.05, momentum=0.9), loss="mse")
    x = np.random.default_rng(0).normal(size=(32, 3)).astype("float32")
    history = model.fit(x, x[:, :2], batch_size=8, epochs=epochs, verbose=0, callbacks=callback_list)
    return model, history


@pytest.mark.parametrize("logger", [callbacks.LearningRateLogger, callbacks.GradientNormLogger])
def test_unwritable_log_dir_warns_and_training_continues(tmp_path, logger):
    blocker = tmp_path / "a_file"
    blocker.write_text("a file where the log directory should be")
    with pytest.warns(RuntimeWarning, match="a_file"):
        model, history = small_fit([logger(blocker / "logs")])
    assert len(history.history["loss"]) == 2
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 8


class RemoveDirectory(keras.callbacks.Callback):
    def __init__(self, directory, batch):
        super().__init__()
        self.directory, self.batch = directory, batch

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.batch and self.directory.exists():
            shutil.rmtree(self.directory)


def test_vanishing_log_dir_does_not_stop_training(tmp_path):
    log_dir = tmp_path / "logs"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        model, history = small_fit(
            [callbacks.LearningRateLogger(log_dir), callbacks.GradientNormLogger(log_dir),
             RemoveDirectory(log_dir, batch=1)]
        )
    assert len(history.history["loss"]) == 2
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 8


def test_vanishing_log_dir_warns(tmp_path):
    log_dir = tmp_path / "logs"
    with pytest.warns(RuntimeWarning, match="logs"):
        small_fit([callbacks.LearningRateLogger(log_dir), RemoveDirectory(log_dir, batch=1)])
