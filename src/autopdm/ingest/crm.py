"""The workshop's records from its CRM: vehicles, service events, inspections and outcomes.

One import path for every way records arrive — `autopdm ingest crm` (file exports, read by
`ingest.crm_files`), `POST /records` (the CRM pushing, `serving.records`), and the simulator (which
imitates a workshop): `import_records` validates each table row by row (a bad row is quarantined
with the row and field named, the others go on), checks that every record names a vehicle the
workshop knows, and upserts by natural key, so importing the same export twice changes nothing.

Only the tables' own columns are kept: whatever else a CRM sends along (names, phone numbers,
notes) is dropped before anything is stored, quarantine included.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import filelock
import pandas as pd

from autopdm import schemas, store
from autopdm.config import Paths

# vehicles first: the other tables must name a known vehicle
ORDER = ("vehicles", "service_events", "inspections", "outcomes")

# Columns without which no row of a table can be valid (`schemas.validate` rejects a row that lacks
# any of them): a file or a request with none of a table's required column is not that table at all.
REQUIRED: dict[str, tuple[str, ...]] = {
    "vehicles": ("vehicle_id", "preferred_channel"),
    "service_events": ("event_id", "vehicle_id", "date", "component", "action"),
    "inspections": ("inspection_id", "vehicle_id", "date", "component", "position", "measurement", "value"),
    "outcomes": ("work_order_id", "vehicle_id", "component", "date", "status"),
}


@dataclass
class TableResult:
    table: str
    rows: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    quarantined: int = 0
    reasons: list[str] = field(default_factory=list)  # the first few, "row N: field: why"
    ignored_columns: list[str] = field(default_factory=list)  # not a column of the table: dropped
    quarantine: pd.DataFrame | None = field(default=None, repr=False)  # every rejected row (row, column, reason)

    @property
    def accepted(self) -> int:
        return self.new + self.changed + self.unchanged


def missing_required(table: str, columns) -> list[str]:
    """The required columns of `table` that `columns` lacks."""
    have = set(columns)
    return [c for c in REQUIRED[table] if c not in have]


def import_lock(paths: Paths) -> filelock.FileLock:
    """One import at a time per home (CLI, service and simulator alike): an upsert reads, merges and
    replaces a table, and two at once would lose one's rows."""
    paths.records.mkdir(parents=True, exist_ok=True)
    return filelock.FileLock(str(paths.records / ".import.lock"))


def import_records(frames: dict[str, pd.DataFrame], paths: Paths | None = None,
                   origin: str | Mapping[str, str] = "", source: str | None = None,
                   lines: Mapping[str, Sequence[int]] | None = None, dealer: str | None = None) -> dict[str, TableResult]:
    """Validate and upsert records tables given as frames ({table: frame}); returns one result per table.

    origin: where the rows came from (a file, a batch), for the quarantine; one for all tables or one per table.
    source: fills the `source` column where a row has none (e.g. "crm", "sim").
    lines: per table, the source-file line of each row, so that quarantine reasons name lines, not rows.
    dealer: import as this dealer (a dealer-scoped caller): vehicles rows get it as dealer_id where they
    name none, and are rejected when they name another dealer or a car on record with another dealer;
    the other tables' rows about another dealer's car are rejected as rows about an unknown car.
    """
    paths = paths or Paths.from_env()
    unknown = set(frames) - set(ORDER)
    if unknown:
        raise schemas.SchemaError(f"unknown records table(s) {sorted(unknown)}; expected some of {list(ORDER)}")
    out: dict[str, TableResult] = {}
    with import_lock(paths):
        vehicles = store.read_table("vehicles", paths)
        known = set(vehicles["vehicle_id"].astype(str))
        checks: tuple = ()
        if dealer is not None:
            foreign = known - set(vehicles.loc[vehicles["dealer_id"] == dealer, "vehicle_id"].astype(str))
            known -= foreign
            checks = (("vehicle_id", "on record with another dealer", lambda c: c["vehicle_id"].isin(foreign)),
                      ("dealer_id", f"not this token's dealer ({dealer})", lambda c: c["dealer_id"] != dealer))
        for table in ORDER:
            if table not in frames:
                continue
            where = origin.get(table, "") if isinstance(origin, Mapping) else origin
            df = frames[table]
            if dealer is not None and table == "vehicles":
                df = df.assign(dealer_id=df["dealer_id"].where(df["dealer_id"].notna(), dealer) if "dealer_id" in df else dealer)
            out[table] = _import_table(df, table, paths, where, source,
                                       None if lines is None else lines.get(table), known,
                                       checks if table == "vehicles" else ())
    return out


def _import_table(df: pd.DataFrame, table: str, paths: Paths, origin: str, source: str | None,
                  lines, known: set[str], checks=()) -> TableResult:
    """One table; `known` (the vehicles on record) grows by the vehicles imported here."""
    names = schemas.TABLES[table].names
    ignored = [str(c) for c in df.columns if c not in names]
    df = df[[c for c in df.columns if c in names]]
    if source is not None and "source" in names:
        df = df.assign(source=df["source"].fillna(source) if "source" in df else source)
    v = schemas.validate(df, table, origin=origin, lines=lines,
                         known_vehicles=None if table == "vehicles" else known, checks=checks)
    # keyed by content: the same bad rows imported again replace their quarantine file, not add one
    key = hashlib.sha256(("\n".join(v.quarantine["record"]) + origin).encode()).hexdigest()
    store.write_quarantine(v.quarantine, paths, table, key=key)
    up = store.upsert_records(v.valid, table, paths)
    if table == "vehicles":
        known |= set(v.valid["vehicle_id"].astype(str))
    return TableResult(table, len(df), up.new, up.changed, up.unchanged, v.n_quarantined,
                       list(v.quarantine["reason"][:20]), ignored, v.quarantine[["row", "column", "reason"]])
