"""Daily features and labels: one row per (vehicle_id, date), point-in-time correct.

How it works (pandas engine). Every trip is assigned to the UTC day its `end_ts` falls on, and
every DTC to the day of its `ts`: a feature row for date d may use exactly the trips that
*ended* before the end of d, the DTCs stamped before the end of d and the service events dated
on or before d. Daily sums, counts, minima and maxima are put on a dense grid
(vehicles × days, numpy); rolling windows are differences of cumulative sums along the day
axis (minima and maxima: sliding windows), "since the last service" quantities use the
index of the last service on or before the day (`np.maximum.accumulate`). Nothing looks at
column t+1 when computing column t, which is what the leakage test checks. No Python loop
runs per vehicle or per day; loops are over feature definitions only.

Labels look forward: `label_<c>` = 1 when a replace or repair event for component c falls in
(d, d + 15 days]; `days_to_need_<c>` is the distance to the next such event when one is known.
`label_complete` is False where the 15-day window runs past the end of the service history
(negatives there are not yet known to be negatives): training and evaluation drop those rows.

Wear proxies since the last service. A 7–15-day-ahead prediction needs the state of the part,
which no sensor reports; it is the integral of use since it was fitted. So for each component we
accumulate the relevant use since its last replace/repair (brake energy, harsh braking and
braking work for pads; km, harsh events and hot-weather km for tires; cranks, cold starts and
hot days for the battery). A part fitted before telemetry began (or never replaced: original,
fitted at first registration) has an unobserved stretch; it is extrapolated from the odometer
(or, without one, from days × km/day) at the vehicle's own usage rate *to date*.

Engines. `build_features(..., engine="pandas")` is the in-memory engine. Every computation is
per vehicle, so a distributed engine only has to partition the inputs by `vehicle_id`, run
`_build_pandas` on each partition (same `day0`/`day_end`, so the grids align) and concatenate:
register it in `ENGINES["dask"]` (see `_build_dask`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd

from autopdm import components

HORIZON_DAYS = 15
EARLY_WARNING = (7, 15)  # an alert d days before the need counts as early when 7 <= d <= 15
WINDOWS = (7, 30, 90)
MIN_WINDOWS = (7, 30)
ID_COLUMNS = ["vehicle_id", "date"]
LABEL_PREFIXES = ("label_", "days_to_need_")  # label_<component>, days_to_need_<component>, label_complete
# `segment` stays a readable string column (not a model input); the model sees a stable integer
# code, declared categorical to LightGBM: numbers survive JSON, MLflow schemas and pyfunc serving.
ATTRIBUTE_COLUMNS = ["segment"]
CATEGORICAL = ["segment_code"]
SHORT_TRIP_KM = 5.0
COLD_C = 0.0
HOT_C = 25.0
COLD_ENGINE_DELTA_C = 15.0
OVERNIGHT_H = (6.0, 24.0)
# battery voltages below ~12.4 V at rest read as < 75 % charge (STACK_NOTES)
BATTERY_DTC = ("P0560", "P0561", "P0562", "P0563", "P0620", "P0621", "P0622", "P0A94")
_NO = -(10**9)

# minimum acceptable voltage under crank load by temperature (published: 9.6 V at >= 20 °C,
# 9.3 V at 4 °C, 8.5 V at -18 °C); the margin above it is a temperature-free battery signal
_CRANK_T = np.array([-18.0, 4.0, 20.0])
_CRANK_V = np.array([8.5, 9.3, 9.6])


def crank_threshold_v(temp_c) -> np.ndarray:
    t = np.asarray(temp_c, dtype=float)
    return np.where(np.isnan(t), 9.6, np.interp(t, _CRANK_T, _CRANK_V))


# fixed vocabulary → dense, stable integer codes (LightGBM categoricals want small consecutive ints)
SEGMENT_CODES = ("mini", "small", "compact", "midsize", "large", "suv", "van", "pickup", "mpv", "wagon", "sports", "luxury")


def segment_code(segment) -> np.ndarray:
    """Integer code of a segment name (unknown names → len(SEGMENT_CODES), missing → NaN)."""
    s = pd.Series(segment, dtype="string").str.strip().str.lower()
    lookup = {name: float(i) for i, name in enumerate(SEGMENT_CODES)}
    return np.array([np.nan if pd.isna(v) else lookup.get(v, float(len(SEGMENT_CODES))) for v in s], dtype=float)


def is_label_column(name: str) -> bool:
    return name.startswith(LABEL_PREFIXES)


def label_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if is_label_column(c)]


def feature_columns(df: pd.DataFrame) -> list[str]:
    """Model inputs: everything except ids, labels and readable attributes."""
    skip = set(ID_COLUMNS) | set(ATTRIBUTE_COLUMNS)
    return [c for c in df.columns if c not in skip and not is_label_column(c)]


# --------------------------------------------------------------------------------------------
# grid helpers (arrays of shape vehicles × days)


def _day_number(s: pd.Series) -> np.ndarray:
    """Days since 1970-01-01 of a UTC timestamp or date column (int64; NaT → _NO)."""
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    v = pd.to_datetime(s, errors="coerce").to_numpy("datetime64[D]")
    out = v.astype("int64")
    out[np.isnat(v)] = _NO
    return out


class _Grid:
    def __init__(self, vids: pd.Index, day0: int, n_days: int):
        self.vids, self.day0, self.T = vids, day0, n_days
        self.V = len(vids)

    def index(self, vehicle_id: pd.Series, day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        vi = self.vids.get_indexer(vehicle_id)
        ti = day - self.day0
        ok = (vi >= 0) & (ti >= 0) & (ti < self.T)
        return vi[ok] * self.T + ti[ok], ok

    def sum(self, flat: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
        if w is not None:
            w = np.nan_to_num(np.asarray(w, dtype=float))
        return np.bincount(flat, weights=w, minlength=self.V * self.T).reshape(self.V, self.T).astype(float)

    def count(self, flat: np.ndarray, x: np.ndarray) -> np.ndarray:
        return self.sum(flat, ~np.isnan(np.asarray(x, dtype=float)))

    def reduce(self, flat: np.ndarray, x: np.ndarray, how: str) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        ok = ~np.isnan(x)
        out = np.full(self.V * self.T, np.nan)
        if ok.any():
            r = pd.Series(x[ok]).groupby(flat[ok]).agg(how)
            out[r.index.to_numpy()] = r.to_numpy()
        return out.reshape(self.V, self.T)


def _cum(a: np.ndarray) -> np.ndarray:
    """Cumulative sum along days with a leading zero column: c[:, t+1] = sum(a[:, :t+1])."""
    c = np.zeros((a.shape[0], a.shape[1] + 1))
    np.cumsum(a, axis=1, out=c[:, 1:])
    return c


def _roll(c: np.ndarray, w: int) -> np.ndarray:
    """Sum over the w days ending at (and including) each day, from a `_cum` array."""
    T = c.shape[1] - 1
    hi = np.arange(1, T + 1)
    lo = np.maximum(hi - w, 0)
    return c[:, hi] - c[:, lo]


def _roll_ext(a: np.ndarray, w: int, how: str) -> np.ndarray:
    """Rolling min or max over w days ending at each day, NaN-aware (all-NaN → NaN)."""
    fill = np.inf if how == "min" else -np.inf
    pad = np.full((a.shape[0], w - 1), fill)
    x = np.concatenate([pad, np.where(np.isnan(a), fill, a)], axis=1)
    view = np.lib.stride_tricks.sliding_window_view(x, w, axis=1)
    r = view.min(axis=2) if how == "min" else view.max(axis=2)
    r[np.isinf(r)] = np.nan
    return r


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)


def _ffill_index(marks: np.ndarray) -> np.ndarray:
    """marks[v, t] = t where something happened else _NO → index of the last event <= t."""
    return np.maximum.accumulate(marks, axis=1)


def _take(c: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """c is a `_cum` array; value of the cumulative sum through day idx (0 where idx < 0)."""
    safe = np.clip(idx + 1, 0, c.shape[1] - 1)
    out = np.take_along_axis(c, safe, axis=1)
    return np.where(idx >= 0, out, 0.0)


def _slope(y_sum: np.ndarray, n: np.ndarray, w: int) -> np.ndarray:
    """Least-squares slope per day of the daily means y over the w days ending at each day.

    y_sum/n are the daily sums and counts of a measurement; each day with data is one point.
    """
    T = y_sum.shape[1]
    has = n > 0
    y = np.where(has, _div(y_sum, n), 0.0)
    t = np.broadcast_to(np.arange(T, dtype=float), y.shape)
    k = _roll(_cum(has.astype(float)), w)
    st = _roll(_cum(np.where(has, t, 0.0)), w)
    stt = _roll(_cum(np.where(has, t * t, 0.0)), w)
    sy = _roll(_cum(y), w)
    sty = _roll(_cum(t * y), w)
    den = k * stt - st * st
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where((k >= 3) & (den > 0), (k * sty - st * sy) / np.where(den > 0, den, 1.0), np.nan)
    return s


# --------------------------------------------------------------------------------------------
# the pandas engine


def _prep_trips(trips: pd.DataFrame, vehicles: pd.DataFrame) -> pd.DataFrame:
    t = trips
    mass = vehicles.set_index("vehicle_id")["curb_mass_kg"] if "curb_mass_kg" in vehicles else pd.Series(dtype=float)
    out = pd.DataFrame(
        {
            "vehicle_id": t["vehicle_id"].astype(str).to_numpy(),
            "day": _day_number(t["end_ts"]),
        }
    )

    def col(name):
        return pd.to_numeric(t[name], errors="coerce").to_numpy(dtype=float) if name in t else np.full(len(t), np.nan)

    dist = np.nan_to_num(col("distance_km"))
    amb = col("ambient_temp_c")
    out["one"] = 1.0
    out["distance_km"] = dist
    out["duration_s"] = np.nan_to_num(col("duration_s"))
    out["idle_s"] = np.nan_to_num(col("idle_s"))
    out["short"] = (dist < SHORT_TRIP_KM).astype(float)
    out["brake_energy"] = np.nan_to_num(col("brake_energy_kj_per_t"))
    out["brake_work_mj"] = out["brake_energy"] * mass.reindex(out["vehicle_id"]).to_numpy(dtype=float) / 1e6
    out["harsh_brake"] = np.nan_to_num(col("harsh_brake_count"))
    out["harsh_accel"] = np.nan_to_num(col("harsh_accel_count"))
    out["max_decel"] = col("max_decel_mps2")
    out["rest_v"] = col("rest_voltage_v")
    out["crank_v"] = col("crank_min_voltage_v")
    out["crank_margin"] = out["crank_v"] - crank_threshold_v(amb)
    out["charge_v"] = col("charge_voltage_v")
    out["ambient"] = amb
    out["cold_start"] = np.where(np.isnan(amb), np.nan, (amb < COLD_C).astype(float))
    out["hot_km"] = np.where(amb > HOT_C, dist, 0.0)
    out["tire_kpa"] = col("tire_pressure_min_kpa")
    out["odometer"] = col("odometer_end_km")
    # battery readings taken in comparable conditions: a cold start (coolant within 15 °C of ambient:
    # a warm engine cranks easier) and an overnight park (6-24 h since the previous trip ended: rest
    # voltage sags with parking time and reads high right after driving)
    coolant = col("start_coolant_temp_c")
    cold = (coolant - amb) < COLD_ENGINE_DELTA_C
    out["crank_margin_cold"] = np.where(cold, out["crank_margin"], np.nan)
    start = pd.to_datetime(t["start_ts"], utc=True).to_numpy("datetime64[ms]").astype("int64") / 3.6e6
    end = pd.to_datetime(t["end_ts"], utc=True).to_numpy("datetime64[ms]").astype("int64") / 3.6e6
    order = np.lexsort((start, out["vehicle_id"].to_numpy()))
    vs, ss, es = out["vehicle_id"].to_numpy()[order], start[order], end[order]
    gap = np.full(len(t), np.nan)
    gap_sorted = np.where(np.r_[False, vs[1:] == vs[:-1]], ss - np.r_[np.nan, es[:-1]], np.nan)
    gap[order] = gap_sorted
    overnight = (gap >= OVERNIGHT_H[0]) & (gap <= OVERNIGHT_H[1])
    out["rest_v_overnight"] = np.where(overnight, out["rest_v"], np.nan)
    return out


def _build_pandas(
    trips: pd.DataFrame,
    vehicles: pd.DataFrame,
    service_events: pd.DataFrame,
    dtc_events: pd.DataFrame | None,
    dates: Iterable | None = None,
    day0: int | None = None,
    day_end: int | None = None,
    labels_until: int | None = None,
) -> pd.DataFrame:
    tr = _prep_trips(trips, vehicles)
    tr = tr[tr["day"] > _NO]
    if tr.empty:
        return _empty_frame()
    want = None
    if dates is not None:
        want = np.unique(_day_number(pd.Series(pd.to_datetime(list(dates)))))
    day0 = int(tr["day"].min()) if day0 is None else day0
    if day_end is None:
        day_end = int(want.max()) if want is not None else int(tr["day"].max())
    se = service_events.copy() if service_events is not None else pd.DataFrame(columns=["vehicle_id", "date", "component", "action", "odometer_km"])
    se_day = _day_number(se["date"]) if len(se) else np.zeros(0, dtype=np.int64)
    if labels_until is None:
        # the service history reaches this far: negatives are known up to here
        reach = se_day[(se_day > _NO) & (se_day <= day_end + HORIZON_DAYS)]
        labels_until = max(day_end, int(reach.max())) if len(reach) else day_end
    tr = tr[tr["day"] <= day_end]
    vids = pd.Index(np.sort(tr["vehicle_id"].unique()))
    g = _Grid(vids, day0, day_end - day0 + 1)
    V, T = g.V, g.T
    flat, ok = g.index(tr["vehicle_id"], tr["day"].to_numpy())
    tr = tr[ok]

    S = {c: g.sum(flat, tr[c].to_numpy()) for c in
         ("one", "distance_km", "duration_s", "idle_s", "short", "brake_energy", "brake_work_mj", "harsh_brake",
          "harsh_accel", "hot_km")}
    for c in ("rest_v", "crank_v", "crank_margin", "charge_v", "ambient", "cold_start", "tire_kpa",
              "crank_margin_cold", "rest_v_overnight"):
        S[c] = g.sum(flat, tr[c].to_numpy())
        S["n_" + c] = g.count(flat, tr[c].to_numpy())
    C = {k: _cum(v) for k, v in S.items()}
    F: dict[str, np.ndarray] = {}

    # rolling windows
    for w in WINDOWS:
        R = {k: _roll(c, w) for k, c in C.items()}
        F[f"trips_{w}d"] = R["one"]
        F[f"distance_km_{w}d"] = R["distance_km"]
        F[f"drive_hours_{w}d"] = R["duration_s"] / 3600.0
        F[f"idle_share_{w}d"] = _div(R["idle_s"], R["duration_s"])
        F[f"short_trip_share_{w}d"] = _div(R["short"], R["one"])
        F[f"mean_speed_kph_{w}d"] = _div(R["distance_km"] * 3600.0, R["duration_s"])
        F[f"brake_energy_kj_per_t_{w}d"] = R["brake_energy"]
        F[f"brake_energy_per_km_{w}d"] = _div(R["brake_energy"], R["distance_km"])
        F[f"harsh_brake_per_100km_{w}d"] = _div(100.0 * R["harsh_brake"], R["distance_km"])
        F[f"harsh_accel_per_100km_{w}d"] = _div(100.0 * R["harsh_accel"], R["distance_km"])
        for c, name in (("rest_v", "rest_voltage_v"), ("crank_v", "crank_min_voltage_v_mean"),
                        ("crank_margin", "crank_margin_v"), ("charge_v", "charge_voltage_v"),
                        ("ambient", "ambient_temp_c"), ("cold_start", "cold_start_share"),
                        ("tire_kpa", "tire_pressure_min_kpa"), ("crank_margin_cold", "crank_margin_cold_v"),
                        ("rest_v_overnight", "rest_voltage_overnight_v")):
            F[f"{name}_{w}d"] = _div(R[c], R["n_" + c])
        F[f"telemetry_days_{w}d"] = _roll(_cum((S["one"] > 0).astype(float)), w)

    # rolling extremes
    ext = {
        "rest_v": ("rest_voltage_v_min", "min"), "crank_v": ("crank_min_voltage_v", "min"),
        "crank_margin": ("crank_margin_v_min", "min"), "ambient": ("ambient_temp_c_min", "min"),
        "tire_kpa": ("tire_pressure_min_kpa_min", "min"), "max_decel": ("max_decel_mps2_max", "max"),
        "crank_margin_cold": ("crank_margin_cold_v_min", "min"), "rest_v_overnight": ("rest_voltage_overnight_v_min", "min"),
    }
    for c, (name, how) in ext.items():
        daily = g.reduce(flat, tr[c].to_numpy(), how)
        for w in MIN_WINDOWS:
            F[f"{name}_{w}d"] = _roll_ext(daily, w, how)

    # trends: slope per day over 30 days, and 7-day level minus 90-day level
    for c, name in (("rest_v", "rest_voltage_v"), ("crank_v", "crank_min_voltage_v"), ("charge_v", "charge_voltage_v"),
                    ("tire_kpa", "tire_pressure_min_kpa"), ("crank_margin_cold", "crank_margin_cold_v"),
                    ("rest_v_overnight", "rest_voltage_overnight_v")):
        F[f"{name}_slope_30d"] = _slope(S[c], S["n_" + c], 30)
        F[f"{name}_slope_90d"] = _slope(S[c], S["n_" + c], 90)
    for name in ("rest_voltage_v", "crank_margin_v", "tire_pressure_min_kpa", "charge_voltage_v", "crank_margin_cold_v",
                 "rest_voltage_overnight_v"):
        F[f"{name}_delta_7_90"] = F[f"{name}_7d"] - F[f"{name}_90d"]

    # the battery's distance to the load-test limit at its current trend (days; capped, NaN when not falling)
    m30, sl = F["crank_margin_cold_v_30d"], F["crank_margin_cold_v_slope_90d"]
    with np.errstate(divide="ignore", invalid="ignore"):
        F["crank_margin_days_to_zero"] = np.where(sl < 0, np.clip(m30 / -sl, -365, 3650), np.nan)

    # telemetry coverage
    tidx = np.broadcast_to(np.arange(T), (V, T))
    has = S["one"] > 0
    last_tel = _ffill_index(np.where(has, tidx, _NO))
    first_tel = np.where(has.any(axis=1), has.argmax(axis=1), T)  # per vehicle
    F["days_since_last_trip"] = np.where(last_tel > _NO, tidx - last_tel, np.nan).astype(float)
    F["telemetry_days_total"] = np.cumsum(has, axis=1).astype(float)
    km_per_day = _div(C["distance_km"][:, 1:], np.maximum(tidx - first_tel[:, None] + 1, 0).astype(float))

    # odometer: last reading on or before the day + distance driven since that reading's day
    odo_daily = g.reduce(flat, tr["odometer"].to_numpy(), "max")
    odo_mark = _ffill_index(np.where(~np.isnan(odo_daily), tidx, _NO))
    odo_last = np.take_along_axis(np.nan_to_num(odo_daily), np.clip(odo_mark, 0, T - 1), axis=1)
    odometer = np.where(odo_mark > _NO, odo_last + C["distance_km"][:, 1:] - _take(C["distance_km"], odo_mark), np.nan)
    F["odometer_km"] = odometer
    odo_base = odometer - C["distance_km"][:, 1:]  # odometer before the first observed trip

    # vehicle attributes
    veh = vehicles.drop_duplicates("vehicle_id").set_index("vehicle_id").reindex(vids)
    reg_day = _day_number(veh["first_registration_date"]) if "first_registration_date" in veh else np.full(V, _NO)
    reg_idx = np.where(reg_day > _NO, reg_day - day0, _NO)
    F["vehicle_age_days"] = np.where(reg_idx[:, None] > _NO, tidx - reg_idx[:, None], np.nan).astype(float)
    F["segment_code"] = np.broadcast_to(segment_code(veh["segment"] if "segment" in veh else [None] * V)[:, None], (V, T))
    for c in ("model_year", "curb_mass_kg"):
        vals = pd.to_numeric(veh[c], errors="coerce").to_numpy(dtype=float) if c in veh else np.full(V, np.nan)
        F[c] = np.broadcast_to(vals[:, None], (V, T))

    # since the last service of each component, with wear proxies
    se = se.assign(day=se_day)
    se = se[(se["day"] > _NO) & se["vehicle_id"].isin(vids)]
    Cx = dict(C)
    Cx["harsh_events"] = C["harsh_brake"] + C["harsh_accel"]
    for cdef in components.all_components():
        comp = cdef.name
        ev = se[(se["component"] == comp) & se["action"].isin(cdef.resolving_actions)].sort_values(["vehicle_id", "day"], kind="stable").reset_index(drop=True)
        vi = vids.get_indexer(ev["vehicle_id"])
        ti = ev["day"].to_numpy() - day0
        in_grid = ti < T  # events after the grid end do not exist yet at any grid day
        vi, ti, ev = vi[in_grid], ti[in_grid], ev[in_grid].reset_index(drop=True)
        marks = np.full((V, T), _NO, dtype=np.int64)
        ordm = np.full((V, T), -1, dtype=np.int64)
        tclip = np.maximum(ti, 0)  # events before the grid collapse onto day 0 (their own day is kept)
        # later events overwrite earlier ones on the same cell because ev is sorted by day
        marks[vi, tclip] = ti
        ordm[vi, tclip] = np.arange(len(ev))
        last = _ffill_index(marks)
        last_ord = np.maximum.accumulate(ordm, axis=1)
        serviced = last > _NO
        # no replace/repair on record: the original part, fitted at first registration
        s_idx = np.where(serviced, last, np.broadcast_to(reg_idx[:, None], (V, T)))
        known = s_idx > _NO
        F[f"days_since_{comp}_service"] = np.where(known, tidx - s_idx, np.nan).astype(float)
        F[f"{comp}_serviced_on_record"] = serviced.astype(float)
        ev_odo = pd.to_numeric(ev["odometer_km"], errors="coerce").to_numpy(dtype=float) if "odometer_km" in ev else np.full(len(ev), np.nan)
        svc_odo = np.where(serviced, ev_odo[np.clip(last_ord, 0, max(len(ev) - 1, 0))] if len(ev) else np.nan, 0.0)
        # a service inside the grid without an odometer reading: the odometer estimate of that day
        in_g = serviced & (last >= 0)
        est = odo_base + _take(C["distance_km"], np.where(in_g, last, -1))
        svc_odo = np.where(np.isnan(svc_odo) & in_g, est, svc_odo)
        obs_from = np.where(serviced, last, -1)
        obs_km = C["distance_km"][:, 1:] - _take(C["distance_km"], obs_from)
        km_odo = odometer - svc_odo
        # the unobserved stretch between fitting and the first telemetry
        gap_days = np.where(known, np.maximum(first_tel[:, None] - np.maximum(s_idx, -10**6), 0), np.nan)
        unobs = np.where(~np.isnan(km_odo), np.maximum(km_odo - obs_km, 0.0), gap_days * km_per_day)
        unobs = np.where(s_idx >= first_tel[:, None], 0.0, unobs)
        km_since = obs_km + unobs
        F[f"km_since_{comp}_service"] = km_since
        F[f"km_observed_since_{comp}_service"] = obs_km
        for name, key in cdef.wear.items():
            cq = Cx[key]
            obs_q = cq[:, 1:] - _take(cq, obs_from)
            if name != "harsh_events":
                F[f"{name}_observed_since_{comp}_service"] = obs_q
            rate = _div(cq[:, 1:], C["distance_km"][:, 1:])
            F[f"{name}_since_{comp}_service"] = obs_q + np.where(unobs > 0, unobs * rate, 0.0)
        if "tire_heat" in cdef.families:
            F["hot_share_since_tire_service"] = _div(F["hot_km_since_tire_service"], km_since)

    # workshop visits: last visit of any kind, last passed inspection of each component, and the
    # registration anniversary (annual services and inspections cluster around it)
    allv = service_events if service_events is not None else se
    if len(allv):
        allv = allv.assign(day=_day_number(allv["date"]))
        allv = allv[(allv["day"] > _NO) & allv["vehicle_id"].isin(vids) & (allv["day"] <= day_end)]
    visits = {"visit": allv} if len(allv) else {"visit": allv.iloc[:0]}
    for comp in components.names():
        visits[f"{comp}_inspect"] = allv[(allv["component"] == comp) & (allv["action"] == "inspect")] if len(allv) else allv
    for key, ev in visits.items():
        marks = np.full((V, T), _NO, dtype=np.int64)
        if len(ev):
            vi = vids.get_indexer(ev["vehicle_id"])
            ti = ev["day"].to_numpy() - day0
            np.maximum.at(marks, (vi, np.maximum(ti, 0)), ti)
        last = _ffill_index(marks)
        has_last = last > _NO
        F[f"days_since_last_{key}"] = np.where(has_last, tidx - last, np.nan).astype(float)
        F[f"km_since_last_{key}"] = np.where(has_last, C["distance_km"][:, 1:] - _take(C["distance_km"], last), np.nan)
    # Routine services (the oil-and-filter visit: an `other` replace) versus off-cycle visits. A
    # component inspected on a day without a routine service is a workshop look outside the schedule
    # (a complaint, a quote, parts ordered): "open" until the component is next replaced/repaired.
    # Wear accumulated since the last inspection that passed (inspected, not replaced) bounds how far
    # a part can be from its limit even when it was fitted before the records began.
    if len(allv):
        routine = allv[(allv["component"] == "other") & (allv["action"] == "replace")]
        r_key = pd.MultiIndex.from_arrays([routine["vehicle_id"].astype(str), routine["day"]])
        on_routine = pd.MultiIndex.from_arrays([allv["vehicle_id"].astype(str), allv["day"]]).isin(r_key)
    else:
        routine, on_routine = allv, np.zeros(0, dtype=bool)

    def _last_mark(ev) -> np.ndarray:
        marks = np.full((V, T), _NO, dtype=np.int64)
        if len(ev):
            vi = vids.get_indexer(ev["vehicle_id"])
            ti = ev["day"].to_numpy() - day0
            np.maximum.at(marks, (vi, np.maximum(ti, 0)), ti)
        return _ffill_index(marks)

    last_routine = _last_mark(routine)
    F["days_since_routine_service"] = np.where(last_routine > _NO, tidx - last_routine, np.nan).astype(float)
    F["km_since_routine_service"] = np.where(last_routine > _NO, C["distance_km"][:, 1:] - _take(C["distance_km"], last_routine), np.nan)
    for cdef in components.all_components():
        comp = cdef.name
        if len(allv):
            is_c = (allv["component"] == comp).to_numpy()
            insp = allv[is_c & (allv["action"] == "inspect").to_numpy()]
            off = allv[is_c & (allv["action"] == "inspect").to_numpy() & ~on_routine]
            fix = allv[is_c & allv["action"].isin(cdef.resolving_actions).to_numpy()]
        else:
            insp = off = fix = allv
        last_fix = _last_mark(fix)
        last_off = _last_mark(off)
        last_insp = _last_mark(insp)
        open_off = (last_off > _NO) & (last_off > last_fix)
        F[f"days_since_open_{comp}_inspect"] = np.where(open_off, tidx - last_off, np.nan).astype(float)
        passed = (last_insp > _NO) & (last_insp > last_fix)
        key, wname = cdef.wear_since_pass
        cq = Cx[key]
        F[f"{wname}_since_{comp}_inspect_pass"] = np.where(passed, cq[:, 1:] - _take(cq, last_insp), np.nan)

        if "battery_health" in cdef.families:
            # degradation relative to the battery's own best: the drop of the 30-day cold-crank margin
            # and overnight rest voltage from their best level since this battery was fitted (a new
            # battery starts a new reference; levels differ between vehicles and loggers, drops less so)
            fixes = np.zeros((V, T))
            if len(fix):
                np.add.at(fixes, (vids.get_indexer(fix["vehicle_id"]), np.clip(fix["day"].to_numpy() - day0, 0, T - 1)), 1.0)
            seg_n = np.cumsum(fixes, axis=1) * 1000.0
            for src, name in (("crank_margin_cold_v_30d", "crank_margin_cold_v"), ("rest_voltage_overnight_v_30d", "rest_voltage_overnight_v")):
                lvl = F[src]
                best = np.fmax.accumulate(lvl + seg_n, axis=1) - seg_n
                # the running best of an older battery must not leak into a new one's first (NaN) days
                best = np.where(best < -500, np.nan, best)
                F[f"{name}_drop_from_best"] = best - lvl
            for name in ("crank_margin_cold_v", "rest_voltage_overnight_v"):
                F[f"{name}_slope_60d"] = _slope(S[{"crank_margin_cold_v": "crank_margin_cold",
                                                   "rest_voltage_overnight_v": "rest_v_overnight"}[name]],
                                                S["n_" + {"crank_margin_cold_v": "crank_margin_cold",
                                                          "rest_voltage_overnight_v": "rest_v_overnight"}[name]], 60)
            m7, s60 = F["crank_margin_cold_v_7d"], F["crank_margin_cold_v_slope_60d"]
            with np.errstate(divide="ignore", invalid="ignore"):
                F["crank_margin_days_to_zero_60d"] = np.where(s60 < 0, np.clip(m7 / -s60, -365, 3650), np.nan)

    if (reg_day > _NO).any():
        reg = pd.to_datetime(np.where(reg_day > _NO, reg_day, 0).astype("datetime64[D]"))
        doy_reg = np.where(reg_day > _NO, reg.dayofyear.to_numpy(), -1)
        doy = pd.to_datetime((np.arange(T) + day0).astype("datetime64[D]")).dayofyear.to_numpy()
        diff = (doy_reg[:, None] - doy[None, :]) % 365
        F["days_to_registration_anniversary"] = np.where(doy_reg[:, None] > 0, diff, np.nan).astype(float)

    # DTCs
    dtc_cols = {f"dtc_count_{w}d": None for w in WINDOWS}
    d = dtc_events if dtc_events is not None and len(dtc_events) else None
    zeros = np.zeros((V, T))
    if d is not None:
        dflat, dok = g.index(d["vehicle_id"].astype(str), _day_number(d["ts"]))
        code = d["code"].astype(str).str.upper().to_numpy()[dok]
        call = _cum(g.sum(dflat))
        cbat = _cum(g.sum(dflat, np.isin(code, BATTERY_DTC)))
        cch = _cum(g.sum(dflat, np.char.startswith(code.astype(str), "C")))
    else:
        call = cbat = cch = _cum(zeros)
    for w in WINDOWS:
        F[f"dtc_count_{w}d"] = _roll(call, w)
    F["dtc_battery_30d"] = _roll(cbat, 30)
    F["dtc_chassis_30d"] = _roll(cch, 30)
    del dtc_cols

    # labels: next need event strictly after the day
    L: dict[str, np.ndarray] = {}
    all_se = service_events if service_events is not None else se
    all_se = all_se.assign(day=_day_number(all_se["date"])) if len(all_se) else se
    for cdef in components.all_components():
        comp = cdef.name
        ev = all_se[(all_se["component"] == comp) & all_se["action"].isin(cdef.resolving_actions) & all_se["vehicle_id"].isin(vids)]
        ev = ev[(ev["day"] > _NO) & (ev["day"] <= labels_until)]
        key = np.sort(vids.get_indexer(ev["vehicle_id"]).astype(np.int64) * (1 << 32) + (ev["day"].to_numpy() - day0 + (1 << 31)))
        q = np.arange(V, dtype=np.int64)[:, None] * (1 << 32) + (tidx + (1 << 31))
        pos = np.searchsorted(key, q.ravel(), side="right").reshape(V, T)
        nxt = np.append(key, np.iinfo(np.int64).max)[pos]
        same = (nxt >> 32) == np.arange(V)[:, None]
        dtn = np.where(same, (nxt & ((1 << 32) - 1)) - (1 << 31) - tidx, np.nan).astype(float)
        L[cdef.label] = ((dtn >= 1) & (dtn <= HORIZON_DAYS)).astype(np.int8)
        L[cdef.days_to_need] = dtn
    L["label_complete"] = (tidx + day0 + HORIZON_DAYS) <= labels_until

    # rows: from each vehicle's first telemetry day on (or the requested dates)
    rows = tidx >= first_tel[:, None]
    if want is not None:
        sel = np.zeros(T, dtype=bool)
        w_idx = want - day0
        sel[w_idx[(w_idx >= 0) & (w_idx < T)]] = True
        rows &= sel[None, :]
    vi_r, ti_r = np.nonzero(rows)
    out = {
        "vehicle_id": vids.to_numpy()[vi_r],
        "date": (ti_r + day0).astype("datetime64[D]").astype("datetime64[ns]"),
    }
    for k, a in F.items():
        out[k] = np.asarray(a)[vi_r, ti_r].astype(np.float32)
    seg = veh["segment"].astype("string").to_numpy() if "segment" in veh else np.full(V, None)
    out["segment"] = pd.array(seg[vi_r], dtype="string")
    for k, a in L.items():
        out[k] = a[vi_r, ti_r]
    df = pd.DataFrame(out)
    return df


def _empty_frame() -> pd.DataFrame:
    return pd.DataFrame({"vehicle_id": pd.Series(dtype=str), "date": pd.Series(dtype="datetime64[ns]")})


def _build_dask(*args, **kwargs) -> pd.DataFrame:  # pragma: no cover - seam
    """Seam for the Dask engine (DESIGN: `--engine dask`).

    Plan: read trips/dtc_events with dask.dataframe, shuffle by `vehicle_id` into K partitions,
    compute one global `day0`/`day_end`/`labels_until`, then `map_partitions` →
    `_build_pandas(part_trips, vehicles, service_events[part], dtc[part], dates, day0=...,
    day_end=..., labels_until=...)` and write the partitions as a Parquet dataset. Every
    feature is per vehicle, so the result equals the pandas engine's row for row.
    """
    raise NotImplementedError(
        "build_features(engine='dask') is not available on in-memory frames: the Dask engine reads the tables "
        "itself (autopdm.pipeline.features_dask.run, `autopdm features --engine dask`)")


ENGINES: dict[str, Callable[..., pd.DataFrame]] = {"pandas": _build_pandas, "dask": _build_dask}


def build_features(
    trips: pd.DataFrame,
    vehicles: pd.DataFrame,
    service_events: pd.DataFrame,
    dtc_events: pd.DataFrame | None = None,
    dates: Iterable | None = None,
    engine: str = "pandas",
    as_of=None,
) -> pd.DataFrame:
    """One row per (vehicle_id, date) with features and labels (see module docstring).

    dates: only these dates (each vehicle from its first telemetry day); default every day from
    each vehicle's first trip to the last trip day of the fleet (or `as_of`).
    as_of: ignore all trips, DTCs and service events after this date (as if run on that day);
    rows end at as_of.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; expected one of {sorted(ENGINES)}")
    kwargs = {}
    if as_of is not None:
        cut = AsOf(as_of)
        trips, service_events, dtc_events = cut.trips(trips), cut.service_events(service_events), cut.dtc_events(dtc_events)
        kwargs["day_end"] = cut.day_end
    return ENGINES[engine](trips, vehicles, service_events, dtc_events, dates, **kwargs)


class AsOf:
    """Everything known at the end of day `as_of`: the filters both feature engines apply to their inputs."""

    def __init__(self, as_of):
        self.cut = pd.Timestamp(as_of).normalize() + pd.Timedelta(days=1)   # first instant not known yet
        self.cut_utc = self.cut.tz_localize("UTC") if self.cut.tzinfo is None else self.cut
        self.day_end = int((self.cut - pd.Timedelta(days=1)).to_datetime64().astype("datetime64[D]").astype("int64"))

    def trips(self, trips):  # pandas or Dask DataFrame
        return trips[trips["end_ts"] < self.cut_utc] if hasattr(trips, "dask") else \
            trips[pd.to_datetime(trips["end_ts"], utc=True) < self.cut_utc]

    def dtc_events(self, dtc_events):
        if dtc_events is None or not len(dtc_events):
            return dtc_events
        return dtc_events[pd.to_datetime(dtc_events["ts"], utc=True) < self.cut_utc]

    def service_events(self, service_events):
        if service_events is None or not len(service_events):
            return service_events
        return service_events[pd.to_datetime(service_events["date"]) < self.cut.tz_localize(None)]
