"""`python -m benchmarks.diagnostics_overhead`: what the diagnostics cost in training speed."""

import json
import os

import numpy as np
import pytest

from benchmarks import data, diagnostics_overhead, overhead, step_overhead


def test_unknown_optimizer_is_an_error(capsys):
    with pytest.raises(SystemExit):
        diagnostics_overhead.parse_args(["--optimizer", "nope"])
    assert "`--optimizer` must be among" in capsys.readouterr().err


def test_models_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        diagnostics_overhead.parse_args(["--models", "0"])
    assert "`--models` must be at least 1, got 0" in capsys.readouterr().err


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
        return list(model.optimizer.recorder.read()[0])

    expected = [5, 6, 7, 8]  # the updates of the recording fit
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
    assert model.optimizer.recorder is None


def test_hooks_models_record_in_every_fit_with_or_without_loggers(tmp_path):
    from keras_momentum.callbacks._train_function_switch import TrainFunctionSwitch  # noqa: PLC0415

    model, subject, x, y = _subject(tmp_path, overhead.HOOKS)
    subject.fit(x, y, 16, attached=True)
    switch = model.train_function
    assert isinstance(switch, TrainFunctionSwitch)
    subject.fit(x, y, 16, attached=False)
    assert model.train_function is switch.recording  # the same trace, no switch
    subject.fit(x, y, 16, attached=True)
    assert not model.optimizer.recorder.fitting  # the loggers' last fit has ended
    assert len(list((tmp_path / "train").glob("events.out.*"))) == 2  # one per loggers' fit


@pytest.mark.slow
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


@pytest.mark.slow
def test_quick_run_writes_under_its_own_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    diagnostics_overhead.main(["--quick", "--breakdown"])
    out = tmp_path / "runs" / "diagnostics_overhead"
    assert os.listdir(tmp_path / "runs") == ["diagnostics_overhead"]
    overhead = json.loads((out / "results.json").read_text())["overhead"]
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
        # The run wrote the diagnostics of its update_freq=1 model; the in-graph model has
        # no logger, but its optimizer recorded statistics.
        run = out / "logs" / f"{setting}-update_freq_1-0" / "train"
        assert list(run.glob("events.out.*"))
        for name in ("in_graph_1", "a_a"):
            assert not (out / "logs" / f"{setting}-{name}-0").exists()
    assert overhead["in_graph_records"] > 0
