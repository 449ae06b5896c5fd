"""CAN logs → canonical samples (OBD-II over ISO-TP, and DBC signals).

Log files in every format python-can reads (see `canlog`): frames go to a `FrameSink` (the
passive OBD-II decoder, and the DBC decoder for the ids a signals map wants), samples and DTC
events to the spool and the store. Lines or frames that cannot be imported (garbage, a timestamp
that is not a time) are quarantined with their file, position and reason; a file that cannot be
read to its end keeps every frame before the damage and says where it stopped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from autopdm import schemas, store
from autopdm.config import Paths
from autopdm.ingest import spool
from autopdm.ingest.canlog import CanLogError, read_log
from autopdm.ingest.codecs.isotp import ObdDecoder, SampleBuilder
from autopdm.ingest.codecs.obdcodec import is_vin

log = logging.getLogger(__name__)

__all__ = ["CanLogError", "CanImportReport", "FrameSink", "VehicleIdError", "import_log", "vehicle_for", "write_rows"]


class VehicleIdError(ValueError):
    pass


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

    def error_frame(self) -> None:
        self.obd.error_frame()

    def bad_frame(self) -> None:
        """A frame read but not imported (quarantined): counted, never decoded."""
        self.obd.stats.frames += 1
        self.obd.stats.skipped += 1

    @property
    def stats(self):
        return self.obd.stats


# -- import --------------------------------------------------------------------------------------
QUARANTINE_TABLE = "can_frames"


@dataclass
class CanImportReport:
    path: str
    vehicle_id: str | None = None
    frames: int = 0              # as python-can's LogReader counts them: data, remote, FD and error frames
    decoded: int = 0
    skipped: int = 0
    error_frames: int = 0
    remote_frames: int = 0
    fd_frames: int = 0
    negative_responses: int = 0
    isotp_errors: int = 0
    isotp_timeouts: int = 0      # live tester: answers dropped because N_Cr (or N_Bs) expired
    messages: int = 0
    values: int = 0
    samples: int = 0
    dtc_events: int = 0
    batches: int = 0
    quarantined: int = 0         # lines or frames not imported, each in the quarantine with its reason
    ecus: list = field(default_factory=list)
    reader: str = ""
    bad_lines: list = field(default_factory=list)
    error: str | None = None
    usage_error: bool = False    # not imported for want of an option (--vehicle-id), not for the file
    seconds: float = 0.0
    dbc_frames: int = 0

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


def check_vehicle_id(vehicle_id: str) -> str:
    if not is_vin(vehicle_id.upper()):
        raise VehicleIdError(f"--vehicle-id {vehicle_id!r} is not a 17-character VIN (A-Z without I/O/Q, 0-9)")
    return vehicle_id.upper()


def vehicle_for(sink: FrameSink, vehicle_id: str | None, origin: str) -> str:
    if sink.vins:
        vin = min(sink.vins, key=sink.vins.get)
        if len(sink.vins) > 1:
            log.warning("%s: several VINs answered (%s); recording under the first, %s", origin, sorted(sink.vins), vin)
        return vin
    if vehicle_id:
        return check_vehicle_id(vehicle_id)
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


def _report(path: Path, sink: FrameSink, outcome, dbc) -> CanImportReport:
    st = sink.stats
    return CanImportReport(
        str(path), frames=st.frames, decoded=st.decoded, skipped=st.skipped, error_frames=st.error_frames,
        remote_frames=outcome.remote, fd_frames=outcome.fd, negative_responses=st.negative,
        isotp_errors=st.isotp_errors, messages=st.messages, values=st.values,
        ecus=sorted(f"{e:02X}" for e in st.ecus), reader=outcome.reader, quarantined=len(outcome.bad),
        bad_lines=[f"{unit} {pos}: {why}: {text[:60]!r}" for pos, unit, why, text in outcome.bad],
        dbc_frames=dbc.decoded if dbc else 0)


def _quarantine(path: Path, outcome, paths: Paths) -> None:
    if not outcome.bad:
        return
    by_unit: dict[str, list] = {}
    for pos, unit, why, text in outcome.bad:
        by_unit.setdefault(unit, []).append((pos, "frame", why, text))
    for unit, items in by_unit.items():
        q = schemas.quarantine_frame(QUARANTINE_TABLE, str(path), items, unit=unit)
        store.write_quarantine(q, paths, QUARANTINE_TABLE)


def import_log(path: str | Path, paths: Paths, vehicle_id: str | None = None, dbc=None, resolution: float = 1.0,
               fast: bool = True, write: bool = True) -> CanImportReport:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    t0 = time.perf_counter()

    def new_sink() -> FrameSink:
        if dbc is not None:
            dbc.decoded = dbc.errors = 0
        return FrameSink(SampleBuilder("can", resolution), dbc)

    sink, outcome = read_log(path, new_sink, fast=fast)
    rep = _report(path, sink, outcome, dbc)
    if write:
        _quarantine(path, outcome, paths)
        if sink.builder._row or sink.builder.rows or sink.dtcs:
            vin = vehicle_for(sink, vehicle_id, str(path))
            rep.vehicle_id = vin
            rep.samples, rep.dtc_events, rep.batches = write_rows(sink, vin, paths)
    else:
        rep.samples = len(sink.builder.finish())
    rep.seconds = time.perf_counter() - t0
    if outcome.error is not None:
        rep.error = str(outcome.error)
    elif rep.frames == 0 and not outcome.bad:
        rep.error = f"{path}: no CAN frames in this file (empty, or not a {path.suffix or 'CAN'} log)"
    elif outcome.bad:
        shown = "; ".join(rep.bad_lines[:5])
        more = f" (+{len(rep.bad_lines) - 5} more)" if len(rep.bad_lines) > 5 else ""
        rep.error = (f"{path}: {len(rep.bad_lines)} unreadable line(s) quarantined, the rest imported: {shown}{more}")
    return rep
