"""docs/tutorial.ipynb executes top to bottom in a real kernel (nbclient + ipykernel), as CI
runs it: the seed comparison bit for bit, both sweeps, a network's geometry, every figure a
PNG. The notebook is kept without outputs in git."""

from __future__ import annotations

import shutil

import pytest

from wdexp.config import ROOT

nbformat = pytest.importorskip("nbformat", reason="the notebook extra")
nbclient = pytest.importorskip("nbclient", reason="the notebook extra")
NOTEBOOK = ROOT / "docs" / "tutorial.ipynb"


def test_the_notebook_is_kept_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_the_tutorial_executes_and_reproduces_the_seed_notebook(tmp_path):
    shutil.copy(NOTEBOOK, tmp_path)
    notebook = nbformat.read(tmp_path / NOTEBOOK.name, as_version=4)
    nbclient.NotebookClient(notebook, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code"
                      for o in c.outputs if o.output_type == "stream")
    assert "the store holds the notebook's table, bit for bit" in printed
    figures = [c for c in notebook.cells if c.cell_type == "code" and "figures[" in
               c.source.splitlines()[-1]]
    assert len(figures) == 3
    for cell in figures:
        (shown,) = [o for o in cell.outputs if o.output_type == "execute_result"]
        assert "image/png" in shown["data"], cell.source
    assert (tmp_path / "mlflow.db").exists()  # the runs went next to the notebook
