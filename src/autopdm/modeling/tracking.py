"""The MLflow tracking store under $AUTOPDM_HOME, and the experiment training runs log into.

MLflow creates a SQLite store with its Default experiment's artifacts in ./mlruns of whatever
directory it runs in. Creating the store ourselves first puts every experiment's artifacts under
var/mlartifacts, so a bare `mlflow run . -e train` lands there too.

mlflow is imported inside the functions: it costs ~2 s, which commands that do not track should not pay.
"""

from __future__ import annotations

import os
from pathlib import Path

from autopdm.config import Paths, quiet_telemetry

EXPERIMENT = "autopdm-train"


def ensure_store(paths: Paths) -> None:
    uri = paths.tracking_uri
    if not uri.startswith("sqlite:///") or Path(uri[len("sqlite:///"):]).exists():
        return  # a database server, or a store that exists already: nothing to decide
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    paths.artifacts.mkdir(parents=True, exist_ok=True)
    SqlAlchemyStore(uri, paths.artifacts.as_uri()).engine.dispose()


def client(paths: Paths):
    """An MlflowClient on this home's tracking store (also made the process's tracking URI)."""
    import mlflow
    from mlflow import MlflowClient

    quiet_telemetry()
    mlflow.set_tracking_uri(paths.tracking_uri)
    return MlflowClient(tracking_uri=paths.tracking_uri)


def setup_mlflow(paths: Paths):
    """Tracking URI from `paths`; experiment `autopdm-train` with artifacts under var/mlartifacts.

    Inside `mlflow run` (MLFLOW_RUN_ID set) the run and its experiment already exist: leave them.
    """
    import mlflow

    ensure_store(paths)
    c = client(paths)
    if not os.environ.get("MLFLOW_RUN_ID"):
        if c.get_experiment_by_name(EXPERIMENT) is None:
            paths.artifacts.mkdir(parents=True, exist_ok=True)
            c.create_experiment(EXPERIMENT, artifact_location=paths.artifacts.as_uri())
        mlflow.set_experiment(EXPERIMENT)
    return c
