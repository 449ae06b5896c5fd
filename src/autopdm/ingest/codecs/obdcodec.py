"""OBD-II (SAE J1979) payload codec shared by every OBD path.

The ELM327 recorder (python-OBD), the passive CAN/ISO-TP decoder and the ELM327 simulator all
use this one table, so a PID means the same column and unit everywhere. Pure functions over
bytes; no I/O.
"""

from __future__ import annotations

from typing import Callable, Iterator

from autopdm.schemas import is_vin  # one VIN rule for every path


def _u8(scale: float = 1.0, offset: float = 0.0) -> Callable[[bytes], float]:
    return lambda d: d[0] * scale + offset


def _u16(scale: float = 1.0) -> Callable[[bytes], float]:
    return lambda d: ((d[0] << 8) | d[1]) * scale


def _u32(scale: float = 1.0) -> Callable[[bytes], float]:
    return lambda d: ((d[0] << 24) | (d[1] << 16) | (d[2] << 8) | d[3]) * scale


# mode 01 PID → (canonical column, data bytes, decoder)
PIDS: dict[int, tuple[str, int, Callable[[bytes], float]]] = {
    0x04: ("engine_load_pct", 1, _u8(100 / 255)),
    0x05: ("coolant_temp_c", 1, _u8(1, -40)),
    0x0C: ("rpm", 2, _u16(0.25)),
    0x0D: ("speed_kph", 1, _u8()),
    0x0F: ("intake_air_temp_c", 1, _u8(1, -40)),
    0x11: ("throttle_pct", 1, _u8(100 / 255)),
    0x2F: ("fuel_level_pct", 1, _u8(100 / 255)),
    0x31: ("distance_since_dtc_clear_km", 2, _u16()),
    0x42: ("control_module_voltage_v", 2, _u16(0.001)),
    0x46: ("ambient_air_temp_c", 1, _u8(1, -40)),
    0xA6: ("odometer_km", 4, _u32(0.1)),
}
COLUMN_PID = {col: pid for pid, (col, _, _) in PIDS.items()}

# data length of every mode 01 PID we may meet in a multi-PID answer, so that we can walk past
# PIDs we do not map (J1979 table; 0 = variable/unknown → stop walking)
PID_LEN = {pid: n for pid, (_, n, _) in PIDS.items()}
PID_LEN.update({p: 4 for p in (0x00, 0x20, 0x40, 0x60, 0x80, 0xA0, 0xC0, 0xE0)})
PID_LEN.update({0x01: 4, 0x02: 2, 0x03: 2, 0x06: 1, 0x07: 1, 0x08: 1, 0x09: 1, 0x0A: 1, 0x0B: 1, 0x0E: 1,
                0x10: 2, 0x12: 1, 0x13: 1, 0x1C: 1, 0x1D: 1, 0x1E: 1, 0x1F: 2, 0x21: 2, 0x2C: 1, 0x2D: 1,
                0x2E: 1, 0x30: 1, 0x33: 1, 0x43: 2, 0x44: 2, 0x45: 1, 0x47: 1, 0x49: 1, 0x4A: 1, 0x4C: 1,
                0x51: 1, 0x5C: 1, 0x5E: 2})


def mode01_items(payload: bytes):
    """(pid, data bytes) of each PID in a positive mode 01 answer `41 pid data [pid data ...]`;
    stops at the first PID of unknown length or a truncated one."""
    i, n = 1, len(payload)
    while i < n:
        pid = payload[i]
        size = PID_LEN.get(pid, 0)
        if size == 0 or i + 1 + size > n:
            return
        yield pid, payload[i + 1:i + 1 + size]
        i += 1 + size


def decode_mode01(payload: bytes) -> dict[int, float] | None:
    """Decode a positive mode 01 answer (multi-PID answers too).

    Returns {pid: value} for mapped PIDs; None for a negative or malformed answer.
    """
    if not payload or payload[0] != 0x41:
        return None
    return {pid: PIDS[pid][2](data) for pid, data in mode01_items(payload) if pid in PIDS}


def encode_mode01(pid: int, value: float) -> bytes:
    """Inverse of the table (for the simulators): PID value → data bytes."""
    col, size, _ = PIDS[pid]
    raw = {
        0x04: lambda v: v * 255 / 100, 0x11: lambda v: v * 255 / 100, 0x2F: lambda v: v * 255 / 100,
        0x05: lambda v: v + 40, 0x0F: lambda v: v + 40, 0x46: lambda v: v + 40,
        0x0C: lambda v: v * 4, 0x0D: lambda v: v, 0x31: lambda v: v,
        0x42: lambda v: v * 1000, 0xA6: lambda v: v * 10,
    }[pid](value)
    raw = max(0, min(int(round(raw)), (1 << (8 * size)) - 1))
    return raw.to_bytes(size, "big")


def supported_bitmap(pids: set[int], base: int) -> bytes:
    """4-byte answer to 01 `base` (0x00, 0x20, ...): bit for base+1 … base+32."""
    bits = 0
    for i in range(32):
        p = base + 1 + i
        if p in pids or (i == 31 and any(q > base + 32 for q in pids)):
            bits |= 1 << (31 - i)
    return bits.to_bytes(4, "big")


def parse_bitmap(data: bytes, base: int) -> set[int]:
    bits = int.from_bytes(data[:4], "big")
    return {base + 1 + i for i in range(32) if bits & (1 << (31 - i))}


def decode_dtcs(payload: bytes) -> list[str]:
    """`43|47|4A n hi lo hi lo …` (CAN form, with count byte) → ['P0562', …]."""
    if not payload or payload[0] not in (0x43, 0x47, 0x4A):
        return []
    body = payload[2:2 + 2 * payload[1]] if len(payload) > 1 else b""
    return [c for c in (dtc_code(body[i], body[i + 1]) for i in range(0, len(body) - 1, 2)) if c]


def dtc_code(a: int, b: int) -> str | None:
    if a == 0 and b == 0:
        return None
    return "PCBU"[a >> 6] + str((a >> 4) & 3) + f"{a & 0x0F:X}{b:02X}"


def encode_dtc(code: str) -> bytes:
    a = ("PCBU".index(code[0]) << 6) | (int(code[1]) << 4) | int(code[2], 16)
    return bytes([a, int(code[3:5], 16)])


def decode_vin(payload: bytes) -> str | None:
    """`49 02 [count] VIN…` → the VIN if it is 17 valid characters, else None."""
    if len(payload) < 3 or payload[0] != 0x49 or payload[1] != 0x02:
        return None
    return clean_vin(payload[2:])


def clean_vin(raw: bytes | bytearray | str | None) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, (bytes, bytearray)):
        raw = bytes(b for b in raw if 0x20 < b < 0x7F).decode("ascii", "ignore")
    text = str(raw).strip().upper()
    cand = text[-17:]  # a leading message-count byte or padding comes first
    return cand if is_vin(cand) else None


def is_negative(payload: bytes) -> bool:
    return bool(payload) and payload[0] == 0x7F


NRC = {0x10: "generalReject", 0x11: "serviceNotSupported", 0x12: "subFunctionNotSupported",
       0x13: "incorrectMessageLength", 0x22: "conditionsNotCorrect", 0x31: "requestOutOfRange",
       0x78: "responsePending"}


def walk(payload: bytes) -> Iterator[tuple[int, float]]:
    d = decode_mode01(payload) or {}
    return iter(d.items())
