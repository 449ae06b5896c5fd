"""Manufacturer CAN signals → canonical columns, with cantools and a signals map (YAML).

A signals map names, per canonical column, the DBC message and signal(s) to read and how to
scale them. Example (``examples/hyundai_2015_ccan_signals.yaml``)::

    dbc: opendbc:hyundai_2015_ccan.dbc          # optional; --dbc overrides
    columns:
      brake_pressure_bar: {message: ESP12, signal: CYL_PRES}
      brake_switch:       {message: TCS13, signal: DriverBraking, type: bool}
      speed_kph:          {message: WHL_SPD11, signals: [WHL_SPD_FL, WHL_SPD_FR, WHL_SPD_RL, WHL_SPD_RR], reduce: mean}
      tire_pressure_kpa_fl: {message: TPMS11, signal: PRESSURE_FL, unit_signal: UNIT, unit_scale: {0: 6.894757, 1: 5.0, 2: 10.0}}
      control_module_voltage_v: {message: BAT11, signal: BAT_SNSR_V}

``scale``/``offset`` apply after the DBC's own scaling (value * scale + offset). ``unit_signal`` +
``unit_scale`` pick the factor from another signal of the same message (TPMS units).
``opendbc:NAME`` resolves to the DBC shipped in the ``opendbc`` wheel.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from autopdm import schemas

CANONICAL = set(schemas.SAMPLE_FLOATS) | {"brake_switch"}


class SignalMapError(ValueError):
    pass


def resolve_dbc(ref: str | Path, base: Path | None = None) -> Path:
    ref = str(ref)
    if ref.startswith("opendbc:"):
        try:
            import opendbc
        except ImportError:
            raise SignalMapError("the DBC reference needs the opendbc package: pip install 'autopdm[can-dbc]'") from None
        root = Path(opendbc.__file__).parent
        hits = sorted(root.rglob(ref.split(":", 1)[1]))
        if not hits:
            raise SignalMapError(f"{ref}: no such DBC in the opendbc package ({root})")
        return hits[0]
    p = Path(ref)
    if not p.is_absolute() and base is not None and not p.exists():
        p = base / p
    if not p.exists():
        raise SignalMapError(f"DBC file {ref} not found")
    return p


@dataclass
class _Rule:
    column: str
    signals: list[str]
    reduce: str
    scale: float
    offset: float
    as_bool: bool
    unit_signal: str | None
    unit_scale: dict


class DbcDecoder:
    def __init__(self, dbc_path: str | Path | None, signals_map: str | Path):
        import cantools

        map_path = Path(signals_map)
        try:
            spec = yaml.safe_load(map_path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise SignalMapError(f"{signals_map}: cannot read signals map: {exc}") from None
        dbc_ref = dbc_path or spec.get("dbc")
        if not dbc_ref:
            raise SignalMapError(f"{signals_map}: no DBC given (--dbc or a 'dbc:' key)")
        path = resolve_dbc(dbc_ref, map_path.parent)
        try:
            self.db = cantools.database.load_file(str(path))
        except Exception as exc:  # cantools raises many types for bad files
            raise SignalMapError(f"{path}: cantools cannot load this DBC: {exc}") from None
        self.dbc_path = path
        columns = spec.get("columns")
        if not isinstance(columns, dict) or not columns:
            raise SignalMapError(f"{signals_map}: expected a 'columns:' mapping of canonical column → signal")
        self.rules: dict[int, list[_Rule]] = {}
        self.messages = {}
        for col, r in columns.items():
            if col not in CANONICAL:
                raise SignalMapError(f"{signals_map}: {col!r} is not a canonical sample column ({sorted(CANONICAL)})")
            if not isinstance(r, dict) or "message" not in r:
                raise SignalMapError(f"{signals_map}: column {col}: needs 'message' and 'signal' or 'signals'")
            try:
                msg = self.db.get_message_by_name(r["message"])
            except KeyError:
                raise SignalMapError(f"{signals_map}: column {col}: message {r['message']!r} is not in {path.name}") from None
            sigs = r.get("signals") or [r.get("signal")]
            names = {s.name for s in msg.signals}
            for s in sigs + ([r["unit_signal"]] if r.get("unit_signal") else []):
                if s not in names:
                    raise SignalMapError(f"{signals_map}: column {col}: signal {s!r} is not in {msg.name}")
            rule = _Rule(col, sigs, r.get("reduce", "mean"), float(r.get("scale", 1.0)), float(r.get("offset", 0.0)),
                         r.get("type") == "bool" or col == "brake_switch", r.get("unit_signal"),
                         {int(k): float(v) for k, v in (r.get("unit_scale") or {}).items()})
            self.rules.setdefault(msg.frame_id, []).append(rule)
            self.messages[msg.frame_id] = msg
        self.decoded = 0
        self.errors = 0

    def wants(self, arb_id: int) -> bool:
        return arb_id in self.rules

    def feed(self, ts: float, arb_id: int, data: bytes, on_value: Callable[[float, str, object], None]) -> bool:
        rules = self.rules.get(arb_id)
        if rules is None:
            return False
        try:
            sig = self.messages[arb_id].decode(data, decode_choices=False, scaling=True)
        except Exception:
            self.errors += 1
            return False
        self.decoded += 1
        for r in rules:
            vals = [float(sig[s]) for s in r.signals if s in sig]
            if not vals:
                continue
            v = sum(vals) / len(vals) if r.reduce == "mean" else (max(vals) if r.reduce == "max" else min(vals))
            if r.as_bool:
                on_value(ts, r.column, bool(v))
                continue
            factor = r.scale
            if r.unit_signal:
                unit = int(sig.get(r.unit_signal, -1))
                if unit not in r.unit_scale:
                    continue  # unknown unit: no value rather than a wrong one
                factor *= r.unit_scale[unit]
            on_value(ts, r.column, v * factor + r.offset)
        return True
