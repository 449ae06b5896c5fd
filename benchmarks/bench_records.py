"""Workshop records of a simulated fleet, the needs derived from them and the part-state estimate, against
the simulator's hidden truth.

Prints: inspections per vehicle-year by measurement; each measurement's reading error (reading − true
state); the needs by evidence with their bracket widths and how far each lies from the true need; and
the part-state estimator's error against the true state 7 and 15 days after a reading, beside the
error of taking the last reading as it is.

    .venv/bin/python benchmarks/bench_records.py [--vehicles 600] [--days 730] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from autopdm import components
from autopdm.pipeline import needs as needs_mod
from autopdm.pipeline.features import build_features
from autopdm.sim.fleet import simulate_fleet


def inspections_per_year(fleet) -> pd.DataFrame:
    years = len(fleet.vehicles) * (fleet.true_state["date"].nunique() / 365.25)
    i = fleet.inspections
    return (i.groupby(["component", "measurement", "position"]).size() / years).rename("per_vehicle_year").reset_index()


def reading_errors(fleet) -> pd.DataFrame:
    ts = fleet.true_state
    truth = ts.assign(date=pd.to_datetime(ts["date"]).dt.date, vehicle_id=ts["vehicle_id"].astype(str),
                      position=ts["position"].astype(str), component=ts["component"].astype(str))
    i = fleet.inspections.merge(truth[["vehicle_id", "component", "position", "date", "value"]],
                                on=["vehicle_id", "component", "position", "date"], suffixes=("", "_true"))
    i["error"] = i["value"] - i["value_true"]
    i = i[i["measurement"].isin([c.limit.measurement for c in components.all_components()])]
    return i.groupby("measurement")["error"].agg(n="size", mean="mean", sd="std",
                                                 p95_abs=lambda e: e.abs().quantile(0.95)).reset_index()


def needs_against_truth(fleet) -> tuple[pd.DataFrame, pd.DataFrame]:
    nd = needs_mod.needs_table(fleet.service_events, fleet.inspections)
    by = nd.groupby(["component", "evidence"])["bracket_days"].agg(
        n="size", bracket_median="median", bracket_p90=lambda b: b.quantile(0.9)).reset_index()
    tn = fleet.true_needs.assign(need_date=pd.to_datetime(fleet.true_needs["need_date"]).astype("datetime64[ns]"),
                                 vehicle_id=fleet.true_needs["vehicle_id"].astype(object))
    nd = nd.assign(need_date=pd.to_datetime(nd["need_date"]).astype("datetime64[ns]"), vehicle_id=nd["vehicle_id"].astype(object))
    rows = []
    for comp in components.names():
        o, t = nd[nd["component"] == comp].sort_values("need_date"), tn[tn["component"] == comp].sort_values("need_date")
        m = pd.merge_asof(o, t[["vehicle_id", "need_date"]].rename(columns={"need_date": "true_date"}),
                          left_on="need_date", right_on="true_date", by="vehicle_id", direction="nearest",
                          tolerance=pd.Timedelta(days=120))
        err = (m["need_date"] - m["true_date"]).dt.days
        for ev, g in m.assign(err=err).groupby("evidence"):
            rows.append((comp, ev, len(g), g["err"].notna().mean(), g["err"].abs().median()))
        rows.append((comp, "true needs found", len(t), len(m.dropna(subset=["true_date"]).drop_duplicates(["vehicle_id", "true_date"])) / max(len(t), 1), np.nan))
    return by, pd.DataFrame(rows, columns=["component", "evidence", "n", "share_within_120d_of_a_true_need",
                                           "median_abs_days_from_it"])


def estimator_errors(fleet, feats: pd.DataFrame) -> pd.DataFrame:
    ts = fleet.true_state
    rows = []
    for comp in components.all_components():
        if "part_state" not in comp.families:
            continue
        t = ts[ts["component"] == comp.name]
        worst = t.groupby([t["vehicle_id"].astype(str), "date"], observed=True)["value"].min().rename("truth").reset_index()
        worst["date"] = pd.to_datetime(worst["date"]).astype("datetime64[ns]")
        m = comp.limit.measurement
        ages = feats[[f"{m}{'' if p == '-' else '_' + p}_age_days" for p in comp.positions]].min(axis=1)
        last = feats[[f"{m}{'' if p == '-' else '_' + p}_last" for p in comp.positions]].min(axis=1)
        f = feats[["vehicle_id", "date", f"{comp.name}_state_est", f"{comp.name}_state_sd"]].assign(age=ages, last=last)
        f = f.merge(worst, on=["vehicle_id", "date"])
        for age in (0, 7, 15, 60):
            g = f[(f["age"] == age) & f[f"{comp.name}_state_est"].notna()]
            err = g[f"{comp.name}_state_est"] - g["truth"]
            rows.append((comp.name, comp.limit.unit, age, len(g), err.abs().mean(), (g["last"] - g["truth"]).abs().mean(),
                         err.mean(), (err.abs() <= g[f"{comp.name}_state_sd"]).mean()))
    return pd.DataFrame(rows, columns=["component", "unit", "days_after_reading", "rows", "mae_estimate",
                                       "mae_last_reading", "bias_estimate", "within_1sd"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vehicles", type=int, default=600)
    ap.add_argument("--days", type=int, default=730)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    t0 = time.perf_counter()
    fleet = simulate_fleet(a.vehicles, a.days, a.seed)
    t1 = time.perf_counter()
    feats = build_features(fleet.trips, fleet.vehicles, fleet.service_events, fleet.dtc_events, inspections=fleet.inspections)
    t2 = time.perf_counter()
    pd.set_option("display.width", 160)
    print(f"{a.vehicles} vehicles × {a.days} days, seed {a.seed}: simulated in {t1 - t0:.0f} s, features in {t2 - t1:.0f} s "
          f"({feats.shape[0]:,} rows × {feats.shape[1]} columns); {len(fleet.inspections):,} readings\n")
    print("inspections per vehicle-year\n", inspections_per_year(fleet).round(2).to_string(index=False), "\n")
    print("reading − true state\n", reading_errors(fleet).round(3).to_string(index=False), "\n")
    by, vs = needs_against_truth(fleet)
    print("needs by evidence (bracket in days)\n", by.round(1).to_string(index=False), "\n")
    print("observed needs against true needs\n", vs.round(2).to_string(index=False), "\n")
    print("part-state estimate against the true state of the worst position\n",
          estimator_errors(fleet, feats).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
