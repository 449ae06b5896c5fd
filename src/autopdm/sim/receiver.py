"""A small, real CRM webhook receiver: `autopdm crm-receiver [--port P]`.

It is what the demo delivers into and the reference for CRM vendors (docs/crm-integration.md):
verify the HMAC signature over the raw body, de-duplicate by `Idempotency-Key`, commit the work
order to SQLite, then answer 2xx. Standard library only (http.server + sqlite3).

    POST /work-orders        the webhook (POST / is accepted too)
    GET  /work-orders        stored work orders, newest first (?limit=N, ?component=C)
    GET  /stats              {"work_orders", "deliveries", "duplicates", "rejected"}
    GET  /healthz            {"ok": true}
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from autopdm.config import Paths, Settings
from autopdm.delivery.webhook import verify

MAX_BODY = 1 << 20  # 1 MiB; a work order is ~1 kB
REQUIRED = ("work_order_id", "vehicle_id", "customer_id", "channel", "component", "risk", "risk_band",
            "recommended_window", "recommended_action", "evidence", "model", "created_at")

SCHEMA = """
CREATE TABLE IF NOT EXISTS work_orders (
    idempotency_key  TEXT PRIMARY KEY,
    work_order_id    TEXT NOT NULL,
    vehicle_id       TEXT NOT NULL,
    customer_id      TEXT,
    channel          TEXT,
    component        TEXT NOT NULL,
    risk             REAL,
    risk_band        TEXT,
    window_start     TEXT,
    window_end       TEXT,
    body             TEXT NOT NULL,
    received_at      TEXT NOT NULL,
    deliveries       INTEGER NOT NULL DEFAULT 1,
    last_received_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, n INTEGER NOT NULL);
"""


def default_db() -> Path:
    return Paths.from_env().home / "crm_receiver.sqlite"


class Store:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.con = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self.con.row_factory = sqlite3.Row
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("PRAGMA synchronous=FULL")
        self.con.executescript(SCHEMA)

    def bump(self, name: str) -> None:
        with self.lock:
            self.con.execute("INSERT INTO counters VALUES (?, 1) ON CONFLICT(name) DO UPDATE SET n = n + 1", (name,))

    def put(self, key: str, wo: dict, body: str) -> bool:
        """Store once per key; True when new. Committed before the caller answers."""
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        win = wo.get("recommended_window") or {}
        with self.lock:
            self.con.execute("BEGIN IMMEDIATE")
            try:
                cur = self.con.execute(
                    "INSERT OR IGNORE INTO work_orders (idempotency_key, work_order_id, vehicle_id, customer_id, channel,"
                    " component, risk, risk_band, window_start, window_end, body, received_at, last_received_at)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (key, wo["work_order_id"], wo["vehicle_id"], wo.get("customer_id"), wo.get("channel"),
                     wo["component"], wo.get("risk"), wo.get("risk_band"), win.get("start"), win.get("end"),
                     body, now, now),
                )
                new = cur.rowcount == 1
                if not new:
                    self.con.execute("UPDATE work_orders SET deliveries = deliveries + 1, last_received_at=? "
                                     "WHERE idempotency_key=?", (now, key))
                self.con.execute("COMMIT")
            except BaseException:
                self.con.execute("ROLLBACK")
                raise
        return new

    def stats(self) -> dict:
        with self.lock:
            n, d = self.con.execute("SELECT COUNT(*), COALESCE(SUM(deliveries), 0) FROM work_orders").fetchone()
            counters = {r[0]: r[1] for r in self.con.execute("SELECT name, n FROM counters")}
        return {"work_orders": n, "deliveries": d, "duplicates": d - n, "rejected": counters.get("rejected", 0)}

    def list(self, limit: int = 100, component: str | None = None) -> list[dict]:
        q, args = "SELECT body, deliveries, received_at FROM work_orders", []
        if component:
            q += " WHERE component=?"
            args.append(component)
        q += " ORDER BY received_at DESC LIMIT ?"
        args.append(limit)
        with self.lock:
            rows = self.con.execute(q, args).fetchall()
        return [{**json.loads(r["body"]), "_deliveries": r["deliveries"], "_received_at": r["received_at"]} for r in rows]


def make_handler(store: Store, secret: str, delay_s: float = 0.0):
    log_requests = Settings().receiver_log

    class Handler(BaseHTTPRequestHandler):
        server_version = "autopdm-crm-receiver/1"
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # quiet; one line per request to stderr if asked
            if log_requests:
                super().log_message(fmt, *args)

        def _send(self, code: int, obj) -> None:
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _reject(self, code: int, msg: str) -> None:
            store.bump("rejected")
            self._send(code, {"error": msg})

        def do_GET(self) -> None:  # noqa: N802
            u = urlsplit(self.path)
            qs = parse_qs(u.query)
            if u.path == "/healthz":
                return self._send(200, {"ok": True})
            if u.path == "/stats":
                return self._send(200, store.stats())
            if u.path == "/work-orders":
                try:
                    limit = max(1, min(10_000, int(qs.get("limit", ["100"])[0])))
                except ValueError:
                    return self._send(400, {"error": "limit: not an integer"})
                return self._send(200, store.list(limit, (qs.get("component") or [None])[0]))
            self._send(404, {"error": f"no route {u.path}"})

        def do_POST(self) -> None:  # noqa: N802
            if urlsplit(self.path).path not in ("/", "/work-orders"):
                return self._send(404, {"error": f"no route {self.path}"})
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self.close_connection = True
                return self._reject(411, "Content-Length required")
            if length < 0 or length > MAX_BODY:
                self.close_connection = True
                return self._reject(413, f"body larger than {MAX_BODY} bytes")
            body = self.rfile.read(length)
            if delay_s:
                time.sleep(delay_s)
            if not verify(body, secret, self.headers.get("X-Autopdm-Signature")):
                return self._reject(401, "X-Autopdm-Signature: missing or does not match the body")
            key = (self.headers.get("Idempotency-Key") or "").strip()
            if not key or len(key) > 200:
                return self._reject(400, "Idempotency-Key: missing")
            try:
                wo = json.loads(body)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                return self._reject(400, f"body: not JSON ({exc})")
            if not isinstance(wo, dict):
                return self._reject(422, "body: not a JSON object")
            missing = [k for k in REQUIRED if k not in wo]
            if missing:
                return self._reject(422, f"missing field(s): {', '.join(missing)}")
            if wo["work_order_id"] != key:
                return self._reject(422, "Idempotency-Key: differs from work_order_id")
            new = store.put(key, wo, body.decode("utf-8"))
            self._send(201 if new else 200, {"status": "stored" if new else "duplicate", "work_order_id": key})

    return Handler


def make_server(host: str = "127.0.0.1", port: int = 8700, db: Path | str | None = None,
                secret: str | None = None, delay_s: float = 0.0) -> ThreadingHTTPServer:
    secret = secret if secret is not None else Settings().secret("crm_webhook_secret")
    if not secret:
        raise ValueError("no webhook secret: set AUTOPDM_CRM_WEBHOOK_SECRET or pass --secret")
    store = Store(db or default_db())
    srv = ThreadingHTTPServer((host, port), make_handler(store, secret, delay_s))
    srv.daemon_threads = True
    srv.store = store  # type: ignore[attr-defined]
    return srv


def serve(host: str = "127.0.0.1", port: int = 8700, db: Path | str | None = None,
          secret: str | None = None, delay_s: float = 0.0, ready=None) -> None:
    srv = make_server(host, port, db, secret, delay_s)
    if ready:
        ready(srv)
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
