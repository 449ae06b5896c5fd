"""POST /records: the CRM hands over vehicles, service events, inspections and outcomes, once per batch id.

Rows go through the one import path for records (`ingest.crm.import_records`: validated row by row,
upserted by natural key). The answer — accepted counts per table and every rejected row with its
table, row (its index in the table's list, from 0), field and reason — is kept with the batch id
and its content digest in SQLite: a replay gets the same answer and changes nothing, the same
batch id with other content is a 409. The service answers from the new records at its next
refresh (`serving.models` reloads when the vehicles table changes).
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Annotated, Union

import pandas as pd
from pydantic import Field, StringConstraints

from autopdm.config import Paths
from autopdm.ingest import crm
from autopdm.schemas import SchemaError
from autopdm.serving.ledger import BatchConflict, content_digest
from autopdm.serving.requests import RequestError

# a record's values: ints stay ints (a customer number 104233 is not "104233.0"); objects and arrays are refused
Value = Union[str, int, float, None]
RecordRow = Annotated[dict[Annotated[str, StringConstraints(max_length=100)], Value], Field(max_length=100)]
RecordRows = Annotated[list[RecordRow], Field(max_length=100_000)]


class RecordsLedger:
    """batch_id → content digest and the answer given, in SQLite (WAL). A batch's import and its
    ledger entry happen under one write lock, so concurrent or repeated posts of a batch import it once."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.execute("CREATE TABLE IF NOT EXISTS record_batches (batch_id TEXT PRIMARY KEY, digest TEXT NOT NULL, "
                        "answer TEXT NOT NULL, received_at REAL NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        return con

    def ingest(self, batch_id: str, digest: str, write) -> dict:
        """`write()` → the answer; called only for a batch not seen before."""
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            row = con.execute("SELECT digest, answer FROM record_batches WHERE batch_id=?", (batch_id,)).fetchone()
            if row is not None:
                con.execute("ROLLBACK")
                if row[0] != digest:
                    raise BatchConflict(batch_id)
                return {**json.loads(row[1]), "duplicate": True}
            try:
                answer = write()
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("INSERT INTO record_batches (batch_id, digest, answer, received_at) VALUES (?,?,?,?)",
                        (batch_id, digest, json.dumps(answer), time.time()))
            con.execute("COMMIT")
            return {**answer, "duplicate": False}
        finally:
            con.close()


def ingest(paths: Paths, ledger: RecordsLedger, batch_id: str, tables: dict[str, list[dict]],
           dealer: str | None = None) -> dict:
    """Import a batch ({table: rows}); raises RequestError (4xx naming the field) for a batch that is
    not records at all, and for a batch id reused with other content (409). `dealer`: a dealer-scoped
    caller's dealer (see `ingest.crm.import_records`)."""
    # object columns: a customer number 104233 beside a row without one must not become 104233.0
    frames = {t: pd.DataFrame(rows, dtype=object) for t, rows in tables.items() if rows}
    if not frames:
        raise RequestError("vehicles", f"an empty batch: no rows in any of {', '.join(crm.ORDER)}")
    for table, df in frames.items():
        missing = crm.missing_required(table, df.columns)
        if missing:
            raise RequestError(table, f"no row has the required field(s) {missing}; every {table} row needs "
                                      f"{', '.join(crm.REQUIRED[table])}")

    def write() -> dict:
        try:
            res = crm.import_records(frames, paths, origin=f"records:{batch_id}", source="crm", dealer=dealer)
        except SchemaError as exc:
            raise RequestError(next(iter(frames)), str(exc)) from None
        return answer(batch_id, res)

    try:
        return ledger.ingest(batch_id, content_digest([tables.get(t) or [] for t in crm.ORDER]), write)
    except BatchConflict as exc:
        raise RequestError("batch_id", str(exc), status=409) from None


def answer(batch_id: str, res: dict[str, crm.TableResult]) -> dict:
    rejected = [{"table": t, "row": int(row), "field": col, "reason": f"{t} {why}"}
                for t, r in res.items() for row, col, why in r.quarantine.itertuples(index=False)]
    return {"batch_id": batch_id,
            "accepted": {t: r.accepted for t, r in res.items()},
            "rejected_count": {t: r.quarantined for t, r in res.items()},
            "tables": {t: {"received": r.rows, "new": r.new, "changed": r.changed, "unchanged": r.unchanged,
                           "rejected": r.quarantined, "ignored_fields": r.ignored_columns} for t, r in res.items()},
            "rejected": rejected}
