"""The evidence of an assessment in words a service advisor understands.

`explain(component, row, evidence)` reads one feature row (a mapping of feature → value, with its
`date`) and the component registry, and says in a few sentences why the part is at risk:

1. the part's state — its estimated state now, the last workshop reading it rests on, the use
   since, and when it reaches the service limit at this car's use ("front brake pads about 3.6 mm:
   4.5 mm measured on 2026-08-02, about 2,300 km since; 3 mm in about 12 days at this car's use");
2. trends the component's own feature families watch (the 12 V battery's cranking and resting
   voltages, the tires' pressure and heat);
3. the model's evidence (the features that pushed the risk up) in words: "lowest cranking voltage
   in the last 7 days: 9.4 V".

Plain functions over a row: the advisor's page uses them, and work-order payloads can carry the
same words. Column names follow the feature pipeline's conventions (part-state columns per
measurement and position, `_<w>d` windows, `_slope_<w>d` trends per day, `_since_<what>` use).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import date, timedelta

import pandas as pd

from autopdm import components
from autopdm.components import Component

PART_STATE = "part_state"
MAX_SENTENCES = 5
POSITIONS = {"front": "front", "rear": "rear", "fl": "front-left", "fr": "front-right", "rl": "rear-left",
             "rr": "rear-right", "-": ""}
# what a workshop reading is called; {pos} is the position's words (empty for a part without positions)
SUBJECTS = {"pad_mm": "{pos} brake pads", "tread_mm": "{pos} tire tread", "battery_soh_pct": "12 V battery state of health",
            "battery_cca_pct": "12 V battery cranking power (of its rated CCA)", "battery_rest_v": "12 V battery resting voltage"}

# feature quantities: stem → (words, unit, decimals); the unit "share" shows a share (0–1) as a percentage
QUANTITIES: dict[str, tuple[str, str, int]] = {
    "trips": ("trips", "", 0), "distance_km": ("distance driven", "km", 0), "drive_hours": ("hours driven", "h", 0),
    "idle_share": ("share of time idling", "share", 0), "short_trip_share": ("share of short trips", "share", 0),
    "mean_speed_kph": ("average speed", "km/h", 0), "brake_energy_kj_per_t": ("braking energy", "kJ/t", 0),
    "brake_energy_per_km": ("braking energy per km", "kJ/t", 1),
    "harsh_brake_per_100km": ("harsh brakings per 100 km", "", 1),
    "harsh_accel_per_100km": ("harsh accelerations per 100 km", "", 1),
    "rest_voltage_v": ("average resting voltage", "V", 2), "rest_voltage_v_min": ("lowest resting voltage", "V", 2),
    "crank_min_voltage_v_mean": ("average cranking voltage", "V", 2),
    "crank_min_voltage_v": ("lowest cranking voltage", "V", 2),
    "crank_margin_v": ("cranking voltage above the minimum for the temperature", "V", 2),
    "crank_margin_v_min": ("smallest cranking margin over the minimum for the temperature", "V", 2),
    "crank_margin_cold_v": ("cold-start cranking margin", "V", 2),
    "crank_margin_cold_v_min": ("smallest cold-start cranking margin", "V", 2),
    "charge_voltage_v": ("charging voltage", "V", 2), "ambient_temp_c": ("average outside temperature", "°C", 0),
    "ambient_temp_c_min": ("coldest outside temperature", "°C", 0), "cold_start_share": ("share of cold starts", "share", 0),
    "tire_pressure_min_kpa": ("lowest tire pressure", "kPa", 0),
    "tire_pressure_min_kpa_min": ("lowest tire pressure", "kPa", 0),
    "max_decel_mps2_max": ("hardest braking", "m/s²", 1),
    "rest_voltage_overnight_v": ("overnight resting voltage", "V", 2),
    "rest_voltage_overnight_v_min": ("lowest overnight resting voltage", "V", 2),
    "telemetry_days": ("days with data", "", 0), "dtc_count": ("fault codes", "", 0),
    "dtc_battery": ("battery fault codes", "", 0), "dtc_chassis": ("chassis fault codes", "", 0),
    "odometer_km": ("odometer", "km", 0), "curb_mass_kg": ("weight", "kg", 0), "model_year": ("model year", "", 0),
}
# use since an event: quantity → words (with the unit in them)
USE = {"km": "km", "days": "days", "brake_energy_kj_per_t": "kJ/t of braking", "brake_work_mj": "MJ of braking work",
       "harsh_brakes": "harsh brakings", "harsh_events": "harsh brakings and accelerations", "hot_km": "km in the heat",
       "starts": "engine starts", "cold_starts": "cold starts"}


def num(row: Mapping, name: str) -> float | None:
    """A row's value as a float, or None when missing, empty or not a finite number."""
    v = row.get(name) if hasattr(row, "get") else None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def row_date(row: Mapping) -> date | None:
    d = row.get("date") if hasattr(row, "get") else None
    try:
        return None if d is None or pd.isna(d) else pd.Timestamp(d).date()
    except (TypeError, ValueError):
        return None


def fmt(value: float, unit: str = "", decimals: int = 1) -> str:
    """4.5 mm, 2,300 km, 62 %, 9.40 V (unit "share": a share of 1 as 100 %)."""
    if unit == "share":
        value, unit = 100 * value, "%"
    s = f"{value:,.{decimals}f}"
    return f"{s} {unit}" if unit else s


def _about_km(km: float) -> str:
    step = 100 if km < 20_000 else 1000
    return f"{round(km / step) * step:,.0f} km"


def _days(n: float) -> str:
    n = int(round(n))
    return "1 day" if n == 1 else f"{n} days"


def _subject(comp: Component, measurement: str, position: str) -> str:
    pos = POSITIONS.get(position, position)
    text = SUBJECTS.get(measurement, f"{comp.part} {{pos}} {measurement.replace('_', ' ')}").format(pos=pos)
    return " ".join(text.split())


def _suffix(position: str) -> str:
    return "" if position == "-" else f"_{position}"


def _worst_reading(comp: Component, row: Mapping) -> tuple[str, float, float | None] | None:
    """(position, value, age in days) of the part's worst last reading of its limit's measurement."""
    lim, found = comp.limit, []
    for pos in comp.positions:
        v = num(row, f"{lim.measurement}{_suffix(pos)}_last")
        if v is not None:
            found.append((pos, v, num(row, f"{lim.measurement}{_suffix(pos)}_age_days")))
    if not found:
        return None
    return min(found, key=lambda r: r[1] if lim.lower_is_worse else -r[1])


def _outlook(comp: Component, row: Mapping, est: float | None) -> str | None:
    """When the part reaches its limit, in words."""
    lim, c = comp.limit, comp.name
    need = fmt(lim.need, lim.unit, 0 if lim.need == int(lim.need) else 1)
    days = num(row, f"{c}_days_to_limit")
    past = est is not None and (est <= lim.need if lim.lower_is_worse else est >= lim.need)
    if past or days == 0:
        return f"at or past {need} already"
    if days is None:
        return None
    pace = "at its present rate" if comp.rate_use == "days" else "at this car's use"
    if days >= 365:
        return f"more than a year from {need} {pace}"
    if days < 1:
        return f"{need} within a day {pace}"
    return f"{need} in about {_days(days)} {pace}"


def part_state_words(comp: Component, row: Mapping) -> str | None:
    """The part's estimated state, the reading it rests on, the use since and its outlook."""
    if PART_STATE not in comp.families:
        return None
    lim, c = comp.limit, comp.name
    worst = _worst_reading(comp, row)
    est, sd = num(row, f"{c}_state_est"), num(row, f"{c}_state_sd")
    if worst is None and est is None:
        return None
    dec = 0 if lim.unit == "%" else 1
    text = _subject(comp, lim.measurement, worst[0] if worst else "-")
    if est is not None:
        text += f" about {fmt(est, lim.unit, dec)}"
    if worst is not None:
        day, since_km = row_date(row), num(row, f"km_since_{c}_reading")
        when = f"on {(day - timedelta(days=round(worst[2]))).isoformat()}" if day and worst[2] is not None else "at the last visit"
        text += (": " if est is not None else " ") + f"{fmt(worst[1], lim.unit, dec)} measured {when}"
        if since_km is not None and since_km >= 50:
            text += f", about {_about_km(since_km)} since"
    else:
        km = num(row, f"km_since_{c}_service")
        text += " (no reading on record: estimated from a new part" + (f" fitted about {_about_km(km)} ago)" if km else ")")
    if est is None:
        text += " (no wear rate learned yet)"
    elif (look := _outlook(comp, row, est)) is not None:
        text += f"; {look}"
    if sd is not None and est is not None and sd >= (5 if lim.unit == "%" else 0.5):
        text += f" (uncertain: ± {fmt(sd, lim.unit, dec)})"
    return text[:1].upper() + text[1:] + "."


def battery_trends(comp: Component, row: Mapping) -> list[str]:
    """The 12 V battery's own signals: cranking voltage trend, low resting voltage, weakening cold starts."""
    out = []
    slope, low = num(row, "crank_min_voltage_v_slope_30d"), num(row, "crank_min_voltage_v_7d")
    if slope is not None and slope * 30 <= -0.15:
        out.append(f"Cranking voltage fell {abs(slope * 30):.1f} V in a month"
                   + (f" (lowest this week {low:.1f} V)." if low is not None else "."))
    rest = num(row, "rest_voltage_v_min_7d")
    if rest is not None and rest < components.REST_V_LOW:
        out.append(f"Resting voltage down to {rest:.2f} V this week (below {components.REST_V_LOW} V: under 75 % charged).")
    drop = num(row, "crank_margin_cold_v_drop_from_best")
    if drop is not None and drop >= 0.2:
        out.append(f"Cold starts crank {drop:.1f} V weaker than this battery's best.")
    days = num(row, "crank_margin_days_to_zero")
    if days is not None and 0 < days < 90:
        out.append(f"At this trend, cold cranking falls below the minimum for a start in about {_days(days)}.")
    return out


def tire_trends(comp: Component, row: Mapping) -> list[str]:
    """Tire pressure falling against its own level, and the share of driving in the heat."""
    out = []
    delta = num(row, "tire_pressure_min_kpa_delta_7_90")
    if delta is not None and delta <= -10:
        out.append(f"Lowest tire pressure this week {abs(delta):.0f} kPa below its 90-day level "
                   "(under-inflation wears tread faster).")
    hot = num(row, f"hot_share_since_{comp.name}_service")
    if hot is not None and hot >= 0.3:
        out.append(f"{fmt(hot, 'share', 0)} of the km since the last tire service were driven in the heat.")
    return out


# a component's feature families → what they say in words
FAMILY_TRENDS: dict[str, Callable[[Component, Mapping], list[str]]] = {"battery_health": battery_trends,
                                                                      "tire_heat": tire_trends}


def _quantity(stem: str) -> tuple[str, str, int] | None:
    return QUANTITIES.get(stem)


def _since_target(what: str) -> str | None:
    """What `<use>_since_<what>` counts from, in words."""
    if what == "last_visit":
        return "the last workshop visit"
    if what == "routine_service":
        return "the last routine service"
    for comp in components.all_components():
        c, part = comp.name, comp.part
        known = {f"{c}_service": f"the last service of the {part}", f"{c}_reading": f"the last measurement of the {part}",
                 f"last_{c}_inspect": f"the last inspection of the {part}",
                 f"{c}_inspect_pass": f"the last passed inspection of the {part}",
                 f"open_{c}_inspect": f"an off-schedule inspection of the {part}"}
        if what in known:
            return known[what]
    return None


def _part_feature(name: str, value: float) -> str | None:
    """Words for a part-state or outlook column of a registered component."""
    for comp in components.all_components():
        c, lim, part = comp.name, comp.limit, comp.part
        dec = 0 if lim.unit == "%" else 1
        if name == f"{c}_state_est":
            return f"{part} estimated at {fmt(value, lim.unit, dec)}"
        if name in (f"{c}_days_to_limit", f"{c}_days_to_limit_p10"):
            worst = " at worst" if name.endswith("p10") else ""
            return f"{part}: about {_days(value)}{worst} to the service limit ({fmt(lim.need, lim.unit, 0)})"
        if name == f"{c}_p_limit_15d":
            return f"{part}: {fmt(value, 'share', 0)} chance of reaching the service limit within 15 days"
        for m in comp.measurements:
            for pos in comp.positions:
                stem = f"{m}{_suffix(pos)}"
                unit = lim.unit if m == lim.measurement else ("V" if m.endswith("_v") else "%" if m.endswith("_pct") else "")
                if name == f"{stem}_last":
                    return f"{_subject(comp, m, pos)} at the last reading: {fmt(value, unit, 2 if unit == 'V' else dec)}"
                if name == f"{stem}_age_days":
                    return f"{_subject(comp, m, pos)} last measured {_days(value)} ago"
    return None


def feature_words(name: str, value) -> str | None:
    """One feature and its value in words; None for values that say nothing (missing, internal columns)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(v):
        return None
    if (text := _part_feature(name, v)) is not None:
        return text
    if m := re.fullmatch(r"(.+?)_(?:observed_)?since_(.+)", name):
        use, target = USE.get(m.group(1)), _since_target(m.group(2))
        if target and m.group(1) == "hot_share":
            return f"{fmt(v, 'share', 0)} of the km since {target} driven in the heat"
        if use and target:
            return f"{v:,.0f} {use} since {target}"
    if m := re.fullmatch(r"(.+)_slope_(\d+)d", name):
        if q := _quantity(m.group(1)):
            words, unit, dec = q
            return f"{words} {'fell' if v < 0 else 'rose'} {fmt(abs(v) * 30, unit, dec)} a month (trend of {m.group(2)} days)"
    if m := re.fullmatch(r"(.+)_delta_7_90", name):
        if q := _quantity(m.group(1)):
            words, unit, dec = q
            return f"{words} this week {fmt(v, unit, dec) if v < 0 else '+' + fmt(v, unit, dec)} against its 90-day level"
    if m := re.fullmatch(r"(.+)_drop_from_best", name):
        if q := _quantity(m.group(1)):
            return f"{q[0]} {fmt(v, q[1], q[2])} below this battery's best"
    if name.startswith("crank_margin_days_to_zero"):
        return f"at this trend, cold cranking reaches the minimum for a start in about {_days(v)}"
    if m := re.fullmatch(r"(.+)_(\d+)d", name):
        if q := _quantity(m.group(1)):
            words, unit, dec = q
            return f"{words} in the last {m.group(2)} days: {fmt(v, unit, dec)}"
    if q := _quantity(name):
        return f"{q[0]}: {fmt(v, q[1], q[2])}"
    if name == "vehicle_age_days":
        return f"car {v / 365.25:.1f} years old"
    if name == "days_since_last_trip":
        return f"{_days(v)} since the last trip"
    return None


def facts(component: str, row: Mapping) -> list[str]:
    """What the records and the telemetry say about the part, in sentences: its state, then the
    trends its feature families watch."""
    comp = components.get(component)
    out = []
    if (state := part_state_words(comp, row)) is not None:
        out.append(state)
    for family in comp.families:
        if family in FAMILY_TRENDS:
            out += FAMILY_TRENDS[family](comp, row)
    return out


def evidence_words(evidence: Sequence[Mapping], skip: Sequence[str] = ()) -> list[str]:
    """The model's evidence (dicts with `feature` and `value`, as in an assessment) as sentences,
    leaving out features without words and sentences already in `skip`."""
    out = []
    for e in evidence:
        text = feature_words(str(e.get("feature")), e.get("value"))
        if text is not None:
            text = text[:1].upper() + text[1:] + "."
            if text not in out and text not in skip:
                out.append(text)
    return out


def explain(component: str, row: Mapping, evidence: Sequence[Mapping] = (), limit: int = MAX_SENTENCES) -> list[str]:
    """Why `component` of the car in `row` is at risk, most telling first: `facts`, then the model's
    evidence that they have not already said."""
    said = facts(component, row)
    return (said + evidence_words(evidence, said))[:limit]
