"""CAN log import speed: autopdm's import vs plain python-can iteration, per log format.

Generates logs of OBD-II tester traffic (requests, single- and multi-frame answers from two
ECUs, flow control, a VIN, refused requests, unrelated frames, error frames) with python-can's
own writers — 1M frames of Vector ASC and candump .log (autopdm's fast path), a smaller number
in the formats autopdm reads through python-can — then times on the same file:

  plain   for msg in can.LogReader(path): pass
  decode  autopdm: read + ISO-TP/OBD decode + sample assembly (what the import does per frame)
  import  decode + spool (fsync) + Parquet store, i.e. the whole `autopdm ingest can --log`

and prints frames/s for each and the ratio decode/plain and import/plain (target ≥ 1 on the
fast-path formats; ~1 on the others, which python-can itself reads).

    .venv/bin/python benchmarks/bench_can_import.py [--frames 1000000] [--other-frames 200000] [--dir DIR]
"""

from __future__ import annotations

import argparse
import logging
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


FAST_PATH = (".asc", ".log", ".asc.gz", ".log.gz")
PYTHON_CAN = (".blf", ".trc", ".csv", ".mf4")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=1_000_000, help="frames of the fast-path logs")
    ap.add_argument("--other-frames", type=int, default=200_000, help="frames of the logs python-can reads")
    ap.add_argument("--dir", default=None)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    logging.getLogger("can.io.trc").setLevel(logging.ERROR)  # "TRCWriter: Logging error frames is not implemented"
    work = Path(args.dir or tempfile.mkdtemp(prefix="autopdm-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"OBD-II tester traffic; python-can {can.__version__}; files in {work}")
    print(f"{'file':<10} {'frames':>10} {'plain LogReader':>18} {'autopdm decode':>18} {'autopdm import':>18} "
          f"{'decode/plain':>13} {'import/plain':>13}  reader")
    for suffix in FAST_PATH + PYTHON_CAN:
        n = args.frames if suffix in FAST_PATH else args.other_frames
        path = work / f"obd_{n}{suffix}"
        if not path.exists():
            g = generate(path, n)
            print(f"  (wrote {path.name}: {path.stat().st_size / 1e6:.0f} MB in {g:.1f}s with python-can's writer)")
        n_plain, t_plain = plain(path)
        rep_d = can_ingest.import_log(path, Paths(work / "home-decode"), write=False)
        home = Paths(work / f"home{suffix}").ensure()
        rep_i = can_ingest.import_log(path, home)
        assert rep_d.frames == n_plain == rep_i.frames, (rep_d.frames, n_plain, rep_i.frames)
        fp, fd, fi = n_plain / t_plain, rep_d.frames / rep_d.seconds, rep_i.frames / rep_i.seconds
        print(f"{suffix:<10} {n_plain:>10,} {fp:>14,.0f} f/s {fd:>14,.0f} f/s {fi:>14,.0f} f/s {fd / fp:>13.2f} "
              f"{fi / fp:>13.2f}  {rep_i.reader}")
    if not args.keep and args.dir is None:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("AUTOPDM_HOME", tempfile.mkdtemp(prefix="autopdm-bench-home-"))
    main()
