"""notebooks/inspect_shards.ipynb runs top to bottom on a real run."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "inspect_shards.ipynb"


@pytest.mark.parametrize("dag", ["caption", "documents", "ocr_synth"])
def test_notebook_executes_on_the_demo_run(demo_dir, monkeypatch, dag):
    monkeypatch.setenv("QUARRY_RUN_DIR", str(demo_dir / dag))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(demo_dir)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs)
    assert "inputs =" in text and "kept +" in text
    assert any("image/jpeg" in o.get("data", {}) or "image/png" in o.get("data", {}) for o in outputs)
