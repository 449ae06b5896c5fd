"""Plumbing behind `service.py`: auth and body-size middleware, request types, an in-memory
feature index for /assess, and the durable ledger that makes /telemetry idempotent.

No mlflow or evidently here: this is the serving hot path.
"""

from __future__ import annotations

import hmac
import json
import os
import sqlite3
import threading
import time
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Optional, Union

import numpy as np
import pandas as pd
from pydantic import AfterValidator, Field, StringConstraints

from .config import Paths
from .features import CATEGORICAL

PUBLIC_PATHS = frozenset({"/livez", "/readyz", "/metrics", "/healthz", "/schema.json"})
DEFAULT_MAX_BODY = 16 << 20  # 16 MiB


# -- middleware ------------------------------------------------------------------------------

class AuthLimitMiddleware:
    """Bearer token on everything but health, metrics and the client schema; 413 on big bodies.

    Token: $AUTOPDM_API_TOKEN. Without one the protected endpoints refuse every request (fail
    closed). Body limit: $AUTOPDM_MAX_BODY_BYTES (default 16 MiB), enforced on Content-Length
    and on the bytes actually received (chunked uploads).
    """

    def __init__(self, app, token: str | None = None, max_body: int | None = None) -> None:
        self.app = app
        self.token = (token if token is not None else os.environ.get("AUTOPDM_API_TOKEN", "")).encode()
        self.max_body = int(max_body or os.environ.get("AUTOPDM_MAX_BODY_BYTES", DEFAULT_MAX_BODY))

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if path not in PUBLIC_PATHS and not self._authorized(scope):
            return await _json(send, 401, {"error": "missing or invalid bearer token (Authorization: Bearer <AUTOPDM_API_TOKEN>)"},
                               [(b"www-authenticate", b'Bearer realm="autopdm"')])
        headers = dict(scope.get("headers") or [])
        cl = headers.get(b"content-length")
        if cl is not None:
            try:
                n = int(cl)
            except ValueError:
                return await _json(send, 400, {"error": "Content-Length: not an integer"})
            if n > self.max_body:
                return await _json(send, 413, {"error": f"body of {n} bytes exceeds the limit of {self.max_body}"})
            return await self.app(scope, receive, send)
        if scope.get("method") in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        # no Content-Length (chunked): buffer up to the limit, then replay
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body = msg.get("body", b"")
            size += len(body)
            if size > self.max_body:
                return await _json(send, 413, {"error": f"body exceeds the limit of {self.max_body} bytes"})
            chunks.append(body)
            more = msg.get("more_body", False)
        data = b"".join(chunks)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": data, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    def _authorized(self, scope) -> bool:
        if not self.token:
            return False
        for k, v in scope.get("headers") or []:
            if k == b"authorization":
                scheme, _, cred = v.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(cred.strip(), self.token)
        return False


async def _json(send, status: int, obj, extra_headers=()) -> None:
    body = json.dumps(obj).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *extra_headers]})
    await send({"type": "http.response.body", "body": body})


def bad_input(field: str, msg: str):
    """A 400 shaped like BentoML's pydantic errors: {"error", "detail": [{"loc", "msg"}]}."""
    from starlette.responses import JSONResponse

    return JSONResponse({"error": f"invalid {field}: {msg}", "detail": [{"loc": [field], "msg": msg}]}, status_code=400)


# -- request types ---------------------------------------------------------------------------

def _check_date(v: Optional[str]) -> Optional[str]:
    if v is not None:
        try:
            date.fromisoformat(v)
        except ValueError:
            raise ValueError(f"not a calendar date: {v!r}") from None
    return v


IsoDate = Annotated[str, StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}$"), AfterValidator(_check_date)]
VehicleIds = Annotated[list[Annotated[str, StringConstraints(min_length=1, max_length=64)]],
                       Field(min_length=1, max_length=1000)]
Scalar = Union[float, str, None]  # ints and booleans arrive as floats; a short union keeps validation fast
_CATEGORICAL = frozenset(CATEGORICAL)
NUMERIC_FEATURES: set[str] = set()  # filled by the service once the models are loaded
FEATURE_ORDER: list[str] = []       # the column order of compact (array) rows


def set_model_features(names) -> None:
    NUMERIC_FEATURES.clear()
    NUMERIC_FEATURES.update(set(names) - _CATEGORICAL)
    FEATURE_ORDER[:] = list(names)


def _check_array_row(row: list) -> list:
    if FEATURE_ORDER and len(row) != len(FEATURE_ORDER):
        raise ValueError(f"an array row needs {len(FEATURE_ORDER)} values in the order of /model_info "
                         f"feature_order, got {len(row)}")
    return row


def _check_row(row: dict) -> dict:
    """Model features must be numbers (or null = missing); other keys are ignored."""
    if str in set(map(type, row.values())):  # C-speed screen; the loop runs only for rows with text
        for k, v in row.items():
            if v.__class__ is str and k in NUMERIC_FEATURES:
                raise ValueError(f"{k}: expected a number or null, got a string")
    return row


FeatureRow = Union[Annotated[dict[str, Scalar], AfterValidator(_check_row)],
                   Annotated[list[Optional[float]], AfterValidator(_check_array_row)]]
FeatureRows = Annotated[list[FeatureRow], Field(min_length=1, max_length=10_000)]
Record = Annotated[dict[Annotated[str, StringConstraints(max_length=100)], Scalar], Field(max_length=100)]
BatchId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-]+$")]
Records = Annotated[list[Record], Field(max_length=500_000)]


# -- feature index ---------------------------------------------------------------------------

class FeatureIndex:
    """The features table in memory, indexed by vehicle, reloaded when the file changes."""

    def __init__(self, paths: Paths, columns: list[str], check_every_s: float = 5.0) -> None:
        self.paths = paths
        self.path = paths.table("features")
        self.vehicles_path = paths.table("vehicles")
        self.columns = list(dict.fromkeys(["vehicle_id", "date", *columns]))
        self.check_every_s = check_every_s
        self._lock = threading.Lock()
        self._mtime = None
        self._checked = 0.0
        self.frame = pd.DataFrame(columns=self.columns)
        self.vehicles = pd.DataFrame(columns=["vehicle_id", "customer_id", "preferred_channel"])
        self._idx: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._contacts: dict[str, dict] = {}
        self.known: set[str] = set()
        self.generation = 0
        self.history_days = int(os.environ.get("AUTOPDM_ASSESS_HISTORY_DAYS", "400"))
        self.window_start: date | None = None
        self.max_date: date | None = None
        self.refresh(force=True)

    def refresh_due(self) -> bool:
        return time.monotonic() - self._checked >= self.check_every_s

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < self.check_every_s:
            return
        with self._lock:
            self._checked = now
            try:
                mtime = (self.path.stat().st_mtime_ns, self.vehicles_path.stat().st_mtime_ns)
            except FileNotFoundError:
                return
            if mtime == self._mtime:
                return
            import pyarrow.parquet as pq

            have = set(pq.read_schema(self.path).names)
            last = pq.read_table(self.path, columns=["date"]).column("date").to_pandas()
            start = None
            if len(last) and self.history_days > 0:  # only the recent history is held in memory
                start = pd.Timestamp(pd.to_datetime(last).max()).tz_localize(None).normalize() - pd.Timedelta(days=self.history_days)
            filt = None
            if start is not None:
                import pyarrow as pa

                typ = pq.read_schema(self.path).field("date").type
                lit = pa.scalar(start.to_pydatetime().date() if pa.types.is_date(typ) else start, type=typ)
                filt = pq.filters_to_expression([("date", ">=", lit)])
            df = pq.read_table(self.path, columns=[c for c in self.columns if c in have], filters=filt).to_pandas()
            df["date"] = pd.to_datetime(df["date"]).dt.tz_localize(None).dt.normalize()
            self.window_start = start.date() if start is not None else None
            df = df.sort_values(["vehicle_id", "date"], kind="stable").reset_index(drop=True)
            idx = {}
            vid = df["vehicle_id"].to_numpy()
            dates = df["date"].to_numpy()
            if len(df):
                starts = np.flatnonzero(np.r_[True, vid[1:] != vid[:-1]])
                ends = np.r_[starts[1:], len(df)]
                for s, e in zip(starts, ends):
                    idx[str(vid[s])] = (dates[s:e], np.arange(s, e))
            vehicles = pq.read_table(self.vehicles_path).to_pandas().drop_duplicates("vehicle_id")
            contacts = {str(v): {"customer_id": None if pd.isna(c) else str(c), "channel": None if pd.isna(ch) else str(ch)}
                        for v, c, ch in zip(vehicles["vehicle_id"], vehicles["customer_id"], vehicles["preferred_channel"])}
            self.frame, self._idx, self.vehicles, self._contacts, self._mtime = df, idx, vehicles, contacts, mtime
            self.generation += 1
            self.known = set(vehicles["vehicle_id"].astype(str)) | set(idx)
            self.max_date = df["date"].max().date() if len(df) else None

    def contact(self, vehicle_id: str) -> dict:
        """customer_id and preferred channel: the only customer data this system holds."""
        return self._contacts.get(vehicle_id, {"customer_id": None, "channel": None})

    def in_memory(self, as_of: date) -> bool:
        return self.window_start is None or as_of >= self.window_start

    def rows(self, vehicle_ids: list[str], as_of: date, refresh: bool = True) -> tuple[pd.DataFrame, list[str], list[str]]:
        """Latest row on or before `as_of` per vehicle; plus unknown vehicles and known vehicles
        without a feature row by then. An `as_of` before the in-memory history is read from the
        Parquet table (slower)."""
        if refresh:
            self.refresh()
        if not self.in_memory(as_of):
            from .champion import latest_feature_rows

            ids = list(dict.fromkeys(vehicle_ids))
            df = latest_feature_rows(self.paths, ids, as_of)
            df = df.reindex(columns=self.columns)
            df["date"] = pd.to_datetime(df["date"]).dt.tz_localize(None).dt.normalize()
            found = set(df["vehicle_id"].astype(str))
            order = {v: i for i, v in enumerate(ids)}
            df = df.iloc[np.argsort([order[str(v)] for v in df["vehicle_id"]], kind="stable")]
            missing = [v for v in ids if v not in found]
            return df, [v for v in missing if v not in self.known], [v for v in missing if v in self.known]
        t = np.datetime64(pd.Timestamp(as_of).normalize().to_datetime64())
        take, unknown, no_data = [], [], []
        for v in dict.fromkeys(vehicle_ids):
            hit = self._idx.get(v)
            if hit is None:
                (no_data if v in self.known else unknown).append(v)
                continue
            dates, pos = hit
            i = np.searchsorted(dates, t, side="right") - 1
            if i < 0:
                no_data.append(v)
            else:
                take.append(pos[i])
        return self.frame.iloc[take], unknown, no_data


class LRU:
    """A small LRU map (size 0 disables it). Used for per-(vehicle, feature day) model outputs,
    which cannot change until the features table or the models do."""

    def __init__(self, size: int) -> None:
        from collections import OrderedDict

        self.size = size
        self._d: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, k, default=None):
        with self._lock:
            v = self._d.get(k, default)
            if v is not default:
                self._d.move_to_end(k)
            return v

    def put_many(self, items) -> None:
        if self.size <= 0:
            return
        with self._lock:
            for k, v in items:
                self._d[k] = v
                self._d.move_to_end(k)
                if len(self._d) > self.size:
                    self._d.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._d.clear()

    def __len__(self) -> int:
        return len(self._d)


# -- micro-batching -------------------------------------------------------------------------

class MicroBatcher:
    """Coalesce concurrent calls into one call of `fn(list_of_items) -> list_of_results`, run in a
    worker thread. No timer: whatever queued up while the previous batch ran forms the next one,
    so a lone request is never delayed and a burst costs one model call per batch."""

    def __init__(self, fn, max_batch: int = 256) -> None:
        self.fn = fn
        self.max_batch = max_batch
        self._queue = None

    async def submit(self, item):
        import asyncio

        loop = asyncio.get_running_loop()
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._run())
        fut = loop.create_future()
        await self._queue.put((item, fut))
        return await fut

    async def _run(self) -> None:
        import asyncio

        import anyio

        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            try:
                results = await anyio.to_thread.run_sync(self.fn, [b[0] for b in batch])
            except Exception as exc:  # each caller sees the error
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
            else:
                for (_, fut), res in zip(batch, results):
                    if not fut.done():
                        fut.set_result(res)


# -- telemetry ledger ------------------------------------------------------------------------

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


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame.from_records(records) if records else pd.DataFrame()
