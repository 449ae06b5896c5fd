"""The pandas feature engine over a stored fleet in blocks of vehicles, in bounded memory.

`features.build_from_store` holds every trip and every feature row at once: ~150 float grids of
vehicles × days plus the trips and the output, which ran out of 23 GB at 10,000 vehicles × 730 days.
Here the trips are read once and split by vehicle block into temporary Parquet files; the fleet's
calendar and wear rates are computed first (from all trips, as the whole-fleet engine does), and then
each block runs the very same `build_pandas` with them — the recipe of the Dask engine
(`features_dask`), without a cluster. The table is written block by block and never held whole; it is
identical to the whole-fleet table (tests/test_scale.py).
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from autopdm import store
from autopdm.config import Paths
from autopdm.pipeline import needs, part_state
from autopdm.pipeline.features import AsOf
from autopdm.pipeline.features_dask import build_partition, finish, fleet_calendar, vehicle_blocks
from autopdm.pipeline.grid import NO, day_number

DEFAULT_VEHICLES_PER_BLOCK = 250  # ~1 GB per block of 730 days (the Dask engine's partition size)
# trip columns no feature reads: the id strings are a third of the trips' memory
_UNUSED_TRIP_COLUMNS = ("trip_id",)


@dataclass
class FeaturesWritten:
    rows: int = 0
    columns: list | None = None
    vehicles: int = 0
    first: pd.Timestamp | None = None
    last: pd.Timestamp | None = None
    path: Path | None = None

    @property
    def n_features(self) -> int:
        return len([c for c in self.columns or [] if not c.startswith(("label_", "days_to_need_"))]) - 3


def _pick(df: pd.DataFrame | None, ids) -> pd.DataFrame | None:
    if df is None or not len(df):
        return df
    return df[df["vehicle_id"].astype(str).isin(ids)]


def _split_trips(path: Path, cut: AsOf | None, per_block: int, tmp: Path) -> tuple[list[list[str]], list[Path], np.ndarray]:
    """Read the trips once, batch by batch, into one temporary file per vehicle block. Returns the blocks,
    their files and the first and last trip day."""
    pf = pq.ParquetFile(path)
    cols = [c for c in pf.schema_arrow.names if c not in _UNUSED_TRIP_COLUMNS]
    vins: set[str] = set()
    lo, hi = None, None
    for b in pf.iter_batches(columns=["vehicle_id", "end_ts"], batch_size=1 << 20):
        t = pa.Table.from_batches([b])
        if cut is not None:
            t = t.filter(pc.less(t["end_ts"], pa.scalar(cut.cut_utc, type=t.schema.field("end_ts").type)))
        vins.update(pc.unique(t["vehicle_id"]).to_pylist())
        if t.num_rows:
            mm = pc.min_max(t["end_ts"])
            lo = mm["min"].as_py() if lo is None else min(lo, mm["min"].as_py())
            hi = mm["max"].as_py() if hi is None else max(hi, mm["max"].as_py())
    vins.discard(None)
    blocks = vehicle_blocks(vins, per_block)
    if not blocks:
        raise ValueError("no trips: nothing to build features from")
    firsts = np.array([b[0] for b in blocks], dtype=object)
    files = [tmp / f"block-{i:05d}.parquet" for i in range(len(blocks))]
    writers: dict[int, pq.ParquetWriter] = {}
    try:
        for b in pf.iter_batches(columns=cols, batch_size=1 << 20):
            t = pa.Table.from_batches([b])
            if cut is not None:
                t = t.filter(pc.less(t["end_ts"], pa.scalar(cut.cut_utc, type=t.schema.field("end_ts").type)))
            vid = t["vehicle_id"].to_numpy(zero_copy_only=False).astype(object)
            which = np.searchsorted(firsts, vid, side="right") - 1
            for i in np.unique(which):
                if i not in writers:
                    writers[i] = pq.ParquetWriter(files[i], t.schema)
                writers[i].write_table(t.filter(pa.array(which == i)))
    finally:
        for w in writers.values():
            w.close()
    end_days = day_number(pd.Series(pd.to_datetime([lo, hi], utc=True)))
    return blocks, files, end_days


def _read_block(f: Path) -> pd.DataFrame:
    return pq.read_table(f).to_pandas() if f.exists() else pd.DataFrame()


def build_chunked(paths: Paths, as_of=None, vehicles_per_block: int = DEFAULT_VEHICLES_PER_BLOCK,
                  write: bool = True, out: Path | None = None) -> FeaturesWritten:
    """The features table (and its needs) of a home, a block of vehicles at a time; same table as
    `features.build_from_store`. Writes `features` and `needs` unless `write` is False (then only `out`,
    if given, gets the features)."""
    trips_path = paths.table("trips")
    if not trips_path.exists():
        raise FileNotFoundError(f"no trips in {trips_path}: run `autopdm simulate` or `autopdm trips` first")
    vehicles = store.read_table("vehicles", paths)
    service, insp = store.read_table("service_events", paths), store.read_table("inspections", paths)
    dtc = store.read_dtc_events(paths)
    cut = AsOf(as_of) if as_of is not None else None
    if cut is not None:
        service, insp, dtc = cut.service_events(service), cut.inspections(insp), cut.dtc_events(dtc)
    target = out or paths.table("features")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = target.parent / f".blocks-{uuid.uuid4().hex}"
    tmp_dir.mkdir()
    tmp_out = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    res = FeaturesWritten(path=target)
    writer = None
    try:
        blocks, files, end_days = _split_trips(trips_path, cut, vehicles_per_block, tmp_dir)
        if end_days[0] <= NO:
            raise ValueError("no trips: nothing to build features from")
        cal = fleet_calendar(end_days, service, cut.day_end if cut is not None else None, insp)
        # the fleet's wear rates: the use between pairs of readings, summed over the blocks (they add up)
        pairs = part_state.reading_pairs(service, insp)
        use, n_before = np.zeros(len(pairs)), np.zeros(len(pairs))
        if len(pairs):
            for f in files:
                pu = part_state.pair_use(pairs, part_state.trips_on_days(_read_block(f), vehicles, cal.day_end))
                use += pu["use"].to_numpy()
                n_before += pu["n_before"].to_numpy()
        rates = part_state.fleet_wear_rates(pairs.assign(use=use, n_before=n_before))
        schema = None
        for ids, f in zip(blocks, files):
            trips = _read_block(f)
            if trips.empty:
                continue
            df = finish(build_partition(trips, _pick(vehicles, ids), _pick(service, ids), _pick(dtc, ids), cal,
                                        _pick(insp, ids), rates))
            del trips
            if df.empty:
                continue
            tbl = pa.Table.from_pandas(df, preserve_index=False)
            if writer is None:
                schema = tbl.schema
                writer = pq.ParquetWriter(tmp_out, schema, compression="zstd")
                res.columns = list(df.columns)
            writer.write_table(tbl.cast(schema))
            res.rows += len(df)
            res.vehicles += df["vehicle_id"].nunique()
            first, last = df["date"].min(), df["date"].max()
            res.first = first if res.first is None else min(res.first, first)
            res.last = last if res.last is None else max(res.last, last)
        if writer is None:
            raise ValueError("no feature rows: no vehicle has telemetry in the calendar")
        writer.close()
        writer = None
        with open(tmp_out, "rb") as fh:
            os.fsync(fh.fileno())
        if write or out is not None:
            os.replace(tmp_out, target)
        if write:
            store.write_table(needs.needs_table(service, insp), "needs", paths)
    finally:
        if writer is not None:
            writer.close()
        tmp_out.unlink(missing_ok=True)
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return res
