"""Dask engine for the features table: the pandas code path, run per partition of vehicles.

Every feature is a rolling window over one vehicle's own trips, services and DTCs, so a partition
that holds *all* rows of its vehicles computes exactly the rows the single-machine engine computes,
provided every partition uses the same calendar. So:

1. the fleet calendar — first trip day ``day0``, last day ``day_end`` and ``labels_until`` (how far the
   service history reaches, which decides ``label_complete``) — is computed once for the whole fleet,
   exactly as :func:`autopdm.pipeline.features.build_pandas` computes it;
2. the trips are read with ``dask.dataframe.read_parquet`` and shuffled on a hash of the VIN into one
   partition per ~``vehicles_per_partition`` vehicles, so each partition holds *all* trips of its
   vehicles; each partition runs the pandas engine (:func:`autopdm.pipeline.features.build_pandas`, the
   function ``build_features`` calls) with that calendar;
3. the blocks are concatenated (or written in parallel as a Parquet dataset) and ``segment`` gets the
   pandas engine's dtype back.

The part-state features learn the fleet's wear rates from pairs of readings and the use between them
(`autopdm.pipeline.part_state`), which depend on every vehicle: like the calendar, they are computed once
before the blocks — the pairs from the records on the client, the use between them summed over the trip
partitions on the cluster — and handed to every block.

The small tables (vehicles, service events, inspections, DTC events) are read once on the client and sent to
the workers once. (A first version read each block's trips with a pyarrow ``vehicle_id in [...]`` filter: on a trips file
not sorted by vehicle every block scanned the whole file — 40 scans of 610 MB at 10k vehicles.)
Inputs and output may be any fsspec URL (``s3://``, ``gs://``, ``abfs://``, ``memory://``, local paths),
``storage_options`` passed through.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from autopdm import schemas, store
from autopdm.config import Paths
from autopdm.pipeline import features, labels, needs, part_state
from autopdm.pipeline.features import CATEGORICAL, AsOf
from autopdm.pipeline.grid import NO, day_number

DEFAULT_VEHICLES_PER_PARTITION = 250


@dataclass(frozen=True)
class Calendar:
    day0: int           # days since 1970-01-01
    day_end: int
    labels_until: int


@dataclass(frozen=True)
class Sources:
    """Where the inputs live. Each is a Parquet file or directory, local path or fsspec URL."""

    trips: str
    vehicles: str
    service_events: str
    dtc_events: str | None = None
    inspections: str | None = None

    @classmethod
    def from_paths(cls, paths: Paths) -> "Sources":
        dtc = paths.dtc_events
        has_dtc = dtc.exists() and any(dtc.rglob("*.parquet"))
        return cls(str(paths.table("trips")), str(paths.table("vehicles")), str(paths.table("service_events")),
                   str(dtc) if has_dtc else None, str(paths.table("inspections")))

    @classmethod
    def from_url(cls, base: str, dtc_events: str | None = None) -> "Sources":
        """``base`` holds trips.parquet, vehicles.parquet, service_events.parquet and (if the workshop
        records readings) inspections.parquet."""
        base = base.rstrip("/")
        return cls(f"{base}/trips.parquet", f"{base}/vehicles.parquet", f"{base}/service_events.parquet", dtc_events,
                   f"{base}/inspections.parquet")


def _so(url: str, storage_options):
    return storage_options if "://" in str(url) and not str(url).startswith("file://") else None


def _read(url: str | None, table: str, storage_options=None, filters=None, columns=None) -> pd.DataFrame:
    if url is None:
        return schemas.empty(table)
    if table == "dtc_events":
        return _read_dtc(url, storage_options)
    try:
        df = pd.read_parquet(url, filters=filters, columns=columns, storage_options=_so(url, storage_options))
    except FileNotFoundError:
        return schemas.empty(table)
    if "vehicle_id" in df.columns:
        df["vehicle_id"] = df["vehicle_id"].astype(str)
    return df


def _read_dtc(url: str, storage_options=None) -> pd.DataFrame:
    """The DTC dataset (hive-partitioned by vehicle_id and date, as the store writes it), from any fsspec URL."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(str(url), **(_so(url, storage_options) or {}))
    if not fs.exists(root):
        return schemas.empty("dtc_events")
    schema = schemas.TABLES["dtc_events"].append(pa.field("date", pa.string()))
    dataset = ds.dataset(root, filesystem=fs, format="parquet", partitioning="hive", schema=schema,
                         exclude_invalid_files=True)
    df = dataset.to_table(columns=[f.name for f in schemas.TABLES["dtc_events"]]).to_pandas()
    df["vehicle_id"] = df["vehicle_id"].astype(str)
    return df.sort_values(["vehicle_id", "ts"], kind="stable").reset_index(drop=True)


# ------------------------------------------------------------------------------------------ calendar


def fleet_calendar(trip_end_days: np.ndarray, service_events: pd.DataFrame, day_end: int | None = None,
                   inspections: pd.DataFrame | None = None) -> Calendar:
    """The calendar ``build_pandas`` would use for the whole fleet (day0, day_end, labels_until)."""
    days = trip_end_days[trip_end_days > NO]
    if len(days) == 0:
        raise ValueError("no trips: nothing to build features from")
    day0 = int(days.min())
    day_end = int(days.max()) if day_end is None else int(day_end)
    record_days = [day_number(df["date"]) for df in (service_events, inspections) if df is not None and len(df)]
    return Calendar(day0, day_end, labels.labels_until(np.concatenate(record_days or [np.zeros(0, dtype=np.int64)]), day_end))


def _trip_end_days(src: Sources, storage_options=None, client=None) -> np.ndarray:
    """min and max trip end day, computed on the cluster (only the end_ts column is read)."""
    import dask.dataframe as dd


    end = dd.read_parquet(src.trips, columns=["end_ts"], storage_options=_so(src.trips, storage_options))["end_ts"]
    lo, hi = (client.compute([end.min(), end.max()], sync=True) if client is not None
              else [end.min().compute(), end.max().compute()])
    return day_number(pd.Series(pd.to_datetime([lo, hi], utc=True)))


# ------------------------------------------------------------------------------------------ partitions


def vehicle_blocks(vehicle_ids, per_partition: int) -> list[list[str]]:
    ids = sorted(pd.unique(pd.Series(list(vehicle_ids), dtype="object").astype(str)))
    if not ids:
        return []
    n = max(1, math.ceil(len(ids) / max(1, per_partition)))
    return [list(b) for b in np.array_split(np.asarray(ids, dtype=object), n) if len(b)]


def build_partition(trips: pd.DataFrame, vehicles: pd.DataFrame, service_events: pd.DataFrame,
                    dtc_events: pd.DataFrame | None, cal: Calendar, inspections: pd.DataFrame | None = None,
                    wear_rates: pd.DataFrame | None = None) -> pd.DataFrame:
    """The pandas engine on one block of vehicles with the fleet calendar and the fleet's wear rates;
    ``segment`` as plain strings."""
    out = features.build_pandas(trips, vehicles, service_events, dtc_events, None,
                                day0=cal.day0, day_end=cal.day_end, labels_until=cal.labels_until,
                                inspections=inspections, wear_rates=wear_rates)
    if "segment" in out.columns:
        out["segment"] = out["segment"].astype(object)
    return out.reset_index(drop=True)


def _split(df: pd.DataFrame | None, blocks: list[list[str]]) -> list[pd.DataFrame | None]:
    if df is None or not len(df):
        return [df.iloc[:0] if df is not None else None for _ in blocks]
    groups = {k: g for k, g in df.groupby(df["vehicle_id"].astype(str), sort=False)}
    out = []
    for ids in blocks:
        parts = [groups[i] for i in ids if i in groups]
        out.append(pd.concat(parts, ignore_index=True) if parts else df.iloc[:0])
    return out


def finish(df: pd.DataFrame) -> pd.DataFrame:
    """Row order and the ``segment`` categorical as the pandas engine produces them."""
    df = df.sort_values(["vehicle_id", "date"], kind="stable").reset_index(drop=True)
    df["vehicle_id"] = df["vehicle_id"].astype(object)  # dask turns object columns into pyarrow strings
    if "segment" in df.columns:  # a string column in the pandas engine (a categorical in older versions)
        seg = df["segment"].astype("string")
        df["segment"] = pd.Categorical(seg.to_numpy()) if "segment" in CATEGORICAL else seg
    return df


def _build_shuffled(trips: pd.DataFrame, vehicles: pd.DataFrame, service_events: pd.DataFrame,
                    dtc_events: pd.DataFrame | None, inspections: pd.DataFrame | None, wear_rates: pd.DataFrame,
                    cal: Calendar, meta: pd.DataFrame) -> pd.DataFrame:
    """One shuffled partition: all trips of the vehicles it holds; their other rows picked here."""
    trips = trips.drop(columns=["_bucket"])
    if trips.empty:
        return meta
    ids = pd.unique(trips["vehicle_id"].astype(str))
    pick = lambda df: df[df["vehicle_id"].astype(str).isin(ids)] if df is not None and len(df) else df  # noqa: E731
    return build_partition(trips, pick(vehicles), pick(service_events), pick(dtc_events), cal, pick(inspections), wear_rates)


def _pair_use_partial(trips: pd.DataFrame, pairs: pd.DataFrame, vehicles: pd.DataFrame, day_end: int) -> pd.DataFrame:
    """The use between each pair of readings seen in one partition of trips (partitions add up)."""
    out = part_state.pair_use(pairs, part_state.trips_on_days(trips, vehicles, day_end))
    return out.assign(pair=np.arange(len(pairs), dtype=np.int64))


def _fleet_wear_rates(trips, vehicles: pd.DataFrame, service: pd.DataFrame, inspections: pd.DataFrame | None,
                      cal: Calendar, client=None) -> pd.DataFrame:
    """The fleet's wear rates: pairs of readings from the records, the use between them summed over the
    (unshuffled) trip partitions on the cluster."""
    import dask

    pairs = part_state.reading_pairs(service, inspections)
    if not len(pairs):
        return part_state.fleet_wear_rates(pairs.assign(use=np.zeros(0), n_before=np.zeros(0)))
    meta = pd.DataFrame({"use": np.zeros(0), "n_before": np.zeros(0), "pair": np.zeros(0, dtype=np.int64)})
    small = [dask.delayed(x, pure=True) for x in (pairs, vehicles)]
    partial = trips.map_partitions(_pair_use_partial, *small, cal.day_end, meta=meta, align_dataframes=False)
    total = partial.groupby("pair")[["use", "n_before"]].sum()
    total = client.compute(total, sync=True) if client is not None else total.compute()
    total = total.reindex(np.arange(len(pairs)), fill_value=0.0)
    return part_state.fleet_wear_rates(pairs.assign(use=total["use"].to_numpy(), n_before=total["n_before"].to_numpy()))


def features_dask(src: Sources, *, vehicles_per_partition: int = DEFAULT_VEHICLES_PER_PARTITION,
                  storage_options: dict | None = None, client=None, as_of=None):
    """Lazy Dask DataFrame of the features table, partitioned by vehicle.

    The trips are read with ``dask.dataframe.read_parquet`` (any fsspec URL) and shuffled on a hash of the
    VIN into ``ceil(vehicles / vehicles_per_partition)`` partitions, so every partition holds all trips of
    its vehicles; each partition then runs the pandas engine with the fleet calendar. The small tables
    (vehicles, service events, DTC events) go to the workers once. ``segment`` is object-typed in the
    partitions; :func:`finish` restores the pandas engine's dtype. ``as_of``: as ``build_features``.
    """
    import dask
    import dask.dataframe as dd


    vehicles = _read(src.vehicles, "vehicles", storage_options)
    service = _read(src.service_events, "service_events", storage_options)
    insp = _read(src.inspections, "inspections", storage_options) if src.inspections else None
    dtc = _read(src.dtc_events, "dtc_events", storage_options) if src.dtc_events else None
    trips = dd.read_parquet(src.trips, storage_options=_so(src.trips, storage_options))
    # meta from one vehicle, computed here (cheap) so no partition is computed twice
    one = sorted(vehicles["vehicle_id"].astype(str))[:1]
    t1 = _read(src.trips, "trips", storage_options, filters=[("vehicle_id", "in", one)])
    day_end = None
    if as_of is not None:
        cut = AsOf(as_of)
        service, dtc, trips, t1, day_end = (cut.service_events(service), cut.dtc_events(dtc), cut.trips(trips),
                                            cut.trips(t1), cut.day_end)
        insp = cut.inspections(insp)
    # day0 is the fleet's first trip day, which a cut at the end does not move
    cal = fleet_calendar(_trip_end_days(src, storage_options, client), service, day_end, insp)
    rates = _fleet_wear_rates(trips, vehicles, service, insp, cal, client)
    n_vehicles = int(vehicles["vehicle_id"].nunique())
    if n_vehicles == 0:
        raise ValueError("no vehicles")
    nparts = max(1, math.ceil(n_vehicles / max(1, vehicles_per_partition)))
    trips = trips.map_partitions(_with_bucket, nparts, meta=trips._meta.assign(_bucket=np.int64(0)))
    trips = trips.shuffle("_bucket", npartitions=nparts)
    meta = build_partition(t1, vehicles[vehicles["vehicle_id"].isin(one)], service, dtc, cal, insp, rates).iloc[:0]
    small = [dask.delayed(x, pure=True) if x is not None else None for x in (vehicles, service, dtc, insp, rates)]
    return trips.map_partitions(_build_shuffled, *small, cal, meta, meta=meta, enforce_metadata=False,
                                align_dataframes=False)


def _with_bucket(df: pd.DataFrame, nparts: int) -> pd.DataFrame:
    h = pd.util.hash_pandas_object(df["vehicle_id"].astype(str), index=False).to_numpy()
    return df.assign(_bucket=(h % np.uint64(nparts)).astype(np.int64))


def build_features_dask(trips: pd.DataFrame, vehicles: pd.DataFrame, service_events: pd.DataFrame,
                        dtc_events: pd.DataFrame | None = None, *, inspections: pd.DataFrame | None = None, client=None,
                        vehicles_per_partition: int = DEFAULT_VEHICLES_PER_PARTITION) -> pd.DataFrame:
    """In-memory variant (as ``build_features``): partitions given DataFrames over the cluster.

    For tables already in memory (tests, notebooks); at scale use :func:`run` so workers read their own trips.
    """
    import dask

    cal = fleet_calendar(day_number(trips["end_ts"]), service_events, None, inspections)
    rates = part_state.fleet_rates_from(trips, vehicles, service_events, inspections, cal.day_end)
    blocks = vehicle_blocks(trips["vehicle_id"].astype(str), vehicles_per_partition)
    parts = zip(_split(trips, blocks), _split(vehicles, blocks), _split(service_events, blocks), _split(dtc_events, blocks),
                _split(inspections, blocks))
    tasks = [dask.delayed(build_partition, pure=True)(t, v, s, d, cal, i, rates) for t, v, s, d, i in parts]
    res = client.compute(tasks, sync=True) if client is not None else dask.compute(*tasks)
    return finish(pd.concat(res, ignore_index=True))


# ------------------------------------------------------------------------------------------ cluster


@contextlib.contextmanager
def local_client(n_workers: int | None = None, threads_per_worker: int = 1, processes: bool = True,
                 memory_limit: str | None = "auto") -> Iterator:
    """A LocalCluster on 127.0.0.1, dashboard off. Call under ``if __name__ == "__main__":`` in scripts."""
    from distributed import Client, LocalCluster

    n = n_workers or max(1, (os.cpu_count() or 1))
    with LocalCluster(n_workers=n, threads_per_worker=threads_per_worker, processes=processes,
                      protocol="tcp", host="127.0.0.1", dashboard_address=None, memory_limit=memory_limit) as cluster, \
            Client(cluster) as client:
        yield client


def current_client():
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


def run(paths: Paths | None = None, *, src: Sources | None = None, out: str | None = None, client=None,
        vehicles_per_partition: int = DEFAULT_VEHICLES_PER_PARTITION, storage_options: dict | None = None,
        n_workers: int | None = None, as_of=None) -> pd.DataFrame | str:
    """What ``autopdm features --engine dask`` calls.

    Reads the standard tables under ``paths`` (or ``src``: any fsspec URLs), computes on ``client`` (else the
    current Client, else a temporary LocalCluster of ``n_workers`` processes). Default: collects the result and
    writes the ``features`` table, and the ``needs`` its labels come from, through the store (returns the
    DataFrame). With ``out`` (a directory URL) the workers write a Parquet dataset there in parallel, one file
    per block (returns ``out``).
    """
    paths = paths or Paths.from_env()
    src = src or Sources.from_paths(paths)
    client = client or current_client()
    ctx = contextlib.nullcontext(client) if client is not None else local_client(n_workers)
    with ctx as c:
        ddf = features_dask(src, vehicles_per_partition=vehicles_per_partition, storage_options=storage_options, client=c,
                            as_of=as_of)
        if out is not None:
            ddf = ddf.assign(segment=ddf["segment"].astype("string"))
            c.compute(ddf.to_parquet(out, storage_options=_so(out, storage_options), write_index=False, compute=False),
                      sync=True)
            return out
        df = c.compute(ddf, sync=True)
    df = finish(df)
    store.write_table(df, "features", paths)
    write_needs(paths, src, storage_options, as_of)
    return df


def write_needs(paths: Paths, src: Sources, storage_options: dict | None = None, as_of=None) -> pd.DataFrame:
    """The `needs` table from the records (as of `as_of`), beside the features."""
    service = _read(src.service_events, "service_events", storage_options)
    insp = _read(src.inspections, "inspections", storage_options) if src.inspections else None
    if as_of is not None:
        cut = AsOf(as_of)
        service, insp = cut.service_events(service), cut.inspections(insp)
    nd = needs.needs_table(service, insp)
    store.write_table(nd, "needs", paths)
    return nd
