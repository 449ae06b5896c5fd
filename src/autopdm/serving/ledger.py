"""The durable ledger that makes POST /telemetry idempotent per batch id."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

class TelemetryLedger:
    """batch_id → result, in SQLite (WAL). The write of a batch and its ledger entry happen under
    one write lock, so concurrent or repeated uploads of a batch write it once."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = self._connect()
        con.execute("CREATE TABLE IF NOT EXISTS batches (batch_id TEXT PRIMARY KEY, accepted INTEGER NOT NULL, "
                    "quarantined INTEGER NOT NULL, received_at REAL NOT NULL)")
        con.close()

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        return con

    def ingest(self, batch_id: str, write) -> dict:
        """`write()` → (accepted, quarantined); called only for a batch not seen before."""
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            row = con.execute("SELECT accepted, quarantined FROM batches WHERE batch_id=?", (batch_id,)).fetchone()
            if row is not None:
                con.execute("ROLLBACK")
                return {"batch_id": batch_id, "accepted": row[0], "quarantined": row[1], "duplicate": True}
            try:
                accepted, quarantined = write()
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("INSERT INTO batches VALUES (?,?,?,?)", (batch_id, accepted, quarantined, time.time()))
            con.execute("COMMIT")
            return {"batch_id": batch_id, "accepted": accepted, "quarantined": quarantined, "duplicate": False}
        finally:
            con.close()
