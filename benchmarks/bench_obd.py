"""OBD-II recording rate per adapter behaviour: autopdm's recorder vs the naive python-OBD loop.

For each behaviour of the simulated ELM327 (a well-behaved adapter; an ECU that answers only the
first PID of a multi-PID request; one that says NO DATA to any multi-PID request; a slow ECU;
clone adapters that keep echoing, drop spaces, print SEARCHING... before every answer, or answer
the first requests with BUS INIT: ...ERROR), both run against the same simulator over a pty with
a bus round trip of `--latency` seconds per request:

  naive     python-OBD as its README shows it: connect, then query RPM, SPEED, … one stock
            command at a time; a sample is a pass over the PIDs with at least one answer
  autopdm   `ObdRecorder` (probe, plan, several PIDs per request where the ECU allows), rates
            from its first stored sample to its last

and prints samples/s and PID values/s for each (a sample is one row of the samples table).

    .venv/bin/python benchmarks/bench_obd.py [--seconds 5] [--latency 0.01]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import obd

from autopdm import store
from autopdm.config import Paths
from autopdm.ingest.obd import ObdRecorder
from autopdm.sim.elm327 import Elm327Simulator

BEHAVIOURS = {
    "well-behaved": {},
    "multi-PID: first PID only": {"multi_pid": "first"},
    "multi-PID: NO DATA": {"multi_pid": "none"},
    "slow ECU (300 ms)": {"ecu_delay": 0.3},
    "clone: echo stays on": {"quirks": ["echo"]},
    "clone: no spaces": {"quirks": ["no_spaces"]},
    "clone: SEARCHING... always": {"quirks": ["searching"]},
    "clone: BUS INIT: ...ERROR first": {"quirks": ["bus_init"]},
}
STOCK = ("RPM", "SPEED", "ENGINE_LOAD", "COOLANT_TEMP", "INTAKE_TEMP", "THROTTLE_POS", "FUEL_LEVEL",
         "DISTANCE_SINCE_DTC_CLEAR", "CONTROL_MODULE_VOLTAGE", "AMBIANT_AIR_TEMP")


def naive(port: str, seconds: float) -> tuple[float, float]:
    """samples/s, PID values/s of the one-PID-at-a-time loop (0, 0 when python-OBD cannot connect)."""
    conn = obd.OBD(port, fast=True, timeout=0.5, protocol="6")
    samples = values = 0
    t0 = time.monotonic()
    try:
        if conn.status() != obd.OBDStatus.CAR_CONNECTED:
            return 0.0, 0.0
        while time.monotonic() - t0 < seconds:
            got = sum(not conn.query(obd.commands[name], force=True).is_null() for name in STOCK)
            values += got
            samples += got > 0
    finally:
        conn.close()
    dt = time.monotonic() - t0
    return samples / dt, values / dt


def recorder(port: str, seconds: float, home: Path) -> tuple[float, float, str]:
    """Steady-state rates: from the first stored sample to the last (connecting and probing,
    ~1-5 s with a slow ECU, are not part of the naive loop's time either)."""
    paths = Paths.from_env(home).ensure()
    rec = ObdRecorder(port, paths, vehicle_id="KMHDH41EXFU123456", duration=seconds, protocol="6", interval=0.0,
                      dtc_interval=3600)
    stats = rec.run()
    ts = store.read_samples(paths)["ts"]
    if len(ts) < 2:
        return 0.0, 0.0, stats.capabilities
    dt = (ts.max() - ts.min()).total_seconds()
    return (len(ts) - 1) / dt, stats.pid_values * (len(ts) - 1) / len(ts) / dt, stats.capabilities


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--latency", type=float, default=0.01, help="bus round trip per request (s)")
    args = ap.parse_args()
    logging.getLogger("obd").setLevel(logging.CRITICAL + 1)
    work = Path(tempfile.mkdtemp(prefix="autopdm-bench-obd-"))
    print(f"simulated ELM327, {args.latency * 1000:.0f} ms per request, {args.seconds:.0f} s per run; python-OBD {obd.__version__}")
    print(f"{'adapter behaviour':<33} {'naive samples/s':>16} {'autopdm samples/s':>18} {'ratio':>7} "
          f"{'naive values/s':>15} {'autopdm values/s':>17}  autopdm found")
    for i, (name, opts) in enumerate(BEHAVIOURS.items()):
        with Elm327Simulator(latency=args.latency, **opts) as sim:
            ns, nv = naive(sim.port, args.seconds)
        with Elm327Simulator(latency=args.latency, **opts) as sim:
            rs, rv, found = recorder(sim.port, args.seconds, work / f"home{i}")
        ratio = f"{rs / ns:.1f}x" if ns else "-"
        print(f"{name:<33} {ns:>16.1f} {rs:>18.1f} {ratio:>7} {nv:>15.1f} {rv:>17.1f}  {found}")


if __name__ == "__main__":
    main()
