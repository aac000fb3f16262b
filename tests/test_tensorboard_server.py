"""The real `tensorboard` program serves what the diagnostics loggers wrote.

Logs come from `model.fit` with `keras.callbacks.TensorBoard` and both loggers sharing one
`log_dir`; TensorBoard runs on a loopback port and is polled over its HTTP API until it
serves our tags, whose values must equal those in the event files.
"""

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import keras
import numpy as np
import pytest
from _diagnostics import InverseTime, compiled_model, data, fit, read_events

from keras_momentum import optimizers
from keras_momentum.callbacks import GradientNormLogger, LearningRateLogger

pytestmark = pytest.mark.tensorflow
DEADLINE_SECS = 60


def get_json(base, path):
    with urllib.request.urlopen(base + path, timeout=10) as response:
        return json.loads(response.read().decode("utf-8"))


def wait_for(condition, what, deadline):
    """Calls `condition()` until it returns something truthy; fails at `deadline`."""
    while time.monotonic() < deadline:
        try:
            result = condition()
        except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
            result = None
        if result:
            return result
        time.sleep(0.5)
    pytest.fail(f"TensorBoard did not {what} within {DEADLINE_SECS} s")


def test_tensorboard_serves_the_logged_curves(tmp_path):
    log_dir = tmp_path / "logs"
    model = compiled_model(optimizers.SGD(InverseTime(), momentum=0.9))
    callbacks = [
        keras.callbacks.TensorBoard(log_dir, write_graph=False),
        LearningRateLogger(log_dir),
        GradientNormLogger(log_dir, histogram_freq=2),
    ]
    fit(model, *data(4), callbacks)
    written = read_events(log_dir)
    ours = ["learning_rate", "momentum", "gradient_norm/global", "update_ratio/global"]

    output = tmp_path / "tensorboard.out"
    with open(output, "w") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(log_dir),
             "--host", "127.0.0.1", "--port", "0", "--reload_interval", "1"],
            stdout=sink, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + DEADLINE_SECS

        def address():
            assert server.poll() is None, output.read_text()
            found = re.search(r"http://127\.0\.0\.1:(\d+)/", output.read_text())
            return found and f"http://127.0.0.1:{found.group(1)}"

        base = wait_for(address, "print its address", deadline)

        def scalar_tags():
            tags = get_json(base, "/data/plugin/scalars/tags").get("train", {})
            return all(tag in tags for tag in ours) and tags

        tags = wait_for(scalar_tags, "serve our scalar tags", deadline)
        assert "epoch_loss" in tags  # Keras's own curve sits in the same run
        for tag in ours:
            served = get_json(base, f"/data/plugin/scalars/scalars?run=train&tag={tag}")
            assert [step for _, step, _ in served] == [1, 2, 3, 4]
            expected = [float(written[tag][step]) for step in (1, 2, 3, 4)]
            assert [value for _, _, value in served] == pytest.approx(expected, rel=1e-6)

        kernel = model.trainable_variables[0].path
        tag = f"gradient_histogram/{kernel}"
        histograms = get_json(base, "/data/plugin/histograms/tags").get("train", {})
        assert tag in histograms
        served = get_json(base, f"/data/plugin/histograms/histograms?run=train&tag={tag}")
        assert [step for _, step, _ in served] == [2, 4]
        for _, step, buckets in served:
            np.testing.assert_allclose(buckets, written[tag][step], rtol=1e-6)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
