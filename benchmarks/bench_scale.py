"""Fleet scale: bounded memory on one machine (default), or both engines compared (--compare-engines).

    .venv/bin/python benchmarks/bench_scale.py                        # `make bench-scale`: 2,000 then 10,000 x 730
    .venv/bin/python benchmarks/bench_scale.py --sizes 2000 --train-components brake
    .venv/bin/python benchmarks/bench_scale.py --compare-engines --vehicles 2000 --days 730 --components brake

Default (bounded memory): for each fleet size, in a fresh home, `autopdm simulate`, `autopdm features`
and `autopdm train` run as the commands they are, each in its own process; wall time and that process's
peak RSS (`os.wait4`) are printed per step and written to <home>/bench_scale_bounded.json.

With --compare-engines:

Steps, each timed (wall clock) with the process's peak RSS: simulate + write the fleet; features with
the pandas engine; features with the Dask engine (partitioned by vehicle, same code path) and an
equality check of the two tables; training of each component with both engines on the same split
(pandas early-stopped; Dask with the pandas model's best iteration) and their held-out metrics.
Figures are printed and written to $AUTOPDM_HOME/reports/bench_scale.json. Runs under its own
AUTOPDM_HOME (default /tmp/autopdm-bench) so it never touches ./var.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import warnings
from pathlib import Path


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB


class Timer:
    def __init__(self, results: dict, key: str):
        self.results, self.key = results, key

    def __enter__(self):
        print(f"-- {self.key} ...", flush=True)
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        dt = time.perf_counter() - self.t0
        self.results[self.key] = {"seconds": round(dt, 2), "peak_rss_gb": round(rss_gb(), 2)}
        print(f"   {self.key}: {dt:,.1f} s (peak RSS so far {rss_gb():.1f} GB)", flush=True)


def _pandas_features(home: str, out: str) -> None:
    """The pandas engine in its own process, so its peak memory is its own."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from autopdm import store
    from autopdm.config import Paths
    from autopdm.pipeline.features import build_features

    paths = Paths.from_env(home)
    df = build_features(store.read_table("trips", paths), store.read_table("vehicles", paths),
                        store.read_table("service_events", paths), store.read_dtc_events(paths))
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), out)
    Path(home, "features_pandas.json").write_text(json.dumps({"rows": len(df), "peak_rss_gb": round(rss_gb(), 2)}))


def _step(cmd: list[str], env: dict) -> dict:
    """Run one command; its wall time and peak RSS (of the process and the children it waited for)."""
    import subprocess

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    dt = time.perf_counter() - t0
    tail = [ln for ln in out.splitlines() if ln.strip() and "━" not in ln][-3:]
    return {"seconds": round(dt, 1), "peak_rss_gb": round(ru.ru_maxrss / 1024**2, 2), "exit_code": proc.returncode,
            "output": tail}


def bounded(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="2000,10000", help="fleet sizes (vehicles), run one after the other")
    ap.add_argument("--days", type=int, default=730)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-components", default="all", help="all, or one component (brake, tire, battery)")
    ap.add_argument("--skip-training", action="store_true")
    ap.add_argument("--home", default=os.environ.get("AUTOPDM_BENCH_HOME", "/tmp/autopdm-bench"))
    a = ap.parse_args(argv)
    R: dict = {"days": a.days, "cpus": os.cpu_count(), "sizes": {}}
    for n in [int(x) for x in a.sizes.split(",") if x]:
        home = Path(a.home) / f"bounded-{n}"
        import shutil

        shutil.rmtree(home, ignore_errors=True)
        env = {**os.environ, "AUTOPDM_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true", "DO_NOT_TRACK": "true",
               "MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK": "true"}
        cli = [sys.executable, "-m", "autopdm.cli"]
        steps = {"simulate": cli + ["simulate", "--vehicles", str(n), "--days", str(a.days), "--seed", str(a.seed)],
                 "features": cli + ["features"]}
        if not a.skip_training:
            steps["train"] = cli + ["train", "--no-promote"] + (
                [] if a.train_components == "all" else ["--component", a.train_components])
        R["sizes"][n] = S = {}
        for name, cmd in steps.items():
            print(f"-- {n:,} vehicles x {a.days} days: {name} ...", flush=True)
            S[name] = _step(cmd, env)
            print(f"   {name}: {S[name]['seconds']:,.1f} s, peak RSS {S[name]['peak_rss_gb']:.2f} GB "
                  f"(exit {S[name]['exit_code']})", flush=True)
            if S[name]["exit_code"] != 0:
                print("\n".join(S[name]["output"]))
                break
        Path(a.home).mkdir(parents=True, exist_ok=True)
        (Path(a.home) / "bench_scale_bounded.json").write_text(json.dumps(R, indent=2))
    print(json.dumps(R, indent=2))
    return R


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare-engines", action="store_true")
    ap.add_argument("--vehicles", type=int, default=10_000)
    ap.add_argument("--days", type=int, default=730)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--vehicles-per-partition", type=int, default=250)
    ap.add_argument("--components", default="brake,tire,battery")
    ap.add_argument("--home", default=os.environ.get("AUTOPDM_BENCH_HOME", "/tmp/autopdm-bench"))
    ap.add_argument("--skip-pandas-features", action="store_true", help="(when it would not fit in memory)")
    ap.add_argument("--skip-training", action="store_true")
    ap.add_argument("--reuse", action="store_true", help="keep the fleet already under --home (skip simulate)")
    a = ap.parse_args(argv)

    warnings.filterwarnings("ignore")
    os.environ["AUTOPDM_HOME"] = a.home
    from autopdm.config import Paths, quiet_telemetry

    quiet_telemetry()
    import pandas as pd

    from autopdm.pipeline import features_dask
    from autopdm import store
    from autopdm.pipeline.features import build_features
    from autopdm.sim.fleet import simulate_fleet, write_fleet

    paths = Paths.from_env(a.home).ensure()
    R: dict = {"vehicles": a.vehicles, "days": a.days, "workers": a.workers, "cpus": os.cpu_count(), "steps": {}}
    S = R["steps"]
    if a.reuse and paths.table("trips").exists():
        print("-- reusing the fleet under", paths.home)
    else:
        with Timer(S, "simulate"):
            fleet = simulate_fleet(a.vehicles, a.days, seed=a.seed)
        R["trips"] = len(fleet.trips)
        R["service_events"] = len(fleet.service_events)
        with Timer(S, "write_fleet"):
            write_fleet(fleet, paths)
        del fleet
    R["trips_parquet_mb"] = round(paths.table("trips").stat().st_size / 1e6, 1)

    pdf = None
    if not a.skip_pandas_features:
        import multiprocessing as mp

        out_pd = paths.home / "features_pandas.parquet"
        with Timer(S, "features_pandas"):
            proc = mp.get_context("spawn").Process(target=_pandas_features, args=(str(paths.home), str(out_pd)))
            proc.start()
            proc.join()
        S["features_pandas"]["exit_code"] = proc.exitcode
        if proc.exitcode == 0:
            S["features_pandas"]["peak_rss_gb"] = json.loads((paths.home / "features_pandas.json").read_text())["peak_rss_gb"]
            pdf = pd.read_parquet(out_pd)
        else:
            print(f"   pandas engine failed (exit code {proc.exitcode}; -9 = killed, out of memory)")

    with features_dask.local_client(n_workers=a.workers, processes=True, memory_limit=None) as client:
        with Timer(S, "features_dask"):
            ddf = features_dask.run(paths, client=client, vehicles_per_partition=a.vehicles_per_partition)
        R["feature_rows"], R["feature_columns"] = ddf.shape
        R["features_parquet_mb"] = round(paths.table("features").stat().st_size / 1e6, 1)
        if pdf is not None:
            a_ = pdf.sort_values(["vehicle_id", "date"], kind="stable").reset_index(drop=True)
            try:
                pd.testing.assert_frame_equal(a_, ddf)
                R["features_equal"] = True
            except AssertionError as exc:
                R["features_equal"] = False
                R["features_diff"] = str(exc)[:500]
            print(f"   dask features == pandas features: {R['features_equal']}")
            del a_, pdf

        if not a.skip_training:
            from autopdm.modeling import train_dask

            comps = [c for c in a.components.split(",") if c]
            with Timer(S, "training_both_engines"):
                cmp = train_dask.compare_engines(ddf, comps, seed=a.seed, client=client)
            R["training"] = cmp
            for comp, r in cmp.items():
                gaps = {k: round(train_dask.relative_gap(r["pandas"][k], r["dask"][k]), 4)
                        for k in ("pr_auc", "brier", "ew_recall", "roc_auc") if k in r["pandas"] and k in r["dask"]}
                r["relative_gap"] = gaps
                print(f"   {comp}: rounds {r['rounds']}; pandas {r['seconds']['pandas']:.1f} s, dask {r['seconds']['dask']:.1f} s; "
                      + ", ".join(f"{k} {r['pandas'][k]:.4f} vs {r['dask'][k]:.4f} ({gaps[k]:.1%})" for k in gaps))

    out = paths.reports / "bench_scale.json"
    out.write_text(json.dumps(R, indent=2, default=float))
    print(json.dumps(R, indent=2, default=float))
    print(f"written {out}")
    return R


if __name__ == "__main__":  # LocalCluster with processes needs the guard
    if "--compare-engines" in sys.argv[1:]:
        sys.exit(0 if main() else 1)
    sys.exit(0 if bounded() else 1)
