"""Time-and-vehicle split of the features table.

Vehicles are assigned to groups by a hash of (seed, VIN): stable across runs and independent of
row order. The calendar (days with complete labels) is cut into three periods; each set takes
one group of vehicles in one period:

    train        vehicles A (50 %)   days d0 .. T1 − 15      (labels reach at most T1)
    early_stop   vehicles B1 (20 %)  days T1+1 .. T2 − 15    (LightGBM early stopping)
    calib        vehicles B2 (30 %)  days T1+1 .. T2 − 15    (calibration + operating threshold)
    test         vehicles B1 ∪ B2    days T2+1 .. end        (held out: metrics, baselines, gate)

T1 = d0 + 55 % of the span, T2 = d0 + 75 %. So no vehicle and no day (including the 15 days a
label looks ahead) is shared between training and any evaluation set, early stopping and
calibration use data the trees never saw, and the test period is also disjoint in time from
calibration. Feature windows of evaluation rows reach back into earlier periods, but only over
the evaluation vehicles' own history — never over a training vehicle.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from autopdm.pipeline.features import HORIZON_DAYS

GROUPS = ("train", "early_stop", "calib")
DEFAULT_FRACTIONS = {"train": 0.5, "early_stop": 0.2, "calib": 0.3}


@dataclass
class Split:
    train: np.ndarray
    early_stop: np.ndarray
    calib: np.ndarray
    test: np.ndarray
    dates: dict = field(default_factory=dict)      # train_start, train_end, valid_start, ... (Timestamps)
    vehicles: dict = field(default_factory=dict)   # group → number of vehicles

    def masks(self) -> dict[str, np.ndarray]:
        return {"train": self.train, "early_stop": self.early_stop, "calib": self.calib, "test": self.test}

    def params(self) -> dict[str, str]:
        """For MLflow: date ranges (ISO) and sizes."""
        out = {k: pd.Timestamp(v).date().isoformat() for k, v in self.dates.items()}
        out.update({f"n_rows_{k}": str(int(m.sum())) for k, m in self.masks().items()})
        out.update({f"n_vehicles_{k}": str(v) for k, v in self.vehicles.items()})
        return out


def vehicle_groups(vehicle_ids, seed: int = 0, fractions: dict | None = None) -> pd.Series:
    """VIN → group name, from a hash of (seed, VIN)."""
    fractions = fractions or DEFAULT_FRACTIONS
    ids = pd.Index(pd.unique(pd.Series(list(vehicle_ids), dtype="object").astype(str)))
    u = np.array([int.from_bytes(hashlib.sha1(f"{seed}:{v}".encode()).digest()[:8], "big") / 2.0**64 for v in ids])
    edges = np.cumsum([fractions[g] for g in GROUPS])
    edges = edges / edges[-1]
    idx = np.searchsorted(edges, u, side="right").clip(0, len(GROUPS) - 1)
    return pd.Series(np.asarray(GROUPS, dtype=object)[idx], index=ids)


def time_vehicle_split(df: pd.DataFrame, seed: int = 0, t1: float = 0.55, t2: float = 0.75,
                       fractions: dict | None = None, horizon: int = HORIZON_DAYS) -> Split:
    """Boolean masks over the rows of the features table `df` (see the module docstring)."""
    dates = pd.to_datetime(df["date"]).to_numpy("datetime64[D]")
    complete = df["label_complete"].to_numpy(dtype=bool) if "label_complete" in df else np.ones(len(df), bool)
    if not complete.any():
        raise ValueError("no rows with complete labels: the features table needs at least 16 days of history")
    d0, d_end = dates[complete].min(), dates[complete].max()
    span = int((d_end - d0).astype(int))
    T1 = d0 + np.timedelta64(int(round(span * t1)), "D")
    T2 = d0 + np.timedelta64(int(round(span * t2)), "D")
    h = np.timedelta64(horizon, "D")
    groups = vehicle_groups(df["vehicle_id"], seed, fractions)
    g = groups.reindex(df["vehicle_id"].astype(str)).to_numpy()
    in_valid = (dates > T1) & (dates <= T2 - h)
    s = Split(
        train=complete & (g == "train") & (dates <= T1 - h),
        early_stop=complete & (g == "early_stop") & in_valid,
        calib=complete & (g == "calib") & in_valid,
        test=complete & (g != "train") & (dates > T2),
    )
    s.dates = {
        "train_start": pd.Timestamp(d0), "train_end": pd.Timestamp(T1 - h), "train_labels_until": pd.Timestamp(T1),
        "valid_start": pd.Timestamp(T1 + np.timedelta64(1, "D")), "valid_end": pd.Timestamp(T2 - h),
        "test_start": pd.Timestamp(T2 + np.timedelta64(1, "D")), "test_end": pd.Timestamp(d_end),
    }
    s.vehicles = groups.value_counts().to_dict()
    return s
