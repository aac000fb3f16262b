"""`python -m benchmarks.fashion_cnn`: the network, a --quick run's outputs, the range tests."""

import json

import keras
import numpy as np
import pytest

from _benchmark_outputs import PNG_MAGIC, check_quick_outputs
from benchmarks import cnn_configs, fashion_cnn

# The network's trainable weights, counted by hand from its description: 3×3 stem of 32
# filters, a block 32 → 32 and a block 32 → 64 (two 3×3 convolutions each, a 1×1 projection
# shortcut), batch normalisation (γ, β) after every convolution, a 64 → 10 dense layer.
STEM = 3 * 3 * 1 * 32 + 2 * 32
BLOCK_32 = 3 * 3 * 32 * 32 * 2 + 32 * 32 + 3 * 2 * 32
BLOCK_64 = 3 * 3 * 32 * 64 + 3 * 3 * 64 * 64 + 32 * 64 + 3 * 2 * 64
TRAINABLE = STEM + BLOCK_32 + BLOCK_64 + 64 * 10 + 10


def test_network_size_and_augmentation_only_in_training():
    keras.utils.set_random_seed(0)
    model = fashion_cnn.build_model()
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == TRAINABLE
    images = np.random.default_rng(0).random((4, 784), dtype=np.float32)

    def outputs(training):
        return keras.ops.convert_to_numpy(model(images, training=training))

    np.testing.assert_array_equal(outputs(training=False), outputs(training=False))
    # At inference the augmentation is the identity: the first convolution sees the image.
    flip = next(layer for layer in model.layers if isinstance(layer, keras.layers.RandomFlip))
    front = keras.Model(model.input, flip.output)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(front(images, training=False)),
                                  images.reshape(4, 28, 28, 1))
    # Random crops and flips make two training passes differ; batch statistics alone would not.
    assert not np.allclose(outputs(training=True), outputs(training=True))


def test_quick_run_writes_the_mlp_benchmarks_outputs(tmp_path, capsys):
    fashion_cnn.main(["--quick", "--dataset", "embedded", "--out", str(tmp_path)])
    results = check_quick_outputs(tmp_path, cnn_configs.QUICK_CONFIGS, "embedded", (1024, 512))
    assert results["benchmark"] == "fashion_cnn"
    assert results["settings"]["precisions"] == ["float32"]
    # One float32 velocity per trainable weight for momentum SGD, two moments for Adam.
    slots = {run["config"]: run["optimizer_slot_bytes"] for run in results["runs"]}
    assert slots == {"keras_sgd_momentum": 4 * TRAINABLE, "nesterov_swa": 4 * TRAINABLE,
                     "adam": 8 * TRAINABLE}
    assert "ETA" in capsys.readouterr().out


def test_every_recipe_builds_for_a_short_run():
    for name, make in cnn_configs.CONFIGS.items():
        optimizer = make(10, 3)
        assert isinstance(optimizer, keras.optimizers.Optimizer), name
    # SWA averages the last two of five epochs at a tenth of the peak rate.
    (swa,) = cnn_configs.nesterov_swa.callbacks(10, 5, np.zeros((1200, 784), np.float32))
    assert swa.start_epoch == 3
    assert swa.swa_learning_rate == pytest.approx(cnn_configs.SGD_RATE / 10)
    assert [len(batch) for batch in swa.batch_norm_data] == [500, 500, 200]


def test_missing_data_stops_with_how_to_get_it(tmp_path, capsys):
    with pytest.raises(SystemExit):
        fashion_cnn.parse_args(["--data-dir", str(tmp_path)])
    assert "dataset-fashion-mnist" in capsys.readouterr().err


@pytest.mark.tensorflow
def test_range_test_mode_writes_suggestions_and_plot(tmp_path):
    fashion_cnn.main(["--range-test", "--quick", "--dataset", "embedded", "--out", str(tmp_path)])
    found = json.loads((tmp_path / "range_test.json").read_text())
    assert list(found) == list(fashion_cnn.RANGE_TEST_FAMILIES)
    for family in found.values():
        rates = family["learning_rates"]
        assert rates[0] == pytest.approx(1e-5) and np.all(np.diff(rates) > 0)
        assert rates[0] <= family["suggestions"]["steepest"] <= rates[-1]
    assert (tmp_path / "range_test.png").read_bytes()[:8] == PNG_MAGIC
    assert not (tmp_path / "results.json").exists()
