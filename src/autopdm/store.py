"""Parquet store under $AUTOPDM_HOME.

Samples and DTC events are appended as small immutable files, hive-partitioned by vehicle and
date. Every file is written to a temporary name and renamed into place, so a crash leaves either
the whole file or nothing. Derived tables (trips, vehicles, service_events, features) are
single files replaced atomically.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from autopdm import schemas
from autopdm.config import Paths


def atomic_write_parquet(table: pa.Table, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@dataclass
class AppendResult:
    written: int
    quarantined: int
    files: list[Path]
    reasons: list[str]


def _part_name(key: str | None, *parts: str) -> str:
    """A batch written twice (replayed after a crash) lands on the same file name and replaces it."""
    if key is None:
        return f"part-{uuid.uuid4().hex}.parquet"
    return f"part-{hashlib.sha1('/'.join((key, *parts)).encode()).hexdigest()[:24]}.parquet"


def _append_partitioned(df: pd.DataFrame, table: str, root: Path, key: str | None = None) -> list[Path]:
    files = []
    if df.empty:
        return files
    if table == "dtc_events":
        # DTCs are sparse: a file per vehicle-day would mean tens of thousands of tiny files
        for vin, part in df.groupby("vehicle_id", sort=True):
            path = root / f"vehicle_id={vin}" / _part_name(key, vin)
            atomic_write_parquet(schemas.to_arrow(part.sort_values("ts"), table), path)
            files.append(path)
        return files
    day = df["ts"].dt.strftime("%Y-%m-%d")
    for (vin, d), part in df.groupby([df["vehicle_id"], day], sort=True):
        path = root / f"vehicle_id={vin}" / f"date={d}" / _part_name(key, vin, d)
        atomic_write_parquet(schemas.to_arrow(part.sort_values("ts"), table), path)
        files.append(path)
    return files


def _quarantine_root(paths: Paths, table: str) -> Path:
    return (paths.records / "quarantine" if table in schemas.RECORD_KEYS else paths.quarantine) / table


def write_quarantine(q: pd.DataFrame, paths: Paths, table: str, key: str | None = None) -> Path | None:
    if q.empty:
        return None
    path = _quarantine_root(paths, table) / _part_name(key)
    return atomic_write_parquet(schemas.to_arrow(q, "quarantine"), path)


def append(df: pd.DataFrame, table: str, paths: Paths | None = None, origin: str = "",
           key: str | None = None, lines=None) -> AppendResult:
    """Validate and append samples or dtc_events; rejected rows go to quarantine with reasons.

    key: a stable id of this batch (spool batch ids, upload batch id). Appending the same key
    again replaces the same files instead of adding copies, so replays are idempotent.
    lines: the source file line of each row, so that quarantine reasons name lines, not rows.
    """
    if table not in ("samples", "dtc_events"):
        raise schemas.SchemaError(f"append is for samples and dtc_events, not {table!r}")
    paths = paths or Paths.from_env()
    v = schemas.validate(df, table, origin=origin, lines=lines)
    write_quarantine(v.quarantine, paths, table, key)
    root = paths.samples if table == "samples" else paths.dtc_events
    files = _append_partitioned(v.valid, table, root, key)
    return AppendResult(v.n_valid, v.n_quarantined, files, list(v.quarantine["reason"][:20]))


def _read_partitioned(root: Path, table: str, vehicle_ids=None, start=None, end=None) -> pd.DataFrame:
    if not root.exists() or not any(root.rglob("*.parquet")):
        return schemas.empty(table)
    dataset = ds.dataset(root, format="parquet", partitioning="hive", schema=schemas.TABLES[table].append(pa.field("date", pa.string())), exclude_invalid_files=True)
    filt = None
    if vehicle_ids is not None:
        filt = ds.field("vehicle_id").isin(list(vehicle_ids))
    if start is not None:
        f = ds.field("ts") >= pd.Timestamp(start, tz="UTC")
        filt = f if filt is None else filt & f
    if end is not None:
        f = ds.field("ts") < pd.Timestamp(end, tz="UTC")
        filt = f if filt is None else filt & f
    tbl = dataset.to_table(filter=filt, columns=[f.name for f in schemas.TABLES[table]])
    df = tbl.to_pandas()
    # a batch replayed after a crash may have been stored twice: one reading instant is one row
    keys = ["vehicle_id", "ts", "source"] if table == "samples" else ["vehicle_id", "ts", "code", "status"]
    df = df.sort_values(["vehicle_id", "ts"], kind="stable").drop_duplicates(keys, keep="last")
    return df.reset_index(drop=True)


def read_samples(paths: Paths | None = None, vehicle_ids=None, start=None, end=None) -> pd.DataFrame:
    paths = paths or Paths.from_env()
    return _read_partitioned(paths.samples, "samples", vehicle_ids, start, end)


def read_dtc_events(paths: Paths | None = None, vehicle_ids=None) -> pd.DataFrame:
    paths = paths or Paths.from_env()
    return _read_partitioned(paths.dtc_events, "dtc_events", vehicle_ids)


def read_quarantine(paths: Paths | None = None, table: str = "samples") -> pd.DataFrame:
    paths = paths or Paths.from_env()
    root = _quarantine_root(paths, table)
    if not root.exists():
        return schemas.QUARANTINE.empty_table().to_pandas()
    return ds.dataset(root, format="parquet").to_table().to_pandas()


def write_table(df: pd.DataFrame, name: str, paths: Paths | None = None) -> Path:
    """Replace a whole single-file table. Canonical tables are conformed to their schema."""
    paths = paths or Paths.from_env()
    if name in schemas.TABLES:
        tbl = schemas.to_arrow(schemas.conform(df, name), name)
    else:
        tbl = pa.Table.from_pandas(df, preserve_index=False)
    return atomic_write_parquet(tbl, paths.table(name))


def read_table(name: str, paths: Paths | None = None, columns=None, filters=None) -> pd.DataFrame:
    paths = paths or Paths.from_env()
    path = paths.table(name)
    if not path.exists():
        if name in schemas.TABLES:
            return schemas.empty(name)
        raise FileNotFoundError(f"{path} does not exist: run the step that builds {name!r} first")
    return pq.read_table(path, columns=columns, filters=filters).to_pandas()


@dataclass
class UpsertResult:
    table: str
    new: int = 0
    changed: int = 0
    unchanged: int = 0

    @property
    def written(self) -> int:
        return self.new + self.changed


def _row_hashes(df: pd.DataFrame) -> pd.Series:
    return pd.util.hash_pandas_object(df, index=True)


def upsert_records(df: pd.DataFrame, table: str, paths: Paths | None = None) -> UpsertResult:
    """Merge valid rows of a records table into the stored table by its natural key.

    A new key is added; a known key whose fields differ replaces the stored row (the CRM corrected
    it); identical rows change nothing, and when nothing changed the file is not rewritten — so
    importing the same export twice leaves the store as it was.
    """
    paths = paths or Paths.from_env()
    keys = list(schemas.RECORD_KEYS[table])
    res = UpsertResult(table)
    new = schemas.conform(df, table).drop_duplicates(keys, keep="last").set_index(keys)
    if new.empty:
        return res
    old = schemas.conform(read_table(table, paths), table).set_index(keys)
    known = new.index.isin(old.index)
    res.new = int((~known).sum())
    if known.any():
        common = new.index[known]
        same = _row_hashes(new.loc[common]).to_numpy() == _row_hashes(old.loc[common]).to_numpy()
        res.changed, res.unchanged = int((~same).sum()), int(same.sum())
    if res.written:
        out = pd.concat([old[~old.index.isin(new.index)], new]).sort_index(kind="stable").reset_index()
        write_table(out, table, paths)
    return res
