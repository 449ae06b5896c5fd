"""Third-party CSV logger files → canonical samples. One reader per format, from a registry.

Files are read line by line, not handed whole to a CSV parser: a line with the wrong number of
fields, or binary bytes in the middle of a file (a logger's flash card), is quarantined with its
file, line and reason, and every other line is kept.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from autopdm import schemas, store
from autopdm.config import Paths


class CsvFormatError(ValueError):
    pass


@dataclass
class CsvResult:
    path: Path
    rows: int
    written: int
    quarantined: int
    unknown_columns: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)   # the first quarantine reasons, for the summary
    error: str | None = None                          # the file could not be imported at all


@dataclass
class CsvLines:
    """A CSV file split into a header, rows with the header's field count, and bad lines."""

    header: list[str]
    rows: list[list[str]]
    lines: list[int]                  # file line of each row
    seq: list[int]                    # ordinal of each row among the file's text records
    bad: list[tuple[int, str, str]]   # (line, reason, the line as text)


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _text(raw: bytes) -> str | None:
    """The line as text, or None when it is binary data (undecodable or control characters)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # a logger that writes Windows-1252 degrees signs is still text
    return None if _CONTROL.search(text) else text


def _fields(text: str) -> list[str]:
    return next(csv.reader([text], skipinitialspace=True), [])


def read_lines(path: Path) -> CsvLines:
    """Header and good rows of a CSV file; every other non-empty line becomes a bad line."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:  # the input file; a problem writing the store is not caught here
        raise CsvFormatError(f"{path}: cannot read: {exc.strerror or exc}") from None
    raw_lines = data.splitlines()
    numbered = [(n, raw) for n, raw in enumerate(raw_lines, start=1) if raw.strip()]
    if not numbered:
        raise CsvFormatError(f"{path}: empty file (no header line)")
    first, head_raw = numbered[0]
    head_text = _text(head_raw)
    if head_text is None:
        raise CsvFormatError(f"{path}: line {first}: binary data where the CSV header should be")
    header = [h.strip() for h in _fields(head_text)]
    if header and header[-1] == "":  # a trailing comma on the header line
        header = header[:-1]
    out = CsvLines(header, [], [], [], [])
    width = len(header)
    seq = 0
    binary = None  # [first line, last line, bytes] of the binary run being read
    for n, raw in numbered[1:]:
        text = _text(raw)
        if text is None:
            if binary is None:
                binary = [n, n, 0, raw[:200].decode("latin-1")]
                out.bad.append(binary)
            binary[1], binary[2] = n, binary[2] + len(raw) + 1
            continue
        binary = None
        row = _fields(text)
        seq += 1
        if len(row) == width + 1 and row[-1].strip() == "":  # trailing comma
            row = row[:-1]
        if len(row) != width:
            out.bad.append((n, f"{len(row)} fields, the header has {width}", text[:500]))
            continue
        out.rows.append(row)
        out.lines.append(n)
        out.seq.append(seq - 1)
    out.bad = [b if isinstance(b, tuple) else
               (b[0], f"binary data (not text): lines {b[0]}-{b[1]}, about {b[2]:,} bytes", b[3]) for b in out.bad]
    return out


def _frame(lines: CsvLines) -> pd.DataFrame:
    return pd.DataFrame(lines.rows, columns=lines.header, dtype=object) if lines.rows else \
        pd.DataFrame({c: pd.Series(dtype=object) for c in lines.header})


# a reader returns (samples frame, unknown columns, file line of each row, bad lines)
READERS: dict[str, Callable[..., tuple[pd.DataFrame, list[str], list[int], list]]] = {}


def register(name: str):
    def deco(fn):
        READERS[name] = fn
        return fn
    return deco


# carOBD (Carloop) column → (canonical column, scale)
CAROBD_MAP = {
    "ENGINE_RPM": "rpm",
    "VEHICLE_SPEED": "speed_kph",
    "THROTTLE": "throttle_pct",
    "ENGINE_LOAD": "engine_load_pct",
    "COOLANT_TEMPERATURE": "coolant_temp_c",
    "FUEL_TANK": "fuel_level_pct",
    "INTAKE_AIR_TEMP": "intake_air_temp_c",
    "CONTROL_MODULE_VOLTAGE": "control_module_voltage_v",
}
# PIDs the logger records that have no canonical column: known, not "unknown"
CAROBD_KNOWN_UNUSED = {
    "ENGINE_RUN_TINE", "LONG_TERM_FUEL_TRIM_BANK_1", "SHORT_TERM_FUEL_TRIM_BANK_1", "INTAKE_MANIFOLD_PRESSURE",
    "ABSOLUTE_THROTTLE_B", "PEDAL_D", "PEDAL_E", "COMMANDED_THROTTLE_ACTUATOR", "FUEL_AIR_COMMANDED_EQUIV_RATIO",
    "ABSOLUTE_BAROMETRIC_PRESSURE", "RELATIVE_THROTTLE_POSITION", "TIMING_ADVANCE",
    "CATALYST_TEMPERATURE_BANK1_SENSOR1", "CATALYST_TEMPERATURE_BANK1_SENSOR2", "COMMANDED_EVAPORATIVE_PURGE",
    "TIME_RUN_WITH_MIL_ON", "TIME_SINCE_TROUBLE_CODES_CLEARED", "DISTANCE_TRAVELED_WITH_MIL_ON",
    "WARM_UPS_SINCE_CODES_CLEARED",
}


@register("carobd")
def read_carobd(path: Path, vehicle_id: str, start: pd.Timestamp):
    """carOBD: header units in empty brackets, trailing comma, no timestamp (1 Hz), no VIN."""
    lines = read_lines(path)
    raw = _frame(lines)
    raw.columns = [str(c).split("(")[0].strip() for c in raw.columns]
    raw = raw.loc[:, [c for c in raw.columns if c and not c.startswith("Unnamed")]]
    if "VEHICLE_SPEED" not in raw.columns or "ENGINE_RPM" not in raw.columns:
        raise CsvFormatError(f"{path}: not a carOBD log (no VEHICLE_SPEED / ENGINE_RPM column in line 1)")
    unknown = [c for c in raw.columns if c not in CAROBD_MAP and c not in CAROBD_KNOWN_UNUSED]
    out = pd.DataFrame({canon: raw[col].str.strip() for col, canon in CAROBD_MAP.items() if col in raw.columns})
    # one record a second: a quarantined record keeps its second, so the rest stay in time
    out.insert(0, "ts", start + pd.to_timedelta(lines.seq, unit="s"))
    return out, unknown, lines.lines, lines.bad


# Torque Pro CSV export: "Name(unit)" headers. Name (lower case) → canonical column.
TORQUE_MAP = {
    "speed (obd)": "speed_kph",
    "engine rpm": "rpm",
    "engine load": "engine_load_pct",
    "throttle position(manifold)": "throttle_pct",
    "engine coolant temperature": "coolant_temp_c",
    "intake air temperature": "intake_air_temp_c",
    "ambient air temp": "ambient_air_temp_c",
    "fuel level (from engine ecu)": "fuel_level_pct",
    "voltage (control module)": "control_module_voltage_v",
    "distance travelled since codes cleared": "distance_since_dtc_clear_km",
    "odometer": "odometer_km",
}
TORQUE_KNOWN_UNUSED = {
    "gps time", "device time", "longitude", "latitude", "gps speed", "horizontal dilution of precision", "altitude",
    "bearing", "g", "gps satellites", "gps accuracy", "gps altitude", "gps bearing", "gps latitude", "gps longitude",
    "engine load(absolute)", "voltage (obd adapter)", "trip distance", "trip time(since journey start)",
    "trip time(whilst moving)", "trip time(whilst stationary)", "trip average speed(whilst moving only)",
    "trip average speed(whilst stopped or moving)", "speed (gps)", "fuel used (trip)", "fuel flow rate/minute",
    "fuel flow rate/hour", "kilometers per litre(instant)", "litres per 100 kilometer(instant)",
    "miles per gallon(instant)", "turbo boost & vacuum gauge", "intake manifold pressure", "mass air flow rate",
    "timing advance", "barometric pressure (from vehicle)", "fuel trim bank 1 long term", "fuel trim bank 1 short term",
    "accelerator pedalposition d", "accelerator pedalposition e", "relative throttle position", "co₂ in g/km (instantaneous)",
    "co₂ in g/km (average)", "horsepower (at the wheels)", "torque", "engine kw (at the wheels)", "acceleration sensor(total)",
    "acceleration sensor(x axis)", "acceleration sensor(y axis)", "acceleration sensor(z axis)",
}
_TORQUE_HEADER = re.compile(r"^(.*?)\(([^()]*)\)$")


def _torque_unit(series: pd.Series, unit: str | None, canon: str) -> pd.Series:
    """Numbers in canonical units; '-' and blanks (Torque's "no reading") → null; text stays for quarantine."""
    raw = series.str.strip().replace({"-": None, "": None, "∞": None})
    num = pd.to_numeric(raw, errors="coerce")
    u = (unit or "").strip().lower()
    if u in ("mph",):
        num = num * 1.609344
    elif u in ("°f", "f", "deg f"):
        num = (num - 32) * 5 / 9
    elif u in ("miles", "mi"):
        num = num * 1.609344
    bad = num.isna() & raw.notna()
    return num.astype(object).where(~bad, raw)  # unparseable text goes on to be quarantined with a reason


@register("torque")
def read_torque(path: Path, vehicle_id: str, start: pd.Timestamp):
    """Torque Pro "Realtime Information" CSV export. Time from Device Time (the phone's local clock),
    shifted to UTC by the offset in GPS Time ("… GMT+01:00 …") when present, else taken as UTC."""
    lines = read_lines(path)
    raw = _frame(lines)
    raw.columns = [str(c).strip() for c in raw.columns]
    if "Device Time" not in raw.columns:
        raise CsvFormatError(f"{path}: not a Torque Pro export (no 'Device Time' column in line 1)")
    keep = (raw["Device Time"].str.strip() != "Device Time").to_numpy()  # header repeated per session
    raw = raw[keep].reset_index(drop=True)
    row_lines = [n for n, k in zip(lines.lines, keep) if k]
    mapping, unknown = {}, []
    for col in raw.columns:
        if not col or col.startswith("Unnamed"):
            continue
        m = _TORQUE_HEADER.match(col)
        name, unit = (m.group(1).strip(), m.group(2)) if m else (col, None)
        key, full = name.lower(), col.lower()
        if key in TORQUE_MAP and TORQUE_MAP[key] not in mapping.values():
            mapping[col] = (TORQUE_MAP[key], unit)
        elif key not in TORQUE_KNOWN_UNUSED and full not in TORQUE_KNOWN_UNUSED:
            unknown.append(col)
    device = raw["Device Time"].str.strip()
    ts = pd.to_datetime(device, format="%d-%b-%Y %H:%M:%S.%f", errors="coerce")
    if ts.isna().any():
        ts = ts.fillna(pd.to_datetime(device, format="mixed", dayfirst=True, errors="coerce"))
    offset = pd.Timedelta(0)
    if "GPS Time" in raw.columns:
        tz = raw["GPS Time"].str.extract(r"GMT([+-]\d{2}):?(\d{2})").dropna()
        if len(tz):
            h, mnt = tz.iloc[0]
            sign = -1 if h.startswith("-") else 1
            offset = sign * pd.Timedelta(hours=abs(int(h)), minutes=int(mnt))
    # an unreadable Device Time stays as text, so that the row is quarantined with it as the reason
    utc = (ts - offset).dt.tz_localize("UTC")
    out = pd.DataFrame({"ts": utc.astype(object).where(utc.notna(), device.where(device != "", "(empty)"))})
    for col, (canon, unit) in mapping.items():
        out[canon] = _torque_unit(raw[col], unit, canon)
    return out, unknown, row_lines, lines.bad


def _needs_vin(fmt: str) -> bool:
    return fmt in ("carobd", "torque")  # neither logger writes the VIN


def check_args(fmt: str, vehicle_id: str | None) -> None:
    """Usage errors, before any file is read."""
    if fmt not in READERS:
        raise CsvFormatError(f"unknown CSV format {fmt!r}; known: {sorted(READERS)}")
    if vehicle_id is None and _needs_vin(fmt):
        raise CsvFormatError(f"the {fmt} format carries no VIN; pass --vehicle-id")
    if vehicle_id is not None and not schemas.is_vin(vehicle_id):
        raise CsvFormatError(f"--vehicle-id {vehicle_id!r} is not a 17-character VIN (A-Z without I/O/Q, 0-9)")


def import_file(path: Path, fmt: str, vehicle_id: str | None, start: pd.Timestamp, paths: Paths) -> tuple[CsvResult, pd.Timestamp]:
    """One file: its good rows to the store, its bad lines and rows to quarantine. Returns the
    result and the start time for a next file of the same vehicle."""
    df, unknown, row_lines, bad = READERS[fmt](path, vehicle_id=vehicle_id, start=start)
    df["vehicle_id"] = vehicle_id
    df["source"] = "csv"
    res = store.append(df, "samples", paths, origin=str(path), lines=row_lines)
    q = schemas.quarantine_frame("samples", str(path), [(n, "line", why, text) for n, why, text in bad], unit="line")
    store.write_quarantine(q, paths, "samples")
    reasons = [f"line {n}: {why}" for n, why, _ in bad] + res.reasons
    nxt = start
    ts = pd.to_datetime(df["ts"], utc=True, errors="coerce") if len(df) else pd.Series(dtype="datetime64[ns, UTC]")
    if ts.notna().any():  # consecutive files of one vehicle follow each other with a parked hour between
        nxt = ts.max() + pd.Timedelta(hours=1)
    return CsvResult(path, len(df) + len(bad), res.written, res.quarantined + len(bad), unknown, reasons[:20]), nxt


def import_files(paths_in: list[Path], fmt: str, vehicle_id: str | None, start: str | None = None,
                 paths: Paths | None = None, progress: Callable[[Path], None] | None = None,
                 keep_going: bool = False) -> list[CsvResult]:
    """Import every file. A file that cannot be read at all raises (or, with `keep_going`, is
    reported in its result's `error` and the next file is imported)."""
    check_args(fmt, vehicle_id)
    paths = paths or Paths.from_env()
    try:
        t0 = pd.Timestamp(start or "2026-01-01T08:00:00Z")
    except ValueError as exc:
        raise CsvFormatError(f"--start {start!r} is not a time: {exc}") from None
    t0 = t0.tz_localize("UTC") if t0.tzinfo is None else t0.tz_convert("UTC")
    results = []
    for p in map(Path, paths_in):
        try:
            res, t0 = import_file(p, fmt, vehicle_id, t0, paths)
        except CsvFormatError as exc:
            if not keep_going:
                raise
            res = CsvResult(p, 0, 0, 0, error=str(exc))
        results.append(res)
        if progress:
            progress(p)
    return results
