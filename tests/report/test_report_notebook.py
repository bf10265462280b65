"""notebooks/analysis.ipynb executes on a tiny results folder and draws the main comparison."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from somabench.report.build import build_report
from somabench.report.collect import load_local

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "analysis.ipynb"


@pytest.mark.parametrize("kind", ["results", "outputs"])
def test_notebook_executes(outputs, report_cfg, tmp_path, monkeypatch, kind):
    nbformat = pytest.importorskip("nbformat", reason="pip install -e .[notebook]")
    nbclient = pytest.importorskip("nbclient", reason="pip install -e .[notebook]")
    source = outputs / "tiny_exp"
    if kind == "results":
        source = tmp_path / "results"
        cfg = report_cfg.copy()
        cfg.figures.formats = ["png"]  # the notebook reads data/dialogues.csv; figures only cost time
        build_report(load_local(outputs / "tiny_exp", report_cfg), cfg, source)
    monkeypatch.setenv("SOMABENCH_SOURCE", str(source))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute(env=dict(os.environ))
    outputs_by_type = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs_by_type if o.output_type == "error"]
    text = "\n".join(o.get("text", "") for o in outputs_by_type if o.output_type == "stream")
    assert "14 dialogues from 7 runs" in text and "shown: p1" in text
    markdown = "\n".join(o["data"].get("text/markdown", "") for o in outputs_by_type if "data" in o)
    # the same cell as the report's Table 1 (test_report_tables): one path, one number
    assert "| SOMA | **88.3 (n=2: 86.7, 90.0)†** | **87.5 (n=2: 90.0, 85.0)** | **87.9 (" in markdown
    assert "Excluded rows: 2 (1 api_error, 1 unparsed)." in markdown
    assert any("image/png" in o.get("data", {}) for o in outputs_by_type)
