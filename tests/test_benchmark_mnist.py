"""`python -m benchmarks.mnist_mlp`: data loading and a --quick run's outputs."""

import gzip
import json
import struct

import numpy as np
import pytest

from benchmarks import data, mnist_mlp, overhead, step_overhead
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


def test_unknown_overhead_optimizer_is_an_error(capsys):
    with pytest.raises(SystemExit):
        mnist_mlp.parse_args(["--overhead-optimizer", "nope"])
    assert "`--overhead-optimizer` must be among" in capsys.readouterr().err


def test_overhead_copies_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        mnist_mlp.parse_args(["--overhead-copies", "0"])
    assert "`--overhead-copies` must be at least 1, got 0" in capsys.readouterr().err


def test_median_interval_matches_the_spread_of_a_normal_median():
    rng = np.random.default_rng(3)
    few, many = rng.normal(0.95, 0.05, 20), rng.normal(0.95, 0.05, 2000)
    for values in (few, many):
        low, high = overhead.clustered_median_interval([values], seed=0)
        assert low < np.median(values) < high
    # The median of n normal draws has standard deviation 1.2533 σ / √n (asymptotically):
    # a 90 % interval spans 2 · 1.645 of them.
    expected = 2 * 1.645 * 1.2533 * 0.05 / np.sqrt(len(many))
    assert np.ptp(overhead.clustered_median_interval([many], 0)) == pytest.approx(expected, rel=0.25)


def test_median_interval_draws_models_whose_pairs_agree_among_themselves():
    # Three models whose pairs sit tightly around 0.90, 0.95 and 1.00: the pooled median
    # is 0.95 whatever pairs are drawn, but which model is drawn decides it.
    rng = np.random.default_rng(4)
    groups = [rng.normal(mean, 0.001, 20) for mean in (0.90, 0.95, 1.00)]
    low, high = overhead.clustered_median_interval(groups, seed=0)
    assert low < 0.91 and high > 0.99


def _subject(tmp_path, name):
    """A momentum MLP in the overhead benchmark's `name` variant, and 4 batches of 16."""
    from benchmarks.configs import CONFIGS  # noqa: PLC0415
    from benchmarks.training import build_model, compile_model  # noqa: PLC0415
    from keras_momentum.optimizers import instrument  # noqa: PLC0415

    rng = np.random.default_rng(0)
    x, y = rng.random((64, 784), dtype=np.float32), rng.integers(0, 10, 64)
    model = build_model()
    compile_model(model, instrument(CONFIGS["momentum"](4, 3)))
    return model, overhead._Subject("alone", name, 0, model, str(tmp_path), 1), x, y


def test_gradient_norm_models_write_gradient_norms_without_ratio_or_velocity(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import (  # noqa: PLC0415
        EventAccumulator,
    )

    _, subject, x, y = _subject(tmp_path, overhead.GRADIENTS)
    subject.fit(x, y, 16, attached=True)
    accumulator = EventAccumulator(str(tmp_path / "train"), size_guidance={"tensors": 0})
    accumulator.Reload()
    tags = set(accumulator.Tags()["tensors"])
    assert {"learning_rate", "gradient_norm/global"} <= tags
    assert [event.step for event in accumulator.Tensors("gradient_norm/global")] == [1, 2, 3, 4]
    assert not tags & {"update_ratio/global", "velocity_norm/global"}


def test_in_graph_models_record_only_in_their_recording_fits(tmp_path):
    model, subject, x, y = _subject(tmp_path, overhead.IN_GRAPH)

    def recorded():
        return list(model.optimizer.read_records(complete=False)["steps"])

    # Updates 5 to 8 record. Where the velocity norms of an update are taken by the next
    # one (not under JAX), the latest record waits for it and is left out.
    expected = [5, 6, 7, 8] if model.optimizer._sums_follow_update() else [5, 6, 7]
    assert subject.fit(x, y, 16, attached=False) > 0
    assert recorded() == []
    subject.fit(x, y, 16, attached=True)
    assert recorded() == expected
    subject.fit(x, y, 16, attached=False)
    assert recorded() == expected
    assert int(model.optimizer.iterations) == 12


def test_a_a_models_alternate_two_functions_that_never_record(tmp_path):
    model, subject, x, y = _subject(tmp_path, overhead.A_A)
    subject.fit(x, y, 16, attached=True)
    first = model.train_function
    subject.fit(x, y, 16, attached=False)
    assert model.train_function is not first  # two functions, each run in its own fits
    subject.fit(x, y, 16, attached=True)
    assert model.train_function is first
    assert int(model.optimizer.iterations) == 12
    assert list(model.optimizer.read_records(complete=True)["steps"]) == []
    assert not model.optimizer.enabled_statistics


def test_hooks_models_record_in_every_fit_with_or_without_loggers(tmp_path):
    from keras_momentum.callbacks import _recording_switch  # noqa: PLC0415

    model, subject, x, y = _subject(tmp_path, overhead.HOOKS)
    subject.fit(x, y, 16, attached=True)
    switch = model.train_function
    assert isinstance(switch, _recording_switch.RecordingSwitch)
    subject.fit(x, y, 16, attached=False)
    assert model.train_function is switch.recording  # the same trace, no switch
    subject.fit(x, y, 16, attached=True)
    # Every update recorded, in the fits with the loggers and in the one without.
    assert list(model.optimizer.read_records(complete=True)["steps"]) == list(range(1, 13))
    assert len(list((tmp_path / "train").glob("events.out.*"))) == 2  # one per loggers' fit


def test_step_overhead_alternates_three_functions_of_which_one_records():
    dataset = data.load_dataset("embedded").head(256, 64)
    result = step_overhead.measure_step_overhead(
        "momentum", "float32", dataset, batch_size=32, executions=5, seed=0)
    # The ring holds exactly the updates the recording function made: neither
    # statistics-free function recorded, nor shared its trace with the recording one.
    assert result["records_match"] is True
    assert set(result["median_ms"]) == {"plain_a", "plain_b", "recording"}
    assert all(ms > 0 for ms in result["median_ms"].values())
    for name in ("recording", "a_a"):
        low, high = result[f"{name}_interval"]
        assert low <= result[f"{name}_ratio"] <= high
    assert "of the statistics-free speed" in step_overhead.format_step_overhead(result)


def test_speed_ratio_interval_of_constant_times_is_the_ratio():
    rng = np.random.default_rng(0)
    assert step_overhead._ratio_interval([2.0] * 9, [1.0] * 7, rng) == [2.0, 2.0]
    slow, fast = rng.normal(1.0, 0.01, 400), rng.normal(0.5, 0.005, 400)
    low, high = step_overhead._ratio_interval(slow, fast, rng)
    assert low < 2.0 < high and high - low < 0.01


def test_embedded_split_is_fixed_and_stratified():
    first, second = data.load_dataset("embedded"), data.load_dataset("embedded")
    np.testing.assert_array_equal(first.y_train, second.y_train)
    assert len(first.x_train) == 4000 and len(first.x_test) == 1000
    assert np.bincount(first.y_test.astype(int)).tolist() == [100] * 10


RUN_KEYS = {
    "config", "optimizer", "precision", "seed", "dataset", "train_size", "test_size", "device",
    "backend", "final_test_accuracy", "best_test_accuracy", "epochs_to_target",
    "steps_to_target", "seconds_to_target", "samples_per_second", "peak_rss_bytes",
    "peak_gpu_bytes", "optimizer_slot_bytes", "history",
}
HISTORY_KEYS = {"epoch", "loss", "accuracy", "test_loss", "test_accuracy", "epoch_time_s"}


def test_quick_run_writes_results_plots_and_logs(tmp_path):
    mnist_mlp.main(["--quick", "--out", str(tmp_path), "--overhead-rounds", "1",
                    "--overhead-breakdown"])
    results = json.loads((tmp_path / "results.json").read_text())
    runs = results["runs"]
    assert {run["config"] for run in runs} == {"sgd", "momentum"}
    for run in runs:
        assert RUN_KEYS <= run.keys(), RUN_KEYS - run.keys()
        assert (run["dataset"], run["train_size"], run["test_size"]) == ("embedded", 1024, 512)
        assert 0.0 <= run["final_test_accuracy"] <= run["best_test_accuracy"] <= 1.0
        assert run["samples_per_second"] > 0 and run["peak_rss_bytes"] > 0
        assert len(run["history"]) == 1 and HISTORY_KEYS == run["history"][0].keys()
        assert run["history"][0]["epoch_time_s"] > 0
        assert list((tmp_path / "tb").glob(f"{run['config']}*/train/events.out.tfevents.*"))
    # Momentum keeps one float32 velocity per weight of the 784-512-256-10 MLP; SGD none.
    slots = {run["config"]: run["optimizer_slot_bytes"] for run in runs}
    weights = 784 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10
    assert slots["momentum"] - slots["sgd"] == 4 * weights
    overhead = results["overhead"]
    assert overhead["config"] == "momentum"
    variants = {"update_freq_1", "update_freq_100", "in_graph_1", "hooks_1", "a_a",
                "gradient_norms_1"}
    for setting in ("alone", "beside_sync"):
        ratios = overhead["ratio_with_to_without"][setting]
        assert set(ratios) == variants
        speeds = overhead["steps_per_second"][setting]
        assert all(s["with"] > 0 and s["without"] > 0 for s in speeds.values())
        assert ratios["update_freq_1"] == (
            speeds["update_freq_1"]["with"] / speeds["update_freq_1"]["without"])
        # One model per variant, one round: each paired ratio is that model's speed with
        # the diagnostics over its own speed without, in the same round.
        each = overhead["steps_per_second_all"]
        assert overhead["paired_ratio"][setting] == {
            name: pytest.approx(each[f"{setting}-{name}-0"]["with"][0]
                                / each[f"{setting}-{name}-0"]["without"][0])
            for name in variants
        }
        for name in variants:  # one pair: its interval and quartiles are that pair's ratio
            assert overhead["paired_ratio_interval"][setting][name] == pytest.approx(
                [overhead["paired_ratio"][setting][name]] * 2)
        assert {name: len(r) for name, r in overhead["copy_ratios"][setting].items()} == (
            dict.fromkeys(variants, 1))
        # The overhead run wrote the diagnostics of its update_freq=1 model; the in-graph
        # model has no logger, but its optimizer recorded statistics.
        run = tmp_path / "overhead" / f"{setting}-update_freq_1-0" / "train"
        assert list(run.glob("events.out.*"))
        for name in ("in_graph_1", "a_a"):
            assert not (tmp_path / "overhead" / f"{setting}-{name}-0").exists()
    assert overhead["in_graph_records"] > 0
    for name in ("curves.png", "time_to_accuracy.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
