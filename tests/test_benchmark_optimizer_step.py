"""`python -m benchmarks.optimizer_step --quick` runs and writes well-formed results."""

import json

import pytest

from benchmarks import optimizer_step


@pytest.mark.tensorflow
def test_quick_run_writes_results(tmp_path):
    result = optimizer_step.main(["--quick", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["parameters"] == result["parameters"] > 500_000
    for name in ("keras_momentum SGD fused (graph)", "keras.optimizers.SGD (graph)",
                 "keras.optimizers.SGD (XLA)", "keras_momentum SGD generic (graph)"):
        assert saved["median_ms"][name] > 0
    assert saved["copy_bandwidth_bytes_per_s"] > 0
    assert 0 < saved["ratios"]["ours / keras SGD graph"] < 100
