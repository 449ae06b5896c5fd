"""Features: point-in-time correctness (leakage), labels, the time-and-vehicle split, the recorded table."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from autopdm import components, schemas
from autopdm.modeling.split import time_vehicle_split
from autopdm.pipeline import part_state
from autopdm.pipeline.features import HORIZON_DAYS, build_features, feature_columns
from autopdm.sim.fleet import simulate_fleet

LABEL_COLUMNS = ([c.label for c in components.all_components()] + [c.days_to_need for c in components.all_components()]
                 + ["label_complete"])


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


def hand_inspections(trips: pd.DataFrame, veh: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Workshop readings of the hand fleet every ~5 weeks: pads per axle and tread per tire worn down with
    each car's km, battery printouts fading with time; gauge noise, and some positions left unread."""
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp("2025-01-01")
    end = pd.to_datetime(trips["end_ts"]).dt.tz_convert(None)
    km = trips.assign(d=(end - t0).dt.days).groupby(["vehicle_id", "d"])["distance_km"].sum()
    rows = []
    for v in veh["vehicle_id"]:
        daily = km.get(v, pd.Series(dtype=float)).reindex(range(160), fill_value=0.0).cumsum().to_numpy()
        pad0, tread0, soh0 = rng.uniform(6, 11, 2), rng.uniform(4.5, 8, 4), rng.uniform(75, 100)
        pad_rate, tread_rate = rng.uniform(1e-4, 3e-4) * np.array([1.0, 0.7]), rng.uniform(4e-5, 9e-5)
        for d in range(int(rng.integers(2, 12)), 150, 33):
            day = (t0 + pd.Timedelta(days=d + int(rng.integers(0, 3)))).date()
            k = daily[min((day - t0.date()).days, 159)]
            for pos, x in zip(("front", "rear"), pad0 - pad_rate * k):
                if rng.random() < 0.95:
                    rows.append((v, day, k, "brake", pos, "pad_mm", round(max(x + rng.normal(0, 0.3), 0) * 2) / 2))
            for pos, x in zip(("fl", "fr", "rl", "rr"), tread0 - tread_rate * k):
                rows.append((v, day, k, "tire", pos, "tread_mm", round(max(x + rng.normal(0, 0.2), 0), 1)))
            soh = soh0 - 0.05 * (day - t0.date()).days + rng.normal(0, 3)
            rows += [(v, day, k, "battery", "-", "battery_soh_pct", round(soh)),
                     (v, day, k, "battery", "-", "battery_cca_pct", round(105 - 0.78 * (100 - soh))),
                     (v, day, k, "battery", "-", "battery_rest_v", round(12.5 + rng.normal(0, 0.05), 2))]
    df = pd.DataFrame(rows, columns=["vehicle_id", "date", "odometer_km", "component", "position", "measurement", "value"])
    df["inspection_id"] = [f"I{i:06d}" for i in range(len(df))]
    return schemas.conform(df.assign(source="workshop"), "inspections")


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




def test_dates_before_the_first_trip_give_an_empty_table():
    trips, veh, se, dtc = hand_fleet(n=3, days=30)
    first = pd.to_datetime(trips["end_ts"]).dt.tz_convert(None).min().normalize()
    f = build_features(trips, veh, se, dtc, dates=[first - pd.Timedelta(days=1)])
    assert f.empty and list(f.columns) == ["vehicle_id", "date"]
    assert len(build_features(trips, veh, se, dtc, dates=[first])) > 0
def test_leakage_data_after_t_does_not_move_features_at_t():
    trips, veh, se, dtc = hand_fleet(seed=1)
    insp = hand_inspections(trips, veh, seed=1)
    t = pd.Timestamp("2025-03-15")
    base = build_features(trips, veh, se, dtc, inspections=insp)
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
    # the workshop's readings after t: other values, some dropped, a worn part found and replaced
    later = pd.to_datetime(insp["date"]) > t
    insp2 = insp.copy()
    insp2.loc[later, "value"] = insp2.loc[later, "value"] * 0.5
    insp2 = insp2[~(later & (np.arange(len(insp2)) % 3 == 0))]
    worn = pd.DataFrame({"inspection_id": ["X3", "X4"], "vehicle_id": veh.vehicle_id[0], "date": (t + pd.Timedelta(days=1)).date(),
                         "odometer_km": np.nan, "component": "brake", "position": ["front", "rear"],
                         "measurement": "pad_mm", "value": [2.0, 5.0], "verdict": ["replace", "ok"], "source": "workshop"})
    insp2 = pd.concat([insp2, schemas.conform(worn, "inspections")], ignore_index=True)
    moved = build_features(tr2, veh, se2, dtc2, inspections=insp2)

    a = _features_only(base[base["date"] <= t])
    b = _features_only(moved[moved["date"] <= t])
    pd.testing.assert_frame_equal(a, b)
    # ...while later rows did change (the test has teeth), the part-state columns too
    assert not _features_only(base[base["date"] > t]).equals(_features_only(moved[moved["date"] > t]))
    state = [c for comp in components.all_components() for c in part_state.column_names(comp)]
    assert len(state) == 46 and all(a[c].notna().any() for c in state), [c for c in state if a[c].isna().all()]
    late_b, late_m = base[base["date"] > t], moved[moved["date"] > t]
    for c in ("brake_state_est", "brake_wear_rate", "tire_state_est", "battery_state_est", "pad_mm_front_last"):
        assert not np.allclose(late_b[c].fillna(-1), late_m[c].fillna(-1)), c
    # and as_of=t gives the same rows without any later data
    cut = build_features(trips, veh, se, dtc, as_of=t, inspections=insp)
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


# a fourth component for tests only (registered only inside a test): engine coolant, worn by distance and starts
COOLANT = components.Component(
    name="coolant", part="engine coolant", limit=components.Limit("coolant_freeze_c", need=-15.0, advise=-20.0, unit="C"),
    measurements=("coolant_freeze_c",), positions=("-",), action="Coolant test: freeze point; replace above -15 C",
    wear={"km": "distance_km", "starts": "one"}, wear_since_pass=("one", "starts"),
    baseline_description="coolant every 60,000 km", baseline_score=components.km_since_service_score("coolant"),
    baseline_rule=components.beyond_km_rule("coolant", 60_000.0))


def _trips_ending(trips: pd.DataFrame, v: str, after: pd.Timestamp, through: pd.Timestamp) -> pd.DataFrame:
    """Trips of v ending after day `after` and on or before day `through` (days as the features count them)."""
    tr = trips[trips["vehicle_id"] == v]
    end = pd.to_datetime(tr["end_ts"]).dt.tz_convert(None)
    return tr[(end >= after + pd.Timedelta(days=1)) & (end < through + pd.Timedelta(days=1))]


def test_a_fourth_component_gets_its_columns_from_the_registry():
    """A component registered here (no pipeline module knows it) gets since-service, inspection and label columns."""
    trips, veh, se, dtc = hand_fleet(seed=5)
    v = veh.vehicle_id[3]
    se = se[se["vehicle_id"] != v]  # no other visit of v on the coolant's days (a routine service closes nothing)
    fitted, looked, replaced = pd.Timestamp("2025-02-01"), pd.Timestamp("2025-03-10"), pd.Timestamp("2025-04-01")
    base = build_features(trips, veh, se, dtc)
    with components.registered(COOLANT):
        ev = schemas.conform(pd.DataFrame({
            "event_id": ["K1", "K2", "K3"], "vehicle_id": v, "date": [d.date() for d in (fitted, looked, replaced)],
            "odometer_km": np.nan, "component": "coolant", "action": ["replace", "inspect", "replace"],
            "source": "workshop"}), "service_events")
        f = build_features(trips, veh, pd.concat([se, ev], ignore_index=True), dtc)
    mine = [c for c in f.columns if "coolant" in c]
    assert mine == ["days_since_coolant_service", "coolant_serviced_on_record", "km_since_coolant_service",
                    "km_observed_since_coolant_service", "starts_observed_since_coolant_service",
                    "starts_since_coolant_service", "days_since_last_coolant_inspect", "km_since_last_coolant_inspect",
                    "days_since_open_coolant_inspect", "starts_since_coolant_inspect_pass", "label_coolant",
                    "days_to_need_coolant"]
    assert list(f.columns[-3:]) == ["label_coolant", "days_to_need_coolant", "label_complete"]
    r = f[f["vehicle_id"] == v].set_index("date")
    day = fitted + pd.Timedelta(days=10)
    driven = _trips_ending(trips, v, fitted, day)
    assert len(driven) > 5
    assert r.loc[day, "days_since_coolant_service"] == 10 and r.loc[day, "coolant_serviced_on_record"] == 1
    assert r.loc[day, "km_since_coolant_service"] == pytest.approx(driven["distance_km"].sum(), rel=1e-4)
    assert r.loc[day, "starts_since_coolant_service"] == len(driven)
    # the inspection (off-schedule, passed) stays open until the next replace; starts counted from it
    day = looked + pd.Timedelta(days=6)
    assert r.loc[day, "days_since_open_coolant_inspect"] == 6 and r.loc[day, "days_since_last_coolant_inspect"] == 6
    assert r.loc[day, "starts_since_coolant_inspect_pass"] == len(_trips_ending(trips, v, looked, day))
    assert r.loc[looked - pd.Timedelta(days=1), ["days_since_open_coolant_inspect", "starts_since_coolant_inspect_pass"]].isna().all()
    after = r.loc[replaced + pd.Timedelta(days=1)]
    assert np.isnan(after["days_since_open_coolant_inspect"]) and np.isnan(after["starts_since_coolant_inspect_pass"])
    assert after["days_since_coolant_service"] == 1
    # labels: the replace is a need, seen 1..HORIZON_DAYS days ahead
    assert r.loc[replaced - pd.Timedelta(days=1), "label_coolant"] == 1
    assert r.loc[replaced - pd.Timedelta(days=HORIZON_DAYS), "label_coolant"] == 1
    assert r.loc[replaced - pd.Timedelta(days=HORIZON_DAYS + 1), "label_coolant"] == 0
    assert r.loc[replaced - pd.Timedelta(days=3), "days_to_need_coolant"] == 3
    assert r.loc[replaced, "label_coolant"] == 0 and r["label_coolant"].sum() == 2 * HORIZON_DAYS  # both replaces
    others = f[f["vehicle_id"] != v]
    assert (others["label_coolant"] == 0).all() and (others["coolant_serviced_on_record"] == 0).all()
    # the other components' columns do not move (visits of any kind do: the coolant visits are visits)
    same = [c for c in base.columns if c not in ("days_since_last_visit", "km_since_last_visit")]
    pd.testing.assert_frame_equal(f[same], base[same])


def test_unknown_family_or_use_quantity_is_a_clear_error():
    trips, veh, se, dtc = hand_fleet(n=3, days=30)
    bad = {"unknown feature family 'coolant_boil'": {"families": ("coolant_boil",)},
           "feature family 'tire_heat' needs wear": {"families": ("tire_heat",)},  # it reads hot_km, which coolant lacks
           "wear 'boils' names unknown use quantity 'boil'": {"wear": {"km": "distance_km", "boils": "boil"}}}
    for message, change in bad.items():
        with components.registered(dataclasses.replace(COOLANT, **change)):
            with pytest.raises(ValueError, match=f"component 'coolant': {message}"):
                build_features(trips, veh, se, dtc)


# --------------------------------------------------------------------------------------------
# Fingerprints of the features table. They pin build_features' output exactly (values, dtypes,
# column order) on fixed inputs, so that a refactoring cannot change the table unnoticed. Update
# them deliberately, and only when a feature changes on purpose (say so in the commit message);
# `_fingerprint` below prints what to paste. The input hash tells a changed table from changed
# inputs (simulate_fleet or hand_fleet): if the inputs moved, check the table on the old inputs first.
# Last update: the part-state family (46 columns) and labels from the needs of the records; the sim cases
# now pass the fleet's inspections (and its records gained the no-start repairs). The 165 earlier columns
# were checked bit-identical on the earlier inputs (sim records without the no-start repairs, no readings).

# every column in order, with its dtype where it is not float32
_COLUMN_SPEC = """
vehicle_id:object date:datetime64[ns] trips_7d distance_km_7d drive_hours_7d idle_share_7d short_trip_share_7d
mean_speed_kph_7d brake_energy_kj_per_t_7d brake_energy_per_km_7d harsh_brake_per_100km_7d harsh_accel_per_100km_7d
rest_voltage_v_7d crank_min_voltage_v_mean_7d crank_margin_v_7d charge_voltage_v_7d ambient_temp_c_7d
cold_start_share_7d tire_pressure_min_kpa_7d crank_margin_cold_v_7d rest_voltage_overnight_v_7d telemetry_days_7d
trips_30d distance_km_30d drive_hours_30d idle_share_30d short_trip_share_30d mean_speed_kph_30d
brake_energy_kj_per_t_30d brake_energy_per_km_30d harsh_brake_per_100km_30d harsh_accel_per_100km_30d
rest_voltage_v_30d crank_min_voltage_v_mean_30d crank_margin_v_30d charge_voltage_v_30d ambient_temp_c_30d
cold_start_share_30d tire_pressure_min_kpa_30d crank_margin_cold_v_30d rest_voltage_overnight_v_30d
telemetry_days_30d trips_90d distance_km_90d drive_hours_90d idle_share_90d short_trip_share_90d mean_speed_kph_90d
brake_energy_kj_per_t_90d brake_energy_per_km_90d harsh_brake_per_100km_90d harsh_accel_per_100km_90d
rest_voltage_v_90d crank_min_voltage_v_mean_90d crank_margin_v_90d charge_voltage_v_90d ambient_temp_c_90d
cold_start_share_90d tire_pressure_min_kpa_90d crank_margin_cold_v_90d rest_voltage_overnight_v_90d
telemetry_days_90d rest_voltage_v_min_7d rest_voltage_v_min_30d crank_min_voltage_v_7d crank_min_voltage_v_30d
crank_margin_v_min_7d crank_margin_v_min_30d ambient_temp_c_min_7d ambient_temp_c_min_30d
tire_pressure_min_kpa_min_7d tire_pressure_min_kpa_min_30d max_decel_mps2_max_7d max_decel_mps2_max_30d
crank_margin_cold_v_min_7d crank_margin_cold_v_min_30d rest_voltage_overnight_v_min_7d
rest_voltage_overnight_v_min_30d rest_voltage_v_slope_30d rest_voltage_v_slope_90d crank_min_voltage_v_slope_30d
crank_min_voltage_v_slope_90d charge_voltage_v_slope_30d charge_voltage_v_slope_90d tire_pressure_min_kpa_slope_30d
tire_pressure_min_kpa_slope_90d crank_margin_cold_v_slope_30d crank_margin_cold_v_slope_90d
rest_voltage_overnight_v_slope_30d rest_voltage_overnight_v_slope_90d rest_voltage_v_delta_7_90
crank_margin_v_delta_7_90 tire_pressure_min_kpa_delta_7_90 charge_voltage_v_delta_7_90
crank_margin_cold_v_delta_7_90 rest_voltage_overnight_v_delta_7_90 crank_margin_days_to_zero days_since_last_trip
telemetry_days_total odometer_km vehicle_age_days segment_code model_year curb_mass_kg days_since_brake_service
brake_serviced_on_record km_since_brake_service km_observed_since_brake_service
brake_energy_kj_per_t_observed_since_brake_service brake_energy_kj_per_t_since_brake_service
brake_work_mj_observed_since_brake_service brake_work_mj_since_brake_service
harsh_brakes_observed_since_brake_service harsh_brakes_since_brake_service days_since_tire_service
tire_serviced_on_record km_since_tire_service km_observed_since_tire_service harsh_events_since_tire_service
hot_km_observed_since_tire_service hot_km_since_tire_service hot_share_since_tire_service
days_since_battery_service battery_serviced_on_record km_since_battery_service km_observed_since_battery_service
starts_observed_since_battery_service starts_since_battery_service cold_starts_observed_since_battery_service
cold_starts_since_battery_service days_since_last_visit km_since_last_visit days_since_last_brake_inspect
km_since_last_brake_inspect days_since_last_tire_inspect km_since_last_tire_inspect days_since_last_battery_inspect
km_since_last_battery_inspect days_since_routine_service km_since_routine_service days_since_open_brake_inspect
brake_energy_kj_per_t_since_brake_inspect_pass pad_mm_front_last pad_mm_front_age_days pad_mm_rear_last
pad_mm_rear_age_days km_since_brake_reading brake_energy_kj_per_t_since_brake_reading
brake_work_mj_since_brake_reading harsh_brakes_since_brake_reading brake_state_est brake_state_sd brake_wear_rate
brake_days_to_limit brake_days_to_limit_p10 brake_p_limit_15d days_since_open_tire_inspect
km_since_tire_inspect_pass tread_mm_fl_last tread_mm_fl_age_days tread_mm_fr_last tread_mm_fr_age_days
tread_mm_rl_last tread_mm_rl_age_days tread_mm_rr_last tread_mm_rr_age_days km_since_tire_reading
harsh_events_since_tire_reading hot_km_since_tire_reading tire_state_est tire_state_sd tire_wear_rate
tire_days_to_limit tire_days_to_limit_p10 tire_p_limit_15d days_since_open_battery_inspect
starts_since_battery_inspect_pass crank_margin_cold_v_drop_from_best rest_voltage_overnight_v_drop_from_best
crank_margin_cold_v_slope_60d rest_voltage_overnight_v_slope_60d crank_margin_days_to_zero_60d battery_soh_pct_last
battery_soh_pct_age_days battery_cca_pct_last battery_cca_pct_age_days battery_rest_v_last battery_rest_v_age_days
km_since_battery_reading starts_since_battery_reading cold_starts_since_battery_reading battery_state_est
battery_state_sd battery_wear_rate battery_days_to_limit battery_days_to_limit_p10 battery_p_limit_15d
days_to_registration_anniversary dtc_count_7d dtc_count_30d dtc_count_90d dtc_battery_30d dtc_chassis_30d
segment:string label_brake:int8 days_to_need_brake:float64 label_tire:int8 days_to_need_tire:float64
label_battery:int8 days_to_need_battery:float64 label_complete:bool
"""
DTYPES = {c.split(":")[0]: (c.split(":") + ["float32"])[1] for c in _COLUMN_SPEC.split()}
COLUMNS = list(DTYPES)
# (input hash, rows, columns, table hash); the table hash is kept for reference only: float results differ in
# their last bits between CPUs (numpy picks SIMD kernels per machine), so the table is compared by its
# per-column checksums in data/features_checksums.json, floats within a relative 1e-6 (`_checksums`)
FINGERPRINTS = {
    "sim40x400s0": (7552365563293800919, 15498, 211, 297071847873223011),
    "sim20x300s2cold": (11394075150620905603, 5710, 211, 14684294687265771710),
    "sim40x400s0_asof": (7552365563293800919, 10418, 211, 10092596207796222254),
    "sim40x400s0_dates": (7552365563293800919, 159, 211, 350377308378103216),
    "hand_inspections": (13637001229040883195, 1761, 211, 9853452832223837078),
    "hand_nodtc": (15759976687971660389, 1761, 211, 14721012470823548657),
    "hand_se_none": (3140787710151220016, 1761, 211, 5870754297299863860),
    "hand_noreg": (9003103576663955113, 24, 210, 7523932269246140854),
    "hand_s1_asof": (7200103413872318220, 1254, 211, 73866183753170587),
}


@pytest.fixture(scope="module")
def sim_fleets():
    return {"s0": simulate_fleet(40, 400, seed=0), "s2cold": simulate_fleet(20, 300, seed=2, climate="cold")}


def _fingerprint_case(name: str, sim_fleets) -> tuple[tuple, dict]:
    """The inputs of one fingerprint case: (trips, vehicles, service_events, dtc_events), build_features kwargs."""
    if name.startswith("sim"):
        f = sim_fleets["s2cold" if "cold" in name else "s0"]
        args = (f.trips, f.vehicles, f.service_events, f.dtc_events)
        kw = {"sim40x400s0_asof": {"as_of": "2025-09-30"},
              "sim40x400s0_dates": {"dates": ["2025-03-01", "2025-07-15", "2025-12-31", "2026-01-20"]}}.get(name, {})
        return args, {**kw, "inspections": f.inspections}
    trips, veh, se, dtc = hand_fleet(seed=1 if name == "hand_s1_asof" else 0)
    return {
        "hand_inspections": ((trips, veh, se, dtc), {"inspections": hand_inspections(trips, veh)}),
        "hand_nodtc": ((trips, veh, se, None), {}),
        "hand_se_none": ((trips, veh, None, dtc), {}),
        "hand_noreg": ((trips, veh.drop(columns=["first_registration_date", "segment"]), se, dtc),
                       {"dates": ["2025-02-01", "2025-04-01"]}),
        "hand_s1_asof": ((trips, veh, se, dtc), {"as_of": "2025-04-20"}),
    }[name]


def _hash(df: pd.DataFrame) -> int:
    return int(pd.util.hash_pandas_object(df, index=False).sum())


def _fingerprint(args, kw) -> tuple[tuple, pd.DataFrame]:
    f = build_features(*args, **kw)
    inputs = sum(_hash(d) for d in (*args, kw.get("inspections")) if d is not None) % (1 << 64)
    fp = (inputs, *f.shape, _hash(f))
    print(fp)  # what to paste into FINGERPRINTS after a deliberate change
    return fp, f


CHECKSUMS = Path(__file__).parent / "data" / "features_checksums.json"


def _checksums(f: pd.DataFrame) -> dict[str, list]:
    """Per column: the non-null count; for floats the sum, the sum of |x| and a sum weighted by row position
    (a moved or changed value shows); other columns hashed exactly."""
    w = np.arange(1, len(f) + 1, dtype="float64") / max(len(f), 1)
    out = {}
    for c in f.columns:
        s = f[c]
        if pd.api.types.is_float_dtype(s):
            x = s.to_numpy(dtype="float64", na_value=np.nan)
            m = np.isfinite(x)
            out[c] = [int(m.sum()), float(x[m].sum()), float(np.abs(x[m]).sum()), float((x[m] * w[m]).sum())]
        else:
            out[c] = [int(s.notna().sum()), int(pd.util.hash_pandas_object(s, index=False).sum()) % (1 << 63)]
    return out


def _differences(got: dict, want: dict) -> list[str]:
    bad = [c for c in want if c not in got] + [c for c in got if c not in want]
    for c in set(got) & set(want):
        g, w = got[c], want[c]
        if len(g) == 2 or len(w) == 2 or g[0] != w[0]:
            if g != w:
                bad.append(c)
            continue
        tol = 1e-6 * max(w[2], 1e-9)
        if abs(g[1] - w[1]) > tol or abs(g[2] - w[2]) > tol or abs(g[3] - w[3]) > tol:
            bad.append(c)
    return sorted(bad)


@pytest.mark.parametrize("name", list(FINGERPRINTS))
def test_features_table_is_unchanged(name, sim_fleets):
    fp, f = _fingerprint(*_fingerprint_case(name, sim_fleets))
    expected = FINGERPRINTS[name]
    assert fp[0] == expected[0], "the inputs changed (simulate_fleet or hand_fleet), not necessarily build_features"
    # without registration dates there is no anniversary column
    want = [c for c in COLUMNS if not (name == "hand_noreg" and c == "days_to_registration_anniversary")]
    assert list(f.columns) == want
    assert {c: str(t) for c, t in f.dtypes.items()} == {c: DTYPES[c] for c in want}
    assert fp[1:3] == expected[1:3]
    if os.environ.get("UPDATE_FEATURE_CHECKSUMS"):  # after a deliberate change: rewrite, then review the diff
        saved = json.loads(CHECKSUMS.read_text()) if CHECKSUMS.exists() else {}
        CHECKSUMS.parent.mkdir(exist_ok=True)
        CHECKSUMS.write_text(json.dumps({**saved, name: _checksums(f)}, indent=0, sort_keys=True))
    want = json.loads(CHECKSUMS.read_text())[name]
    assert _differences(_checksums(f), want) == []
