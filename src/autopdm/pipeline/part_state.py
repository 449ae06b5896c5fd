"""The part's state as features: its last readings, the use since, and a learned estimate of its state now.

A component that names the `part_state` family (`Component.families`) gets, from its workshop readings
(`inspections`) and the telemetry between them:

- per measurement and position, the last reading of the part fitted now (`<m>_<pos>_last`) and its
  age in days (`<m>_<pos>_age_days`); a replacement clears them (the removed part's reading on its
  replacement day belongs to the old part);
- the use since the part's last reading: km and the wear quantities of `Component.wear`
  (`km_since_<c>_reading`, `<wear>_since_<c>_reading`: braking energy, hot km, starts, cold starts);
- an estimate of its state now, per position, combined over positions as the need is
  (`Component.need_when`): `<c>_state_est` and `<c>_state_sd` (the worst position, in the
  measurement's unit), `<c>_wear_rate` (per unit of `Component.rate_use`), `<c>_days_to_limit` and a
  pessimistic `<c>_days_to_limit_p10`, and `<c>_p_limit_15d`, the probability that the limit is
  reached within the label horizon.

How the estimate is learned. Two readings of the same part and position at least `MIN_PAIR_DAYS`
apart (or the part's fitting on record, at the registry's new value, and its first reading) make a
*pair*; its wear per unit of use is the readings' difference over the use the telemetry saw between
them. The fleet's rate per component and position is the use-weighted mean of all pairs completed on
or before the row's day (`fleet_wear_rates`: so it is refitted every day, point in time), with the
spread of the vehicles' true rates (the pairs' scatter less what the reading error explains); each
vehicle's rate is its own pairs' rate shrunk toward the fleet's by their precisions (empirical Bayes).
The part's readings are filtered in order (a one-dimensional Kalman filter: the previous state worn
down by rate × use, then the new reading weighed against it by their variances), and the state on a
day is the last filtered reading worn down by the vehicle's rate × the use since; its variance adds
the rate's uncertainty × use². A part fitted on record and not read since starts at `Limit.new`
(± `Limit.new_sd`). Use before a vehicle's first telemetry is extrapolated at its mean daily use to
date. Everything for day d comes from records dated on or before d and trips ended by then.

The fleet's rates depend on every vehicle: the Dask engine computes them once
(`pair_use`, summed over trip partitions, then `fleet_wear_rates`) and hands them to every block of
vehicles, as it does the calendar; the pandas engine computes them from the fleet it is given.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from autopdm import components
from autopdm.components import Component
from autopdm.pipeline.daily import COMBINED_USE, INSPECTION_COLUMNS, SERVICE_COLUMNS, Context, dated, prepare_trips
from autopdm.pipeline.families import Features
from autopdm.pipeline.grid import NO, cum, div, roll, since
from autopdm.pipeline.labels import HORIZON_DAYS
from autopdm.pipeline.needs import lives_before, readings_of, renewals

FAMILY = "part_state"
DAYS = "days"                # a rate per calendar day (the battery)
MIN_PAIR_DAYS = 30           # closer readings differ by less than their error
MIN_PAIRS = 10               # before that many pairs the fleet has no rate
RATE_SD_FLOOR = 0.05         # the vehicles' rates spread by at least 5 % of the fleet rate
MAX_DAYS = 3650.0
Z10 = 1.2815515655446004     # the 90th percentile of the standard normal
RATE_COLUMNS = ["component", "position", "day", "rate", "rate_var", "n_pairs"]
_SHIFT = 1 << 31


def components_with_state() -> tuple[Component, ...]:
    return tuple(c for c in components.all_components() if FAMILY in c.families)


def _suffix(position: str) -> str:
    return "" if position == "-" else f"_{position}"


def column_names(comp: Component) -> list[str]:
    """The columns the family gives a component, in table order (none when it does not name the family)."""
    if FAMILY not in comp.families:
        return []
    c = comp.name
    out = [f"{m}{_suffix(p)}_{k}" for m in comp.measurements for p in comp.positions for k in ("last", "age_days")]
    out += [f"km_since_{c}_reading", *(f"{name}_since_{c}_reading" for name in comp.wear)]
    return out + [f"{c}_{k}" for k in ("state_est", "state_sd", "wear_rate", "days_to_limit", "days_to_limit_p10", "p_limit_15d")]


# ---------------------------------------------------------------------------------------------- pairs


def reading_pairs(service_events: pd.DataFrame | None, inspections: pd.DataFrame | None,
                  comps: tuple[Component, ...] | None = None) -> pd.DataFrame:
    """Consecutive readings of the same part and position at least MIN_PAIR_DAYS apart (and a fitting
    on record with the part's first reading), from the records: one row per pair with `noise_var`
    (the two readings' error variances) and the `quantity` its wear is measured per. `comps`: these
    components (default: every one with the part_state family)."""
    se = service_events if service_events is not None and "day" in service_events else dated(service_events, SERVICE_COLUMNS)
    insp = inspections if inspections is not None and "day" in inspections else dated(inspections, INSPECTION_COLUMNS)
    out = []
    for comp in comps if comps is not None else components_with_state():
        lim = comp.limit
        ren = renewals(se, comp)
        r = readings_of(insp[insp["component"] == comp.name] if len(insp) else None, lim.measurement)
        r = r.assign(life=lives_before(ren, r["vehicle_id"].to_numpy(), r["day"].to_numpy()))
        grp = r[["vehicle_id", "position", "life"]]
        first = (grp != grp.shift()).any(axis=1).to_numpy()
        prev = r.shift()
        a_day = np.where(first, NO, prev["day"].to_numpy(dtype=float))
        a_val = np.where(first, np.nan, prev["value"].to_numpy(dtype=float))
        a_var = np.full(len(r), lim.reading_sd ** 2)
        if lim.new is not None and len(ren):  # the fitting on record: a pair with the first reading
            inst = _install_day(ren, r["vehicle_id"].to_numpy(), r["life"].to_numpy())
            fit = first & (inst > NO)
            a_day, a_val = np.where(fit, inst, a_day), np.where(fit, lim.new, a_val)
            a_var = np.where(fit, lim.new_sd ** 2, a_var)
        ok = (a_day > NO) & (r["day"].to_numpy() - a_day >= MIN_PAIR_DAYS)
        out.append(pd.DataFrame({
            "vehicle_id": r["vehicle_id"].to_numpy()[ok], "component": comp.name, "position": r["position"].to_numpy()[ok],
            "quantity": comp.rate_use, "day_a": a_day[ok].astype(np.int64), "day_b": r["day"].to_numpy()[ok],
            "loss": lim.loss(a_val[ok], r["value"].to_numpy()[ok]), "noise_var": a_var[ok] + lim.reading_sd ** 2}))
    if not out:
        return pd.DataFrame(columns=["vehicle_id", "component", "position", "quantity", "day_a", "day_b", "loss", "noise_var"])
    pairs = pd.concat(out, ignore_index=True)
    return pairs.sort_values(["component", "position", "day_b", "vehicle_id"], kind="stable").reset_index(drop=True)


def _install_day(ren: pd.DataFrame, vids: np.ndarray, life: np.ndarray) -> np.ndarray:
    """Day of the renewal that fitted the part of each (vehicle, life), NO when it is not on record."""
    by = {(v, i): d for v, i, d in zip(ren["vehicle_id"], ren["life_no"], ren["day"])}
    return np.array([by.get((v, int(lf) - 1), NO) for v, lf in zip(vids, life)], dtype=np.int64)


def pair_use(pairs: pd.DataFrame, trips: pd.DataFrame) -> pd.DataFrame:
    """Per pair: the use between its readings (trips of its vehicle ending in (day_a, day_b]) and how many
    trips ended by day_a (0: the use before its first reading was not seen). `trips`: prepared trips
    (`daily.prepare_trips`) — any subset: the results of disjoint subsets add up."""
    out = pd.DataFrame({"use": np.zeros(len(pairs)), "n_before": np.zeros(len(pairs))}, index=pairs.index)
    if not len(pairs) or not len(trips):
        return out
    vids = pd.Index(pd.unique(np.r_[trips["vehicle_id"].to_numpy(dtype=object), pairs["vehicle_id"].to_numpy(dtype=object)]))
    tkey = vids.get_indexer(trips["vehicle_id"]).astype(np.int64) * (1 << 32) + (trips["day"].to_numpy().astype(np.int64) + _SHIFT)
    order = np.argsort(tkey, kind="stable")
    tkey = tkey[order]
    pcode = vids.get_indexer(pairs["vehicle_id"]).astype(np.int64) * (1 << 32)
    at_a = np.searchsorted(tkey, pcode + pairs["day_a"].to_numpy().astype(np.int64) + _SHIFT, "right")
    at_b = np.searchsorted(tkey, pcode + pairs["day_b"].to_numpy().astype(np.int64) + _SHIFT, "right")
    out["n_before"] = (at_a - np.searchsorted(tkey, pcode, "left")).astype(float)
    for q in pd.unique(pairs["quantity"]):
        mine = (pairs["quantity"] == q).to_numpy()
        if q == DAYS:
            out.loc[mine, "use"] = (pairs["day_b"] - pairs["day_a"]).to_numpy(dtype=float)[mine]
            continue
        g = np.r_[0.0, np.cumsum(_trip_use(trips, q)[order])]
        out.loc[mine, "use"] = (g[at_b] - g[at_a])[mine]
    return out


def _trip_use(trips: pd.DataFrame, quantity: str) -> np.ndarray:
    parts = COMBINED_USE.get(quantity, (quantity,))
    return np.nan_to_num(sum(trips[p].to_numpy(dtype=float) for p in parts))


def fleet_wear_rates(pairs: pd.DataFrame) -> pd.DataFrame:
    """The fleet's wear rate per component and position as of each day a pair completes (`RATE_COLUMNS`):
    the use-weighted mean of the pairs completed by then, and the variance of the vehicles' true rates
    around it (method of moments: the pairs' weighted scatter less their reading noise)."""
    p = pairs[(pairs["n_before"] > 0) & (pairs["use"] > 0)] if len(pairs) else pairs
    if not len(p):
        return pd.DataFrame(columns=RATE_COLUMNS)
    out = []
    for (comp, pos), g in p.sort_values("day_b", kind="stable").groupby(["component", "position"], sort=True):
        u, d = g["use"].to_numpy(dtype=float), g["loss"].to_numpy(dtype=float)
        su, sd, sd2u, snu = np.cumsum(u), np.cumsum(d), np.cumsum(d * d / u), np.cumsum(g["noise_var"].to_numpy() / u)
        n = np.arange(1, len(g) + 1)
        rate = sd / su
        var = np.maximum((sd2u - 2 * rate * sd + rate * rate * su - snu) / su, (RATE_SD_FLOOR * rate) ** 2)
        last = np.r_[g["day_b"].to_numpy()[1:] != g["day_b"].to_numpy()[:-1], True]  # one row per day: its last
        ok = last & (n >= MIN_PAIRS)
        out.append(pd.DataFrame({"component": comp, "position": pos, "day": g["day_b"].to_numpy()[ok],
                                 "rate": rate[ok], "rate_var": var[ok], "n_pairs": n[ok]}))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=RATE_COLUMNS)


def with_use(pairs: pd.DataFrame, trips: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([pairs, pair_use(pairs, trips)], axis=1)


def trips_on_days(trips: pd.DataFrame, vehicles: pd.DataFrame, day_end: int | None = None) -> pd.DataFrame:
    """Prepared trips (`daily.prepare_trips`) with a day, up to `day_end`: what `pair_use` sums."""
    tr = prepare_trips(trips, vehicles)
    return tr[(tr["day"] > NO) & (tr["day"] <= (day_end if day_end is not None else np.iinfo(np.int64).max))]


def fleet_rates_from(trips: pd.DataFrame, vehicles: pd.DataFrame, service_events: pd.DataFrame | None,
                     inspections: pd.DataFrame | None, day_end: int | None = None) -> pd.DataFrame:
    """The fleet's wear rates from whole tables in memory (what `context_wear_rates` gives on the same fleet)."""
    pairs = reading_pairs(service_events, inspections)
    return fleet_wear_rates(with_use(pairs, trips_on_days(trips, vehicles, day_end)))


def context_wear_rates(ctx: Context) -> pd.DataFrame:
    """The fleet's wear rates from the vehicles of this context (the whole fleet in the pandas engine)."""
    return fleet_wear_rates(with_use(reading_pairs(ctx.visits, ctx.readings), ctx.trips))


# ----------------------------------------------------------------------------------------- per position


def _on_days(ctx: Context, day: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(T,) the last value given on or before each grid day (NaN before the first)."""
    T = ctx.T
    if not len(day):
        return np.full(T, np.nan)
    idx = np.full(T, -1, dtype=np.int64)
    t = np.clip(day - ctx.day0, 0, None)
    keep = t < T
    idx[t[keep]] = np.arange(len(day))[keep]  # rows sorted by day: the last of a day wins
    idx = np.maximum.accumulate(idx)
    return np.where(idx >= 0, np.asarray(values, dtype=float)[np.maximum(idx, 0)], np.nan)


def _vehicle_rates(ctx: Context, comp: Component, pos: str, pairs: pd.DataFrame, rates: pd.DataFrame):
    """(rate, variance) per cell: the vehicle's own completed pairs shrunk toward the fleet's rate."""
    fr = rates[(rates["component"] == comp.name) & (rates["position"] == pos)].sort_values("day", kind="stable")
    R = _on_days(ctx, fr["day"].to_numpy(dtype=np.int64), fr["rate"].to_numpy())[None, :]
    tau2 = _on_days(ctx, fr["day"].to_numpy(dtype=np.int64), fr["rate_var"].to_numpy())[None, :]
    own = pairs[(pairs["component"] == comp.name) & (pairs["position"] == pos) & (pairs["n_before"] > 0) & (pairs["use"] > 0)]
    vi = ctx.grid.vids.get_indexer(own["vehicle_id"])
    ti = np.clip(own["day_b"].to_numpy() - ctx.day0, 0, None)
    on = (vi >= 0) & (ti < ctx.T)
    flat = vi[on] * ctx.T + ti[on]
    su, sd, sn = (cum(ctx.grid.sum(flat, own[c].to_numpy(dtype=float)[on]))[:, 1:] for c in ("use", "loss", "noise_var"))
    prec_v = div(su * su, sn)                       # precision of the vehicle's own rate
    prec_f = div(np.ones_like(tau2), tau2)
    own_rate = div(sd, su)
    with np.errstate(invalid="ignore"):
        rate = np.where(prec_v > 0, (prec_v * own_rate + prec_f * R) / (prec_v + prec_f), np.broadcast_to(R, su.shape))
        var = np.where(prec_v > 0, 1.0 / (prec_v + prec_f), np.broadcast_to(tau2, su.shape))
    return rate, var


def _use_cum(ctx: Context, quantity: str) -> np.ndarray:
    return cum(np.ones((ctx.V, ctx.T))) if quantity == DAYS else ctx.use[quantity]


def _use_since(ctx: Context, quantity: str, c: np.ndarray, t0: np.ndarray) -> np.ndarray:
    """Use after day index t0 through each day: observed, plus days before the first telemetry at the
    vehicle's mean daily use to date."""
    if quantity == DAYS:
        return (ctx.tidx - t0).astype(float)
    first = ctx.first_tel[:, None]
    per_day = div(c[:, 1:], (ctx.tidx - first + 1).astype(float))
    unseen = np.clip(first - 1 - t0, 0, None).astype(float)
    return since(c, t0) + np.where(unseen > 0, unseen * per_day, 0.0)


def _filter(comp: Component, r: pd.DataFrame, ctx: Context, rate: np.ndarray, var: np.ndarray, c: np.ndarray,
            install_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each reading's filtered state and variance: the previous one (or the fitting on record) worn down by
    the vehicle's rate as of the day before × the use between, weighed against the reading."""
    lim = comp.limit
    sign = 1.0 if lim.lower_is_worse else -1.0
    n = len(r)
    vi = ctx.grid.vids.get_indexer(r["vehicle_id"])
    t = r["day"].to_numpy() - ctx.day0
    tp = np.clip(t - 1, 0, ctx.T - 1)
    has_rate = (t - 1 >= 0) & (t - 1 < ctx.T)
    rt = np.where(has_rate, rate[vi, tp], np.nan)
    vt = np.where(has_rate, var[vi, tp], np.nan)
    cq = _take_cells(c, vi, t, ctx)
    c_inst = _take_cells(c, vi, install_t, ctx)
    first_tel = ctx.first_tel[vi]
    grp = r[["vehicle_id", "position", "life"]]
    same = np.r_[False, (grp.iloc[1:].to_numpy() == grp.iloc[:-1].to_numpy()).all(axis=1)] if n else np.zeros(0, bool)
    value = r["value"].to_numpy(dtype=float)
    x, P = np.empty(n), np.empty(n)
    s2, new = lim.reading_sd ** 2, lim.new
    for i in range(n):
        prior = None
        if np.isfinite(rt[i]):
            if same[i]:
                if t[i - 1] >= first_tel[i]:
                    u = cq[i] - cq[i - 1]
                    prior = (x[i - 1] - sign * rt[i] * u, P[i - 1] + u * u * vt[i])
            elif new is not None and install_t[i] > NO and install_t[i] >= first_tel[i]:
                u = cq[i] - c_inst[i]
                prior = (new - sign * rt[i] * u, lim.new_sd ** 2 + u * u * vt[i])
        if prior is None:
            x[i], P[i] = value[i], s2
        else:
            k = prior[1] / (prior[1] + s2)
            x[i], P[i] = prior[0] + k * (value[i] - prior[0]), (1 - k) * prior[1]
    return x, P


def _take_cells(c: np.ndarray, vi: np.ndarray, t: np.ndarray, ctx: Context) -> np.ndarray:
    """The cumulative use through day index t of each vehicle (0 before the grid; days: t + 1)."""
    out = c[vi, np.clip(t + 1, 0, ctx.T)]
    return np.where(t >= 0, out, 0.0)


def _last_valid(ctx: Context, r: pd.DataFrame, renewed: np.ndarray) -> np.ndarray:
    """Per cell: the row of `r` (sorted by vehicle, day) of the last reading of the part fitted that day, or -1."""
    V, T = ctx.V, ctx.T
    marks = np.full((V, T), -1, dtype=np.int64)
    if len(r):
        vi = ctx.grid.vids.get_indexer(r["vehicle_id"])
        t = r["day"].to_numpy() - ctx.day0
        on = (vi >= 0) & (t < T)
        marks[vi[on], np.clip(t[on], 0, None)] = np.arange(len(r))[on]
    last = np.maximum.accumulate(marks, axis=1)
    day_idx = np.r_[r["day"].to_numpy() - ctx.day0, NO] if len(r) else np.array([NO])
    return np.where((last >= 0) & (day_idx[last] > renewed), last, -1)


def _position_state(ctx: Context, comp: Component, pos: str, r: pd.DataFrame, pairs: pd.DataFrame, rates: pd.DataFrame,
                    renewed: np.ndarray, install_t_of) -> dict[str, np.ndarray]:
    """The estimated state of one position per cell, its variance, the vehicle's rate and its use per day now."""
    lim, q = comp.limit, comp.rate_use
    sign = 1.0 if lim.lower_is_worse else -1.0
    rate, var = _vehicle_rates(ctx, comp, pos, pairs, rates)
    c = _use_cum(ctx, q)
    r = r[r["position"] == pos].reset_index(drop=True)
    xf, Pf = _filter(comp, r, ctx, rate, var, c, install_t_of(r))
    last = _last_valid(ctx, r, renewed)
    has = last >= 0
    t_read = np.r_[r["day"].to_numpy() - ctx.day0, NO][last]
    fitted = ~has & (renewed > NO) & (lim.new is not None)
    base_t = np.where(has, t_read, np.where(fitted, renewed, NO))
    base_x = np.where(has, np.r_[xf, np.nan][last], np.where(fitted, lim.new if lim.new is not None else np.nan, np.nan))
    base_P = np.where(has, np.r_[Pf, np.nan][last], np.where(fitted, lim.new_sd ** 2, np.nan))
    u = np.where(base_t > NO, _use_since(ctx, q, c, np.where(base_t > NO, base_t, 0)), np.nan)
    recent = [roll(c, 30) / 30.0, roll(c, 90) / 90.0, div(c[:, 1:], (ctx.tidx - ctx.first_tel[:, None] + 1).astype(float))]
    per_day = np.where(recent[0] > 0, recent[0], np.where(recent[1] > 0, recent[1], recent[2]))
    return {"x": base_x - sign * rate * u, "P": base_P + u * u * var, "rate": rate, "var": var, "per_day": per_day}


def phi(x: np.ndarray) -> np.ndarray:
    """The standard normal distribution function (Abramowitz & Stegun 7.1.26, error < 1.5e-7)."""
    z = np.abs(x) / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    erf = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * np.exp(-z * z)
    return 0.5 * (1.0 + np.sign(x) * erf)


def _outlook(comp: Component, s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Days to the limit (expected and pessimistic) and the chance of reaching it within the horizon."""
    lim = comp.limit
    margin = (s["x"] - lim.need) if lim.lower_is_worse else (lim.need - s["x"])
    speed = s["rate"] * s["per_day"]
    sd = np.sqrt(s["P"])
    with np.errstate(divide="ignore", invalid="ignore"):
        days = np.where(margin <= 0, 0.0, np.where(speed > 0, margin / speed, MAX_DAYS))
        p10 = np.where(margin - Z10 * sd <= 0, 0.0, np.where(speed > 0, (margin - Z10 * sd) / speed, MAX_DAYS))
        days, p10 = np.where(np.isnan(margin), np.nan, days), np.where(np.isnan(sd), np.nan, p10)
        m15 = margin - speed * HORIZON_DAYS
        sd15 = np.sqrt(s["P"] + (s["per_day"] * HORIZON_DAYS) ** 2 * s["var"])
        p = phi(-m15 / sd15)
    return {"margin": margin, "days": np.clip(days, 0, MAX_DAYS), "p10": np.clip(p10, 0, MAX_DAYS), "p": p}


# ------------------------------------------------------------------------------------------- the family


def _last_readings(ctx: Context, comp: Component, insp: pd.DataFrame, renewed: np.ndarray) -> tuple[Features, np.ndarray]:
    """`<m>_<pos>_last` and `_age_days` of every measurement and position; the day index of the part's last reading."""
    out: Features = {}
    latest = np.full((ctx.V, ctx.T), NO, dtype=np.int64)
    for m in comp.measurements:
        r = readings_of(insp, m)
        for pos in comp.positions:
            rp = r[r["position"] == pos].reset_index(drop=True)
            last = _last_valid(ctx, rp, renewed)
            t = np.r_[rp["day"].to_numpy() - ctx.day0, NO][last]
            name = f"{m}{_suffix(pos)}"
            out[f"{name}_last"] = np.r_[rp["value"].to_numpy(dtype=float), np.nan][last]
            out[f"{name}_age_days"] = np.where(last >= 0, ctx.tidx - t, np.nan).astype(float)
            latest = np.maximum(latest, np.where(last >= 0, t, NO))
    return out, latest


def part_state(ctx: Context, comp: Component, F: Mapping[str, np.ndarray]) -> Features:
    """Last readings, use since the last one, and the learned state estimate of one component (module docstring)."""
    c = comp.name
    insp = ctx.readings[ctx.readings["component"] == c] if len(ctx.readings) else None
    ren = renewals(ctx.visits, comp)
    renewed = ctx.grid.last_event(ren["vehicle_id"], ren["day"].to_numpy())  # day index of the last renewal (NO: none)
    out, latest = _last_readings(ctx, comp, insp, renewed)
    has = latest > NO
    out[f"km_since_{c}_reading"] = np.where(has, since(ctx.cums["distance_km"], latest), np.nan)
    for name, key in comp.wear.items():
        out[f"{name}_since_{c}_reading"] = np.where(has, since(ctx.use[key], latest), np.nan)
    rates = ctx.wear_rates if ctx.wear_rates is not None else context_wear_rates(ctx)
    pairs = with_use(reading_pairs(ctx.visits, ctx.readings, (comp,)), ctx.trips)
    r = readings_of(insp, comp.limit.measurement)
    r = r.assign(life=lives_before(ren, r["vehicle_id"].to_numpy(), r["day"].to_numpy()))

    def install_t_of(rows: pd.DataFrame) -> np.ndarray:
        d = _install_day(ren, rows["vehicle_id"].to_numpy(), rows["life"].to_numpy())
        return np.where(d > NO, d - ctx.day0, NO)

    states = [_position_state(ctx, comp, pos, r, pairs, rates, renewed, install_t_of) for pos in comp.positions]
    looks = [_outlook(comp, s) for s in states]
    return {**out, **_combine(comp, states, looks)}


def _combine(comp: Component, states: list[dict], looks: list[dict]) -> Features:
    """The part from its positions: the worst position's state; the first (or, for need_when "all", the
    last) position to reach the limit."""
    c = comp.name
    margin = np.stack([lk["margin"] for lk in looks])
    worst = np.argmin(np.where(np.isnan(margin), np.inf, margin), axis=0)[None]
    pick = lambda k, src: np.take_along_axis(np.stack([s[k] for s in src]), worst, axis=0)[0]  # noqa: E731
    days, p10 = np.stack([lk["days"] for lk in looks]), np.stack([lk["p10"] for lk in looks])
    p = np.stack([lk["p"] for lk in looks])
    seen = ~np.isnan(p)
    if comp.need_when == "all":
        d, d10 = np.fmax.reduce(days, axis=0), np.fmax.reduce(p10, axis=0)
        pr = np.where(seen.all(axis=0), np.prod(np.where(seen, p, 1.0), axis=0), np.nan)
    else:
        d, d10 = np.fmin.reduce(days, axis=0), np.fmin.reduce(p10, axis=0)
        pr = np.where(seen.any(axis=0), 1.0 - np.prod(np.where(seen, 1.0 - p, 1.0), axis=0), np.nan)
    return {f"{c}_state_est": pick("x", states), f"{c}_state_sd": np.sqrt(pick("P", states)),
            f"{c}_wear_rate": pick("rate", states), f"{c}_days_to_limit": d, f"{c}_days_to_limit_p10": d10,
            f"{c}_p_limit_15d": pr}
