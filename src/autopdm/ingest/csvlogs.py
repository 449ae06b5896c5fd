"""Third-party CSV logger files → canonical samples. One reader per format, from a registry."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from autopdm import store
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


READERS: dict[str, Callable[..., tuple[pd.DataFrame, list[str]]]] = {}


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
def read_carobd(path: Path, vehicle_id: str, start: pd.Timestamp) -> tuple[pd.DataFrame, list[str]]:
    """carOBD: header units in empty brackets, trailing comma, no timestamp (1 Hz), no VIN."""
    # index_col=False: the trailing comma would otherwise shift every column onto the next name
    raw = pd.read_csv(path, skipinitialspace=True, dtype=str, keep_default_na=False, index_col=False)
    raw.columns = [str(c).split("(")[0].strip() for c in raw.columns]
    raw = raw.loc[:, [c for c in raw.columns if c and not c.startswith("Unnamed")]]
    if "VEHICLE_SPEED" not in raw.columns or "ENGINE_RPM" not in raw.columns:
        raise CsvFormatError(f"{path}: not a carOBD log (no VEHICLE_SPEED / ENGINE_RPM column)")
    unknown = [c for c in raw.columns if c not in CAROBD_MAP and c not in CAROBD_KNOWN_UNUSED]
    out = pd.DataFrame({canon: raw[col].str.strip() for col, canon in CAROBD_MAP.items() if col in raw.columns})
    out.insert(0, "ts", start + pd.to_timedelta(range(len(raw)), unit="s"))
    return out, unknown


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
def read_torque(path: Path, vehicle_id: str, start: pd.Timestamp) -> tuple[pd.DataFrame, list[str]]:
    """Torque Pro "Realtime Information" CSV export. Time from Device Time (the phone's local clock),
    shifted to UTC by the offset in GPS Time ("… GMT+01:00 …") when present, else taken as UTC."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True, index_col=False)
    raw.columns = [str(c).strip() for c in raw.columns]
    if "Device Time" not in raw.columns:
        raise CsvFormatError(f"{path}: not a Torque Pro export (no 'Device Time' column)")
    raw = raw[raw["Device Time"].str.strip() != "Device Time"].reset_index(drop=True)  # header repeated per session
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
    ts = pd.to_datetime(raw["Device Time"].str.strip(), format="%d-%b-%Y %H:%M:%S.%f", errors="coerce")
    if ts.isna().any():
        ts = ts.fillna(pd.to_datetime(raw["Device Time"].str.strip(), format="mixed", dayfirst=True, errors="coerce"))
    offset = pd.Timedelta(0)
    if "GPS Time" in raw.columns:
        tz = raw["GPS Time"].str.extract(r"GMT([+-]\d{2}):?(\d{2})").dropna()
        if len(tz):
            h, mnt = tz.iloc[0]
            sign = -1 if h.startswith("-") else 1
            offset = sign * pd.Timedelta(hours=abs(int(h)), minutes=int(mnt))
    out = pd.DataFrame({"ts": (ts - offset).dt.tz_localize("UTC")})
    for col, (canon, unit) in mapping.items():
        out[canon] = _torque_unit(raw[col], unit, canon)
    return out, unknown


def import_files(paths_in: list[Path], fmt: str, vehicle_id: str | None, start: str | None = None,
                 paths: Paths | None = None, progress: Callable[[Path], None] | None = None) -> list[CsvResult]:
    if fmt not in READERS:
        raise CsvFormatError(f"unknown CSV format {fmt!r}; known: {sorted(READERS)}")
    paths = paths or Paths.from_env()
    t0 = pd.Timestamp(start or "2026-01-01T08:00:00Z")
    t0 = t0.tz_localize("UTC") if t0.tzinfo is None else t0.tz_convert("UTC")
    results = []
    for p in map(Path, paths_in):
        df, unknown = READERS[fmt](p, vehicle_id=vehicle_id, start=t0)
        if vehicle_id is not None:
            df["vehicle_id"] = vehicle_id
        elif "vehicle_id" not in df.columns:
            raise CsvFormatError(f"{p}: the {fmt} format carries no VIN; pass --vehicle-id")
        df["source"] = "csv"
        res = store.append(df, "samples", paths, origin=str(p))
        results.append(CsvResult(p, len(df), res.written, res.quarantined, unknown))
        # consecutive files of one vehicle follow each other with a parked hour between
        if len(df):
            t0 = df["ts"].max() + pd.Timedelta(hours=1)
        if progress:
            progress(p)
    return results
