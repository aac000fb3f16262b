"""The machinery shared by the TensorBoard loggers: which optimizer, which steps, how to read.

A logger finds the optimizer that makes the updates (the innermost one under
`LossScaleOptimizer`, `Lookahead` and other wrappers with an `inner_optimizer`), checks that it
carries `InstrumentationMixin`, switches on the statistics it needs and makes the model retrace
its train function so the step records them.
The optimizer records statistics on updates whose number is a multiple of `update_freq`
(and computes nothing on the others, where the backend allows). After each batch the
logger decides on the host, without touching the device, whether such an update may have
happened; only then does it read the latest record (one transfer, shared by all loggers
of the optimizer) and write the record's values, at the record's update number, to
`<log_dir>/train` in one event.

Only the chief writes (`is_chief`: worker 0 under `MultiWorkerMirroredStrategy`). Each
process writes a `SessionLog.START` at the first update it will log in a run directory,
so that after a restart TensorBoard drops the records the crashed process made of the
updates being replayed.
"""

import numbers
import os
import warnings

import keras

from keras_momentum.callbacks._chief import is_chief
from keras_momentum.callbacks._event_writer import EventWriter
from keras_momentum.optimizers.instrumentation import InstrumentationMixin

RUN = "train"  # keras.callbacks.TensorBoard's run directory for training summaries


def instrumented_optimizer(optimizer, caller):
    """The innermost optimizer inside `optimizer`'s wrappers, which must record statistics.

    Wrappers (`LossScaleOptimizer`, `Lookahead`) hand the gradients to `inner_optimizer`,
    whose update is the one that records them and whose `learning_rate_multiplier` the
    plateau reducer scales.

    Raises:
        TypeError: when that optimizer lacks `InstrumentationMixin`.
    """
    if optimizer is None:
        raise TypeError(f"{caller} needs a compiled model; the model has no optimizer")
    found = optimizer
    while hasattr(found, "inner_optimizer"):
        found = found.inner_optimizer
    if isinstance(found, InstrumentationMixin):
        return found
    name = type(found).__name__
    raise TypeError(
        f"{caller} needs an optimizer that records statistics, got {name} "
        f"({optimizer!r}). Use an optimizer of keras_momentum.optimizers, or wrap a Keras "
        f"optimizer: keras_momentum.optimizers.instrument(keras.optimizers.{name}(...))."
    )


class OptimizerLogger(keras.callbacks.Callback):
    """Base class of `LearningRateLogger` and `GradientNormLogger`.

    Subclasses define `_statistics_kinds()` (kinds recorded every `update_freq` updates),
    optionally `_extra_statistics()` (`{kind: every}`) and `_write_statistics(writer,
    statistics, step)`, where `statistics` is `read_statistics()`'s dict and `step` the
    update it describes.
    """

    def __init__(self, log_dir, update_freq=1, flush_secs=10.0):
        super().__init__()
        if not isinstance(log_dir, (str, os.PathLike)):
            raise TypeError(f"`log_dir` must be a str or os.PathLike, got {log_dir!r}")
        self.log_dir = os.fspath(log_dir)
        self.update_freq = _check_positive_int("update_freq", update_freq)
        if (
            not isinstance(flush_secs, numbers.Real)
            or isinstance(flush_secs, bool)
            or not flush_secs > 0
        ):
            raise ValueError(f"`flush_secs` must be a number > 0, got {flush_secs!r}")
        self.flush_secs = float(flush_secs)
        self._optimizer = None
        self._writer = None
        self._variable_positions = None
        self._last_step = None

    def _statistics_kinds(self):
        raise NotImplementedError

    def _extra_statistics(self):
        return {}

    def _wants_histograms(self, step):
        return False

    def _write_statistics(self, writer, statistics, step):
        raise NotImplementedError

    # ------------------------------------------------------------ set-up
    def set_model(self, model):
        super().set_model(model)
        optimizer = instrumented_optimizer(getattr(model, "optimizer", None), type(self).__name__)
        enabled = optimizer.statistics_frequencies
        optimizer.enable_statistics(*self._statistics_kinds(), every=self.update_freq)
        for kind, every in self._extra_statistics().items():
            optimizer.enable_statistics(kind, every=every)
        if optimizer.statistics_frequencies != enabled:
            # Every trainer builds its train function in `fit` after `set_model` when the
            # attribute is None; the new trace records the newly enabled statistics.
            model.train_function = None
        self._optimizer = optimizer

    def on_train_begin(self, logs=None):
        self._close_writer()
        self._variable_positions = None
        # Host-side estimate of the optimizer's raw step counter (micro-batches under
        # gradient accumulation); corrected from the device when a read finds no new record.
        self._accumulation = self._optimizer.gradient_accumulation_steps or 1
        self._raw_count = self._read_raw_count(self._state_values())
        self._predicted = self._raw_count // self._accumulation
        self._batch_begin = 0
        if not is_chief(self._model):
            return
        self._writer = self._open_writer(os.path.join(self.log_dir, RUN))
        if self._writer is not None:
            self._guard(lambda: self._writer.start_session(self._predicted + 1))

    def on_train_batch_begin(self, batch, logs=None):
        self._batch_begin = batch
        # Loggers of one optimizer share the read after this batch, not an older one.
        self._optimizer.clear_statistics_cache()

    def on_train_batch_end(self, batch, logs=None):
        if self._writer is None:
            return
        # With `steps_per_execution > 1` one call covers several batches.
        self._raw_count += batch - self._batch_begin + 1
        predicted = self._raw_count // self._accumulation
        crossed = predicted // self.update_freq > self._predicted // self.update_freq
        self._predicted = predicted
        if crossed:
            self._log()

    def on_epoch_end(self, epoch, logs=None):
        if self._writer is not None:
            self._guard(self._writer.flush)

    def on_train_end(self, logs=None):
        self._close_writer()

    def __del__(self):
        try:
            self._close_writer()
        except Exception:  # noqa: BLE001, S110 (nothing can be reported during collection)
            pass

    # ------------------------------------------------------------ reading
    def _log(self):
        values = self._state_values()
        statistics = self._optimizer.read_statistics(
            values,
            histograms=self._wants_histograms(self._predicted),
            cache_key=id(self._model),
        )
        step = statistics["step"]
        if step == 0 or step == self._last_step:
            # No new record: updates were skipped (non-finite gradients), so the host's
            # count ran ahead of the optimizer's; take the optimizer's.
            self._raw_count = self._read_raw_count(values)
            self._predicted = self._raw_count // self._accumulation
            return
        self._guard(lambda: self._write_statistics(self._writer, statistics, step))
        self._last_step = step

    def _state_values(self):
        """Optimizer-variable values by path when the trainer holds them (JAX), else None.

        During `fit`, Keras's JAX trainer keeps the state in `model._jax_state` and empties
        the variables; the lists follow `model.optimizer.variables`, which for a wrapper
        includes the wrapped optimizer's variables.
        """
        state = getattr(self._model, "_jax_state", None)
        values = state.get("optimizer_variables") if state else None
        if values is None:
            return None
        if self._variable_positions is None:
            position = {id(v): i for i, v in enumerate(self._model.optimizer.variables)}
            self._variable_positions = [
                (v.path, position[id(v)])
                for v in self._optimizer.variables
                if id(v) in position
            ]
        return {path: values[i] for path, i in self._variable_positions}

    def _read_raw_count(self, values):
        # `_iterations` counts calls of `apply`; `iterations` divides it by the
        # accumulation steps and cannot be read from the trainer's state.
        counter = self._optimizer._iterations
        if values is not None and counter.path in values:
            return int(keras.ops.convert_to_numpy(values[counter.path]))
        return int(keras.ops.convert_to_numpy(counter.value))

    # ------------------------------------------------------------ writing
    def _open_writer(self, directory):
        try:
            return EventWriter(directory, self.flush_secs)
        except OSError as error:
            self._fail(f"cannot write to {directory!r}: {error}")
            return None

    def _guard(self, write):
        try:
            write()
        except OSError as error:
            self._fail(f"writing to {self.log_dir!r} failed: {error}")
            self._close_writer()

    def _fail(self, message):
        warnings.warn(
            f"{type(self).__name__} logs nothing more in this run: {message}",
            RuntimeWarning,
            stacklevel=2,
        )

    def _close_writer(self):
        writer, self._writer = getattr(self, "_writer", None), None
        if writer is not None:
            try:
                writer.close()
            except OSError as error:
                self._fail(f"closing the event file failed: {error}")


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be an int >= 1, got {value!r}")
    return int(value)
