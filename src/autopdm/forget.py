"""`autopdm forget --vehicle VIN`: a customer's car removed from the home on request.

Everything under the home is searched, not a list of known places, so that a table added later is
not forgotten in turn:

* Parquet files (records, features, trips, needs, telemetry, quarantine, MLflow artifacts): rows whose
  `vehicle_id` is the VIN, or that mention it in any text column, are dropped and the file rewritten
  (a new file renamed over the old); a telemetry partition `vehicle_id=VIN/` is removed whole;
* SQLite databases (outbox, ledgers, MLflow): rows whose `vehicle_id` is the VIN are deleted, and the
  VIN is blanked out of any other text that mentions it (a ledger's stored answer); then VACUUM, so no
  deleted page keeps it;
* JSON Lines, CSV and log files (the spool, work-order file drops, reports): lines mentioning the VIN
  are dropped (in JSON lines, first the records of that car inside a line); other text files get the
  VIN blanked out.

The audit trail is the exception: it keeps who looked at the car, and records that it was forgotten.
The service picks up the rewritten tables at its next reload check. Models trained on the car's data
are not retrained; they hold no per-car data.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from autopdm.config import Paths
from autopdm import store
from autopdm.backup import SQLITE_MAGIC, tables
from autopdm.ingest.crm import import_lock
from autopdm.store import atomic_write_parquet
from autopdm.schemas import is_vin
from autopdm.serving import audit

BLANK = "[forgotten]"
LINE_SUFFIXES = (".jsonl", ".ndjson", ".csv", ".log", ".txt", ".open", ".seg", ".stored", ".acked")


class ForgetError(ValueError):
    """A VIN that is not one, or a file that could not be cleaned (named)."""


@dataclass
class Result:
    vehicle: str
    changed: list[str] = field(default_factory=list)   # files rewritten, relative to the home
    removed: list[str] = field(default_factory=list)   # files and partitions deleted
    rows: int = 0


def forget(paths: Paths, vin: str) -> Result:
    if not is_vin(vin):
        raise ForgetError(f"--vehicle: {vin!r} is not a 17-character VIN")
    home = paths.home
    res = Result(vin)
    keep = audit.db_path(paths).resolve()
    needle = vin.encode()
    # the records import lock and the telemetry writers' (appends, compaction): nobody rewrites a table
    # or recreates the car's partition meanwhile
    with import_lock(paths), store.write_lock(paths, "samples"), store.write_lock(paths, "dtc_events"):
        for part in sorted(home.rglob(f"vehicle_id={vin}")):
            if part.is_dir():
                shutil.rmtree(part)
                res.removed.append(str(part.relative_to(home)))
        for path in sorted(p for p in home.rglob("*") if p.is_file() and not p.is_symlink()):
            if path.resolve() == keep or path.name.startswith(keep.name):
                continue
            rel = str(path.relative_to(home))
            if path.name.endswith(("-wal", "-shm", "-journal", ".lock")):
                continue
            with open(path, "rb") as fh:
                head = fh.read(16)
            if head == SQLITE_MAGIC:
                n = _sqlite(path, vin)
            elif head[:4] == b"PAR1":
                n = _parquet(path, vin)
            elif needle not in path.read_bytes() and head[:2] != b"\x1f\x8b":
                continue
            else:
                n = _text(path, vin)
            if n:
                res.rows += n
                res.changed.append(rel)
    audit.record_now(paths, "cli:forget", "operator", "autopdm forget", [(vin, False)],
                     f"forgotten: {res.rows} rows in {len(res.changed)} files, {len(res.removed)} partitions")
    return res


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.forget-tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _parquet(path: Path, vin: str) -> int:
    t = pq.ParquetFile(path).read()  # the file alone: no partition columns guessed from its directory
    mask = None
    for name, col in zip(t.column_names, t.columns):
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type) or pa.types.is_dictionary(col.type):
            c = col.cast(pa.string()) if pa.types.is_dictionary(col.type) else col
            hit = pc.fill_null(pc.match_substring(c, vin), False)
            mask = hit if mask is None else pc.or_(mask, hit)
    if mask is None:
        return 0
    n = pc.sum(mask).as_py() or 0
    if n:
        kept = t.filter(pc.invert(mask))
        atomic_write_parquet(kept, path)
    return n


def _sqlite(path: Path, vin: str) -> int:
    con = sqlite3.connect(path, timeout=60, isolation_level=None)
    n = 0
    try:
        con.execute("BEGIN IMMEDIATE")
        names = tables(con)
        for t in names:
            cols = [(r[1], r[2].upper()) for r in con.execute(f'PRAGMA table_info("{t}")')]
            if any(c == "vehicle_id" for c, _ in cols):
                n += con.execute(f'DELETE FROM "{t}" WHERE vehicle_id = ?', (vin,)).rowcount
            for c, typ in cols:
                if typ == "" or "CHAR" in typ or "TEXT" in typ or "CLOB" in typ:
                    n += con.execute(f'UPDATE "{t}" SET "{c}" = replace("{c}", ?, ?) WHERE instr("{c}", ?) > 0',
                                     (vin, BLANK, vin)).rowcount
        con.execute("COMMIT")
        if n:
            con.execute("VACUUM")  # deleted rows stay in free pages until then
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # nor old pages in the write-ahead log
    finally:
        con.close()
    return n


def _drop_car(obj, vin: str):
    """A JSON value without the records of `vin` (dicts whose vehicle_id is it, inside lists)."""
    if isinstance(obj, list):
        return [_drop_car(x, vin) for x in obj if not (isinstance(x, dict) and x.get("vehicle_id") == vin)]
    if isinstance(obj, dict):
        return {k: _drop_car(v, vin) for k, v in obj.items()}
    return obj


def _text(path: Path, vin: str) -> int:
    raw = path.read_bytes()
    zipped = raw[:2] == b"\x1f\x8b"
    if zipped:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError):
            raise ForgetError(f"{path}: a damaged gzip file; remove it by hand") from None
    if vin.encode() not in raw:
        return 0
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ForgetError(f"{path}: a binary file that mentions {vin}; remove it by hand") from None
    name = path.name[:-3] if zipped and path.name.endswith(".gz") else path.name
    n = 0
    if name.endswith(LINE_SUFFIXES):
        out = []
        for line in text.splitlines(keepends=True):
            if vin not in line:
                out.append(line)
                continue
            try:
                cleaned = json.dumps(_drop_car(json.loads(line), vin)) + "\n"
            except ValueError:
                cleaned = ""
            n += 1
            if cleaned and vin not in cleaned and cleaned.strip() not in ("{}", "[]"):
                out.append(cleaned)
        text = "".join(out)
    else:
        n = text.count(vin)
        text = text.replace(vin, BLANK)
    data = text.encode()
    _atomic_write(path, lambda tmp: tmp.write_bytes(gzip.compress(data) if zipped else data))
    return n
