"""Service needs as the workshop's records show them: the `needs` table the labels come from.

A component's *need* is the day its condition reaches the service limit of the component registry
(`Component.limit`: a pad at 3 mm, a tread at 3 mm, a battery's state of health at 55 %; a reading
the workshop called "replace" within one reading error of the line counts as at it). The records
(service events and inspections, never telemetry and never the simulator's hidden truth) show it in
three ways, per *part life* (from one renewal of the part — `Component.renewing_actions`, a
replacement — to the next):

- `measured` / `replaced_worn`: the first reading at or below the limit (an inspection; or, for
  `replaced_worn`, the removed part's reading on its replacement day) places the need between the
  last reading above the limit at the same position and that one, interpolated along the odometer
  (the crossing's km from the two readings, its day from the vehicle's dated odometer readings in
  the records). Without an earlier reading in the part's life, a part fitted on record starts at the
  registry's new value (`Limit.new`); without either, the need sits on the reading's day and its
  bracket is unknown. Positions combine as `Component.need_when` says ("any": the first position).
- `breakdown`: a reactive repair (`Component.breakdown_actions`: a no-start, a roadside repair) is a
  need on its day (bracket 0), unless a reading at or below the limit was taken before it (then that
  reading places the need: the workshop saw it first).
- `replaced`: a part life without any reading (an older CRM, or a replacement whose removed part was
  not measured) — the replacement stands in for the need, on its day, bracket unknown. A part
  replaced while its readings on the day were all above the limit had no need: its rows end there.

At most one need per part life, except in lives without readings, where every resolving event is
one (as in a CRM that records no measurements at all). `bracket_days` is the width of the interval
the need was placed in. The worked example is in docs/labels.md.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from autopdm import components, schemas
from autopdm.components import Component
from autopdm.pipeline.grid import NO, day_number

COLUMNS = ["vehicle_id", "component", "need_day", "evidence", "bracket_days", "position"]
_SHIFT = 1 << 31


def _key(code: np.ndarray, day: np.ndarray) -> np.ndarray:
    return code.astype(np.int64) * (1 << 32) + (day.astype(np.int64) + _SHIFT)


def renewals(events: pd.DataFrame, comp: Component) -> pd.DataFrame:
    """The dated events (with `day`) that fitted a new part of `comp` (`Component.renewing_actions`), one per
    vehicle and day, sorted, with `life_no`: the index of the part life each one ends (0, 1, ...)."""
    r = events[(events["component"] == comp.name) & events["action"].isin(comp.renewing_actions)] if len(events) else events
    r = pd.DataFrame({"vehicle_id": r["vehicle_id"].astype(str).to_numpy() if len(r) else np.zeros(0, dtype=object),
                      "day": r["day"].to_numpy(dtype=np.int64) if len(r) else np.zeros(0, dtype=np.int64),
                      "odometer_km": pd.to_numeric(r["odometer_km"], errors="coerce").to_numpy(dtype=float) if len(r)
                      else np.zeros(0)})
    r = r.sort_values(["vehicle_id", "day"], kind="stable").drop_duplicates(["vehicle_id", "day"]).reset_index(drop=True)
    return r.assign(life_no=r.groupby("vehicle_id").cumcount().to_numpy(dtype=np.int64))


def lives_before(ren: pd.DataFrame, vehicle_ids: np.ndarray, days: np.ndarray) -> np.ndarray:
    """How many renewals (`renewals`) of each vehicle fall strictly before each day: the part life a record
    belongs to (a reading or repair on a replacement day belongs to the part replaced that day)."""
    vids = pd.Index(pd.unique(np.r_[ren["vehicle_id"].to_numpy(dtype=object), np.asarray(vehicle_ids, dtype=object)]))
    rkeys = _key(vids.get_indexer(ren["vehicle_id"]), ren["day"].to_numpy())  # sorted: ren is by vehicle, day
    order = np.argsort(rkeys, kind="stable")
    rkeys = rkeys[order]
    code = vids.get_indexer(np.asarray(vehicle_ids, dtype=object))
    days = np.asarray(days, dtype=np.int64)
    return (np.searchsorted(rkeys, _key(code, days), "left")
            - np.searchsorted(rkeys, _key(code, np.full(len(days), -_SHIFT)), "left")).astype(np.int64)


def readings_of(inspections: pd.DataFrame | None, measurement: str) -> pd.DataFrame:
    """One measurement's readings, one per vehicle, position and day (the last recorded: a retest
    replaces the first test), with a `day` column, sorted by vehicle, position, day."""
    cols = ["vehicle_id", "position", "day", "odometer_km", "value", "verdict"]
    if inspections is None or not len(inspections):
        return pd.DataFrame({c: pd.Series(dtype=float if c in ("odometer_km", "value") else object) for c in cols}).assign(
            day=pd.Series(dtype=np.int64))
    r = inspections[(inspections["measurement"] == measurement) & inspections["value"].notna()]
    day = r["day"].to_numpy() if "day" in r else day_number(r["date"])
    r = pd.DataFrame({"vehicle_id": r["vehicle_id"].astype(str).to_numpy(), "position": r["position"].astype(str).to_numpy(),
                      "day": day, "odometer_km": pd.to_numeric(r["odometer_km"], errors="coerce").to_numpy(dtype=float),
                      "value": r["value"].to_numpy(dtype=float),
                      "verdict": r["verdict"].astype(object).to_numpy() if "verdict" in r else np.full(len(r), None),
                      "_id": r["inspection_id"].astype(str).to_numpy() if "inspection_id" in r else np.arange(len(r)).astype(str)})
    r = r[r["day"] > NO].sort_values(["vehicle_id", "position", "day", "_id"], kind="stable")
    return r.drop_duplicates(["vehicle_id", "position", "day"], keep="last").drop(columns="_id").reset_index(drop=True)


def _odometer_points(service_events: pd.DataFrame, inspections: pd.DataFrame | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per vehicle: (days, odometer km) of every dated record with an odometer, by day."""
    parts = [df[["vehicle_id", "day", "odometer_km"]] for df in (service_events, inspections) if df is not None and len(df)]
    if not parts:
        return {}
    p = pd.concat(parts, ignore_index=True)
    p = p.assign(vehicle_id=p["vehicle_id"].astype(str), odometer_km=pd.to_numeric(p["odometer_km"], errors="coerce"))
    p = p[p["odometer_km"].notna() & (p["day"] > NO)].sort_values(["vehicle_id", "day", "odometer_km"], kind="stable")
    return {v: (g["day"].to_numpy(dtype=float), g["odometer_km"].to_numpy(dtype=float)) for v, g in p.groupby("vehicle_id", sort=False)}


def _crossing_day(lim, a: dict, b: dict, odo: tuple[np.ndarray, np.ndarray] | None) -> int:
    """The day between reading a (above the limit) and b (at or below it) where the part reached the limit."""
    drop = float(lim.loss(a["value"], b["value"]))
    f = min(float(lim.loss(a["value"], lim.need)) / drop, 1.0) if drop > 0 else 1.0  # b at the line by verdict
    day = a["day"] + f * (b["day"] - a["day"])
    if odo is not None and np.isfinite(a["odo"]) and np.isfinite(b["odo"]) and b["odo"] > a["odo"]:
        km = a["odo"] + f * (b["odo"] - a["odo"])
        days, kms = odo
        inside = (days >= a["day"]) & (days <= b["day"])
        xd = np.r_[a["day"], days[inside], b["day"]]
        xk = np.maximum.accumulate(np.r_[a["odo"], kms[inside], b["odo"]])
        day = float(np.interp(km, xk, xd))
    return int(np.clip(np.floor(day + 0.5), a["day"] + 1, b["day"]))


def _reading_need(comp: Component, life_rows: pd.DataFrame, install: dict | None, odo) -> tuple[int, float, str, int] | None:
    """(need day, bracket days, position, day of the reading that showed it) from one part life's readings,
    or None when none reached the limit."""
    lim, found = comp.limit, []
    for pos, g in life_rows.groupby("position", sort=False):
        reached = lim.reached(g["value"].to_numpy(), g["verdict"].to_numpy())
        if not reached.any():
            continue
        j = int(np.argmax(reached))
        b = {"day": int(g["day"].iat[j]), "odo": float(g["odometer_km"].iat[j]), "value": float(g["value"].iat[j])}
        if j > 0:
            a = {"day": int(g["day"].iat[j - 1]), "odo": float(g["odometer_km"].iat[j - 1]), "value": float(g["value"].iat[j - 1])}
        elif install is not None and lim.new is not None:
            a = {**install, "value": lim.new}
        else:
            found.append((b["day"], np.nan, pos, b["day"]))
            continue
        found.append((_crossing_day(lim, a, b, odo), float(b["day"] - a["day"]), pos, b["day"]))
    if not found:
        return None
    if comp.need_when == "all":
        if {f[2] for f in found} != set(comp.positions):
            return None
        return max(found)
    return min(found)


def _component_needs(comp: Component, events: pd.DataFrame, readings: pd.DataFrame, odo: dict) -> list[tuple]:
    ev = events[events["component"] == comp.name]
    ren = renewals(ev, comp)
    brk = ev[ev["action"].isin(comp.breakdown_actions)]
    brk = pd.DataFrame({"vehicle_id": brk["vehicle_id"].astype(str).to_numpy(), "day": brk["day"].to_numpy(dtype=np.int64)})
    readings = readings.assign(life=lives_before(ren, readings["vehicle_id"].to_numpy(), readings["day"].to_numpy()))
    brk = brk.assign(life=lives_before(ren, brk["vehicle_id"].to_numpy(), brk["day"].to_numpy()))
    ren_by = {(v, int(lf)): (int(d), float(o)) for v, lf, d, o in zip(ren["vehicle_id"], ren["life_no"], ren["day"],
                                                                       ren["odometer_km"])}
    brk_by = brk.sort_values("day", kind="stable").groupby(["vehicle_id", "life"])["day"].apply(list).to_dict()
    rd_by = dict(tuple(readings.groupby(["vehicle_id", "life"], sort=False)))
    out = []
    for v, life in sorted(set(ren_by) | set(brk_by) | set(rd_by)):
        closing, repairs, rows = ren_by.get((v, life)), brk_by.get((v, life), []), rd_by.get((v, life))
        if rows is None:  # no readings in this part's life: every resolving event stands in
            out += [(v, comp.name, int(d), "breakdown", 0.0, None) for d in repairs]
            if closing is not None:
                out.append((v, comp.name, closing[0], "replaced", np.nan, None))
            continue
        prev = ren_by.get((v, life - 1))
        install = {"day": prev[0], "odo": prev[1]} if prev is not None else None
        need = _reading_need(comp, rows, install, odo.get(v))
        # the first record to show the need places it: a breakdown before any reading at the limit is the need
        if repairs and (need is None or repairs[0] <= need[3]):
            out.append((v, comp.name, int(repairs[0]), "breakdown", 0.0, None))
        elif need is not None:
            removed = closing is not None and need[3] == closing[0]
            out.append((v, comp.name, need[0], "replaced_worn" if removed else "measured", need[1], need[2]))
        elif closing is not None and not (rows["day"] == closing[0]).any():
            out.append((v, comp.name, closing[0], "replaced", np.nan, None))
    return out


def derive(service_events: pd.DataFrame | None, inspections: pd.DataFrame | None) -> pd.DataFrame:
    """The needs (day numbers) of every registered component from the records: `COLUMNS`, sorted."""
    se = _dated(service_events)
    insp = _dated(inspections)
    odo = _odometer_points(se, insp)
    rows: list[tuple] = []
    for comp in components.all_components():
        rows += _component_needs(comp, se, readings_of(insp[insp["component"] == comp.name] if len(insp) else None,
                                                       comp.limit.measurement), odo)
    out = pd.DataFrame(rows, columns=COLUMNS)
    out = out.astype({"vehicle_id": object, "component": object, "need_day": np.int64, "evidence": object,
                      "bracket_days": float, "position": object})
    return out.sort_values(["vehicle_id", "component", "need_day"], kind="stable").reset_index(drop=True)


def _dated(df: pd.DataFrame | None) -> pd.DataFrame:
    """Records with a `day` column (day number); undated rows dropped."""
    if df is None or not len(df):
        return pd.DataFrame({"vehicle_id": pd.Series(dtype=object), "component": pd.Series(dtype=object),
                             "action": pd.Series(dtype=object), "day": pd.Series(dtype=np.int64),
                             "odometer_km": pd.Series(dtype=float), "measurement": pd.Series(dtype=object),
                             "value": pd.Series(dtype=float)})
    out = df if "day" in df else df.assign(day=day_number(df["date"]))
    if "odometer_km" not in out:
        out = out.assign(odometer_km=np.nan)
    return out[out["day"] > NO]


def needs_table(service_events: pd.DataFrame | None, inspections: pd.DataFrame | None) -> pd.DataFrame:
    """The `needs` table (schemas.NEEDS) derived from the records."""
    n = derive(service_events, inspections)
    df = n.drop(columns="need_day").assign(need_date=n["need_day"].to_numpy().astype("datetime64[D]"))
    return schemas.conform(df, "needs")
