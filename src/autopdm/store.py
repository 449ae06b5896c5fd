"""Parquet store under $AUTOPDM_HOME.

Samples and DTC events are appended as small immutable files, hive-partitioned by vehicle and
date. Every file is written to a temporary name and renamed into place, so a crash leaves either
the whole file or nothing. Derived tables (trips, vehicles, service_events, features) are
single files replaced atomically.

Compaction (`autopdm.compact`) merges a vehicle's many small files into one `compact-<generation>.parquet`
in the vehicle's directory. Which files are live is decided by the directory's `_manifest.json`, written
atomically as the commit of a compaction: a `compact-*` file is live only when the manifest names it,
and a file the manifest lists as replaced (by name, size and mtime) is not. So a reader sees either the
files before a compaction or its merged file, never both or neither, whenever the compaction is killed.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from filelock import FileLock

from autopdm import schemas
from autopdm.config import Paths

MANIFEST = "_manifest.json"
COMPACT_PREFIX = "compact-"
# which vehicle directories this process wrote to, per table root: `compact.after_import` compacts them
_touched: dict[Path, dict[Path, int]] = {}


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


def write_lock(paths: Paths, table: str) -> FileLock:
    """Held by every append to a telemetry table and by compaction for each vehicle it merges, so that a
    compaction never deletes a file a writer has just replaced (an OS lock: released if its holder dies)."""
    path = paths.home / "locks" / f"store-{table}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path), is_singleton=False)


def _append_partitioned(df: pd.DataFrame, table: str, root: Path, key: str | None = None) -> list[Path]:
    files = _write_partitioned(df, table, root, key)
    seen = _touched.setdefault(root, {})
    for f in files:
        vdir = f.parent if table == "dtc_events" else f.parent.parent
        seen[vdir] = seen.get(vdir, 0) + 1
    return files


def _write_partitioned(df: pd.DataFrame, table: str, root: Path, key: str | None = None) -> list[Path]:
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
    with write_lock(paths, table):
        files = _append_partitioned(v.valid, table, root, key)
    return AppendResult(v.n_valid, v.n_quarantined, files, list(v.quarantine["reason"][:20]))


def read_manifest(vdir: Path) -> dict:
    try:
        return json.loads((vdir / MANIFEST).read_text())
    except FileNotFoundError:
        return {}


def unit_files(vdir: Path) -> tuple[list[Path], list[Path]]:
    """A vehicle directory's live Parquet files, in read order, and the ones compaction has superseded.

    The manifest is read before the directory is listed: a merged file is renamed into place before
    the manifest that names it, so a listing taken after the manifest always holds the files it names.
    """
    m = read_manifest(vdir)
    current, replaced = m.get("compacted"), m.get("replaced", {})
    live, dead = [], []
    for dirpath, dirnames, filenames in os.walk(vdir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")))
        for name in sorted(filenames):
            if not name.endswith(".parquet") or name.startswith((".", "_")):
                continue
            path = Path(dirpath, name)
            rel = path.relative_to(vdir).as_posix()
            if name.startswith(COMPACT_PREFIX):
                (live if rel == current else dead).append(path)
                continue
            ident = replaced.get(rel)
            if ident is not None:
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                if [st.st_size, st.st_mtime_ns] == ident:  # rewritten since (a replayed batch) → live again
                    dead.append(path)
                    continue
            live.append(path)
    return live, dead


def vehicle_dirs(root: Path, vehicle_ids=None) -> list[Path]:
    if vehicle_ids is not None:
        return [d for d in (root / f"vehicle_id={v}" for v in sorted(set(map(str, vehicle_ids)))) if d.is_dir()]
    if not root.is_dir():
        return []
    return sorted(Path(e.path) for e in os.scandir(root) if e.is_dir() and e.name.startswith("vehicle_id="))


DEDUP_KEYS = {"samples": ["vehicle_id", "ts", "source"], "dtc_events": ["vehicle_id", "ts", "code", "status"]}


def read_files(files: list[Path], table: str, filt=None) -> pd.DataFrame:
    if not files:
        return schemas.empty(table)
    schema = schemas.TABLES[table]
    dataset = ds.dataset([str(f) for f in files], format="parquet", schema=schema)
    df = dataset.to_table(filter=filt, columns=[f.name for f in schema]).to_pandas()
    # a batch replayed after a crash may have been stored twice: one reading instant is one row
    df = df.sort_values(["vehicle_id", "ts"], kind="stable").drop_duplicates(DEDUP_KEYS[table], keep="last")
    return df.reset_index(drop=True)


def _read_partitioned(root: Path, table: str, vehicle_ids=None, start=None, end=None) -> pd.DataFrame:
    filt = None
    if vehicle_ids is not None:
        filt = ds.field("vehicle_id").isin(list(vehicle_ids))
    if start is not None:
        f = ds.field("ts") >= pd.Timestamp(start, tz="UTC")
        filt = f if filt is None else filt & f
    if end is not None:
        f = ds.field("ts") < pd.Timestamp(end, tz="UTC")
        filt = f if filt is None else filt & f
    for attempt in range(5):
        files = [f for d in vehicle_dirs(root, vehicle_ids) for f in unit_files(d)[0]]
        try:
            return read_files(files, table, filt)
        except FileNotFoundError:
            if attempt == 4:  # a compaction committed and removed what we had listed: list again
                raise
    raise AssertionError("unreachable")


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
