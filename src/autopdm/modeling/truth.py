"""A simulated fleet's hidden part states, for evaluation only: the physical ceiling and the advise-line yield.

The simulator writes `true_state` beside its `true_needs` (one row per vehicle × component × position
× day: the true reading in the measurement's unit and the fitted part's true wear rate). No feature,
label or model reads it; two figures of `evaluation` do, so that a model can be read against what
the measurements allow:

* **the physical ceiling** (`ceiling_score`): an estimator that knows each part's true wear rate
  (per km; per day for a part that ages with time) but sees the part only as the workshop does —
  its last reading, with the reading's error, or a new part at its fitting — projects the reading
  forward by the true rate × the use since and ranks rows by the probability that the part
  reaches its limit within the 15-day horizon at the car's recent use (above it today, at or
  below it in 15 days: a part already past its limit had its need before). The only uncertainty left
  is the reading's (`Limit.reading_sd`; `Limit.new_sd` for an unread new part) and the car's use.
* **the advise-line yield** (`advise_yield`): of the work orders a set of alerts makes, the share
  whose part, inspected in the recommended window (7–15 days after the work order), is at or
  below the line where a workshop advises replacement (`Limit.advise`: pads 4 mm, tread 3.5 mm,
  state of health 70 %) — what the workshop finds when the customer comes in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from autopdm import components, store
from autopdm.config import Paths
from autopdm.modeling.baselines import km_per_day, last_readings, part_level, use_since_fitting
from autopdm.pipeline.features import EARLY_WARNING, HORIZON_DAYS
from autopdm.pipeline.part_state import phi   # the normal distribution function, defined once

TABLE = "true_state"


@dataclass
class TrueState:
    """One component's true state as arrays over vehicles × days, per position."""
    component: str
    vids: pd.Index                      # vehicle ids (row order of the arrays)
    day0: np.datetime64                 # the first day (column 0)
    value: dict[str, np.ndarray]        # position → true reading, vehicles × days
    rate_km: dict[str, np.ndarray]      # position → true wear per km
    rate_day: dict[str, np.ndarray]     # position → true wear per unit of the component's rate use (per day for "days")

    @classmethod
    def from_table(cls, table: pd.DataFrame, component: str) -> "TrueState | None":
        t = table[table["component"].astype(str) == component]
        if t.empty:
            return None
        vids = pd.Index(pd.unique(t["vehicle_id"].astype(str)))
        day = pd.to_datetime(t["date"]).to_numpy("datetime64[D]")
        day0 = day.min()
        ti = (day - day0).astype(np.int64)
        vi = vids.get_indexer(t["vehicle_id"].astype(str))
        shape = (len(vids), int(ti.max()) + 1)
        pos = t["position"].astype(str).to_numpy()
        out = {k: {} for k in ("value", "rate_km", "rate_day")}
        cols = {"value": "value", "rate_km": "wear_per_1000km", "rate_day": "wear_per_use"}
        for p in components.get(component).positions:
            m = pos == p
            for k, col in cols.items():
                a = np.full(shape, np.nan, dtype=np.float32)
                a[vi[m], ti[m]] = t[col].to_numpy(dtype=np.float32)[m] / (1000.0 if k == "rate_km" else 1.0)
                out[k][p] = a
        return cls(component, vids, day0, out["value"], out["rate_km"], out["rate_day"])

    def cells(self, rows: pd.DataFrame, offset: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(vehicle index, day index, known?) of each row's date + `offset` days."""
        vi = self.vids.get_indexer(rows["vehicle_id"].astype(str))
        ti = (pd.to_datetime(rows["date"]).to_numpy("datetime64[D]") - self.day0).astype(np.int64) + offset
        ok = (vi >= 0) & (ti >= 0) & (ti < next(iter(self.value.values())).shape[1])
        return np.where(ok, vi, 0), np.where(ok, ti, 0), ok

    def at(self, arrays: dict[str, np.ndarray], rows: pd.DataFrame, offset: int = 0) -> dict[str, np.ndarray]:
        vi, ti, ok = self.cells(rows, offset)
        return {p: np.where(ok, a[vi, ti], np.nan) for p, a in arrays.items()}


def read_true_state(paths: Paths, component: str) -> TrueState | None:
    """The simulator's true state of one component in this home, or None (not a simulated fleet)."""
    if not paths.table(TABLE).exists():
        return None
    t = store.read_table(TABLE, paths, columns=["vehicle_id", "component", "position", "date", "value",
                                                "wear_per_1000km", "wear_per_use"],
                         filters=[("component", "==", component)])
    return TrueState.from_table(t, component)


def ceiling_score(rows: pd.DataFrame, component: str, truth: TrueState, horizon: int = HORIZON_DAYS) -> np.ndarray:
    """The physical ceiling's probability of reaching the limit within `horizon` days (see the module docstring)."""
    comp = components.get(component)
    lim = comp.limit
    sign = 1.0 if lim.lower_is_worse else -1.0
    days_based = comp.rate_use == "days"
    rates = truth.at(truth.rate_day if days_based else truth.rate_km, rows)
    vals, since = last_readings(rows, comp)
    fitted = use_since_fitting(rows, comp)
    future = np.full(len(rows), float(horizon)) if days_based else km_per_day(rows) * horizon
    new = lim.new if lim.new is not None else np.nan
    now, later = [], []         # per position: P(still above the limit) today and at the horizon's end
    with np.errstate(invalid="ignore"):
        for p in comp.positions:
            read = np.isfinite(vals[p])
            level = np.where(read, vals[p], new)
            use = np.where(read, since[p], fitted)
            sd = np.where(read, lim.reading_sd, lim.new_sd)
            rate = np.nan_to_num(rates[p], nan=0.0)
            left = sign * (level - lim.need) - rate * np.nan_to_num(use, nan=0.0)     # wear left before the limit
            known = np.isfinite(level)
            now.append(np.where(known, phi(left / sd), 1.0))
            later.append(np.where(known, phi((left - rate * future) / sd), 1.0))
    now, later = np.vstack(now), np.vstack(later)
    # the need is the day the part reaches its limit: it falls in the horizon when the part is above the
    # limit today and not at its end (a part already past it had its need before today)
    if comp.need_when == "any":
        out = np.prod(now, axis=0) - np.prod(later, axis=0)
    else:
        out = np.prod(1.0 - later, axis=0) - np.prod(1.0 - now, axis=0)
    return out


def advise_yield(rows: pd.DataFrame, starts: np.ndarray, component: str, truth: TrueState,
                 window: tuple[int, int] = EARLY_WARNING) -> dict:
    """Share of the work orders (rows where `starts`) whose part is at or below the advise line on some day of
    the recommended window (`window` days after the work order), in its true state."""
    comp = components.get(component)
    lim = comp.limit
    sign = 1.0 if lim.lower_is_worse else -1.0
    wo = rows.loc[np.asarray(starts, dtype=bool)]
    if wo.empty:
        return {"advise_yield": float("nan"), "n_work_orders_known": 0}
    lo, hi = window
    days = []
    for off in range(lo, hi + 1):
        v = truth.at(truth.value, wo, off)
        days.append(part_level(comp, [sign * v[p] for p in comp.positions]))
    w = np.vstack(days)
    known = np.isfinite(w).any(axis=0)
    hit = np.where(np.isfinite(w), w, np.inf).min(axis=0) <= sign * lim.advise   # worst day of the window
    return {"advise_yield": float(hit[known].mean()) if known.any() else float("nan"),
            "n_work_orders_known": int(known.sum())}
