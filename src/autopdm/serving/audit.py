"""The audit trail: who read or changed which car's data, when, through which endpoint, and what came of it.

Append-only SQLite under the home (`<home>/access/audit.sqlite`): triggers refuse every UPDATE and
DELETE, so neither the service nor `autopdm forget` can rewrite it. An entry holds the time, the
token's id (never its secret), role and dealer scope, the endpoint, the vehicle ids and, per vehicle,
whether the caller was shown (or changed) its data — a car outside the caller's dealer scope, answered
as unknown, is recorded as not shown. No names, phone numbers or request bodies.

The service does not wait for the disk: `record` queues the entry and a writer thread commits what
has queued in one transaction (synchronous=FULL), a few milliseconds later. `flush` waits for it.
"""

from __future__ import annotations

import atexit
import queue
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from autopdm.config import Paths

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, token_id TEXT NOT NULL,
    role TEXT NOT NULL, dealer TEXT, endpoint TEXT NOT NULL, outcome TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entry_vehicles (entry_id INTEGER NOT NULL REFERENCES entries(id), vehicle_id TEXT NOT NULL,
    shown INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS entry_vehicles_vehicle ON entry_vehicles (vehicle_id, entry_id);
CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE ON entries BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS entries_no_delete BEFORE DELETE ON entries BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS vehicles_no_update BEFORE UPDATE ON entry_vehicles BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS vehicles_no_delete BEFORE DELETE ON entry_vehicles BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
"""
MAX_VEHICLES = 100_000  # per entry (a /records batch); beyond it the entry says how many were left out


def db_path(paths: Paths) -> Path:
    return paths.access / "audit.sqlite"


@dataclass(frozen=True)
class Entry:
    ts: float
    token_id: str
    role: str
    dealer: str | None
    endpoint: str
    outcome: str
    vehicles: tuple[tuple[str, bool], ...]   # (vehicle id, shown)


def connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.executescript(SCHEMA)
    return con


def append(con: sqlite3.Connection, entries: Iterable[Entry]) -> None:
    """Write entries in one transaction."""
    con.execute("BEGIN IMMEDIATE")
    try:
        for e in entries:
            cur = con.execute("INSERT INTO entries (ts, token_id, role, dealer, endpoint, outcome) VALUES (?,?,?,?,?,?)",
                              (e.ts, e.token_id, e.role, e.dealer, e.endpoint, e.outcome))
            con.executemany("INSERT INTO entry_vehicles (entry_id, vehicle_id, shown) VALUES (?,?,?)",
                            [(cur.lastrowid, v, int(s)) for v, s in e.vehicles[:MAX_VEHICLES]])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


class AuditLog:
    """The service's writer: `record` never blocks on the disk; a thread commits queued entries together."""

    def __init__(self, paths: Paths) -> None:
        self.path = db_path(paths)
        connect(self.path).close()  # a home that cannot hold the trail fails at start, not at a request
        self._q: queue.Queue = queue.Queue()
        self._written = threading.Condition()
        self._queued = self._done = 0
        threading.Thread(target=self._run, name="autopdm-audit", daemon=True).start()
        atexit.register(self.flush, 5.0)

    def record(self, principal, endpoint: str, vehicles: Iterable[tuple[str, bool]], outcome: str) -> None:
        vs = tuple(vehicles)
        if principal is None or not vs:
            return
        with self._written:
            self._queued += 1
        self._q.put(Entry(time.time(), principal.id, principal.role, principal.dealer, endpoint, outcome, vs))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything recorded so far is on disk."""
        with self._written:
            target = self._queued
            return self._written.wait_for(lambda: self._done >= target, timeout)

    def _run(self) -> None:
        con = connect(self.path)
        while True:
            batch = [self._q.get()]
            while True:
                try:
                    batch.append(self._q.get_nowait())
                except queue.Empty:
                    break
            for attempt in range(5):
                try:
                    append(con, batch)
                    break
                except sqlite3.Error:
                    time.sleep(0.2 * (attempt + 1))
            with self._written:
                self._done += len(batch)
                self._written.notify_all()


def query(paths: Paths, vehicle: str, since: datetime | None = None) -> list[dict]:
    """Who was shown or asked about `vehicle` since `since`, oldest first."""
    path = db_path(paths)
    if not path.exists():
        return []
    con = connect(path)
    try:
        rows = con.execute("SELECT e.ts, e.token_id, e.role, e.dealer, e.endpoint, e.outcome, v.shown FROM entry_vehicles v "
                           "JOIN entries e ON e.id = v.entry_id WHERE v.vehicle_id=? AND e.ts >= ? ORDER BY e.id",
                           (vehicle, since.timestamp() if since else 0.0)).fetchall()
    finally:
        con.close()
    return [{"when": datetime.fromtimestamp(r[0], timezone.utc).isoformat(timespec="seconds"), "token_id": r[1],
             "role": r[2], "dealer": r[3], "endpoint": r[4], "outcome": r[5], "shown": bool(r[6])} for r in rows]


def record_now(paths: Paths, token_id: str, role: str, endpoint: str, vehicles: Iterable[tuple[str, bool]],
               outcome: str) -> None:
    """One entry written at once (commands such as `autopdm forget`)."""
    con = connect(db_path(paths))
    try:
        append(con, [Entry(time.time(), token_id, role, None, endpoint, outcome, tuple(vehicles))])
    finally:
        con.close()
