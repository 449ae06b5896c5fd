"""Daily features and labels: one row per (vehicle_id, date), point-in-time correct.

A feature row for day d may use exactly the trips that *ended* before the end of d, the DTCs stamped
before the end of d and the service events dated on or before d; labels (`autopdm.pipeline.labels`)
look forward from d. `build_features` is the entry point.

How the table is built. `autopdm.pipeline.daily` puts the trips on a dense vehicles × days grid of
daily sums (`Context`); then each family of `FAMILIES` adds its columns, in order, reading the
context and the columns before it: rolling usage windows, rolling extremes, trends, telemetry
coverage, odometer, vehicle attributes (`autopdm.pipeline.families`), since the last service of
each component with its wear proxies, workshop visits, inspections of each component
(`autopdm.pipeline.component_families`, which iterates the component registry and adds the extra
families a component names), the registration anniversary and DTC counts. No Python loop runs per
vehicle or per day; loops are over families, components and feature definitions.

Every computation is per vehicle, so a distributed engine partitions the inputs by `vehicle_id` and
runs `build_pandas` on each partition with the same calendar (`day0`, `day_end`, `labels_until`):
`autopdm.pipeline.features_dask`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np
import pandas as pd

from autopdm import store
from autopdm.pipeline import component_families, families, needs, part_state
from autopdm.pipeline.daily import DAILY_USE, Context, crank_threshold_v, make_context
from autopdm.pipeline.families import SEGMENT_CODES, WINDOWS, Family, segment_code
from autopdm.pipeline.labels import (EARLY_WARNING, HORIZON_DAYS, LABEL_PREFIXES, build_labels, is_label_column,
                                     label_columns)

__all__ = ["ATTRIBUTE_COLUMNS", "AsOf", "CATEGORICAL", "DAILY_USE", "EARLY_WARNING", "FAMILIES", "HORIZON_DAYS",
           "ID_COLUMNS", "LABEL_PREFIXES", "SEGMENT_CODES", "WINDOWS", "build_features", "build_pandas",
           "crank_threshold_v", "feature_columns", "is_label_column", "label_columns", "segment_code"]

ID_COLUMNS = ["vehicle_id", "date"]
# `segment` stays a readable string column (not a model input); the model sees a stable integer
# code, declared categorical to LightGBM: numbers survive JSON, MLflow schemas and pyfunc serving.
ATTRIBUTE_COLUMNS = ["segment"]
CATEGORICAL = ["segment_code"]

# the features table's families, in column order
FAMILIES: tuple[Family, ...] = (
    families.rolling_usage,
    families.rolling_extremes,
    families.trends,
    families.telemetry_coverage,
    families.odometer,
    families.vehicle_attributes,
    component_families.since_service,
    families.workshop_visits,
    component_families.inspections,
    families.registration_anniversary,
    families.dtc_counts,
)


def feature_columns(df: pd.DataFrame) -> list[str]:
    """Model inputs: everything except ids, labels and readable attributes."""
    skip = set(ID_COLUMNS) | set(ATTRIBUTE_COLUMNS)
    return [c for c in df.columns if c not in skip and not is_label_column(c)]


def build_pandas(
    trips: pd.DataFrame,
    vehicles: pd.DataFrame,
    service_events: pd.DataFrame | None,
    dtc_events: pd.DataFrame | None,
    dates: Iterable | None = None,
    day0: int | None = None,
    day_end: int | None = None,
    labels_until: int | None = None,
    inspections: pd.DataFrame | None = None,
    wear_rates: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The features table in memory. day0, day_end, labels_until (day numbers) fix the calendar, and
    wear_rates the fleet's learned wear rates (`part_state.fleet_wear_rates`), so that partitions of a
    fleet computed apart line up (default: from these inputs, see `make_context`)."""
    component_families.check_registry()
    ctx = make_context(trips, vehicles, service_events, dtc_events, dates, day0, day_end, labels_until, inspections)
    if ctx is None:
        return _empty_frame()
    ctx = dataclasses.replace(ctx, wear_rates=wear_rates if wear_rates is not None else part_state.context_wear_rates(ctx))
    F: dict[str, np.ndarray] = {}
    for family in FAMILIES:
        F.update(family(ctx, F))
    return _table(ctx, F, build_labels(known_needs(ctx), ctx.grid.vids, ctx.day0, ctx.T, ctx.labels_until))


def known_needs(ctx: Context) -> pd.DataFrame:
    """The needs the records known by the context's `labels_until` show (day numbers)."""
    until = ctx.labels_until
    return needs.derive(ctx.events[ctx.events["day"] <= until], ctx.inspections[ctx.inspections["day"] <= until])


def _table(ctx: Context, F: dict[str, np.ndarray], L: dict[str, np.ndarray]) -> pd.DataFrame:
    """Rows from each vehicle's first telemetry day on (or the requested dates): ids, features, segment, labels."""
    rows = ctx.tidx >= ctx.first_tel[:, None]
    if ctx.want is not None:
        sel = np.zeros(ctx.T, dtype=bool)
        w_idx = ctx.want - ctx.day0
        sel[w_idx[(w_idx >= 0) & (w_idx < ctx.T)]] = True
        rows &= sel[None, :]
    cells = np.flatnonzero(rows)  # row-major: by vehicle, then day
    vi_r, ti_r = np.divmod(cells, ctx.T)
    out = {
        "vehicle_id": ctx.grid.vids.to_numpy()[vi_r],
        "date": (ti_r + ctx.day0).astype("datetime64[D]").astype("datetime64[ns]"),
    }
    for k, a in F.items():
        out[k] = np.reshape(a, -1)[cells].astype(np.float32)
    veh = ctx.vehicles
    seg = veh["segment"].astype("string").to_numpy() if "segment" in veh else np.full(ctx.V, None)
    out["segment"] = pd.array(seg[vi_r], dtype="string")
    for k, a in L.items():
        out[k] = np.reshape(a, -1)[cells]
    return pd.DataFrame(out)


def _empty_frame() -> pd.DataFrame:
    return pd.DataFrame({"vehicle_id": pd.Series(dtype=str), "date": pd.Series(dtype="datetime64[ns]")})


def build_features(
    trips: pd.DataFrame,
    vehicles: pd.DataFrame,
    service_events: pd.DataFrame,
    dtc_events: pd.DataFrame | None = None,
    dates: Iterable | None = None,
    as_of=None,
    inspections: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per (vehicle_id, date) with features and labels (see module docstring).

    dates: only these dates (each vehicle from its first telemetry day); default every day from
    each vehicle's first trip to the last trip day of the fleet (or `as_of`).
    as_of: ignore all trips, DTCs, service events and inspections after this date (as if run on
    that day); rows end at as_of.
    inspections: the workshop's readings (the part-state features, and the needs the labels come
    from); without them a part's replace/repair events stand in for its needs.
    """
    kwargs = {}
    if as_of is not None:
        cut = AsOf(as_of)
        trips, service_events, dtc_events = cut.trips(trips), cut.service_events(service_events), cut.dtc_events(dtc_events)
        inspections = cut.inspections(inspections)
        kwargs["day_end"] = cut.day_end
    return build_pandas(trips, vehicles, service_events, dtc_events, dates, inspections=inspections, **kwargs)


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
        """Dated records (service events, inspections) up to as_of."""
        if service_events is None or not len(service_events):
            return service_events
        return service_events[pd.to_datetime(service_events["date"]) < self.cut.tz_localize(None)]

    inspections = service_events


def build_from_store(paths, as_of=None, write: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Features and the needs they are labelled from, built from a home's stored tables (trips,
    records, DTCs) with the pandas engine; written beside each other unless `write` is False.
    The one way a command, training and the demo build features from what is stored."""
    trips = store.read_table("trips", paths)
    if trips.empty:
        raise FileNotFoundError(f"no trips in {paths.table('trips')}: run `autopdm simulate` or `autopdm trips` first")
    service, insp = store.read_table("service_events", paths), store.read_table("inspections", paths)
    df = build_features(trips, store.read_table("vehicles", paths), service, store.read_dtc_events(paths),
                        as_of=as_of, inspections=insp)
    if as_of is not None:
        cut = AsOf(as_of)
        service, insp = cut.service_events(service), cut.inspections(insp)
    nd = needs.needs_table(service, insp)
    if write:
        store.write_table(df, "features", paths)
        store.write_table(nd, "needs", paths)
    return df, nd
