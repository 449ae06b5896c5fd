"""CAN logs and live buses → canonical samples (OBD-II over ISO-TP, and DBC signals).

Log files: every format python-can reads, chosen by suffix (.asc .blf .trc .log .csv .mf4 .db,
and .gz for the text ones). The two most common text formats, Vector ASC and candump ``.log``,
have a fast path here that parses each line straight into (timestamp, id, data) without
building a ``can.Message``: the import then runs at least as fast as plain iteration with
``can.LogReader`` (benchmarks/bench_can_import.py). Anything the fast path does not recognise
falls back to python-can's own reader.

A corrupt or truncated file keeps every frame read before the damage, then ends with a
``CanLogError`` naming the file and the position (line or frame). A bad line in the middle of a
text log is counted and skipped; the good lines around it are kept.
"""

from __future__ import annotations

import gzip
import io
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from autopdm.config import Paths
from autopdm.ingest import spool
from autopdm.ingest.codecs.isotp import ObdDecoder, SampleBuilder, flow_control_target
from autopdm.ingest.codecs.obdcodec import PIDS, VIN_RE

log = logging.getLogger(__name__)

TEXT_FAST = (".asc", ".log")


class CanLogError(RuntimeError):
    """The log could not be read to its end; what was read before `position` was kept."""

    def __init__(self, path, position: str, cause: str):
        self.path, self.position, self.cause = str(path), position, cause
        super().__init__(f"{path}: unreadable at {position}: {cause} (everything before it was imported)")


class VehicleIdError(ValueError):
    pass


def _suffixes(path: Path) -> tuple[str, bool]:
    sfx = [s.lower() for s in path.suffixes]
    gz = bool(sfx) and sfx[-1] == ".gz"
    if gz:
        sfx = sfx[:-1]
    return (sfx[-1] if sfx else ""), gz


def _open_text(path: Path, gz: bool):
    if gz:
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace", newline=None)
    return open(path, encoding="utf-8", errors="replace", newline=None)


# -- sinks ---------------------------------------------------------------------------------------
class FrameSink:
    """Where frames go: the OBD decoder, and the DBC decoder for the ids it wants."""

    def __init__(self, builder: SampleBuilder, dbc=None):
        self.builder = builder
        self.vins: dict[str, float] = {}
        self.dtcs: list[tuple[float, str, str]] = []
        self.obd = ObdDecoder(builder.value, on_dtc=lambda ts, c, s: self.dtcs.append((ts, c, s)),
                              on_vin=lambda ts, v: self.vins.setdefault(v, ts))
        self.dbc = dbc
        if dbc is not None:
            wants = dbc.rules
            obd_feed, value = self.obd.feed, builder.value
            stats = self.obd.stats

            def feed(ts, arb_id, is_ext, data):
                if arb_id in wants:
                    stats.frames += 1
                    if dbc.feed(ts, arb_id, data, value):
                        stats.decoded += 1
                    else:
                        stats.skipped += 1
                else:
                    obd_feed(ts, arb_id, is_ext, data)
            self.feed = feed
        else:
            self.feed = self.obd.feed

    @property
    def stats(self):
        return self.obd.stats


# -- readers -------------------------------------------------------------------------------------
@dataclass
class ReadOutcome:
    bad_lines: list[str] = field(default_factory=list)
    error: CanLogError | None = None
    reader: str = ""


_CANDUMP = re.compile(r"^\((\d+\.\d+)\)\s+(\S+)\s+([0-9A-Fa-f]+)#(.*?)(?:\s+[RT])?$")


def read_candump(path: Path, gz: bool, sink: FrameSink) -> ReadOutcome:
    out = ReadOutcome(reader="fast candump")
    feed, err_frame = sink.feed, sink.obd.error_frame
    fromhex = bytes.fromhex
    n = 0
    try:
        with _open_text(path, gz) as fh:
            for n, line in enumerate(fh, start=1):
                # "(1700000000.123456) can0 7E8#04410C1AF8AAAAAA" — split is ~3x faster than the regex
                if line[-1:] != "\n":  # the file ends mid-line: a cut-off frame would decode wrong
                    out.error = CanLogError(path, f"line {n}", f"file ends in the middle of a line ({line.strip()[:40]!r})")
                    break
                parts = line.split()
                if len(parts) < 3:
                    if parts:
                        out.bad_lines.append(f"line {n}: {line.strip()[:60]!r}")
                    continue
                try:
                    ts = float(parts[0][1:-1])
                    ident, _, data = parts[2].partition("#")
                    arb = int(ident, 16)
                    if data[:1] == "#":  # CAN FD: ##<flags><data>
                        data = data[2:]
                    if data[:1] in ("R", "r"):
                        payload = b""
                    else:
                        payload = fromhex(data)
                except ValueError:
                    out.bad_lines.append(f"line {n}: {line.strip()[:60]!r}")
                    continue
                if arb & 0x20000000 and len(ident) == 8:  # CAN_ERR_FLAG
                    err_frame()
                    continue
                feed(ts, arb & 0x1FFFFFFF, len(ident) > 3, payload)
    except (OSError, EOFError, UnicodeError) as exc:
        out.error = CanLogError(path, f"line {n + 1}", f"{type(exc).__name__}: {exc}")
    return out


def read_asc(path: Path, gz: bool, sink: FrameSink) -> ReadOutcome | None:
    """Vector ASC, 'base hex timestamps absolute' (what CANalyzer and python-can write).

    Returns None (caller falls back to python-can) for variants the fast path does not handle.
    """
    from can.io.asc import ASC_TRIGGER_REGEX, ASCReader

    out = ReadOutcome(reader="fast asc")
    feed, err_frame = sink.feed, sink.obd.error_frame
    fromhex = bytes.fromhex
    start = 0.0
    n = 0
    try:
        with _open_text(path, gz) as fh:
            begun = ended = False
            for n, line in enumerate(fh, start=1):
                if line[-1:] != "\n":
                    out.error = CanLogError(path, f"line {n}", f"file ends in the middle of a line ({line.strip()[:40]!r})")
                    break
                parts = line.split()
                if not parts:
                    continue
                p0 = parts[0]
                if p0[:1].isdigit():
                    # "0.123456 1  7E8   Rx   d 8 04 41 0C 1A F8 AA AA AA"
                    if len(parts) >= 6 and parts[4] == "d" and parts[1].isdigit():
                        try:
                            ts = float(p0) + start
                            ident = parts[2]
                            ext = ident[-1] in "xX"
                            arb = int(ident[:-1] if ext else ident, 16)
                            dlc = int(parts[5], 16)
                            nbytes = min(dlc, 8)
                            data = parts[6:6 + nbytes]
                            if len(data) < nbytes:
                                raise ValueError(f"{len(data)} data bytes for DLC {dlc}")
                            payload = fromhex("".join(data))
                        except ValueError as exc:
                            out.bad_lines.append(f"line {n}: {exc}: {line.strip()[:60]!r}")
                            continue
                        feed(ts, arb, ext, payload)
                    elif len(parts) >= 3 and parts[2] == "ErrorFrame":
                        err_frame()
                    elif len(parts) >= 2 and parts[1] == "CANFD":
                        return None  # CAN FD lines: python-can's reader
                    elif len(parts) >= 4 and parts[4:5] == ["r"]:
                        continue  # remote frame, no data
                    # else: events, statistics, J1939 … — not frames
                    continue
                low = line.strip().lower()
                if low.startswith("date "):
                    m = re.match(r"date\s+\w+\s+(.+)", line.strip(), re.I)
                    if m:
                        start = ASCReader._datetime_to_timestamp(m.group(1))
                elif low.startswith("base "):
                    if "dec" in low.split()[1] or "relative" in low:
                        return None
                elif (m := ASC_TRIGGER_REGEX.match(line.strip())):
                    start = ASCReader._datetime_to_timestamp(m.group("datetime_string"))
                    begun = True
                elif low.startswith("end triggerblock"):
                    ended = True
            if begun and not ended and out.error is None:
                out.error = CanLogError(path, f"line {n}", "no 'End TriggerBlock': the file was cut short")
    except (OSError, EOFError, UnicodeError) as exc:
        out.error = CanLogError(path, f"line {n + 1}", f"{type(exc).__name__}: {exc}")
    return out


def read_python_can(path: Path, ext: str, gz: bool, sink: FrameSink) -> ReadOutcome:
    import can

    out = ReadOutcome(reader="python-can")
    feed, err_frame = sink.feed, sink.obd.error_frame
    n = 0
    reader = None
    try:
        if ext == ".asc":  # absolute timestamps: LogReader's default would start at 1970
            reader = can.ASCReader(_open_text(path, gz), relative_timestamp=False)
        else:
            reader = can.LogReader(path)
        out.reader = f"python-can {type(reader).__name__}"
        for msg in reader:
            n += 1
            if msg.is_error_frame:
                err_frame()
                continue
            feed(msg.timestamp, msg.arbitration_id, msg.is_extended_id, bytes(msg.data))
        # readers that stop quietly at a cut: check what the file promised
        if out.error is None:
            promised = getattr(reader, "object_count", None)
            if promised is not None and type(reader).__name__ == "BLFReader" and n + sink.stats.error_frames * 0 < promised:
                size = path.stat().st_size
                out.error = CanLogError(path, f"frame {n + 1} (byte {size:,} of {reader.file_size:,})",
                                        f"the BLF header announces {promised:,} objects, the file holds {n:,}")
            elif not gz and ext in (".trc", ".csv", ".log", ".asc") and _ends_mid_line(path):
                out.error = CanLogError(path, f"frame {n + 1} (end of file)", "file ends in the middle of a line")
    except Exception as exc:  # struct.error, EOFError, zlib.error, ValueError … from any reader
        pos = f"frame {n + 1}"
        fh = getattr(reader, "file", None)
        try:
            if fh is not None and not fh.closed:
                pos += f" (byte offset {fh.tell():,})"
        except (OSError, ValueError, AttributeError):
            pass
        out.error = CanLogError(path, pos, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    finally:
        if reader is not None:
            try:
                reader.stop()
            except Exception:
                pass
    return out


def _ends_mid_line(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        if fh.tell() == 0:
            return False
        fh.seek(-1, 2)
        return fh.read(1) not in (b"\n", b"\r")


def read_log(path: Path, sink: FrameSink, fast: bool = True) -> ReadOutcome:
    ext, gz = _suffixes(path)
    if fast and ext == ".log":
        return read_candump(path, gz, sink)
    if fast and ext == ".asc":
        mark = sink.stats.frames
        r = read_asc(path, gz, sink)
        if r is not None:
            return r
        if sink.stats.frames != mark:  # pragma: no cover - CAN FD after classic frames
            raise CanLogError(path, "header", "mixed classic/FD ASC not supported by the fast path")
    return read_python_can(path, ext, gz, sink)


# -- import --------------------------------------------------------------------------------------
@dataclass
class CanImportReport:
    path: str
    vehicle_id: str | None = None
    frames: int = 0
    decoded: int = 0
    skipped: int = 0
    error_frames: int = 0
    negative_responses: int = 0
    isotp_errors: int = 0
    messages: int = 0
    values: int = 0
    samples: int = 0
    dtc_events: int = 0
    batches: int = 0
    ecus: list = field(default_factory=list)
    reader: str = ""
    bad_lines: list = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    dbc_frames: int = 0

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


def _vehicle(sink: FrameSink, vehicle_id: str | None, origin: str) -> str:
    if sink.vins:
        vin = min(sink.vins, key=sink.vins.get)
        if len(sink.vins) > 1:
            log.warning("%s: several VINs answered (%s); recording under the first, %s", origin, sorted(sink.vins), vin)
        return vin
    if vehicle_id:
        if not VIN_RE.match(vehicle_id.upper()):
            raise VehicleIdError(f"--vehicle-id {vehicle_id!r} is not a 17-character VIN (A-Z without I/O/Q, 0-9)")
        return vehicle_id.upper()
    raise VehicleIdError(f"{origin}: no VIN in the traffic (no mode 09 PID 02 answer); pass --vehicle-id")


def write_rows(sink: FrameSink, vehicle_id: str, paths: Paths, source: str = "can", batch_rows: int = 1000,
               writer: spool.SpoolWriter | None = None) -> tuple[int, int, int]:
    rows = sink.builder.finish()
    own = writer is None
    writer = writer or spool.SpoolWriter(paths, source)
    iso = spool.iso
    samples = [dict(r, ts=iso(r["ts"]), vehicle_id=vehicle_id, source=source) for r in rows]
    dtcs = [{"vehicle_id": vehicle_id, "ts": iso(ts), "code": c, "status": s} for ts, c, s in sink.dtcs]
    sink.builder.rows = []
    sink.dtcs = []
    batches = 0
    for i in range(0, max(len(samples), 1), batch_rows):
        chunk = samples[i:i + batch_rows]
        if writer.commit(chunk, dtcs if i == 0 else []):
            batches += 1
    if own:
        writer.close()
    return len(samples), len(dtcs), batches


def import_log(path: str | Path, paths: Paths, vehicle_id: str | None = None, dbc=None, resolution: float = 1.0,
               fast: bool = True, write: bool = True) -> CanImportReport:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    t0 = time.perf_counter()
    sink = FrameSink(SampleBuilder("can", resolution), dbc)
    outcome = read_log(path, sink, fast=fast)
    st = sink.stats
    rep = CanImportReport(str(path), frames=st.frames, decoded=st.decoded, skipped=st.skipped,
                          error_frames=st.error_frames, negative_responses=st.negative, isotp_errors=st.isotp_errors,
                          messages=st.messages, values=st.values, ecus=sorted(f"{e:02X}" for e in st.ecus),
                          reader=outcome.reader, bad_lines=outcome.bad_lines, dbc_frames=dbc.decoded if dbc else 0)
    if outcome.bad_lines:
        rep.skipped += len(outcome.bad_lines)
    if write:
        rows_pending = bool(sink.builder._row or sink.builder.rows or sink.dtcs)
        if rows_pending:
            vin = _vehicle(sink, vehicle_id, str(path))
            rep.vehicle_id = vin
            rep.samples, rep.dtc_events, rep.batches = write_rows(sink, vin, paths)
    else:
        rep.samples = len(sink.builder.finish())
    rep.seconds = time.perf_counter() - t0
    if outcome.error is not None:
        rep.error = str(outcome.error)
    elif outcome.bad_lines:
        shown = "; ".join(outcome.bad_lines[:5])
        more = f" (+{len(outcome.bad_lines) - 5} more)" if len(outcome.bad_lines) > 5 else ""
        rep.error = f"{path}: {len(outcome.bad_lines)} unreadable line(s) skipped, the rest imported: {shown}{more}"
    return rep


# -- live bus ------------------------------------------------------------------------------------
def record_bus(interface: str, channel: str, paths: Paths, vehicle_id: str | None = None, dbc=None,
               duration: float | None = None, *, query: bool = True, extended: bool = False, period: float = 0.2,
               response_timeout: float = 0.1, batch_interval: float = 1.0, resolution: float = 1.0,
               stop: Callable[[], bool] | None = None, bus_kwargs: dict | None = None) -> CanImportReport:
    """Listen to (and, with `query`, act as the OBD tester on) a live python-can bus.

    As tester it asks for the VIN, the supported-PID bitmaps and then the mapped PIDs, six per
    request, answering every first frame with a flow-control frame so that multi-frame answers
    (VIN, multi-PID) arrive. Batches go to the spool every `batch_interval` seconds.
    """
    import can

    bus = can.Bus(interface=interface, channel=channel, **(bus_kwargs or {}))
    sink = FrameSink(SampleBuilder("can", resolution), dbc)
    writer = spool.SpoolWriter(paths, "can")
    rep = CanImportReport(f"{interface}:{channel}", reader="live")
    req_id = 0x18DB33F1 if extended else 0x7DF

    def send(payload: bytes, arb=req_id):
        bus.send(can.Message(arbitration_id=arb, is_extended_id=extended,
                             data=bytes([len(payload)]) + payload + b"\x00" * (7 - len(payload))))

    def flow_control(arb_id, is_ext):
        bus.send(can.Message(arbitration_id=flow_control_target(arb_id, is_ext), is_extended_id=is_ext,
                             data=bytes([0x30, 0x00, 0x00, 0, 0, 0, 0, 0])))

    if query:
        sink.obd.on_first_frame = flow_control
    # the tester's script: VIN, supported PIDs, then the poll loop
    script = [bytes([0x09, 0x02]), bytes([0x01, 0x00, 0x20, 0x40, 0x60, 0x80, 0xA0]), b"\x03", b"\x07"] if query else []
    groups: list[bytes] = []
    t_start = time.monotonic()
    deadline = t_start + duration if duration else None
    next_send = t_start
    awaiting = None
    last_commit = time.monotonic()
    vin = None
    pending_rows: list[dict] = []
    pending_dtcs: list = []

    def flush(final=False):
        nonlocal vin, last_commit
        rows = sink.builder.rows
        if final:
            rows = sink.builder.finish()
        if not rows and not sink.dtcs:
            return
        if vin is None:
            if not sink.vins and not vehicle_id and not final:
                return  # keep buffering until the VIN answer arrives
            vin = _vehicle(sink, vehicle_id, rep.path)
            rep.vehicle_id = vin
        s, d, b = write_rows(sink, vin, paths, writer=writer, batch_rows=10_000)
        rep.samples += s
        rep.dtc_events += d
        rep.batches += b
        last_commit = time.monotonic()

    try:
        while not (stop and stop()) and not (deadline and time.monotonic() >= deadline):
            now = time.monotonic()
            if query and (awaiting is None or now >= awaiting) and now >= next_send:
                if script:
                    send(script.pop(0))
                else:
                    if not groups:
                        sup = set().union(*sink.obd.supported.values()) if sink.obd.supported else set(PIDS)
                        wanted = [p for p in PIDS if p in sup]
                        groups = [bytes([0x01, *wanted[i:i + 6]]) for i in range(0, len(wanted), 6)]
                        cycle = list(groups)
                    if not cycle:
                        cycle = list(groups)
                        next_send = now + period
                        awaiting = None
                        continue
                    send(cycle.pop(0))
                awaiting = now + response_timeout
            msg = bus.recv(timeout=0.005)
            if msg is not None:
                if msg.is_error_frame:
                    sink.obd.error_frame()
                else:
                    before = sink.stats.messages
                    sink.feed(msg.timestamp or time.time(), msg.arbitration_id, msg.is_extended_id, bytes(msg.data))
                    if sink.stats.messages != before:
                        awaiting = now  # answered: next request right away
            if time.monotonic() - last_commit >= batch_interval:
                flush()
        flush(final=True)
    finally:
        writer.close()
        bus.shutdown()
    st = sink.stats
    rep.frames, rep.decoded, rep.skipped, rep.error_frames = st.frames, st.decoded, st.skipped, st.error_frames
    rep.negative_responses, rep.isotp_errors, rep.messages, rep.values = st.negative, st.isotp_errors, st.messages, st.values
    rep.ecus = sorted(f"{e:02X}" for e in st.ecus)
    rep.seconds = time.monotonic() - t_start
    return rep
