"""Dask training against single-machine training, over several split seeds.

    .venv/bin/python benchmarks/bench_dask_parity.py                      # 2,000 vehicles, 2 workers, seeds 0-3
    .venv/bin/python benchmarks/bench_dask_parity.py --vehicles 500 --seeds 0 1 --workers 2

For every seed: one split, both engines on the same training rows (pandas early-stopped, Dask with its
best iteration; `train_dask.compare_engines`), same calibration and threshold code, held-out metrics.
Prints per seed and component the two engines' metrics and the largest difference in raw margin on the
test rows (0 = the same trees), then the gap between the engines' means over seeds, next to the seed-to-seed
spread of the single-machine model. Writes $AUTOPDM_HOME/reports/bench_dask_parity.json (default home
/tmp/autopdm-bench).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

METRICS = ("pr_auc", "roc_auc", "brier", "ew_recall", "precision", "alert_rate")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vehicles", type=int, default=2000)
    ap.add_argument("--days", type=int, default=730)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--components", nargs="+", default=["brake", "tire", "battery"])
    a = ap.parse_args()
    os.environ.setdefault("AUTOPDM_HOME", "/tmp/autopdm-bench")
    warnings.filterwarnings("ignore")

    import numpy as np

    from autopdm.pipeline import features_dask
    from autopdm.modeling import train_dask
    from autopdm.pipeline.features import build_features
    from autopdm.sim.fleet import simulate_fleet

    t0 = time.perf_counter()
    fleet = simulate_fleet(a.vehicles, a.days, seed=1)
    df = build_features(fleet.trips, fleet.vehicles, fleet.service_events, fleet.dtc_events)
    del fleet
    print(f"{a.vehicles} vehicles x {a.days} days: {len(df):,} feature rows in {time.perf_counter() - t0:.0f} s", flush=True)

    runs: dict = {}
    with features_dask.local_client(n_workers=a.workers, processes=False) as client:
        for seed in a.seeds:
            runs[seed] = train_dask.compare_engines(df, a.components, seed=seed, client=client)
            for comp, v in runs[seed].items():
                cells = "  ".join(f"{k} {v['pandas'][k]:.4f}/{v['dask'][k]:.4f}" for k in METRICS[:4])
                print(f"seed {seed} {comp:8s} rounds {v['rounds']:4d}  max margin gap {v['max_margin_gap']:.2e}  "
                      f"{cells}  (pandas/dask)", flush=True)

    summary = {}
    print(f"\nmeans over seeds {a.seeds} ({a.workers} workers): pandas, Dask, relative gap; pandas seed spread (sd/mean)")
    for comp in a.components:
        summary[comp] = {}
        for k in METRICS:
            pd_v = np.array([runs[s][comp]["pandas"][k] for s in a.seeds])
            dk_v = np.array([runs[s][comp]["dask"][k] for s in a.seeds])
            gaps = [train_dask.relative_gap(p, d) for p, d in zip(pd_v, dk_v)]
            summary[comp][k] = {"pandas_mean": float(pd_v.mean()), "dask_mean": float(dk_v.mean()),
                                "gap_of_means": train_dask.relative_gap(pd_v.mean(), dk_v.mean()),
                                "max_gap_per_seed": float(max(gaps)),
                                "pandas_seed_cv": float(pd_v.std(ddof=1) / pd_v.mean()) if len(pd_v) > 1 and pd_v.mean() else float("nan")}
            s = summary[comp][k]
            print(f"  {comp:8s} {k:10s} {s['pandas_mean']:.4f} {s['dask_mean']:.4f}  gap {100 * s['gap_of_means']:5.2f} %"
                  f"  (worst seed {100 * s['max_gap_per_seed']:5.2f} %)  pandas spread {100 * s['pandas_seed_cv']:5.1f} %")
        summary[comp]["identical_trees_seeds"] = [s for s in a.seeds if runs[s][comp]["max_margin_gap"] < 1e-9]
    out = Path(os.environ["AUTOPDM_HOME"], "reports", "bench_dask_parity.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(a), "runs": runs, "summary": summary}, indent=1, default=float))
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
