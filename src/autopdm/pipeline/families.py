"""Feature families that hold for every vehicle, whatever its components.

A family is a function `(ctx, F) -> columns`: it reads the shared `Context` and the columns the
families before it made (`F`), and returns its own new columns as vehicles × days arrays, in table
order. Families per component (since the last service, inspections, and the extras a component
names) are in `autopdm.pipeline.component_families`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from autopdm import components
from autopdm.pipeline.daily import Context
from autopdm.pipeline.grid import NO, cum, day_number, div, ffill_index, roll, roll_ext, since, slope

Features = dict[str, np.ndarray]
Family = Callable[[Context, Mapping[str, np.ndarray]], Features]

WINDOWS = (7, 30, 90)
MIN_WINDOWS = (7, 30)
BATTERY_DTC = ("P0560", "P0561", "P0562", "P0563", "P0620", "P0621", "P0622", "P0A94")
# fixed vocabulary → dense, stable integer codes (LightGBM categoricals want small consecutive ints)
SEGMENT_CODES = ("mini", "small", "compact", "midsize", "large", "suv", "van", "pickup", "mpv", "wagon", "sports", "luxury")

# daily readings → the name of their window mean (`<name>_<w>d`)
MEAN_READINGS = (("rest_v", "rest_voltage_v"), ("crank_v", "crank_min_voltage_v_mean"), ("crank_margin", "crank_margin_v"),
                 ("charge_v", "charge_voltage_v"), ("ambient", "ambient_temp_c"), ("cold_start", "cold_start_share"),
                 ("tire_kpa", "tire_pressure_min_kpa"), ("crank_margin_cold", "crank_margin_cold_v"),
                 ("rest_v_overnight", "rest_voltage_overnight_v"))
# per-trip values → (name, how) of their daily and window extreme (`<name>_<w>d`)
EXTREMES = {"rest_v": ("rest_voltage_v_min", "min"), "crank_v": ("crank_min_voltage_v", "min"),
            "crank_margin": ("crank_margin_v_min", "min"), "ambient": ("ambient_temp_c_min", "min"),
            "tire_kpa": ("tire_pressure_min_kpa_min", "min"), "max_decel": ("max_decel_mps2_max", "max"),
            "crank_margin_cold": ("crank_margin_cold_v_min", "min"),
            "rest_v_overnight": ("rest_voltage_overnight_v_min", "min")}
# daily readings → the name of their slopes (`<name>_slope_<w>d`)
TREND_READINGS = (("rest_v", "rest_voltage_v"), ("crank_v", "crank_min_voltage_v"), ("charge_v", "charge_voltage_v"),
                  ("tire_kpa", "tire_pressure_min_kpa"), ("crank_margin_cold", "crank_margin_cold_v"),
                  ("rest_v_overnight", "rest_voltage_overnight_v"))
# window means whose 7-day level minus 90-day level is a feature
DELTAS = ("rest_voltage_v", "crank_margin_v", "tire_pressure_min_kpa", "charge_voltage_v", "crank_margin_cold_v",
          "rest_voltage_overnight_v")


def segment_code(segment) -> np.ndarray:
    """Integer code of a segment name (unknown names → len(SEGMENT_CODES), missing → NaN)."""
    s = pd.Series(segment, dtype="string").str.strip().str.lower()
    lookup = {name: float(i) for i, name in enumerate(SEGMENT_CODES)}
    return np.array([np.nan if pd.isna(v) else lookup.get(v, float(len(SEGMENT_CODES))) for v in s], dtype=float)


def rolling_usage(ctx: Context, F: Mapping[str, np.ndarray]) -> Features:
    """Use and mean readings over the last 7, 30 and 90 days."""
    out: Features = {}
    days_driven = cum(ctx.has_trips.astype(float))
    for w in WINDOWS:
        R = {k: roll(ctx.cums[k], w) for k in ("one", "distance_km", "duration_s", "idle_s", "short", "brake_energy",
                                                "harsh_brake", "harsh_accel")}
        out[f"trips_{w}d"] = R["one"]
        out[f"distance_km_{w}d"] = R["distance_km"]
        out[f"drive_hours_{w}d"] = R["duration_s"] / 3600.0
        out[f"idle_share_{w}d"] = div(R["idle_s"], R["duration_s"])
        out[f"short_trip_share_{w}d"] = div(R["short"], R["one"])
        out[f"mean_speed_kph_{w}d"] = div(R["distance_km"] * 3600.0, R["duration_s"])
        out[f"brake_energy_kj_per_t_{w}d"] = R["brake_energy"]
        out[f"brake_energy_per_km_{w}d"] = div(R["brake_energy"], R["distance_km"])
        out[f"harsh_brake_per_100km_{w}d"] = div(100.0 * R["harsh_brake"], R["distance_km"])
        out[f"harsh_accel_per_100km_{w}d"] = div(100.0 * R["harsh_accel"], R["distance_km"])
        for c, name in MEAN_READINGS:
            out[f"{name}_{w}d"] = div(roll(ctx.cums[c], w), roll(ctx.cums["n_" + c], w))
        out[f"telemetry_days_{w}d"] = roll(days_driven, w)
    return out


def rolling_extremes(ctx: Context, F: Mapping[str, np.ndarray]) -> Features:
    """Lowest (or highest) readings over the last 7 and 30 days."""
    out: Features = {}
    for c, (name, how) in EXTREMES.items():
        daily = ctx.grid.reduce(ctx.cell, ctx.trips[c].to_numpy(), how)
        for w in MIN_WINDOWS:
            out[f"{name}_{w}d"] = roll_ext(daily, w, how)
    return out


def trends(ctx: Context, F: Mapping[str, np.ndarray]) -> Features:
    """Slopes per day over 30 and 90 days, 7-day level minus 90-day level, the battery's time to its limit."""
    out: Features = {}
    for c, name in TREND_READINGS:
        out[f"{name}_slope_30d"] = slope(ctx.sums[c], ctx.sums["n_" + c], 30)
        out[f"{name}_slope_90d"] = slope(ctx.sums[c], ctx.sums["n_" + c], 90)
    for name in DELTAS:
        out[f"{name}_delta_7_90"] = F[f"{name}_7d"] - F[f"{name}_90d"]
    # the battery's distance to the load-test limit at its current trend (days; capped, NaN when not falling)
    m30, sl = F["crank_margin_cold_v_30d"], out["crank_margin_cold_v_slope_90d"]
    with np.errstate(divide="ignore", invalid="ignore"):
        out["crank_margin_days_to_zero"] = np.where(sl < 0, np.clip(m30 / -sl, -365, 3650), np.nan)
    return out


def telemetry_coverage(ctx: Context, F: Mapping[str, np.ndarray]) -> Features:
    last = ffill_index(np.where(ctx.has_trips, ctx.tidx, NO))
    return {"days_since_last_trip": np.where(last > NO, ctx.tidx - last, np.nan).astype(float),
            "telemetry_days_total": np.cumsum(ctx.has_trips, axis=1).astype(float)}


def odometer(ctx: Context, F: Mapping[str, np.ndarray]) -> Features:
    return {"odometer_km": ctx.odometer}


def vehicle_attributes(ctx: Context, F: Mapping[str, np.ndarray]) -> Features:
    """Age, segment, model year and mass (constant along the days)."""
    V, T, veh, reg = ctx.V, ctx.T, ctx.vehicles, ctx.registration_idx[:, None]
    out: Features = {"vehicle_age_days": np.where(reg > NO, ctx.tidx - reg, np.nan).astype(float)}
    out["segment_code"] = np.broadcast_to(segment_code(veh["segment"] if "segment" in veh else [None] * V)[:, None], (V, T))
    for c in ("model_year", "curb_mass_kg"):
        vals = pd.to_numeric(veh[c], errors="coerce").to_numpy(dtype=float) if c in veh else np.full(V, np.nan)
        out[c] = np.broadcast_to(vals[:, None], (V, T))
    return out


def _days_and_km_since(ctx: Context, last: np.ndarray, key: str) -> Features:
    has = last > NO
    return {f"days_since_{key}": np.where(has, ctx.tidx - last, np.nan).astype(float),
            f"km_since_{key}": np.where(has, since(ctx.cums["distance_km"], last), np.nan)}


def workshop_visits(ctx: Context, F: Mapping[str, np.ndarray]) -> Features:
    """Days and km since the last visit of any kind, the last inspection of each component, and the
    last routine service (the oil-and-filter visit)."""
    v = ctx.visits
    groups = {"last_visit": v}
    for comp in components.names():
        groups[f"last_{comp}_inspect"] = v[(v["component"] == comp) & (v["action"] == "inspect")]
    groups["routine_service"] = ctx.routine_visits
    out: Features = {}
    for key, ev in groups.items():
        out.update(_days_and_km_since(ctx, ctx.grid.last_event(ev["vehicle_id"], ev["day"].to_numpy()), key))
    return out


def registration_anniversary(ctx: Context, F: Mapping[str, np.ndarray]) -> Features:
    """Days to the next anniversary of the first registration (annual services and inspections cluster there)."""
    reg_day = ctx.registration_day
    if not (reg_day > NO).any():
        return {}
    reg = pd.to_datetime(np.where(reg_day > NO, reg_day, 0).astype("datetime64[D]"))
    doy_reg = np.where(reg_day > NO, reg.dayofyear.to_numpy(), -1)
    doy = pd.to_datetime((np.arange(ctx.T) + ctx.day0).astype("datetime64[D]")).dayofyear.to_numpy()
    diff = (doy_reg[:, None] - doy[None, :]) % 365
    return {"days_to_registration_anniversary": np.where(doy_reg[:, None] > 0, diff, np.nan).astype(float)}


def dtc_counts(ctx: Context, F: Mapping[str, np.ndarray]) -> Features:
    """Trouble codes stamped in the last 7, 30 and 90 days; battery and chassis codes in the last 30."""
    d = ctx.dtc_events
    if d is not None and len(d):
        g = ctx.grid
        cell, ok = g.index(d["vehicle_id"].astype(str), day_number(d["ts"]))
        code = d["code"].astype(str).str.upper().to_numpy()[ok]
        every, battery = cum(g.sum(cell)), cum(g.sum(cell, np.isin(code, BATTERY_DTC)))
        chassis = cum(g.sum(cell, np.char.startswith(code.astype(str), "C")))
    else:
        every = battery = chassis = cum(np.zeros((ctx.V, ctx.T)))
    out: Features = {f"dtc_count_{w}d": roll(every, w) for w in WINDOWS}
    out["dtc_battery_30d"] = roll(battery, 30)
    out["dtc_chassis_30d"] = roll(chassis, 30)
    return out
