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


def use(paths: Paths) -> None:
    """Make this home's store the process's tracking URI for mlflow's fluent calls.

    mlflow also exports the URI to the environment for subprocesses; autopdm's processes find their
    registry from their own home, so the variable is put back as it was: another home's URI must not
    leak into later `Paths` or child processes (under `mlflow run` it was set on purpose and stays)."""
    import mlflow

    quiet_telemetry()
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(paths.tracking_uri)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


def client(paths: Paths):
    """An MlflowClient on this home's tracking store (also made the process's tracking URI)."""
    from mlflow import MlflowClient

    use(paths)
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
