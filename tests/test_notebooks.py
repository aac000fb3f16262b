"""The notebooks execute top to bottom on small settings and show their plots."""

import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = pathlib.Path(__file__).parent.parent / "notebooks"


@pytest.mark.tensorflow
@pytest.mark.parametrize("name,expected_text", [
    ("quickstart", "test accuracy"),
    ("momentum_explained", "Polyak optimum"),
])
def test_notebook_executes(name, expected_text, monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_MOMENTUM_QUICK", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    # Run where the notebooks would be, minus the logs they write there.
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert expected_text in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2
    if name == "quickstart":  # logs where the notebook says, for `tensorboard --logdir logs`
        assert list((tmp_path / "logs" / "quickstart" / "train").glob("events.out.*"))
