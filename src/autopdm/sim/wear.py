"""Hidden physics of the simulator: pad, tire and 12 V battery wear, and how a workshop resolves a need.

Nothing here is visible to the features: the models only ever see trip summaries, voltages and
service history. The published figures these constants are calibrated to, and what a simulated
fleet gives, are in docs/simulator.md ("What the wear physics is calibrated to"). In short:

- Brake pads: wear ∝ friction braking energy: the part of each deceleration beyond rolling resistance,
  drag and engine braking (`friction_energy`), so town stops and late hard braking wear pads and
  gentle highway slow-downs barely do. Features see only `brake_energy_kj_per_t` (all deceleration,
  ½(v₁²−v₂²) per tonne) and harsh counts, which correlate with it. New 11 mm, need at 3 mm (wear
  fraction 1), a workshop replaces at ≤ 4 mm (7/8) when it looks at them. Capacity is set so that
  ~100 kJ/t per km (mixed driving) gives ~50k km.
- Tires: wear ∝ distance × harshness × under-inflation (tread life −1.8 % per psi under placard) × heat.
  New 8 mm, need at 3 mm (fraction 1), legal 1.6 mm; inspections replace at ≤ 3.5 mm. ~60k km median.
- Battery: state of health falls with calendar time, faster in heat (doubling per 15 °C of battery
  temperature), with undercharged days (only short trips) and long parked stretches, with a knee near
  the end of life (`soh_from_wear`). Need when SOH reaches 0.55, where the crank minimum meets the
  load-test threshold (9.6 V at 20 °C, 9.3 V at 4 °C, 8.5 V at −18 °C). ~4.5–5 years temperate,
  ~3 hot, 5+ cold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

# --- brake pads -------------------------------------------------------------------------------
PAD_NEW_MM, PAD_NEED_MM, PAD_INSPECT_MM = 11.0, 3.0, 4.0
PAD_CAPACITY = 2.5e6             # friction-brake kJ/t per pad set (× segment factor × vehicle spread)
PAD_PER_KM = 12.0                # kJ/t-equivalent per km regardless of braking (drag, corrosion, handbrake)
PAD_INSPECT_FRAC = (PAD_NEW_MM - PAD_INSPECT_MM) / (PAD_NEW_MM - PAD_NEED_MM)

# --- tires --------------------------------------------------------------------------------------
TREAD_NEW_MM, TREAD_NEED_MM, TREAD_INSPECT_MM, TREAD_LEGAL_MM = 8.0, 3.0, 3.5, 1.6
TIRE_CAPACITY_KM = 78_000.0      # effective km per tire set (× segment factor × vehicle spread)
TIRE_HARSH = 0.25                # wear factor per harsh event per km (capped at 4 / km)
TIRE_PER_PSI = 0.018             # life lost per psi under placard
TIRE_HEAT = 0.03                 # extra wear per °C above 20 °C
TIRE_INSPECT_FRAC = (TREAD_NEW_MM - TREAD_INSPECT_MM) / (TREAD_NEW_MM - TREAD_NEED_MM)
KPA_PER_PSI = 6.894757

# --- battery ------------------------------------------------------------------------------------
SOH_NEED = 0.55                  # wear fraction 1 ⇔ SOH 0.55
SOH_SPAN = 1.0 - SOH_NEED
BATT_TEMP = 2.3e-4 / SOH_SPAN    # per day at 20 °C battery temperature (ambient + 5 °C under the bonnet)
BATT_BASE = 0.55e-4 / SOH_SPAN    # temperature-independent ageing per day
BATT_SHORT = 1.0e-4 / SOH_SPAN   # a day with trips but < 20 min of driving (never recharged)
BATT_PARK = 0.8e-4 / SOH_SPAN    # a day parked after a week already parked (self-discharge, sulfation)
BATT_INSPECT_SOH = 0.68          # a load test at a service catches the battery below this
BATT_KNEE = 0.4                  # share of the fade that comes as a late "knee" (∝ wear⁴)


def soh_from_wear(w) -> np.ndarray:
    """State of health from battery wear: slow linear fade, then a knee near the end (SOH 0.55 at w = 1)."""
    w = np.clip(np.asarray(w, dtype=float), 0.0, None)
    return 1.0 - SOH_SPAN * ((1 - BATT_KNEE) * w + BATT_KNEE * w**4)


def _wear_at_soh(soh: float) -> float:
    ws = np.linspace(0, 1.5, 15001)
    return float(ws[np.searchsorted(-soh_from_wear(ws), -soh)])


BATT_INSPECT_FRAC = _wear_at_soh(BATT_INSPECT_SOH)

CRANK_T = np.array([-18.0, 4.0, 20.0])
CRANK_V = np.array([8.5, 9.3, 9.6])


def crank_threshold(temp_c) -> np.ndarray:
    """Minimum acceptable cranking voltage at a temperature (flat outside −18…20 °C)."""
    return np.interp(temp_c, CRANK_T, CRANK_V)


def rest_voltage(soh, undercharged, parked_days, temp_c) -> np.ndarray:
    """Open-circuit voltage of the battery (without reading noise): 12.68 V full and new, lower with lost
    health, after an undercharged day and the longer the car stands (up to two weeks), 2 mV/°C."""
    return (12.68 - 0.6 * (1 - soh) - 0.08 * undercharged - 0.012 * np.minimum(parked_days, 14.0)
            + 0.002 * (temp_c - 20.0))


def battery_temp_factor(temp_c) -> np.ndarray:
    return np.exp2((np.asarray(temp_c, dtype=float) + 5.0 - 20.0) / 15.0)


def battery_daily_wear(temp_c, undercharged, long_parked, quality) -> np.ndarray:
    q = np.asarray(quality, dtype=float)[:, None]
    return q * (BATT_TEMP * battery_temp_factor(temp_c) + BATT_BASE) + BATT_SHORT * undercharged + BATT_PARK * long_parked


# deceleration the pads never see: rolling resistance, aerodynamic drag, engine braking in gear
ROLL_DECEL = 0.12                # m/s² (c_rr ≈ 0.012)
AERO_DECEL_PER_V2 = 0.00035      # m/s² per (m/s)²  (½ρ·CdA/m for a ~1.3 t car)
ENGINE_DECEL = 0.35              # m/s², in gear above ~15 km/h


def friction_energy(speed_kph: np.ndarray, trace_offsets: np.ndarray) -> np.ndarray:
    """Friction-brake energy per tonne (kJ/t) of each 1 Hz speed trace in a concatenated array.

    Only the deceleration beyond what coasting and engine braking give goes through the pads, so a
    gentle highway slow-down costs the pads almost nothing while a late, hard stop in town costs a lot.
    The features only see `brake_energy_kj_per_t` (all deceleration) and harsh counts: a proxy, as in life.
    """
    v = speed_kph / 3.6
    v_prev = np.r_[v[0], v[:-1]]
    first = np.zeros(len(v), dtype=bool)
    first[trace_offsets] = True
    decel = np.where(first, 0.0, v_prev - v)                       # m/s² over 1 s
    v_mid = 0.5 * (v + v_prev)
    passive = ROLL_DECEL + AERO_DECEL_PER_V2 * v_mid**2 + np.where(v_mid > 15 / 3.6, ENGINE_DECEL, 0.0)
    e = np.clip(decel - passive, 0.0, None) * v_mid                 # J/kg per second = kJ/t
    return np.add.reduceat(e, trace_offsets)


def pad_trip_wear(friction_kj_t, distance_km) -> np.ndarray:
    return np.asarray(friction_kj_t, dtype=float) + PAD_PER_KM * np.asarray(distance_km, dtype=float)


def tire_trip_wear(distance_km, harsh_events) -> np.ndarray:
    rate = harsh_events / np.maximum(distance_km, 0.5)
    return distance_km * (1.0 + TIRE_HARSH * np.minimum(rate, 4.0))


def tire_day_factor(psi_under, temp_c) -> np.ndarray:
    return 1.0 / (1.0 - TIRE_PER_PSI * np.clip(psi_under, 0, 25)) * (1.0 + TIRE_HEAT * np.clip(temp_c - 20.0, 0, None))


@dataclass
class Life:
    """One fitted component: from install (−1 = before the simulation) to its replacement."""
    install_day: int
    need_day: int        # −1: need not reached (pre-empted by an inspection, or still fine at the end)
    replace_day: int     # −1: not replaced within the horizon
    resolution: str      # reactive | inspection | no_start | pending
    dead_from: int       # battery no-start day (car unusable until replace_day), else −1
    offset: float        # cumulative wear at install


def lifecycles(cum: np.ndarray, init: float, check_days: np.ndarray, inspect_frac: float,
               resolve: Callable[[int], tuple[int, str, int]]) -> list[Life]:
    """Walk one vehicle's cumulative wear: needs, workshop replacements, resets.

    cum[d] = wear accumulated by the end of day d (fraction of a component's life, nondecreasing);
    the fitted component starts at `init`. check_days are workshop visits where it is looked at:
    one found at or beyond `inspect_frac` is replaced there, before its need. After a need,
    `resolve(need_day) -> (replace_day, resolution, dead_from)` says when the workshop replaced it; a
    visit in between catches it earlier.
    """
    D = len(cum)
    out: list[Life] = []
    o, s, install = -float(init), 0, -1
    while True:
        n = int(np.searchsorted(cum, o + 1.0, side="left"))
        cd = check_days[(check_days >= s) & (check_days < min(n, D))]
        early = cd[cum[cd] - o >= inspect_frac]
        if len(early):
            rep, need, res, dead = int(early[0]), -1, "inspection", -1
        elif n >= D:
            out.append(Life(install, -1, -1, "pending", -1, o))
            return out
        else:
            need = n
            rep, res, dead = resolve(n)
            until = dead if dead >= 0 else rep
            later = check_days[(check_days > n) & (check_days < until)]
            if len(later):
                rep, res, dead = int(later[0]), "inspection", -1
        if rep >= D:
            out.append(Life(install, need, -1, res, dead, o))
            return out
        out.append(Life(install, need, rep, res, dead, o))
        o, s, install = float(cum[rep]), rep + 1, rep


def wear_fraction(cum: np.ndarray, lives: list[Life]) -> np.ndarray:
    """Wear fraction of the component fitted on each day (a replace day still shows the old one)."""
    D = len(cum)
    offs = np.empty(D)
    start = 0
    for lf in lives:
        end = D if lf.replace_day < 0 else lf.replace_day + 1
        offs[start:end] = lf.offset
        start = end
        if start >= D:
            break
    return cum - offs
