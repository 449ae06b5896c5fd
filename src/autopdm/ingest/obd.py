"""Live recording from an ELM327 dongle with python-OBD → spool → store.

Built to be left in a car for weeks:

* python-OBD's ``status()`` does not change when the ignition goes off or the dongle is pulled
  (only serial errors flip it), so the recorder watches for itself: a polling cycle in which no
  PID answers means the ignition is off (the adapter still answers ``ATRV``: resting battery
  voltage, which is recorded, it is what the battery model needs before the next crank); a
  serial error or an adapter voltage below 6 V means the dongle is out. Either closes the trip
  (the batch is committed and the store flushed); then it reconnects with backoff and resumes.
* Every batch (``batch_interval`` seconds of samples) is appended to the spool and fsynced before
  anything else happens to it; ``kill -9`` loses at most the batch being read.
* As fast as the adapter allows: python-OBD fast mode (response-count digit, bare CR to repeat),
  supported-PID check so that no request is wasted on an unsupported PID, and on CAN up to six
  PIDs per mode 01 request (J1979 allows it; checked per ECU on the first answer, with a fallback
  to single-PID requests for PIDs the ECU leaves out).
* The VIN comes from mode 09 PID 02; without a valid one the recording goes under
  ``--vehicle-id`` or does not start.

python-OBD is GPL-2.0-only, hence an optional dependency (``pip install autopdm[obd]``).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from autopdm.config import Paths
from autopdm.ingest import spool
from autopdm.ingest.codecs.obdcodec import (PIDS, is_vin, clean_vin, decode_dtcs, decode_mode01, decode_vin, is_negative, parse_bitmap)

try:  # optional, GPL
    import obd as _obd
    from obd import OBDCommand, OBDStatus
    from obd.protocols import ECU
except ImportError:  # pragma: no cover
    _obd = None

log = logging.getLogger(__name__)

CAN_PROTOCOLS = ("6", "7", "8", "9")
MAX_PIDS_PER_REQUEST = 6
NULL_CYCLES_IGNITION_OFF = 3   # consecutive cycles without any PID answer
LOW_ADAPTER_VOLTAGE = 6.0      # below this the dongle is not powered by a car


class VinError(RuntimeError):
    pass


def _require_obd() -> None:
    if _obd is None:
        raise RuntimeError("python-OBD is not installed: pip install 'autopdm[obd]'")


# -- commands python-OBD lacks or decodes wrongly (7F negative answers) -------------------------
_negatives = {"count": 0}


def _payload(m) -> bytes:
    return bytes(m.data) if getattr(m, "data", None) else b""


def _mode01_decoder(messages):
    for m in messages:
        p = _payload(m)
        if is_negative(p):
            _negatives["count"] += 1
            continue
        d = decode_mode01(p)
        if d is not None:
            return d
    return None


def mode01_command(pids: list[int]) -> "OBDCommand":
    """One request for several mode 01 PIDs (one PID is just the 1-element case)."""
    hexpids = "".join(f"{p:02X}" for p in pids)
    return OBDCommand(f"AUTOPDM_01_{hexpids}", f"mode 01 PIDs {hexpids}", b"01" + hexpids.encode(), 0,
                      _mode01_decoder, ECU.ENGINE, True)


def _dtc_decoder(messages):
    codes = []
    for m in messages:
        p = _payload(m)
        if is_negative(p):
            _negatives["count"] += 1
            continue
        codes += decode_dtcs(p)
    return sorted(set(codes))


def _vin_decoder(messages):
    for m in messages:
        v = decode_vin(_payload(m))
        if v:
            return v
    return None


if _obd is not None:
    ODOMETER = OBDCommand("ODOMETER", "Odometer (PID A6)", b"01A6", 0, _mode01_decoder, ECU.ENGINE, True)
    VIN = OBDCommand("AUTOPDM_VIN", "VIN (mode 09 PID 02)", b"0902", 0, _vin_decoder, ECU.ALL_KNOWN, True)
    STORED_DTC = OBDCommand("AUTOPDM_03", "stored DTCs", b"03", 0, _dtc_decoder, ECU.ALL_KNOWN, False)
    PENDING_DTC = OBDCommand("AUTOPDM_07", "pending DTCs", b"07", 0, _dtc_decoder, ECU.ALL_KNOWN, False)


def _bitmap_decoder(ms):
    return bytes(ms[0].data) if ms and ms[0].data else None


def supported_pids(conn, value=None) -> set[int]:
    """Mode 01 PIDs the car supports. python-OBD's table ends before 0x60, so it never learns of
    PIDs 61-C0 (odometer A6): read the 41-60 bitmap ourselves and follow the "next range" bits."""
    value = value or (lambda c: (lambda r: None if r.is_null() else r.value)(conn.query(c, force=True)))
    sup = {c.pid for c in conn.supported_commands if c.mode == 1 and c.pid is not None}
    base = 0x40
    while base <= 0xE0 and (base in sup or base == 0x40 and 0x20 in sup):
        cmd = OBDCommand(f"PIDS_{base:02X}", "supported PIDs", f"01{base:02X}".encode(), 0, _bitmap_decoder, ECU.ENGINE, True)
        raw = value(cmd)
        if not raw or len(raw) < 6 or raw[0] != 0x41:
            break
        sup |= parse_bitmap(raw[2:6], base)
        base += 0x20
    return sup


@dataclass
class RecorderStats:
    state: str = "starting"
    vehicle_id: str | None = None
    protocol: str = ""
    samples: int = 0
    batches: int = 0
    queries: int = 0
    pid_values: int = 0
    negative_responses: int = 0
    dtc_events: int = 0
    trips_closed: int = 0
    reconnects: int = 0
    errors: int = 0
    started: float = field(default_factory=time.monotonic)
    last_values: dict = field(default_factory=dict)
    last_batch_id: str | None = None
    plan: list[list[int]] = field(default_factory=list)
    rate_samples: float = 0.0
    rate_queries: float = 0.0
    events: list[str] = field(default_factory=list)

    def event(self, msg: str) -> None:
        self.events.append(f"{datetime.now(timezone.utc):%H:%M:%S} {msg}")
        del self.events[:-8]
        log.info(msg)


class ObdRecorder:
    def __init__(self, port: str, paths: Paths, vehicle_id: str | None = None, duration: float | None = None, *,
                 interval: float = 0.1, batch_interval: float = 1.0, dtc_interval: float = 60.0,
                 store_interval: float = 30.0, baudrate: int | None = None, protocol: str | None = None,
                 multi_pid: bool = True, max_backoff: float = 30.0, off_poll: float = 2.0,
                 on_batch: Callable[[str, int], None] | None = None):
        _require_obd()
        if vehicle_id is not None and not is_vin(vehicle_id.upper()):
            raise VinError(f"--vehicle-id {vehicle_id!r} is not a 17-character VIN (A-Z without I/O/Q, 0-9)")
        self.port = port
        self.paths = paths
        self.fallback_vin = vehicle_id.upper() if vehicle_id else None
        self.duration = duration
        self.interval = interval
        self.batch_interval = batch_interval
        self.dtc_interval = dtc_interval
        self.store_interval = store_interval
        self.baudrate = baudrate
        self.protocol = protocol
        self.multi_pid = multi_pid
        self.max_backoff = max_backoff
        self.off_poll = off_poll
        self.on_batch = on_batch
        self.stats = RecorderStats()
        self._stop = threading.Event()
        self._deadline = None
        self.conn = None
        self._plan = None
        self.writer: spool.SpoolWriter | None = None
        self._rows: list[dict] = []
        self._dtcs: list[dict] = []
        self._batch_started = time.monotonic()
        self._last_store = time.monotonic()
        self._rate_mark = (time.monotonic(), 0, 0)

    # -- control -----------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def _done(self) -> bool:
        return self._stop.is_set() or (self._deadline is not None and time.monotonic() >= self._deadline)

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._done() and time.monotonic() < end:
            time.sleep(min(0.05, max(0.0, end - time.monotonic())))

    # -- batches -----------------------------------------------------------------------------
    def _commit(self, force_store: bool = False) -> None:
        if self._rows or self._dtcs:
            bid = self.writer.commit(self._rows, self._dtcs)
            self.stats.batches += 1
            self.stats.last_batch_id = bid
            if self.on_batch:
                self.on_batch(bid, len(self._rows))
            self._rows, self._dtcs = [], []
        self._batch_started = time.monotonic()
        if force_store or time.monotonic() - self._last_store >= self.store_interval:
            self.writer.flush_store()
            self._last_store = time.monotonic()

    def _add_row(self, values: dict[str, float], ts: datetime) -> None:
        row = {"vehicle_id": self.stats.vehicle_id, "ts": spool.iso(ts), "source": "obd"}
        row.update({k: round(float(v), 4) for k, v in values.items() if v is not None})
        self._rows.append(row)
        self.stats.samples += 1
        self.stats.last_values.update(values)
        if time.monotonic() - self._batch_started >= self.batch_interval:
            self._commit()

    def _rates(self) -> None:
        t0, s0, q0 = self._rate_mark
        now = time.monotonic()
        if now - t0 >= 1.0:
            self.stats.rate_samples = (self.stats.samples - s0) / (now - t0)
            self.stats.rate_queries = (self.stats.queries - q0) / (now - t0)
            self._rate_mark = (now, self.stats.samples, self.stats.queries)

    # -- connection ----------------------------------------------------------------------------
    def _query(self, cmd):
        self.stats.queries += 1
        try:
            return self.conn.query(cmd, force=True)
        except Exception as exc:  # a garbled answer must not end a weeks-long recording
            self.stats.errors += 1
            log.debug("query %s failed: %s", cmd, exc)
            return None

    def _value(self, cmd):
        r = self._query(cmd)
        if r is None or r.is_null():
            return None
        return r.value

    def _adapter_voltage(self) -> float | None:
        v = self._value(_obd.commands.ELM_VOLTAGE)
        return float(getattr(v, "magnitude", v)) if v is not None else None

    def _connected(self) -> bool:
        return self.conn is not None and self.conn.status() != OBDStatus.NOT_CONNECTED

    def _close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # closing a dead port can raise
                pass
        self.conn = None

    def _connect(self) -> str:
        """'car', 'ignition_off' (adapter answers, car does not) or 'absent'."""
        self._close()
        self._plan = None
        logging.getLogger("obd").setLevel(logging.CRITICAL + 1)
        try:
            self.conn = _obd.OBD(self.port, baudrate=self.baudrate, protocol=self.protocol, fast=True,
                                 timeout=0.5, check_voltage=True)
        except Exception as exc:
            log.debug("connect failed: %s", exc)
            self.conn = None
            return "absent"
        st = self.conn.status()
        if st == OBDStatus.CAR_CONNECTED:
            port = getattr(self.conn.interface, "_ELM327__port", None)
            if port is not None:
                port.timeout = 3.0  # python-OBD opens with 10 s; an unanswered read should fail sooner
            self.protocol = self.conn.protocol_id() or self.protocol  # reconnects skip the search
            self.stats.protocol = self.conn.protocol_name()
            return "car"
        if st in (OBDStatus.ELM_CONNECTED, OBDStatus.OBD_CONNECTED):
            return "ignition_off"
        self._close()
        return "absent"

    def _identify(self) -> None:
        vin = self._value(VIN)
        vin = clean_vin(vin) if vin else None
        if vin:
            if self.stats.vehicle_id and vin != self.stats.vehicle_id:
                self.stats.event(f"a different car: VIN {vin} (was {self.stats.vehicle_id})")
            elif self.fallback_vin and vin != self.fallback_vin and not self.stats.vehicle_id:
                self.stats.event(f"car reports VIN {vin}; recording under it, not --vehicle-id {self.fallback_vin}")
            self.stats.vehicle_id = vin
            return
        if self.stats.vehicle_id:  # reconnect to the same dongle, VIN not answered this time
            return
        if self.fallback_vin:
            self.stats.event(f"no valid VIN from the car (mode 09 PID 02); recording under --vehicle-id {self.fallback_vin}")
            self.stats.vehicle_id = self.fallback_vin
            return
        raise VinError("the car did not report a valid VIN (mode 09 PID 02 unanswered or not 17 valid characters); "
                       "pass --vehicle-id with the VIN from the windscreen or registration papers")

    def _supported_pids(self) -> set[int]:
        return supported_pids(self.conn, self._value)

    def _make_plan(self) -> list:
        sup = self._supported_pids()
        wanted = [p for p in PIDS if p in sup]
        missing = [PIDS[p][0] for p in PIDS if p not in sup]
        if missing:
            self.stats.event(f"not supported by this car (recorded as null): {', '.join(missing)}")
        can = self.protocol in CAN_PROTOCOLS
        size = MAX_PIDS_PER_REQUEST if (self.multi_pid and can) else 1
        groups = [wanted[i:i + size] for i in range(0, len(wanted), size)]
        self.stats.plan = groups
        self._checked: set[tuple[int, ...]] = set()
        self._voltage_from_atrv = 0x42 not in sup
        return [(g, mode01_command(g)) for g in groups]

    # -- polling -------------------------------------------------------------------------------
    def _poll_cycle(self, plan: list) -> dict[str, float] | None:
        values: dict[str, float] = {}
        answered = False
        i = 0
        while i < len(plan):  # `plan` may grow while we go: split-off PIDs are asked in this same cycle
            group, cmd = plan[i]
            i += 1
            got = self._value(cmd) or {}
            if got:
                answered = True
            if len(group) > 1 and tuple(group) not in self._checked and got:
                self._checked.add(tuple(group))
                left_out = [p for p in group if p not in got]
                if left_out:  # this ECU answers only some PIDs per request: ask for those alone
                    self.stats.event(f"ECU left out PIDs {[hex(p) for p in left_out]} in a multi-PID request; "
                                     "asking for them one at a time")
                    kept = [p for p in group if p in got]
                    plan[i - 1] = (kept, mode01_command(kept))
                    plan += [([p], mode01_command([p])) for p in left_out]
                    self.stats.plan = [g for g, _ in plan]
            for pid, v in got.items():
                values[PIDS[pid][0]] = v
            self.stats.pid_values += len(got)
            if not self._connected():
                return None
        if self._voltage_from_atrv and answered:
            v = self._adapter_voltage()
            if v is not None:
                values["control_module_voltage_v"] = v
        self.stats.negative_responses = _negatives["count"]
        return values if answered else {}

    def _read_dtcs(self, ts: datetime) -> None:
        for cmd, status in ((STORED_DTC, "stored"), (PENDING_DTC, "pending")):
            codes = self._value(cmd) or []
            for c in codes:
                self._dtcs.append({"vehicle_id": self.stats.vehicle_id, "ts": spool.iso(ts), "code": c, "status": status})
            self.stats.dtc_events += len(codes)

    def _close_trip(self, why: str) -> None:
        self._commit(force_store=True)
        self.stats.trips_closed += 1
        self.stats.event(f"trip closed: {why}")

    def _record(self) -> str:
        """Poll until the ignition goes off, the dongle goes away or time is up."""
        if self._plan is None:
            self._plan = self._make_plan()
        plan = self._plan
        self.stats.state = "recording"
        self.stats.event(f"recording {self.stats.vehicle_id} over {self.stats.protocol}; "
                         f"{len(plan)} request(s) per cycle for {sum(len(g) for g, _ in plan)} PIDs")
        null_cycles = 0
        next_dtc = time.monotonic()
        while not self._done():
            t0 = time.monotonic()
            ts = datetime.now(timezone.utc)
            values = self._poll_cycle(plan)
            if values is None or not self._connected():
                return "unplugged"
            if values:
                null_cycles = 0
                self._add_row(values, ts)
                if time.monotonic() >= next_dtc:
                    self._read_dtcs(ts)
                    next_dtc = time.monotonic() + self.dtc_interval
            else:
                null_cycles += 1
                if null_cycles >= NULL_CYCLES_IGNITION_OFF:
                    v = self._adapter_voltage()
                    if not self._connected() or v is None or v < LOW_ADAPTER_VOLTAGE:
                        return "unplugged"
                    self._add_row({"control_module_voltage_v": v}, datetime.now(timezone.utc))
                    return "ignition_off"
            self._rates()
            if time.monotonic() - self._batch_started >= self.batch_interval:
                self._commit()
            spare = self.interval - (time.monotonic() - t0)
            if spare > 0:
                self._sleep(spare)
        return "done"

    def _wait_ignition(self) -> str:
        """Connected adapter, silent car: record resting voltage, probe for the engine."""
        self.stats.state = "ignition off"
        probe = mode01_command([0x0C]) if 0x0C in {p for g in self.stats.plan for p in g} else mode01_command([0x00])
        while not self._done():
            self._sleep(self.off_poll)
            if self._done():
                break
            if self._value(probe):
                return "ignition_on"
            v = self._adapter_voltage()
            if not self._connected() or v is None or v < LOW_ADAPTER_VOLTAGE:
                return "unplugged"
            self._add_row({"control_module_voltage_v": v}, datetime.now(timezone.utc))
            self._rates()
        return "done"

    def run(self) -> RecorderStats:
        self._deadline = time.monotonic() + self.duration if self.duration else None
        recovered = spool.sync_store(self.paths)  # batches a crashed run spooled but did not store
        if recovered:
            self.stats.event(f"stored {recovered} batch(es) left in the spool by an earlier run")
        self.writer = spool.SpoolWriter(self.paths, "obd")
        backoff = 0.5
        try:
            while not self._done():
                self.stats.state = "connecting"
                how = self._connect()
                if how == "absent":
                    self.stats.state = f"no adapter (retry in {backoff:.1f}s)"
                    self._sleep(backoff)
                    backoff = min(backoff * 2, self.max_backoff)
                    continue
                if how == "ignition_off":
                    self.stats.state = "ignition off"
                    v = self._adapter_voltage()
                    if v is not None and v >= LOW_ADAPTER_VOLTAGE and self.stats.vehicle_id:
                        self._add_row({"control_module_voltage_v": v}, datetime.now(timezone.utc))
                    self._close()
                    self._sleep(min(backoff, self.off_poll))
                    backoff = min(backoff * 2, self.max_backoff)
                    continue
                backoff = 0.5
                self._identify()
                while not self._done():
                    why = self._record()
                    if why == "done":
                        break
                    self._close_trip("ignition off" if why == "ignition_off" else "adapter disconnected")
                    if why == "unplugged":
                        self.stats.reconnects += 1
                        self._close()
                        break
                    if self._wait_ignition() != "ignition_on":
                        if not self._done():
                            self.stats.reconnects += 1
                            self._close()
                        break
                    self.stats.event("ignition on: new trip")
        finally:
            self.stats.state = "stopping"
            self._commit(force_store=True)
            self.writer.close()
            self._close()
            self.stats.state = "stopped"
        return self.stats


def measure_query_rate(port: str, seconds: float = 3.0, multi_pid: bool = True, protocol: str | None = None) -> dict:
    """Requests/s, PID values/s and samples/s against an adapter (or the simulator)."""
    _require_obd()
    conn = _obd.OBD(port, fast=True, timeout=0.5, protocol=protocol)
    if conn.status() != OBDStatus.CAR_CONNECTED:
        raise RuntimeError(f"{port}: no car ({conn.status()})")
    sup = supported_pids(conn)
    pids = [p for p in PIDS if p in sup]
    size = MAX_PIDS_PER_REQUEST if multi_pid else 1
    cmds = [mode01_command(pids[i:i + size]) for i in range(0, len(pids), size)]
    q = v = cycles = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        for c in cmds:
            r = conn.query(c, force=True)
            q += 1
            v += len(r.value or {}) if not r.is_null() else 0
        cycles += 1
    dt = time.monotonic() - t0
    conn.close()
    return {"requests_per_s": q / dt, "pid_values_per_s": v / dt, "samples_per_s": cycles / dt,
            "pids": len(pids), "requests_per_sample": len(cmds)}
