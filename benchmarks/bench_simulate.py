"""Benchmark: simulate 1,000 vehicles × 730 days (target < 2 min and < 4 GB peak RSS on 2 cores).

Usage: python benchmarks/bench_simulate.py [--vehicles N] [--days D] [--seed S] [--write]
Prints wall time per stage, total wall time and peak RSS. The variant library is built cold
(its disk cache is disabled) so the figure includes it. --write also times write_fleet into a temp dir.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

os.environ["AUTOPDM_CACHE"] = "0"


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 1024.0 / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vehicles", type=int, default=1000)
    ap.add_argument("--days", type=int, default=730)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--raw-vehicles", type=int, default=0)
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args()

    t_import = time.perf_counter()
    from autopdm.sim.fleet import simulate_fleet, write_fleet
    from autopdm.config import Paths

    t0 = time.perf_counter()
    last = [t0]

    def progress(stage: str, i: int, n: int) -> None:
        now = time.perf_counter()
        print(f"  [{i}/{n}] {stage:48s} +{now - last[0]:6.1f}s", flush=True)
        last[0] = now

    fleet = simulate_fleet(a.vehicles, a.days, a.seed, raw_vehicles=a.raw_vehicles, progress=progress)
    wall = time.perf_counter() - t0
    print(f"simulate_fleet({a.vehicles} vehicles × {a.days} days): {wall:.1f} s wall "
          f"(import {t0 - t_import:.1f} s), peak RSS {peak_rss_mb():,.0f} MB")
    print(f"  {len(fleet.trips):,} reported trips, {len(fleet.service_events):,} service events, "
          f"{len(fleet.true_needs):,} true needs, {len(fleet.dtc_events):,} DTC events, {len(fleet.samples):,} samples")
    if a.write:
        with tempfile.TemporaryDirectory() as d:
            t1 = time.perf_counter()
            write_fleet(fleet, Paths.from_env(d))
            print(f"write_fleet: {time.perf_counter() - t1:.1f} s, peak RSS {peak_rss_mb():,.0f} MB")
    ok = wall < 120 and peak_rss_mb() < 4096
    print("PASS" if ok else "FAIL", "(target < 120 s and < 4096 MB)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
