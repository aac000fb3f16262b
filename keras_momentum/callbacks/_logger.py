"""The base of the TensorBoard loggers: attach, pick the train function, read, write.

`set_model` attaches a `diagnostics.Recorder` to the optimizer that makes the updates (the
innermost one under `LossScaleOptimizer`, `Lookahead` and other wrappers with an
`inner_optimizer`) and asks it for the logger's statistics. The model's train function is
then a `TrainFunctionSwitch`: executions in which some update records run the recording
function Keras traces, the others a twin traced without statistics, so `update_freq=100`
costs about nothing. The host counts the updates from the batch indices; once half the
device buffer is new, once `flush_secs / 2` have passed, and at each epoch's end, the logger
reads the buffer (`Recorder.read`) and writes one event per update, at the update number,
into `<log_dir>/train` with tensorboard's `EventFileWriter`.

Only the chief writes (worker 0 under `MultiWorkerMirroredStrategy`). At its first update
each `fit` writes a `SessionLog.START`, so that after a restart TensorBoard drops what a
crashed process logged of the updates being replayed. Records of a `fit` that ended on an
exception are written by the next `fit` of the logger, or at interpreter exit.
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
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.plugins.histogram import metadata as histogram_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.util import tensor_util

from keras_momentum.callbacks._chief import is_chief
from keras_momentum.callbacks._train_function_switch import TrainFunctionSwitch
from keras_momentum.optimizers import diagnostics
from keras_momentum.optimizers.instrumentation import InstrumentationMixin

RUN = "train"  # keras.callbacks.TensorBoard's run directory for training summaries


def instrumented_optimizer(optimizer, caller):
    """The innermost optimizer inside `optimizer`'s wrappers; it must be instrumented."""
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
    """Base of `LearningRateLogger` and `GradientNormLogger`.

    Subclasses give `_kinds()` (among `diagnostics.KINDS`), `_tags(columns)` (the columns of
    `Recorder.read` they write) and, for histograms, `_histogram_every()`.
    """

    # Batch hooks only count and read now and then: Keras may run batch ends beside the next
    # step instead of waiting for each step's logs.
    async_safe = True

    def __init__(self, log_dir, update_freq=1, flush_secs=10.0):
        super().__init__()
        if not isinstance(log_dir, (str, os.PathLike)):
            raise TypeError(f"`log_dir` must be a str or os.PathLike, got {log_dir!r}")
        self.log_dir = os.fspath(log_dir)
        if isinstance(update_freq, bool) or not isinstance(update_freq, numbers.Integral) \
                or update_freq < 1:
            raise ValueError(f"`update_freq` must be an int >= 1, got {update_freq!r}")
        self.update_freq = int(update_freq)
        if isinstance(flush_secs, bool) or not isinstance(flush_secs, numbers.Real) \
                or not flush_secs > 0:
            raise ValueError(f"`flush_secs` must be a number > 0, got {flush_secs!r}")
        self.flush_secs = float(flush_secs)
        self._recorder = self._writer = self._switch = None
        self._lock = threading.RLock()
        _LIVE_LOGGERS.add(self)

    def _kinds(self):
        raise NotImplementedError

    def _tags(self, columns):
        raise NotImplementedError

    def _histogram_every(self):
        return 0

    # ------------------------------------------------------------- set-up
    def set_model(self, model):
        super().set_model(model)
        optimizer = instrumented_optimizer(getattr(model, "optimizer", None), type(self).__name__)
        if self._recorder is not None and self._recorder.optimizer is not optimizer:
            self._recorder.release(self)
        self._recorder = diagnostics.attach(optimizer)
        if self._recorder.request(self, self._kinds(), self.update_freq, self._histogram_every()):
            model.train_function = None  # every trainer traces it again in `fit`

    def on_train_begin(self, logs=None):
        with self._lock:
            if self._writer is not None:  # the previous `fit` ended on an exception
                self._write_new_records()
                self._close_writer()
            optimizer = self._recorder.optimizer
            self._accumulation = optimizer.gradient_accumulation_steps or 1
            self._raw_count = self._raw_at_epoch = self._raw_iterations()
            self._last_step = self._read_at = self._raw_count // self._accumulation
            self._read_time = time.time()
            self._times = []  # (updates done, wall time) of batches not yet written
            self._reads_at_batch_end = keras.backend.backend() == "tensorflow"
            function = self.model.train_function
            if isinstance(function, TrainFunctionSwitch):
                self._switch = function
            elif function is not None:
                self._switch = TrainFunctionSwitch(self.model, self._recorder, function)
                self.model.train_function = self._switch
            if is_chief(self.model):
                self._writer = _open_writer(self, os.path.join(self.log_dir, RUN))
                start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
                self._write(event_pb2.Event(wall_time=time.time(), step=self._last_step + 1,
                                            session_log=start))

    def on_epoch_begin(self, epoch, logs=None):
        self._raw_at_epoch = self._raw_count

    def on_train_batch_begin(self, batch, logs=None):
        position = self._raw_at_epoch + batch
        if self._switch is not None:
            self._switch.position = position
        if self._writer is None:
            return
        # In the training loop, before the next execution: the device keeps the latest
        # histograms only, and JAX's trainer hands its state to the next step.
        done = position // self._accumulation
        every = self._histogram_every()
        histogram_due = every and done // every > self._read_at // every
        if histogram_due or (not self._reads_at_batch_end and self._records_due(done)):
            with self._lock:
                self._write_new_records(done)

    def on_train_batch_end(self, batch, logs=None):
        # Keras may run this in a worker thread beside the next step (`async_safe`):
        # TensorFlow orders the read with the step's assignments; other backends read at
        # the next batch begin.
        with self._lock:
            # `batch` is the index of the execution's last batch.
            self._raw_count = max(self._raw_count, self._raw_at_epoch + batch + 1)
            done = self._raw_count // self._accumulation
            if self._writer is None or (self._times and self._times[-1][0] >= done):
                return
            self._times.append((done, time.time()))
            if self._reads_at_batch_end and self._records_due(done):
                self._write_new_records(done)

    def _records_due(self, done):
        """Whether half the buffer is new, or `flush_secs / 2` passed with records unread."""
        every = self._recorder.every
        pending = done // every - self._read_at // every
        return pending >= diagnostics.RECORD_SLOTS // 2 or (
            pending > 0 and time.time() - self._read_time >= self.flush_secs / 2)

    def on_epoch_end(self, epoch, logs=None):
        with self._lock:
            self._write_new_records()

    def on_train_end(self, logs=None):
        with self._lock:
            self._write_new_records()
            self._close_writer()
            # The switch stays: executions no logger announces run its plain function.
            self._switch = None
            self._recorder.fit_ended(self)

    # ------------------------------------------------------- read and write
    def _write_new_records(self, done=None):
        if self._writer is None:
            return
        steps, columns = self._recorder.read(self._state_values())
        self._read_at = self._raw_count // self._accumulation if done is None else done
        self._read_time = time.time()
        fresh = (steps > self._last_step) & (steps % self.update_freq == 0)
        tags = self._tags(columns)
        marks = np.array([mark for mark, _ in self._times], dtype=np.int64)
        ends = np.array([end for _, end in self._times] + [time.time()])
        for i in np.flatnonzero(fresh):
            step = int(steps[i])
            values = [self._scalar(tag, column[i]) for tag, column in tags.items()]
            wall_time = float(ends[np.searchsorted(marks, step, side="left")])
            self._write(event_pb2.Event(wall_time=wall_time, step=step,
                                        summary=summary_pb2.Summary(value=values)))
            self._last_step = step
        self._times = [(mark, end) for mark, end in self._times if mark > self._last_step]
        histograms = columns.get("histograms")
        if histograms is not None and self._histogram_every():
            self._write_histograms(*histograms)
        if self._writer is not None:
            self._guard(self._flush)

    def _flush(self):
        self._writer.flush()
        path = self._writer._file_name
        if "://" not in path and not os.path.exists(path):
            raise OSError(f"the event file {path!r} is gone")

    def _write_histograms(self, step, rows):
        if step <= getattr(self, "_last_histogram_step", 0) or step % self._histogram_every():
            return
        self._last_histogram_step = step
        values = []
        for path, (value_range, counts) in rows.items():
            tensor = tensor_util.make_tensor_proto(histogram_buckets(value_range, counts))
            metadata = histogram_metadata.create_summary_metadata(display_name=None,
                                                                  description=None)
            values.append(summary_pb2.Summary.Value(tag=f"gradient_histogram/{path}",
                                                    metadata=metadata, tensor=tensor))
        self._write(event_pb2.Event(wall_time=time.time(), step=step,
                                    summary=summary_pb2.Summary(value=values)))

    def _scalar(self, tag, value):
        # As `tf.summary.scalar` writes it: a float32 tensor, with the scalars plugin's
        # metadata on the first value of each tag in the file.
        described = self._writer.described_tags
        metadata = None if tag in described else _SCALAR_METADATA
        described.add(tag)
        tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=_SCALAR_SHAPE,
                                        float_val=[value])
        return summary_pb2.Summary.Value(tag=tag, metadata=metadata, tensor=tensor)

    def _write(self, event):
        if self._writer is not None:
            self._guard(lambda: self._writer.add_event(event))

    def _state_values(self):
        """Optimizer-variable values by path while Keras's JAX trainer holds them, else None."""
        state = getattr(self.model, "_jax_state", None)
        values = state.get("optimizer_variables") if state else None
        if values is None:
            return None
        return {v.path: value for v, value in zip(self.model.optimizer.variables, values)}

    def _raw_iterations(self):
        # `_iterations` counts calls of `apply` (micro-batches under accumulation).
        counter = self._recorder.optimizer._iterations
        values = self._state_values()
        value = values.get(counter.path) if values else None
        return int(keras.ops.convert_to_numpy(counter if value is None else value))

    # --------------------------------------------------------------- failures
    def _guard(self, write):
        try:
            write()
        except Exception as error:  # noqa: BLE001 (any failure of the file system)
            self._fail(f"writing to {self.log_dir!r} failed: {error}")
            self._close_writer()

    def _fail(self, message):
        warnings.warn(f"{type(self).__name__} logs nothing more in this run: {message}",
                      RuntimeWarning, stacklevel=3)

    def _close_writer(self):
        writer, self._writer = self._writer, None
        if writer is not None:
            _release_writer(writer)


_SCALAR_METADATA = scalar_metadata.create_summary_metadata(display_name=None, description=None)
_SCALAR_SHAPE = tensor_shape_pb2.TensorShapeProto()


def histogram_buckets(value_range, counts):
    """The `[k, 3]` (left edge, right edge, count) array of `k` equal buckets over a range."""
    low, high = (float(x) for x in np.asarray(value_range).reshape(2))
    counts = np.asarray(counts, dtype=np.float64).reshape(-1)
    edges = np.linspace(low, high, counts.size + 1)
    return np.stack([edges[:-1], edges[1:], counts], axis=1)


# One event file per run directory, shared by the loggers writing there: TensorBoard
# stops reading a file once a newer one appears in the same directory.
_WRITERS = {}  # directory -> [EventFileWriter, holders]
_LIVE_LOGGERS = weakref.WeakSet()


def _open_writer(logger, directory):
    key = os.path.abspath(directory) if "://" not in directory else directory
    entry = _WRITERS.get(key)
    if entry is None:
        try:
            writer = EventFileWriter(directory, flush_secs=logger.flush_secs / 2,
                                     filename_suffix=".keras_momentum")
            writer.described_tags = set()
            entry = _WRITERS[key] = [writer, 0]
        except Exception as error:  # noqa: BLE001 (any failure of the file system)
            logger._fail(f"cannot write to {directory!r}: {error}")
            return None
    entry[1] += 1
    return entry[0]


def _release_writer(writer):
    for key, entry in list(_WRITERS.items()):
        if entry[0] is writer:
            entry[1] -= 1
            if entry[1] <= 0:
                del _WRITERS[key]
                try:
                    writer.close()
                except Exception:  # noqa: BLE001, S110 (the loggers have warned already)
                    pass


@atexit.register
def _write_pending_records():
    # A run that ended on an uncaught exception still has records on the device.
    for logger in list(_LIVE_LOGGERS):
        try:
            with logger._lock:
                logger._write_new_records()
                logger._close_writer()
        except Exception:  # noqa: BLE001, S110 (best effort while the interpreter exits)
            pass
