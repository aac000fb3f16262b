"""A TensorBoard event-file writer that needs the `tensorboard` package only.

TensorFlow's summary writers cannot be used on the JAX or PyTorch backends when TensorFlow
is not installed, and `tensorboard.summary.Writer` writes scalars only. This module writes
the same records TensorFlow does (TFRecord framing with masked CRC32C, `Event` protos) with
`tensorboard`'s own protos and record writer, on every backend, so the logs of a run look
the same whichever backend produced them.

Scalars, written once per logged step, take a fast path: the `Event` bytes are put together
from pieces serialised once per tag (protobuf fields may come in any order) and framed with
the C CRC32C of `google-crc32c`, about 10 µs per step instead of about 150 µs for protobuf
messages and `tensorboard`'s pure-Python CRC. Writes go to a buffered file in the caller's
thread (no system call until the buffer fills); a daemon thread flushes it every
`flush_secs`, so a killed process loses at most the last `flush_secs` of what was written. Writers still open at
interpreter exit are closed by an `atexit` hook, and a writer that is garbage-collected
closes itself.
"""

import atexit
import itertools
import math
import os
import socket
import struct
import threading
import time
import weakref

import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.plugins.histogram import metadata as histogram_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.util import tensor_util

try:
    from google_crc32c import value as _crc32c
except ImportError:  # pragma: no cover (a dependency; the pure-Python CRC is slow but right)
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import crc32c as _crc32c

_OPEN_WRITERS = weakref.WeakSet()
_FILE_NUMBERS = itertools.count()
_STARTED_DIRECTORIES = set()  # run directories this process has written a START to


class EventWriter:
    """Appends summaries to a new event file in `directory`.

    Args:
        directory: the run directory; created when missing. Paths with a scheme
            (`gs://...`) go through `tensorboard.compat.tf.io.gfile`, which is TensorFlow's
            file system when TensorFlow is installed.
        flush_secs: seconds between background flushes, > 0.

    Raises:
        OSError: when the directory or the file cannot be created, and from any later call
            once a write or flush has failed.
    """

    def __init__(self, directory, flush_secs):
        directory = os.fspath(directory)
        name = "events.out.tfevents.%010d.%s.%d.%d.keras_momentum" % (
            time.time(), socket.gethostname(), os.getpid(), next(_FILE_NUMBERS)
        )
        self.directory = directory
        self.path = os.path.join(directory, name)
        if "://" in directory:
            from tensorboard.compat import tf  # noqa: PLC0415 (imports TensorFlow if present)

            tf.io.gfile.makedirs(directory)
            stream = tf.io.gfile.GFile(self.path, "wb")
        else:
            os.makedirs(directory, exist_ok=True)
            stream = open(self.path, "wb")  # noqa: SIM115 (closed by `close`)
        self._stream = stream
        self._lock = threading.Lock()
        self._closed = False
        self._dirty = False
        self._error = None
        self._described_tags = set()
        self._scalar_prefixes = {}  # tag -> bytes of its `Summary.Value` up to the float
        self._stop = threading.Event()
        self.flush_secs = float(flush_secs)  # read by the flushing thread before each wait
        self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
        self.flush()
        threading.Thread(
            target=_flush_periodically,
            args=(weakref.ref(self), self._stop),
            name="keras_momentum-event-writer",
            daemon=True,
        ).start()
        _OPEN_WRITERS.add(self)

    # ---------------------------------------------------------------- writing
    def scalar(self, tag, value, step):
        """Writes a float32 scalar for the Scalars dashboard."""
        self.scalars({tag: value}, step)

    def scalars(self, values, step, wall_time=None):
        """Writes `{tag: value}` float32 scalars of one step as a single event.

        `wall_time` (seconds since the epoch) defaults to now.
        """
        if not values:
            return
        pieces = []
        for tag, value in values.items():
            prefix = self._scalar_prefixes.get(tag)
            if prefix is None:
                prefix = self._scalar_prefixes[tag] = _scalar_value_prefix(tag)
                # TensorBoard takes a series' metadata from its first record in the run.
                if tag not in self._described_tags:
                    self._described_tags.add(tag)
                    pieces.append(_scalar_value_prefix(tag, metadata=True))
                    pieces.append(_pack_float(value))
                    continue
            pieces.append(prefix)
            pieces.append(_pack_float(value))
        summary = b"".join(pieces)
        event = b"".join((
            _WALL_TIME_KEY, _pack_double(time.time() if wall_time is None else wall_time),
            _STEP_KEY, _varint(int(step) & 0xFFFFFFFFFFFFFFFF),
            _SUMMARY_KEY, _varint(len(summary)), summary,
        ))
        self._write_bytes(event)

    def scalar_series(self, columns, steps, wall_times=None):
        """Writes one event per step: `columns` maps tags to float arrays aligned with `steps`.

        The events are those `scalars` writes step by step (`wall_times`, an array aligned
        with `steps`, defaults to now), put together for all steps at once: the values of
        all steps are laid out between the tags' fixed bytes in one array operation, which
        leaves a few `bytes` joins and two CRCs per step.
        """
        steps = np.asarray(steps, dtype=np.int64).reshape(-1)
        if not columns or not steps.size:
            return
        tags = list(columns)
        if wall_times is None:
            wall_times = np.full(steps.size, time.time())
        wall_times = np.asarray(wall_times, dtype="<f8").reshape(-1)
        if any(tag not in self._described_tags for tag in tags):
            # The first event of a tag carries its metadata; the step-by-step path writes it.
            self.scalars({tag: columns[tag][0] for tag in tags}, steps[0], wall_times[0])
            columns = {tag: column[1:] for tag, column in columns.items()}
            steps, wall_times = steps[1:], wall_times[1:]
            if not steps.size:
                return
        count = steps.size
        prefixes = [self._scalar_prefixes[tag] for tag in tags]
        with np.errstate(over="ignore"):  # beyond float32's range: ±inf, as `scalars` writes
            values = np.stack(
                [np.asarray(columns[tag], dtype=np.float64).astype("<f4") for tag in tags], axis=1
            )
        value_bytes = values.view(np.uint8).reshape(count, len(tags), 4)
        summaries = np.empty((count, sum(len(p) + 4 for p in prefixes)), dtype=np.uint8)
        offset = 0
        for j, prefix in enumerate(prefixes):
            summaries[:, offset:offset + len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
            offset += len(prefix)
            summaries[:, offset:offset + 4] = value_bytes[:, j]
            offset += 4
        summary_key = _SUMMARY_KEY + _varint(offset)
        walls = wall_times.tobytes()
        records = []
        for i in range(count):
            event = b"".join((
                _WALL_TIME_KEY, walls[8 * i:8 * i + 8],
                _STEP_KEY, _varint(int(steps[i]) & 0xFFFFFFFFFFFFFFFF),
                summary_key, summaries[i].tobytes(),
            ))
            header = _LENGTH.pack(len(event))
            records.append(b"".join(
                (header, _CRC.pack(_masked_crc(header)), event, _CRC.pack(_masked_crc(event)))
            ))
        with self._lock:
            self._check()
            self._stream.write(b"".join(records))
            self._dirty = True

    def start_session(self, step):
        """Marks a (re)start at `step`, once per process and run directory.

        TensorBoard then drops records at `step` and later that an earlier, crashed
        process left in this run: the updates being replayed after a restore. A second
        START from the same process would also drop this process's own new records.
        """
        if self.directory in _STARTED_DIRECTORIES:
            return
        _STARTED_DIRECTORIES.add(self.directory)
        event = event_pb2.Event(wall_time=time.time(), step=int(step))
        event.session_log.status = event_pb2.SessionLog.START
        self._write(event)

    def histogram(self, tag, buckets, step):
        """Writes a histogram: `buckets` is a `[k, 3]` array of (left edge, right edge, count).

        That tensor is what `tf.summary.histogram` stores and what TensorBoard's Histograms
        and Distributions dashboards read.
        """
        buckets = np.asarray(buckets, dtype=np.float64)
        if buckets.ndim != 2 or buckets.shape[1] != 3:
            raise ValueError(f"`buckets` must have shape [k, 3], got {buckets.shape}")
        self._value(
            tag, tensor_util.make_tensor_proto(buckets, dtype=np.float64), step,
            histogram_metadata.create_summary_metadata(display_name=None, description=None),
            summary_pb2.DATA_CLASS_TENSOR,
        )

    def summary(self, summary, step):
        """Writes a prepared `summary_pb2.Summary` (e.g. an HParams session record)."""
        event = event_pb2.Event(wall_time=time.time(), step=int(step))
        event.summary.CopyFrom(summary)
        self._write(event)

    def _value(self, tag, tensor, step, metadata, data_class):
        event = event_pb2.Event(wall_time=time.time(), step=int(step))
        value = event.summary.value.add(tag=tag, tensor=tensor)
        # TensorBoard takes a series' metadata from its first record in the run.
        if tag not in self._described_tags:
            metadata.data_class = data_class
            value.metadata.CopyFrom(metadata)
            self._described_tags.add(tag)
        self._write(event)

    def _write(self, event):
        self._write_bytes(event.SerializeToString())

    def _write_bytes(self, data):
        header = _LENGTH.pack(len(data))
        record = b"".join((header, _CRC.pack(_masked_crc(header)), data, _CRC.pack(_masked_crc(data))))
        with self._lock:
            self._check()
            self._stream.write(record)
            self._dirty = True

    # ------------------------------------------------------------ lifecycle
    def flush(self):
        """Hands everything written so far to the operating system."""
        with self._lock:
            self._check()
            self._flush_locked()

    def close(self):
        """Flushes and closes the file; later calls do nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop.set()
            self._stream.close()

    @property
    def closed(self):
        return self._closed

    def _flush_if_dirty(self):
        with self._lock:
            if self._dirty and not self._closed and self._error is None:
                try:
                    self._flush_locked()
                except OSError as error:
                    self._error = error

    def _flush_locked(self):
        if "://" not in self.path and not os.path.exists(self.path):
            raise OSError(f"the event file {self.path!r} was removed")
        self._stream.flush()
        self._dirty = False

    def _check(self):
        if self._error is not None:
            raise self._error
        if self._closed:
            raise OSError(f"the event file {self.path!r} is closed")

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 (nothing can be reported during collection)
            pass


# Protobuf wire format: a field's key is (number << 3) | wire type (0 varint, 1 64-bit,
# 2 length-delimited, 5 32-bit). Event: wall_time = 1 (double), step = 2 (int64),
# summary = 5; Summary: value = 1; Summary.Value: tag = 1, tensor = 8, metadata = 9.
_WALL_TIME_KEY, _STEP_KEY, _SUMMARY_KEY = b"\x09", b"\x10", b"\x2a"
_VALUE_KEY, _TENSOR_KEY = b"\x0a", b"\x42"
_LENGTH, _CRC = struct.Struct("<Q"), struct.Struct("<I")
_pack_double = struct.Struct("<d").pack
_pack_float_struct = struct.Struct("<f").pack
# A rank-0 DT_FLOAT TensorProto ends with its one `float_val` (packed, 4 bytes): everything
# before those 4 bytes is the same for every scalar.
_SCALAR_TENSOR = tensor_pb2.TensorProto(
    dtype=types_pb2.DT_FLOAT,
    tensor_shape=tensor_shape_pb2.TensorShapeProto(),
    float_val=[0.0],
).SerializeToString()
_SCALAR_TENSOR_PREFIX = _SCALAR_TENSOR[:-4]


def _varint(number):
    out = bytearray()
    while number > 0x7F:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def _pack_float(value):
    value = float(value)
    try:
        return _pack_float_struct(value)
    except OverflowError:  # finite float64 beyond float32's range, as numpy rounds it
        return _pack_float_struct(math.copysign(math.inf, value))


def _scalar_value_prefix(tag, metadata=False):
    """`Summary.Value` bytes of a scalar `tag`, framed in `Summary`, less the final float.

    The value's length is fixed (the float takes 4 bytes), so the frame is known before
    the value.
    """
    fields = summary_pb2.Summary.Value(tag=tag).SerializeToString()
    if metadata:
        description = scalar_metadata.create_summary_metadata(display_name=None, description=None)
        description.data_class = summary_pb2.DATA_CLASS_SCALAR
        fields += summary_pb2.Summary.Value(metadata=description).SerializeToString()
    fields += _TENSOR_KEY + _varint(len(_SCALAR_TENSOR)) + _SCALAR_TENSOR_PREFIX
    return _VALUE_KEY + _varint(len(fields) + 4) + fields


def _masked_crc(data):
    # TFRecord's masked CRC32C: rotated right by 15 bits plus a constant.
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _flush_periodically(writer_ref, stop):
    # Holds the writer only weakly between flushes so that an abandoned writer is collected.
    while True:
        writer = writer_ref()
        if writer is None:
            return
        interval = writer.flush_secs
        del writer
        if stop.wait(interval):
            return
        writer = writer_ref()
        if writer is None:
            return
        writer._flush_if_dirty()
        del writer


_SHARED = {}  # run directory -> [its writer, number of holders]
_SHARED_LOCK = threading.Lock()


def open_shared(directory, flush_secs):
    """The event writer this process's callbacks share for the run `directory`.

    By default TensorBoard reads the event files of a run one after the other and, once
    a newer file exists, stops polling the older ones: two callbacks writing two files
    of one run at the same time would see one's charts freeze in a live TensorBoard
    (until it restarts). So the loggers of a run append to one file, opened by the first
    `open_shared` and closed by the `release_shared` of the last holder. The shortest
    `flush_secs` asked for applies.

    Raises:
        OSError: as `EventWriter` does.
    """
    key = _directory_key(directory)
    with _SHARED_LOCK:
        entry = _SHARED.get(key)
        if entry is None or entry[0].closed:
            entry = _SHARED[key] = [EventWriter(directory, flush_secs), 0]
        writer = entry[0]
        entry[1] += 1
        writer.flush_secs = min(writer.flush_secs, float(flush_secs))
        return writer


def release_shared(writer):
    """Gives back a writer of `open_shared`; the last holder's release closes it.

    Raises:
        OSError: when closing the file fails.
    """
    key = _directory_key(writer.directory)
    with _SHARED_LOCK:
        entry = _SHARED.get(key)
        if entry is not None and entry[0] is writer:
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _SHARED[key]
    writer.close()


def _directory_key(directory):
    directory = os.fspath(directory)
    return directory if "://" in directory else os.path.abspath(directory)


@atexit.register
def _close_open_writers():
    for writer in list(_OPEN_WRITERS):
        try:
            writer.close()
        except Exception:  # noqa: BLE001, S110 (best effort while the interpreter exits)
            pass
