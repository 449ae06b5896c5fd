"""Season or change? The drift monitor over twelve monthly windows, for the training fleet and for changed fleets.

    python benchmarks/bench_monitor_season.py [--vehicles 150] [--days 365] [--seed 2] [--home DIR] [--no-baseline]

Simulates a gentle temperate fleet (aggressiveness 0.8), trains the three models on it (few boosting rounds:
the model is not under test), then runs the monitor (`--current-days 30`) at the end of every month on:
the same fleet; the same fleet with season handling switched off (``--no-baseline`` skips it); the same vehicles
in a cold and in a hot climate; drivers at aggressiveness 2.0; a hot fleet at aggressiveness 2.0. Prints one
markdown table per fleet (verdict, drift share, the column that moved most, the prediction PSIs) and writes
<home>/reports/bench_monitor_season.json. The figures in docs/monitoring.md come from this script.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

FLEETS = {  # name → (climate, aggressiveness); the same vehicles and seed throughout
    "own": ("temperate", 0.8), "cold": ("cold", 0.8), "hot": ("hot", 0.8),
    "temperate, aggressiveness 2.0": ("temperate", 2.0), "hot, aggressiveness 2.0": ("hot", 2.0),
}


def month_ends(features) -> list[str]:
    import pandas as pd

    d = pd.to_datetime(features["date"])
    return [str(e.date()) for e in pd.date_range(d.min(), d.max(), freq="ME")]


def run_fleet(monitor, home, features, champions, ends) -> list[dict]:
    rows = []
    for end in ends:
        t0 = time.perf_counter()
        r = monitor.run_monitor(home, features=features, as_of=end, champions=champions, log_to_mlflow=False,
                                write_report=False)
        top = max(r.column_scores, key=r.column_scores.get)
        rows.append({"end": end, "drift": r.drift, "share": r.drift_share, "n_columns": r.n_columns,
                     "severe": len(r.severe_columns), "top": top, "top_score": r.column_scores[top],
                     "psi": r.prediction_scores, "seconds": time.perf_counter() - t0})
    return rows


def table(name: str, rows: list[dict]) -> str:
    out = [f"\n{name}: {sum(r['drift'] for r in rows)} of {len(rows)} windows flagged\n",
           "| window end | verdict | drift share | columns | severe | moved most | PSI brake / tire / battery |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        psi = " / ".join(f"{r['psi'].get(c, float('nan')):.2f}" for c in ("brake", "tire", "battery"))
        out.append(f"| {r['end']} | {'DRIFT' if r['drift'] else 'ok'} | {r['share']:.2f} | {r['n_columns']} | "
                   f"{r['severe']} | {r['top']} {r['top_score']:.2f} | {psi} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vehicles", type=int, default=150)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--home", default=None)
    ap.add_argument("--no-baseline", action="store_true", help="skip the run with season handling switched off")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    home_dir = Path(args.home or tempfile.mkdtemp(prefix="bench-monitor-"))
    os.environ["AUTOPDM_HOME"] = str(home_dir)

    from autopdm import monitor, store
    from autopdm.config import Paths
    from autopdm.modeling.champion import load_champions
    from autopdm.modeling.train import train_all
    from autopdm.pipeline.features import build_features
    from autopdm.sim.fleet import simulate_fleet

    home = Paths.from_env().ensure()

    def features(climate, aggressiveness):
        f = simulate_fleet(args.vehicles, args.days, seed=args.seed, climate=climate, aggressiveness=aggressiveness)
        return build_features(f.trips, f.vehicles, f.service_events, f.dtc_events)

    own = features(*FLEETS["own"])
    store.write_table(own, "features", home)
    t0 = time.perf_counter()
    train_all(home, params={"num_iterations": args.rounds, "early_stopping_rounds": 10})
    print(f"trained on {args.vehicles} vehicles x {args.days} days (seed {args.seed}) in {time.perf_counter() - t0:.0f} s")
    champions = load_champions(home)
    ends = month_ends(own)
    results = {}
    for name, (climate, aggr) in FLEETS.items():
        results[name] = run_fleet(monitor, home, own if name == "own" else features(climate, aggr), champions, ends)
        print(table(name, results[name]), flush=True)
    if not args.no_baseline:  # the same fleet with season handling off: whole reference for every column
        span, on = monitor.SEASON_MIN_SPAN_DAYS, monitor.MATCH_ON
        monitor.SEASON_MIN_SPAN_DAYS, monitor.MATCH_ON = 10**6, ()
        try:
            results["own, season handling off"] = run_fleet(monitor, home, own, champions, ends)
        finally:
            monitor.SEASON_MIN_SPAN_DAYS, monitor.MATCH_ON = span, on
        print(table("own, season handling off", results["own, season handling off"]))
    out = home.reports / "bench_monitor_season.json"
    out.write_text(json.dumps({"args": vars(args), "results": results}, indent=2, default=str))
    print(f"\n{out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
