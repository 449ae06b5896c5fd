"""The component registry: everything that is specific to one serviced part, defined once.

A component is what a work order is about (brake pads, tires, the 12 V battery). Its entry says
what its service limit is and how a workshop measures it (where: `positions`, and how they combine
into the need: `need_when`), which workshop actions resolve a need (and which of them fit a new
part: `renewing_actions`; the others are reactive repairs, breakdowns), which use wears it (the
feature families the pipeline computes for it, and `rate_use`, what its wear rate is learned
per), the rule a workshop uses today (the baseline the models are compared with), the action a work
order recommends, and the name of its registered model. Every other module iterates this registry; a fourth component is a
new `register(Component(...))` here (plus its physics in the simulator, if it is to be simulated).

Wear quantities are daily sums the feature pipeline keeps per vehicle (see
`autopdm.pipeline.features.DAILY_USE`): ``one`` (engine starts), ``distance_km``,
``brake_energy`` (kJ/t of deceleration), ``brake_work_mj`` (× the car's mass), ``harsh_brake``,
``harsh_accel``, ``harsh_events`` (both), ``hot_km`` (km above 25 °C), ``cold_start``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

MODEL_PREFIX = "autopdm-"
CHAMPION_ALIAS = "champion"
OTHER = "other"  # service events that concern no registered component (the routine oil service, ...)


class UnknownComponent(ValueError):
    """A component name that is not in the registry."""


@dataclass(frozen=True)
class Limit:
    """The service limit of a part as a workshop measures it.

    `new`, `new_sd` and `reading_sd` are what a workshop knows about its readings without any data:
    the typical reading of a new part, how much new parts vary, and one reading's error (1 sd). The
    part-state features (`autopdm.pipeline.part_state`) start a fitted part at `new` and weigh readings
    by `reading_sd`. `lower_is_worse`: the part wears towards lower readings (pads, tread, state of
    health); "at or below the limit" reads "at or above" when it is False.
    """
    measurement: str       # inspections.measurement, e.g. "pad_mm"
    need: float            # at or below this the part needs service (3 mm pad)
    advise: float          # at or below this a workshop advises replacement (4 mm pad)
    unit: str              # for text: "mm", "%"
    new: float | None = None   # typical reading of a new part (None: unknown)
    new_sd: float = 1.0        # spread of new parts around `new` (1 sd)
    reading_sd: float = 0.5    # error of one reading (1 sd): gauge resolution, tester repeatability
    lower_is_worse: bool = True

    def reached(self, value, verdict=None) -> np.ndarray:
        """Whether each reading is at or beyond the need line (at or below it when lower is worse). A reading
        the workshop called "replace" within one reading error of the line counts as at it: a gauge's marks
        need not fall on the line (a 1/32" tread gauge reads 3.18 mm, never 3.0)."""
        v = np.asarray(value, dtype=float)
        sign = 1.0 if self.lower_is_worse else -1.0
        out = sign * (v - self.need) <= 0
        if verdict is not None:
            called = pd.Series(verdict, dtype="string").fillna("").to_numpy(dtype=object) == "replace"
            out |= called & (sign * (v - self.need) <= self.reading_sd)
        return out

    def loss(self, before, after) -> np.ndarray:
        """Wear between two readings, positive when the part got worse."""
        d = np.asarray(before, dtype=float) - np.asarray(after, dtype=float)
        return d if self.lower_is_worse else -d


@dataclass(frozen=True)
class Component:
    name: str                                   # "brake"
    part: str                                   # what a work order names: "brake pads"
    limit: Limit
    measurements: tuple[str, ...]               # inspections.measurement values that concern this part
    positions: tuple[str, ...]                  # inspections.position values ("front", "rear", ... or "-")
    action: str                                 # recommended action text of a work order
    wear: dict[str, str]                        # use since the last service: feature name → daily use quantity
    wear_since_pass: tuple[str, str]            # (daily use quantity, its name) accumulated since the last passed inspection
    baseline_description: str
    baseline_score: Callable[[pd.DataFrame], np.ndarray]   # what the workshop's rule thresholds (higher = sooner)
    baseline_rule: Callable[[pd.DataFrame], np.ndarray]    # the literal rule: a boolean alert per feature row
    resolving_actions: tuple[str, ...] = ("replace", "repair")
    families: tuple[str, ...] = ()              # extra feature families of the pipeline (by name)
    # of the resolving actions, those that fit a new part (and so end a part's life); the others are
    # reactive repairs: a breakdown, a need on its day
    renewing_actions: tuple[str, ...] = ("replace",)
    # how the positions of a part combine into its need: "any" (a pad at the limit on any axle) or
    # "all" (every position at the limit)
    need_when: str = "any"
    # the daily use quantity the part's wear rate is learned per ("days": calendar time)
    rate_use: str = "distance_km"

    @property
    def breakdown_actions(self) -> tuple[str, ...]:
        """Resolving actions that fit no new part: reactive repairs (a no-start, a roadside repair)."""
        return tuple(a for a in self.resolving_actions if a not in self.renewing_actions)

    @property
    def label(self) -> str:
        return f"label_{self.name}"

    @property
    def days_to_need(self) -> str:
        return f"days_to_need_{self.name}"

    @property
    def model_name(self) -> str:
        return MODEL_PREFIX + self.name

    @property
    def champion_uri(self) -> str:
        return f"models:/{self.model_name}@{CHAMPION_ALIAS}"


_REGISTRY: dict[str, Component] = {}


def register(component: Component) -> Component:
    if component.name in _REGISTRY:
        raise ValueError(f"component {component.name!r} is already registered")
    if component.name == OTHER or not component.name.isidentifier():
        raise ValueError(f"component name {component.name!r}: must be an identifier other than {OTHER!r}")
    _REGISTRY[component.name] = component
    return component


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


@contextlib.contextmanager
def registered(component: Component) -> Iterator[Component]:
    """A component registered for the duration of a block (tests, experiments)."""
    register(component)
    try:
        yield component
    finally:
        unregister(component.name)


def get(name: str) -> Component:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownComponent(f"unknown component {name!r}; known: {', '.join(_REGISTRY)}") from None


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def all_components() -> tuple[Component, ...]:
    return tuple(_REGISTRY.values())


def check(names_: list[str] | tuple[str, ...]) -> list[str]:
    """The given names, each checked against the registry (UnknownComponent names the first bad one)."""
    return [get(n).name for n in names_]


def service_components() -> tuple[str, ...]:
    """Values allowed in service_events.component: every registered component and 'other'."""
    return (*names(), OTHER)


# ------------------------------------------------------------------------------------------------
# workshop rules (baselines): each reads the feature row's own columns

def _col(rows: pd.DataFrame, name: str) -> np.ndarray:
    return pd.to_numeric(rows[name], errors="coerce").to_numpy(dtype=float) if name in rows else np.full(len(rows), np.nan)


def km_since_service_score(component: str) -> Callable[[pd.DataFrame], np.ndarray]:
    def score(rows: pd.DataFrame) -> np.ndarray:
        return np.nan_to_num(_col(rows, f"km_since_{component}_service"), nan=-1.0)
    return score


def every_km_rule(component: str, interval_km: float) -> Callable[[pd.DataFrame], np.ndarray]:
    """Alert on the day the km since the last service cross a multiple of `interval_km`."""
    def rule(rows: pd.DataFrame) -> np.ndarray:
        km = _col(rows, f"km_since_{component}_service")
        vid = rows["vehicle_id"].astype(str).to_numpy()
        order = np.lexsort((pd.to_datetime(rows["date"]).to_numpy(), vid))
        k = np.floor(np.nan_to_num(km[order], nan=0.0) / interval_km)
        prev = np.r_[np.nan, k[:-1]]
        same = np.r_[False, vid[order][1:] == vid[order][:-1]]
        out = np.zeros(len(rows), dtype=bool)
        out[order] = same & (k > prev) & (k >= 1)
        return out
    return rule


def beyond_km_rule(component: str, km: float) -> Callable[[pd.DataFrame], np.ndarray]:
    def rule(rows: pd.DataFrame) -> np.ndarray:
        return np.nan_to_num(_col(rows, f"km_since_{component}_service"), nan=0.0) > km
    return rule


BATTERY_AGE_DAYS = 4 * 365.25
REST_V_LOW = 12.4  # resting voltage below 12.4 V reads as under 75 % charge


def battery_score(rows: pd.DataFrame) -> np.ndarray:
    """Low rest voltage first (lower first), then age."""
    v = _col(rows, "rest_voltage_v_min_7d")
    age = np.nan_to_num(_col(rows, "days_since_battery_service"), nan=0.0)
    low = np.nan_to_num(v, nan=99.0) < REST_V_LOW
    return np.where(low, 1e6 + (REST_V_LOW - np.nan_to_num(v, nan=REST_V_LOW)) * 1e5, 0.0) + age


def battery_rule(rows: pd.DataFrame) -> np.ndarray:
    v = _col(rows, "rest_voltage_v_min_7d")
    age = _col(rows, "days_since_battery_service")
    return (np.nan_to_num(v, nan=99.0) < REST_V_LOW) | (np.nan_to_num(age, nan=0.0) > BATTERY_AGE_DAYS)


# ------------------------------------------------------------------------------------------------
# the registry

BRAKE = register(Component(
    name="brake", part="brake pads",
    # new pads carry ~10-12 mm; a gauge through the wheel reads ±0.5 mm, a visual estimate ±1 mm
    limit=Limit("pad_mm", need=3.0, advise=4.0, unit="mm", new=11.0, new_sd=0.7, reading_sd=0.4),
    measurements=("pad_mm",), positions=("front", "rear"),
    action="Brake inspection: measure pad and disc thickness; replace pads at or below 3 mm",
    wear={"brake_energy_kj_per_t": "brake_energy", "brake_work_mj": "brake_work_mj", "harsh_brakes": "harsh_brake"},
    wear_since_pass=("brake_energy", "brake_energy_kj_per_t"),
    baseline_description="brake check every 10,000 km (score: km since last brake service)",
    baseline_score=km_since_service_score("brake"),
    baseline_rule=every_km_rule("brake", 10_000.0),
    families=("part_state",),
    rate_use="brake_energy",   # pad wear follows the friction-braking energy; the trips' braking energy is its proxy
))

TIRE = register(Component(
    name="tire", part="tires",
    # new tires ~8 mm; tread gauges read in 0.1-0.8 mm steps and a tire wears a few tenths unevenly
    limit=Limit("tread_mm", need=3.0, advise=3.5, unit="mm", new=8.0, new_sd=0.5, reading_sd=0.3),
    measurements=("tread_mm",), positions=("fl", "fr", "rl", "rr"),
    action="Tire check: measure tread depth and pressures; replace tires at or below 3 mm (legal minimum 1.6 mm)",
    wear={"harsh_events": "harsh_events", "hot_km": "hot_km"},
    wear_since_pass=("distance_km", "km"),
    baseline_description="tires by distance: > 40,000 km since last tire service (score: km since last tire service)",
    baseline_score=km_since_service_score("tire"),
    baseline_rule=beyond_km_rule("tire", 40_000.0),
    families=("tire_heat", "part_state"),
))

BATTERY = register(Component(
    name="battery", part="12 V battery",
    # a tester's state of health; conductance testers repeat to a few % (and read low on a discharged battery)
    limit=Limit("battery_soh_pct", need=55.0, advise=70.0, unit="%", new=100.0, new_sd=3.0, reading_sd=4.0),
    measurements=("battery_soh_pct", "battery_cca_pct", "battery_rest_v"), positions=("-",),
    action="Battery load test; replace if it fails",
    wear={"starts": "one", "cold_starts": "cold_start"},
    wear_since_pass=("one", "starts"),
    baseline_description="battery > 4 years or 7-day minimum rest voltage < 12.4 V (score: low voltage first, then age)",
    baseline_score=battery_score,
    baseline_rule=battery_rule,
    families=("battery_health", "part_state"),
    rate_use="days",           # a battery ages with calendar time (faster in heat)
))
