"""Records in: `autopdm ingest crm` on a 100k-row CRM export, and POST /records latency for 1,000-row batches.

The export is written in the example CRM's own format (examples/crm/map.yaml: its column names,
vocabularies and day-first dates; vehicles and service history as CSV, inspections as JSON Lines), with
synthetic rows: 5,000 vehicles, 35,000 service events, 60,000 inspections. Prints rows/s of the
command (a real process, start-up included) for the first import and for the same export again, then
starts `bentoml serve` on that home and times 1,000-row batches of new inspections, their replays,
and 1,000-row batches of changed vehicles.

    .venv/bin/python benchmarks/bench_crm_import.py [--rows 100000] [--batches 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MAP = ROOT / "examples" / "crm" / "map.yaml"
AUTOPDM = str(Path(sys.executable).parent / "autopdm")
VIN_CHARS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
TOKEN = "bench-token"


def vins(n: int, rng) -> list[str]:
    return ["WVWZZZ" + "".join(rng.choice(list(VIN_CHARS), 11)) for _ in range(n)]


def write_export(out: Path, rows: int, rng) -> dict[str, Path]:
    n_v, n_s = rows // 20, rows * 35 // 100
    n_i = rows - n_v - n_s
    v = vins(n_v, rng)
    chan = rng.choice(["Text", "E-mail", "Call", "WeChat"], n_v)
    with open(out / "vehicles.csv", "w") as fh:
        fh.write("VIN,Make,Model,Year,Body,Kerb weight (kg),First registered,Customer no.,Contact preference,Branch,Notes\n")
        for i in range(n_v):
            fh.write(f"{v[i]},Volkswagen,Golf,2019,Compact,1295,02/05/2019,C{i:07d},{chan[i]},BR-{i % 7},\n")
    car = rng.integers(0, n_v, n_s)
    day = rng.integers(1, 28, n_s)
    with open(out / "service_history.csv", "w") as fh:
        fh.write("Job no.,VIN,Date,Mileage (km),System,Work done,Work order ref\n")
        systems, works = ["Brakes", "Tyres", "Battery", "Service"], ["Replaced", "Checked", "Repaired"]
        for k in range(n_s):
            fh.write(f"J-{k:08d},{v[car[k]]},{day[k]:02d}/0{1 + k % 9}/2025,{40000 + k % 90000},"
                     f"{systems[k % 4]},{works[k % 3]},\n")
    car = rng.integers(0, n_v, n_i)
    with open(out / "inspections.jsonl", "w") as fh:
        for k in range(n_i):
            fh.write(json.dumps({"check_id": f"DVI-{k}", "vin": v[car[k]], "performed_at": f"2025-0{1 + k % 9}-15T10:00:00+01:00",
                                 "mileage_km": 40000 + k % 90000, "system": "Brakes", "check": "Pad thickness",
                                 "position": "Front axle" if k % 2 else "Rear axle", "reading": round(2 + (k % 90) / 10, 1),
                                 "result": "Green"}) + "\n")
    return {"--vehicles": out / "vehicles.csv", "--service-events": out / "service_history.csv",
            "--inspections": out / "inspections.jsonl"}


def cli_import(files: dict[str, Path], env: dict) -> float:
    args = [x for k, f in files.items() for x in (k, str(f))]
    t = time.perf_counter()
    r = subprocess.run([AUTOPDM, "ingest", "crm", "--map", str(MAP), *args], env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(r.stderr[-3000:])
    return dt


def serve(env: dict, log: Path):
    from autopdm.localproc import free_port, start, wait_http

    port = free_port()
    proc = start([sys.executable, "-m", "bentoml", "serve", "autopdm.serving.service:Autopdm", "--host", "127.0.0.1",
                  "--port", str(port)], {**env, "AUTOPDM_API_TOKEN": TOKEN, "AUTOPDM_RELOAD_POLL_S": "0"}, log)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/livez", 120, proc, log)
    return proc, url


def pct(xs, q) -> float:
    return round(float(np.percentile(np.asarray(xs) * 1000, q)), 1)


def time_posts(client: httpx.Client, url: str, bodies: list[dict]) -> list[float]:
    out = []
    for b in bodies:
        t = time.perf_counter()
        r = client.post(url + "/records", json=b, headers={"Authorization": f"Bearer {TOKEN}"})
        out.append(time.perf_counter() - t)
        if r.status_code != 200:
            raise SystemExit(f"/records {r.status_code}: {r.text[:500]}")
    return out


def bench_api(env: dict, home: Path, batches: int) -> None:
    from autopdm import store
    from autopdm.config import Paths
    from autopdm.localproc import stop

    p = Paths(home)
    known = list(store.read_table("vehicles", p)["vehicle_id"])
    n_ins = len(store.read_table("inspections", p))
    new = [{"batch_id": f"bench-ins-{b}", "inspections": [
        {"inspection_id": f"API-{b}-{i}", "vehicle_id": known[(b * 1000 + i) % len(known)], "date": "2026-01-15",
         "odometer_km": 60000 + i, "component": "tire", "position": "fl", "measurement": "tread_mm", "value": 4.2}
        for i in range(1000)]} for b in range(batches)]
    changed = [{"batch_id": f"bench-veh-{b}", "vehicles": [
        {"vehicle_id": known[(b * 1000 + i) % len(known)], "make": "Volkswagen", "customer_id": f"C-B{b}-{i}",
         "preferred_channel": "email"} for i in range(1000)]} for b in range(batches)]
    proc, url = serve(env, home / "serve.log")
    try:
        with httpx.Client(timeout=120) as c:
            time_posts(c, url, [{"batch_id": "warm", "vehicles": [{"vehicle_id": known[0], "preferred_channel": "sms"}]}])
            first = time_posts(c, url, new)
            replay = time_posts(c, url, new)
            veh = time_posts(c, url, changed)
    finally:
        stop(proc, timeout=15)
    print(f"POST /records, 1,000 new inspections per batch into a table of {n_ins:,}+ rows: "
          f"p50 {pct(first, 50)} ms, p95 {pct(first, 95)} ms ({batches} batches, one client)")
    print(f"  the same batches replayed (answered from the ledger): p50 {pct(replay, 50)} ms, p95 {pct(replay, 95)} ms")
    print(f"  1,000 changed vehicles per batch ({len(known):,} vehicles stored): p50 {pct(veh, 50)} ms, p95 {pct(veh, 95)} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--batches", type=int, default=20)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = write_export(tmp, a.rows, rng)
        home = tmp / "var"
        env = {**os.environ, "AUTOPDM_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true", "DO_NOT_TRACK": "true"}
        env.pop("MLFLOW_TRACKING_URI", None)
        size = sum(f.stat().st_size for f in files.values()) / 2**20
        first = cli_import(files, env)
        again = cli_import(files, env)
        print(f"autopdm ingest crm, {a.rows:,} rows ({size:.1f} MiB: CSV + JSON Lines, mapped with examples/crm/map.yaml)")
        print(f"  first import: {first:.2f} s = {a.rows / first:,.0f} rows/s (process start-up included)")
        print(f"  the same export again (nothing changes): {again:.2f} s = {a.rows / again:,.0f} rows/s")
        bench_api(env, home, a.batches)


if __name__ == "__main__":
    main()
