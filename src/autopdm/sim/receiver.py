"""A small, real CRM webhook receiver: `autopdm crm-receiver [--port P]`.

It is what the demo delivers into and the reference for CRM vendors (docs/crm-integration.md):
verify the Standard Webhooks signature over the raw body (and that its timestamp is within five
minutes), check the payload's fields and types, store each work order once per webhook-id in
SQLite, then answer 2xx. Standard library plus pydantic (field checks) and standardwebhooks.

    POST /work-orders        the webhook (POST / is accepted too)
    GET  /work-orders        stored work orders, newest first (?limit=N, ?component=C)   bearer token
    GET  /stats              {"work_orders", "deliveries", "duplicates", "rejected"}     bearer token
    GET  /healthz            {"ok": true}

The GET routes show VINs and customer ids, so they need ``Authorization: Bearer
$AUTOPDM_API_TOKEN`` and refuse everything when no token is configured, like the service.
Every connection has a socket timeout (`timeout`): a stalled or idle client is disconnected.
"""

from __future__ import annotations

import hmac
import json
import sqlite3
import sys
import threading
import time
from datetime import date, datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, Optional
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from autopdm.config import Paths, Settings
from autopdm.delivery import signing

MAX_BODY = 1 << 20  # 1 MiB; a work order is ~1 kB
REQUIRED = ("work_order_id", "vehicle_id", "customer_id", "channel", "component", "risk", "risk_band",
            "recommended_window", "recommended_action", "evidence", "model", "created_at")
STORED, DUPLICATE, CONFLICT = "stored", "duplicate", "conflict"

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


# -- the payload ---------------------------------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", protected_namespaces=())


class Window(_Strict):
    start: date
    end: date


class Evidence(_Strict):
    feature: str
    value: Any  # a feature's value: number, text, true/false or null
    contribution: float

    @field_validator("value")
    @classmethod
    def _scalar(cls, v):
        if v is not None and not isinstance(v, (int, float, str, bool)):
            raise ValueError("expected a number, text, true/false or null")
        return v


class ModelRef(_Strict):
    name: str
    version: str


class WorkOrder(_Strict):
    kind: Literal["work_order"] = "work_order"
    work_order_id: str = Field(min_length=1, max_length=200)
    vehicle_id: str = Field(min_length=1, max_length=64)
    customer_id: Optional[str]
    channel: Optional[str]
    component: str
    risk: float = Field(ge=0, le=1)
    risk_band: str
    recommended_window: Window
    recommended_action: str
    evidence: list[Evidence]
    model: ModelRef
    created_at: datetime


class Reminder(_Strict):
    """A service reminder (``"kind": "reminder"``): travels the same way; its own fields are kept as sent."""
    kind: Literal["reminder"]
    work_order_id: str = Field(min_length=1, max_length=200)
    vehicle_id: str = Field(min_length=1, max_length=64)
    customer_id: Optional[str] = None
    channel: Optional[str] = None


def parse(body: str) -> dict:
    """The payload as a dict, or ValueError naming the first bad field (`field.sub: reason`)."""
    try:
        raw = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ValueError(f"body: not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ValueError("body: not a JSON object")
    kind = raw.get("kind", "work_order")
    if kind not in ("work_order", "reminder"):
        raise ValueError(f"kind: expected 'work_order' or 'reminder', got {kind!r}"[:200])
    model = Reminder if kind == "reminder" else WorkOrder
    missing = [k for k in ("work_order_id", "vehicle_id") + (REQUIRED if model is WorkOrder else ()) if k not in raw]
    if missing:
        raise ValueError(f"missing field(s): {', '.join(dict.fromkeys(missing))}")
    try:
        model.model_validate_json(body)
    except ValidationError as exc:
        e = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in e["loc"]) or "body"
        raise ValueError(f"{where}: {e['msg'].removeprefix('Value error, ')}") from None
    return raw


# -- storage -------------------------------------------------------------------------------------

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

    def put(self, key: str, wo: dict, body: str) -> str:
        """Store once per key: STORED (new), DUPLICATE (same body again: counted, not stored) or
        CONFLICT (same key, another body: refused). Committed before the caller answers."""
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        win = wo.get("recommended_window") or {}
        comp = wo.get("component") if isinstance(wo.get("component"), str) else wo.get("kind", "-")
        with self.lock:
            self.con.execute("BEGIN IMMEDIATE")
            try:
                old = self.con.execute("SELECT body FROM work_orders WHERE idempotency_key=?", (key,)).fetchone()
                if old is None:
                    self.con.execute(
                        "INSERT INTO work_orders (idempotency_key, work_order_id, vehicle_id, customer_id, channel,"
                        " component, risk, risk_band, window_start, window_end, body, received_at, last_received_at)"
                        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (key, wo["work_order_id"], wo["vehicle_id"], wo.get("customer_id"), wo.get("channel"),
                         comp, wo.get("risk"), wo.get("risk_band"), win.get("start"), win.get("end"), body, now, now),
                    )
                    outcome = STORED
                elif old["body"] == body:
                    self.con.execute("UPDATE work_orders SET deliveries = deliveries + 1, last_received_at=? "
                                     "WHERE idempotency_key=?", (now, key))
                    outcome = DUPLICATE
                else:
                    self.con.execute("INSERT INTO counters VALUES ('rejected', 1) "
                                     "ON CONFLICT(name) DO UPDATE SET n = n + 1")
                    outcome = CONFLICT
                self.con.execute("COMMIT")
            except BaseException:
                self.con.execute("ROLLBACK")
                raise
        return outcome

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


# -- HTTP ----------------------------------------------------------------------------------------

class _Rejected(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


def make_handler(store: Store, secret: str, delay_s: float = 0.0, token: str = "", timeout: float = 10.0):
    log_requests = Settings().receiver_log
    webhook = signing.webhook(secret)
    token_b = token.encode()

    class Handler(BaseHTTPRequestHandler):
        server_version = "autopdm-crm-receiver/2"
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            self.timeout = timeout  # StreamRequestHandler: socket timeout for every read and write
            super().setup()

        def log_message(self, fmt, *args):  # quiet; one line per request to stderr if asked
            if log_requests:
                super().log_message(fmt, *args)

        def _send(self, code: int, obj, headers: dict | None = None) -> None:
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            scheme, _, cred = (self.headers.get("Authorization") or "").partition(" ")
            return bool(token_b) and scheme.lower() == "bearer" and hmac.compare_digest(cred.strip().encode(), token_b)

        def do_GET(self) -> None:  # noqa: N802
            u = urlsplit(self.path)
            qs = parse_qs(u.query)
            if u.path == "/healthz":
                return self._send(200, {"ok": True})
            if u.path not in ("/stats", "/work-orders"):
                return self._send(404, {"error": f"no route {u.path}"})
            if not self._authorized():
                why = "missing or invalid bearer token" if token_b else "no AUTOPDM_API_TOKEN configured: refused"
                return self._send(401, {"error": f"{why} (Authorization: Bearer <AUTOPDM_API_TOKEN>)"},
                                  {"WWW-Authenticate": 'Bearer realm="crm-receiver"'})
            if u.path == "/stats":
                return self._send(200, store.stats())
            try:
                limit = max(1, min(10_000, int(qs.get("limit", ["100"])[0])))
            except ValueError:
                return self._send(400, {"error": "limit: not an integer"})
            return self._send(200, store.list(limit, (qs.get("component") or [None])[0]))

        def do_POST(self) -> None:  # noqa: N802
            if urlsplit(self.path).path not in ("/", "/work-orders"):
                return self._send(404, {"error": f"no route {self.path}"})
            try:
                key, wo, body = self._accept()
                outcome = store.put(key, wo, body)
            except _Rejected as r:
                store.bump("rejected")
                return self._send(r.code, {"error": r.msg})
            except (TimeoutError, ConnectionError):
                raise  # the client went away or stalled: http.server closes the connection
            except Exception as exc:  # a bug must not drop the connection or leak a traceback
                print(f"crm-receiver: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
                self.close_connection = True
                return self._send(500, {"error": "internal error"})
            if outcome == CONFLICT:
                store_msg = f"webhook-id {key}: already received with a different body (replay refused)"
                return self._send(409, {"error": store_msg})
            self._send(201 if outcome == STORED else 200, {"status": outcome, "work_order_id": key})

        def _accept(self) -> tuple[str, dict, str]:
            """Read, verify and validate one delivery; _Rejected(code, reason) otherwise."""
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self.close_connection = True
                raise _Rejected(411, "Content-Length required") from None
            if length < 0 or length > MAX_BODY:
                self.close_connection = True
                raise _Rejected(413, f"body larger than {MAX_BODY} bytes")
            raw = self.rfile.read(length)
            if len(raw) < length:
                self.close_connection = True
                raise _Rejected(400, "body shorter than Content-Length")
            if delay_s:
                time.sleep(delay_s)
            try:
                body = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise _Rejected(400, "body: not UTF-8") from None
            try:
                msg_id = signing.verify(raw, dict(self.headers.items()), webhook)
            except signing.SignatureError as exc:
                raise _Rejected(401, str(exc)) from None
            key = (self.headers.get("Idempotency-Key") or "").strip()
            if not key:
                raise _Rejected(400, "Idempotency-Key: missing")
            if key != msg_id:
                raise _Rejected(422, "Idempotency-Key: differs from webhook-id")
            try:
                wo = parse(body)
            except ValueError as exc:
                code = 400 if str(exc).startswith("body: not JSON") else 422
                raise _Rejected(code, str(exc)) from None
            if wo["work_order_id"] != msg_id:
                raise _Rejected(422, "work_order_id: differs from webhook-id")
            return msg_id, wo, body

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many clients at once must not wait on the listen backlog

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (TimeoutError, ConnectionError)):
            return  # a client that stalled or hung up: nothing to report
        print(f"crm-receiver: {client_address[0]}: {type(exc).__name__}: {exc}", file=sys.stderr)


def make_server(host: str = "127.0.0.1", port: int = 8700, db: Path | str | None = None,
                secret: str | None = None, delay_s: float = 0.0, token: str | None = None,
                timeout: float = 10.0) -> Server:
    s = Settings()
    secret = secret if secret is not None else s.secret("crm_webhook_secret")
    if not secret:
        raise ValueError("no webhook secret: set AUTOPDM_CRM_WEBHOOK_SECRET or pass --secret")
    token = token if token is not None else s.secret("api_token")
    store = Store(db or default_db())
    srv = Server((host, port), make_handler(store, secret, delay_s, token, timeout))
    srv.store = store  # type: ignore[attr-defined]
    srv.has_token = bool(token)  # type: ignore[attr-defined]
    return srv


def serve(host: str = "127.0.0.1", port: int = 8700, db: Path | str | None = None,
          secret: str | None = None, delay_s: float = 0.0, ready=None, token: str | None = None,
          timeout: float = 10.0) -> None:
    srv = make_server(host, port, db, secret, delay_s, token, timeout)
    if ready:
        ready(srv)
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
