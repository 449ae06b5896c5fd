"""Service reminders: which services each car is due for, when, and the reminders to send.

* Due — per service of the car's schedule (`autopdm.schedules`): by km, the last time it was done
  (its service record's odometer) plus the interval, or, never done, the next multiple of the
  interval on the odometer; by time, the last time plus the months, or, never done, the next
  anniversary of the first registration (not before `from_age_years`). The due date is the
  earlier of the day the odometer forecast (`pipeline.odometer`) reaches the km and the time limit;
  when telemetry has stopped or the odometer is unknown only the time limit counts, and the
  reminder says why.
* A reminder is issued when the due date is at most `LEAD_DAYS` days away (a service overdue by
  up to `OVERDUE_DAYS` at once; when a km milestone was passed is estimated from the car's pace). Its id is `rm-` + 24 hex of SHA-256 over vehicle, service and the milestone (due km and
  due-by date), which stay the same until the service is recorded as done: one reminder per
  service and due date, however often the fleet is scored and however the forecast moves.
* Payloads carry the customer id and preferred channel only (no names or phone numbers), like work
  orders; they travel through the same outbox (`kind: reminder`).
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime, timedelta, timezone

import pandas as pd

from autopdm import schedules
from autopdm.delivery import outbox
from autopdm.pipeline import odometer as od

LEAD_DAYS = 7
OVERDUE_DAYS = 30
KIND = "reminder"


def slot(service: str) -> str:
    """The outbox's component column for a reminder of `service` (what suppression keys on)."""
    return outbox.slot({"kind": KIND, "service": service})


def reminder_id(vehicle_id: str, service: str, due_km: float | None, due_by: str | None) -> str:
    key = f"{vehicle_id}|{service}|{'' if due_km is None else int(round(due_km))}|{due_by or ''}"
    return "rm-" + hashlib.sha256(key.encode()).hexdigest()[:24]


def _reg_date(v) -> date | None:
    if v is None or (not isinstance(v, (date, datetime, str, pd.Timestamp))) or pd.isna(v):
        return None
    return pd.Timestamp(v).date()


def _time_limit(rule: schedules.Rule, last: tuple | None, reg: date | None, as_of: date) -> date | None:
    start = schedules.add_months(reg, int(round(rule.from_age_years * 12))) if rule.from_age_years and reg else None
    if rule.from_age_years and reg is None:
        return None   # "from age N" without a registration date: cannot tell
    if last is not None and rule.every_months:
        d = schedules.add_months(last[0], rule.every_months)
        return max(d, start) if start else d
    if not rule.every_months:
        return None
    if reg is None:
        return None
    k = 1
    while (d := schedules.add_months(reg, k * rule.every_months)) < as_of or (start and d < start):
        k += 1
    return d


def due_services(vehicle: dict, events: list[tuple] | None, fc: od.Forecast, as_of: date,
                 scheds: schedules.Schedules) -> list[dict]:
    """Every service of the car's schedule with its milestone and forecast due date, soonest first."""
    out = []
    reg = _reg_date(vehicle.get("first_registration_date"))
    for rule in scheds.for_vehicle(vehicle.get("make"), vehicle.get("model")):
        last = schedules.last_done(events, rule, as_of)
        due_km = None
        if rule.every_km:
            if last is not None and last[1] is not None:
                due_km = last[1] + rule.every_km
            elif fc.odometer_km is not None:
                due_km = (fc.odometer_km // rule.every_km + 1) * rule.every_km
        by_time = _time_limit(rule, last, reg, as_of)
        reach = fc.reach(due_km) if due_km is not None else None
        km_day = reach and date.fromisoformat(reach["date"])
        if reach and fc.odometer_km > due_km and sum(fc.km_per_day) > 0:   # passed: about when, at its pace
            km_day = as_of - timedelta(days=round((fc.odometer_km - due_km) / ((5 * fc.km_per_day[0] + 2 * fc.km_per_day[1]) / 7)))
        cands = [(d, why) for d, why in ((km_day, "km"), (by_time, "time")) if d]
        if not cands:
            continue
        due_date, by = min(cands)
        out.append({
            "service": rule.service, "text": rule.text,
            "due_km": None if due_km is None else round(due_km),
            "due_by_date": by_time.isoformat() if by_time else None,
            "forecast": reach, "due_date": due_date.isoformat(), "due_by": by,
            "days_left": (due_date - as_of).days,
            "odometer_km": None if fc.odometer_km is None else round(fc.odometer_km),
            "odometer_status": fc.status,
            "last_done": None if last is None else {"date": last[0].isoformat(),
                                                    "odometer_km": None if last[1] is None else round(last[1])},
            "reminder_id": reminder_id(fc.vehicle_id, rule.service, due_km, by_time.isoformat() if by_time else None),
        })
    out.sort(key=lambda s: (s["due_date"], s["service"]))
    return out


def fleet_due(vehicles: pd.DataFrame, service_events: pd.DataFrame, trips: pd.DataFrame, as_of,
              scheds: schedules.Schedules | None = None, vehicle_ids: list[str] | None = None) -> dict[str, list[dict]]:
    """vehicle → `due_services` for every vehicle in `vehicles` (or those of `vehicle_ids`)."""
    as_of = pd.Timestamp(as_of).date()
    scheds = scheds or schedules.load()
    v = vehicles.drop_duplicates("vehicle_id")
    if vehicle_ids is not None:
        v = v[v["vehicle_id"].isin(set(vehicle_ids))]
    ids = list(v["vehicle_id"].astype(str))
    if trips is not None and len(trips):
        trips = trips[trips["vehicle_id"].isin(set(ids))]
    fcs = od.forecast_fleet(trips, service_events, as_of, ids)
    by_v = schedules.event_lists(service_events)
    return {vin: due_services(row, by_v.get(vin), fcs[vin], as_of, scheds)
            for vin, row in zip(ids, v.to_dict("records"))}


def upcoming(due: list[dict], lead_days: int = LEAD_DAYS) -> list[dict]:
    """The services whose reminder is issued at this day: due within `lead_days`, or overdue by at
    most OVERDUE_DAYS (a service overdue for longer — a car whose records start now, a schedule
    the workshop just tightened — is for the advisor to raise, not a burst of automatic messages)."""
    return [s for s in due if -OVERDUE_DAYS <= s["days_left"] <= lead_days]


def payloads(due_by_vehicle: dict[str, list[dict]], vehicles: pd.DataFrame, as_of,
             created_at: str | None = None, lead_days: int = LEAD_DAYS) -> list[dict]:
    """Reminder payloads for every service due within `lead_days` days of `as_of`."""
    as_of = pd.Timestamp(as_of).date()
    created_at = created_at or datetime.now(timezone.utc).isoformat(timespec="seconds")
    contact = vehicles.drop_duplicates("vehicle_id").set_index("vehicle_id")
    out = []
    for vin, due in due_by_vehicle.items():
        cust = contact.at[vin, "customer_id"] if vin in contact.index else None
        chan = contact.at[vin, "preferred_channel"] if vin in contact.index else None
        for s in upcoming(due, lead_days):
            end = max(date.fromisoformat(s["due_date"]), as_of)
            out.append({
                "kind": KIND,
                "work_order_id": s["reminder_id"],
                "vehicle_id": vin,
                "customer_id": None if cust is None or pd.isna(cust) else str(cust),
                "channel": None if chan is None or pd.isna(chan) else str(chan),
                "service": s["service"],
                "message": s["text"],
                "due": {k: s[k] for k in ("due_date", "due_by", "due_km", "due_by_date", "forecast", "days_left")},
                "recommended_window": {"start": as_of.isoformat(), "end": end.isoformat()},
                "odometer_km": s["odometer_km"],
                "odometer_status": s["odometer_status"],
                "last_done": s["last_done"],
                "created_at": created_at,
            })
    return out


def close_done(ob: outbox.Outbox, service_events: pd.DataFrame, as_of, scheds: schedules.Schedules | None = None) -> int:
    """Close open reminders whose service was recorded as done on or after they were issued (and on or
    before `as_of`): an undelivered one is not sent any more, and the next one can be issued."""
    if service_events is None or service_events.empty:
        return 0
    as_of = pd.Timestamp(as_of).date()
    scheds = scheds or schedules.load()
    kinds = {}
    for rule in [*scheds.default.values(), *(r for o in scheds.overrides.values() for r in o.values() if r)]:
        for k in rule.done_by:
            kinds.setdefault(k, set()).add(rule.service)
    ev = service_events.assign(date=pd.to_datetime(service_events["date"]).dt.date)
    # each record as the reminder slots of the services it counts as done, closed as work orders are
    done = [(str(v), slot(svc), d.isoformat()) for v, c, a, d in zip(ev["vehicle_id"], ev["component"], ev["action"], ev["date"])
            for svc in kinds.get((c, a), ())]
    return ob.close_serviced(pd.DataFrame(done, columns=["vehicle_id", "component", "date"]), as_of, reason="service done on")
