"""notebooks/boltzmann.ipynb runs end to end (GMM-40 with the committed model)."""

from pathlib import Path

import pytest


NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "boltzmann.ipynb"


@pytest.mark.skipif(not NOTEBOOK.exists(), reason="notebooks/ not in this checkout")
def test_boltzmann_notebook_runs():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": NOTEBOOK.parent}}
    )
    client.execute()
    text = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "(B) exact discrete map" in text and "augmented: ESS" in text
