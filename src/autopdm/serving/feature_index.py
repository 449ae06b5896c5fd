"""The features table in memory for /assess: each vehicle's rows by date, reloaded when the file
changes; and a small LRU for model outputs per (vehicle, feature day)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from autopdm.config import Paths, Settings

def latest_feature_rows(paths: Paths | None, vehicle_ids, as_of=None) -> pd.DataFrame:
    """Each vehicle's latest feature row on or before `as_of` (default: latest), read with pyarrow filters."""
    paths = paths or Paths.from_env()
    path = paths.table("features")
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run `autopdm features` first")
    ids = [str(v) for v in vehicle_ids]
    if not ids:
        return pq.read_schema(path).empty_table().to_pandas()
    filters = [("vehicle_id", "in", ids)]
    if as_of is not None:
        ts = pd.Timestamp(as_of)
        ts = ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo else ts
        filters.append(("date", "<=", ts.normalize()))
    df = pq.read_table(path, filters=filters).to_pandas()
    if df.empty:
        return df
    df = df.sort_values(["vehicle_id", "date"], kind="stable")
    return df.groupby("vehicle_id", sort=False).tail(1).reset_index(drop=True)


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
        self.history_days = Settings().assess_history_days
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
            have = set(pq.read_schema(self.path).names)
            last = pq.read_table(self.path, columns=["date"]).column("date").to_pandas()
            start = None
            if len(last) and self.history_days > 0:  # only the recent history is held in memory
                start = pd.Timestamp(pd.to_datetime(last).max()).tz_localize(None).normalize() - pd.Timedelta(days=self.history_days)
            filt = None
            if start is not None:
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
