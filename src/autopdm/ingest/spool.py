"""Crash-safe local spool: every reading lands here first, before the store or the network.

Layout under ``paths.spool``::

    <session>-<segno>.open     segment being written (the writer holds <session>-<segno>.lock)
    <session>-<segno>.seg      sealed segment (rotated, closed, or sealed after a crash)
    <base>.stored              batch ids already appended to the Parquet store
    <base>.acked               batch ids the upload server acknowledged
    corrupt/                   segments holding lines that cannot be parsed (kept, never deleted)

A segment is JSON lines, one line per batch: ``{"batch_id", "created_at", "source", "samples":
[...], "dtc_events": [...]}``. A batch is appended with one ``write`` and ``fsync``ed before
``commit`` returns, so after ``kill -9`` every committed batch is on disk; a torn last line (the
batch being written at the crash) is recognised and skipped. Batch ids are
``<session>-<seq>``: stable, written once, used by the upload as the idempotency key.

The Parquet store is fed from the spool (``flush_store`` in the writer, ``sync_store`` for
whatever a crashed writer left), in groups rather than per batch, so that a logger left in a
car for weeks does not leave one Parquet file per second.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pandas as pd
from filelock import FileLock, Timeout

from autopdm import schemas, store
from autopdm.config import Paths

log = logging.getLogger(__name__)

OPEN, SEALED = ".open", ".seg"
SAMPLE_COLUMNS = [f.name for f in schemas.SAMPLES]
DTC_COLUMNS = [f.name for f in schemas.DTC_EVENTS]


def iso(ts: float | datetime | pd.Timestamp) -> str:
    """UTC ISO-8601 with milliseconds and a Z."""
    if isinstance(ts, (int, float)):
        ts = datetime.fromtimestamp(ts, tz=timezone.utc)
    ts = pd.Timestamp(ts)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


@dataclass
class Batch:
    batch_id: str
    samples: list[dict]
    dtc_events: list[dict]
    source: str = ""
    created_at: str = ""


@dataclass
class SegmentRead:
    path: Path
    batches: list[Batch]
    torn_tail: bool = False
    corrupt: list[str] = field(default_factory=list)  # "file line N: reason"


def _base(path: Path) -> Path:
    return path.with_suffix("")


def _sidecar(path: Path, kind: str) -> Path:
    return _base(path).with_suffix(f".{kind}")


def _read_ids(path: Path) -> set[str]:
    try:
        return {ln for ln in path.read_text().splitlines() if ln}
    except FileNotFoundError:
        return set()


def _append_ids(path: Path, ids: list[str]) -> None:
    if not ids:
        return
    with open(path, "a") as fh:
        fh.write("".join(i + "\n" for i in ids))
        fh.flush()
        os.fsync(fh.fileno())


def read_segment(path: Path) -> SegmentRead:
    data = path.read_bytes()
    lines = data.split(b"\n")
    torn = bool(lines and lines[-1])  # no newline at the end: the write the crash interrupted
    body = lines[:-1]
    out = SegmentRead(path, [], torn_tail=torn)
    for n, raw in enumerate(body, start=1):
        if not raw.strip():
            continue
        try:
            d = json.loads(raw)
            out.batches.append(Batch(d["batch_id"], d.get("samples", []), d.get("dtc_events", []),
                                     d.get("source", ""), d.get("created_at", "")))
        except (ValueError, KeyError, TypeError) as exc:
            out.corrupt.append(f"{path.name} line {n}: {exc}")
    return out


def segments(paths: Paths) -> list[Path]:
    d = paths.spool
    if not d.exists():
        return []
    return sorted([p for p in d.iterdir() if p.suffix in (OPEN, SEALED)], key=lambda p: p.name)


def _lock_path(segment: Path) -> Path:
    return _sidecar(segment, "lock")


def _writer_alive(path: Path) -> bool:
    """An .open segment whose lock we can take has no live writer (it crashed). filelock is an OS
    lock (flock, or msvcrt on Windows): it goes with the process, however the process ends."""
    lock = FileLock(str(_lock_path(path)), timeout=0, is_singleton=False)
    try:
        lock.acquire()
    except Timeout:
        return True
    lock.release()
    return False


def seal_orphans(paths: Paths) -> list[Path]:
    """Seal .open segments left by a writer that died (kill -9, power loss). Drops a torn tail."""
    sealed = []
    for p in segments(paths):
        if p.suffix != OPEN or _writer_alive(p):
            continue
        try:
            data = p.read_bytes()
        except FileNotFoundError:  # its writer sealed it between the listing and now
            continue
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            log.warning("%s: dropping a torn last batch (%d bytes) left by a crash", p.name, len(data) - keep)
            with open(p, "r+b") as fh:
                fh.truncate(keep)
                fh.flush()
                os.fsync(fh.fileno())
        target = p.with_suffix(SEALED)
        os.replace(p, target)
        _lock_path(p).unlink(missing_ok=True)
        sealed.append(target)
    return sealed


def rows_frame(rows: list[dict], table: str) -> pd.DataFrame:
    cols = SAMPLE_COLUMNS if table == "samples" else DTC_COLUMNS
    df = pd.DataFrame.from_records(rows) if rows else pd.DataFrame(columns=cols)
    for c in cols:
        if c not in df.columns:
            df[c] = None
    return df[cols]


def _store_batches(batches: list[Batch], paths: Paths, origin: str) -> tuple[int, int]:
    samples = [r for b in batches for r in b.samples]
    dtcs = [r for b in batches for r in b.dtc_events]
    written = quarantined = 0
    if samples:
        key = "|".join(b.batch_id for b in batches)
        r = store.append(rows_frame(samples, "samples"), "samples", paths, origin=origin, key=key)
        written, quarantined = r.written, r.quarantined
    if dtcs:
        r = store.append(rows_frame(dtcs, "dtc_events"), "dtc_events", paths, origin=origin, key="|".join(b.batch_id for b in batches))
        quarantined += r.quarantined
    return written, quarantined


def sync_store(paths: Paths) -> int:
    """Append to the store every spooled batch not stored yet (after a crash). Returns batches."""
    seal_orphans(paths)
    n = 0
    for seg in segments(paths):
        if seg.suffix == OPEN:  # a live writer stores its own batches
            continue
        stored = _read_ids(_sidecar(seg, "stored"))
        todo = [b for b in read_segment(seg).batches if b.batch_id not in stored]
        if todo:
            _store_batches(todo, paths, origin=f"spool:{seg.name}")
            _append_ids(_sidecar(seg, "stored"), [b.batch_id for b in todo])
            n += len(todo)
    return n


class SpoolWriter:
    """Append-only writer. ``commit`` = one line + fsync; ``flush_store`` feeds the Parquet store."""

    def __init__(self, paths: Paths, source: str, segment_batches: int = 600, session: str | None = None):
        self.paths = paths
        self.source = source
        self.segment_batches = segment_batches
        now = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self.session = session or f"{source}-{now}-{uuid.uuid4().hex[:6]}"
        self.seq = 0
        self.segno = 0
        self._fh = None
        self._lock: FileLock | None = None
        self._in_segment = 0
        self._pending: list[tuple[Path, Batch]] = []
        self.committed = 0
        self.samples_committed = 0
        paths.spool.mkdir(parents=True, exist_ok=True)

    # -- segments --------------------------------------------------------------------------
    @property
    def segment_path(self) -> Path:
        return self.paths.spool / f"{self.session}-{self.segno:05d}{OPEN}"

    def _open(self) -> None:
        self._lock = FileLock(str(_lock_path(self.segment_path)), timeout=0, is_singleton=False)
        self._lock.acquire()  # before the segment exists: nobody may take it for a crashed writer's
        self._fh = open(self.segment_path, "ab")
        self._in_segment = 0

    def _seal(self) -> None:
        if self._fh is None:
            return
        path = self.segment_path
        self.flush_store()  # its batches reach the store before anyone may delete it
        self._fh.close()
        self._fh = None
        if path.exists():
            if path.stat().st_size == 0:
                path.unlink()
            else:
                os.replace(path, path.with_suffix(SEALED))
        self._lock.release()
        _lock_path(path).unlink(missing_ok=True)
        self.segno += 1

    # -- batches ---------------------------------------------------------------------------
    def commit(self, samples: list[dict], dtc_events: list[dict] | None = None) -> str | None:
        """Durably append one batch. Returns its id once it is on disk (None if empty)."""
        dtc_events = dtc_events or []
        if not samples and not dtc_events:
            return None
        if self._fh is None:
            self._open()
        batch_id = f"{self.session}-{self.seq:06d}"
        rec = {"batch_id": batch_id, "created_at": iso(datetime.now(timezone.utc)), "source": self.source,
               "samples": samples, "dtc_events": dtc_events}
        line = (json.dumps(rec, separators=(",", ":"), allow_nan=False, default=str) + "\n").encode()
        self._fh.write(line)
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.seq += 1
        self.committed += 1
        self.samples_committed += len(samples)
        self._in_segment += 1
        self._pending.append((self.segment_path, Batch(batch_id, samples, dtc_events, self.source)))
        if self._in_segment >= self.segment_batches:
            self._seal()
        return batch_id

    def flush_store(self) -> tuple[int, int]:
        """Append pending (already spooled) batches to the Parquet store and mark them stored."""
        if not self._pending:
            return 0, 0
        pending, self._pending = self._pending, []
        res = _store_batches([b for _, b in pending], self.paths, origin=f"spool:{self.session}")
        by_seg: dict[Path, list[str]] = {}
        for seg, b in pending:
            by_seg.setdefault(seg, []).append(b.batch_id)
        for seg, ids in by_seg.items():
            _append_ids(_sidecar(seg, "stored"), ids)
        return res

    def close(self) -> None:
        self.flush_store()
        self._seal()

    def __enter__(self) -> "SpoolWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def iter_unacked(paths: Paths) -> Iterator[tuple[Path, SegmentRead, set[str]]]:
    for seg in segments(paths):
        yield seg, read_segment(seg), _read_ids(_sidecar(seg, "acked"))


def mark_acked(seg: Path, batch_ids: list[str]) -> None:
    _append_ids(_sidecar(seg, "acked"), batch_ids)


def retire(seg: Path, read: SegmentRead) -> str:
    """Remove a sealed, fully acknowledged and stored segment; keep corrupt ones aside."""
    stored = _read_ids(_sidecar(seg, "stored"))
    acked = _read_ids(_sidecar(seg, "acked"))
    ids = {b.batch_id for b in read.batches}
    if seg.suffix != SEALED or not ids <= acked or not ids <= stored:
        return "kept"
    if read.corrupt:
        dest = seg.parent / "corrupt"
        dest.mkdir(exist_ok=True)
        os.replace(seg, dest / seg.name)
        for kind in ("stored", "acked"):
            _sidecar(seg, kind).unlink(missing_ok=True)
        return "moved to corrupt/"
    seg.unlink()
    for kind in ("stored", "acked"):
        _sidecar(seg, kind).unlink(missing_ok=True)
    return "deleted"


def status(paths: Paths) -> dict:
    segs = segments(paths)
    batches = unacked = 0
    for seg, read, acked in iter_unacked(paths):
        batches += len(read.batches)
        unacked += sum(b.batch_id not in acked for b in read.batches)
    return {"segments": len(segs), "batches": batches, "unacked": unacked}
