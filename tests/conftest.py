"""Shared fixtures. Every test runs with its own $AUTOPDM_HOME under tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autopdm.config import Paths
from autopdm.localproc import free_port  # noqa: F401  (re-exported for the tests)

ROOT = Path(__file__).resolve().parents[1]
# the shipped sample of real carOBD logs; AUTOPDM_CAROBD points the tests at a larger copy
CAROBD = Path(os.environ.get("AUTOPDM_CAROBD", ROOT / "data" / "carobd"))

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")


@pytest.fixture
def home(tmp_path, monkeypatch) -> Paths:
    monkeypatch.setenv("AUTOPDM_HOME", str(tmp_path / "var"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return Paths.from_env().ensure()
