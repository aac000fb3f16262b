"""TensorBoard scalars of the hyperparameters each optimizer update actually used."""

import numbers
import warnings

from tensorboard.plugins.hparams import summary_v2 as hparams_summary

import time

from tensorboard.compat.proto import event_pb2

from keras_momentum.callbacks import _logger
from keras_momentum.callbacks._logger import OptimizerLogger

HYPERPARAMETERS = ("learning_rate", "momentum", "weight_decay")


class LearningRateLogger(OptimizerLogger):
    """Logs the learning rate, momentum and weight decay of every optimizer update.

    The values are those the update itself used, recorded inside the train step: the
    learning rate after warmup, schedules and the plateau factor that
    `keras_momentum.callbacks.ReduceLROnPlateau` scales; `momentum` and `weight_decay` after
    their schedules. `momentum` is logged when the optimizer has one (this package's
    optimizers, Keras's `SGD`), `weight_decay` when it is set.

    Scalars go to `<log_dir>/train`, the run `keras.callbacks.TensorBoard` writes its
    training curves to, so both can share a `log_dir`. The step of a record is the number
    of optimizer updates done, `optimizer.iterations` after the update: the first update
    is step 1, and a resumed run continues from the restored count. Under
    `gradient_accumulation_steps` only real updates are logged; with
    `steps_per_execution > 1` every update of an execution is logged, up to 256 per
    execution (the device keeps the latest 256 records until the callback reads them).

    The optimizer must record statistics: any optimizer of `keras_momentum.optimizers`, or
    a Keras optimizer wrapped with `keras_momentum.optimizers.instrument(...)`. It may be
    wrapped in a `LossScaleOptimizer` (as `compile` does under `mixed_float16`) or in
    another wrapper that exposes `inner_optimizer`. Attaching the callback makes the model
    retrace its train function once; executions in which no update is logged run a train
    function without statistics.

    A `log_dir` that cannot be written produces a `RuntimeWarning` and the callback logs
    nothing more in that `fit`; training is never interrupted. Records of a `fit` that
    ended on an exception are written by the next `fit` with this callback, or at exit.

    Args:
        log_dir: directory of the TensorBoard logs, as given to `keras.callbacks.TensorBoard`.
        update_freq: int >= 1; log the updates whose number is a multiple of it. Defaults
            to 1, every update.
        flush_secs: a record reaches the event file on disk at most this many seconds
            after its update, so a killed process loses at most this much. The file is
            also flushed at each epoch's end and at the end of training. Defaults to 10.
        log_hparams: write the optimizer's configuration (schedules included) once to the
            HParams dashboard, as a session in `log_dir` itself, whose `train` and
            `validation` runs hold its metrics. Defaults to False.

    Example:

        model.compile(optimizer=keras_momentum.optimizers.SGD(schedule, momentum=0.9), ...)
        model.fit(x, y, callbacks=[LearningRateLogger("logs")])
    """

    def __init__(self, log_dir, update_freq=1, flush_secs=10.0, log_hparams=False):
        super().__init__(log_dir, update_freq=update_freq, flush_secs=flush_secs)
        if not isinstance(log_hparams, bool):
            raise TypeError(f"`log_hparams` must be a bool, got {log_hparams!r}")
        self.log_hparams = log_hparams
        self._hparams_written = False

    def _kinds(self):
        return ("hyperparameters",)

    def _tags(self, columns):
        return {name: columns[name] for name in HYPERPARAMETERS if name in columns}

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.log_hparams and not self._hparams_written and self._writer is not None:
            try:
                hyperparameters = optimizer_hyperparameters(self._model.optimizer)
            except (NotImplementedError, TypeError, ValueError) as error:
                # e.g. a custom schedule without `get_config`; the scalars still get logged.
                warnings.warn(
                    f"LearningRateLogger cannot list the optimizer's hyperparameters for "
                    f"the HParams dashboard: {error!r}",
                    RuntimeWarning,
                    stacklevel=2,
                )
                return
            self._hparams_written = True
            writer = _logger._open_writer(self, self.log_dir)
            if writer is not None:
                summary = hparams_summary.hparams_pb(hyperparameters)
                event = event_pb2.Event(wall_time=time.time(), step=0, summary=summary)
                self._guard(lambda: writer.add_event(event))
                _logger._release_writer(writer)


def optimizer_hyperparameters(optimizer):
    """A flat dict of `optimizer`'s configuration for the HParams dashboard.

    Nested configurations (schedules, wrapped optimizers) are flattened to dotted names,
    e.g. `learning_rate` (the schedule's class name) and `learning_rate.decay_steps`.
    Values that are not bool, number or str are left out.
    """
    names = [type(optimizer).__name__]
    inner = optimizer
    while hasattr(inner, "inner_optimizer"):
        inner = inner.inner_optimizer
        names.append(type(inner).__name__)
    values = {"optimizer": "/".join(names)}
    _flatten(inner.get_config(), "", values)
    return values


def _flatten(config, prefix, out):
    for key, value in config.items():
        name = prefix + str(key)
        if key == "name" or value is None:
            continue
        if isinstance(value, dict):
            if "class_name" in value and "config" in value:
                out[name] = str(value["class_name"])
                _flatten(value["config"], name + ".", out)
            else:
                _flatten(value, name + ".", out)
        elif isinstance(value, (bool, str)):
            out[name] = value
        elif isinstance(value, numbers.Integral):
            out[name] = int(value)
        elif isinstance(value, numbers.Real):
            out[name] = float(value)

