"""Benchmark training of all three models (target: < 5 min on 2,000 vehicles × 730 days) and report metrics.

    python benchmarks/bench_train.py [--vehicles 2000] [--days 730] [--seeds 0] [--home DIR]

Uses the features table under --home (simulating and building it first when absent; default home
is a temporary directory). Times `train_all` per split seed (split, LightGBM with early stopping,
calibration, operating point, held-out evaluation with baselines, plots, MLflow logging and
registration, gate) and prints per component, against the true needs (the simulator's hidden
physical need: the headline) and against the observed needs (what the workshop's records show): early-warning
recall, alert precision, alert rate, PR-AUC, Brier, beside the workshop's rule at the same alert
volume and the literal rule; and how the operating point was chosen. The issue's targets:
early-warning recall >= 0.70 at alert precision >= 0.50, and >= 2x the baseline at the same volume.
With several seeds (`--seeds 0,1,2`) also the spread: each component's alert rate max/min across
seeds (the operating point's stability) and mean ± sd of the headline figures.
Writes <home>/reports/bench_train.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

TARGET_S = 300.0
FIGURES = ("ew_recall", "precision", "alert_rate", "n_events", "pr_auc", "brier")


def _f(v, fmt=".3f") -> str:
    try:
        return format(float(v), fmt)
    except (TypeError, ValueError):
        return "n/a"


def ensure_features(paths, vehicles: int, days: int, seed: int) -> None:
    from autopdm import store

    if paths.table("features").exists():
        return
    from autopdm.pipeline.features import build_features

    if not paths.table("trips").exists():
        from autopdm.sim.fleet import simulate_fleet, write_fleet

        write_fleet(simulate_fleet(vehicles, days, seed), paths)
    df = build_features(store.read_table("trips", paths), store.read_table("vehicles", paths),
                        store.read_table("service_events", paths), store.read_dtc_events(paths))
    store.write_table(df, "features", paths)


def print_component(comp: str, r: dict) -> None:
    op = r["threshold_selection"]
    print(f"\n{comp}: threshold {r['threshold']:.4f} ({op['rule']}; break-even risk {op['break_even_risk']:.4f}, "
          f"budget {op['alert_budget']:g} × prevalence {op['prevalence']:.4f}), best iteration {r['best_iteration']}, "
          f"{r['seconds']:.0f} s")
    print(f"  {'needs':15s} {'ew_recall':>9s} {'precision':>9s} {'alerts/vd':>9s} {'events':>6s} {'PR-AUC':>7s} {'Brier':>7s}"
          f" | {'base_rec':>8s} {'base_prec':>9s} {'base_PR':>7s} | {'rule_rec':>8s} {'rule_prec':>9s} {'rule_rate':>9s}")
    for name, b in r["against"].items():
        m, bm, rr = b["model"], b["baseline_same_volume"], b["baseline_rule"]
        print(f"  {name:15s} {_f(m['ew_recall']):>9s} {_f(m['precision']):>9s} {_f(m['alert_rate'], '.4f'):>9s} "
              f"{m['n_events']:6d} {_f(m['pr_auc']):>7s} {_f(m.get('brier'), '.4f'):>7s} | {_f(bm['ew_recall']):>8s} "
              f"{_f(bm['precision']):>9s} {_f(bm.get('pr_auc')):>7s} | {_f(rr['ew_recall']):>8s} {_f(rr['precision']):>9s} "
              f"{_f(rr['alert_rate'], '.4f'):>9s}")


def spread(runs: list[dict]) -> dict:
    """Across seeds: alert rate max/min and mean ± sd of the headline figures, per component."""
    import numpy as np

    out = {}
    for comp in runs[0]["components"]:
        heads = [run["components"][comp]["model"] for run in runs]
        rates = [h["alert_rate"] for h in heads]
        out[comp] = {"alert_rate_max_over_min": max(rates) / min(rates) if min(rates) > 0 else float("inf"),
                     **{f"{k}_mean": float(np.nanmean([h[k] for h in heads])) for k in FIGURES if k != "n_events"},
                     **{f"{k}_sd": float(np.nanstd([h[k] for h in heads])) for k in FIGURES if k != "n_events"}}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vehicles", type=int, default=2000)
    ap.add_argument("--days", type=int, default=730)
    ap.add_argument("--seed", type=int, default=0, help="fleet seed (the simulation)")
    ap.add_argument("--seeds", default="0", help="split seeds to train with, comma-separated (e.g. 0,1,2)")
    ap.add_argument("--home", default=None)
    a = ap.parse_args()

    from autopdm.config import Paths

    tmp = None
    if a.home is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_train_")
        a.home = tmp.name
    os.environ["AUTOPDM_HOME"] = a.home
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    paths = Paths.from_env(a.home).ensure()
    ensure_features(paths, a.vehicles, a.days, a.seed)

    from autopdm.modeling.train import train_all

    out: dict = {"vehicles": a.vehicles, "days": a.days, "fleet_seed": a.seed, "cpus": os.cpu_count(),
                 "load_avg_1m_before": os.getloadavg()[0], "target_s": TARGET_S, "runs": []}
    for seed in [int(s) for s in a.seeds.split(",")]:
        t = time.perf_counter()
        res = train_all(paths, seed=seed)
        run = {"seed": seed, "train_all_s": round(time.perf_counter() - t, 1), "components": {}}
        print(f"\n=== split seed {seed}: train_all {run['train_all_s']} s (target < {TARGET_S:.0f} s)")
        for comp, r in res.items():
            if comp.startswith("_"):
                continue
            print_component(comp, r)
            m, b = r["metrics"], r["baseline"]
            run["components"][comp] = {
                "headline_needs": r["headline_needs"], "model": m, "baseline_same_volume": b,
                "against": r["against"], "threshold": r["threshold"], "threshold_selection": r["threshold_selection"],
                "operating_curve": r["operating_curve"], "seconds": round(r["seconds"], 1),
                "best_iteration": r["best_iteration"], "version": r["version"], "promoted": r["promoted"],
                "targets_met": bool(m["ew_recall"] >= 0.70 and m["precision"] >= 0.50 and m["ew_recall"] >= 2 * b["ew_recall"])}
        out["runs"].append(run)
    out["ok_time"] = all(run["train_all_s"] < TARGET_S for run in out["runs"])
    out["load_avg_1m_after"] = os.getloadavg()[0]
    if len(out["runs"]) > 1:
        out["spread"] = spread(out["runs"])
        print(f"\nacross split seeds {a.seeds} (headline needs): alert rate max/min, mean ± sd")
        for comp, s in out["spread"].items():
            print(f"  {comp:8s} alert rate max/min {s['alert_rate_max_over_min']:.2f}; " + ", ".join(
                f"{k} {s[k + '_mean']:.3f} ± {s[k + '_sd']:.3f}" for k in ("ew_recall", "precision", "pr_auc")))
    paths.reports.mkdir(parents=True, exist_ok=True)
    (paths.reports / "bench_train.json").write_text(json.dumps(out, indent=2, default=float))
    if tmp is not None:
        tmp.cleanup()
    return 0 if out["ok_time"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
