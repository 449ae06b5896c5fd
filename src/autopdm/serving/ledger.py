"""The durable ledger that makes POST /telemetry idempotent per batch id."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path


class BatchConflict(Exception):
    """A batch id seen before, with other content: a client bug that must not lose data silently."""

    def __init__(self, batch_id: str) -> None:
        super().__init__(f"batch_id {batch_id!r} was already stored with different content; "
                         "a batch id names one batch for good: send new content under a new batch_id")
        self.batch_id = batch_id


def content_digest(content) -> str:
    """SHA-256 of a JSON value with sorted keys: the same records give the same digest."""
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class TelemetryLedger:
    """batch_id → result and content digest, in SQLite (WAL). The write of a batch and its ledger
    entry happen under one write lock, so concurrent or repeated uploads of a batch write it once;
    the same id with other content is refused (BatchConflict)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = self._connect()
        con.execute("CREATE TABLE IF NOT EXISTS batches (batch_id TEXT PRIMARY KEY, accepted INTEGER NOT NULL, "
                    "quarantined INTEGER NOT NULL, received_at REAL NOT NULL, digest TEXT)")
        if "digest" not in {r[1] for r in con.execute("PRAGMA table_info(batches)")}:  # a ledger from before digests
            con.execute("ALTER TABLE batches ADD COLUMN digest TEXT")
        con.close()

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        return con

    def ingest(self, batch_id: str, digest: str, write) -> dict:
        """`write()` → (accepted, quarantined); called only for a batch not seen before."""
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            row = con.execute("SELECT accepted, quarantined, digest FROM batches WHERE batch_id=?", (batch_id,)).fetchone()
            if row is not None:
                con.execute("ROLLBACK")
                if row[2] is not None and row[2] != digest:
                    raise BatchConflict(batch_id)
                return {"batch_id": batch_id, "accepted": row[0], "quarantined": row[1], "duplicate": True}
            try:
                accepted, quarantined = write()
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("INSERT INTO batches (batch_id, accepted, quarantined, received_at, digest) VALUES (?,?,?,?,?)",
                        (batch_id, accepted, quarantined, time.time(), digest))
            con.execute("COMMIT")
            return {"batch_id": batch_id, "accepted": accepted, "quarantined": quarantined, "duplicate": False}
        finally:
            con.close()
