"""The rules a workshop uses today, as baselines for the models (DESIGN.md "Models").

Each baseline is two things:

* `rule_<c>(rows)` — the literal rule, a boolean alert per row, at its own alert volume:
  brake: a check every 10,000 km (alert on the day the km since the last brake service crosses a
  multiple of 10,000); tire: inspect when the km since the last tire service exceed 40,000;
  battery: battery older than 4 years, or rest voltage below 12.4 V (minimum over 7 days).
* `score_<c>(rows)` — the quantity the rule thresholds (km since service; for the battery, rest
  voltage below 12.4 V first, lower first, then age). `at_volume(score, k)` alerts on the k
  highest-scoring rows, so the rule can be compared with the model *at the same alert volume*.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

BRAKE_CHECK_KM = 10_000.0
TIRE_KM = 40_000.0
BATTERY_AGE_DAYS = 4 * 365.25
REST_V_LOW = 12.4

DESCRIPTION = {
    "brake": "brake check every 10,000 km (score: km since last brake service)",
    "tire": "tires by distance: > 40,000 km since last tire service (score: km since last tire service)",
    "battery": "battery > 4 years or 7-day minimum rest voltage < 12.4 V (score: low voltage first, then age)",
}


def _col(rows: pd.DataFrame, name: str) -> np.ndarray:
    return pd.to_numeric(rows[name], errors="coerce").to_numpy(dtype=float) if name in rows else np.full(len(rows), np.nan)


def score(rows: pd.DataFrame, component: str) -> np.ndarray:
    if component in ("brake", "tire"):
        return np.nan_to_num(_col(rows, f"km_since_{component}_service"), nan=-1.0)
    v = _col(rows, "rest_voltage_v_min_7d")
    age = np.nan_to_num(_col(rows, "days_since_battery_service"), nan=0.0)
    low = np.nan_to_num(v, nan=99.0) < REST_V_LOW
    return np.where(low, 1e6 + (REST_V_LOW - np.nan_to_num(v, nan=REST_V_LOW)) * 1e5, 0.0) + age


def rule(rows: pd.DataFrame, component: str) -> np.ndarray:
    if component == "brake":
        km = _col(rows, "km_since_brake_service")
        vid = rows["vehicle_id"].astype(str).to_numpy()
        order = np.lexsort((pd.to_datetime(rows["date"]).to_numpy(), vid))
        k = np.floor(np.nan_to_num(km[order], nan=0.0) / BRAKE_CHECK_KM)
        prev = np.r_[np.nan, k[:-1]]
        same = np.r_[False, vid[order][1:] == vid[order][:-1]]
        crossed = same & (k > prev) & (k >= 1)
        out = np.zeros(len(rows), dtype=bool)
        out[order] = crossed
        return out
    if component == "tire":
        return np.nan_to_num(_col(rows, "km_since_tire_service"), nan=0.0) > TIRE_KM
    v = _col(rows, "rest_voltage_v_min_7d")
    age = _col(rows, "days_since_battery_service")
    return (np.nan_to_num(v, nan=99.0) < REST_V_LOW) | (np.nan_to_num(age, nan=0.0) > BATTERY_AGE_DAYS)


def at_volume(s: np.ndarray, k: int) -> np.ndarray:
    """Alert on the k highest scores (stable order for ties)."""
    s = np.asarray(s, dtype=float)
    out = np.zeros(len(s), dtype=bool)
    if k > 0:
        out[np.argsort(-s, kind="stable")[:k]] = True
    return out
