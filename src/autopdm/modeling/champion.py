"""Champion models: loaded from the MLflow registry (alias `champion`), LightGBM booster natively.

What a registered version carries (written by `autopdm.modeling.train`):

* an MLflow pyfunc model whose code is `pyfunc_model.py` and whose artifacts are the LightGBM
  booster (`artifacts/model.lgb`) and `artifacts/operating_point.json` (component, threshold,
  calibration, feature names, the cost model it was chosen with): loading it with
  `mlflow.pyfunc` gives the calibrated risk;
* model-version tags `threshold`, `calibration` (JSON), `component`, `feature_names` (JSON), the
  operating point's costs and budget and the held-out metrics;
* the same threshold/calibration in the MLmodel file's `metadata`.

`load_champions` reads the booster and operating_point.json without the pyfunc machinery (a native
booster loads in milliseconds) and predicts with the pyfunc model's own functions, so the service
and the registered model give the same risk. Versions registered before the pyfunc model (booster
at the model's root, operating point only in tags/metadata) still load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd

import yaml

from autopdm import components
from autopdm.config import Paths
from autopdm.modeling.pyfunc_model import (ARTIFACTS, BOOSTER_FILE, OPERATING_POINT_FILE, apply_calibration,
                                           feature_matrix, read_operating_point)
from autopdm.modeling.tracking import client as tracking_client

MODEL_FILE = BOOSTER_FILE


class ChampionError(RuntimeError):
    """A champion model or one of the things it needs is missing."""


def predict_threads(n_rows: int) -> int:
    # OpenMP start-up dominates small predictions (one row: ~0.4 ms on one thread vs several ms
    # on all); a server handles concurrency itself, so use one thread below a few thousand rows.
    return 1 if n_rows < 2000 else 0


@dataclass
class Champion:
    component: str            # "brake" | "tire" | "battery"
    name: str                 # "autopdm-brake" ...
    version: str              # registry version ("" for an unregistered candidate)
    feature_names: list[str]
    threshold: float          # operating threshold on the calibrated risk
    booster: Any = None       # lightgbm.Booster
    calibration: dict = field(default_factory=lambda: {"method": "identity"})
    metrics: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)
    run_id: str | None = None

    def matrix(self, X: pd.DataFrame) -> np.ndarray:
        """Feature matrix in the model's column order; absent columns → NaN, anything else → float."""
        return feature_matrix(X, self.feature_names)

    def margin(self, X: pd.DataFrame) -> np.ndarray:
        if len(X) == 0:
            return np.zeros(0)
        return self.booster.predict(self.matrix(X), raw_score=True, num_threads=predict_threads(len(X)))

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Calibrated probability of a service need within 15 days."""
        return apply_calibration(self.calibration, self.margin(X))

    def predict_matrix(self, M: np.ndarray) -> np.ndarray:
        """`predict` for a float matrix already in `feature_names` order (the service's bulk path)."""
        return apply_calibration(self.calibration, self.booster.predict(M, raw_score=True, num_threads=predict_threads(len(M))))

    def contribution_matrix(self, X: pd.DataFrame) -> np.ndarray:
        """LightGBM pred_contrib per feature (log-odds of the uncalibrated model), bias dropped."""
        if len(X) == 0:
            return np.zeros((0, len(self.feature_names)))
        c = self.booster.predict(self.matrix(X), pred_contrib=True, num_threads=predict_threads(len(X)))
        return np.asarray(c)[:, :-1]

    def contributions(self, X: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(self.contribution_matrix(X), columns=self.feature_names, index=X.index)

    def to_dict(self) -> dict:
        """Metadata (no binaries): what `models/README.md` describes."""
        return {"component": self.component, "name": self.name, "version": str(self.version), "run_id": self.run_id,
                "threshold": self.threshold, "calibration": self.calibration, "feature_names": list(self.feature_names),
                "metrics": self.metrics, "tags": {k: v for k, v in self.tags.items() if k not in ("feature_names", "calibration")}}


def _local_dir(loc: str) -> Path | None:
    if loc.startswith("file://"):
        loc = unquote(urlparse(loc).path)
    p = Path(loc) if loc and "://" not in loc else None
    return p if p is not None and (p / "MLmodel").exists() else None


def _model_dir(client, name: str, mv) -> Path:
    """Local directory of a model version's files (no copy for a local artifact store)."""
    import mlflow

    src = str(mv.source or "")
    model_id = getattr(mv, "model_id", None) or (src.split("/", 1)[1] if src.startswith("models:/m-") else None)
    loc = None
    if model_id:
        try:
            loc = client.get_logged_model(model_id).artifact_location
        except Exception:
            loc = None
    d = _local_dir(loc or src)
    if d is not None:
        return d
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{mv.version}"))


def _mlmodel(model_dir: Path) -> dict:
    mlmodel = model_dir / "MLmodel"
    return (yaml.safe_load(mlmodel.read_text()) or {}) if mlmodel.exists() else {}


def _artifact_files(model_dir: Path, mlmodel: dict) -> dict[str, Path]:
    """name → file of the pyfunc model's artifacts (booster, operating_point) that exist; a version
    logged with the LightGBM flavor (before the pyfunc model) has only its booster, at the root."""
    listed = ((mlmodel.get("flavors") or {}).get("python_function") or {}).get("artifacts") or {}
    files = {k: model_dir / v["path"] for k, v in listed.items() if isinstance(v, dict) and "path" in v}
    files.setdefault("booster", model_dir / "artifacts" / BOOSTER_FILE)
    if not files["booster"].exists():
        files["booster"] = model_dir / BOOSTER_FILE
    return {k: f for k, f in files.items() if k in ARTIFACTS and f.exists()}


def _operating_point(files: dict[str, Path], tags: dict, meta: dict) -> dict:
    """The model's own operating_point.json; for older versions, the tags or the MLmodel metadata."""
    if "operating_point" in files:
        return read_operating_point(files["operating_point"])
    op = {k: tags.get(k, meta.get(k)) for k in ("threshold", "calibration")}
    if isinstance(op["calibration"], str):
        op["calibration"] = json.loads(op["calibration"])
    return op


def load_version(client, name: str, mv, component: str | None = None) -> Champion:
    """A registered model version as a Champion (booster + calibration + threshold)."""
    import lightgbm as lgb

    d = _model_dir(client, name, mv)
    mlmodel = _mlmodel(d)
    files = _artifact_files(d, mlmodel)
    if "booster" not in files:
        raise ChampionError(f"{name} v{mv.version}: {BOOSTER_FILE} not found in {d} (not a LightGBM booster?)")
    booster = lgb.Booster(model_file=str(files["booster"]))
    tags = dict(mv.tags or {})
    op = _operating_point(files, tags, mlmodel.get("metadata") or {})
    missing = [k for k in ("threshold", "calibration") if op.get(k) is None]
    if missing:
        raise ChampionError(f"{name} v{mv.version}: missing {', '.join(missing)} ({OPERATING_POINT_FILE}, model-version "
                            "tags or MLmodel metadata); retrain with `autopdm train`")
    metrics = {k[len("metric."):]: float(v) for k, v in tags.items() if k.startswith("metric.")}
    return Champion(component=component or tags.get("component") or name.removeprefix(components.MODEL_PREFIX), name=name,
                    version=str(mv.version), feature_names=list(booster.feature_name()), threshold=float(op["threshold"]),
                    booster=booster, calibration=dict(op["calibration"]), metrics=metrics, tags=tags, run_id=mv.run_id)


def get_champion(client, component: str) -> Champion | None:
    """The current champion of a component, or None when no version holds the alias."""
    from mlflow.exceptions import MlflowException

    name = components.get(component).model_name
    try:
        mv = client.get_model_version_by_alias(name, components.CHAMPION_ALIAS)
    except MlflowException:
        return None
    return load_version(client, name, mv, component)


def load_champions(paths: Paths | None = None, names=None) -> dict[str, Champion]:
    """component → Champion, from the registry alias `champion` (default: every registered component).
    Raises ChampionError naming what is missing."""
    paths = paths or Paths.from_env()
    client = tracking_client(paths)
    out, missing = {}, []
    for comp in components.check(names or components.names()):
        ch = get_champion(client, comp)
        if ch is None:
            missing.append(components.get(comp).model_name)
        else:
            out[comp] = ch
    if missing:
        raise ChampionError(f"no version with alias '{components.CHAMPION_ALIAS}' for {', '.join(missing)} in {paths.tracking_uri}: "
                            "run `autopdm train` (after `autopdm simulate` and `autopdm features`)")
    return out
