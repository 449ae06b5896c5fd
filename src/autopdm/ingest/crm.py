"""The workshop's records from its CRM: vehicles, service events, inspections and outcomes.

One import path for every way records arrive — `autopdm ingest crm` (file exports), `POST /records`
(the CRM pushing), and the simulator (which imitates a workshop): `import_records` validates each
table row by row (a bad row is quarantined with the row and field named, the others go on), checks
that every record names a vehicle the workshop knows, and upserts by natural key, so importing the
same export twice changes nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pandas as pd

from autopdm import schemas, store
from autopdm.config import Paths

# vehicles first: the other tables must name a known vehicle
ORDER = ("vehicles", "service_events", "inspections", "outcomes")


@dataclass
class TableResult:
    table: str
    rows: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    quarantined: int = 0
    reasons: list[str] = field(default_factory=list)  # the first few, "row N: field: why"


def import_records(frames: dict[str, pd.DataFrame], paths: Paths | None = None, origin: str = "",
                   source: str | None = None) -> dict[str, TableResult]:
    """Validate and upsert records tables given as frames ({table: frame}); returns one result per table.

    source: fills the `source` column where a row has none (e.g. "crm", "sim").
    """
    paths = paths or Paths.from_env()
    unknown = set(frames) - set(ORDER)
    if unknown:
        raise schemas.SchemaError(f"unknown records table(s) {sorted(unknown)}; expected some of {list(ORDER)}")
    out: dict[str, TableResult] = {}
    known = set(store.read_table("vehicles", paths)["vehicle_id"].astype(str))
    for table in ORDER:
        if table not in frames:
            continue
        df = frames[table]
        if source is not None and "source" in schemas.TABLES[table].names:
            df = df.assign(source=df["source"].fillna(source) if "source" in df else source)
        v = schemas.validate(df, table, origin=origin, known_vehicles=None if table == "vehicles" else known)
        # keyed by content: the same bad rows imported again replace their quarantine file, not add one
        key = hashlib.sha256(("\n".join(v.quarantine["record"]) + origin).encode()).hexdigest()
        store.write_quarantine(v.quarantine, paths, table, key=key)
        up = store.upsert_records(v.valid, table, paths)
        if table == "vehicles":
            known |= set(v.valid["vehicle_id"].astype(str))
        out[table] = TableResult(table, len(df), up.new, up.changed, up.unchanged, v.n_quarantined,
                                 list(v.quarantine["reason"][:20]))
    return out
