"""Fleet simulator: vehicles, trips, the workshop's records, DTCs and (optionally) raw 1 Hz samples.

`simulate_fleet` is a pipeline of named phases (PHASES). Each phase is a function of explicit inputs
(the per-vehicle draws, the calendar, the trips so far, one random stream) that returns arrays or a
small dataclass; nothing is shared through module state. In order:

1. vehicles and drivers: `draw_vehicles`
2. climate: `daily_temperatures`
3. parked stretches: `parked_stretches`
4. trips per day from drive-cycle variants: `trip_slots`, `trip_variants`
5. trip order and times of day: `order_within_day`, `times_of_day`
6. hidden wear and component lifecycles: `daily_use`, `routine_services`, `battery_lives` (a no-start
   keeps the car parked until the new battery), then `cold_tire_pressure`, `pad_tire_wear`, `pad_tire_lives`
7. workshop service events: `workshop_visits` (no-starts as reactive repairs), `service_events`
8. workshop inspections: `autopdm.sim.inspections` (readings with gauge noise and gaps at those visits,
   the removed part's reading at each replacement; the true state per position)
9. per-trip telemetry and coverage gaps: `trip_telemetry`, `coverage`, `trips_table`
10. DTC events and the hidden truth: `dtc_events`, `true_needs_table`, `lives_table`, `true_state_table`
11. raw 1 Hz samples for the first K vehicles: `raw_samples` (`render_samples`, built so that
    `trips.summarise` gives back their trip rows)

`write_fleet` writes the workshop's records (vehicles, service events, inspections) through the one import
path for CRM records, `autopdm.ingest.crm.import_records`.

What each phase models and the published figures the wear physics is calibrated to: docs/simulator.md.
Work is vectorised over vehicles × days or over trips; per-vehicle loops only walk the few lifecycle
events of each component.

Same seed → identical output: each concern draws from its own child of `SeedSequence(seed)` (`Streams`);
a stream used by several phases (trips, service, telemetry) is always used in the same order.
tests/test_simulate.py::test_same_output_as_recorded holds fingerprints of known fleets.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass, field, fields
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from autopdm import schemas, store
from autopdm.config import Paths
from autopdm.ingest.crm import import_records
from autopdm.sim import drivecycles as dc
from autopdm.sim import inspections, wear

Progress = Callable[[str, int, int], None]

# make, model, segment, curb mass kg, WMI, reports ambient temp, reports tire pressures, reports odometer
CATALOG = [
    ("Fiat", "500", "small", 980, "ZFA", False, False, False),
    ("Toyota", "Yaris", "small", 1070, "VNK", True, True, True),
    ("Renault", "Clio", "small", 1110, "VF1", True, True, False),
    ("Volkswagen", "Polo", "small", 1150, "WVW", True, True, True),
    ("Dacia", "Sandero", "small", 1080, "UU1", False, False, False),
    ("Volkswagen", "Golf", "compact", 1320, "WVW", True, True, True),
    ("Toyota", "Corolla", "compact", 1330, "SB1", True, True, True),
    ("Ford", "Focus", "compact", 1320, "WF0", True, True, False),
    ("Skoda", "Octavia", "compact", 1360, "TMB", True, True, True),
    ("Hyundai", "i30", "compact", 1300, "TMA", False, True, False),
    ("Toyota", "RAV4", "suv", 1650, "JTM", True, True, True),
    ("Volkswagen", "Tiguan", "suv", 1620, "WVG", True, True, True),
    ("Hyundai", "Tucson", "suv", 1560, "TMA", True, True, False),
    ("Nissan", "Qashqai", "suv", 1450, "SJN", True, True, False),
    ("BMW", "X3", "suv", 1820, "WBA", True, True, True),
    ("Ford", "Transit Custom", "van", 2000, "WF0", True, False, False),
    ("Volkswagen", "Transporter", "van", 2050, "WV1", True, False, True),
    ("Renault", "Trafic", "van", 1900, "VF1", False, False, False),
    ("Mercedes-Benz", "Vito", "van", 2000, "WDF", True, True, True),
]
SEGMENTS = {  # pad and tire life factors (bigger, heavier → shorter), share of the fleet
    "small": dict(pad=1.10, tire=1.05, share=0.28),
    "compact": dict(pad=1.00, tire=1.00, share=0.34),
    "suv": dict(pad=0.88, tire=0.88, share=0.26),
    "van": dict(pad=0.78, tire=0.80, share=0.12),
}
PATTERNS = ("commuter", "long_distance", "urban_taxi", "weekend")
COMMUTER, LONGD, TAXI, WEEKEND = range(4)
PATTERN_P = {"default": [0.50, 0.15, 0.08, 0.27], "van": [0.30, 0.25, 0.35, 0.10]}
# expected trips per day by pattern × (weekday, weekend) × kind (short, urban, commute, long)
RATES = np.array([
    [[0.5, 0.3, 0.0, 0.01], [0.9, 0.6, 0.0, 0.08]],    # commuter (+ two commutes on workdays)
    [[0.3, 0.3, 0.3, 0.9], [0.5, 0.4, 0.0, 0.3]],      # long distance
    [[5.0, 6.0, 1.0, 0.1], [4.0, 4.8, 0.8, 0.08]],     # urban taxi
    [[0.45, 0.2, 0.05, 0.02], [0.9, 0.8, 0.0, 0.25]],  # weekend driver
])
DAY_START_H = np.array([7.2, 7.5, 6.5, 9.5])           # first departure (UTC hours; simulated local time)
DAY_SPAN_H = np.array([11.0, 13.0, 14.0, 10.0])        # window the day's trips spread over
CLIMATES = {  # annual mean °C, seasonal amplitude, weather noise sd
    "temperate": (11.0, 9.0, 3.0),
    "hot": (26.0, 7.0, 2.0),
    "cold": (2.0, 13.0, 4.0),
}
ZONES = ("temperate", "hot", "cold")
MIN_GAP_S = 600
CHANNEL_P = {"sms": 0.35, "email": 0.30, "phone": 0.20, "wechat": 0.15}
VIN_CHARS = np.array(list("ABCDEFGHJKLMNPRSTUVWXYZ0123456789"))
_TRANSLIT = {**{str(i): i for i in range(10)}, **dict(zip("ABCDEFGH", range(1, 9))), **dict(zip("JKLMN", range(1, 6))),
             "P": 7, "R": 9, **dict(zip("STUVWXYZ", range(2, 10)))}
_WEIGHTS = [8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2]
_YEAR_CODES = "ABCDEFGHJKLMNPRSTVWXY123456789"  # 2010 = A … (no I, O, Q, U, Z, 0)


@dataclass
class Fleet:
    vehicles: pd.DataFrame        # schemas.VEHICLES
    trips: pd.DataFrame           # schemas.TRIPS, source="sim"
    service_events: pd.DataFrame  # schemas.SERVICE_EVENTS, source="workshop"
    dtc_events: pd.DataFrame      # schemas.DTC_EVENTS
    true_needs: pd.DataFrame      # hidden truth (evaluation only): one row per need reached in the horizon
    samples: pd.DataFrame         # 1 Hz canonical samples for the first K vehicles, else empty
    lives: pd.DataFrame = field(default_factory=pd.DataFrame)  # hidden: expected life per vehicle × component
    inspections: pd.DataFrame = field(default_factory=lambda: schemas.empty("inspections"))  # schemas.INSPECTIONS
    true_state: pd.DataFrame = field(default_factory=pd.DataFrame)  # hidden: true reading per vehicle × part × position × day
    true_odometer: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # hidden, not written: km at the end of each day, vehicles × days


def vin_check_digit(vin: str) -> str:
    s = sum(_TRANSLIT[c] * w for c, w in zip(vin, _WEIGHTS))
    r = s % 11
    return "X" if r == 10 else str(r)


def make_vins(rng: np.random.Generator, wmi: np.ndarray, model_year: np.ndarray) -> list[str]:
    n = len(wmi)
    vds = rng.choice(VIN_CHARS, size=(n, 5))
    plant = rng.choice(VIN_CHARS[:23], size=n)
    serial = rng.choice(900_000, size=n, replace=False) + 100_000
    out = []
    for i in range(n):
        body = f"{wmi[i]}{''.join(vds[i])}0{_YEAR_CODES[(int(model_year[i]) - 2010) % 30]}{plant[i]}{serial[i]:06d}"
        out.append(body[:8] + vin_check_digit(body) + body[9:])
    return out


def _stochastic_level(pos: np.ndarray, u: np.ndarray, n_levels: int) -> np.ndarray:
    pos = np.clip(pos, 0, n_levels - 1)
    lo = np.floor(pos)
    return np.minimum(lo + (u < pos - lo), n_levels - 1).astype(np.int64)


def _within_group_cumsum(x: np.ndarray, grp_start: np.ndarray) -> np.ndarray:
    """Inclusive cumulative sum of x restarting at each True of grp_start (x sorted by group)."""
    c = np.cumsum(x)
    first = np.flatnonzero(grp_start)
    base = np.repeat(c[first] - x[first], np.diff(np.r_[first, len(x)]))
    return c - base


def _runs_mask(rng, n_days: int, mean_on: float, mean_off: float, start_on: bool = True) -> np.ndarray:
    """Alternating on/off stretches with exponential lengths."""
    out = np.zeros(n_days, dtype=bool)
    d, on = 0, start_on
    while d < n_days:
        L = max(1, int(rng.exponential(mean_on if on else mean_off)))
        out[d:d + L] = on
        d += L
        on = not on
    return out



# ---- what the phases pass on ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Streams:
    """One random generator per concern, spawned in this order from `SeedSequence(seed)`."""
    vehicles: np.random.Generator
    temperature: np.random.Generator
    trips: np.random.Generator
    times: np.random.Generator
    battery: np.random.Generator
    tires: np.random.Generator
    coverage: np.random.Generator
    telemetry: np.random.Generator
    service: np.random.Generator
    raw: np.random.Generator
    inspections: np.random.Generator   # spawned last: adding it left the other streams as they were

    @classmethod
    def from_seed(cls, seed: int) -> Streams:
        return cls(*[np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(11)])


@dataclass(frozen=True)
class Calendar:
    day0: pd.Timestamp
    dates: pd.DatetimeIndex
    day_epoch: np.ndarray    # each day's midnight, UTC epoch seconds
    weekday: np.ndarray
    weekend: np.ndarray

    @classmethod
    def starting(cls, start: str, days: int) -> Calendar:
        day0 = pd.Timestamp(start).normalize()
        dates = pd.date_range(day0, periods=days, freq="D")
        weekday = dates.weekday.to_numpy()
        return cls(day0, dates, (dates.tz_localize("UTC").asi8 // 10**9).astype(np.int64), weekday, weekday >= 5)

    @property
    def days(self) -> int:
        return len(self.dates)


@dataclass(frozen=True)
class Vehicles:
    """Per-vehicle draws (arrays of length N): the car, its driver, its fitted parts and its customer."""
    catalog: list[tuple]         # its CATALOG row
    vins: list[str]
    segment: np.ndarray
    mass: np.ndarray
    has_amb: np.ndarray          # the PIDs this model reports
    has_tpms: np.ndarray
    has_odo: np.ndarray
    first_reg: pd.DatetimeIndex
    model_year: np.ndarray
    age_days: np.ndarray         # at the first simulated day
    pattern: np.ndarray          # index into PATTERNS
    style: np.ndarray            # driving harshness (× aggressiveness)
    speed_habit: np.ndarray
    drive_mult: np.ndarray       # how much more or less than its pattern's rates it is driven
    zone: np.ndarray             # index into ZONES
    late_logger: np.ndarray      # the logger wakes after the crank: no rest/crank voltage
    alt_v: np.ndarray            # alternator set point
    pad_q: np.ndarray            # part quality × segment factor (life multipliers)
    tire_q: np.ndarray
    batt_q: np.ndarray           # battery ageing multiplier
    placard: np.ndarray          # tire placard pressure, kPa
    leak: np.ndarray             # slow-leak rate, share of pressure per day
    topup_every: np.ndarray      # days between the driver's own top-ups (mean)
    tire_spread: np.ndarray      # N × 4 per-tire pressure offsets
    customer: np.ndarray
    channel: np.ndarray
    home_routes: np.ndarray      # N × 2 commute templates (there and back)
    mileage_factor: np.ndarray   # odometer at the start relative to the simulated use × age

    @property
    def n(self) -> int:
        return len(self.vins)

    @property
    def vin_arr(self) -> np.ndarray:
        return np.array(self.vins, dtype=object)


@dataclass(frozen=True)
class TripSlots:
    """Drawn trips before their variant and time: one entry per trip, ordered by vehicle, day, kind."""
    veh: np.ndarray
    day: np.ndarray
    kind: np.ndarray
    first_in_run: np.ndarray     # first trip of its (vehicle, day, kind)


@dataclass(frozen=True)
class Trips:
    """Simulated trips (all of them, reported or not), ordered by vehicle and start time."""
    veh: np.ndarray
    day: np.ndarray
    kind: np.ndarray
    var: np.ndarray              # variant in the drive-cycle library
    dur: np.ndarray              # s
    rel: np.ndarray              # start, s after the day's midnight
    start_s: np.ndarray          # start, UTC epoch seconds

    def subset(self, mask: np.ndarray) -> Trips:
        return Trips(*(a[mask] for a in (self.veh, self.day, self.kind, self.var, self.dur, self.rel, self.start_s)))

    def __len__(self) -> int:
        return len(self.veh)

    def col(self, lib: dc.Library, name: str) -> np.ndarray:
        """A column of each trip's variant summary (distance_km, harsh_brake_count, ...)."""
        return lib.summary[name].to_numpy()[self.var]

    def per_day(self, n_vehicles: int, days: int, weights: np.ndarray | None = None) -> np.ndarray:
        """Sum of `weights` (or the number of trips) per vehicle × day."""
        vd = self.veh * days + self.day
        return np.bincount(vd, weights=weights, minlength=n_vehicles * days).reshape(n_vehicles, days)


@dataclass(frozen=True)
class DailyUse:
    km: np.ndarray               # N × D
    undercharged: np.ndarray     # N × D: trips but < 20 min of driving, the battery never recharges
    idle_run: np.ndarray         # N × D: consecutive days without trips so far


@dataclass(frozen=True)
class Schedule:
    """Routine workshop visits per vehicle, and those with a battery load test."""
    visits: list[np.ndarray]
    battery_tested: list[np.ndarray]


@dataclass(frozen=True)
class HiddenWear:
    """Hidden truth: cumulative wear (fraction of a part's life) and the fitted parts' lifecycles."""
    cum: dict[str, np.ndarray]                   # component → N × D
    lives: dict[str, list[list[wear.Life]]]      # component → per vehicle, its parts in order
    frac: dict[str, np.ndarray]                  # component → N × D wear fraction of the part fitted that day
    soh: np.ndarray                              # N × D battery state of health


@dataclass(frozen=True)
class Telemetry:
    """Per-trip readings (aligned with `Trips`)."""
    amb_true: np.ndarray
    amb: np.ndarray
    intake0: np.ndarray
    coolant0: np.ndarray
    rest: np.ndarray
    crank: np.ndarray
    charge: np.ndarray
    tire_base: np.ndarray        # cold pressure of the day
    tires4: np.ndarray           # trips × 4
    tire_min: np.ndarray
    odo_end: np.ndarray
    fuel0: np.ndarray

    def rows(self, lo: int, hi: int) -> Telemetry:
        return Telemetry(*(getattr(self, f.name)[lo:hi] for f in fields(self)))


# ---- phases -----------------------------------------------------------------------------------------------
def draw_vehicles(rng: np.random.Generator, n: int, day0: pd.Timestamp, lib: dc.Library, climate: str,
                  aggressiveness: float) -> Vehicles:
    """Models from the catalog by segment share, registration age, VINs; drivers; parts; customers."""
    seg_names = list(SEGMENTS)
    seg_i = rng.choice(len(seg_names), size=n, p=[SEGMENTS[s]["share"] for s in seg_names])
    cat_by_seg = {s: [i for i, c in enumerate(CATALOG) if c[2] == s] for s in seg_names}
    cat = [CATALOG[cat_by_seg[seg_names[s]][rng.integers(len(cat_by_seg[seg_names[s]]))]] for s in seg_i]
    segment = np.array([c[2] for c in cat])
    mass = np.array([c[3] for c in cat], dtype=float) * rng.uniform(0.97, 1.05, n)
    age_years = np.minimum(rng.gamma(2.0, 2.2, n), 14.0)
    first_reg = (day0 - pd.to_timedelta(np.round(age_years * 365.25) + 1, unit="D")).normalize()
    model_year = np.clip(first_reg.year.to_numpy() - (rng.random(n) < 0.25), 2010, None)
    vins = make_vins(rng, np.array([c[4] for c in cat]), model_year)
    pattern = np.array([rng.choice(4, p=PATTERN_P["van" if s == "van" else "default"]) for s in segment])
    style = np.exp(rng.normal(0.0, 0.22, n)) * aggressiveness * np.where(pattern == TAXI, 1.12, 1.0)
    speed_habit = rng.normal(1.04, 0.08, n)
    drive_mult = np.exp(rng.normal(0.0, 0.25, n))
    zone = (rng.choice(3, size=n, p=[0.5, 0.25, 0.25]) if climate == "mixed" else np.full(n, ZONES.index(climate)))
    late_logger = rng.random(n) < 0.10
    alt_v = rng.uniform(13.8, 14.5, n)
    pad_q = np.exp(rng.normal(0, 0.12, n)) * np.array([SEGMENTS[s]["pad"] for s in segment])
    tire_q = np.exp(rng.normal(0, 0.12, n)) * np.array([SEGMENTS[s]["tire"] for s in segment])
    batt_q = np.exp(rng.normal(0, 0.22, n))
    placard = rng.choice([220.0, 230.0, 240.0, 250.0, 260.0], n) + np.where(segment == "van", 60.0, 0.0)
    leak = np.exp(rng.normal(np.log(0.0006), 0.5, n)) * np.where(rng.random(n) < 0.1, 3.0, 1.0)
    topup_every = np.exp(rng.normal(np.log(150), 0.9, n))
    tire_spread = rng.uniform(0.0, 0.05, (n, 4))
    customer = rng.choice(1_000_000, size=n, replace=False)
    channel = rng.choice(list(CHANNEL_P), size=n, p=list(CHANNEL_P.values()))
    home_routes = lib.pools[dc.COMMUTE][rng.integers(len(lib.pools[dc.COMMUTE]), size=(n, 2))]
    mileage_factor = rng.uniform(0.7, 1.3, n)
    return Vehicles(
        catalog=cat, vins=vins, segment=segment, mass=mass, has_amb=np.array([c[5] for c in cat]),
        has_tpms=np.array([c[6] for c in cat]), has_odo=np.array([c[7] for c in cat]), first_reg=first_reg,
        model_year=model_year, age_days=(day0 - first_reg).days.to_numpy().astype(float), pattern=pattern,
        style=style, speed_habit=speed_habit, drive_mult=drive_mult, zone=zone, late_logger=late_logger, alt_v=alt_v,
        pad_q=pad_q, tire_q=tire_q, batt_q=batt_q, placard=placard, leak=leak, topup_every=topup_every,
        tire_spread=tire_spread, customer=customer, channel=channel, home_routes=home_routes,
        mileage_factor=mileage_factor)


def daily_temperatures(rng: np.random.Generator, zone: np.ndarray, cal: Calendar) -> np.ndarray:
    """N × D daily mean °C: the zone's seasonal sinusoid plus AR(1) weather shared by the zone, plus
    a per-vehicle offset (garage, street) and day-to-day local noise."""
    D = cal.days
    season = -np.cos(2 * np.pi * (cal.dates.dayofyear.to_numpy() - 20) / 365.25)
    zone_temp = np.empty((len(ZONES), D))
    for z, name in enumerate(ZONES):
        mean, amp, sd = CLIMATES[name]
        eps = rng.normal(0, sd * np.sqrt(1 - 0.8**2), D)
        ar = np.empty(D)
        ar[0] = rng.normal(0, sd)
        for d in range(1, D):
            ar[d] = 0.8 * ar[d - 1] + eps[d]
        zone_temp[z] = mean + amp * season + ar
    n = len(zone)
    return zone_temp[zone] + rng.normal(0, 1.5, (n, 1)) + rng.normal(0, 1.0, (n, D))


def parked_stretches(rng: np.random.Generator, pattern: np.ndarray, days: int) -> np.ndarray:
    """N × D: vacations and other 5–16-day stretches the car stays parked (taxis fewer)."""
    parked = np.zeros((len(pattern), days), dtype=bool)
    n_vac = rng.poisson(np.where(pattern == TAXI, 0.8, 2.0) * days / 365.25)
    for v in np.flatnonzero(n_vac):
        for s0, ln in zip(rng.integers(0, days, n_vac[v]), rng.integers(5, 17, n_vac[v])):
            parked[v, s0:s0 + ln] = True
    return parked


def trip_slots(rng: np.random.Generator, veh: Vehicles, cal: Calendar, parked: np.ndarray) -> TripSlots:
    """Trips per vehicle-day and kind: Poisson by pattern and weekday/weekend, two commutes on a
    commuter's workdays (each made with p = 0.92), taxis mostly off on Sundays, none while parked."""
    N, D = veh.n, cal.days
    lam = RATES[veh.pattern][:, cal.weekend.astype(int), :] * veh.drive_mult[:, None, None]      # N × D × 4
    counts = rng.poisson(lam)
    commute = rng.binomial(2, 0.92, (N, D))
    is_comm = (veh.pattern == COMMUTER)[:, None] & ~cal.weekend[None, :]
    counts[..., dc.COMMUTE] = np.where(is_comm, commute, counts[..., dc.COMMUTE])
    taxi_off = (veh.pattern == TAXI)[:, None] & (cal.weekday == 6)[None, :] & (rng.random((N, D)) < 0.6)
    counts[parked | taxi_off] = 0
    flat = np.repeat(np.arange(N * D * 4, dtype=np.int64), counts.ravel())
    return TripSlots(flat // (D * 4), (flat // 4) % D, flat % 4, np.r_[True, flat[1:] != flat[:-1]])


def trip_variants(rng: np.random.Generator, lib: dc.Library, veh: Vehicles, slots: TripSlots) -> np.ndarray:
    """Each trip's variant = template of its kind (mostly the driver's own commute routes) × speed
    scale near the driver's speed habit × style near the driver's style."""
    nT = len(slots.veh)
    t_veh, t_kind = slots.veh, slots.kind
    u = rng.random((nT, 5))
    pool_choice = np.empty(nT, dtype=np.int64)
    for k, pool in lib.pools.items():
        m = t_kind == k
        pool_choice[m] = pool[(u[m, 0] * len(pool)).astype(np.int64)]
    use_home = (t_kind == dc.COMMUTE) & (u[:, 1] < 0.85)
    pool_choice[use_home] = veh.home_routes[t_veh[use_home], (u[use_home, 2] < 0.5).astype(int)]
    scale_pos = np.interp(veh.speed_habit[t_veh] * np.where(t_kind == dc.LONG, 1.08, 1.0), dc.SPEED_SCALES,
                          np.arange(len(dc.SPEED_SCALES))) + rng.normal(0, 0.3, nT)
    style_pos = np.interp(veh.style[t_veh], dc.STYLES, np.arange(len(dc.STYLES))) + rng.normal(0, 0.25, nT)
    scale_i = _stochastic_level(scale_pos, u[:, 3], len(dc.SPEED_SCALES))
    style_i = _stochastic_level(style_pos, u[:, 4], len(dc.STYLES))
    return lib.variant(pool_choice, scale_i, style_i)


def order_within_day(rng: np.random.Generator, slots: TripSlots, days: int) -> np.ndarray:
    """The order of each vehicle-day's trips: random, except that the commute there comes first and
    the one back last. Returns the permutation of `slots`."""
    key = rng.random(len(slots.veh))
    key = np.where(slots.kind == dc.COMMUTE, np.where(slots.first_in_run, -1.0, 2.0), key)
    return np.lexsort((key, slots.veh * days + slots.day))


def times_of_day(rng: np.random.Generator, lib: dc.Library, veh: Vehicles, cal: Calendar, slots: TripSlots,
                 var: np.ndarray, order: np.ndarray) -> Trips:
    """Departure times of the trips in `order`: the first near the pattern's start hour (later on
    weekends), the rest spread over the pattern's day span with gaps of at least MIN_GAP_S; trips
    that would end after 23:30 are dropped."""
    D, nT = cal.days, len(order)
    t_veh, t_day, var = slots.veh[order], slots.day[order], var[order]
    grp = t_veh * D + t_day
    dur = lib.summary["duration_s"].to_numpy()[var].astype(np.int64)
    gstart = np.r_[True, grp[1:] != grp[:-1]]
    gid = np.cumsum(gstart) - 1
    n_in = np.bincount(gid)
    dur_sum = np.bincount(gid, weights=dur)
    g_pattern, g_weekend = veh.pattern[t_veh[gstart]], cal.weekend[t_day[gstart]]
    span = DAY_SPAN_H[g_pattern] * 3600 * np.where(g_weekend & (g_pattern == COMMUTER), 0.8, 1.0)
    slack = np.maximum(0.0, span - dur_sum - (n_in - 1) * MIN_GAP_S)
    w = np.where(gstart, 0.0, rng.exponential(1.0, nT))
    wsum = np.bincount(gid, weights=w)
    gap = np.where(gstart, 0.0, MIN_GAP_S + slack[gid] * w / np.where(wsum[gid] > 0, wsum[gid], 1.0))
    prev_dur = np.r_[0, dur[:-1]] * ~gstart
    first_h = np.clip(DAY_START_H[g_pattern] + np.where(g_weekend, 1.5, 0.0) + rng.normal(0, 0.6, gstart.sum()), 5.0, 12.0)
    rel = np.round(first_h[gid] * 3600 + _within_group_cumsum(gap + prev_dur, gstart)).astype(np.int64)
    keep = rel + dur <= int(23.5 * 3600)
    return Trips(t_veh, t_day, slots.kind[order], var, dur, rel, cal.day_epoch[t_day] + rel).subset(keep)


def daily_use(lib: dc.Library, trips: Trips, n_vehicles: int, days: int) -> DailyUse:
    """Km, undercharged days and parked runs per vehicle × day (what ages a battery)."""
    n_trips = trips.per_day(n_vehicles, days)
    drive_s = trips.per_day(n_vehicles, days, trips.dur.astype(float))
    idle_day = n_trips == 0
    idle_run = np.zeros((n_vehicles, days), dtype=np.int32)
    for d in range(days):
        idle_run[:, d] = np.where(idle_day[:, d], (idle_run[:, d - 1] if d else 7) + 1, 0)
    return DailyUse(trips.per_day(n_vehicles, days, trips.col(lib, "distance_km")),
                    (n_trips > 0) & (drive_s < 1200), idle_run)


def starting_odometer(veh: Vehicles, km: np.ndarray) -> np.ndarray:
    """Odometer at the first simulated day: the car's age at its simulated daily distance, ± 30 %."""
    return np.round(veh.age_days * km.mean(axis=1) * veh.mileage_factor, 1)


def routine_services(rng: np.random.Generator, veh: Vehicles, cal: Calendar, odo0: np.ndarray,
                     cumkm: np.ndarray) -> Schedule:
    """Yearly services around the registration anniversary (± 12 days), and every 30,000 km for
    taxis and long-distance drivers; visits closer than 45 days merge. Half include a battery load test."""
    D = cal.days
    visits: list[np.ndarray] = []
    for v in range(veh.n):
        ann = []
        fr = veh.first_reg[v]
        for y in range(cal.day0.year - 1, cal.dates[-1].year + 2):
            try:
                a = pd.Timestamp(year=y, month=fr.month, day=min(fr.day, 28))
            except ValueError:
                continue
            ann.append((a - cal.day0).days + int(rng.normal(0, 12)))
        by_km = []
        if veh.pattern[v] in (TAXI, LONGD):
            k = np.floor(cumkm[v] / 30_000.0)
            by_km = list(np.flatnonzero(np.diff(np.r_[np.floor(odo0[v] / 30_000.0), k]) > 0) + rng.integers(0, 10))
        cand = np.unique(np.array([d for d in ann + by_km if 0 <= d < D], dtype=np.int64))
        kept = []
        for d in cand:
            if not kept or d - kept[-1] >= 45:
                kept.append(d)
        visits.append(np.array(kept, dtype=np.int64))
    return Schedule(visits, [d[rng.random(len(d)) < 0.5] for d in visits])


def battery_lives(rng: np.random.Generator, veh: Vehicles, temp: np.ndarray, use: DailyUse,
                  schedule: Schedule) -> tuple[np.ndarray, list[list[wear.Life]]]:
    """Battery wear (heat, short-trip days, long parked runs) and its lifecycles: a weak battery is
    noticed ~12 days after its need, unless a cold morning leaves the car unable to start first."""
    N, D = temp.shape
    batt_daily = wear.battery_daily_wear(temp, use.undercharged, use.idle_run > 7, veh.batt_q)
    batt_cum = np.cumsum(batt_daily, axis=1)
    nostart_ok = rng.random((N, D)) < 0.03 + 0.25 * np.clip((5.0 - temp) / 15.0, 0, 1)
    init_b = np.minimum(rng.uniform(0, 0.97, N), veh.age_days * batt_daily.mean(axis=1))
    lives: list[list[wear.Life]] = []
    for v in range(N):
        ns_days = np.flatnonzero(nostart_ok[v])

        def resolve(n, ns_days=ns_days):
            noticed = n + int(np.ceil(rng.lognormal(np.log(12), 0.6)))
            i = np.searchsorted(ns_days, n)
            ns = int(ns_days[i]) if i < len(ns_days) else 10**9
            if ns < noticed:
                return ns + int(rng.choice([0, 1, 1, 2])), "no_start", ns
            return noticed, "reactive", -1
        lives.append(wear.lifecycles(batt_cum[v], init_b[v], schedule.battery_tested[v], wear.BATT_INSPECT_FRAC, resolve))
    return batt_cum, lives


def dead_battery_days(lives: list[list[wear.Life]], days: int) -> np.ndarray:
    """N × D: from a no-start until the battery is replaced the car is not driven."""
    dead = np.zeros((len(lives), days), dtype=bool)
    for v, vl in enumerate(lives):
        for lf in vl:
            if lf.dead_from >= 0:
                dead[v, lf.dead_from: (lf.replace_day if lf.replace_day >= 0 else days)] = True
    return dead


def cold_tire_pressure(rng: np.random.Generator, veh: Vehicles, temp: np.ndarray, visits: list[np.ndarray]) -> np.ndarray:
    """N × D cold pressure (kPa): slow leaks since the last top-up (by the driver, or at a workshop
    visit), capped at −45 %, and ~0.33 % per °C from 18 °C."""
    N, D = temp.shape
    topup = rng.random((N, D)) < (1.0 / veh.topup_every)[:, None]
    for v in range(N):
        topup[v, visits[v]] = True
    idx = np.where(topup, np.arange(D)[None, :], -(rng.random(N) * veh.topup_every).astype(np.int64)[:, None])
    since = np.arange(D)[None, :] - np.maximum.accumulate(idx, axis=1)
    deficit = np.minimum(0.45, veh.leak[:, None] * since)
    return veh.placard[:, None] * (1 - deficit) * (1 + 0.0033 * (temp - 18.0))


def pad_tire_wear(lib: dc.Library, veh: Vehicles, temp: np.ndarray, trips: Trips,
                  cold_p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """N × D cumulative pad and tread wear (fractions of a life) from the trips actually driven:
    pads from friction-braking energy, tread from distance × harshness × under-inflation × heat."""
    N, D = temp.shape
    dist = trips.col(lib, "distance_km")
    harsh = trips.col(lib, "harsh_brake_count") + trips.col(lib, "harsh_accel_count")
    pad_day = trips.per_day(N, D, wear.pad_trip_wear(trips.col(lib, "friction_kj_per_t"), dist))
    pad_cum = np.cumsum(pad_day, axis=1) / (wear.PAD_CAPACITY * veh.pad_q[:, None])
    psi_under = np.clip(veh.placard[:, None] - cold_p, 0, None) / wear.KPA_PER_PSI
    tire_day = trips.per_day(N, D, wear.tire_trip_wear(dist, harsh)) * wear.tire_day_factor(psi_under, temp)
    tire_cum = np.cumsum(tire_day, axis=1) / (wear.TIRE_CAPACITY_KM * veh.tire_q[:, None])
    return pad_cum, tire_cum


def pad_tire_lives(rng: np.random.Generator, veh: Vehicles, pad_cum: np.ndarray, tire_cum: np.ndarray,
                   schedule: Schedule) -> tuple[list[list[wear.Life]], list[list[wear.Life]]]:
    """Lifecycles of pads and tires: worn ones found at a visit are replaced there; after a need the
    driver comes in after a lognormal delay (pads ~8 days, at most 45; tires ~14, at most 120)."""
    N, D = pad_cum.shape
    init_p = np.minimum(rng.uniform(0, 0.97, N), veh.age_days * pad_cum[:, -1] / D)
    init_t = np.minimum(rng.uniform(0, 0.97, N), veh.age_days * tire_cum[:, -1] / D)
    pads, tires = [], []
    for v in range(N):
        pads.append(wear.lifecycles(pad_cum[v], init_p[v], schedule.visits[v], wear.PAD_INSPECT_FRAC,
                                    lambda n: (n + int(min(45, np.ceil(rng.lognormal(np.log(8), 0.7)))), "reactive", -1)))
        tires.append(wear.lifecycles(tire_cum[v], init_t[v], schedule.visits[v], wear.TIRE_INSPECT_FRAC,
                                     lambda n: (n + int(min(120, np.ceil(rng.lognormal(np.log(14), 0.8)))), "reactive", -1)))
    return pads, tires


def _vehicle_visits(rng: np.random.Generator, v: int, days: int, schedule: Schedule,
                    lives: dict[str, list[list[wear.Life]]]) -> list[tuple]:
    """One vehicle's workshop events (v, day, component, action)."""
    events = []
    replaced = {c: {lf.replace_day for lf in lives[c][v] if lf.replace_day >= 0} for c in lives}
    for d in schedule.visits[v]:
        events.append((v, d, "other", "replace"))              # oil and filter: the routine service
        if d not in replaced["brake"]:
            events.append((v, d, "brake", "inspect"))
        if d not in replaced["tire"] and rng.random() < 0.6:
            events.append((v, d, "tire", "inspect"))
    for d in schedule.battery_tested[v]:
        if d not in replaced["battery"]:
            events.append((v, d, "battery", "inspect"))
    for d in np.flatnonzero(rng.random(days) < 0.4 / 365.25):     # bulbs, wipers, exhaust…
        events.append((v, d, "other", "repair"))
    for comp, all_lives in lives.items():
        for lf in all_lives[v]:
            if lf.dead_from >= 0:      # the no-start morning: roadside assistance, a reactive repair
                events.append((v, lf.dead_from, comp, "repair"))
            if lf.replace_day >= 0:
                events.append((v, lf.replace_day, comp, "replace"))
                if lf.resolution == "reactive" and rng.random() < 0.25 and lf.replace_day - lf.need_day >= 3:
                    # looked at first (quote, parts ordered), replaced on a later visit
                    events.append((v, int(rng.integers(lf.need_day, lf.replace_day)), comp, "inspect"))
    return events


def workshop_visits(rng: np.random.Generator, veh: Vehicles, cal: Calendar, schedule: Schedule,
                    lives: dict[str, list[list[wear.Life]]]) -> pd.DataFrame:
    """The workshop's events as (v, d, component, action), one per kind and day: routine services (oil,
    brake and tire inspections, battery tests), odd repairs, no-starts (a reactive repair on the day)
    and every replacement (sometimes after an inspection visit with a quote)."""
    events = [e for v in range(veh.n) for e in _vehicle_visits(rng, v, cal.days, schedule, lives)]
    ev = pd.DataFrame(events, columns=["v", "d", "component", "action"]).astype({"v": np.int64, "d": np.int64}).sort_values(["v", "d", "component", "action"], kind="stable")
    return ev.drop_duplicates(["v", "d", "component", "action"]).reset_index(drop=True)


def service_events(seed: int, veh: Vehicles, cal: Calendar, cumkm: np.ndarray, ev: pd.DataFrame) -> pd.DataFrame:
    """The workshop's events (`workshop_visits`) as the CRM holds them."""
    return schemas.conform(pd.DataFrame({
        "event_id": [f"SIM{seed % 100000:05d}-{i:07d}" for i in range(len(ev))],
        "vehicle_id": veh.vin_arr[ev["v"].to_numpy()],
        "date": cal.dates[ev["d"].to_numpy()].date,
        "odometer_km": np.round(cumkm[ev["v"].to_numpy(), ev["d"].to_numpy()]),
        "component": ev["component"].to_numpy(), "action": ev["action"].to_numpy(), "source": "workshop"}), "service_events")


def _start_conditions(rng: np.random.Generator, temp: np.ndarray, trips: Trips) -> dict[str, np.ndarray]:
    """Ambient at departure (daily cycle + noise) and intake/coolant still warm from the last trip."""
    end_s = trips.start_s + trips.dur
    same_v = np.r_[False, trips.veh[1:] == trips.veh[:-1]]
    gap_h = np.where(same_v, (trips.start_s - np.r_[0, end_s[:-1]]) / 3600.0, 36.0)
    hour = trips.rel / 3600.0
    amb_true = temp[trips.veh, trips.day] + 4.0 * np.sin(2 * np.pi * (hour - 9.0) / 24.0) + rng.normal(0, 0.8, len(trips))
    return dict(gap_h=gap_h, amb_true=amb_true, amb=np.round(amb_true),
                intake0=np.round(amb_true + 2.0 + 15.0 * np.exp(-gap_h / 1.0)),
                coolant0=np.round(amb_true + (88.0 - amb_true) * np.exp(-gap_h / 2.0)))


def _battery_voltages(rng: np.random.Generator, veh: Vehicles, trips: Trips, soh: np.ndarray, undercharged: np.ndarray,
                      start: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rest voltage (charge and health, drain while parked), crank minimum (health and cold, against
    the temperature-dependent load-test line), alternator charge voltage; none for late-waking loggers."""
    nT, D = len(trips), soh.shape[1]
    amb_true, gap_h = start["amb_true"], start["gap_h"]
    s_trip = soh[trips.veh, trips.day]
    under_prev = np.r_[False, undercharged.ravel()[:-1]][trips.veh * D + trips.day] & (trips.day > 0)
    rest = wear.rest_voltage(s_trip, under_prev, gap_h / 24.0, amb_true) + rng.normal(0, 0.02, nT)
    crank = (wear.crank_threshold(amb_true) + 1.05 - 2.3 * (1 - s_trip) - 0.015 * (1 - s_trip) * np.clip(15 - amb_true, 0, None)
             + 0.25 * (start["coolant0"] > 50) + rng.normal(0, 0.07, nT))
    rest = np.round(rest, 2)
    crank = np.round(np.minimum(crank, rest - 1.0), 2)
    charge = np.round(np.clip(veh.alt_v[trips.veh] - 0.006 * (amb_true - 25.0) + rng.normal(0, 0.03, nT), 13.2, 14.9), 2)
    late = veh.late_logger[trips.veh]
    rest[late], crank[late] = np.nan, np.nan
    return dict(rest=rest, crank=crank, charge=charge)


def trip_telemetry(rng: np.random.Generator, lib: dc.Library, veh: Vehicles, temp: np.ndarray, trips: Trips,
                   soh: np.ndarray, undercharged: np.ndarray, cold_p: np.ndarray, odo0: np.ndarray) -> Telemetry:
    """What each trip's logger reads: temperatures and voltages at the start, tire pressures, the
    odometer at the end, the fuel level at the start."""
    start = _start_conditions(rng, temp, trips)
    volts = _battery_voltages(rng, veh, trips, soh, undercharged, start)
    tire_base = cold_p[trips.veh, trips.day]
    tires4 = np.round(tire_base[:, None] * (1 - veh.tire_spread[trips.veh]), 0)
    same_v = np.r_[False, trips.veh[1:] == trips.veh[:-1]]
    odo_end = np.round(odo0[trips.veh] + _within_group_cumsum(trips.col(lib, "distance_km"), ~same_v), 1)
    return Telemetry(
        amb_true=start["amb_true"], amb=start["amb"], intake0=start["intake0"], coolant0=start["coolant0"], **volts,
        tire_base=tire_base, tires4=tires4, tire_min=np.where(veh.has_tpms[trips.veh], tires4.min(axis=1), np.nan),
        odo_end=odo_end, fuel0=np.round(rng.uniform(15, 100, len(trips)), 1))


def coverage(rng: np.random.Generator, n_vehicles: int, days: int) -> np.ndarray:
    """N × D days the logger reports: plugged in for long stretches (some installed late), unplugged
    for short ones, and single days missed (more on flaky installations)."""
    reported = np.zeros((n_vehicles, days), dtype=bool)
    flaky = rng.random(n_vehicles) < 0.15
    late_install = np.where(rng.random(n_vehicles) < 0.3, rng.integers(0, max(1, min(60, days // 4)), n_vehicles), 0)
    for v in range(n_vehicles):
        reported[v] = _runs_mask(rng, days, rng.choice([120.0, 400.0]), 12.0, start_on=rng.random() < 0.93)
        reported[v, :late_install[v]] = False
    reported &= rng.random((n_vehicles, days)) >= np.where(flaky, 0.2, 0.03)[:, None]
    return reported


def trips_table(lib: dc.Library, veh: Vehicles, trips: Trips, tel: Telemetry, reported: np.ndarray) -> pd.DataFrame:
    """The reported trips as the trip summariser would write them; PIDs a model lacks are null."""
    t_veh = trips.veh
    df = pd.DataFrame({
        "vehicle_id": veh.vin_arr[t_veh], "start_s": trips.start_s, "end_s": trips.start_s + trips.dur,
        "distance_km": trips.col(lib, "distance_km"), "duration_s": trips.dur.astype(float),
        **{c: trips.col(lib, c) for c in ("idle_s", "brake_energy_kj_per_t", "harsh_brake_count", "harsh_accel_count",
                                          "max_decel_mps2", "mean_speed_kph")},
        "rest_voltage_v": tel.rest, "crank_min_voltage_v": tel.crank, "charge_voltage_v": tel.charge,
        "ambient_temp_c": np.where(veh.has_amb[t_veh], tel.amb, tel.intake0),
        "odometer_end_km": np.where(veh.has_odo[t_veh], tel.odo_end, np.nan),
        "max_speed_kph": trips.col(lib, "max_speed_kph"), "stop_count": trips.col(lib, "stop_count"),
        "start_coolant_temp_c": tel.coolant0, "tire_pressure_min_kpa": tel.tire_min,
        "n_samples": trips.col(lib, "n_samples"), "source": "sim",
    })
    return _finish_trips(df[reported[t_veh, trips.day]])


def no_start_mornings(battery: list[list[wear.Life]], reported: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(vehicle, day) of each no-start the logger was plugged in for."""
    ns_v, ns_d = [], []
    for v, lives in enumerate(battery):
        for lf in lives:
            if lf.dead_from >= 0 and reported[v, lf.dead_from]:
                ns_v.append(v)
                ns_d.append(lf.dead_from)
    return np.array(ns_v, dtype=np.int64), np.array(ns_d, dtype=np.int64)


def dtc_events(rng: np.random.Generator, veh: Vehicles, cal: Calendar, trips: Trips, tel: Telemetry,
               reported: np.ndarray, no_starts: tuple[np.ndarray, np.ndarray]) -> pd.DataFrame:
    """P0562 (system voltage low) on some weak cranks and on no-start mornings; C0750 (TPMS) on some
    low-pressure trips; C0035 (wheel-speed sensor) rarely. One code per vehicle and day."""
    nT, t_veh = len(trips), trips.veh
    rep_trip = reported[t_veh, trips.day]
    rows = []
    weak = (rep_trip & ~np.isnan(tel.crank) & ((tel.crank < wear.crank_threshold(tel.amb_true) - 0.15) | (tel.rest < 12.2))
            & (rng.random(nT) < 0.35))
    rows.append(pd.DataFrame({"v": t_veh[weak], "ts": trips.start_s[weak] + 2, "code": "P0562", "status": "pending"}))
    low_p = rep_trip & veh.has_tpms[t_veh] & (tel.tire_base < 0.7 * veh.placard[t_veh]) & (rng.random(nT) < 0.05)
    rows.append(pd.DataFrame({"v": t_veh[low_p], "ts": trips.start_s[low_p] + 5, "code": "C0750", "status": "stored"}))
    wv, wd = np.nonzero((rng.random(reported.shape) < 2e-4) & reported)
    rows.append(pd.DataFrame({"v": wv, "ts": cal.day_epoch[wd] + 9 * 3600, "code": "C0035", "status": "stored"}))
    ns_v, ns_d = no_starts
    rows.append(pd.DataFrame({"v": ns_v, "ts": cal.day_epoch[ns_d] + 7 * 3600 + 1800, "code": "P0562", "status": "stored"}))
    dtc = pd.concat(rows, ignore_index=True)
    dtc["day"] = (dtc["ts"] - cal.day_epoch[0]) // 86400
    dtc = dtc.sort_values(["v", "ts", "code"], kind="stable").drop_duplicates(["v", "day", "code"])
    return schemas.conform(pd.DataFrame({
        "vehicle_id": veh.vin_arr[dtc["v"].to_numpy()],
        "ts": pd.to_datetime(dtc["ts"].to_numpy() * 1000, unit="ms", utc=True).astype("datetime64[ms, UTC]"),
        "code": dtc["code"].to_numpy(), "status": dtc["status"].to_numpy()}).reset_index(drop=True), "dtc_events")


def true_needs_table(veh: Vehicles, cal: Calendar, cumkm: np.ndarray, lives: dict[str, list[list[wear.Life]]],
                     parts: inspections.Parts) -> pd.DataFrame:
    """Hidden truth: one row per need reached in the horizon (the day the part's leading position reached
    its limit: a pad at 3 mm on any axle, a tire at 3 mm, a battery failing its load test), that
    position, how it was resolved and the part's life."""
    rows = []
    for v in range(veh.n):
        for comp, all_lives in lives.items():
            for lf in all_lives[v]:
                if lf.need_day >= 0:
                    inst = lf.install_day
                    rows.append((v, comp, lf.need_day, float(np.round(cumkm[v, lf.need_day])), inst, lf.replace_day,
                                 lf.resolution, lf.dead_from,
                                 (cumkm[v, lf.need_day] - cumkm[v, inst]) if inst >= 0 else np.nan,
                                 (lf.need_day - inst) if inst >= 0 else np.nan))
    nd = pd.DataFrame(rows, columns=["v", "component", "need_day", "odometer_km", "install_day", "replace_day",
                                     "resolution", "dead_from", "life_km", "life_days"])
    nd = nd.astype({"v": np.int64, "need_day": np.int64, "install_day": np.int64, "replace_day": np.int64, "dead_from": np.int64,
                    "odometer_km": float, "life_km": float, "life_days": float})

    def day_or_nat(days: pd.Series) -> pd.Series:
        d = days.to_numpy(dtype=np.int64)
        out = cal.dates[np.clip(d, 0, cal.days - 1)].to_numpy().astype("datetime64[ms]")
        out[d < 0] = np.datetime64("NaT")
        return pd.Series(out, index=days.index)
    lead = {c: parts.leading(c) for c in lives}
    return pd.DataFrame({
        "vehicle_id": veh.vin_arr[nd["v"].to_numpy()],
        "component": nd["component"],
        "need_date": day_or_nat(nd["need_day"]),
        "position": pd.array([lead[c][v] for c, v in zip(nd["component"], nd["v"])], dtype="string"),
        "odometer_km": nd["odometer_km"],
        "install_date": day_or_nat(nd["install_day"]),
        "replace_date": day_or_nat(nd["replace_day"]),
        "resolution": nd["resolution"],
        "no_start_date": day_or_nat(nd["dead_from"]),
        "delay_days": np.where(nd["replace_day"] >= 0, nd["replace_day"] - nd["need_day"], np.nan),
        "life_km": nd["life_km"], "life_days": nd["life_days"],
    }).sort_values(["vehicle_id", "need_date", "component"], kind="stable").reset_index(drop=True)


def lives_table(veh: Vehicles, km: np.ndarray, cum: dict[str, np.ndarray]) -> pd.DataFrame:
    """Hidden truth: each vehicle's expected life per component at its simulated wear rate."""
    D = km.shape[1]
    km_day = km.mean(axis=1)
    rows = []
    for v in range(veh.n):
        for comp, c in cum.items():
            rate = c[v, -1] / D
            rows.append((v, comp, km_day[v] / rate if rate > 0 else np.inf, 1.0 / rate / 365.25 if rate > 0 else np.inf))
    lv = pd.DataFrame(rows, columns=["v", "component", "expected_life_km", "expected_life_years"])
    v = lv["v"].to_numpy()
    return pd.DataFrame({"vehicle_id": veh.vin_arr[v], "component": lv["component"],
                         "expected_life_km": lv["expected_life_km"], "expected_life_years": lv["expected_life_years"],
                         "segment": veh.segment[v], "pattern": np.array(PATTERNS)[veh.pattern[v]],
                         "climate": np.array(ZONES)[veh.zone[v]], "style": veh.style[v]})


SIM_DEALERS = 4


def vehicles_table(veh: Vehicles) -> pd.DataFrame:
    cat = veh.catalog
    return schemas.conform(pd.DataFrame({
        "vehicle_id": veh.vins, "make": [c[0] for c in cat], "model": [c[1] for c in cat], "model_year": veh.model_year,
        "segment": veh.segment, "curb_mass_kg": np.round(veh.mass), "first_registration_date": veh.first_reg.date,
        "customer_id": [f"C{c:06d}" for c in veh.customer], "preferred_channel": veh.channel,
        # a dealer group of SIM_DEALERS dealers, by turns (no random draw: the fleet stays as it was)
        "dealer_id": [f"D{i % SIM_DEALERS + 1:03d}" for i in range(len(veh.vins))]}), "vehicles")


def raw_samples(rng: np.random.Generator, lib: dc.Library, veh: Vehicles, cal: Calendar, temp: np.ndarray,
                trips: Trips, tel: Telemetry, reported: np.ndarray, no_starts: tuple[np.ndarray, np.ndarray],
                raw_vehicles: int) -> pd.DataFrame:
    """1 Hz samples of the first `raw_vehicles` vehicles' reported trips and no-start mornings."""
    sel = reported[trips.veh, trips.day] & (trips.veh < raw_vehicles)
    tele = dict(start_s=trips.start_s, var=trips.var, rest=tel.rest, crank=tel.crank, charge=tel.charge, amb=tel.amb,
                intake0=tel.intake0, coolant0=tel.coolant0, tires4=tel.tires4, odo_end=tel.odo_end, fuel0=tel.fuel0)
    tele = {k: a[sel] for k, a in tele.items()}
    tv = trips.veh[sel]
    tele.update(vin=veh.vin_arr[tv], has_amb=veh.has_amb[tv], has_tpms=veh.has_tpms[tv], has_odo=veh.has_odo[tv],
                late=veh.late_logger[tv])
    # in chunks of ~1M samples: rendering needs ~40 temporary arrays per sample
    est = np.cumsum(lib.length[tele["var"]] + 45)
    bounds = np.r_[0, np.searchsorted(est, np.arange(1, est[-1] // 1_000_000 + 1) * 1_000_000), len(est)] if len(est) else [0, 0]
    chunks = [render_samples(lib, {k: a[lo:hi] for k, a in tele.items()}, rng)
              for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
    samples = pd.concat(chunks, ignore_index=True) if chunks else schemas.empty("samples")
    ns_v, ns_d = no_starts
    ns_sel = ns_v < raw_vehicles
    if ns_sel.any():
        v, d = ns_v[ns_sel], ns_d[ns_sel]
        samples = pd.concat([samples, _render_no_starts(veh.vin_arr[v], cal.day_epoch[d], temp[v, d], veh.has_amb[v], rng)],
                            ignore_index=True)
        samples = samples.sort_values(["vehicle_id", "ts"], kind="stable").reset_index(drop=True)
    return samples


# ---- the pipeline -----------------------------------------------------------------------------------------
PHASES = ("variant library (real drive cycles)", "vehicles and drivers", "climate: daily temperatures",
          "parked stretches", "trips per day from drive-cycle variants", "trip order and times of day",
          "hidden wear: battery, routine services, no-starts", "hidden wear: brake pads and tires",
          "workshop service events", "workshop inspections", "telemetry and coverage", "DTC events and hidden truth",
          "raw 1 Hz samples")  # the last only with raw_vehicles


def _check_arguments(n_vehicles: int, days: int, climate: str, aggressiveness: float) -> None:
    if n_vehicles < 1 or days < 1:
        raise ValueError("n_vehicles and days must be at least 1")
    if climate not in (*ZONES, "mixed"):
        raise ValueError(f"climate must be one of {(*ZONES, 'mixed')}, not {climate!r}")
    if not aggressiveness > 0:
        raise ValueError("aggressiveness must be positive")


def _stepper(progress: Progress | None, raw: bool) -> Callable[[str], None]:
    """`step(phase)` reports a phase of PHASES about to run, or "done", as (name, phases done, phases in all)."""
    total = len(PHASES) - (not raw)

    def step(name: str) -> None:
        done = total if name == "done" else PHASES.index(name)
        if progress:
            progress(name, done, total)
    return step


def simulate_fleet(n_vehicles: int, days: int, seed: int, climate: str = "mixed", aggressiveness: float = 1.0,
                   raw_vehicles: int = 0, start: str = "2025-01-01", progress: Progress | None = None) -> Fleet:
    """A synthetic fleet of `n_vehicles` over `days` from `start`; same arguments → identical output.

    `progress(phase, done, total)` is called before each phase and once at the end ("done").
    """
    return _simulate(n_vehicles, days, seed, climate, aggressiveness, raw_vehicles, start, progress)


# Trips are tabled this many vehicles at a time: a table of every trip at once (23 columns, trip ids as
# strings) was the simulator's peak memory, ~2 GB per 1,000 vehicles × 730 days.
TRIP_CHUNK_VEHICLES = 250


def _trips_in_chunks(lib: dc.Library, veh: Vehicles, trips: Trips, tel: Telemetry, reported: np.ndarray,
                     sink: Callable[[pd.DataFrame], None] | None) -> pd.DataFrame | None:
    """`trips_table` a block of vehicles at a time (rows are per trip, ordered by vehicle: the blocks'
    tables one after the other are the whole table). To `sink` when given, else concatenated."""
    cuts = np.searchsorted(trips.veh, np.arange(0, veh.n + TRIP_CHUNK_VEHICLES, TRIP_CHUNK_VEHICLES))
    parts = []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        if hi <= lo and parts:
            continue
        part = trips_table(lib, veh, trips.subset(slice(lo, hi)), tel.rows(lo, hi), reported)
        if sink is None:
            parts.append(part)
        else:
            sink(part)
    if sink is not None:
        return None
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]


def _simulate(n_vehicles: int, days: int, seed: int, climate: str = "mixed", aggressiveness: float = 1.0,
              raw_vehicles: int = 0, start: str = "2025-01-01", progress: Progress | None = None,
              trips_sink: Callable[[pd.DataFrame], None] | None = None) -> Fleet:
    """`simulate_fleet`; with `trips_sink` the trips table goes to it in blocks of vehicles and the
    returned fleet has no trips (what `simulate_to_store` uses to bound memory)."""
    _check_arguments(n_vehicles, days, climate, aggressiveness)
    step = _stepper(progress, raw_vehicles > 0)
    rng, cal, N, D = Streams.from_seed(seed), Calendar.starting(start, days), n_vehicles, days
    step("variant library (real drive cycles)")
    lib = dc.library()
    step("vehicles and drivers")
    veh = draw_vehicles(rng.vehicles, N, cal.day0, lib, climate, aggressiveness)
    step("climate: daily temperatures")
    temp = daily_temperatures(rng.temperature, veh.zone, cal)
    step("parked stretches")
    parked = parked_stretches(rng.trips, veh.pattern, D)
    step("trips per day from drive-cycle variants")
    slots = trip_slots(rng.trips, veh, cal, parked)
    var = trip_variants(rng.trips, lib, veh, slots)
    step("trip order and times of day")
    trips = times_of_day(rng.times, lib, veh, cal, slots, var, order_within_day(rng.times, slots, D))
    del slots, var

    step("hidden wear: battery, routine services, no-starts")
    use = daily_use(lib, trips, N, D)         # the use as planned: a dead battery's lost days still count here
    odo0 = starting_odometer(veh, use.km)
    schedule = routine_services(rng.service, veh, cal, odo0, odo0[:, None] + np.cumsum(use.km, axis=1))
    batt_cum, batt_lives = battery_lives(rng.battery, veh, temp, use, schedule)
    trips = trips.subset(~dead_battery_days(batt_lives, D)[trips.veh, trips.day])
    step("hidden wear: brake pads and tires")
    km = trips.per_day(N, D, trips.col(lib, "distance_km"))   # the use as driven
    cumkm = odo0[:, None] + np.cumsum(km, axis=1)
    cold_p = cold_tire_pressure(rng.tires, veh, temp, schedule.visits)
    pad_cum, tire_cum = pad_tire_wear(lib, veh, temp, trips, cold_p)
    pad_lives, tire_lives = pad_tire_lives(rng.service, veh, pad_cum, tire_cum, schedule)
    cum = {"brake": pad_cum, "tire": tire_cum, "battery": batt_cum}
    lives = {"brake": pad_lives, "tire": tire_lives, "battery": batt_lives}
    frac = {c: np.vstack([wear.wear_fraction(cum[c][v], lives[c][v]) for v in range(N)]) for c in cum}
    hidden = HiddenWear(cum=cum, lives=lives, frac=frac, soh=wear.soh_from_wear(frac["battery"]))
    step("workshop service events")
    visits = workshop_visits(rng.service, veh, cal, schedule, hidden.lives)
    service_df = service_events(seed, veh, cal, cumkm, visits)
    step("workshop inspections")
    parts = inspections.draw_parts(rng.inspections, N)
    states = inspections.true_states(parts, hidden.frac)
    readings = inspections.inspection_rows(rng.inspections, parts, visits, states, use.undercharged, temp)
    insp_df = inspections.inspections_table(readings, seed, veh.vin_arr, cal.dates, cumkm)

    step("telemetry and coverage")
    tel = trip_telemetry(rng.telemetry, lib, veh, temp, trips, hidden.soh, use.undercharged, cold_p, odo0)
    reported = coverage(rng.coverage, N, D)
    trips_df = _trips_in_chunks(lib, veh, trips, tel, reported, trips_sink)
    step("DTC events and hidden truth")
    no_starts = no_start_mornings(batt_lives, reported)
    dtc_df = dtc_events(rng.telemetry, veh, cal, trips, tel, reported, no_starts)
    true_needs = true_needs_table(veh, cal, cumkm, hidden.lives, parts)
    lives_df = lives_table(veh, km, hidden.cum)
    if not raw_vehicles:
        del tel  # the per-trip readings are the bulk of what is held; only raw samples still need them
    true_state = inspections.true_state_table(veh.vin_arr, cal.dates, states, hidden.lives, km,
                                              {"distance_km": km, "brake_energy": trips.per_day(N, D, trips.col(lib, "brake_energy_kj_per_t"))})
    samples = schemas.empty("samples")
    if raw_vehicles:
        step("raw 1 Hz samples")
        samples = raw_samples(rng.raw, lib, veh, cal, temp, trips, tel, reported, no_starts, raw_vehicles)
    step("done")
    if trips_df is None:
        trips_df = schemas.empty("trips")
    return Fleet(vehicles_table(veh), trips_df, service_df, dtc_df, true_needs, samples, lives_df, insp_df, true_state,
                 cumkm)


def _trip_ids(vin: np.ndarray, start_s: np.ndarray) -> np.ndarray:
    s = np.datetime_as_string(start_s.astype("datetime64[s]"), unit="s")  # 2025-01-01T07:12:00
    compact = pd.Series(s).str.replace(r"[-:]", "", regex=True).to_numpy(dtype=object)
    return pd.Series(vin).to_numpy(dtype=object) + "-" + compact + "Z"


def _finish_trips(df: pd.DataFrame) -> pd.DataFrame:
    vin = df["vehicle_id"].to_numpy(dtype=object)
    st = df["start_s"].to_numpy()
    out = df.drop(columns=["start_s", "end_s"])
    out.insert(1, "trip_id", _trip_ids(vin, st))
    out.insert(2, "start_ts", pd.to_datetime(st * 1000, unit="ms", utc=True).astype("datetime64[ms, UTC]"))
    out.insert(3, "end_ts", pd.to_datetime(df["end_s"].to_numpy() * 1000, unit="ms", utc=True).astype("datetime64[ms, UTC]"))
    out = out.reset_index(drop=True)
    return schemas.conform(out, "trips")


# ---- rendering ------------------------------------------------------------------------------------------
_NOISE = np.array([-0.02, -0.01, 0.0, 0.01, 0.02])


def fuel_level(fuel0: np.ndarray, cum_km: np.ndarray) -> np.ndarray:
    """~0.15 % of the tank per km; a long trip refuels (back to full) at 5 % instead of going below empty."""
    return np.round(np.mod(fuel0 - 5.0 - 0.15 * cum_km, 95.0) + 5.0, 1)


@dataclass(frozen=True)
class _Layout:
    """Where each 1 Hz sample sits: its trip, its position in the trip's block, seconds from the start."""
    trip: np.ndarray     # per sample: index of its trip
    first: np.ndarray    # per trip: its first sample
    n_pre: np.ndarray    # per trip: engine-off readings before the first rpm reading
    length: np.ndarray   # per trip: engine-on seconds (the variant's length)
    k: np.ndarray        # per sample: position within the trip's block
    rel: np.ndarray      # per sample: seconds from the start (first rpm reading)
    pre: np.ndarray      # per sample: engine off before the start
    on: np.ndarray       # per sample: engine on
    post: np.ndarray     # per sample: engine off after the stop


def _layout(lib: dc.Library, t: dict, rng: np.random.Generator) -> _Layout:
    n_tr = len(t["var"])
    length = lib.length[t["var"]]
    n_pre = np.where(t["late"], 0, rng.integers(10, 41, n_tr))
    tot = n_pre + length + 2                                   # two engine-off readings after the stop
    trip = np.repeat(np.arange(n_tr), tot)
    first = np.r_[0, np.cumsum(tot)[:-1]]
    k = np.arange(tot.sum()) - np.repeat(first, tot)
    rel = k - n_pre[trip]
    return _Layout(trip, first, n_pre, length, k, rel, pre=rel < 0, on=(rel >= 0) & (rel < length[trip]),
                   post=rel >= length[trip])


def _engine_signals(lib: dc.Library, var: np.ndarray, lay: _Layout) -> dict[str, np.ndarray]:
    """Speed from the variant; rpm, throttle and load from its real template."""
    trip, rel, on = lay.trip, lay.rel, lay.on
    on_idx = np.clip(rel, 0, lay.length[trip] - 1)
    tix = lib.tmpl_offset[lib.summary["template"].to_numpy()[var]][trip] + on_idx
    rpm = np.where(on, lib.rpm[tix], 0.0)
    return dict(speed=np.where(on, lib.speed[lib.offset[var][trip] + on_idx], 0.0),
                rpm=np.where(on & (rel == 0), np.maximum(rpm, 1100.0), rpm),  # start flare
                throttle=np.where(on, lib.throttle[tix], np.nan), load=np.where(on, lib.load[tix], 0.0))


def _module_voltage(t: dict, lay: _Layout, noise: np.ndarray) -> np.ndarray:
    """Rest readings, the crank dip one second before the first rpm reading, the alternator settling
    within 10 s, then a surface charge fading after the stop."""
    trip, k, rel, pre, on, post = lay.trip, lay.k, lay.rel, lay.pre, lay.on, lay.post
    rest, crank, charge = t["rest"][trip], t["crank"][trip], t["charge"][trip]
    # resting readings jitter in ± pairs (an odd one out reads exactly): their median is the rest voltage
    j = np.where(pre, k, 0)
    paired = np.where(j % 2 == 0, 1.0, -1.0) * noise[np.maximum(lay.first[trip] + j - j % 2, 0)]
    paired = np.where(pre & (j == lay.n_pre[trip] - 2) & (j % 2 == 0), 0.0, paired)
    volt = np.empty(len(trip))
    volt[pre] = (rest + paired)[pre]
    dip = pre & (rel == -1)
    volt[dip] = crank[dip]
    ramp = np.clip(rel / 10.0, 0, 1)
    crank_f = np.where(np.isnan(crank), charge - 1.5, crank)  # late-waking logger: no dip seen, still a ramp
    settle = crank_f + (charge - 0.15 - crank_f) * (0.6 + 0.4 * ramp)
    volt[on] = np.where(rel[on] >= 10, charge[on] + noise[on], settle[on])
    volt[post] = (12.95 - 0.05 * (rel[post] - lay.length[trip][post]))
    return np.round(volt, 3)


def _warm_up(t: dict, lay: _Layout) -> dict[str, np.ndarray]:
    """Ambient (if reported), intake and coolant warming from their start values."""
    trip, rel = lay.trip, lay.rel
    mins = np.maximum(rel, 0) / 60.0
    intake = np.round(t["intake0"][trip] + (t["amb"][trip] + 8 - t["intake0"][trip]) * (1 - np.exp(-mins / 10.0)))
    c0 = t["coolant0"][trip]
    return dict(amb=np.where(t["has_amb"][trip], t["amb"][trip], np.nan),
                intake=np.where(rel <= 0, t["intake0"][trip], intake),
                coolant=np.where(rel <= 0, c0, np.round(c0 + (90.0 - c0) * (1 - np.exp(-mins / 7.0)))))


def _distance_signals(lib: dc.Library, t: dict, lay: _Layout, speed: np.ndarray) -> dict[str, np.ndarray]:
    """Odometer (the summariser's trapezoid; the last engine-on reading is the trip's odometer), fuel,
    tire pressures warming by up to 8 %."""
    trip, rel, on, post = lay.trip, lay.rel, lay.on, lay.post
    v_ms = speed / 3.6
    step = np.where(on & (rel > 0), 0.5 * (v_ms + np.r_[0.0, v_ms[:-1]]), 0.0)
    cum_km = _within_group_cumsum(step, lay.k == 0) / 1000.0
    dist_tot = lib.summary["distance_km"].to_numpy()[t["var"]][trip]
    odo = np.round(t["odo_end"][trip] - dist_tot + cum_km, 1)
    last_on = on & (rel == lay.length[trip] - 1)
    odo[last_on] = t["odo_end"][trip][last_on]
    odo[post] = t["odo_end"][trip][post]
    warm = 1.0 + 0.08 * (1 - np.exp(-(np.maximum(rel, 0) / 60.0) / 15.0))
    tires = t["tires4"][trip] * warm[:, None]
    return dict(odo=np.where(t["has_odo"][trip], odo, np.nan), fuel=fuel_level(t["fuel0"][trip], cum_km),
                tires=np.where(t["has_tpms"][trip][:, None], np.round(tires, 1), np.nan))


def render_samples(lib: dc.Library, t: dict, rng: np.random.Generator) -> pd.DataFrame:
    """1 Hz samples of the given trips, built so that `trips.summarise` returns their trip rows.

    Per trip: engine-off readings before the start (rest voltage; none for late-waking loggers) ending
    in the crank dip one second before the first rpm reading; the variant's speed trace with rpm,
    throttle and load from its real template; alternator voltage settling within 10 s; ambient,
    warming intake/coolant/tires, odometer and fuel; two engine-off readings after the stop.
    """
    if len(t["var"]) == 0:
        return schemas.empty("samples")
    lay = _layout(lib, t, rng)
    noise = rng.choice(_NOISE, len(lay.trip))
    eng = _engine_signals(lib, t["var"], lay)
    heat = _warm_up(t, lay)
    dist = _distance_signals(lib, t, lay, eng["speed"])
    tires = dist["tires"]
    df = pd.DataFrame({
        "vehicle_id": t["vin"][lay.trip],
        "ts": pd.to_datetime((t["start_s"][lay.trip] + lay.rel) * 1000, unit="ms", utc=True).astype("datetime64[ms, UTC]"),
        "source": "sim", "speed_kph": eng["speed"], "rpm": eng["rpm"], "engine_load_pct": eng["load"],
        "throttle_pct": eng["throttle"], "coolant_temp_c": heat["coolant"], "intake_air_temp_c": heat["intake"],
        "ambient_air_temp_c": heat["amb"], "fuel_level_pct": dist["fuel"],
        "control_module_voltage_v": _module_voltage(t, lay, noise), "odometer_km": dist["odo"],
        "distance_since_dtc_clear_km": np.nan, "brake_pressure_bar": np.nan,
        "brake_switch": pd.array(np.r_[False, np.diff(eng["speed"]) < -1.5] & lay.on, dtype="boolean"),
        "tire_pressure_kpa_fl": tires[:, 0], "tire_pressure_kpa_fr": tires[:, 1],
        "tire_pressure_kpa_rl": tires[:, 2], "tire_pressure_kpa_rr": tires[:, 3],
    })
    return schemas.conform(df, "samples")


def _render_no_starts(vins, day_s, temp, has_amb, rng) -> pd.DataFrame:
    """A dead-battery morning: ignition on, low rest voltage, three failed cranks (rpm never > 300)."""
    rows = []
    for vin, d, tc, ha in zip(vins, day_s, temp, has_amb):
        t0 = int(d) + 7 * 3600 + 1800 - 40
        rest = round(11.9 + rng.normal(0, 0.05), 2)
        for i in range(90):
            ph = i % 30
            v = rest - (0.0 if ph < 25 else [4.8, 5.1, 4.9, 3.0, 1.0][ph - 25])
            rows.append((vin, t0 + i, 120.0 if 25 <= ph <= 27 else 0.0, round(v, 3), round(tc) if ha else np.nan))
    df = pd.DataFrame(rows, columns=["vehicle_id", "t", "rpm", "control_module_voltage_v", "ambient_air_temp_c"])
    df["ts"] = pd.to_datetime(df.pop("t") * 1000, unit="ms", utc=True)
    df["source"] = "sim"
    df["speed_kph"] = 0.0
    return schemas.conform(df, "samples")


# ---- writing --------------------------------------------------------------------------------------------
def write_fleet(fleet: Fleet, paths: Paths) -> None:
    """Write a fleet under $AUTOPDM_HOME, replacing any earlier simulated fleet.

    The workshop's records (vehicles, service events, inspections) go through the one import path for
    CRM records (`autopdm.ingest.crm.import_records`: validated row by row, upserted by natural key), as
    a real workshop's would, after the records of earlier simulated vehicles are taken out; records of
    other vehicles (recorded trips, CRM imports) are kept. Trips (recorded, non-sim trips kept) and the
    hidden truth (true_needs, true_lives, true_state: evaluation only) via `store.write_table`. Samples
    and DTC events via `store.append` (validated, partitioned by vehicle and date), after removing the
    partitions of earlier simulated vehicles.
    """
    paths.ensure()
    recorded, old_sim_v = _previous_trips(paths)
    keep_v = _write_records(fleet, paths, set(recorded["vehicle_id"]), old_sim_v)
    store.write_table(pd.concat([recorded, fleet.trips], ignore_index=True) if len(recorded) else fleet.trips, "trips", paths)
    _write_rest(fleet, paths, old_sim_v - keep_v)


@dataclass
class TripsWritten:
    rows: int = 0
    km: float = 0.0


def simulate_to_store(paths: Paths, n_vehicles: int, days: int, seed: int, climate: str = "mixed",
                      aggressiveness: float = 1.0, raw_vehicles: int = 0, start: str = "2025-01-01",
                      progress: Progress | None = None) -> tuple[Fleet, TripsWritten]:
    """`simulate_fleet` then `write_fleet`, in bounded memory: the trips table (the bulk) is written a
    block of vehicles at a time as it is made and never held whole; the same files as `write_fleet`
    writes. Returns the fleet without its trips, and how many trips (and km) were written."""
    paths.ensure()
    recorded, old_sim_v = _previous_trips(paths)
    target = paths.table("trips")
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    written = TripsWritten()
    out: dict[str, pq.ParquetWriter] = {}

    def put(df: pd.DataFrame) -> None:
        # the first block's schema carries the pandas metadata `store.write_table` would store
        tbl = schemas.to_arrow(schemas.conform(df, "trips"), "trips")
        if "w" not in out:
            out["w"] = pq.ParquetWriter(tmp, tbl.schema, compression="zstd")
        out["w"].write_table(tbl)

    def sink(df: pd.DataFrame) -> None:
        put(df)
        written.rows += len(df)
        written.km += float(df["distance_km"].sum())

    try:
        if len(recorded):  # first, as write_fleet puts them
            put(recorded)
        recorded_v = set(recorded["vehicle_id"])
        del recorded
        fleet = _simulate(n_vehicles, days, seed, climate, aggressiveness, raw_vehicles, start, progress, trips_sink=sink)
        if "w" not in out:
            put(schemas.empty("trips"))
        out["w"].close()
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        keep_v = _write_records(fleet, paths, recorded_v, old_sim_v)
        os.replace(tmp, target)
        _write_rest(fleet, paths, old_sim_v - keep_v)
    finally:
        if "w" in out:
            out["w"].close()
        tmp.unlink(missing_ok=True)
    return fleet, written


def _previous_trips(paths: Paths) -> tuple[pd.DataFrame, set[str]]:
    """The recorded (non-simulated) trips already stored, and the vehicles of earlier simulated trips —
    read without loading the simulated trips, which can be tens of millions of rows."""
    path = paths.table("trips")
    if not path.exists():
        return schemas.empty("trips"), set()
    src = pq.read_table(path, columns=["source", "vehicle_id"])
    is_sim = pc.fill_null(pc.equal(src["source"], "sim"), False)
    old_sim_v = set(pc.unique(src["vehicle_id"].filter(is_sim)).to_pylist())
    del src
    not_sim = (pc.field("source") != "sim") | pc.field("source").is_null()
    return pq.read_table(path, filters=not_sim).to_pandas(), old_sim_v


def _write_records(fleet: Fleet, paths: Paths, recorded_v: set[str], old_sim_v: set[str]) -> set[str]:
    """The workshop's records of the fleet, after forgetting earlier simulated vehicles'. Returns the
    recorded vehicles (`recorded_v`: those with non-simulated trips) whose records are kept."""
    keep_v = recorded_v - set(fleet.vehicles["vehicle_id"])
    _forget_records(paths, (old_sim_v | set(fleet.vehicles["vehicle_id"])) - keep_v)
    res = import_records({"vehicles": fleet.vehicles, "service_events": fleet.service_events,
                          "inspections": fleet.inspections}, paths, origin="simulate")
    bad = {t: r.reasons for t, r in res.items() if r.quarantined}
    if bad:  # the simulator writes valid records: anything else is a bug here, not bad input
        raise ValueError(f"simulated records failed validation: {bad}")
    return keep_v


def _write_rest(fleet: Fleet, paths: Paths, forget_v: set[str]) -> None:
    """The hidden truth, then DTC events and samples (earlier simulated vehicles' partitions removed)."""
    store.write_table(fleet.true_needs, "true_needs", paths)
    if len(fleet.lives):
        store.write_table(fleet.lives, "true_lives", paths)
    if len(fleet.true_state):
        store.write_table(fleet.true_state, "true_state", paths)
    for root in (paths.samples, paths.dtc_events):
        for vin in forget_v | set(fleet.vehicles["vehicle_id"]):
            d = root / f"vehicle_id={vin}"
            if d.exists():
                shutil.rmtree(d)
    if len(fleet.dtc_events):
        store.append(fleet.dtc_events, "dtc_events", paths, origin="simulate")
    if len(fleet.samples):
        for _, part in fleet.samples.groupby("vehicle_id", sort=True):  # one vehicle at a time bounds memory
            store.append(part, "samples", paths, origin="simulate")


def _forget_records(paths: Paths, vins: set[str]) -> None:
    """Take the records of these (earlier simulated) vehicles out of the records tables."""
    if not vins:
        return
    for table in ("vehicles", "service_events", "inspections", "outcomes"):
        old = store.read_table(table, paths)
        gone = old["vehicle_id"].astype(str).isin(vins)
        if gone.any():
            store.write_table(old[~gone], table, paths)
