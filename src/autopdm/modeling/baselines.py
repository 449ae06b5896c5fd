"""The rules a workshop uses today, as baselines for the models.

Each component's rule lives in the registry (`autopdm.components`) as two functions over feature
rows: `baseline_rule` (the literal rule, a boolean alert per row, at its own alert volume) and
`baseline_score` (the quantity the rule thresholds). `at_volume(score, k)` alerts on the k
highest-scoring rows, so a rule can be compared with a model *at the same alert volume*.

The second baseline is what a careful advisor does with the workshop's own inspection readings
(`advisor_score`): the part's measured wear since it was fitted, extrapolated to the limit. It is
generic over the registry (the limit, its new value, positions, what the part wears by) and reads
the part-state columns of the feature rows (last reading per position, use since it).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from autopdm import components
from autopdm.components import Component


def score(rows: pd.DataFrame, component: str) -> np.ndarray:
    return np.asarray(components.get(component).baseline_score(rows), dtype=float)


def rule(rows: pd.DataFrame, component: str) -> np.ndarray:
    return np.asarray(components.get(component).baseline_rule(rows), dtype=bool)


def description(component: str) -> str:
    return components.get(component).baseline_description


def at_volume(s: np.ndarray, k: int) -> np.ndarray:
    """Alert on the k highest scores (stable order for ties)."""
    s = np.asarray(s, dtype=float)
    out = np.zeros(len(s), dtype=bool)
    if k > 0:
        out[np.argsort(-s, kind="stable")[:k]] = True
    return out


# ------------------------------------------------------------------------------- the careful advisor

ADVISOR_DESCRIPTION = ("careful advisor: the part's own measured wear since it was fitted (new part → last reading), "
                       "extrapolated per km (per day for a battery) to the limit at the car's recent use")
MIN_USE_FOR_RATE = {"days": 60.0, "km": 2000.0}   # less use than this between fitting and reading: no rate of its own
KM_PER_DAY_FALLBACK = 30.0   # a car with no recent trips: a typical day's use (only its ranking among the idle matters)


def _col(rows: pd.DataFrame, name: str) -> np.ndarray:
    return pd.to_numeric(rows[name], errors="coerce").to_numpy(dtype=float) if name in rows else np.full(len(rows), np.nan)


def _suffix(position: str) -> str:
    return "" if position == "-" else f"_{position}"


def km_per_day(rows: pd.DataFrame) -> np.ndarray:
    """The car's recent use: km per day over 30 days, else 90, else a typical day."""
    k = _col(rows, "distance_km_30d") / 30.0
    k = np.where(np.isfinite(k) & (k > 0), k, _col(rows, "distance_km_90d") / 90.0)
    return np.where(np.isfinite(k) & (k > 0), k, KM_PER_DAY_FALLBACK)


def last_readings(rows: pd.DataFrame, comp: Component) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per position: the last reading of the part fitted now (NaN: none) and the use since it, in the unit
    the part wears by (days for a part that ages with time, else km). Positions read at an earlier visit
    than the part's latest reading add the km of the days between at the car's recent use."""
    m, c = comp.limit.measurement, comp.name
    vals = {p: _col(rows, f"{m}{_suffix(p)}_last") for p in comp.positions}
    ages = {p: _col(rows, f"{m}{_suffix(p)}_age_days") for p in comp.positions}
    if comp.rate_use == "days":
        return vals, ages
    newest = np.fmin.reduce(list(ages.values())) if ages else np.full(len(rows), np.nan)
    km = _col(rows, f"km_since_{c}_reading")
    kmd = km_per_day(rows)
    return vals, {p: km + np.maximum(a - newest, 0.0) * kmd for p, a in ages.items()}


def use_since_fitting(rows: pd.DataFrame, comp: Component) -> np.ndarray:
    """Use since the part was fitted (km, or days for a part that ages with time)."""
    c = comp.name
    return _col(rows, f"days_since_{c}_service" if comp.rate_use == "days" else f"km_since_{c}_service")




def advisor_days_to_limit(rows: pd.DataFrame, component: str) -> np.ndarray:
    """What a careful service advisor makes of the workshop's own records: per position, the wear per km (per
    day for a part that ages with time) from a new part (`Limit.new`) to the last reading over the use between
    the fitting and that reading, extrapolated to today and on to the limit at the car's recent km per day →
    days to the limit of the worst position (as the need combines positions; negative: estimated past it).
    A part never read starts from
    a new part at its fitting; a part read too soon after its fitting to show a rate of its own, and one never
    read, wear at the median rate of the rows given (the workshop's experience with its cars).
    NaN where the part's state is unknown (no reading and no fitting known)."""
    comp = components.get(component)
    lim = comp.limit
    if lim.new is None:
        return np.full(len(rows), np.nan)
    sign = 1.0 if lim.lower_is_worse else -1.0
    days_based = comp.rate_use == "days"
    vals, since = last_readings(rows, comp)
    fitted = use_since_fitting(rows, comp)
    per_day = np.ones(len(rows)) if days_based else km_per_day(rows)
    min_use = MIN_USE_FOR_RATE["days" if days_based else "km"]
    levels, uses, rates = [], [], []
    with np.errstate(invalid="ignore", divide="ignore"):
        for p in comp.positions:
            read = np.isfinite(vals[p])
            at_reading = fitted - since[p]                       # use between the fitting and the reading
            own = sign * (lim.new - vals[p]) / at_reading
            ok = read & (at_reading >= min_use) & (own > 0)
            levels.append(np.where(read, vals[p], lim.new))
            uses.append(np.where(read, since[p], fitted))
            rates.append(np.where(ok, own, np.nan))
        fleet = float(np.nanmedian(np.concatenate(rates))) if np.isfinite(np.concatenate(rates)).any() else np.nan
        days = []
        for level, use, rate in zip(levels, uses, rates):
            r = np.where(np.isfinite(rate), rate, fleet)
            now = sign * (level - lim.need) - r * np.nan_to_num(use, nan=0.0)
            days.append(np.where(np.isfinite(now) & (r > 0), now / (r * per_day), np.nan))
    return part_level(comp, days)


def part_level(comp: Component, signed: list[np.ndarray]) -> np.ndarray:
    """Signed per-position levels (lower = worse) into the part's, as its need combines positions: the
    worst position ("any"), or the best ("all")."""
    a = np.vstack(signed)
    a = np.where(np.isfinite(a), a, np.inf if comp.need_when == "any" else -np.inf)
    out = a.min(axis=0) if comp.need_when == "any" else a.max(axis=0)
    return np.where(np.isfinite(out), out, np.nan)


def advisor_score(rows: pd.DataFrame, component: str, horizon: int = 15) -> np.ndarray:
    """The careful advisor's ranking: fewer days to the limit first; a part estimated past its limit as one due
    just beyond the horizon (it was due earlier: the call was made then, or the estimate is off); parts of
    unknown state last."""
    d = advisor_days_to_limit(rows, component)
    return np.where(np.isfinite(d), np.where(d >= 0, -d, -(horizon - d)), -1e9)
