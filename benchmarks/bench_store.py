"""The telemetry store before and after `autopdm store compact`, on at least 100k small files.

    .venv/bin/python benchmarks/bench_store.py                       # 200 vehicles x 250 days x 2 batches = 100k files
    .venv/bin/python benchmarks/bench_store.py --vehicles 50 --days 100

Builds the store directly (pyarrow, the layout `store.append` writes: one file per batch, vehicle and
day, ~20 readings each) rather than through validation, so that 100k files take a minute or two.
Then times reading one vehicle's last 90 days (`store.read_samples(vehicle_ids=..., start=...)`) and the
whole table, before and after compaction, and the compaction itself; also main's old reader (one
dataset over the whole tree, which lists every file for one vehicle) for comparison. Prints the figures
and writes them to <home>/bench_store.json. Runs under its own home (default /tmp/autopdm-bench-store).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path


def _timed(fn, repeat: int = 3):
    """Median wall time of `repeat` calls (the first call pays the page cache)."""
    out, times = None, []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def build(root: Path, vehicles: int, days: int, batches: int, rows: int) -> int:
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from autopdm import schemas

    rng = np.random.default_rng(0)
    base = schemas.to_arrow(pd.DataFrame({
        "vehicle_id": ["X" * 17] * rows, "ts": pd.date_range("2026-01-01", periods=rows, freq="30s", tz="UTC"),
        "source": "obd", "speed_kph": rng.uniform(0, 120, rows), "rpm": rng.uniform(800, 3000, rows)}).reindex(
        columns=[f.name for f in schemas.SAMPLES]), "samples")
    day0 = np.datetime64("2026-01-01T08:00", "ms")
    n = 0
    for v in range(vehicles):
        vin = f"BENCH{v:012d}"
        vid = pa.array([vin] * rows)
        for d in range(days):
            day = day0 + np.timedelta64(d, "D")
            ddir = root / f"vehicle_id={vin}" / f"date={str(day)[:10]}"
            ddir.mkdir(parents=True, exist_ok=True)
            for b in range(batches):
                ts = pa.array(day + np.timedelta64(3 * b, "h") + np.arange(rows) * np.timedelta64(30, "s"),
                              type=schemas.TS)
                t = base.set_column(0, "vehicle_id", vid).set_column(1, "ts", ts)
                pq.write_table(t, ddir / f"part-{v:05d}{d:04d}{b:02d}.parquet", compression="zstd")
                n += 1
    return n


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vehicles", type=int, default=200)
    ap.add_argument("--days", type=int, default=250)
    ap.add_argument("--batches", type=int, default=2, help="files per vehicle-day")
    ap.add_argument("--rows", type=int, default=20, help="readings per file")
    ap.add_argument("--home", default=os.environ.get("AUTOPDM_BENCH_HOME", "/tmp/autopdm-bench-store"))
    ap.add_argument("--reuse", action="store_true", help="keep an uncompacted store built earlier under --home")
    ap.add_argument("--whole-table", action="store_true",
                    help="also time main's whole-tree reader and a read of every vehicle (slow and memory-hungry "
                         "before compaction: 100k fragments in one pyarrow dataset grew past 7 GB)")
    a = ap.parse_args(argv)

    import pandas as pd
    import pyarrow as pa
    import pyarrow.dataset as ds

    from autopdm import compact, schemas, store
    from autopdm.config import Paths

    R: dict = {"vehicles": a.vehicles, "days": a.days, "files_per_vehicle_day": a.batches, "rows_per_file": a.rows}
    paths = Paths.from_env(a.home)
    if a.reuse and paths.samples.exists() and not any(paths.samples.glob("*/compact-*.parquet")):
        R["files"] = sum(1 for _ in paths.samples.rglob("*.parquet"))
        print(f"reusing {R['files']:,} files under {paths.samples}", flush=True)
    else:
        shutil.rmtree(a.home, ignore_errors=True)
        paths.ensure()
        t0 = time.perf_counter()
        R["files"] = build(paths.samples, a.vehicles, a.days, a.batches, a.rows)
        R["build_s"] = round(time.perf_counter() - t0, 1)
        print(f"built {R['files']:,} files in {R['build_s']} s under {paths.samples}", flush=True)

    vin = f"BENCH{a.vehicles // 2:012d}"
    last = pd.Timestamp("2026-01-01") + pd.Timedelta(days=a.days)
    start = last - pd.Timedelta(days=90)

    def one():
        return store.read_samples(paths, vehicle_ids=[vin], start=start)

    def whole_tree_reader():  # main's reader: one hive dataset over the whole tree, then the filter
        dset = ds.dataset(paths.samples, format="parquet", partitioning="hive",
                          schema=schemas.SAMPLES.append(pa.field("date", pa.string())), exclude_invalid_files=True)
        return dset.to_table(filter=(ds.field("vehicle_id") == vin) & (ds.field("ts") >= start.tz_localize("UTC")),
                             columns=[f.name for f in schemas.SAMPLES]).to_pandas()

    def everything():
        return store.read_samples(paths)

    fig = {}
    fig["one_vehicle_90d_before_s"], ref_one = _timed(one)
    print(f"before: one vehicle, 90 days ({len(ref_one):,} rows) {fig['one_vehicle_90d_before_s']:.3f} s", flush=True)
    if a.whole_table:
        fig["one_vehicle_90d_main_reader_before_s"], _ = _timed(whole_tree_reader, repeat=1)
        fig["all_vehicles_before_s"], ref_all = _timed(everything, repeat=1)
        print(f"        main's whole-tree reader {fig['one_vehicle_90d_main_reader_before_s']:.1f} s; "
              f"whole table ({len(ref_all):,} rows) {fig['all_vehicles_before_s']:.1f} s", flush=True)

    t0 = time.perf_counter()
    res = compact.compact(paths)
    fig["compact_s"] = round(time.perf_counter() - t0, 1)
    R["files_after"] = sum(1 for _ in paths.samples.rglob("*.parquet"))
    print(f"compacted {res.files_before:,} files of {res.vehicles} vehicles in {fig['compact_s']} s; "
          f"{R['files_after']:,} files now", flush=True)

    fig["one_vehicle_90d_after_s"], got_one = _timed(one)
    pd.testing.assert_frame_equal(ref_one, got_one)
    fig["all_vehicles_after_s"], got_all = _timed(everything, repeat=1)
    if a.whole_table:
        fig["one_vehicle_90d_main_reader_after_s"], _ = _timed(whole_tree_reader)
        pd.testing.assert_frame_equal(ref_all, got_all)
    R["reads_identical"] = True
    print(f"after:  one vehicle, 90 days {fig['one_vehicle_90d_after_s']:.3f} s (identical rows); "
          f"whole table ({len(got_all):,} rows) {fig['all_vehicles_after_s']:.1f} s", flush=True)
    R["seconds"] = {k: round(v, 3) for k, v in fig.items()}
    Path(a.home, "bench_store.json").write_text(json.dumps(R, indent=2))
    print(json.dumps(R, indent=2))
    return R


if __name__ == "__main__":
    main()
