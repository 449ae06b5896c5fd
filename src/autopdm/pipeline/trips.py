"""Cut samples into trips (engine on → off) and summarise each trip once.

Everything downstream (features, the simulator) reads trip summaries, so this is the single
place where raw 1 Hz telemetry turns into physics: distance, braking energy, harsh events and
the three battery voltages (rest before crank, crank minimum, charge while running).

Vectorised over all vehicles at once: no Python loop per trip.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from autopdm import schemas

ENGINE_ON_RPM = 300.0
OFF_SPLIT_S = 30.0        # engine off at least this long ends a trip (stop-start pauses are shorter)
GAP_SPLIT_S = 120.0       # no readings at all for this long ends a trip (dongle out, ignition off)
ACCEL_MAX_DT_S = 5.0      # accelerations only from readings this close together
PRE_START_S = 120.0       # engine-off readings this close before a start describe the resting battery
CRANK_WINDOW_S = 5.0      # the crank dip shows up to this far either side of the first rpm reading:
                          # loggers hold the last voltage value, so at 1 Hz the dip can lead rpm by 1–2 s
CHARGE_SETTLE_S = 10.0    # charging voltage is read after the alternator has settled
HARSH_BRAKE = -3.0        # m/s²
HARSH_ACCEL = 2.5         # m/s²
TIRES = ["tire_pressure_kpa_fl", "tire_pressure_kpa_fr", "tire_pressure_kpa_rl", "tire_pressure_kpa_rr"]


def engine_on(s: pd.DataFrame) -> np.ndarray:
    """RPM where reported; where not (CAN-only sources), a charging voltage or motion."""
    rpm = s["rpm"].to_numpy(dtype=float)
    volt = s["control_module_voltage_v"].to_numpy(dtype=float)
    speed = s["speed_kph"].to_numpy(dtype=float)
    fallback = np.where(np.isnan(volt), np.nan_to_num(speed) > 0, volt > 13.0) | (np.nan_to_num(speed) > 0)
    return np.where(np.isnan(rpm), fallback, rpm > ENGINE_ON_RPM)


def _trip_ids(s: pd.DataFrame, on: np.ndarray) -> np.ndarray:
    """Trip number per sample (−1 for engine-off samples), unique across vehicles."""
    vin = s["vehicle_id"].to_numpy()
    t = s["ts"].to_numpy("datetime64[ms]").astype("int64") / 1000.0
    off_cum = np.cumsum(~on)
    idx = np.flatnonzero(on)
    new = np.ones(len(idx), dtype=bool)
    if len(idx) > 1:
        dt = np.diff(t[idx])
        off_between = np.diff(off_cum[idx]) > 0
        same = vin[idx[1:]] == vin[idx[:-1]]
        new[1:] = ~same | (dt > GAP_SPLIT_S) | (off_between & (dt > OFF_SPLIT_S))
    trip = np.full(len(s), -1, dtype=np.int64)
    trip[idx] = np.cumsum(new) - 1
    return trip


def summarise(samples: pd.DataFrame, min_duration_s: float = 10.0) -> pd.DataFrame:
    """Trips table (schemas.TRIPS) from canonical samples of any number of vehicles."""
    if samples.empty:
        return schemas.empty("trips")
    s = schemas.conform(samples, "samples").sort_values(["vehicle_id", "ts"], kind="stable").reset_index(drop=True)
    on = engine_on(s)
    s["trip"] = _trip_ids(s, on)
    s["t"] = s["ts"].to_numpy("datetime64[ms]").astype("int64") / 1000.0
    r = s[s["trip"] >= 0].copy()
    if r.empty:
        return schemas.empty("trips")

    # kinematics between consecutive readings of the same trip
    v = r["speed_kph"].to_numpy(dtype=float) / 3.6
    t = r["t"].to_numpy()
    trip = r["trip"].to_numpy()
    same = np.r_[False, trip[1:] == trip[:-1]]
    dt = np.where(same, np.r_[0.0, np.diff(t)], 0.0)
    v_prev = np.r_[np.nan, v[:-1]]
    pair_ok = same & ~np.isnan(v) & ~np.isnan(v_prev)
    r["dist_m"] = np.where(pair_ok, 0.5 * (v + v_prev) * dt, 0.0)
    # ½(v1² − v2²) in J/kg is numerically kJ per tonne
    r["brake_kj_t"] = np.where(pair_ok & (v < v_prev), 0.5 * (v_prev**2 - v**2), 0.0)
    acc = np.where(pair_ok & (dt > 0) & (dt <= ACCEL_MAX_DT_S), (v - np.nan_to_num(v_prev)) / np.where(dt > 0, dt, 1), np.nan)
    harsh_b = acc < HARSH_BRAKE
    harsh_a = acc > HARSH_ACCEL
    # count events, not samples: a harsh stop spanning 3 readings is one harsh brake
    r["hb"] = harsh_b & ~np.r_[False, harsh_b[:-1] & same[1:]]
    r["ha"] = harsh_a & ~np.r_[False, harsh_a[:-1] & same[1:]]
    r["decel"] = np.where(np.isnan(acc), np.nan, -acc)
    speed_prev = np.r_[np.nan, r["speed_kph"].to_numpy(dtype=float)[:-1]]
    r["idle"] = np.where(same & (speed_prev < 1.0), dt, 0.0)
    r["stop"] = same & (r["speed_kph"].to_numpy() < 1.0) & (speed_prev >= 1.0)
    r["tire_min"] = r[TIRES].min(axis=1)

    g = r.groupby("trip", sort=True)
    out = g.agg(
        vehicle_id=("vehicle_id", "first"),
        start_t=("t", "first"),
        end_t=("t", "last"),
        distance_m=("dist_m", "sum"),
        idle_s=("idle", "sum"),
        brake_energy_kj_per_t=("brake_kj_t", "sum"),
        harsh_brake_count=("hb", "sum"),
        harsh_accel_count=("ha", "sum"),
        max_decel_mps2=("decel", "max"),
        max_speed_kph=("speed_kph", "max"),
        stop_count=("stop", "sum"),
        ambient_temp_c=("ambient_air_temp_c", "median"),
        intake_first=("intake_air_temp_c", "first"),
        odometer_end_km=("odometer_km", "last"),
        start_coolant_temp_c=("coolant_temp_c", "first"),
        tire_pressure_min_kpa=("tire_min", "min"),
        n_samples=("t", "size"),
        source=("source", "first"),
    )
    out["duration_s"] = out["end_t"] - out["start_t"]
    out["distance_km"] = out["distance_m"] / 1000.0
    out["mean_speed_kph"] = np.where(out["duration_s"] > 0, out["distance_km"] / out["duration_s"].clip(lower=1e-9) * 3600.0, 0.0)
    # carOBD-style logs have no ambient sensor: intake air at engine start is the nearest proxy
    out["ambient_temp_c"] = out["ambient_temp_c"].fillna(out["intake_first"])
    out["max_decel_mps2"] = out["max_decel_mps2"].clip(lower=0.0) + 0.0  # + 0.0 turns −0.0 into 0.0

    # charge voltage: median while running, after the crank has settled
    start_of = out["start_t"].reindex(r["trip"]).to_numpy()
    settled = r["t"].to_numpy() >= start_of + CHARGE_SETTLE_S
    out["charge_voltage_v"] = r.loc[settled].groupby("trip")["control_module_voltage_v"].median()

    out = out.join(_battery_at_start(s, out))
    out = out[out["duration_s"] >= min_duration_s].copy()
    out["start_ts"] = pd.to_datetime(out["start_t"] * 1000, unit="ms", utc=True)
    out["end_ts"] = pd.to_datetime(out["end_t"] * 1000, unit="ms", utc=True)
    out["trip_id"] = out["vehicle_id"] + "-" + out["start_ts"].dt.strftime("%Y%m%dT%H%M%SZ")
    return schemas.conform(out.reset_index(drop=True), "trips")


def _battery_at_start(s: pd.DataFrame, trips: pd.DataFrame) -> pd.DataFrame:
    """Rest voltage before the crank and the crank minimum, per trip.

    Only where the log saw the engine off before this start: a log that begins with the
    engine already running has no crank to measure (null, not a guess).
    """
    volt = s["control_module_voltage_v"].to_numpy(dtype=float)
    has_v = ~np.isnan(volt)
    starts = trips[["vehicle_id", "start_t"]].reset_index()  # columns: trip, vehicle_id, start_t
    res = pd.DataFrame(index=trips.index, columns=["rest_voltage_v", "crank_min_voltage_v"], dtype=float)
    off = s[(s["trip"] < 0) & has_v][["vehicle_id", "t", "control_module_voltage_v"]]
    if off.empty:
        return res
    # each engine-off reading belongs to the next start of its vehicle, if that is close enough
    off = off.sort_values("t")
    m = pd.merge_asof(off, starts.sort_values("start_t"), left_on="t", right_on="start_t", by="vehicle_id", direction="forward")
    m = m[m["trip"].notna() & (m["start_t"] - m["t"] <= PRE_START_S)]
    if m.empty:
        return res
    m["trip"] = m["trip"].astype(np.int64)
    pre = m.groupby("trip")["control_module_voltage_v"]
    top = pre.transform("max")
    # the resting level is the plateau before the dip, not the dip itself
    rest = m[m["control_module_voltage_v"] >= top - 0.15].groupby("trip")["control_module_voltage_v"].median()
    near_pre = m[m["start_t"] - m["t"] <= CRANK_WINDOW_S].groupby("trip")["control_module_voltage_v"].min()
    # readings just after the first rpm (still inside the crank window)
    runs = s[(s["trip"] >= 0) & has_v].copy()
    runs["start_t"] = trips["start_t"].reindex(runs["trip"]).to_numpy()
    near_post = runs[runs["t"] - runs["start_t"] <= CRANK_WINDOW_S].groupby("trip")["control_module_voltage_v"].min()
    seen = rest.index
    res.loc[seen, "rest_voltage_v"] = rest
    crank = pd.concat([near_pre, near_post.reindex(seen)], axis=1).min(axis=1).reindex(seen)
    res.loc[seen, "crank_min_voltage_v"] = crank
    return res
