"""A CRM's own names for things → autopdm's, per records table: the `--map` YAML of `autopdm ingest crm`.

    source: shopdesk              # the `source` of rows that carry none (default: crm)
    decimal: ","                  # numbers written 3,5 (default ".")
    vehicles:
      columns: {FIN: vehicle_id, Kanal: preferred_channel}     # their column → ours
      values:                                                  # our column → {their value: ours}
        preferred_channel: {SMS: sms, E-Mail: email, Anruf: phone}
      dates: {first_registration_date: "%d.%m.%Y"}             # strptime format of a date column
      scale: {odometer_km: 1.609344}                           # a number column × factor (miles → km)

Column names and values match without regard to case or surrounding spaces. Without a map, a
file's columns are taken by our names (case and spaces ignored: "Vehicle ID" is vehicle_id), the
vocabularies are ours, and dates must be ISO (2026-03-01): a day and a month are never guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import yaml

from autopdm import schemas

TABLES = ("vehicles", "service_events", "inspections", "outcomes")
TABLE_KEYS = ("columns", "values", "dates", "scale")
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}(?:[T ].*)?$")


class MapError(ValueError):
    """A map that cannot be used: the message names the map file and the key."""


@dataclass
class TableMap:
    columns: dict[str, str] = field(default_factory=dict)            # theirs → ours
    values: dict[str, dict[str, str]] = field(default_factory=dict)  # ours → {theirs (folded): ours}
    dates: dict[str, str] = field(default_factory=dict)              # ours → strptime format
    scale: dict[str, float] = field(default_factory=dict)            # ours → factor


@dataclass
class CrmMap:
    source: str = "crm"
    decimal: str = "."
    tables: dict[str, TableMap] = field(default_factory=dict)

    def table(self, name: str) -> TableMap:
        return self.tables.get(name, TableMap())


def fold(name) -> str:
    """How column names are compared: case, surrounding spaces, and spaces/hyphens inside ignored."""
    return re.sub(r"[\s\-]+", "_", str(name).strip()).lower()


def fold_value(v) -> str:
    """How values are compared: case and surrounding spaces ignored."""
    return str(v).strip().lower()


def _columns_of(table: str, kind=None) -> list[str]:
    return [f.name for f in schemas.TABLES[table] if kind is None or kind(f.type)]


def load(path: Path | None) -> CrmMap:
    """Read and check a map file (None: no map)."""
    if path is None:
        return CrmMap()
    try:
        spec = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise MapError(f"--map {path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise MapError(f"--map {path}: expected a mapping of tables at the top, got {type(spec).__name__}")
    bad = [k for k in spec if k not in (*TABLES, "source", "decimal")]
    if bad:
        raise MapError(f"--map {path}: unknown key {bad[0]!r}; expected some of {[*TABLES, 'source', 'decimal']}")
    out = CrmMap(source=str(spec.get("source") or "crm"), decimal=str(spec.get("decimal") or "."))
    if out.decimal not in (".", ","):
        raise MapError(f"--map {path}: decimal: expected '.' or ',', got {out.decimal!r}")
    for table in TABLES:
        if spec.get(table) is not None:
            out.tables[table] = _table_map(spec[table], table, f"--map {path}: {table}")
    return out


def _mapping(obj, where: str) -> dict:
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise MapError(f"{where}: expected a mapping, got {type(obj).__name__}")
    return obj


def _table_map(spec, table: str, where: str) -> TableMap:
    spec = _mapping(spec, where)
    bad = [k for k in spec if k not in TABLE_KEYS]
    if bad:
        raise MapError(f"{where}: unknown key {bad[0]!r}; expected some of {list(TABLE_KEYS)}")
    ours = _columns_of(table)
    tm = TableMap()
    for theirs, col in _mapping(spec.get("columns"), f"{where}.columns").items():
        if col not in ours:
            raise MapError(f"{where}.columns.{theirs}: {col!r} is not a column of {table} (columns: {', '.join(ours)})")
        if col in tm.columns.values():
            raise MapError(f"{where}.columns: two columns map to {col!r}")
        tm.columns[str(theirs).strip()] = col
    for key, kind, what in (("values", None, "a column"), ("dates", pa.types.is_date, "a date column"),
                            ("scale", pa.types.is_floating, "a number column")):
        allowed = _columns_of(table, kind)
        for col, v in _mapping(spec.get(key), f"{where}.{key}").items():
            if col not in allowed:
                raise MapError(f"{where}.{key}.{col}: not {what} of {table} ({', '.join(allowed)})")
            _set(tm, key, col, v, f"{where}.{key}.{col}")
    return tm


def _set(tm: TableMap, key: str, col: str, v, where: str) -> None:
    if key == "values":
        tm.values[col] = {fold_value(a): str(b) for a, b in _mapping(v, where).items()}
    elif key == "dates":
        if not isinstance(v, str) or "%" not in v:
            raise MapError(f"{where}: expected a strptime format like '%d.%m.%Y', got {v!r}")
        tm.dates[col] = v
    else:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v <= 0:
            raise MapError(f"{where}: expected a positive number, got {v!r}")
        tm.scale[col] = float(v)


def resolve(columns, tm: TableMap, table: str) -> tuple[dict[str, str], list[str]]:
    """A file's columns → ours ({theirs: ours}) and the ones that are not the table's. Raises
    ValueError when two of a file's columns would become the same one of ours."""
    by_map = {fold(k): v for k, v in tm.columns.items()}
    ours = {fold(c): c for c in _columns_of(table)}
    rename, ignored, taken = {}, [], {}
    for c in columns:
        target = by_map.get(fold(c)) or ours.get(fold(c))
        if target is None:
            ignored.append(str(c))
            continue
        if target in taken:
            raise ValueError(f"columns {taken[target]!r} and {c!r} both give {table}.{target}")
        rename[c], taken[target] = target, c
    return rename, ignored


def apply(df: pd.DataFrame, tm: TableMap, table: str, decimal: str = ".") -> tuple[pd.DataFrame, pd.Series]:
    """Our columns (already renamed) with the CRM's values, dates and numbers made ours. Returns the
    frame and, per row, the reason it cannot be imported (NaN: none yet; `schemas.validate` checks the rest)."""
    out = pd.DataFrame(index=df.index)
    why = pd.Series(np.nan, index=df.index, dtype=object)
    schema = schemas.TABLES[table]
    for col in df.columns:
        s = _strings(df[col], lambda t: t.str.strip(), lambda v: v.strip() if isinstance(v, str) else v).replace("", None)
        typ = schema.field(col).type
        if col == "vehicle_id":
            s = _strings(s, lambda t: t.str.upper(), lambda v: v.upper() if isinstance(v, str) else v)
        elif col in tm.values or col in VOCABULARIES:
            s = _vocabulary(s, tm.values.get(col, {}), own=col in VOCABULARIES)
        if pa.types.is_date(typ):
            s = _dates(s, col, tm.dates.get(col), why)
        elif pa.types.is_floating(typ):
            s = _number(s, decimal, tm.scale.get(col))
        out[col] = s
    return out, why


# columns whose values are a vocabulary of ours (all lower case)
VOCABULARIES = frozenset({"preferred_channel", "component", "action", "position", "measurement", "verdict", "status"})


def _strings(s: pd.Series, vectorised, one) -> pd.Series:
    """`vectorised(s)` when every value is text or missing (a CSV's columns: fast), else `one` per value
    (JSON values may be numbers)."""
    if pd.api.types.infer_dtype(s, skipna=True) in ("string", "empty"):
        return vectorised(s)
    return s.map(one)


def _vocabulary(s: pd.Series, mapping: dict[str, str], own: bool) -> pd.Series:
    """The map's values; our own vocabularies (`own`) match without regard to case."""
    text = _strings(s, lambda t: t.str.strip().str.lower(), lambda v: fold_value(v) if v is not None and v == v else None)
    mapped = text.map(mapping) if mapping else pd.Series(np.nan, index=s.index, dtype=object)
    return mapped.where(mapped.notna(), text if own else s)


def _dates(s: pd.Series, col: str, fmt: str | None, why: pd.Series) -> pd.Series:
    """ISO dates (YYYY-MM-DD); with the map's format, dates written that way. Anything else is a
    reason, never a guess (03/04 is March or April depending on the CRM)."""
    text = _strings(s, lambda t: t, lambda v: None if v is None or v != v else str(v))
    if fmt is None:
        iso = text.str.match(ISO_DATE.pattern).fillna(False).astype(bool)
        parsed = pd.to_datetime(text.where(iso).str[:10], format="%Y-%m-%d", errors="coerce")
        expect = "an ISO date (YYYY-MM-DD); give the CRM's date format in the --map file's dates"
    else:
        parsed = pd.to_datetime(text, format=fmt, errors="coerce")
        expect = f"a date written {fmt!r} (the map's format)"
    bad = text.notna() & parsed.isna() & why.isna()
    if bad.any():
        why[bad] = [f"{col}: {v!r} is not {expect}" for v in text[bad]]
    return parsed.dt.strftime("%Y-%m-%d").where(parsed.notna(), text)  # a refused row keeps what it said


def _number(s: pd.Series, decimal: str, factor: float | None) -> pd.Series:
    """Numbers; with decimal ",", "12.345,6" is 12345.6. Text stays text, for validation to name it."""
    if decimal == ",":
        s = s.map(lambda v: v.replace(".", "").replace(" ", "").replace(",", ".") if isinstance(v, str) else v)
    if factor is None:
        return s
    num = pd.to_numeric(s, errors="coerce")
    return (num * factor).astype(object).where(num.notna(), s)
