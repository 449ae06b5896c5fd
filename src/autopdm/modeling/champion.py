"""Champion models: loaded from the MLflow registry (alias `champion`), LightGBM booster natively.

What a registered version carries (written by `autopdm.modeling.train`):

* the LightGBM booster (`model.lgb` in the logged model's artifacts, MLflow lightgbm flavor),
* model-version tags `threshold` (operating threshold on the calibrated risk), `calibration`
  (JSON: `{"method": "platt", "a": .., "b": ..}` applied to the raw log-odds), `component`,
  `alert_budget`, `min_precision`, `feature_names` (JSON) and the held-out metrics,
* the same threshold/calibration in the MLmodel file's `metadata` (a fallback for copies of the
  model outside this registry).

`load_champions` reads them without the pyfunc machinery (a native booster loads in
milliseconds); importing mlflow is still needed to resolve the alias.
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
from autopdm.modeling.tracking import client as tracking_client

MODEL_FILE = "model.lgb"


class ChampionError(RuntimeError):
    """A champion model or one of the things it needs is missing."""


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def apply_calibration(calibration: dict, margin: np.ndarray) -> np.ndarray:
    m = np.asarray(margin, dtype=float)
    method = calibration.get("method", "platt")
    if method == "platt":
        return _sigmoid(float(calibration["a"]) * m + float(calibration["b"]))
    if method == "isotonic":
        return np.interp(m, np.asarray(calibration["x"], float), np.asarray(calibration["y"], float))
    if method == "identity":
        return _sigmoid(m)
    raise ChampionError(f"unknown calibration method {method!r}")


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
        X = X.reindex(columns=self.feature_names)
        if all(pd.api.types.is_numeric_dtype(t) for t in X.dtypes):  # the usual case: no per-column parse (~7 ms)
            return X.to_numpy(dtype=np.float64, na_value=np.nan)
        return X.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)

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
    loc = loc or src
    if loc.startswith("file://"):
        p = Path(unquote(urlparse(loc).path))
        if (p / MODEL_FILE).exists():
            return p
    elif loc and Path(loc).is_dir() and (Path(loc) / MODEL_FILE).exists():
        return Path(loc)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{mv.version}"))


def _metadata(model_dir: Path) -> dict:
    mlmodel = model_dir / "MLmodel"
    if not mlmodel.exists():
        return {}
    return (yaml.safe_load(mlmodel.read_text()) or {}).get("metadata") or {}


def load_version(client, name: str, mv, component: str | None = None) -> Champion:
    """A registered model version as a Champion (booster + calibration + threshold)."""
    import lightgbm as lgb

    d = _model_dir(client, name, mv)
    f = d / MODEL_FILE
    if not f.exists():
        raise ChampionError(f"{name} v{mv.version}: {MODEL_FILE} not found in {d} (not a LightGBM booster?)")
    booster = lgb.Booster(model_file=str(f))
    tags = dict(mv.tags or {})
    meta = _metadata(d)
    missing = []
    thr = tags.get("threshold", meta.get("threshold"))
    if thr is None:
        missing.append("threshold")
    cal = tags.get("calibration", meta.get("calibration"))
    if cal is None:
        missing.append("calibration")
    if missing:
        raise ChampionError(f"{name} v{mv.version}: missing {', '.join(missing)} (model-version tags or MLmodel metadata); "
                            "retrain with `autopdm train`")
    cal = json.loads(cal) if isinstance(cal, str) else dict(cal)
    metrics = {k[len("metric."):]: float(v) for k, v in tags.items() if k.startswith("metric.")}
    return Champion(component=component or tags.get("component") or name.removeprefix(components.MODEL_PREFIX), name=name,
                    version=str(mv.version), feature_names=list(booster.feature_name()), threshold=float(thr),
                    booster=booster, calibration=cal, metrics=metrics, tags=tags, run_id=mv.run_id)


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
