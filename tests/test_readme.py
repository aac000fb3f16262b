"""README.md: its Python blocks run as written, its commands and links hold."""

import pathlib
import re

import keras
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def python_blocks(text):
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_python_blocks_run_in_order_and_train(tmp_path, monkeypatch):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(tmp_path)  # the blocks log under logs/
    blocks = python_blocks(README)
    assert len(blocks) >= 3
    namespace = {"__name__": "readme"}
    for index, block in enumerate(blocks):
        exec(compile(block, f"README.md python block {index + 1}", "exec"), namespace)  # noqa: S102
    # The quick start trained on its own held-out digits, to an accuracy a working setup
    # reaches in 3 epochs (a broken one stays near 0.1).
    model, x_test, y_test = namespace["model"], namespace["x_test"], namespace["y_test"]
    accuracy = np.mean(np.argmax(model.predict(x_test, verbose=0), axis=1) == y_test)
    assert accuracy > 0.85
    assert np.bincount(namespace["y_train"]).min() > 300  # shuffled: every digit trains
    assert int(model.optimizer.iterations) == 3 * namespace["steps_per_epoch"] == 96
    assert list((tmp_path / "logs" / "quickstart" / "train").glob("events.out.*"))
    # The warmup ends before the reducer could cut: patience (epochs) >= warmup (updates).
    reducer = next(c for c in namespace["resumable"] if isinstance(
        c, namespace["callbacks"].ReduceLROnPlateau))
    assert reducer.patience * namespace["steps_per_epoch"] >= (
        namespace["learning_rate"].warmup_steps)
    assert [type(c).__name__ for c in namespace["resumable"]] == [
        "ReduceLROnPlateau", "BackupAndRestore", "LearningRateLogger"]
    assert isinstance(namespace["figure"], matplotlib.figure.Figure)
    assert namespace["figure"].axes[0].get_ylabel() == "learning rate"
    plt.close("all")
    keras.backend.clear_session()


def test_ci_runs_the_readme_test_command():
    lines = [line for line in README.splitlines()
             if line.startswith("python3 -m venv") and "pytest" in line]
    assert len(lines) == 1
    command = lines[0].split('pip install -e ".[dev]" && ', 1)[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert command in ci.splitlines()


def test_fresh_machine_commands_are_two_and_run_the_main_job():
    commands = [line for line in README.splitlines() if line.startswith("python3 -m venv")]
    assert len(commands) == 2
    assert commands[0].endswith("python -m benchmarks.mnist_mlp")


def test_relative_links_point_at_files():
    links = re.findall(r"\]\(([^)#:]+)\)", README)
    assert "benchmarks/RESULTS.md" in links and "CONTRIBUTING.md" in links
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing
