"""Features: point-in-time correctness (leakage), labels, and the time-and-vehicle split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from autopdm import schemas
from autopdm import components
from autopdm.pipeline.features import HORIZON_DAYS, build_features, feature_columns

LABEL_COLUMNS = ([c.label for c in components.all_components()] + [c.days_to_need for c in components.all_components()]
                 + ["label_complete"])
from autopdm.modeling.split import time_vehicle_split


def hand_fleet(n: int = 12, days: int = 150, seed: int = 0):
    """A small hand-made fleet: trips with voltages and odometer, replacements, inspections, DTCs."""
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp("2025-01-01", tz="UTC")
    vins = [f"WVWZZZ1KZ{i:08d}" for i in range(n)]
    veh = pd.DataFrame({"vehicle_id": vins, "make": "VW", "model": "Golf", "model_year": 2018,
                        "segment": rng.choice(["small", "compact", "suv"], n), "curb_mass_kg": rng.uniform(1000, 1900, n),
                        "first_registration_date": [(t0 - pd.Timedelta(days=int(d))).date() for d in rng.integers(200, 3000, n)],
                        "customer_id": [f"C{i}" for i in range(n)], "preferred_channel": "sms"})
    rows = []
    for i, v in enumerate(vins):
        odo = float(rng.uniform(1e4, 1e5))
        for d in range(int(rng.integers(0, 10)), days):
            for k in range(int(rng.poisson(2))):
                s = t0 + pd.Timedelta(days=d, hours=6 + 5 * k + float(rng.uniform(0, 3)))
                dist = float(rng.gamma(2, 8))
                odo += dist
                rows.append((v, f"{v}-{d}-{k}", s, s + pd.Timedelta(minutes=dist * 1.4), dist, dist * 84, dist * 9,
                             dist * rng.uniform(40, 120), int(rng.poisson(dist / 20)), int(rng.poisson(dist / 25)),
                             rng.uniform(1, 5), 43.0, 12.3 + rng.normal(0, 0.1), 10.0 + rng.normal(0, 0.3), 14.2,
                             10 + 10 * np.sin(d / 58), odo if i % 3 else np.nan, 230 + rng.normal(0, 5)))
    cols = ["vehicle_id", "trip_id", "start_ts", "end_ts", "distance_km", "duration_s", "idle_s", "brake_energy_kj_per_t",
            "harsh_brake_count", "harsh_accel_count", "max_decel_mps2", "mean_speed_kph", "rest_voltage_v",
            "crank_min_voltage_v", "charge_voltage_v", "ambient_temp_c", "odometer_end_km", "tire_pressure_min_kpa"]
    trips = schemas.conform(pd.DataFrame(rows, columns=cols), "trips")
    ev = []
    for i, v in enumerate(vins):
        for comp in ("brake", "tire", "battery", "other"):
            for d in rng.choice(days + 20, size=int(rng.integers(0, 3)), replace=False):
                ev.append((f"E{len(ev)}", v, (t0 + pd.Timedelta(days=int(d) - 10)).date(), np.nan, comp,
                           rng.choice(["replace", "repair", "inspect"]), "workshop"))
    se = schemas.conform(pd.DataFrame(ev, columns=["event_id", "vehicle_id", "date", "odometer_km", "component", "action", "source"]),
                         "service_events")
    dtc = schemas.conform(pd.DataFrame({"vehicle_id": rng.choice(vins, 40),
                                        "ts": [t0 + pd.Timedelta(days=float(x)) for x in rng.uniform(0, days, 40)],
                                        "code": rng.choice(["P0562", "C0035", "P0300"], 40), "status": "stored"}), "dtc_events")
    return trips, schemas.conform(veh, "vehicles"), se, dtc


def _features_only(df: pd.DataFrame) -> pd.DataFrame:
    cols = ["vehicle_id", "date"] + feature_columns(df)
    return df[cols].sort_values(["vehicle_id", "date"]).reset_index(drop=True)


def test_one_row_per_vehicle_day_and_dtypes():
    trips, veh, se, dtc = hand_fleet()
    f = build_features(trips, veh, se, dtc)
    assert not f.duplicated(["vehicle_id", "date"]).any()
    assert set(LABEL_COLUMNS) <= set(f.columns)
    # every vehicle has a contiguous daily series from its first trip day to the fleet's last day
    last = pd.to_datetime(trips["end_ts"]).dt.tz_convert(None).dt.normalize().max()
    first = trips.assign(d=pd.to_datetime(trips["end_ts"]).dt.tz_convert(None).dt.normalize()).groupby("vehicle_id")["d"].min()
    n = f.groupby("vehicle_id").size()
    assert (n == ((last - first).dt.days + 1).reindex(n.index)).all()
    feats = feature_columns(f)
    assert "segment" not in feats and "segment_code" in feats
    assert all(pd.api.types.is_numeric_dtype(f[c]) for c in feats)


def test_leakage_data_after_t_does_not_move_features_at_t():
    trips, veh, se, dtc = hand_fleet(seed=1)
    t = pd.Timestamp("2025-03-15")
    base = build_features(trips, veh, se, dtc)
    end_of_t = pd.Timestamp(t, tz="UTC") + pd.Timedelta(days=1)

    # change everything that happened after the end of day t
    tr2 = trips.copy()
    after = tr2["end_ts"] >= end_of_t
    for c in ("distance_km", "brake_energy_kj_per_t", "rest_voltage_v", "crank_min_voltage_v", "ambient_temp_c",
              "odometer_end_km", "tire_pressure_min_kpa"):
        tr2.loc[after, c] = tr2.loc[after, c] * 3 + 7
    tr2 = tr2[~(after & (np.arange(len(tr2)) % 4 == 0))]       # and drop some later trips
    late = pd.DataFrame({"event_id": ["X1", "X2"], "vehicle_id": [veh.vehicle_id[0], veh.vehicle_id[1]],
                         "date": [(t + pd.Timedelta(days=1)).date(), (t + pd.Timedelta(days=5)).date()],
                         "odometer_km": [np.nan, 5.0], "component": ["brake", "battery"], "action": ["replace", "repair"],
                         "source": "workshop"})
    se2 = pd.concat([se[pd.to_datetime(se["date"]) <= t], schemas.conform(late, "service_events")], ignore_index=True)
    dtc2 = pd.concat([dtc, schemas.conform(pd.DataFrame({"vehicle_id": veh.vehicle_id[:3], "ts": end_of_t + pd.Timedelta(hours=1),
                                                         "code": "P0562", "status": "stored"}), "dtc_events")], ignore_index=True)
    moved = build_features(tr2, veh, se2, dtc2)

    a = _features_only(base[base["date"] <= t])
    b = _features_only(moved[moved["date"] <= t])
    pd.testing.assert_frame_equal(a, b)
    # ...while later rows did change (the test has teeth)
    assert not _features_only(base[base["date"] > t]).equals(_features_only(moved[moved["date"] > t]))
    # and as_of=t gives the same rows without any later data
    cut = build_features(trips, veh, se, dtc, as_of=t)
    assert cut["date"].max() == t
    pd.testing.assert_frame_equal(_features_only(cut), a)


def test_labels_follow_need_events():
    trips, veh, se, dtc = hand_fleet(seed=2)
    f = build_features(trips, veh, se, dtc)
    need = se[se["action"].isin(["replace", "repair"]) & (se["component"] == "brake")]
    need = need.assign(date=pd.to_datetime(need["date"]))
    for _, row in f.sample(300, random_state=0).iterrows():
        d = row["date"]
        e = need[(need["vehicle_id"] == row["vehicle_id"]) & (need["date"] > d)]["date"]
        dtn = (e.min() - d).days if len(e) else np.nan
        assert row["label_brake"] == int(len(e) > 0 and 1 <= dtn <= HORIZON_DAYS)
        assert (np.isnan(dtn) and np.isnan(row["days_to_need_brake"])) or row["days_to_need_brake"] == dtn


def test_since_service_resets_and_counts():
    trips, veh, se, dtc = hand_fleet(seed=3)
    v = veh.vehicle_id[2]
    day = pd.Timestamp("2025-02-10")
    extra = schemas.conform(pd.DataFrame({"event_id": ["R"], "vehicle_id": [v], "date": [day.date()], "odometer_km": [np.nan],
                                          "component": ["brake"], "action": ["replace"], "source": "workshop"}), "service_events")
    se2 = pd.concat([se[~((se["vehicle_id"] == v) & (se["component"] == "brake"))], extra], ignore_index=True)
    f = build_features(trips, veh, se2, dtc)
    r = f[f["vehicle_id"] == v].set_index("date")
    assert r.loc[day, "days_since_brake_service"] == 0
    assert r.loc[day + pd.Timedelta(days=10), "days_since_brake_service"] == 10
    tr = trips[(trips["vehicle_id"] == v)]
    end = pd.to_datetime(tr["end_ts"]).dt.tz_convert(None)
    km = tr.loc[(end >= day + pd.Timedelta(days=1)) & (end < day + pd.Timedelta(days=11)), "distance_km"].sum()
    assert r.loc[day + pd.Timedelta(days=10), "km_since_brake_service"] == pytest.approx(km, rel=1e-4)
    assert r.loc[day - pd.Timedelta(days=1), "label_brake"] == 1


def test_split_no_vehicle_and_no_day_overlap():
    trips, veh, se, dtc = hand_fleet(n=40, days=200, seed=4)
    f = build_features(trips, veh, se, dtc)
    s = time_vehicle_split(f, seed=0)
    tr = f[s.train]
    ev = f[s.early_stop | s.calib | s.test]
    assert len(tr) and len(ev) and s.test.any() and s.calib.any() and s.early_stop.any()
    assert not set(tr["vehicle_id"]) & set(ev["vehicle_id"])
    # no day shared, including the 15 days a training label looks ahead
    assert tr["date"].max() + pd.Timedelta(days=HORIZON_DAYS) < ev["date"].min()
    # the test period is after the calibration/early-stopping period
    assert f[s.test]["date"].min() > f[s.early_stop | s.calib]["date"].max() + pd.Timedelta(days=HORIZON_DAYS - 1)
    assert not set(f[s.early_stop]["vehicle_id"]) & set(f[s.calib]["vehicle_id"])
    # only rows with complete labels
    assert f.loc[s.train | s.test, "label_complete"].all()
    # stable: the same seed gives the same split
    s2 = time_vehicle_split(f.sample(frac=1.0, random_state=1).sort_index(), seed=0)
    assert (s2.train == s.train).all() and (s2.test == s.test).all()
