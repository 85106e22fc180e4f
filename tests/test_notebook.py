"""The tutorial notebook runs from top to bottom on the CPU, and its cells show what the text says they show."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow  # real-model audits, subprocesses or browsers: the full suite runs it

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "notebooks" / "quickstart.ipynb"


def _text(cell) -> str:
    """Everything a code cell showed: printed text and the HTML or plain text of its results."""
    parts = []
    for output in cell.get("outputs", []):
        parts.append(output.get("text", ""))
        data = output.get("data", {})
        parts.append(data.get("text/html", "") or data.get("text/plain", ""))
    return "\n".join(parts)


def test_quickstart_notebook_runs(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), \
        "commit the notebook with its outputs cleared"
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    shown = {index: _text(cell) for index, cell in enumerate(notebook.cells) if cell.cell_type == "code"}
    everything = "\n".join(shown.values())
    assert "Traceback" not in everything
    assert "pairs; the score rose in" in everything
    assert "removed heads: " in everything and "removed heads: \n" not in everything  # some head carried TFC1
    assert any(output.get("data", {}).get("image/png") for cell in notebook.cells if cell.cell_type == "code"
               for output in cell.get("outputs", [])), "no figure was drawn"
    table = [text for text in shown.values() if "mechir-axioms compare" in text]
    assert table and "flags lost:" in table[-1], "the damaged checkpoint lost no TFC1 flag"
