"""Both notebooks execute top to bottom on a small fleet (nbclient; outputs are not written back)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from .conftest import CAROBD, ROOT

NOTEBOOKS = ROOT / "notebooks"


def _run(name: str, cwd: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


@pytest.mark.heavy
def test_notebooks_execute(home, tmp_path, monkeypatch):
    nb_home = tmp_path / "nb"
    monkeypatch.setenv("AUTOPDM_NB_HOME", str(nb_home))
    monkeypatch.setenv("AUTOPDM_NB_VEHICLES", "120")
    monkeypatch.setenv("AUTOPDM_NB_DAYS", "400")
    monkeypatch.setenv("AUTOPDM_NB_FAST", "1")
    monkeypatch.setenv("AUTOPDM_NB_CAROBD_FILES", "3")
    monkeypatch.setenv("AUTOPDM_CAROBD", str(CAROBD))
    for name in ("01_fleet_and_wear.ipynb", "02_model_evaluation.ipynb"):
        nb = _run(name, NOTEBOOKS)
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
        assert not errors, errors
        images = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                     if "image/png" in o.get("data", {}))
        assert images >= 3, f"{name}: only {images} plots"
    # notebook 02 reused the fleet notebook 01 left, and the models it trained are in the registry
    assert (nb_home / "mlflow.db").exists() and (nb_home / "features" / "features.parquet").exists()


@pytest.mark.parametrize("name", ["01_fleet_and_wear.ipynb", "02_model_evaluation.ipynb"])
def test_notebooks_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
