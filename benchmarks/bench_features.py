"""Benchmark the features pipeline on a simulated fleet (target: < 60 s for 2,000 vehicles × 730 days).

    python benchmarks/bench_features.py [--vehicles 2000] [--days 730] [--seed 0] [--home DIR] [--engine pandas]

Simulates the fleet into --home (default: a temporary directory; an existing --home with a trips
table is reused), then times `autopdm features` end to end: reading trips / vehicles /
service events / DTC events, `build_features`, and writing var/features/features.parquet.
Prints a table and writes <home>/reports/bench_features.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

TARGET_S = 60.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vehicles", type=int, default=2000)
    ap.add_argument("--days", type=int, default=730)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--home", default=None)
    ap.add_argument("--engine", default="pandas", choices=["pandas", "dask"])
    a = ap.parse_args()

    from autopdm import store
    from autopdm.config import Paths
    from autopdm.pipeline.features import build_features

    tmp = None
    if a.home is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_features_")
        a.home = tmp.name
    paths = Paths.from_env(a.home).ensure()
    out: dict = {"vehicles": a.vehicles, "days": a.days, "seed": a.seed, "engine": a.engine, "cpus": os.cpu_count(),
                 "load_avg_1m_before": os.getloadavg()[0]}
    if not paths.table("trips").exists():
        from autopdm.sim.fleet import simulate_fleet, write_fleet

        t = time.perf_counter()
        fleet = simulate_fleet(a.vehicles, a.days, a.seed)
        write_fleet(fleet, paths)
        out["simulate_s"] = round(time.perf_counter() - t, 2)

    t0 = time.perf_counter()
    if a.engine == "dask":
        from autopdm.pipeline import features_dask

        df = features_dask.run(paths)
        out["total_s"] = round(time.perf_counter() - t0, 2)
    else:
        trips = store.read_table("trips", paths)
        vehicles = store.read_table("vehicles", paths)
        se = store.read_table("service_events", paths)
        t1 = time.perf_counter()
        dtc = store.read_dtc_events(paths)
        t2 = time.perf_counter()
        df = build_features(trips, vehicles, se, dtc)
        t3 = time.perf_counter()
        store.write_table(df, "features", paths)
        t4 = time.perf_counter()
        out.update({"read_tables_s": round(t1 - t0, 2), "read_dtc_s": round(t2 - t1, 2), "build_s": round(t3 - t2, 2),
                    "write_s": round(t4 - t3, 2), "total_s": round(t4 - t0, 2), "trips": len(trips), "dtc_events": len(dtc)})
    out.update({"rows": len(df), "columns": df.shape[1], "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "target_s": TARGET_S, "ok": out["total_s"] < TARGET_S, "load_avg_1m_after": os.getloadavg()[0]})
    for k, v in out.items():
        print(f"{k:22s} {v}")
    paths.reports.mkdir(parents=True, exist_ok=True)
    (paths.reports / "bench_features.json").write_text(json.dumps(out, indent=2))
    if tmp is not None:
        tmp.cleanup()
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
