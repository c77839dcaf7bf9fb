"""The tutorial notebook runs top to bottom (nbclient, a fresh kernel) and is stored without outputs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
NOTEBOOK = REPOSITORY / "examples" / "fine_pruning_tutorial.ipynb"
#: Seconds the whole notebook may take (the target is 3 minutes on 2 idle cores; the machine may be shared).
TIMEOUT = 900


def test_the_notebook_is_stored_without_outputs():
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert code and all(cell["outputs"] == [] and cell["execution_count"] is None for cell in code)


def test_the_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("PYTHONPATH", f"{REPOSITORY}")  # the kernel imports this checkout
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    start = time.monotonic()
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    seconds = time.monotonic() - start
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream" and o.name == "stdout")
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3, "the digits, the sweep's curves and the ROC curve are drawn inline"
    for expected in (
        "B: clean test accuracy",
        "X=4:",
        "GoodNet",
        "channels pruned, then 20 epochs",
        "fine-pruning (FinePruningDetector)",
        "activation clustering (ART)",
        "spectral signatures (ART)",
        "AUC of the fine-pruning score",
    ):
        assert expected in text, expected
    errors = [o for o in outputs if o.output_type == "error" or (o.output_type == "stream" and o.name == "stderr")]
    assert not errors, errors
    assert "━" not in text and "\x1b[" not in text, "Keras progress bars or ANSI codes in the outputs"
    assert seconds < TIMEOUT
    print(f"notebook ran in {seconds:.1f} s")
