"""The vehicles × days grid the daily features are computed on, and array helpers over it.

A grid array has one row per vehicle and one column per day (`day0` .. `day_end`). Rolling windows
are differences of cumulative sums along the day axis (minima and maxima: sliding windows); "since
the last event" quantities use the index of the last event on or before each day, carried forward
with `np.maximum.accumulate`. No helper looks at column t+1 when computing column t, which is what
makes the features point-in-time correct.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

NO = -(10**9)  # "no day": a missing date, or no event yet


def day_number(s: pd.Series) -> np.ndarray:
    """Days since 1970-01-01 of a UTC timestamp or date column (int64; NaT → NO)."""
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    v = pd.to_datetime(s, errors="coerce").to_numpy("datetime64[D]")
    out = v.astype("int64")
    out[np.isnat(v)] = NO
    return out


class Grid:
    def __init__(self, vids: pd.Index, day0: int, n_days: int):
        self.vids, self.day0, self.T = vids, day0, n_days
        self.V = len(vids)

    def index(self, vehicle_id: pd.Series, day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flat cell of each (vehicle, day) on the grid, and which of them are on it."""
        vi = self.vids.get_indexer(vehicle_id)
        ti = day - self.day0
        ok = (vi >= 0) & (ti >= 0) & (ti < self.T)
        return vi[ok] * self.T + ti[ok], ok

    def sum(self, flat: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
        if w is not None:
            w = np.nan_to_num(np.asarray(w, dtype=float))
        return np.bincount(flat, weights=w, minlength=self.V * self.T).reshape(self.V, self.T).astype(float)

    def count(self, flat: np.ndarray, x: np.ndarray) -> np.ndarray:
        return self.sum(flat, ~np.isnan(np.asarray(x, dtype=float)))

    def reduce(self, flat: np.ndarray, x: np.ndarray, how: str) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        ok = ~np.isnan(x)
        out = np.full(self.V * self.T, np.nan)
        if ok.any():
            r = pd.Series(x[ok]).groupby(flat[ok]).agg(how)
            out[r.index.to_numpy()] = r.to_numpy()
        return out.reshape(self.V, self.T)

    def last_event(self, vehicle_id: pd.Series, day: np.ndarray) -> np.ndarray:
        """Day index of the last event on or before each day (NO before the first one).

        The vehicles must be on the grid and the days on or before its last day; an event before the
        grid counts from day 0 on and keeps its own (negative) index.
        """
        marks = np.full((self.V, self.T), NO, dtype=np.int64)
        if len(day):
            ti = np.asarray(day) - self.day0
            np.maximum.at(marks, (self.vids.get_indexer(vehicle_id), np.maximum(ti, 0)), ti)
        return ffill_index(marks)


def cum(a: np.ndarray) -> np.ndarray:
    """Cumulative sum along days with a leading zero column: c[:, t+1] = sum(a[:, :t+1])."""
    c = np.zeros((a.shape[0], a.shape[1] + 1))
    np.cumsum(a, axis=1, out=c[:, 1:])
    return c


def roll(c: np.ndarray, w: int) -> np.ndarray:
    """Sum over the w days ending at (and including) each day, from a `cum` array."""
    T = c.shape[1] - 1
    hi = np.arange(1, T + 1)
    lo = np.maximum(hi - w, 0)
    return c[:, hi] - c[:, lo]


def roll_ext(a: np.ndarray, w: int, how: str) -> np.ndarray:
    """Rolling min or max over w days ending at each day, NaN-aware (all-NaN → NaN)."""
    fill = np.inf if how == "min" else -np.inf
    pad = np.full((a.shape[0], w - 1), fill)
    x = np.concatenate([pad, np.where(np.isnan(a), fill, a)], axis=1)
    view = np.lib.stride_tricks.sliding_window_view(x, w, axis=1)
    r = view.min(axis=2) if how == "min" else view.max(axis=2)
    r[np.isinf(r)] = np.nan
    return r


def div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b where b > 0, else NaN."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)


def ffill_index(marks: np.ndarray) -> np.ndarray:
    """marks[v, t] = t where something happened else NO → index of the last event <= t."""
    return np.maximum.accumulate(marks, axis=1)


def take(c: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """c is a `cum` array; value of the cumulative sum through day idx (0 where idx < 0)."""
    safe = np.clip(idx + 1, 0, c.shape[1] - 1)
    out = np.take_along_axis(c, safe, axis=1)
    return np.where(idx >= 0, out, 0.0)


def since(c: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Sum of a `cum` array's quantity after day idx, through each day."""
    return c[:, 1:] - take(c, idx)


def slope(y_sum: np.ndarray, n: np.ndarray, w: int) -> np.ndarray:
    """Least-squares slope per day of the daily means y over the w days ending at each day.

    y_sum/n are the daily sums and counts of a measurement; each day with data is one point.
    """
    T = y_sum.shape[1]
    has = n > 0
    y = np.where(has, div(y_sum, n), 0.0)
    t = np.broadcast_to(np.arange(T, dtype=float), y.shape)
    k = roll(cum(has.astype(float)), w)
    st = roll(cum(np.where(has, t, 0.0)), w)
    stt = roll(cum(np.where(has, t * t, 0.0)), w)
    sy = roll(cum(y), w)
    sty = roll(cum(t * y), w)
    den = k * stt - st * st
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where((k >= 3) & (den > 0), (k * sty - st * sy) / np.where(den > 0, den, 1.0), np.nan)
    return s
