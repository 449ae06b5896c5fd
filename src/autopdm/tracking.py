"""The MLflow tracking store under $AUTOPDM_HOME.

MLflow creates a SQLite store with its Default experiment's artifacts in ./mlruns of whatever
directory it runs in. Creating the store ourselves first puts every experiment's artifacts under
var/mlartifacts, so a bare `mlflow run . -e train` lands there too.
"""

from __future__ import annotations

from pathlib import Path

from .config import Paths


def ensure_store(paths: Paths) -> None:
    uri = paths.tracking_uri
    if not uri.startswith("sqlite:///") or Path(uri[len("sqlite:///"):]).exists():
        return  # a database server, or a store that exists already: nothing to decide
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    paths.artifacts.mkdir(parents=True, exist_ok=True)
    SqlAlchemyStore(uri, paths.artifacts.as_uri()).engine.dispose()
