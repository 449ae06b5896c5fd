"""OBD-II over ISO-TP (ISO 15765-2/-4), decoded passively from raw CAN frames.

Requests go to 0x7DF (functional) or 0x7E0-0x7E7 (physical), answers come from 0x7E8-0x7EF; the
29-bit forms are 0x18DB33F1 / 0x18DAxxF1 (requests) and 0x18DAF1xx (answers from ECU xx).
Single frames are decoded at once; first + consecutive frames are reassembled per answering
ECU (the multi-frame VIN, multi-PID answers); the tester's flow-control frames are recognised.
Negative answers (7F service NRC) are counted and skipped, never decoded as values.

The decoder is the hot loop of a log import, so `feed` is written for speed: integer ids,
``bytes`` payloads, dict lookups, no objects per frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from autopdm.ingest.codecs.obdcodec import PIDS, decode_dtcs, decode_vin, mode01_items, parse_bitmap

RESP_11 = range(0x7E8, 0x7F0)
REQ_11 = set(range(0x7E0, 0x7E8)) | {0x7DF}
DTC_STATUS = {0x43: "stored", 0x47: "pending", 0x4A: "permanent"}
_COLS = {pid: spec[0] for pid, spec in PIDS.items()}
_FN = {pid: spec[2] for pid, spec in PIDS.items()}


def response_source(arb_id: int, is_ext: bool) -> int | None:
    """ECU address of an OBD answer frame, or None when the frame is not an OBD answer."""
    if is_ext:
        return arb_id & 0xFF if (arb_id & 0x1FFFFF00) == 0x18DAF100 else None
    return arb_id - 0x7E8 if 0x7E8 <= arb_id <= 0x7EF else None


def is_request(arb_id: int, is_ext: bool) -> bool:
    if is_ext:
        return (arb_id & 0x1FFF00FF) == 0x18DA00F1 or arb_id == 0x18DB33F1
    return arb_id in REQ_11


def request_id(is_ext: bool) -> int:
    """Functional (broadcast) OBD request id."""
    return 0x18DB33F1 if is_ext else 0x7DF


def physical_ids(ecu: int, is_ext: bool) -> tuple[int, int]:
    """(request id, answer id) of ECU `ecu` (0 = engine; the 29-bit form takes the ECU address)."""
    if is_ext:
        return 0x18DA00F1 | (ecu << 8), 0x18DAF100 | ecu
    return 0x7E0 + ecu, 0x7E8 + ecu


def single_frame(payload: bytes, pad: int = 0x00) -> bytes:
    """An ISO-TP single frame of 8 bytes (ISO 15765-4 asks for DLC 8 on OBD)."""
    if not 0 < len(payload) <= 7:
        raise ValueError(f"a single frame carries 1-7 bytes, not {len(payload)}")
    return (bytes([len(payload)]) + payload).ljust(8, bytes([pad]))


def flow_control_target(arb_id: int, is_ext: bool) -> int:
    """Where the tester sends flow control for an answer from `arb_id`."""
    if is_ext:
        return 0x18DA00F1 | ((arb_id & 0xFF) << 8)
    return arb_id - 8


@dataclass
class DecodeStats:
    frames: int = 0
    decoded: int = 0          # frames that were OBD traffic and understood (answers, requests, flow control)
    skipped: int = 0          # frames that are not OBD-II diagnostic traffic (or not understood)
    error_frames: int = 0
    messages: int = 0         # complete OBD answers
    values: int = 0
    negative: int = 0
    isotp_errors: int = 0     # lost or out-of-order consecutive frames
    requests: int = 0
    ecus: set = field(default_factory=set)
    nrc: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k not in ("ecus", "nrc")}
        d["ecus"] = sorted(f"{e:02X}" for e in self.ecus)
        d["negative_by_nrc"] = {f"{k:02X}": v for k, v in self.nrc.items()}
        return d


class ObdDecoder:
    """Feed frames; answers come out through `on_value(ts, column, value)` and friends."""

    def __init__(self, on_value: Callable[[float, str, float], None], on_dtc: Callable[[float, str, str], None] | None = None,
                 on_vin: Callable[[float, str], None] | None = None):
        self.on_value = on_value
        self.on_dtc = on_dtc or (lambda ts, code, status: None)
        self.on_vin = on_vin or (lambda ts, vin: None)
        self.stats = DecodeStats()
        self.supported: dict[int, set[int]] = {}  # ECU → mode 01 PIDs it says it supports
        self._partial: dict[int, list] = {}       # (arb_id) → [expected_len, bytearray, next_seq]
        self.on_first_frame: Callable[[int, bool], None] | None = None  # live tester hook: send flow control

    def error_frame(self) -> None:
        self.stats.frames += 1
        self.stats.error_frames += 1

    def feed(self, ts: float, arb_id: int, is_ext: bool, data: bytes) -> None:
        st = self.stats
        st.frames += 1
        if is_ext:
            src = arb_id & 0xFF if (arb_id & 0x1FFFFF00) == 0x18DAF100 else None
        else:
            src = arb_id - 0x7E8 if 0x7E8 <= arb_id <= 0x7EF else None
        if src is None:
            if (arb_id in REQ_11 and not is_ext) or (is_ext and ((arb_id & 0x1FFF00FF) == 0x18DA00F1 or arb_id == 0x18DB33F1)):
                st.decoded += 1
                if data and (data[0] & 0xF0) != 0x30:
                    st.requests += 1
            else:
                st.skipped += 1
            return
        if not data:
            st.skipped += 1
            return
        pci = data[0] >> 4
        if pci == 0:  # single frame
            n = data[0] & 0x0F
            if n == 0 or n > len(data) - 1:
                st.skipped += 1
                return
            st.decoded += 1
            self.message(ts, src, data[1:1 + n])
        elif pci == 1:  # first frame
            if len(data) < 8:
                st.skipped += 1
                return
            total = ((data[0] & 0x0F) << 8) | data[1]
            self._partial[arb_id] = [total, bytearray(data[2:8]), 1]
            st.decoded += 1
            if self.on_first_frame is not None:
                self.on_first_frame(arb_id, is_ext)
        elif pci == 2:  # consecutive frame
            p = self._partial.get(arb_id)
            if p is None or (data[0] & 0x0F) != (p[2] & 0x0F):
                st.isotp_errors += 1
                st.skipped += 1
                self._partial.pop(arb_id, None)
                return
            p[1] += data[1:8]
            p[2] += 1
            st.decoded += 1
            if len(p[1]) >= p[0]:
                del self._partial[arb_id]
                self.message(ts, src, bytes(p[1][:p[0]]))
        elif pci == 3:  # flow control from an ECU (when it is the receiver); not ours to decode
            st.decoded += 1
        else:
            st.skipped += 1

    def message(self, ts: float, ecu: int, payload: bytes) -> None:
        """A complete OBD answer from ECU `ecu` (reassembled here, or by an ISO-TP stack)."""
        st = self.stats
        st.messages += 1
        st.ecus.add(ecu)
        sid = payload[0]
        if sid == 0x41:
            for pid, data in mode01_items(payload):
                fn = _FN.get(pid)
                if fn is not None:
                    self.on_value(ts, _COLS[pid], fn(data))
                    st.values += 1
                elif pid % 0x20 == 0:
                    self.supported.setdefault(ecu, set()).update(parse_bitmap(data, pid))
        elif sid == 0x7F:
            st.negative += 1
            nrc = payload[2] if len(payload) > 2 else 0
            st.nrc[nrc] = st.nrc.get(nrc, 0) + 1
        elif sid == 0x49:
            vin = decode_vin(payload)
            if vin:
                self.on_vin(ts, vin)
        elif sid in DTC_STATUS:
            for code in decode_dtcs(payload):
                self.on_dtc(ts, code, DTC_STATUS[sid])


class SampleBuilder:
    """Values → canonical sample rows: one row per `resolution` seconds, last value wins.

    OBD answers arrive one PID at a time; a row per answer would leave every other column null.
    Rows are emitted in time order as the log advances.
    """

    def __init__(self, source: str, resolution: float = 1.0):
        self.source = source
        self.resolution = resolution
        self.rows: list[dict] = []
        self._bin: int | None = None
        self._row: dict | None = None

    def value(self, ts: float, column: str, value) -> None:
        b = int(ts // self.resolution)
        if self._bin is None or b > self._bin:  # a late value (b < bin) joins the current row
            if self._row is not None:
                self.rows.append(self._row)
            self._bin = b
            self._row = {"ts": b * self.resolution}
        self._row[column] = value

    def finish(self) -> list[dict]:
        if self._row is not None:
            self.rows.append(self._row)
            self._row, self._bin = None, None
        return self.rows
