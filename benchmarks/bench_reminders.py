"""Reminder timing on held-out simulated fleets: do km reminders arrive 5–9 days before the car
reaches the milestone? autopdm's odometer forecast vs a CRM's usual guess, on the same cars.

Method (docs/model-quality.md, "Reminders"):
* fleets the models never saw (seeds 101.., 400 vehicles × 365 days each, starting 2025-01-01);
* milestones: every multiple of 10,000 km a car's true odometer (the simulator's, at the end of each
  day) passes after its first 90 days — the playbook's "7 days before the car reaches 10,000 km";
* autopdm: every day from 30 days before the crossing, `pipeline.odometer.forecast` at that day
  (the trips recorded up to the end of it, the latest service record's odometer for cars whose
  logger reads none); the reminder goes out on the first day the forecast date is at most 7 days
  away — what a nightly `autopdm score --emit` does. A car whose telemetry has stopped gets none;
* the CRM's guess: the car's average km per day from the odometers in its service records (between
  its last two visits at least 30 days apart, else since its first registration), extrapolated from
  the last visit; it sends on the first day its predicted date is at most 7 days away;
* for reference, the same driving pattern started from the true odometer of the day (what is left
  is the car's own week-to-week variation);
* a reminder is on time when it arrives 5–9 days before the day the true odometer passes the
  milestone; milestones without a reminder before the crossing count as misses.

    python benchmarks/bench_reminders.py [--vehicles 400] [--days 365] [--fleets 2]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from dataclasses import replace
from datetime import date, timedelta

import numpy as np
import pandas as pd

from autopdm import schedules
from autopdm.pipeline import odometer as od
from autopdm.pipeline.reminders import LEAD_DAYS
from autopdm.sim.fleet import simulate_fleet

MILESTONE_KM = 10_000
HISTORY_DAYS = 90
LOOKBACK = 30
ON_TIME = (5, 9)


def milestones(true_odo: np.ndarray) -> list[tuple[int, float, int]]:
    """(vehicle index, milestone km, first day the true odometer is at or past it)."""
    out = []
    for v, odo in enumerate(true_odo):
        start = odo[HISTORY_DAYS]
        for m in np.arange((start // MILESTONE_KM + 1) * MILESTONE_KM, odo[-1] + 1, MILESTONE_KM):
            out.append((v, float(m), int(np.argmax(odo >= m))))
    return out


def crm_rate(events: list[tuple], reg: date, day: date) -> tuple[date, float, float] | None:
    """(last visit, its km, km per day) from the records with an odometer up to `day`."""
    visits: dict[date, float] = {}
    for d, _, _, km in events or ():
        if d <= day and km is not None:
            visits[d] = max(km, visits.get(d, 0.0))
    if not visits:
        return None
    days = sorted(visits)
    last = days[-1]
    prev = [d for d in days if (last - d).days >= 30]
    if prev:
        rate = (visits[last] - visits[prev[-1]]) / (last - prev[-1]).days
    else:
        rate = visits[last] / max(1, (last - reg).days)
    return last, visits[last], max(rate, 0.1)


def run_fleet(seed: int, vehicles: int, days: int) -> pd.DataFrame:
    t = time.perf_counter()
    f = simulate_fleet(vehicles, days, seed=seed)
    t_sim = time.perf_counter() - t
    day0 = date(2025, 1, 1)
    dds = od.daily_driving(f.trips)
    events = schedules.event_lists(f.service_events)
    odos = od.service_odometers(f.service_events)
    vins = list(f.vehicles["vehicle_id"])
    with_odo = set(f.trips.loc[f.trips["odometer_end_km"].notna(), "vehicle_id"])
    regs = [pd.Timestamp(r).date() for r in f.vehicles["first_registration_date"]]
    rows = []
    for v, m, T in milestones(f.true_odometer):
        vin, ev = vins[v], events.get(vins[v])
        ours = crm = exact = None
        status = "ok"
        for d in range(max(HISTORY_DAYS, T - LOOKBACK), T + 1):
            day = day0 + timedelta(days=d)
            if ours is None or exact is None:
                fc = od.forecast(dds.get(vin), day, odos.get(vin), vehicle_id=vin)
            if ours is None:
                r = fc.reach(m)
                if r is None:
                    status = fc.status.split(" since")[0]
                elif (date.fromisoformat(r["date"]) - day).days <= LEAD_DAYS:
                    ours = d
            if exact is None and fc.km_per_day is not None:   # the same forecast from the true odometer today
                r = replace(fc, status=od.OK, odometer_km=float(f.true_odometer[v, d])).reach(m)
                if r is not None and (date.fromisoformat(r["date"]) - day).days <= LEAD_DAYS:
                    exact = d
            if crm is None:
                c = crm_rate(ev, regs[v], day)
                if c is not None:
                    due = c[0] + timedelta(days=(m - c[1]) / c[2])
                    if (due - day).days <= LEAD_DAYS:
                        crm = d
            if ours is not None and crm is not None and exact is not None:
                break
        rows.append({"seed": seed, "vehicle": vin, "km": m, "T": T, "odometer_pid": vin in with_odo,
                     "lead_autopdm": None if ours is None else T - ours, "lead_crm": None if crm is None else T - crm,
                     "lead_exact": None if exact is None else T - exact,
                     "status": status if ours is None else "ok"})
    out = pd.DataFrame(rows)
    print(f"fleet seed {seed}: {vehicles} × {days} simulated in {t_sim:.1f} s, {len(out)} milestones, "
          f"evaluated in {time.perf_counter() - t - t_sim:.1f} s")
    return out


def share(leads: pd.Series) -> float:
    lo, hi = ON_TIME
    return float(((leads >= lo) & (leads <= hi)).sum() / max(1, len(leads)))


def report(df: pd.DataFrame) -> None:
    n = len(df)
    print(f"\n{n} milestones of {MILESTONE_KM:,} km, {df['vehicle'].nunique()} cars")
    labels = {"autopdm": "autopdm (odometer forecast)", "crm": "CRM guess (km/day from service records)",
              "exact": "autopdm's driving pattern, true odometer"}
    for name, label in labels.items():
        lead = df[f"lead_{name}"]
        got = lead.dropna()
        print(f"  {label:40s} on time (5–9 days) {share(lead.fillna(-999)):.2f}   "
              f"early >9 {(got > 9).sum() / n:.2f}   late <5 {(got < 5).sum() / n:.2f}   none {lead.isna().sum() / n:.2f}   "
              f"median |lead−7| {float((got - 7).abs().median()) if len(got) else float('nan'):.1f} d")
    for pid, part in df.groupby("odometer_pid"):
        print(f"  autopdm, cars {'with' if pid else 'without'} an odometer reading in their trips: "
              f"on time {share(part['lead_autopdm'].fillna(-999)):.2f} ({len(part)} milestones); "
              f"CRM guess {share(part['lead_crm'].fillna(-999)):.2f}")
    for seed, part in df.groupby("seed"):
        print(f"  fleet {seed}: autopdm {share(part['lead_autopdm'].fillna(-999)):.2f}, "
              f"CRM guess {share(part['lead_crm'].fillna(-999)):.2f} ({len(part)} milestones)")
    sent = df.dropna(subset=["lead_autopdm"])
    print(f"  autopdm, of the reminders it sent: on time {share(sent['lead_autopdm']):.2f} ({len(sent)})")
    why = Counter(df.loc[df["lead_autopdm"].isna(), "status"])
    if why:
        print("  autopdm sent none: " + ", ".join(f"{k} {v}" for k, v in why.most_common()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vehicles", type=int, default=400)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--fleets", type=int, default=2)
    a = ap.parse_args()
    t = time.perf_counter()
    df = pd.concat([run_fleet(101 + k, a.vehicles, a.days) for k in range(a.fleets)], ignore_index=True)
    report(df)
    print(f"total {time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()
