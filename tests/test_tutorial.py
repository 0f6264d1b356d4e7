"""``docs/tutorial.ipynb`` runs end to end (synthetic default and Kang), so the tutorial cannot rot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "tutorial.ipynb"
SHARED = Path(os.environ.get("WADDINGTON_SHARED_DATA", ROOT.parent / "shared" / "data"))
KANG = Path(os.environ.get("WADDINGTON_KANG", SHARED / "kang2018_pbmc_ifnb.h5ad"))


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_tutorial_notebook_runs(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    if not KANG.exists():
        pytest.skip(f"Kang data not found at {KANG} (set WADDINGTON_KANG or WADDINGTON_SHARED_DATA)")
    monkeypatch.setenv("WADDINGTON_KANG", str(KANG))
    monkeypatch.setenv("WADDINGTON_TUTORIAL_OUT", str(tmp_path))
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=1200, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError naming the failing cell
    errors = [out for cell in notebook.cells if cell.cell_type == "code"
              for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors
