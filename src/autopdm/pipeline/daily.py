"""The daily grid of trip quantities, and the context every feature family reads.

Every trip is assigned to the UTC day its `end_ts` falls on: a feature row for day d may use
exactly the trips that *ended* before the end of d. Per trip we keep use quantities (summed per
day: `DAILY_USE`) and readings (summed and counted per day, so that windows can average them:
`DAILY_READINGS`); `COMBINED_USE` are sums of use quantities. The wear quantities of the
component registry (`Component.wear`) name these.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from autopdm.components import OTHER, Component
from autopdm.pipeline import labels
from autopdm.pipeline.grid import NO, Grid, cum, day_number, div, ffill_index, take

SHORT_TRIP_KM = 5.0
COLD_C = 0.0
HOT_C = 25.0
COLD_ENGINE_DELTA_C = 15.0
OVERNIGHT_H = (6.0, 24.0)

DAILY_USE = ("one", "distance_km", "duration_s", "idle_s", "short", "brake_energy", "brake_work_mj", "harsh_brake",
             "harsh_accel", "hot_km")
DAILY_READINGS = ("rest_v", "crank_v", "crank_margin", "charge_v", "ambient", "cold_start", "tire_kpa",
                  "crank_margin_cold", "rest_v_overnight")
COMBINED_USE = {"harsh_events": ("harsh_brake", "harsh_accel")}
# what `Component.wear` and `Component.wear_since_pass` may name
USE_QUANTITIES = (*DAILY_USE, *DAILY_READINGS, *(f"n_{r}" for r in DAILY_READINGS), *COMBINED_USE)
SERVICE_COLUMNS = ["vehicle_id", "date", "component", "action", "odometer_km"]
INSPECTION_COLUMNS = ["inspection_id", "vehicle_id", "date", "odometer_km", "component", "position", "measurement", "value",
                      "verdict"]

# minimum acceptable voltage under crank load by temperature (published: 9.6 V at >= 20 °C,
# 9.3 V at 4 °C, 8.5 V at -18 °C); the margin above it is a temperature-free battery signal
_CRANK_T = np.array([-18.0, 4.0, 20.0])
_CRANK_V = np.array([8.5, 9.3, 9.6])


def crank_threshold_v(temp_c) -> np.ndarray:
    t = np.asarray(temp_c, dtype=float)
    return np.where(np.isnan(t), 9.6, np.interp(t, _CRANK_T, _CRANK_V))


def prepare_trips(trips: pd.DataFrame, vehicles: pd.DataFrame) -> pd.DataFrame:
    """One row per trip: its vehicle, its day, and the per-trip quantities the grid sums."""
    t = trips
    mass = vehicles.set_index("vehicle_id")["curb_mass_kg"] if "curb_mass_kg" in vehicles else pd.Series(dtype=float)
    out = pd.DataFrame({"vehicle_id": t["vehicle_id"].astype(str).to_numpy(), "day": day_number(t["end_ts"])})

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
    cold = (col("start_coolant_temp_c") - amb) < COLD_ENGINE_DELTA_C
    out["crank_margin_cold"] = np.where(cold, out["crank_margin"], np.nan)
    out["rest_v_overnight"] = np.where(_overnight(out["vehicle_id"].to_numpy(), t), out["rest_v"], np.nan)
    return out


def _overnight(vids: np.ndarray, t: pd.DataFrame) -> np.ndarray:
    """Whether each trip started after an overnight park (6-24 h after the vehicle's previous trip ended)."""
    start = pd.to_datetime(t["start_ts"], utc=True).to_numpy("datetime64[ms]").astype("int64") / 3.6e6
    end = pd.to_datetime(t["end_ts"], utc=True).to_numpy("datetime64[ms]").astype("int64") / 3.6e6
    order = np.lexsort((start, pd.factorize(vids)[0]))  # by vehicle (codes sort faster than VINs), then start
    vs, ss, es = vids[order], start[order], end[order]
    gap = np.full(len(t), np.nan)
    gap[order] = np.where(np.r_[False, vs[1:] == vs[:-1]], ss - np.r_[np.nan, es[:-1]], np.nan)
    return (gap >= OVERNIGHT_H[0]) & (gap <= OVERNIGHT_H[1])


@dataclass(eq=False)
class Context:
    """What the feature families share: the grid, the trips on it, their daily sums, the records."""

    grid: Grid
    trips: pd.DataFrame        # `prepare_trips` rows on the grid
    cell: np.ndarray           # each trip's flat grid cell
    sums: dict[str, np.ndarray]     # daily sums: DAILY_USE, DAILY_READINGS and "n_<reading>" counts
    cums: dict[str, np.ndarray]     # their `cum` arrays (one column longer)
    vehicle_table: pd.DataFrame  # the vehicles table as given
    events: pd.DataFrame       # dated service events of the grid's vehicles (with `day`), to labels_until and past
    dtc_events: pd.DataFrame | None
    labels_until: int
    want: np.ndarray | None    # requested day numbers, or None for every day
    inspections: pd.DataFrame = None  # dated readings of the grid's vehicles (with `day`), to labels_until and past
    wear_rates: pd.DataFrame | None = None  # the fleet's learned wear rates (`part_state.fleet_wear_rates`)

    @property
    def V(self) -> int:
        return self.grid.V

    @property
    def T(self) -> int:
        return self.grid.T

    @property
    def day0(self) -> int:
        return self.grid.day0

    @functools.cached_property
    def tidx(self) -> np.ndarray:
        """Each cell's day index (vehicles × days)."""
        return np.broadcast_to(np.arange(self.T), (self.V, self.T))

    @functools.cached_property
    def use(self) -> dict[str, np.ndarray]:
        """`cum` arrays of every use quantity a wear proxy may name (daily sums and combined ones)."""
        out = dict(self.cums)
        for name, parts in COMBINED_USE.items():
            out[name] = functools.reduce(np.add, (self.cums[p] for p in parts))
        return out

    @functools.cached_property
    def has_trips(self) -> np.ndarray:
        return self.sums["one"] > 0

    @functools.cached_property
    def first_tel(self) -> np.ndarray:
        """Per vehicle: day index of its first trip (T when none)."""
        has = self.has_trips
        return np.where(has.any(axis=1), has.argmax(axis=1), self.T)

    @functools.cached_property
    def km_per_day(self) -> np.ndarray:
        """Distance per day since the first trip, to date."""
        days = np.maximum(self.tidx - self.first_tel[:, None] + 1, 0).astype(float)
        return div(self.cums["distance_km"][:, 1:], days)

    @functools.cached_property
    def odometer(self) -> np.ndarray:
        """Last odometer reading on or before the day + the distance driven since that reading's day."""
        T, dist = self.T, self.cums["distance_km"]
        odo_daily = self.grid.reduce(self.cell, self.trips["odometer"].to_numpy(), "max")
        mark = ffill_index(np.where(~np.isnan(odo_daily), self.tidx, NO))
        last = np.take_along_axis(np.nan_to_num(odo_daily), np.clip(mark, 0, T - 1), axis=1)
        return np.where(mark > NO, last + dist[:, 1:] - take(dist, mark), np.nan)

    @functools.cached_property
    def vehicles(self) -> pd.DataFrame:
        """Vehicle attributes, one row per grid vehicle in grid order."""
        return self.vehicle_table.drop_duplicates("vehicle_id").set_index("vehicle_id").reindex(self.grid.vids)

    @functools.cached_property
    def registration_day(self) -> np.ndarray:
        """Per vehicle: day number of its first registration (NO when unknown)."""
        veh = self.vehicles
        return day_number(veh["first_registration_date"]) if "first_registration_date" in veh else np.full(self.V, NO)

    @functools.cached_property
    def registration_idx(self) -> np.ndarray:
        reg = self.registration_day
        return np.where(reg > NO, reg - self.day0, NO)

    @functools.cached_property
    def visits(self) -> pd.DataFrame:
        """Service events up to the grid's last day: the workshop history known on some grid day."""
        return self.events[self.events["day"] <= self.grid.day0 + self.T - 1]

    @functools.cached_property
    def routine_visits(self) -> pd.DataFrame:
        """Routine services: the oil-and-filter visit, recorded as a replace of no registered component."""
        v = self.visits
        return v[(v["component"] == OTHER) & (v["action"] == "replace")]

    @functools.cached_property
    def on_routine_day(self) -> np.ndarray:
        """Per visit: whether the vehicle had a routine service that day."""
        v, r = self.visits, self.routine_visits
        r_key = pd.MultiIndex.from_arrays([r["vehicle_id"].astype(str), r["day"]])
        return pd.MultiIndex.from_arrays([v["vehicle_id"].astype(str), v["day"]]).isin(r_key)

    @functools.cached_property
    def readings(self) -> pd.DataFrame:
        """Inspections up to the grid's last day: the readings known on some grid day."""
        return self.inspections[self.inspections["day"] <= self.grid.day0 + self.T - 1]

    def resolved(self, comp: Component) -> pd.DataFrame:
        """Visits that resolved a need of `comp` (replaced or repaired it)."""
        v = self.visits
        return v[(v["component"] == comp.name) & v["action"].isin(comp.resolving_actions)]


def dated(df: pd.DataFrame | None, columns: list[str]) -> pd.DataFrame:
    """Records with a `day` column (day number), or an empty frame of these columns."""
    df = df if df is not None and len(df) else pd.DataFrame(columns=columns)
    return df.assign(day=day_number(df["date"]) if len(df) else np.zeros(0, dtype=np.int64))


def make_context(trips: pd.DataFrame, vehicles: pd.DataFrame, service_events: pd.DataFrame | None,
                 dtc_events: pd.DataFrame | None, dates: Iterable | None = None, day0: int | None = None,
                 day_end: int | None = None, labels_until: int | None = None,
                 inspections: pd.DataFrame | None = None) -> Context | None:
    """The grid from the first trip day (or `day0`) to the last (or `day_end`), with its daily sums.

    None when there are no dated trips on or before `day_end`. `labels_until` defaults to how far the records
    reach (see `labels.labels_until`).
    """
    tr = prepare_trips(trips, vehicles)
    tr = tr[tr["day"] > NO]
    if tr.empty:
        return None
    want = np.unique(day_number(pd.Series(pd.to_datetime(list(dates))))) if dates is not None else None
    day0 = int(tr["day"].min()) if day0 is None else day0
    if day_end is None:
        day_end = int(want.max()) if want is not None else int(tr["day"].max())
    if day_end < day0:  # asked only for days before the first trip
        return None
    se = dated(service_events, SERVICE_COLUMNS)
    insp = dated(inspections, INSPECTION_COLUMNS)
    if labels_until is None:
        labels_until = labels.labels_until(np.r_[se["day"].to_numpy(), insp["day"].to_numpy()], day_end)
    tr = tr[tr["day"] <= day_end]
    g = Grid(pd.Index(np.sort(tr["vehicle_id"].unique())), day0, day_end - day0 + 1)
    cell, ok = g.index(tr["vehicle_id"], tr["day"].to_numpy())
    tr = tr[ok]
    sums = {c: g.sum(cell, tr[c].to_numpy()) for c in DAILY_USE}
    for c in DAILY_READINGS:
        sums[c] = g.sum(cell, tr[c].to_numpy())
        sums["n_" + c] = g.count(cell, tr[c].to_numpy())
    events = se[(se["day"] > NO) & se["vehicle_id"].isin(g.vids)]
    insp = insp[(insp["day"] > NO) & insp["vehicle_id"].isin(g.vids)]
    return Context(grid=g, trips=tr, cell=cell, sums=sums, cums={k: cum(v) for k, v in sums.items()},
                   vehicle_table=vehicles, events=events, dtc_events=dtc_events, labels_until=labels_until, want=want,
                   inspections=insp)
