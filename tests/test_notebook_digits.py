"""The digits notebook runs top to bottom (nbclient, the venv's python3 kernel)."""

from pathlib import Path

import pytest


nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("matplotlib")
pytest.importorskip("rexjax.models.pretrained")

NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "digits_editing.ipynb"


@pytest.mark.slow  # failed on the merged tree (retrained checkpoint), 2026-12-02: to fix
def test_digits_notebook_runs(tmp_path, monkeypatch):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    repo = str(Path(__file__).parents[1])
    # The kernel imports this checkout's rexjax and draws plots off screen.
    monkeypatch.setenv("PYTHONPATH", repo)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = "".join(
        o.get("text", "") for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs
    )
    assert "round trip max" in outputs
    # Exact inversion: the printed float32 round trip is at round-off level.
    line = next(s for s in outputs.splitlines() if "round trip max" in s)
    assert float(line.split("=")[1].split()[0]) < 1e-4
