"""The machinery shared by the TensorBoard loggers: which optimizer, which steps, how to read.

A logger finds the optimizer that makes the updates (the innermost one under
`LossScaleOptimizer`, `Lookahead` and other wrappers with an `inner_optimizer`), checks that it
carries `InstrumentationMixin`, switches on the statistics it needs and makes the model retrace
its train function so the step records them.
The optimizer records statistics on updates whose number is a multiple of `update_freq`,
each record into the next row of a ring of `RECORD_SLOTS` rows on the device; executions
with no such update run a train function without statistics (`_recording_switch`). The
host does not touch the device after each batch: it counts the updates itself, and reads
the whole ring in one transfer (shared by all loggers of the optimizer) once half the ring
is new, once `flush_secs / 2` have passed since the last read, and at the end of each
epoch and of training. The device keeps only the latest histograms, so after an update
that made some, the next batch begin, in the training loop, reads them before the next
execution can replace them (a batch end may run in a worker thread, behind the loop).
On JAX and PyTorch a read asked for by a batch end (which Keras may run in a worker
thread, beside the next step) happens at the next batch begin, in the training loop.
A read writes every new record, at the record's update number, to `<log_dir>/train`, one
event per update, in the event file all loggers of that run directory share
(`_event_writer.open_shared`). Records made on the device but
not yet read are written at the start of the next `fit` if a run stops on an exception,
and at interpreter exit.

Only the chief writes (`is_chief`: worker 0 under `MultiWorkerMirroredStrategy`). Each
process writes a `SessionLog.START` at the first update it will log in a run directory,
so that after a restart TensorBoard drops the records the crashed process made of the
updates being replayed.
"""

import atexit
import numbers
import os
import threading
import time
import warnings
import weakref

import keras
import numpy as np

from keras_momentum.callbacks import _event_writer, _recording_switch
from keras_momentum.callbacks._chief import is_chief
from keras_momentum.optimizers._statistics import RECORD_SLOTS
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
    `_columns(names)` (the record columns they write) and optionally
    `_extra_statistics()` (`{kind: every}`) and `_write_histograms(writer, histograms)`.
    """

    # Batch hooks only count on the host; Keras may run them in a worker thread.
    async_safe = True

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
        self._switch = None
        self._read_in_loop = False
        self._due_read = None
        self._writer = None
        self._variable_positions = None
        self._last_step = 0
        self._raw_count = self._raw_at_epoch = self._histograms_read_at = 0
        self._accumulation = 1
        self._lock = threading.RLock()
        _LIVE_LOGGERS.add(self)

    def _statistics_kinds(self):
        raise NotImplementedError

    def _extra_statistics(self):
        return {}

    def _histogram_every(self):
        """Updates between two histograms this logger writes; 0 for none."""
        return 0

    def _columns(self, names):
        """The record columns (among `names`) this logger writes, as scalar tags."""
        raise NotImplementedError

    def _write_histograms(self, writer, histograms):
        return

    # ------------------------------------------------------------ set-up
    def set_model(self, model):
        super().set_model(model)
        optimizer = instrumented_optimizer(getattr(model, "optimizer", None), type(self).__name__)
        enabled = optimizer.statistics_frequencies
        # Recorded in the executions this logger announces (`on_train_batch_begin`).
        optimizer.enable_statistics(*self._statistics_kinds(), every=self.update_freq,
                                    direct=False)
        for kind, every in self._extra_statistics().items():
            optimizer.enable_statistics(kind, every=every, direct=False)
        if optimizer.statistics_frequencies != enabled:
            # Every trainer builds its train function in `fit` after `set_model` when the
            # attribute is None; the new trace records the newly enabled statistics.
            model.train_function = None
        self._optimizer = optimizer

    def on_train_begin(self, logs=None):
        with self._lock:
            if self._writer is not None:
                # The previous `fit` stopped on an exception: write what it recorded.
                self._read_and_write()
            self._close_writer()
            self._variable_positions = None
            # Host-side count of the optimizer's raw step counter (micro-batches under
            # gradient accumulation), corrected from the device at each read.
            self._accumulation = self._optimizer.gradient_accumulation_steps or 1
            self._record_every = self._optimizer.record_every or self.update_freq
            self._sync_count(self._state_values())
            self._raw_at_epoch = self._raw_count
            self._histograms_read_at = self._predicted
            # Records of the updates done so far are written or belong to another run.
            self._last_step = self._predicted
            self._times = []  # (updates done, wall time) after each batch not yet written
            # Every worker, chief or not, takes the same branch: the recording step may
            # hold collective operations.
            self._switch = _recording_switch.install(self._model, self._optimizer)
            # Keras's JAX trainer donates its state to the next step, which may already
            # run while a batch end is handled in a worker thread, and PyTorch's eager
            # step may be assigning the records meanwhile: there a batch end only asks
            # for a read, and the next batch begin, in the training loop, does it.
            # (TensorFlow orders reads of a variable with the step's assignments.)
            self._read_in_loop = keras.backend.backend() in ("jax", "torch")
            self._due_read = None  # None, or the `complete` of a read asked for
            if not is_chief(self._model):
                return
            self._writer = self._open_writer(os.path.join(self.log_dir, RUN))
            if self._writer is not None:
                self._guard(lambda: self._writer.start_session(self._predicted + 1))

    def on_train_batch_begin(self, batch, logs=None):
        # Keras calls this hook in the training loop, just before the execution; the
        # micro-batches of earlier epochs were all counted when this epoch began.
        position = self._raw_at_epoch + batch
        if self._switch is not None:
            self._switch.position = position
        # The device keeps the histograms of the latest update that made them only, and
        # batch ends may run in a worker thread, behind the loop: a histogram update
        # done before this execution is read here, before the execution overwrites it.
        done = position // self._accumulation
        every = self._histogram_every()
        histograms_due = every and done // every > self._histograms_read_at // every
        if self._due_read is not None or histograms_due:
            with self._lock:
                complete, self._due_read = bool(self._due_read), None
                if self._writer is not None:
                    self._read_and_write(complete, position)
                self._histograms_read_at = max(self._histograms_read_at, done)

    def on_train_batch_end(self, batch, logs=None):
        if self._writer is None:
            return
        with self._lock:
            # `batch` is the epoch's index of the call's last batch (one call covers
            # `steps_per_execution` batches); calls may arrive out of order.
            self._raw_count = max(self._raw_count, self._raw_at_epoch + batch + 1)
            predicted = self._raw_count // self._accumulation
            if predicted == self._predicted:
                return
            self._predicted = predicted
            now = time.time()
            self._times.append((predicted, now))
            pending = predicted // self._record_every - self._read_at // self._record_every
            if pending and now - self._read_time >= self.flush_secs / 2:
                # Also the latest update's record, which the next update would finish.
                self._read(complete=True)
            elif pending >= RECORD_SLOTS // 2:
                self._read(complete=False)

    def _read(self, complete):
        if not self._read_in_loop:
            self._read_and_write(complete)
        else:
            self._due_read = complete or bool(self._due_read)

    def on_epoch_begin(self, epoch, logs=None):
        with self._lock:
            self._raw_at_epoch = self._raw_count

    def on_epoch_end(self, epoch, logs=None):
        if self._writer is not None:
            with self._lock:
                self._read_and_write()
                if self._writer is not None:
                    self._guard(self._writer.flush)

    def on_train_end(self, logs=None):
        with self._lock:
            if self._writer is not None:
                self._read_and_write()
            self._close_writer()

    def __del__(self):
        try:
            self._close_writer()
        except Exception:  # noqa: BLE001, S110 (nothing can be reported during collection)
            pass

    # ------------------------------------------------------------ reading
    def _read_and_write(self, complete=True, position=0):
        """Writes the records made since the last read.

        `complete=False` leaves out a latest record the next update will finish (see
        `InstrumentationMixin.read_records`), which saves reading the velocities.
        `position`: micro-batches known done, where the training loop knows more than
        the batch ends counted so far.
        """
        self._due_read = None
        values = self._state_values()
        records = self._optimizer.read_records(
            values,
            histograms=bool(self._histogram_every()),
            # Loggers of one optimizer reading after the same batch share one transfer.
            cache_key=(id(self._model), max(self._raw_count, position)),
            complete=complete,
        )
        self._read_at, self._read_time = self._predicted, time.time()
        self._histograms_read_at = max(self._histograms_read_at, self._predicted)
        steps = records["steps"]
        fresh = np.flatnonzero((steps > self._last_step) & (steps % self.update_freq == 0))
        if len(fresh):
            columns = {tag: column[fresh] for tag, column in self._columns(records["columns"]).items()}
            steps = steps[fresh]
            # Each record's wall time: the end of the batch that made its update, where known.
            marks = np.array([mark for mark, _ in self._times], dtype=np.int64)
            ends = np.array([end for _, end in self._times] + [time.time()])
            wall_times = ends[np.searchsorted(marks, steps, side="left")]
            if not self._guard(lambda: self._writer.scalar_series(columns, steps, wall_times)):
                return
            self._last_step = int(steps[-1])
        if records["histograms"] is not None:
            self._guard(lambda: self._write_histograms(self._writer, records["histograms"]))
        # A record left for the next update to finish keeps its batch's wall time.
        self._times = [(mark, end) for mark, end in self._times if mark > self._last_step]

    def _sync_count(self, values):
        # Updates skipped for non-finite gradients later leave the device's count behind
        # the host's; the host's count only schedules reads, which then come a little early.
        self._raw_count = self._read_raw_count(values)
        self._predicted = self._raw_count // self._accumulation
        self._read_at = self._predicted
        self._read_time = time.time()

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
            # Reads happen at least every flush_secs / 2, and so do flushes: a record
            # reaches the disk at most flush_secs after its update.
            return _event_writer.open_shared(directory, self.flush_secs / 2)
        except OSError as error:
            self._fail(f"cannot write to {directory!r}: {error}")
            return None

    def _guard(self, write):
        """Runs `write()`; True unless it failed, which closes the writer with a warning."""
        try:
            write()
        except OSError as error:
            self._fail(f"writing to {self.log_dir!r} failed: {error}")
            self._close_writer()
            return False
        return True

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
                _event_writer.release_shared(writer)
            except OSError as error:
                self._fail(f"closing the event file failed: {error}")


_LIVE_LOGGERS = weakref.WeakSet()


@atexit.register
def _write_pending_records():
    # A run that ended on an uncaught exception still has records on the device.
    for logger in list(_LIVE_LOGGERS):
        try:
            with logger._lock:
                if logger._writer is not None:
                    logger._read_and_write()
                    logger._close_writer()
        except Exception:  # noqa: BLE001, S110 (best effort while the interpreter exits)
            pass


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be an int >= 1, got {value!r}")
    return int(value)
