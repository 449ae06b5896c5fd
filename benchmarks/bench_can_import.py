"""CAN log import speed: autopdm's import vs plain python-can iteration.

Generates a 1M-frame Vector ASC and candump .log of OBD-II tester traffic (requests, single- and
multi-frame answers from two ECUs, flow control, a VIN, refused requests, unrelated frames)
with python-can's own writers, then times on the same file:

  plain   for msg in can.LogReader(path): pass
  decode  autopdm: read + ISO-TP/OBD decode + sample assembly (what the import does per frame)
  import  decode + spool (fsync) + Parquet store, i.e. the whole `autopdm ingest can --log`

and prints frames/s for each and the ratio decode/plain and import/plain (target ≥ 1).

    .venv/bin/python benchmarks/bench_can_import.py [--frames 1000000] [--dir /tmp/autopdm-bench]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import can

from autopdm.config import Paths
from autopdm.ingest import can as can_ingest
from autopdm.sim.ecu import obd_traffic


def generate(path: Path, n: int) -> float:
    t0 = time.perf_counter()
    with can.Logger(str(path)) as lg:
        for m in obd_traffic(n, error_every=500):
            lg.on_message_received(m)
    return time.perf_counter() - t0


def plain(path: Path) -> tuple[int, float]:
    t0 = time.perf_counter()
    n = 0
    for _ in can.LogReader(path):
        n += 1
    return n, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="autopdm-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"{args.frames:,} frames of OBD-II tester traffic; python-can {can.__version__}; files in {work}")
    print(f"{'file':<12} {'plain LogReader':>18} {'autopdm decode':>18} {'autopdm import':>18} {'decode/plain':>13} {'import/plain':>13}")
    for suffix in (".asc", ".log"):
        path = work / f"obd_1m{suffix}"
        if not path.exists():
            g = generate(path, args.frames)
            print(f"  (wrote {path.name}: {path.stat().st_size / 1e6:.0f} MB in {g:.1f}s with python-can's writer)")
        n_plain, t_plain = plain(path)
        rep_d = can_ingest.import_log(path, Paths(work / "home-decode"), write=False)
        home = Paths(work / "home").ensure()
        rep_i = can_ingest.import_log(path, home)
        assert rep_d.frames == n_plain == rep_i.frames, (rep_d.frames, n_plain, rep_i.frames)
        fp, fd, fi = n_plain / t_plain, rep_d.frames / rep_d.seconds, rep_i.frames / rep_i.seconds
        print(f"{suffix:<12} {fp:>14,.0f} f/s {fd:>14,.0f} f/s {fi:>14,.0f} f/s {fd / fp:>13.2f} {fi / fp:>13.2f}")
        print(f"  decoded {rep_i.decoded:,}, skipped {rep_i.skipped:,}, error frames {rep_i.error_frames:,}, "
              f"negative {rep_i.negative_responses:,}, OBD answers {rep_i.messages:,}, values {rep_i.values:,}, "
              f"samples {rep_i.samples:,} in {rep_i.batches} batches, VIN {rep_i.vehicle_id}")
    if not args.keep and args.dir is None:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("AUTOPDM_HOME", tempfile.mkdtemp(prefix="autopdm-bench-home-"))
    main()
