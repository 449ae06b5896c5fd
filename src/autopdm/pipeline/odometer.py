"""Odometer forecast per car: where it is today and the day it will reach a given km.

From the recorded trips only (plain functions over DataFrames and arrays):

* km per day — the trips' distances by calendar day (UTC) of their start;
* odometer today — the latest odometer reading (a trip's `odometer_end_km`) plus the km of the
  trips after it; for a car whose logger cannot read the odometer, the latest service record's
  odometer plus the km of the trips since, scaled by how many km the car drove per km its logger
  recorded between two earlier service records (the km driven while the logger was unplugged);
* driving pattern — a mean for Monday–Friday and one for Saturday–Sunday over the last
  `WINDOW_DAYS` days, recent days weighing more (half-life `HALF_LIFE_DAYS`: the trend). Gaps in
  telemetry (a run of `GAP_DAYS` or more days without a trip) are left out rather than counted as
  parked days, and where odometer readings exist, the km they show over the window (which include
  the trips the logger missed) rescale the pattern;
* due day — the first day the expected odometer reaches the target; the interval comes from the
  spread of the weekly km in the window, growing with √weeks ahead (≈ 80 %: ±1.28 sd);
* a car without a trip for `STOPPED_DAYS` days gets the status "telemetry stopped since D" and no
  forecast: it may be parked, sold or unplugged, and guessing would send reminders at random.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

WINDOW_DAYS = 56
HALF_LIFE_DAYS = 28
GAP_DAYS = 4
STOPPED_DAYS = 14
MIN_KNOWN_DAYS = 14
HORIZON_DAYS = 3 * 366
Z80 = 1.2816

OK = "ok"


@dataclass
class DailyDriving:
    """One car's recorded driving per day from `day0`: km, trips, the last odometer reading of the day."""
    vehicle_id: str
    day0: date
    km: np.ndarray
    trips: np.ndarray
    odo: np.ndarray   # NaN where the day has no reading

    def index(self, d: date) -> int:
        return (d - self.day0).days


@dataclass
class Forecast:
    """Where a car is at `as_of` and how it drives. `status` is "ok" or says why there is no forecast."""
    vehicle_id: str
    as_of: date
    status: str
    odometer_km: float | None = None
    odometer_from: str | None = None           # "odometer" | "service record + trips"
    km_per_day: tuple[float, float] | None = None   # (Monday–Friday, Saturday–Sunday)
    weekly_km_sd: float | None = None
    last_trip: date | None = None

    def reach(self, target_km: float) -> dict | None:
        """{"date", "earliest", "latest"} the car is expected to reach `target_km`, or None (no
        forecast, or not within HORIZON_DAYS). A target already passed is due at `as_of`."""
        if self.status != OK or self.odometer_km is None:
            return None
        left = target_km - self.odometer_km
        if left <= 0:
            d = self.as_of.isoformat()
            return {"date": d, "earliest": d, "latest": d}
        days = np.arange(1, HORIZON_DAYS + 1)
        wd = (self.as_of.weekday() + days) % 7
        cum = np.cumsum(np.where(wd >= 5, self.km_per_day[1], self.km_per_day[0]))
        sd = (self.weekly_km_sd or 0.0) * np.sqrt(days / 7.0)

        def first(path: np.ndarray) -> str | None:
            hit = np.flatnonzero(path >= left)
            return (self.as_of + timedelta(days=int(days[hit[0]]))).isoformat() if len(hit) else None

        mid = first(cum)
        if mid is None:
            return None
        return {"date": mid, "earliest": first(cum + Z80 * sd), "latest": first(cum - Z80 * sd)}


def daily_driving(trips: pd.DataFrame, as_of: date | None = None) -> dict[str, DailyDriving]:
    """Per vehicle, the trips (schemas.TRIPS: vehicle_id, start_ts, distance_km, odometer_end_km) by day,
    up to `as_of` included."""
    if trips is None or trips.empty:
        return {}
    t = pd.DataFrame({"vehicle_id": trips["vehicle_id"].astype(str),
                      "day": pd.to_datetime(trips["start_ts"], utc=True).dt.tz_localize(None).dt.normalize(),
                      "km": pd.to_numeric(trips["distance_km"], errors="coerce").fillna(0.0),
                      "odo": pd.to_numeric(trips.get("odometer_end_km"), errors="coerce")
                      if "odometer_end_km" in trips else np.nan})
    if as_of is not None:
        t = t[t["day"] <= pd.Timestamp(as_of)]
    g = t.groupby(["vehicle_id", "day"], sort=True).agg(km=("km", "sum"), trips=("km", "size"), odo=("odo", "max"))
    out = {}
    for vin, part in g.groupby(level=0, sort=False):
        days = part.index.get_level_values(1)
        d0 = days[0].date()
        idx = ((days - days[0]).days).to_numpy()
        n = int(idx[-1]) + 1
        km, nt, odo = np.zeros(n), np.zeros(n, dtype=np.int32), np.full(n, np.nan)
        km[idx], nt[idx], odo[idx] = part["km"].to_numpy(), part["trips"].to_numpy(), part["odo"].to_numpy()
        out[str(vin)] = DailyDriving(str(vin), d0, km, nt, odo)
    return out


def _known_days(trips: np.ndarray) -> np.ndarray:
    """Days that count: driven days, and days without trips inside runs shorter than GAP_DAYS (parked);
    a longer run is a gap in telemetry (or a holiday) and is left out."""
    known = trips > 0
    n = len(trips)
    i = 0
    while i < n:
        if trips[i] > 0:
            i += 1
            continue
        j = i
        while j < n and trips[j] == 0:
            j += 1
        if j - i < GAP_DAYS:
            known[i:j] = True
        i = j
    return known


def forecast(dd: DailyDriving | None, as_of: date, service_odometers=None,
             vehicle_id: str | None = None) -> Forecast:
    """The car's odometer and driving pattern at the end of `as_of`. `service_odometers`: the car's
    service records with an odometer, (date, km) oldest first (later ones are ignored), used when no
    trip carries an odometer reading."""
    vin = dd.vehicle_id if dd is not None else (vehicle_id or "")
    end = dd.index(as_of) if dd is not None else -1
    if dd is None or end < 0:
        return Forecast(vin, as_of, "no telemetry")
    pad = max(0, end + 1 - len(dd.km))   # the days after the last trip: no trips
    km = np.r_[dd.km[:end + 1], np.zeros(pad)]
    nt = np.r_[dd.trips[:end + 1], np.zeros(pad, dtype=dd.trips.dtype)]
    odo = np.r_[dd.odo[:end + 1], np.full(pad, np.nan)]
    driven = np.flatnonzero(nt > 0)
    if not len(driven):
        return Forecast(vin, as_of, "no telemetry")
    last_trip = dd.day0 + timedelta(days=int(driven[-1]))
    if (as_of - last_trip).days >= STOPPED_DAYS:
        return Forecast(vin, as_of, f"telemetry stopped since {last_trip.isoformat()}", last_trip=last_trip)
    # odometer today
    recs = [(d, k) for d, k in (service_odometers or ()) if d <= as_of and k is not None]
    with_odo = np.flatnonzero(~np.isnan(odo))
    scale = 1.0
    if len(with_odo):
        i = int(with_odo[-1])
        now, src = float(odo[i] + km[i + 1:].sum()), "odometer"
    elif recs:
        sd, skm = recs[-1]
        i = max(-1, (sd - dd.day0).days)
        scale = _coverage(km, dd.day0, recs)
        now, src = float(skm + scale * km[i + 1:].sum()), "service record + trips"
    else:
        now, src = None, None
    # driving pattern over the window
    lo = max(0, end + 1 - WINDOW_DAYS)
    wkm, wnt = km[lo:], nt[lo:]
    known = _known_days(wnt)
    if known.sum() < MIN_KNOWN_DAYS:
        return Forecast(vin, as_of, f"too little driving recorded (under {MIN_KNOWN_DAYS} days in the last "
                                    f"{WINDOW_DAYS})", now, src, last_trip=last_trip)
    wodo = odo[lo:]
    have = np.flatnonzero(~np.isnan(wodo))
    if len(have) >= 2 and have[-1] - have[0] >= 14:
        a, b = int(have[0]), int(have[-1])
        seen = wkm[a + 1:b + 1].sum()
        if seen > 0:   # the odometer saw the trips the logger missed; never shrink (a reading can lag)
            scale = float(np.clip((wodo[b] - wodo[a]) / seen, 1.0, 1.5))
    day_idx = np.arange(lo, end + 1)
    weekend = (dd.day0.weekday() + day_idx) % 7 >= 5
    w = 0.5 ** ((end - day_idx) / HALF_LIFE_DAYS)
    rates = []
    for grp in (~weekend, weekend):
        m = known & grp
        rates.append(float(np.average(wkm[m], weights=w[m]) * scale) if m.any() else float(np.average(wkm[known], weights=w[known]) * scale))
    # the spread of weekly km over full weeks with every day known
    weeks = [wkm[k:k + 7].sum() * scale for k in range(len(wkm) % 7, len(wkm), 7) if known[k:k + 7].all()]
    mean_week = 5 * rates[0] + 2 * rates[1]
    sd = float(np.std(weeks, ddof=1)) if len(weeks) >= 3 else 0.5 * mean_week
    if now is None:
        return Forecast(vin, as_of, "no odometer (no reading in the trips, no service record with km)",
                        None, None, (rates[0], rates[1]), sd, last_trip)
    return Forecast(vin, as_of, OK, now, src, (rates[0], rates[1]), sd, last_trip)


def _coverage(km: np.ndarray, day0: date, recs: list[tuple[date, float]]) -> float:
    """How many km the car drove per km its logger recorded, between its last two service records at
    least 30 days apart while the logger was in (1 when unknown): what unplugged days cost."""
    d2, k2 = recs[-1]
    for d1, k1 in reversed(recs[:-1]):
        if (d2 - d1).days >= 30 and d1 >= day0:
            seen = km[(d1 - day0).days + 1:(d2 - day0).days + 1].sum()
            return float(np.clip((k2 - k1) / seen, 1.0, 1.6)) if seen > 0 else 1.0
    return 1.0


def forecast_fleet(trips: pd.DataFrame, service_events: pd.DataFrame | None, as_of: date,
                   vehicle_ids: list[str] | None = None) -> dict[str, Forecast]:
    """`forecast` for every vehicle (those in `vehicle_ids`, else every vehicle with trips)."""
    dds = daily_driving(trips, as_of)
    recs = service_odometers(service_events)
    ids = vehicle_ids if vehicle_ids is not None else list(dds)
    return {v: forecast(dds.get(v), as_of, recs.get(v), vehicle_id=v) for v in ids}


def service_odometers(service_events: pd.DataFrame | None) -> dict[str, list[tuple[date, float]]]:
    """vehicle → its service records' (date, odometer km), oldest first (one per day: the highest)."""
    if service_events is None or service_events.empty:
        return {}
    ev = service_events[["vehicle_id", "date", "odometer_km"]].dropna(subset=["odometer_km"])
    ev = ev.assign(vehicle_id=ev["vehicle_id"].astype(str), date=pd.to_datetime(ev["date"]).dt.date)
    ev = ev.groupby(["vehicle_id", "date"], sort=True)["odometer_km"].max().reset_index()
    out: dict[str, list[tuple[date, float]]] = {}
    for v, d, k in zip(ev["vehicle_id"], ev["date"], ev["odometer_km"]):
        out.setdefault(v, []).append((d, float(k)))
    return out
