"""Compaction of the telemetry store: a vehicle's many small Parquet files become one.

Appends write a file per batch and vehicle-day (samples) or per batch and vehicle (DTC events), so months
of recording leave hundreds of thousands of files and reading them is dominated by opening files. A
compaction merges each vehicle directory's live files into ``compact-<generation>.parquet`` there, with
the rows a reader would have returned (replayed batches already collapsed), sorted by time.

Crash safety, step by step (a kill between any two steps loses nothing; `_hook` marks the steps so a
test can kill a real process at each):

1. the merged file is written to a hidden temporary name, fsynced and renamed to ``compact-<g>.parquet``
   — readers ignore it, because the manifest does not name it yet;
2. ``_manifest.json`` naming it and listing the files it replaces (name, size, mtime) is written to a
   temporary name, fsynced and renamed over the old manifest: the commit;
3. the replaced files are deleted (readers already skip them; a later compaction deletes what a kill
   left behind).

`autopdm store compact` runs it over every vehicle; `after_import` runs it over the vehicles a large
import wrote to (AUTOPDM_COMPACT_AFTER_FILES). One compaction at a time per home (``store-compact.lock``);
each vehicle is merged holding the table's write lock, so writers wait at most one vehicle's merge.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock, Timeout

from autopdm import schemas, store
from autopdm.config import Paths, Settings

log = logging.getLogger(__name__)

TABLES = ("samples", "dtc_events")


class CompactionBusy(RuntimeError):
    """Another compaction holds this home's compaction lock."""


def _hook(step: str) -> None:
    """A named step of a vehicle's compaction (tests replace this to kill the process there)."""


@dataclass
class CompactResult:
    vehicles: int = 0          # vehicle directories merged
    files_before: int = 0      # live files in them before
    files_removed: int = 0     # files deleted (replaced, or left behind by an earlier kill)
    rows: int = 0
    skipped: int = 0           # vehicle directories already one file
    tables: dict = field(default_factory=dict)


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_manifest(vdir: Path, manifest: dict) -> None:
    tmp = vdir / f".{store.MANIFEST}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "w") as fh:
            json.dump(manifest, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, vdir / store.MANIFEST)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(vdir)


def _leftovers(vdir: Path) -> list[Path]:
    """Temporary files of writes that were killed (nobody writes here: we hold the write lock)."""
    return [Path(dp, n) for dp, _, names in os.walk(vdir) for n in names if n.startswith(".") and n.endswith(".tmp")]


def compact_vehicle(vdir: Path, table: str, res: CompactResult) -> None:
    """Merge one vehicle directory's live files into one (the caller holds the table's write lock)."""
    old = store.read_manifest(vdir)
    live, dead = store.unit_files(vdir)
    current = old.get("compacted")
    if len(live) <= 1:  # nothing to merge; what an earlier kill left behind can go
        res.skipped += 1
        _remove(vdir, dead + _leftovers(vdir), res)
        return
    df = store.read_files(live, table)
    gen = int(old.get("generation", 0)) + 1
    name = f"{store.COMPACT_PREFIX}{gen:06d}.parquet"
    store.atomic_write_parquet(schemas.to_arrow(df, table), vdir / name)
    _fsync_dir(vdir)
    _hook("merged-file-written")
    replaced = {}
    for f in live + dead:
        if f.name.startswith(store.COMPACT_PREFIX):
            continue  # a compact file is live only when the manifest names it: no need to list it
        try:
            st = f.stat()
        except FileNotFoundError:
            continue
        replaced[f.relative_to(vdir).as_posix()] = [st.st_size, st.st_mtime_ns]
    _write_manifest(vdir, {"generation": gen, "compacted": name, "replaced": replaced})
    _hook("manifest-committed")
    res.vehicles += 1
    res.files_before += len(live)
    res.rows += len(df)
    stale = [f for f in live + dead if f.name != name or f.parent != vdir]
    _remove(vdir, stale + _leftovers(vdir), res)
    log.debug("compacted %s: generation %d replaces %s and %d files", vdir, gen, current, len(replaced))


def _remove(vdir: Path, files: list[Path], res: CompactResult) -> None:
    for f in files:
        try:
            f.unlink()
            res.files_removed += 1
        except FileNotFoundError:
            pass
        _hook("file-removed")
    for d in sorted({f.parent for f in files}, reverse=True):
        if d != vdir:
            try:
                d.rmdir()  # a date directory left empty
            except OSError:
                pass


def compact(paths: Paths | None = None, tables=TABLES, vehicle_dirs: dict[str, list[Path]] | None = None,
            timeout: float | None = None) -> CompactResult:
    """Compact the telemetry tables (or only the given vehicle directories per table)."""
    paths = paths or Paths.from_env()
    timeout = Settings().lock_timeout_s if timeout is None else float(timeout)
    lock_file = paths.home / "locks" / "store-compact.lock"
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    run_lock = FileLock(str(lock_file), is_singleton=False)
    try:
        run_lock.acquire(timeout=timeout)
    except Timeout:
        raise CompactionBusy(f"another compaction holds {lock_file}; gave up after {timeout:g} s "
                             "(AUTOPDM_LOCK_TIMEOUT_S) — run again when it is done") from None
    res = CompactResult()
    try:
        for table in tables:
            root = paths.samples if table == "samples" else paths.dtc_events
            dirs = store.vehicle_dirs(root) if vehicle_dirs is None else sorted(vehicle_dirs.get(table, []))
            before = res.vehicles
            for vdir in dirs:
                with store.write_lock(paths, table):
                    if vdir.is_dir():
                        compact_vehicle(vdir, table, res)
            res.tables[table] = res.vehicles - before
    finally:
        run_lock.release()
    return res


def after_import(paths: Paths, threshold: int | None = None) -> CompactResult | None:
    """Compact the vehicles this process wrote to when it wrote at least `threshold` files
    (default AUTOPDM_COMPACT_AFTER_FILES; 0 never)."""
    threshold = Settings().compact_after_files if threshold is None else threshold
    roots = {"samples": paths.samples, "dtc_events": paths.dtc_events}
    touched = {t: store._touched.get(r, {}) for t, r in roots.items()}
    n = sum(sum(v.values()) for v in touched.values())
    if threshold <= 0 or n < threshold:
        return None
    res = compact(paths, vehicle_dirs={t: list(v) for t, v in touched.items()})
    for r in roots.values():
        store._touched.pop(r, None)
    return res
