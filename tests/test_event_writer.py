"""The event writer's hand-assembled scalar events, read back by independent readers.

The framing CRC is compared with tensorboard's pure-Python CRC32C; events are parsed by
tensorboard's `EventFileLoader` (which checks the framing) into its protobuf classes.
"""

import glob
import math
import struct

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
from tensorboard.util import tensor_util

from keras_momentum.callbacks._event_writer import EventWriter, _masked_crc, open_shared, release_shared


def events(directory):
    (path,) = glob.glob(str(directory / "events.out.tfevents.*"))
    return list(EventFileLoader(path).Load())


@pytest.mark.parametrize("size", [0, 1, 7, 8, 100, 4097])
def test_masked_crc_equals_tensorboards(size):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    assert _masked_crc(data) == masked_crc32c(data)


def test_scalars_round_trip_with_metadata_once_per_tag(tmp_path):
    writer = EventWriter(tmp_path, flush_secs=10)
    writer.scalars({"loss": 1.5, "gradient_norm/dense/kernel": -2.25}, step=1, wall_time=12.5)
    writer.scalars({"loss": float("nan"), "big": 1e39, "small": 1e-50}, step=2**40)
    writer.close()
    version, second, third = events(tmp_path)
    assert version.file_version == "brain.Event:2"
    assert (second.step, second.wall_time) == (1, 12.5)
    values = {v.tag: v for v in second.summary.value}
    assert tensor_util.make_ndarray(values["loss"].tensor) == np.float32(1.5)
    assert tensor_util.make_ndarray(values["gradient_norm/dense/kernel"].tensor) == -2.25
    assert values["loss"].tensor.dtype == 1 and values["loss"].tensor.tensor_shape.dim == []
    assert all(v.metadata.plugin_data.plugin_name == "scalars" for v in values.values())
    values = {v.tag: v for v in third.summary.value}
    assert third.step == 2**40
    assert math.isnan(tensor_util.make_ndarray(values["loss"].tensor))
    assert not values["loss"].HasField("metadata")  # described at its first record only
    assert values["big"].metadata.plugin_data.plugin_name == "scalars"
    assert tensor_util.make_ndarray(values["big"].tensor) == np.inf  # float32 overflow
    assert tensor_util.make_ndarray(values["small"].tensor) == 0.0


def test_a_corrupted_byte_is_detected(tmp_path):
    writer = EventWriter(tmp_path, flush_secs=10)
    writer.scalars({"loss": 1.5}, step=3)
    writer.close()
    (path,) = glob.glob(str(tmp_path / "events.out.tfevents.*"))
    data = bytearray(open(path, "rb").read())
    # The last record: its float is 8 bytes before the end (then the 4-byte data CRC).
    assert struct.unpack("<f", bytes(data[-8:-4]))[0] == 1.5
    data[-8] ^= 0xFF
    open(path, "wb").write(bytes(data))
    assert len(list(EventFileLoader(path).Load())) < 3


def test_scalar_series_writes_one_event_per_step(tmp_path):
    writer = EventWriter(tmp_path, flush_secs=10)
    steps = np.array([4, 8, 2**40])
    columns = {
        "learning_rate": np.array([0.1, 0.05, 0.025], np.float32),
        "gradient_norm/global": np.array([3.5, np.nan, 1e39]),  # float64: 1e39 overflows
    }
    writer.scalar_series(columns, steps, wall_times=np.array([10.0, 11.0, 12.5]))
    writer.scalar_series({"learning_rate": np.array([7.0])}, np.array([9]))  # wall time: now
    writer.close()
    _, *logged = events(tmp_path)
    assert [e.step for e in logged] == [4, 8, 2**40, 9]
    assert [e.wall_time for e in logged[:3]] == [10.0, 11.0, 12.5]
    assert logged[3].wall_time > 1e9
    for event, i in zip(logged[:3], range(3)):
        values = {v.tag: v for v in event.summary.value}
        assert set(values) == set(columns)
        for tag, column in columns.items():
            logged_value = tensor_util.make_ndarray(values[tag].tensor)
            expected = np.float32(np.inf) if column[i] > 3.4e38 else np.float32(column[i])
            np.testing.assert_array_equal(logged_value, expected)
            # Metadata (the Scalars dashboard's plugin name) on a tag's first event only.
            assert values[tag].HasField("metadata") == (i == 0)
            if i == 0:
                assert values[tag].metadata.plugin_data.plugin_name == "scalars"
    assert tensor_util.make_ndarray(logged[3].summary.value[0].tensor) == 7.0


def test_a_shared_writer_closes_when_its_last_holder_releases_it(tmp_path):
    first = open_shared(tmp_path, flush_secs=10)
    second = open_shared(tmp_path / "." , flush_secs=2)  # the same run directory
    assert second is first and first.flush_secs == 2
    first.scalars({"a": 1.0}, step=1)
    release_shared(first)
    second.scalars({"b": 2.0}, step=1)  # still open for the other holder
    release_shared(second)
    assert first.closed
    third = open_shared(tmp_path, flush_secs=10)  # a later run: a new file
    assert third is not first
    release_shared(third)
    paths = sorted(glob.glob(str(tmp_path / "events.out.tfevents.*")))
    assert len(paths) == 2
    tags = [v.tag for e in EventFileLoader(first.path).Load() for v in e.summary.value]
    assert tags == ["a", "b"]
