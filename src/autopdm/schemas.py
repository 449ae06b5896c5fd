"""Canonical tables as pyarrow schemas, and row validation.

Validation never drops a row silently: `validate` splits a frame into rows that conform and a
quarantine frame that keeps every rejected row (as JSON) with a reason naming column and row.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa

from autopdm import components

TS = pa.timestamp("ms", tz="UTC")
VIN_RE = re.compile(r"[A-HJ-NPR-Z0-9]{17}")  # ISO 3779: no I, O or Q; always used with fullmatch


def is_vin(value) -> bool:
    """Exactly 17 VIN characters: no surrounding space, no trailing newline, upper case."""
    return isinstance(value, str) and VIN_RE.fullmatch(value) is not None

# Plausible physical ranges; a reading outside them is a sensor or decoding fault, not data.
SAMPLE_RANGES: dict[str, tuple[float, float]] = {
    "speed_kph": (0, 320),
    "rpm": (0, 12000),
    "engine_load_pct": (0, 100),
    "throttle_pct": (0, 100),
    "coolant_temp_c": (-60, 160),
    "intake_air_temp_c": (-60, 120),
    "ambient_air_temp_c": (-60, 70),
    "fuel_level_pct": (0, 100),
    "control_module_voltage_v": (0, 32),
    "odometer_km": (0, 2_000_000),
    "distance_since_dtc_clear_km": (0, 70_000),
    "brake_pressure_bar": (0, 300),
    "tire_pressure_kpa_fl": (0, 700),
    "tire_pressure_kpa_fr": (0, 700),
    "tire_pressure_kpa_rl": (0, 700),
    "tire_pressure_kpa_rr": (0, 700),
}
SAMPLE_FLOATS = list(SAMPLE_RANGES)
SOURCES = ("obd", "can", "csv", "sim")

SAMPLES = pa.schema(
    [("vehicle_id", pa.string()), ("ts", TS), ("source", pa.string())]
    + [(c, pa.float64()) for c in SAMPLE_FLOATS[:13]]
    + [("brake_switch", pa.bool_())]
    + [(c, pa.float64()) for c in SAMPLE_FLOATS[13:]]
)

DTC_EVENTS = pa.schema(
    [("vehicle_id", pa.string()), ("ts", TS), ("code", pa.string()), ("status", pa.string())]
)
DTC_RE = re.compile(r"[PCBU][0-9A-F]{4}")
DTC_STATUSES = ("stored", "pending", "permanent")

TRIPS = pa.schema(
    [
        ("vehicle_id", pa.string()),
        ("trip_id", pa.string()),
        ("start_ts", TS),
        ("end_ts", TS),
        ("distance_km", pa.float64()),
        ("duration_s", pa.float64()),
        ("idle_s", pa.float64()),
        ("brake_energy_kj_per_t", pa.float64()),
        ("harsh_brake_count", pa.int32()),
        ("harsh_accel_count", pa.int32()),
        ("max_decel_mps2", pa.float64()),
        ("mean_speed_kph", pa.float64()),
        ("rest_voltage_v", pa.float64()),
        ("crank_min_voltage_v", pa.float64()),
        ("charge_voltage_v", pa.float64()),
        ("ambient_temp_c", pa.float64()),
        ("odometer_end_km", pa.float64()),
        # beyond the contract's minimum: what else proved useful
        ("max_speed_kph", pa.float64()),
        ("stop_count", pa.int32()),
        ("start_coolant_temp_c", pa.float64()),
        ("tire_pressure_min_kpa", pa.float64()),
        ("n_samples", pa.int32()),
        ("source", pa.string()),
    ]
)

CHANNELS = ("phone", "sms", "wechat", "email")
VEHICLES = pa.schema(
    [
        ("vehicle_id", pa.string()),
        ("make", pa.string()),
        ("model", pa.string()),
        ("model_year", pa.int32()),
        ("segment", pa.string()),
        ("curb_mass_kg", pa.float64()),
        ("first_registration_date", pa.date32()),
        ("customer_id", pa.string()),
        ("preferred_channel", pa.string()),
        ("dealer_id", pa.string()),
    ]
)

SERVICE_ACTIONS = ("replace", "inspect", "repair")
SERVICE_EVENTS = pa.schema(
    [
        ("event_id", pa.string()),
        ("vehicle_id", pa.string()),
        ("date", pa.date32()),
        ("odometer_km", pa.float64()),
        ("component", pa.string()),
        ("action", pa.string()),
        ("source", pa.string()),
        ("work_order_id", pa.string()),
    ]
)

# what a workshop measures at a visit (digital vehicle inspection); a removed part's last reading is an
# inspection on the day of its replacement
POSITIONS = ("front", "rear", "fl", "fr", "rl", "rr", "-")
VERDICTS = ("ok", "advise", "replace")
MEASUREMENT_RANGES: dict[str, tuple[float, float]] = {
    "pad_mm": (0.0, 25.0),
    "tread_mm": (0.0, 15.0),
    "battery_soh_pct": (0.0, 100.0),
    "battery_cca_pct": (0.0, 200.0),   # measured / rated cold-cranking amps
    "battery_rest_v": (0.0, 16.0),
}
INSPECTIONS = pa.schema(
    [
        ("inspection_id", pa.string()),
        ("vehicle_id", pa.string()),
        ("date", pa.date32()),
        ("odometer_km", pa.float64()),
        ("component", pa.string()),
        ("position", pa.string()),
        ("measurement", pa.string()),
        ("value", pa.float64()),
        ("verdict", pa.string()),
        ("source", pa.string()),
    ]
)

# what became of a work order
OUTCOME_STATUSES = ("booked", "declined", "no_show", "done_replaced", "done_ok")
OUTCOMES = pa.schema(
    [
        ("work_order_id", pa.string()),
        ("vehicle_id", pa.string()),
        ("component", pa.string()),
        ("date", pa.date32()),
        ("status", pa.string()),
        ("source", pa.string()),
    ]
)

# one row per observed service need, derived from the records (pipeline.needs): `bracket_days` is the
# width of the interval the need was placed in (0 for a breakdown; null when unknown); `position` the
# position whose reading placed it (null when no reading did)
NEED_EVIDENCE = ("measured", "replaced_worn", "breakdown", "replaced")
NEEDS = pa.schema(
    [
        ("vehicle_id", pa.string()),
        ("component", pa.string()),
        ("need_date", pa.date32()),
        ("evidence", pa.string()),
        ("bracket_days", pa.float64()),
        ("position", pa.string()),
    ]
)

# the workshop's records: imported from the CRM, upserted by these natural keys
RECORD_KEYS: dict[str, tuple[str, ...]] = {
    "vehicles": ("vehicle_id",),
    "service_events": ("event_id",),
    "inspections": ("inspection_id",),
    "outcomes": ("work_order_id", "status"),
}

QUARANTINE = pa.schema(
    [
        ("table", pa.string()),
        ("origin", pa.string()),
        ("row", pa.int64()),
        ("column", pa.string()),
        ("reason", pa.string()),
        ("record", pa.string()),
        ("quarantined_at", TS),
    ]
)

TABLES: dict[str, pa.Schema] = {
    "samples": SAMPLES,
    "dtc_events": DTC_EVENTS,
    "trips": TRIPS,
    "vehicles": VEHICLES,
    "service_events": SERVICE_EVENTS,
    "inspections": INSPECTIONS,
    "outcomes": OUTCOMES,
    "needs": NEEDS,
}


class SchemaError(ValueError):
    """A whole frame does not fit a table (missing columns, wrong table name)."""


@dataclass
class Validated:
    valid: pd.DataFrame
    quarantine: pd.DataFrame

    @property
    def n_valid(self) -> int:
        return len(self.valid)

    @property
    def n_quarantined(self) -> int:
        return len(self.quarantine)


def empty(table: str) -> pd.DataFrame:
    return TABLES[table].empty_table().to_pandas()


_BOOL_WORDS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False, "t": True, "f": False}


def parse_booleans(col: pd.Series) -> pd.Series:
    """bool, 0/1 and the words true/false/yes/no/t/f (any case); anything else ("maybe", 2) → null,
    which `validate` then quarantines as unparseable."""
    if col.isna().all():
        return pd.Series(pd.NA, index=col.index, dtype="boolean")
    if pd.api.types.is_bool_dtype(col):
        return col.astype("boolean")

    def one(v):
        if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
            return pd.NA
        if isinstance(v, (bool, np.bool_)):
            return bool(v)
        if isinstance(v, (int, float, np.integer, np.floating)):
            return bool(v) if v in (0, 1) else pd.NA
        return _BOOL_WORDS.get(str(v).strip().lower(), pd.NA)

    return col.map(one).astype("boolean")


def parse_timestamps(col: pd.Series) -> pd.Series:
    """Datetimes, or ISO-8601 strings of any precision and offset (each element on its own, so one
    row with milliseconds does not make its neighbours without them unparseable). Numbers are not
    timestamps here (seconds? milliseconds?): they become null and are quarantined."""
    if pd.api.types.is_datetime64_any_dtype(col):
        out = pd.to_datetime(col, utc=True)
    else:
        obj = col.astype(object)
        usable = obj.map(lambda v: isinstance(v, (str, datetime, np.datetime64))).astype(bool)
        out = pd.to_datetime(obj.where(usable, None), utc=True, errors="coerce", format="ISO8601")
    # the table keeps milliseconds: a time outside what datetime64[ms] holds is unparseable
    return out.astype("datetime64[ms, UTC]")


def conform(df: pd.DataFrame, table: str) -> pd.DataFrame:
    """Coerce a frame to a table's columns and dtypes. Optional columns absent → null (never 0)."""
    schema = TABLES[table]
    required = {"samples": ["vehicle_id", "ts", "source"], "dtc_events": ["vehicle_id", "ts", "code"]}.get(
        table, [f.name for f in schema if f.name in ("vehicle_id",)]
    )
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise SchemaError(f"{table}: missing required column(s) {missing}")
    out = pd.DataFrame(index=df.index)
    for f in schema:
        col = df[f.name] if f.name in df.columns else pd.Series(None, index=df.index, dtype=object)
        if pa.types.is_timestamp(f.type):
            col = parse_timestamps(col)
        elif pa.types.is_floating(f.type):
            col = pd.to_numeric(col, errors="coerce").astype("float64")
        elif pa.types.is_integer(f.type):
            num = pd.to_numeric(col, errors="coerce")
            # 2019.5, 1e30 or inf is not an int32: unparseable (quarantined by `validate`), not a crash
            col = num.where(num.between(-2**31, 2**31 - 1) & (num % 1 == 0)).astype("Int32")
        elif pa.types.is_boolean(f.type):
            col = parse_booleans(col)
        elif pa.types.is_date(f.type):
            col = pd.to_datetime(col, errors="coerce").dt.date
        else:
            col = col.astype("string")
        out[f.name] = col
    return out


def _reject(reasons: pd.Series, mask: pd.Series, column: str, why: str) -> None:
    new = mask & reasons.isna()
    reasons[new] = f"{column}: {why}"


def validate(df: pd.DataFrame, table: str, origin: str = "", lines=None,
             known_vehicles: set[str] | None = None, checks=()) -> Validated:
    """Split `df` into conforming rows and quarantined rows, each with a reason naming the column.

    Values that cannot be parsed at all (text in a number column) are rejected, not nulled:
    a null means "not reported", which is a different fact. `lines` (one per row: the line of
    the source file it came from) makes the quarantine name file lines instead of row numbers.
    `checks`: the caller's own (column, reason, conformed frame → bad-row mask), after the VIN's.
    """
    if table not in TABLES:
        raise SchemaError(f"unknown table {table!r}; expected one of {sorted(TABLES)}")
    df = df.reset_index(drop=True)
    conformed = conform(df, table)
    reasons = pd.Series(pd.NA, index=df.index, dtype=object)

    for col in conformed.columns:
        if col not in df.columns:
            continue
        raw = df[col]
        unparsed = (conformed[col].isna() & raw.notna()).to_numpy(dtype=bool)
        if unparsed.any():  # stringify only the candidates: astype(str) on a whole column is slow
            cand = np.flatnonzero(unparsed)
            unparsed[cand] = (raw.iloc[cand].astype(str).str.strip() != "").to_numpy()
        new = pd.Series(unparsed, index=df.index) & reasons.isna()
        if new.any():
            reasons[new] = [f"{col}: cannot parse {v!r}" for v in raw[new].astype(str)]

    if "vehicle_id" in conformed:
        vin = conformed["vehicle_id"].fillna("")
        _reject(reasons, ~vin.str.fullmatch(VIN_RE.pattern).astype(bool), "vehicle_id",
                "not a 17-character VIN (A-Z without I/O/Q, 0-9)")
        if known_vehicles is not None:  # records about a car the workshop never handed over are not guessed at
            _reject(reasons, ~vin.isin(known_vehicles), "vehicle_id", "unknown vehicle (not in the vehicles records)")
    for column, why, bad_rows in checks:
        _reject(reasons, bad_rows(conformed), column, why)

    if table in ("samples", "dtc_events"):
        _reject(reasons, conformed["ts"].isna(), "ts", "missing or unparseable timestamp")
    if table == "samples":
        _reject(reasons, ~conformed["source"].isin(SOURCES), "source", f"not one of {SOURCES}")
        for col, (lo, hi) in SAMPLE_RANGES.items():
            v = conformed[col]
            _reject(reasons, v.notna() & ~v.between(lo, hi), col, f"outside [{lo}, {hi}]")
    elif table == "dtc_events":
        _reject(reasons, ~conformed["code"].fillna("").str.fullmatch(DTC_RE.pattern).astype(bool), "code", "not a DTC like P0562")
        conformed["status"] = conformed["status"].fillna("stored")
        _reject(reasons, ~conformed["status"].isin(DTC_STATUSES), "status", f"not one of {DTC_STATUSES}")
    elif table == "vehicles":
        _reject(reasons, ~conformed["preferred_channel"].isin(CHANNELS), "preferred_channel", f"not one of {CHANNELS}")
    elif table == "service_events":
        allowed = components.service_components()
        _reject(reasons, ~conformed["component"].isin(allowed), "component", f"not one of {allowed}")
        _reject(reasons, ~conformed["action"].isin(SERVICE_ACTIONS), "action", f"not one of {SERVICE_ACTIONS}")
        _reject(reasons, conformed["date"].isna(), "date", "missing")
        _reject(reasons, conformed["event_id"].fillna("").str.strip() == "", "event_id", "missing")
    elif table == "inspections":
        _validate_inspections(conformed, reasons)
    elif table == "outcomes":
        _reject(reasons, conformed["work_order_id"].fillna("").str.strip() == "", "work_order_id", "missing")
        _reject(reasons, ~conformed["component"].isin(components.names()), "component", f"not one of {components.names()}")
        _reject(reasons, ~conformed["status"].isin(OUTCOME_STATUSES), "status", f"not one of {OUTCOME_STATUSES}")
        _reject(reasons, conformed["date"].isna(), "date", "missing")

    bad = reasons.notna().to_numpy()
    where = np.flatnonzero(bad)
    unit, pos = ("row", where) if lines is None else ("line", np.asarray(lines, dtype="int64")[where])
    q = quarantine_frame(table, origin, [(int(p), r.split(":", 1)[0], r, json.dumps(rec, default=str))
                                         for p, r, rec in zip(pos, reasons[bad], df[bad].to_dict("records"))], unit)
    return Validated(conformed[~bad].reset_index(drop=True), q)


def quarantine_frame(table: str, origin: str, items, unit: str = "row") -> pd.DataFrame:
    """Quarantine rows from (position, column, reason, record) items; the reason is prefixed with
    the position ("line 17: speed_kph: cannot parse 'fast'") so that it reads on its own."""
    items = list(items)
    q = pd.DataFrame({
        "table": table,
        "origin": origin,
        "row": np.array([i[0] for i in items], dtype="int64"),
        "column": [i[1] for i in items],
        "reason": [f"{unit} {i[0]}: {i[2]}" for i in items],
        "record": [i[3] for i in items],
        "quarantined_at": pd.Timestamp.now(tz="UTC").floor("ms"),
    })
    q["quarantined_at"] = q["quarantined_at"].astype("datetime64[ms, UTC]")
    return q


def _validate_inspections(c: pd.DataFrame, reasons: pd.Series) -> None:
    """A measurement must be one the component's registry entry names, at a position it has, within range."""
    _reject(reasons, c["inspection_id"].fillna("").str.strip() == "", "inspection_id", "missing")
    _reject(reasons, c["date"].isna(), "date", "missing")
    _reject(reasons, ~c["component"].isin(components.names()), "component", f"not one of {components.names()}")
    known = c["component"].isin(components.names())
    for comp in components.all_components():
        mine = known & (c["component"] == comp.name)
        _reject(reasons, mine & ~c["measurement"].isin(comp.measurements), "measurement",
                f"not one of {comp.measurements} for {comp.name}")
        _reject(reasons, mine & ~c["position"].isin(comp.positions), "position", f"not one of {comp.positions} for {comp.name}")
    _reject(reasons, c["value"].isna(), "value", "missing")
    for m, (lo, hi) in MEASUREMENT_RANGES.items():
        is_m = c["measurement"] == m
        _reject(reasons, is_m & c["value"].notna() & ~c["value"].between(lo, hi), "value", f"{m} outside [{lo}, {hi}]")
    _reject(reasons, c["verdict"].notna() & ~c["verdict"].isin(VERDICTS), "verdict", f"not one of {VERDICTS}")


def to_arrow(df: pd.DataFrame, table: str) -> pa.Table:
    schema = TABLES.get(table) or {"quarantine": QUARANTINE}[table]
    return pa.Table.from_pandas(df[[f.name for f in schema]], schema=schema, preserve_index=False)
