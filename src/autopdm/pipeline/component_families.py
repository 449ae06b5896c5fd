"""Feature families per component, driven by the component registry (`autopdm.components`).

For every registered component c:

- since its last service (`since_service`): days and km since the last event that resolved it
  (`Component.resolving_actions`), and its wear proxies (`Component.wear`). A 7–15-day-ahead
  prediction needs the state of the part, which no sensor reports; it is the integral of use since
  the part was fitted. A part fitted before telemetry began (or never replaced: the original,
  fitted at first registration) has an unobserved stretch; it is extrapolated from the odometer
  (or, without one, from days × km/day) at the vehicle's own usage rate *to date*.
- its inspections (`inspections`): an inspection on a day without a routine service is a workshop
  look outside the schedule (a complaint, a quote, parts ordered), "open" until the part is next
  resolved; the use since the last inspection that passed (inspected, not replaced:
  `Component.wear_since_pass`) bounds how far a part can be from its limit even when it was
  fitted before the records began.
- the extra families it names (`Component.families`), looked up in `COMPONENT_FAMILIES`. Each
  says after which of the two blocks above its columns go.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from autopdm import components
from autopdm.components import Component
from autopdm.pipeline import part_state
from autopdm.pipeline.daily import COMBINED_USE, USE_QUANTITIES, Context
from autopdm.pipeline.families import Features
from autopdm.pipeline.grid import NO, div, ffill_index, since, slope, take


@dataclass(frozen=True)
class ComponentFamily:
    build: Callable[[Context, Component, Mapping[str, np.ndarray]], Features]
    after: Literal["service", "inspection"]   # the block of the component's columns this family's columns follow
    needs_wear: tuple[tuple[str, str], ...] = ()  # (name, quantity) entries of `Component.wear` whose columns it reads

    def __post_init__(self):
        if self.after not in ("service", "inspection"):
            raise ValueError(f"ComponentFamily.after must be 'service' or 'inspection', not {self.after!r}")


# ------------------------------------------------------------------------------------ since the last service


def _last_service(ctx: Context, comp: Component) -> tuple[np.ndarray, np.ndarray]:
    """Per cell: day index of the last resolving event (NO: none on record) and its odometer (NaN: none read)."""
    V, T = ctx.V, ctx.T
    ev = ctx.resolved(comp).sort_values(["vehicle_id", "day"], kind="stable").reset_index(drop=True)
    vi, ti = ctx.grid.vids.get_indexer(ev["vehicle_id"]), ev["day"].to_numpy() - ctx.day0
    marks = np.full((V, T), NO, dtype=np.int64)
    order = np.full((V, T), -1, dtype=np.int64)
    tclip = np.maximum(ti, 0)  # events before the grid collapse onto day 0 (their own day is kept)
    # later events overwrite earlier ones on the same cell because ev is sorted by day
    marks[vi, tclip] = ti
    order[vi, tclip] = np.arange(len(ev))
    last = ffill_index(marks)
    last_order = np.maximum.accumulate(order, axis=1)
    serviced = last > NO
    ev_odo = (pd.to_numeric(ev["odometer_km"], errors="coerce").to_numpy(dtype=float) if "odometer_km" in ev
              else np.full(len(ev), np.nan))
    odo = np.where(serviced, ev_odo[np.clip(last_order, 0, max(len(ev) - 1, 0))] if len(ev) else np.nan, 0.0)
    # a service inside the grid without an odometer reading: the odometer estimate of that day
    in_grid = serviced & (last >= 0)
    dist = ctx.cums["distance_km"]
    estimate = (ctx.odometer - dist[:, 1:]) + take(dist, np.where(in_grid, last, -1))
    return last, np.where(np.isnan(odo) & in_grid, estimate, odo)


def _since_service(ctx: Context, comp: Component) -> Features:
    """Days, km and wear since the part was fitted: observed since the last resolving event, plus the
    unobserved stretch before the first trip (from the odometer, else days × km/day) at today's rates."""
    c = comp.name
    last, svc_odo = _last_service(ctx, comp)
    serviced = last > NO
    # no resolving event on record: the original part, fitted at first registration
    s_idx = np.where(serviced, last, np.broadcast_to(ctx.registration_idx[:, None], (ctx.V, ctx.T)))
    known = s_idx > NO
    obs_from = np.where(serviced, last, -1)
    obs_km = since(ctx.cums["distance_km"], obs_from)
    km_odo = ctx.odometer - svc_odo
    # the unobserved stretch between fitting and the first telemetry
    first_tel = ctx.first_tel[:, None]
    gap_days = np.where(known, np.maximum(first_tel - np.maximum(s_idx, -10**6), 0), np.nan)
    unobs = np.where(~np.isnan(km_odo), np.maximum(km_odo - obs_km, 0.0), gap_days * ctx.km_per_day)
    unobs = np.where(s_idx >= first_tel, 0.0, unobs)
    out: Features = {f"days_since_{c}_service": np.where(known, ctx.tidx - s_idx, np.nan).astype(float),
                     f"{c}_serviced_on_record": serviced.astype(float),
                     f"km_since_{c}_service": obs_km + unobs,
                     f"km_observed_since_{c}_service": obs_km}
    for name, key in comp.wear.items():
        if name == "km" and key == "distance_km":  # the km since the service, which every component has
            continue
        cq = ctx.use[key]
        obs_q = since(cq, obs_from)
        rate = div(cq[:, 1:], ctx.cums["distance_km"][:, 1:])  # use per km to date, for the unobserved km
        # a combined quantity has no observed-only column (the table never had one; models expect it so)
        cols = [] if key in COMBINED_USE else [(f"{name}_observed_since_{c}_service", obs_q)]
        cols.append((f"{name}_since_{c}_service", obs_q + np.where(unobs > 0, unobs * rate, 0.0)))
        for col, values in cols:
            if col in out:
                raise ValueError(f"component {c!r}: wear {name!r} makes column {col!r}, which it already has")
            out[col] = values
    return out


def since_service(ctx: Context, F: Mapping[str, np.ndarray]) -> Features:
    """Since the last service of each component, with its wear proxies and its `after="service"` extras."""
    return _per_component(ctx, F, _since_service, "service")


# ------------------------------------------------------------------------------------------- inspections


def _inspections(ctx: Context, comp: Component) -> Features:
    c, v, grid = comp.name, ctx.visits, ctx.grid
    inspect = ((v["component"] == c) & (v["action"] == "inspect")).to_numpy()

    def last(ev):
        return grid.last_event(ev["vehicle_id"], ev["day"].to_numpy())

    last_fix, last_off, last_insp = last(ctx.resolved(comp)), last(v[inspect & ~ctx.on_routine_day]), last(v[inspect])
    open_off = (last_off > NO) & (last_off > last_fix)
    passed = (last_insp > NO) & (last_insp > last_fix)
    key, name = comp.wear_since_pass
    return {f"days_since_open_{c}_inspect": np.where(open_off, ctx.tidx - last_off, np.nan).astype(float),
            f"{name}_since_{c}_inspect_pass": np.where(passed, since(ctx.use[key], last_insp), np.nan)}


def inspections(ctx: Context, F: Mapping[str, np.ndarray]) -> Features:
    """Open off-schedule inspections and use since the last passed one, per component, with `after="inspection"` extras."""
    return _per_component(ctx, F, _inspections, "inspection")


def _per_component(ctx: Context, F: Mapping[str, np.ndarray], block: Callable[[Context, Component], Features],
                   after: str) -> Features:
    """`block` of every registered component in turn, each followed by its extra families placed `after` it."""
    out: Features = {}
    for comp in components.all_components():
        out.update(block(ctx, comp))
        for name in comp.families:
            family = COMPONENT_FAMILIES[name]
            if family.after == after:
                out.update(family.build(ctx, comp, ChainMap(out, F)))
    return out


# ------------------------------------------------------------------------------------------ extra families


def tire_heat(ctx: Context, comp: Component, F: Mapping[str, np.ndarray]) -> Features:
    """The share of the km since the service driven in the heat (hot dry weather can double tread wear)."""
    c = comp.name
    return {f"hot_share_since_{c}_service": div(F[f"hot_km_since_{c}_service"], F[f"km_since_{c}_service"])}


def battery_health(ctx: Context, comp: Component, F: Mapping[str, np.ndarray]) -> Features:
    """Degradation of the 12 V battery: drops from its own best level, 60-day trends, days to its crank limit."""
    V, T = ctx.V, ctx.T
    # relative to the battery's own best: the drop of the 30-day cold-crank margin and overnight rest
    # voltage from their best level since this battery was fitted (a new battery starts a new
    # reference; levels differ between vehicles and loggers, drops less so)
    fix = ctx.resolved(comp)
    fixes = np.zeros((V, T))
    if len(fix):
        np.add.at(fixes, (ctx.grid.vids.get_indexer(fix["vehicle_id"]), np.clip(fix["day"].to_numpy() - ctx.day0, 0, T - 1)), 1.0)
    seg_n = np.cumsum(fixes, axis=1) * 1000.0
    out: Features = {}
    for name in ("crank_margin_cold_v", "rest_voltage_overnight_v"):
        lvl = F[f"{name}_30d"]
        best = np.fmax.accumulate(lvl + seg_n, axis=1) - seg_n
        # the running best of an older battery must not leak into a new one's first (NaN) days
        best = np.where(best < -500, np.nan, best)
        out[f"{name}_drop_from_best"] = best - lvl
    for name, reading in (("crank_margin_cold_v", "crank_margin_cold"), ("rest_voltage_overnight_v", "rest_v_overnight")):
        out[f"{name}_slope_60d"] = slope(ctx.sums[reading], ctx.sums["n_" + reading], 60)
    m7, s60 = F["crank_margin_cold_v_7d"], out["crank_margin_cold_v_slope_60d"]
    with np.errstate(divide="ignore", invalid="ignore"):
        out["crank_margin_days_to_zero_60d"] = np.where(s60 < 0, np.clip(m7 / -s60, -365, 3650), np.nan)
    return out


# the names `Component.families` may use
COMPONENT_FAMILIES: dict[str, ComponentFamily] = {
    "tire_heat": ComponentFamily(tire_heat, after="service", needs_wear=(("hot_km", "hot_km"),)),
    "battery_health": ComponentFamily(battery_health, after="inspection"),
    part_state.FAMILY: ComponentFamily(part_state.part_state, after="inspection"),
}


def check_registry() -> None:
    """Fail early, naming the component, when it names an unknown family or use quantity."""
    for comp in components.all_components():
        for name in comp.families:
            if name not in COMPONENT_FAMILIES:
                raise ValueError(f"component {comp.name!r}: unknown feature family {name!r}; "
                                 f"known: {', '.join(COMPONENT_FAMILIES)}")
            for wname, key in COMPONENT_FAMILIES[name].needs_wear:
                if comp.wear.get(wname) != key:
                    raise ValueError(f"component {comp.name!r}: feature family {name!r} needs wear {{{wname!r}: {key!r}}}")
        if comp.need_when not in ("any", "all"):
            raise ValueError(f"component {comp.name!r}: need_when must be 'any' or 'all', not {comp.need_when!r}")
        uses = [*((f"wear {n!r}", k) for n, k in comp.wear.items()), ("wear_since_pass", comp.wear_since_pass[0])]
        if comp.rate_use != part_state.DAYS:
            uses.append(("rate_use", comp.rate_use))
        for where, key in uses:
            if key not in USE_QUANTITIES:
                raise ValueError(f"component {comp.name!r}: {where} names unknown use quantity {key!r}; "
                                 f"known: {', '.join(USE_QUANTITIES)}")
