"""The registered model's own code: a LightGBM booster with its calibration, as an MLflow pyfunc.

Each component's model version in the registry is logged with this file as its code ("models from
code": MLflow copies the file into the model and runs it at load time), the booster file and
`operating_point.json` (calibration, threshold, feature names) as its artifacts. So

    mlflow.pyfunc.load_model("models:/autopdm-brake@champion").predict(feature_rows)

returns the calibrated risk (probability of a need within 15 days) the service returns, and the
model needs nothing of autopdm to load: only numpy, pandas, lightgbm and mlflow.

The service does not go through the pyfunc machinery (seconds to load): `champion.load_version`
reads the same two artifacts and calls the functions below, so there is one implementation of
the calibration and of the feature matrix.

This file must stay self-contained (no autopdm imports): it runs on its own inside the model.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

BOOSTER_FILE = "model.lgb"
OPERATING_POINT_FILE = "operating_point.json"
ARTIFACTS = {"booster": BOOSTER_FILE, "operating_point": OPERATING_POINT_FILE}  # name in the model → file name


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def apply_calibration(calibration: dict, margin: np.ndarray) -> np.ndarray:
    """Calibrated risk from the booster's raw log-odds."""
    m = np.asarray(margin, dtype=float)
    method = calibration.get("method", "platt")
    if method == "platt":
        return _sigmoid(float(calibration["a"]) * m + float(calibration["b"]))
    if method == "isotonic":
        return np.interp(m, np.asarray(calibration["x"], float), np.asarray(calibration["y"], float))
    if method == "identity":
        return _sigmoid(m)
    raise ValueError(f"unknown calibration method {method!r}")


def feature_matrix(X: pd.DataFrame, feature_names: list[str]) -> np.ndarray:
    """Float matrix in the model's column order; absent columns → NaN, anything else → float."""
    X = X.reindex(columns=feature_names)
    if all(pd.api.types.is_numeric_dtype(t) for t in X.dtypes):  # the usual case: no per-column parse
        return X.to_numpy(dtype=np.float64, na_value=np.nan)
    return X.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)


def read_operating_point(path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _python_model():
    import mlflow

    class CalibratedBooster(mlflow.pyfunc.PythonModel):
        """predict(feature rows) → calibrated risk per row (float64 array)."""

        def load_context(self, context):
            import lightgbm as lgb

            self.booster = lgb.Booster(model_file=context.artifacts["booster"])
            self.op = read_operating_point(context.artifacts["operating_point"])

        def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
            X = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
            if len(X) == 0:
                return np.zeros(0)
            margin = self.booster.predict(feature_matrix(X, self.op["feature_names"]), raw_score=True)
            return apply_calibration(self.op["calibration"], margin)

    return CalibratedBooster()


if not __package__:  # run as the model's code by MLflow, not imported from the autopdm package
    import mlflow

    mlflow.models.set_model(_python_model())
