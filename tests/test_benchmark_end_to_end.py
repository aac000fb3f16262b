"""`python -m benchmarks.end_to_end` runs and reports one speed per contender."""

import json

import pytest

from benchmarks import end_to_end


@pytest.mark.slow
def test_end_to_end_reports_every_contender(tmp_path):
    result = end_to_end.main(["--rounds", "1", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["samples_per_second"]) == set(end_to_end.CONTENDERS)
    assert all(value > 0 for value in saved["samples_per_second"].values())
    assert saved["ratio_to_keras_sgd"]["keras.optimizers.SGD"] == 1.0
    assert result["settings"]["rounds"] == 1
