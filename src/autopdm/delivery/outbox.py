"""Durable outbox for work orders: what is to be delivered, and what became of each delivery.

* A work order is written to SQLite (WAL, synchronous=FULL) before anything is sent, so a crash
  never loses one. Its primary key is the deterministic ``work_order_id``: enqueuing the same
  recommendation twice is a no-op. The stored body is what is signed and sent, verbatim.
* Rows are claimed with a lease (owner = host:pid) so two dispatchers never send the same row at
  the same time; the lease of a dead process on this host is taken over at once.
* While an equivalent recommendation (same vehicle and component) is still open — its window has
  not ended and no service has closed it — a new one is suppressed.

Delivery itself (retries, backoff, parking) is `dispatcher`; how bytes reach the CRM is a transport
(`transport`, `webhook`, `filedrop`).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

from autopdm.config import Paths

PENDING, DELIVERED, PARKED, CLOSED = "pending", "delivered", "parked", "closed"  # closed = dropped before delivery

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    work_order_id   TEXT PRIMARY KEY,
    vehicle_id      TEXT NOT NULL,
    component       TEXT NOT NULL,
    window_start    TEXT NOT NULL,
    window_end      TEXT NOT NULL,
    issued_on       TEXT NOT NULL,
    body            TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    lease_owner     TEXT,
    lease_until     REAL,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      REAL NOT NULL,
    delivered_at    REAL,
    closed_at       REAL,
    closed_reason   TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(status, next_attempt_at);
CREATE INDEX IF NOT EXISTS outbox_vc ON outbox(vehicle_id, component, window_end);
"""


def encode_body(work_order: dict) -> str:
    """Canonical JSON of a work order: the bytes that are signed and sent, stored verbatim."""
    return json.dumps(work_order, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def slot(payload: dict) -> str:
    """The `component` column of a payload's row, what suppression keys on with the vehicle: a work
    order's component, or `reminder:<service>` for a service reminder (pipeline.reminders)."""
    return f"reminder:{payload['service']}" if payload.get("kind") == "reminder" else payload["component"]


def connect(path: Path | str) -> sqlite3.Connection:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=30, isolation_level=None)  # autocommit; explicit BEGINs
    con.row_factory = sqlite3.Row
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute("PRAGMA busy_timeout=30000")
    return con


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Outbox:
    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        with self._con() as con:
            con.executescript(SCHEMA)

    @classmethod
    def open(cls, paths: Paths | None = None) -> "Outbox":
        return cls((paths or Paths.from_env()).outbox)

    def _con(self) -> "_Conn":
        return _Conn(self.path)

    # -- writing -----------------------------------------------------------------------------
    def open_keys(self, as_of: date | str) -> set[tuple[str, str]]:
        """(vehicle_id, component) pairs with a recommendation still open at `as_of`."""
        as_of = str(as_of)[:10]
        with self._con() as con:
            rows = con.execute(
                "SELECT DISTINCT vehicle_id, component FROM outbox WHERE closed_at IS NULL AND window_end >= ?",
                (as_of,),
            ).fetchall()
        return {(r[0], r[1]) for r in rows}

    def enqueue(self, work_orders: Iterable[dict], as_of: date | str | None = None) -> "EnqueueResult":
        """Store work orders for delivery. Suppressed: the same id again, or any work order whose
        vehicle and component already have an open recommendation at `as_of` (default: the start
        of its own window)."""
        res = EnqueueResult()
        now = time.time()
        with self._con() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                for wo in work_orders:
                    win = wo["recommended_window"]
                    ref = str(as_of)[:10] if as_of is not None else win["start"]
                    comp = slot(wo)
                    clash = con.execute(
                        "SELECT work_order_id FROM outbox WHERE vehicle_id=? AND component=? AND closed_at IS NULL "
                        "AND window_end >= ? LIMIT 1",
                        (wo["vehicle_id"], comp, ref),
                    ).fetchone()
                    if clash is not None:
                        res.suppressed.append((wo["work_order_id"], clash[0]))
                        continue
                    issued = str(as_of)[:10] if as_of is not None else str(wo.get("created_at") or win["start"])[:10]
                    cur = con.execute(
                        "INSERT OR IGNORE INTO outbox (work_order_id, vehicle_id, component, window_start, window_end,"
                        " issued_on, body, status, next_attempt_at, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                        (wo["work_order_id"], wo["vehicle_id"], comp, win["start"], win["end"], issued,
                         encode_body(wo), PENDING, now, now),
                    )
                    if cur.rowcount:
                        res.enqueued.append(wo["work_order_id"])
                    else:  # the very same work order is already stored
                        res.suppressed.append((wo["work_order_id"], wo["work_order_id"]))
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return res

    def close(self, vehicle_id: str, component: str, reason: str = "serviced", before: str | None = None) -> int:
        """Close open recommendations for a vehicle and component (e.g. the car was serviced),
        so a new one may be issued later. `before`: only those issued (scored) on or before that date."""
        # undelivered ones are not sent any more; delivered ones keep their status
        q = ("UPDATE outbox SET status=CASE WHEN status=? THEN status ELSE ? END, closed_at=?, closed_reason=?"
             " WHERE vehicle_id=? AND component=? AND closed_at IS NULL")
        args: list = [DELIVERED, CLOSED, time.time(), reason, vehicle_id, component]
        if before is not None:
            q += " AND issued_on <= ?"
            args.append(str(before)[:10])
        with self._con() as con:
            return con.execute(q, args).rowcount

    def close_serviced(self, service_events, as_of: date | str | None = None, reason: str = "service event on") -> int:
        """Close open recommendations followed by a service event of the same component (dated on
        or before `as_of` when given). `service_events`: DataFrame with vehicle_id, component, date."""
        n = 0
        if service_events is None or len(service_events) == 0:
            return 0
        with self._con() as con:
            open_rows = con.execute(
                "SELECT vehicle_id, component, MIN(issued_on) FROM outbox WHERE closed_at IS NULL GROUP BY 1, 2"
            ).fetchall()
        if not open_rows:
            return 0
        ev = service_events[["vehicle_id", "component", "date"]].copy()
        ev["date"] = ev["date"].astype(str).str[:10]
        if as_of is not None:
            ev = ev[ev["date"] <= str(as_of)[:10]]
        last = ev.groupby(["vehicle_id", "component"])["date"].max().to_dict()
        for vin, comp, _ in open_rows:
            d = last.get((vin, comp))
            if d is not None:
                n += self.close(vin, comp, reason=f"{reason} {d}", before=d)
        return n

    # -- delivery ----------------------------------------------------------------------------
    def claim(self, limit: int = 50, lease_s: float = 30.0) -> list[sqlite3.Row]:
        """Claim due pending rows for this process (lease)."""
        now = time.time()
        me = _owner()
        host = socket.gethostname()
        with self._con() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                # leases held on other hosts are skipped here; this host's are checked for a live process below
                rows = con.execute(
                    "SELECT work_order_id, lease_owner, lease_until FROM outbox WHERE status=? AND next_attempt_at<=? "
                    "AND (lease_owner IS NULL OR lease_until IS NULL OR lease_until<=? OR lease_owner LIKE ?) "
                    "ORDER BY next_attempt_at, created_at LIMIT ?",
                    (PENDING, now, now, host.replace("%", "_") + ":%", limit * 4),
                ).fetchall()
                ids = []
                for r in rows:
                    owner, until = r["lease_owner"], r["lease_until"] or 0
                    if owner and owner != me and until > now:
                        h, _, pid = owner.rpartition(":")
                        if not (h == host and pid.isdigit() and not _pid_alive(int(pid))):
                            continue  # a live dispatcher holds it
                    ids.append(r["work_order_id"])
                    if len(ids) >= limit:
                        break
                for wid in ids:
                    con.execute("UPDATE outbox SET lease_owner=?, lease_until=? WHERE work_order_id=?",
                                (me, now + lease_s, wid))
                out = [con.execute("SELECT * FROM outbox WHERE work_order_id=?", (w,)).fetchone() for w in ids]
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return out

    def finish(self, wid: str, **cols) -> None:
        """Record the outcome of an attempt on a row this process claimed, and release its lease."""
        sets = ", ".join(f"{k}=?" for k in cols)
        with self._con() as con:
            con.execute(f"UPDATE outbox SET {sets}, lease_owner=NULL, lease_until=NULL WHERE work_order_id=? AND status=?",
                        (*cols.values(), wid, PENDING))

    def release(self, work_order_ids: list[str]) -> None:
        """Give back leases of claimed rows that were not attempted."""
        if not work_order_ids:
            return
        with self._con() as con:
            con.execute(f"UPDATE outbox SET lease_owner=NULL, lease_until=NULL WHERE work_order_id IN "
                        f"({','.join('?' * len(work_order_ids))}) AND lease_owner=?", (*work_order_ids, _owner()))

    def postpone_due(self, delay_s: float) -> int:
        """Push every due pending row to now + delay (the endpoint is down; no attempt counted)."""
        now = time.time()
        with self._con() as con:
            return con.execute("UPDATE outbox SET next_attempt_at=? WHERE status=? AND next_attempt_at<=?",
                               (now + delay_s, PENDING, now)).rowcount

    def retry(self, work_order_ids: list[str] | None = None, parked: bool = True) -> int:
        """Make pending rows due now and (by default) put parked rows back in the queue."""
        statuses = [PENDING, PARKED] if parked else [PENDING]
        q = f"UPDATE outbox SET status=?, next_attempt_at=?, lease_owner=NULL, lease_until=NULL WHERE status IN ({','.join('?' * len(statuses))})"
        args: list = [PENDING, time.time(), *statuses]
        if work_order_ids:
            q += f" AND work_order_id IN ({','.join('?' * len(work_order_ids))})"
            args += list(work_order_ids)
        with self._con() as con:
            return con.execute(q, args).rowcount

    def next_due_at(self) -> float | None:
        """When the earliest pending row becomes due (epoch seconds), or None."""
        with self._con() as con:
            return con.execute("SELECT MIN(next_attempt_at) FROM outbox WHERE status=?", (PENDING,)).fetchone()[0]

    def status(self) -> dict:
        with self._con() as con:
            counts = {r[0]: r[1] for r in con.execute("SELECT status, COUNT(*) FROM outbox GROUP BY status")}
            by_comp = [dict(r) for r in con.execute(
                "SELECT component, status, COUNT(*) AS n FROM outbox GROUP BY component, status ORDER BY 1, 2")]
            oldest = con.execute("SELECT MIN(created_at), MIN(next_attempt_at) FROM outbox WHERE status=?",
                                 (PENDING,)).fetchone()
            failing = [dict(r) for r in con.execute(
                "SELECT work_order_id, vehicle_id, component, status, attempts, last_status, last_error, next_attempt_at "
                "FROM outbox WHERE status=? OR (status=? AND attempts>0) ORDER BY created_at LIMIT 20",
                (PARKED, PENDING))]
        for f in failing:
            f["next_attempt_at"] = _iso(f["next_attempt_at"]) if f["status"] == PENDING else None
        return {
            "path": str(self.path),
            "counts": {s: counts.get(s, 0) for s in (PENDING, DELIVERED, PARKED, CLOSED)},
            "by_component": by_comp,
            "oldest_pending_created_at": _iso(oldest[0]),
            "next_attempt_at": _iso(oldest[1]),
            "problems": failing,
        }

    def rows(self, status: str | None = None) -> list[dict]:
        with self._con() as con:
            q, args = "SELECT * FROM outbox", ()
            if status:
                q, args = q + " WHERE status=?", (status,)
            return [dict(r) for r in con.execute(q + " ORDER BY created_at, work_order_id", args)]


@dataclass
class EnqueueResult:
    enqueued: list[str] = field(default_factory=list)
    suppressed: list[tuple[str, str]] = field(default_factory=list)  # (new id, id of the open one)


class _Conn:
    """A short-lived connection used as a context manager (closed on exit)."""

    def __init__(self, path: Path) -> None:
        self.con = connect(path)

    def __enter__(self) -> sqlite3.Connection:
        return self.con

    def __exit__(self, *exc) -> None:
        self.con.close()


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="seconds")
