"""Live recording from an ELM327 dongle with python-OBD → spool → store.

Built to be left in a car for weeks:

* What the adapter and ECU answer is probed (`obdprobe`) when the polling plan is made and
  whenever answers stop: several PIDs per request or one, a slow ECU (the ELM's timeout is
  raised), a clone's first ``BUS INIT: ...ERROR``. A cycle without answers means "ignition off"
  only when single-PID requests go unanswered too; otherwise the plan changes to what the car
  answers now (an ECU that says ``NO DATA`` to multi-PID requests is polled one PID at a time).
* python-OBD's ``status()`` does not change when the ignition goes off or the dongle is pulled
  (only serial errors flip it), so the recorder watches for itself: with the ignition off the
  adapter still answers ``ATRV`` (resting battery voltage, recorded: it is what the battery
  model needs before the next crank); a serial error or an adapter voltage below 6 V means the
  dongle is out. Either closes the trip (the batch is committed and the store flushed); then it
  reconnects with a doubling backoff and resumes.
* Every batch (``batch_interval`` seconds of samples) is appended to the spool and fsynced before
  anything else happens to it; ``kill -9`` loses at most the batch being read.
* As fast as the adapter allows: python-OBD fast mode (response-count digit, bare CR to repeat),
  supported-PID bitmaps so that no request is wasted on an unsupported PID, on CAN up to six PIDs
  per mode 01 request (J1979 allows it), and a split into single requests for PIDs an ECU
  leaves out of a multi-PID answer. The port is opened as ``elm://PORT``, which drops clone
  adapters' echoes and ``SEARCHING...`` lines before python-OBD sees them.
* The VIN comes from mode 09 PID 02; without a valid one the recording goes under
  ``--vehicle-id`` or does not start.

python-OBD is GPL-2.0-only, hence an optional dependency (``pip install autopdm[obd]``); only
``autopdm ingest obd`` imports this module.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

import obd as _obd
from obd import OBDCommand, OBDStatus
from obd.protocols import ECU

from autopdm.config import Paths
from autopdm.ingest import obdprobe, spool
from autopdm.ingest.codecs.obdcodec import PIDS, clean_vin, decode_dtcs, decode_vin, is_negative, is_vin
from autopdm.ingest.obdprobe import Capabilities, mode01_command, probe_command, supported_pids  # noqa: F401
from autopdm.ingest.serialurl import elm_url
from autopdm.ingest.serialurl import register as register_elm_port

log = logging.getLogger(__name__)

CAN_PROTOCOLS = ("6", "7", "8", "9")
MAX_PIDS_PER_REQUEST = 6
LOW_ADAPTER_VOLTAGE = 6.0      # below this the dongle is not powered by a car
FIRST_BACKOFF = 0.5            # seconds before the first reconnect; doubles up to max_backoff


class VinError(RuntimeError):
    pass


class PortError(RuntimeError):
    """--port names nothing that could be an adapter."""


# -- commands python-OBD lacks or decodes wrongly (7F negative answers) -------------------------
def _payload(m) -> bytes:
    return bytes(m.data) if getattr(m, "data", None) else b""


def _dtc_decoder(messages):
    codes = []
    for m in messages:
        p = _payload(m)
        if is_negative(p):
            obdprobe.negatives["count"] += 1
            continue
        codes += decode_dtcs(p)
    return sorted(set(codes))


def _vin_decoder(messages):
    for m in messages:
        v = decode_vin(_payload(m))
        if v:
            return v
    return None


VIN = OBDCommand("AUTOPDM_VIN", "VIN (mode 09 PID 02)", b"0902", 0, _vin_decoder, ECU.ALL_KNOWN, True)
STORED_DTC = OBDCommand("AUTOPDM_03", "stored DTCs", b"03", 0, _dtc_decoder, ECU.ALL_KNOWN, False)
PENDING_DTC = OBDCommand("AUTOPDM_07", "pending DTCs", b"07", 0, _dtc_decoder, ECU.ALL_KNOWN, False)


def check_port(port: str) -> None:
    """A local device path must exist when recording starts (a URL is tried when connecting)."""
    if "://" not in port and not os.path.exists(port):
        raise PortError(f"--port {port}: no such device (is the adapter plugged in and paired? "
                        "WiFi adapters: socket://HOST:PORT)")


@dataclass
class RecorderStats:
    state: str = "starting"
    vehicle_id: str | None = None
    protocol: str = ""
    adapter_seen: bool = False           # an ELM327 answered at least once
    capabilities: str = ""
    samples: int = 0
    batches: int = 0
    queries: int = 0
    pid_values: int = 0
    negative_responses: int = 0
    dtc_events: int = 0
    trips_closed: int = 0
    reconnects: int = 0
    probes: int = 0
    errors: int = 0
    echoes_dropped: int = 0
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
    """Record one dongle for `duration` seconds (None: until `stop()`).

    `clock` and `wait` are the recorder's time: `wait(seconds)` pauses (returning early when the
    recorder is stopped) and is where every backoff and polling pause goes, so a test can give
    the recorder a clock of its own and see each delay.
    """

    def __init__(self, port: str, paths: Paths, vehicle_id: str | None = None, duration: float | None = None, *,
                 interval: float = 0.1, batch_interval: float = 1.0, dtc_interval: float = 60.0,
                 store_interval: float = 30.0, baudrate: int | None = None, protocol: str | None = None,
                 multi_pid: bool = True, max_backoff: float = 30.0, off_poll: float = 2.0,
                 on_batch: Callable[[str, int], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, wait: Callable[[float], object] | None = None):
        if vehicle_id is not None and not is_vin(vehicle_id.upper()):
            raise VinError(f"--vehicle-id {vehicle_id!r} is not a 17-character VIN (A-Z without I/O/Q, 0-9)")
        self.port = port
        self.paths = paths
        self.fallback_vin = vehicle_id.upper() if vehicle_id else None
        self.duration = duration
        self.interval, self.batch_interval, self.dtc_interval = interval, batch_interval, dtc_interval
        self.store_interval = store_interval
        self.baudrate, self.protocol = baudrate, protocol
        self.multi_pid = multi_pid
        self.max_backoff, self.off_poll = max_backoff, off_poll
        self.on_batch = on_batch
        self._stop = threading.Event()
        self._clock = clock
        self._wait = wait or self._stop.wait
        self.stats = RecorderStats(started=clock())
        self._deadline = None
        self.conn = None
        self.caps: Capabilities | None = None
        self._plan = None
        self._supported: set[int] | None = None
        self.writer: spool.SpoolWriter | None = None
        self._rows: list[dict] = []
        self._dtcs: list[dict] = []
        self._batch_started = self._last_store = clock()
        self._rate_mark = (clock(), 0, 0)

    # -- control -----------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def _done(self) -> bool:
        return self._stop.is_set() or (self._deadline is not None and self._clock() >= self._deadline)

    def _sleep(self, seconds: float) -> None:
        if self._deadline is not None:
            seconds = min(seconds, self._deadline - self._clock())
        if seconds > 0 and not self._stop.is_set():
            self._wait(seconds)

    # -- batches -----------------------------------------------------------------------------
    def _commit(self, force_store: bool = False) -> None:
        if self._rows or self._dtcs:
            bid = self.writer.commit(self._rows, self._dtcs)
            self.stats.batches += 1
            self.stats.last_batch_id = bid
            if self.on_batch:
                self.on_batch(bid, len(self._rows))
            self._rows, self._dtcs = [], []
        self._batch_started = self._clock()
        if force_store or self._clock() - self._last_store >= self.store_interval:
            self.writer.flush_store()
            self._last_store = self._clock()

    def _add_row(self, values: dict[str, float], ts: datetime) -> None:
        row = {"vehicle_id": self.stats.vehicle_id, "ts": spool.iso(ts), "source": "obd"}
        row.update({k: round(float(v), 4) for k, v in values.items() if v is not None})
        self._rows.append(row)
        self.stats.samples += 1
        self.stats.last_values.update(values)
        if self._clock() - self._batch_started >= self.batch_interval:
            self._commit()

    def _rates(self) -> None:
        t0, s0, q0 = self._rate_mark
        now = self._clock()
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

    def _at(self, command: bytes) -> None:
        """An AT command, sent through `query` so that python-OBD knows it was the last command
        (its fast mode repeats "the last command" with a bare CR)."""
        self._query(OBDCommand(command.decode(), "AT command", command, 0, lambda messages: None, ECU.UNKNOWN, False))

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

    def _port(self):
        return getattr(self.conn.interface, "_ELM327__port", None) if self.conn is not None else None

    def _connect(self) -> str:
        """'car', 'ignition_off' (adapter answers, car does not) or 'absent'."""
        self._close()
        logging.getLogger("obd").setLevel(logging.CRITICAL + 1)
        register_elm_port()
        try:  # elm:// tidies clone adapters' echoes and SEARCHING... lines (see serialurl.protocol_elm)
            self.conn = _obd.OBD(elm_url(self.port), baudrate=self.baudrate, protocol=self.protocol, fast=True,
                                 timeout=0.5, check_voltage=True)
        except Exception as exc:
            log.debug("connect failed: %s", exc)
            self.conn = None
            return "absent"
        st = self.conn.status()
        if st == OBDStatus.NOT_CONNECTED:
            self._close()
            return "absent"
        self.stats.adapter_seen = True
        if st != OBDStatus.CAR_CONNECTED:
            return "ignition_off"
        if (port := self._port()) is not None:
            port.timeout = 3.0  # python-OBD opens with 10 s; an unanswered read should fail sooner
        self.protocol = self.conn.protocol_id() or self.protocol  # reconnects skip the search
        self.stats.protocol = self.conn.protocol_name()
        return "car"

    def _probe(self) -> Capabilities:
        self.stats.probes += 1
        caps = obdprobe.probe(self._value, self._at, can_bus=self.protocol in CAN_PROTOCOLS, known=self._supported)
        if caps.single:
            self._supported = set(caps.supported)
        caps.multi = caps.multi and self.multi_pid
        if self.caps is None or caps.describe() != self.caps.describe():
            self.stats.event(f"adapter and ECU: {caps.describe()} ({caps.tries} probe requests)")
        self.caps = caps
        self.stats.capabilities = caps.describe()
        port = self._port()
        self.stats.echoes_dropped = getattr(port, "echoes", 0)
        return caps

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

    def _make_plan(self) -> list:
        sup = self._supported or set()
        wanted = [p for p in PIDS if p in sup] or list(PIDS)  # no bitmap answer: ask for everything
        missing = [PIDS[p][0] for p in PIDS if p not in sup]
        if missing and sup:
            self.stats.event(f"not supported by this car (recorded as null): {', '.join(missing)}")
        size = MAX_PIDS_PER_REQUEST if self.caps is not None and self.caps.multi else 1
        groups = [wanted[i:i + size] for i in range(0, len(wanted), size)]
        self.stats.plan = groups
        self._checked: set[tuple[int, ...]] = set()
        self._voltage_from_atrv = 0x42 not in sup
        return [(g, mode01_command(g)) for g in groups]

    # -- polling -------------------------------------------------------------------------------
    def _split_left_out(self, plan: list, i: int, got: dict) -> None:
        """A multi-PID request answered for only some of its PIDs: ask for the others alone."""
        group = plan[i][0]
        self._checked.add(tuple(group))
        left_out = [p for p in group if p not in got]
        if not left_out:
            return
        self.stats.event(f"ECU left out PIDs {[hex(p) for p in left_out]} in a multi-PID request; "
                         "asking for them one at a time")
        kept = [p for p in group if p in got]
        plan[i] = (kept, mode01_command(kept))
        plan += [([p], mode01_command([p])) for p in left_out]
        self.stats.plan = [g for g, _ in plan]

    def _poll_cycle(self, plan: list) -> dict[str, float] | None:
        """One pass over the plan: column → value ({} when nothing answered, None when unplugged)."""
        values: dict[str, float] = {}
        i = 0
        while i < len(plan):  # `plan` may grow while we go: split-off PIDs are asked in this same cycle
            group, cmd = plan[i]
            got = self._value(cmd) or {}
            if got and len(group) > 1 and tuple(group) not in self._checked:
                self._split_left_out(plan, i, got)
            i += 1
            for pid, v in got.items():
                values[PIDS[pid][0]] = v
            self.stats.pid_values += len(got)
            if not self._connected():
                return None
        if self._voltage_from_atrv and values:
            v = self._adapter_voltage()
            if v is not None:
                values["control_module_voltage_v"] = v
        self.stats.negative_responses = obdprobe.negatives["count"]
        return values

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

    def _silent(self) -> str:
        """The plan got no answer. Ignition off only if single-PID requests go unanswered too;
        otherwise the ECU changed what it answers: probe again and poll the way it answers now."""
        if not self._connected():
            return "unplugged"
        before = self.caps.describe() if self.caps else ""
        caps = self._probe()
        if caps.single:
            if caps.describe() != before or not caps.multi:
                self._plan = self._make_plan()
                self.stats.event(f"polling again: {len(self._plan)} request(s) per cycle")
            return "answering"
        v = self._adapter_voltage()
        if not self._connected() or v is None or v < LOW_ADAPTER_VOLTAGE:
            return "unplugged"
        self._add_row({"control_module_voltage_v": v}, datetime.now(timezone.utc))
        return "ignition_off"

    def _record(self) -> str:
        """Poll until the ignition goes off, the dongle goes away or time is up."""
        self.stats.state = "recording"
        self.stats.event(f"recording {self.stats.vehicle_id} over {self.stats.protocol}; {len(self._plan)} request(s) "
                         f"per cycle for {sum(len(g) for g, _ in self._plan)} PIDs")
        next_dtc = self._clock()
        while not self._done():
            t0 = self._clock()
            values = self._poll_cycle(self._plan)
            if values is None or not self._connected():
                return "unplugged"
            if values:
                self._add_row(values, datetime.now(timezone.utc))
                if self._clock() >= next_dtc:
                    self._read_dtcs(datetime.now(timezone.utc))
                    next_dtc = self._clock() + self.dtc_interval
            else:
                why = self._silent()
                if why != "answering":
                    return why
            self._rates()
            if self._clock() - self._batch_started >= self.batch_interval:
                self._commit()
            self._sleep(self.interval - (self._clock() - t0))
        return "done"

    def _wait_ignition(self) -> str:
        """Connected adapter, silent car: record resting voltage, probe for the engine."""
        self.stats.state = "ignition off"
        probe = probe_command([0x00])
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

    # -- the session -----------------------------------------------------------------------------
    def _adapter_only(self, backoff: float) -> None:
        """The adapter answers, the car does not: resting voltage, then try again later."""
        self.stats.state = "ignition off"
        v = self._adapter_voltage()
        if v is not None and v >= LOW_ADAPTER_VOLTAGE and self.stats.vehicle_id:
            self._add_row({"control_module_voltage_v": v}, datetime.now(timezone.utc))
        self._close()
        self._sleep(min(backoff, self.off_poll))

    def _drive(self) -> None:
        """Connected to a car: probe, identify, then trips until unplugged or done."""
        if not self._probe().single:
            self._adapter_only(FIRST_BACKOFF)
            return
        self._identify()
        if self._plan is None:
            self._plan = self._make_plan()
        while not self._done():
            why = self._record()
            if why == "done":
                return
            self._close_trip("ignition off" if why == "ignition_off" else "adapter disconnected")
            if why == "unplugged" or self._wait_ignition() != "ignition_on":
                if not self._done():
                    self.stats.reconnects += 1
                    self._close()
                return
            self.stats.event("ignition on: new trip")

    def run(self) -> RecorderStats:
        self._deadline = self._clock() + self.duration if self.duration else None
        recovered = spool.sync_store(self.paths)  # batches a crashed run spooled but did not store
        if recovered:
            self.stats.event(f"stored {recovered} batch(es) left in the spool by an earlier run")
        self.writer = spool.SpoolWriter(self.paths, "obd")
        backoff = FIRST_BACKOFF
        try:
            while not self._done():
                self.stats.state = "connecting"
                how = self._connect()
                if how == "absent":
                    self.stats.state = f"no adapter (retry in {backoff:.1f}s)"
                    self._sleep(backoff)
                    backoff = min(backoff * 2, self.max_backoff)
                elif how == "ignition_off":
                    self._adapter_only(backoff)
                    backoff = min(backoff * 2, self.max_backoff)
                else:
                    backoff = FIRST_BACKOFF
                    self._drive()
        finally:
            self.stats.state = "stopping"
            self._commit(force_store=True)
            self.writer.close()
            self._close()
            self.stats.state = "stopped"
        return self.stats


def measure_query_rate(port: str, seconds: float = 3.0, multi_pid: bool = True, protocol: str | None = None) -> dict:
    """Requests/s, PID values/s and samples/s of a fixed plan (1 or 6 PIDs per request)."""
    conn = _obd.OBD(port, fast=True, timeout=0.5, protocol=protocol)
    if conn.status() != OBDStatus.CAR_CONNECTED:
        raise RuntimeError(f"{port}: no car ({conn.status()})")

    def value(c):
        r = conn.query(c, force=True)
        return None if r.is_null() else r.value

    sup = supported_pids(value)
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
