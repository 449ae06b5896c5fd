"""A live CAN bus → canonical samples: autopdm as the OBD-II tester, or as a silent listener.

As tester it asks (functional requests, 0x7DF or 0x18DB33F1) which ECUs answer, then receives
their answers through one can-isotp stack per answering ECU: the stack sends the flow control for
multi-frame answers (VIN, multi-PID), checks sequence numbers and gives up on an answer whose
consecutive frames stop coming (N_Cr), so a half answer is never decoded and never blocks the
next request. Then it asks for the VIN, the supported-PID bitmaps, the DTCs, and polls the
mapped PIDs, six per request. As listener (``query=False``) it never transmits, not even flow
control, and decodes whatever a tester on the bus asked for. Frames a signals map wants go to
the DBC decoder either way. Batches go to the spool every ``batch_interval`` seconds.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from autopdm.config import Paths
from autopdm.ingest import spool
from autopdm.ingest.can import CanImportReport, FrameSink, vehicle_for, write_rows
from autopdm.ingest.codecs.isotp import SampleBuilder, physical_ids, request_id, response_source, single_frame
from autopdm.ingest.codecs.obdcodec import PIDS

MAX_PIDS_PER_REQUEST = 6
SCRIPT = (bytes([0x09, 0x02]), bytes([0x01, 0x00, 0x20, 0x40, 0x60, 0x80, 0xA0]), b"\x03", b"\x07")


class BusError(RuntimeError):
    """The bus could not be opened (no such interface or channel, no driver, no permission)."""


@dataclass
class IsoTpTiming:
    """ISO 15765-2 timers in milliseconds: N_Cr (wait for the next consecutive frame) and N_Bs
    (wait for the peer's flow control when we send a multi-frame message)."""

    n_cr_ms: int = 1000
    n_bs_ms: int = 1000
    stmin_ms: int = 0
    blocksize: int = 0

    def params(self) -> dict:
        return {"rx_consecutive_frame_timeout": self.n_cr_ms, "rx_flowcontrol_timeout": self.n_bs_ms,
                "stmin": self.stmin_ms, "blocksize": self.blocksize, "tx_padding": 0x00, "tx_data_min_length": 8}


@dataclass
class TesterErrors:
    timeouts: int = 0                              # N_Cr / N_Bs expired: the answer was dropped
    other: int = 0                                 # sequence errors, unexpected frames …
    kinds: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, exc: Exception) -> None:    # can-isotp calls this from its own thread
        import isotp

        with self.lock:
            name = type(exc).__name__
            self.kinds[name] = self.kinds.get(name, 0) + 1
            if isinstance(exc, (isotp.ConsecutiveFrameTimeoutError, isotp.FlowControlTimeoutError)):
                self.timeouts += 1
            else:
                self.other += 1


class LiveRecorder:
    def __init__(self, bus, paths: Paths, vehicle_id: str | None = None, dbc=None, *, query: bool = True,
                 extended: bool = False, period: float = 0.2, response_timeout: float = 0.1,
                 batch_interval: float = 1.0, resolution: float = 1.0, timing: IsoTpTiming | None = None,
                 origin: str = "live"):
        self.bus, self.paths, self.vehicle_id = bus, paths, vehicle_id
        self.query, self.extended = query, extended
        self.period, self.response_timeout, self.batch_interval = period, response_timeout, batch_interval
        self.timing = timing or IsoTpTiming()
        self.sink = FrameSink(SampleBuilder("can", resolution), dbc)
        self.report = CanImportReport(origin, reader="live (can-isotp)" if query else "live (listen only)")
        self.errors = TesterErrors()
        self.stacks: dict[int, object] = {}        # ECU → can-isotp stack receiving its answers
        self.writer: spool.SpoolWriter | None = None
        self._vin: str | None = None
        self._lock = threading.Lock()               # the notifier thread feeds the sink too
        self._notifier = None

    # -- frames --------------------------------------------------------------------------------
    def _on_frame(self, msg) -> None:
        """Every frame on the bus: counted; decoded here unless an ISO-TP stack owns its id."""
        with self._lock:
            if msg.is_error_frame:
                self.sink.error_frame()
                return
            if self.stacks and response_source(msg.arbitration_id, msg.is_extended_id) in self.stacks:
                st = self.sink.stats
                st.frames += 1
                st.decoded += 1
                return
            self.sink.feed(msg.timestamp or time.time(), msg.arbitration_id, msg.is_extended_id, bytes(msg.data))

    def _open_stacks(self, ecus) -> None:
        import isotp

        mode = isotp.AddressingMode.Normal_29bits if self.extended else isotp.AddressingMode.Normal_11bits
        for ecu in sorted(set(ecus) - set(self.stacks)):
            txid, rxid = physical_ids(ecu, self.extended)
            stack = isotp.NotifierBasedCanStack(self.bus, self._notifier, address=isotp.Address(mode, txid=txid, rxid=rxid),
                                                error_handler=self.errors, params=self.timing.params())
            stack.start()
            self.stacks[ecu] = stack

    def _close_stacks(self) -> None:
        for stack in self.stacks.values():
            stack.stop()
        self.stacks = {}

    # -- requests ------------------------------------------------------------------------------
    def _send(self, payload: bytes) -> None:
        import can

        self.bus.send(can.Message(arbitration_id=request_id(self.extended), is_extended_id=self.extended,
                                  data=single_frame(payload)))

    def _collect(self, until: float) -> int:
        """Answers the stacks reassembled, until `until` (longer while one is still arriving)."""
        got = 0
        while True:
            for ecu, stack in list(self.stacks.items()):
                while (payload := stack.recv()) is not None:
                    with self._lock:
                        self.sink.obd.message(time.time(), ecu, bytes(payload))
                    got += 1
            now = time.monotonic()
            busy = any(s.is_rx_active() for s in self.stacks.values())
            if now >= until and not busy:
                return got
            time.sleep(0.001)

    def _ask(self, payload: bytes) -> None:
        self._send(payload)
        if self.stacks:
            self._collect(time.monotonic() + self.response_timeout)
        else:  # before discovery: single-frame answers reach the passive decoder through _on_frame
            time.sleep(self.response_timeout)

    def _discover(self) -> bool:
        """Which ECUs answer? Their supported-PID answers are single frames, read passively."""
        self._ask(bytes([0x01, 0x00]))
        with self._lock:
            ecus = set(self.sink.stats.ecus)
        if ecus:
            self._open_stacks(ecus)
        return bool(ecus)

    def _poll_groups(self) -> list[bytes]:
        sup = set().union(*self.sink.obd.supported.values()) if self.sink.obd.supported else set(PIDS)
        wanted = [p for p in PIDS if p in sup]
        n = MAX_PIDS_PER_REQUEST
        return [bytes([0x01, *wanted[i:i + n]]) for i in range(0, len(wanted), n)]

    # -- batches -------------------------------------------------------------------------------
    def _flush(self, final: bool = False) -> None:
        with self._lock:
            if final:
                self.sink.builder.finish()
            if not self.sink.builder.rows and not self.sink.dtcs:
                return
            if self._vin is None:
                if not self.sink.vins and not self.vehicle_id and not final:
                    return  # keep buffering until the VIN answer arrives
                self._vin = vehicle_for(self.sink, self.vehicle_id, self.report.path)
                self.report.vehicle_id = self._vin
            s, d, b = write_rows(self.sink, self._vin, self.paths, writer=self.writer, batch_rows=10_000)
        self.report.samples += s
        self.report.dtc_events += d
        self.report.batches += b

    # -- the session ---------------------------------------------------------------------------
    def _tester(self, done: Callable[[], bool]) -> None:
        while not done() and not self._discover():
            time.sleep(self.period)
        for req in SCRIPT:
            if done():
                return
            self._ask(req)
        groups = self._poll_groups()
        last_flush = time.monotonic()
        while not done():
            t0 = time.monotonic()
            for req in groups:
                self._ask(req)
            if time.monotonic() - last_flush >= self.batch_interval:
                self._flush()
                last_flush = time.monotonic()
            time.sleep(max(0.0, self.period - (time.monotonic() - t0)))

    def _listener(self, done: Callable[[], bool]) -> None:
        last_flush = time.monotonic()
        while not done():
            time.sleep(0.02)
            if time.monotonic() - last_flush >= self.batch_interval:
                self._flush()
                last_flush = time.monotonic()

    def run(self, duration: float | None = None, stop: Callable[[], bool] | None = None) -> CanImportReport:
        import can

        t_start = time.monotonic()
        deadline = t_start + duration if duration else None

        def done() -> bool:
            return bool(stop and stop()) or (deadline is not None and time.monotonic() >= deadline)

        self.writer = spool.SpoolWriter(self.paths, "can")
        self._notifier = can.Notifier(self.bus, [self._on_frame], timeout=0.01)
        try:
            (self._tester if self.query else self._listener)(done)
        finally:
            self._close_stacks()
            self._notifier.stop()
            try:
                self._flush(final=True)
            finally:
                self.writer.close()
        return self._finish_report(time.monotonic() - t_start)

    def _finish_report(self, seconds: float) -> CanImportReport:
        st, rep = self.sink.stats, self.report
        rep.frames, rep.decoded, rep.skipped, rep.error_frames = st.frames, st.decoded, st.skipped, st.error_frames
        rep.negative_responses, rep.messages, rep.values = st.negative, st.messages, st.values
        rep.isotp_errors = st.isotp_errors + self.errors.other
        rep.isotp_timeouts = self.errors.timeouts
        rep.ecus = sorted(f"{e:02X}" for e in st.ecus)
        rep.seconds = seconds
        return rep


def record_bus(interface: str, channel: str, paths: Paths, vehicle_id: str | None = None, dbc=None,
               duration: float | None = None, *, query: bool = True, extended: bool = False, period: float = 0.2,
               response_timeout: float = 0.1, batch_interval: float = 1.0, resolution: float = 1.0,
               stop: Callable[[], bool] | None = None, bus_kwargs: dict | None = None,
               timing: IsoTpTiming | None = None) -> CanImportReport:
    """Open a python-can bus and record it (see `LiveRecorder`)."""
    import can

    try:
        bus = can.Bus(interface=interface, channel=channel, **(bus_kwargs or {}))
    except (can.CanError, OSError, ValueError, NotImplementedError, ImportError) as exc:
        raise BusError(f"{interface}:{channel}: cannot open the bus: {exc}") from None
    try:
        rec = LiveRecorder(bus, paths, vehicle_id, dbc, query=query, extended=extended, period=period,
                           response_timeout=response_timeout, batch_interval=batch_interval, resolution=resolution,
                           timing=timing, origin=f"{interface}:{channel}")
        return rec.run(duration, stop)
    finally:
        bus.shutdown()
