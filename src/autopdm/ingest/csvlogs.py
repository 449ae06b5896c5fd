"""Third-party CSV logger files → canonical samples. One reader per format, from a registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from .. import store
from ..config import Paths


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
