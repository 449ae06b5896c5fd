"""The features table in memory for /assess: each vehicle's rows by date, and a small LRU for
model outputs per (vehicle, feature day).

A `FeatureIndex` is one load of the table and never changes; the service loads a new one when
the file changes (see `serving.models`), so a request always reads one consistent table.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from autopdm.config import Paths


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


def _as_day_type(typ: pa.DataType, days) -> list:
    """Days as values of the table's `date` column type (date32 or a naive timestamp)."""
    return [d if pa.types.is_date(typ) else pd.Timestamp(d) for d in days]


def _naive_days(col: pd.Series) -> pd.Series:
    col = pd.to_datetime(col)
    return (col.dt.tz_convert("UTC").dt.tz_localize(None) if col.dt.tz is not None else col).dt.normalize()


def latest_rows_many(paths: Paths, asks: list[tuple[list[str], date]], columns: list[str]) -> list[pd.DataFrame]:
    """For several asks (vehicles, day) at once, each vehicle's latest feature row on or before the
    ask's day — with two reads of the table in all, however many asks: the candidates' keys
    (vehicle, date), then the rows picked. One frame per ask, in the ask's vehicle order."""
    path = paths.table("features")
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run `autopdm features` first")
    typ = pq.read_schema(path).field("date").type
    ids = sorted({v for vs, _ in asks for v in vs})
    (last,) = _as_day_type(typ, [max(d for _, d in asks)])
    keys = pq.read_table(path, columns=["vehicle_id", "date"], filters=[("vehicle_id", "in", ids), ("date", "<=", last)]).to_pandas()
    keys["date"] = _naive_days(keys["date"])
    keys = keys.sort_values(["vehicle_id", "date"], kind="stable")
    picks = []
    for vs, d in asks:
        k = keys[keys["vehicle_id"].isin(vs) & (keys["date"] <= pd.Timestamp(d))].groupby("vehicle_id", sort=False).tail(1)
        picks.append(k.set_index("vehicle_id").reindex([v for v in dict.fromkeys(vs) if v in set(k["vehicle_id"])]))
    want = pd.concat(picks)
    have = pq.read_schema(path).names
    rows = pq.read_table(path, columns=[c for c in columns if c in have],
                         filters=[("vehicle_id", "in", sorted(set(want.index))),
                                  ("date", "in", _as_day_type(typ, sorted(set(want["date"]))))]).to_pandas() \
        if len(want) else pd.DataFrame(columns=columns)
    rows["vehicle_id"] = rows["vehicle_id"].astype(str)
    rows["date"] = _naive_days(rows["date"])
    rows = rows.drop_duplicates(["vehicle_id", "date"], keep="last").set_index(["vehicle_id", "date"])
    out = []
    for p in picks:  # a pair the second read missed (the table was replaced in between) is left out
        pairs = [k for k in zip(p.index, p["date"]) if k in rows.index]
        out.append(rows.loc[pairs].reset_index().reindex(columns=columns) if pairs else pd.DataFrame(columns=columns))
    return out


def table_stamp(paths: Paths) -> tuple | None:
    """What says the features or vehicles table changed (None while either is missing)."""
    try:
        return tuple(paths.table(t).stat().st_mtime_ns for t in ("features", "vehicles"))
    except FileNotFoundError:
        return None


def _day(d) -> np.datetime64:
    return np.datetime64(d, "D")


class FeatureIndex:
    """One load of the features table: the last `history_days` of rows (0 = all) in memory,
    indexed by vehicle and date, plus each vehicle's contact fields."""

    def __init__(self, paths: Paths, columns: list[str], history_days: int) -> None:
        self.paths = paths
        self.columns = list(dict.fromkeys(["vehicle_id", "date", *columns]))
        self.stamp = table_stamp(paths)
        if self.stamp is None:
            raise FileNotFoundError(f"{paths.table('features')} or {paths.table('vehicles')} does not exist: "
                                    "run `autopdm features` first")
        path = paths.table("features")
        schema = pq.read_schema(path)
        self.window_start: date | None = None
        filt = None
        if history_days > 0:  # only the recent history is held in memory
            last = pq.read_table(path, columns=["date"]).column("date").to_pandas()
            if len(last):
                start = pd.Timestamp(pd.to_datetime(last).max()).tz_localize(None).normalize() - pd.Timedelta(days=history_days)
                typ = schema.field("date").type
                lit = pa.scalar(start.to_pydatetime().date() if pa.types.is_date(typ) else start, type=typ)
                filt = pq.filters_to_expression([("date", ">=", lit)])
                self.window_start = start.date()
        df = pq.read_table(path, columns=[c for c in self.columns if c in schema.names], filters=filt).to_pandas()
        df["vehicle_id"] = df["vehicle_id"].astype(str)
        df["date"] = pd.to_datetime(df["date"]).dt.tz_localize(None).dt.normalize()
        self.frame = df.sort_values(["vehicle_id", "date"], kind="stable").reset_index(drop=True)
        self._index()
        vehicles = pq.read_table(paths.table("vehicles")).to_pandas().drop_duplicates("vehicle_id")
        self._contacts = {str(v): {"customer_id": None if pd.isna(c) else str(c), "channel": None if pd.isna(ch) else str(ch)}
                          for v, c, ch in zip(vehicles["vehicle_id"], vehicles["customer_id"], vehicles["preferred_channel"])}
        self.known = set(self._contacts) | set(self._idx)
        self.max_date: date | None = self.frame["date"].max().date() if len(self.frame) else None

    def _index(self) -> None:
        vid = self.frame["vehicle_id"].to_numpy()
        days = self.frame["date"].to_numpy().astype("datetime64[D]")
        self._idx: dict[str, tuple[np.ndarray, int]] = {}  # vehicle → (its feature days, first row)
        if len(vid):
            starts = np.flatnonzero(np.r_[True, vid[1:] != vid[:-1]])
            ends = np.r_[starts[1:], len(vid)]
            for s, e in zip(starts, ends):
                self._idx[str(vid[s])] = (days[s:e], int(s))

    def covers(self, columns) -> bool:
        return set(columns) <= set(self.columns)

    def contact(self, vehicle_id: str) -> dict:
        """customer_id and preferred channel: the only customer data this system holds."""
        return self._contacts.get(vehicle_id, {"customer_id": None, "channel": None})

    def in_memory(self, day: date) -> bool:
        return self.window_start is None or day >= self.window_start

    def latest_positions(self) -> np.ndarray:
        """Row of each vehicle's latest feature day."""
        return np.array([s + len(days) - 1 for days, s in self._idx.values()], dtype=np.int64)

    def locate(self, vehicle_id: str, day: date) -> tuple[int, bool] | None:
        """(row of the vehicle's latest feature day on or before `day`, whether it is its latest
        row at all) — or None when it has no row by then in memory."""
        hit = self._idx.get(vehicle_id)
        if hit is None:
            return None
        days, start = hit
        i = int(np.searchsorted(days, _day(day), side="right")) - 1
        return None if i < 0 else (start + i, i == len(days) - 1)


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

    def __len__(self) -> int:
        return len(self._d)
