"""Fleet simulator: vehicles, trips, workshop service history, DTCs and (optionally) raw 1 Hz samples.

How a fleet is made (all vectorised over vehicles × days or over trips; per-vehicle loops only for
the few lifecycle events of each component):

1. Vehicles (segment, mass, PIDs the model reports), drivers (usage pattern, style, speed habit),
   climate zone with a seasonal temperature (sinusoid by day of year + weather noise shared by a zone).
2. Trips per vehicle-day from the usage pattern; each draws a *variant* of a real carOBD drive cycle
   (template × speed scale × style) from `drivecycles.library()`, whose kinematic summary came from
   `trips.summarise`. Times of day, gaps between trips.
3. Hidden wear (`wear.py`): battery first (a no-start makes the car unusable until the new battery),
   then pads and tires. Workshop resolution: reactive replacement after the need with a delay,
   early replacement at routine services, no-start then replacement for some batteries.
4. Per-trip telemetry: rest/crank/charge voltages from battery health and temperature, ambient,
   intake and coolant at start, tire pressures (placard, slow leaks, top-ups, temperature), odometer.
   Coverage: the dongle is unplugged for stretches, some days are missed, some models lack PIDs (null).
5. Raw 1 Hz samples for the first K vehicles, rendered so that `trips.summarise` gives back their rows.

Same seed → identical output: every stage draws from its own child of `SeedSequence(seed)`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from autopdm.sim import drivecycles as dc
from autopdm import schemas, store
from autopdm.sim import wear
from autopdm.config import Paths

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


def simulate_fleet(n_vehicles: int, days: int, seed: int, climate: str = "mixed", aggressiveness: float = 1.0,
                   raw_vehicles: int = 0, start: str = "2025-01-01", progress: Progress | None = None) -> Fleet:
    if n_vehicles < 1 or days < 1:
        raise ValueError("n_vehicles and days must be at least 1")
    if climate not in (*ZONES, "mixed"):
        raise ValueError(f"climate must be one of {(*ZONES, 'mixed')}, not {climate!r}")
    if not aggressiveness > 0:
        raise ValueError("aggressiveness must be positive")
    steps = 8 + (1 if raw_vehicles else 0)
    report = (lambda name, i: progress(name, i, steps)) if progress else (lambda name, i: None)
    ss = np.random.SeedSequence(seed)
    (r_veh, r_temp, r_trip, r_time, r_batt, r_tire, r_cov, r_tel, r_svc, r_raw) = [np.random.default_rng(s) for s in ss.spawn(10)]
    N, D = n_vehicles, days
    day0 = pd.Timestamp(start).normalize()
    dates = pd.date_range(day0, periods=D, freq="D")
    day_epoch = (dates.tz_localize("UTC").asi8 // 10**9).astype(np.int64)
    weekday = dates.weekday.to_numpy()
    weekend = weekday >= 5

    report("variant library (real drive cycles)", 0)
    lib = dc.library()
    L = lib.summary

    # ---- 1. vehicles, drivers, climate ----------------------------------------------------------------
    report("vehicles and drivers", 1)
    seg_names = list(SEGMENTS)
    seg_i = r_veh.choice(len(seg_names), size=N, p=[SEGMENTS[s]["share"] for s in seg_names])
    cat_by_seg = {s: [i for i, c in enumerate(CATALOG) if c[2] == s] for s in seg_names}
    cat_i = np.array([cat_by_seg[seg_names[s]][r_veh.integers(len(cat_by_seg[seg_names[s]]))] for s in seg_i])
    cat = [CATALOG[i] for i in cat_i]
    segment = np.array([c[2] for c in cat])
    mass = np.array([c[3] for c in cat], dtype=float) * r_veh.uniform(0.97, 1.05, N)
    has_amb = np.array([c[5] for c in cat])
    has_tpms = np.array([c[6] for c in cat])
    has_odo = np.array([c[7] for c in cat])
    age_years = np.minimum(r_veh.gamma(2.0, 2.2, N), 14.0)
    first_reg = (day0 - pd.to_timedelta(np.round(age_years * 365.25) + 1, unit="D")).normalize()
    model_year = np.clip(first_reg.year.to_numpy() - (r_veh.random(N) < 0.25), 2010, None)
    vins = make_vins(r_veh, np.array([c[4] for c in cat]), model_year)
    pattern = np.array([r_veh.choice(4, p=PATTERN_P["van" if s == "van" else "default"]) for s in segment])
    style = np.exp(r_veh.normal(0.0, 0.22, N)) * aggressiveness * np.where(pattern == TAXI, 1.12, 1.0)
    speed_habit = r_veh.normal(1.04, 0.08, N)
    drive_mult = np.exp(r_veh.normal(0.0, 0.25, N))
    zone = (r_veh.choice(3, size=N, p=[0.5, 0.25, 0.25]) if climate == "mixed" else np.full(N, ZONES.index(climate)))
    late_logger = r_veh.random(N) < 0.10           # wakes after the crank: no rest/crank voltage
    alt_v = r_veh.uniform(13.8, 14.5, N)
    pad_q = np.exp(r_veh.normal(0, 0.12, N)) * np.array([SEGMENTS[s]["pad"] for s in segment])
    tire_q = np.exp(r_veh.normal(0, 0.12, N)) * np.array([SEGMENTS[s]["tire"] for s in segment])
    batt_q = np.exp(r_veh.normal(0, 0.22, N))
    placard = r_veh.choice([220.0, 230.0, 240.0, 250.0, 260.0], N) + np.where(segment == "van", 60.0, 0.0)
    leak = np.exp(r_veh.normal(np.log(0.0006), 0.5, N)) * np.where(r_veh.random(N) < 0.1, 3.0, 1.0)
    topup_every = np.exp(r_veh.normal(np.log(150), 0.9, N))
    tire_spread = r_veh.uniform(0.0, 0.05, (N, 4))
    customer = r_veh.choice(1_000_000, size=N, replace=False)
    channel = r_veh.choice(list(CHANNEL_P), size=N, p=list(CHANNEL_P.values()))
    home_routes = lib.pools[dc.COMMUTE][r_veh.integers(len(lib.pools[dc.COMMUTE]), size=(N, 2))]

    doy = dates.dayofyear.to_numpy()
    season = -np.cos(2 * np.pi * (doy - 20) / 365.25)
    temp = np.empty((N, D))
    zone_temp = np.empty((3, D))
    for z, name in enumerate(ZONES):
        mean, amp, sd = CLIMATES[name]
        eps = r_temp.normal(0, sd * np.sqrt(1 - 0.8**2), D)
        ar = np.empty(D)
        ar[0] = r_temp.normal(0, sd)
        for d in range(1, D):
            ar[d] = 0.8 * ar[d - 1] + eps[d]
        zone_temp[z] = mean + amp * season + ar
    temp[:] = zone_temp[zone] + r_temp.normal(0, 1.5, (N, 1)) + r_temp.normal(0, 1.0, (N, D))

    # vacations / parked stretches
    parked = np.zeros((N, D), dtype=bool)
    n_vac = r_trip.poisson(np.where(pattern == TAXI, 0.8, 2.0) * D / 365.25)
    for v in np.flatnonzero(n_vac):
        for s0, ln in zip(r_trip.integers(0, D, n_vac[v]), r_trip.integers(5, 17, n_vac[v])):
            parked[v, s0:s0 + ln] = True

    # ---- 2. trips ---------------------------------------------------------------------------------------
    report("trips from drive-cycle variants", 2)
    lam = RATES[pattern][:, weekend.astype(int), :] * drive_mult[:, None, None]      # N × D × 4
    counts = r_trip.poisson(lam)
    workday = ~weekend
    commute = r_trip.binomial(2, 0.92, (N, D))
    is_comm = (pattern == COMMUTER)[:, None] & workday[None, :]
    counts[..., dc.COMMUTE] = np.where(is_comm, commute, counts[..., dc.COMMUTE])
    taxi_off = (pattern == TAXI)[:, None] & (weekday == 6)[None, :] & (r_trip.random((N, D)) < 0.6)
    counts[parked | taxi_off] = 0
    flat = np.repeat(np.arange(N * D * 4, dtype=np.int64), counts.ravel())
    del counts, lam
    t_veh = flat // (D * 4)
    t_day = (flat // 4) % D
    t_kind = flat % 4
    nT = len(flat)
    first_in_run = np.r_[True, flat[1:] != flat[:-1]]

    # variant: template × speed scale × style
    u = r_trip.random((nT, 5))
    pool_choice = np.empty(nT, dtype=np.int64)
    for k, pool in lib.pools.items():
        m = t_kind == k
        pool_choice[m] = pool[(u[m, 0] * len(pool)).astype(np.int64)]
    use_home = (t_kind == dc.COMMUTE) & (u[:, 1] < 0.85)
    pool_choice[use_home] = home_routes[t_veh[use_home], (u[use_home, 2] < 0.5).astype(int)]
    scale_pos = np.interp(speed_habit[t_veh] * np.where(t_kind == dc.LONG, 1.08, 1.0), dc.SPEED_SCALES,
                          np.arange(len(dc.SPEED_SCALES))) + r_trip.normal(0, 0.3, nT)
    style_pos = np.interp(style[t_veh], dc.STYLES, np.arange(len(dc.STYLES))) + r_trip.normal(0, 0.25, nT)
    scale_i = _stochastic_level(scale_pos, u[:, 3], len(dc.SPEED_SCALES))
    style_i = _stochastic_level(style_pos, u[:, 4], len(dc.STYLES))
    var = lib.variant(pool_choice, scale_i, style_i)
    del u, scale_pos, style_pos, pool_choice, scale_i, style_i, use_home

    # order within the day and times
    key = r_time.random(nT)
    key = np.where(t_kind == dc.COMMUTE, np.where(first_in_run, -1.0, 2.0), key)
    grp = t_veh * D + t_day
    order = np.lexsort((key, grp))
    t_veh, t_day, t_kind, var, grp = t_veh[order], t_day[order], t_kind[order], var[order], grp[order]
    del key, order, flat, first_in_run
    dur = L["duration_s"].to_numpy()[var].astype(np.int64)
    gstart = np.r_[True, grp[1:] != grp[:-1]]
    gid = np.cumsum(gstart) - 1
    n_in = np.bincount(gid)
    dur_sum = np.bincount(gid, weights=dur)
    span = DAY_SPAN_H[pattern[t_veh[gstart]]] * 3600 * np.where(weekend[t_day[gstart]] & (pattern[t_veh[gstart]] == COMMUTER), 0.8, 1.0)
    slack = np.maximum(0.0, span - dur_sum - (n_in - 1) * MIN_GAP_S)
    w = np.where(gstart, 0.0, r_time.exponential(1.0, nT))
    wsum = np.bincount(gid, weights=w)
    gap = np.where(gstart, 0.0, MIN_GAP_S + slack[gid] * w / np.where(wsum[gid] > 0, wsum[gid], 1.0))
    prev_dur = np.r_[0, dur[:-1]] * ~gstart
    first_h = np.clip(DAY_START_H[pattern[t_veh[gstart]]] + np.where(weekend[t_day[gstart]], 1.5, 0.0)
                      + r_time.normal(0, 0.6, gstart.sum()), 5.0, 12.0)
    rel = first_h[gid] * 3600 + _within_group_cumsum(gap + prev_dur, gstart)
    rel = np.round(rel).astype(np.int64)
    keep = rel + dur <= int(23.5 * 3600)
    t_veh, t_day, t_kind, var, dur, rel = t_veh[keep], t_day[keep], t_kind[keep], var[keep], dur[keep], rel[keep]
    start_s = day_epoch[t_day] + rel
    del grp, gstart, gid, w, gap, prev_dur, keep

    # ---- 3. hidden wear ---------------------------------------------------------------------------------
    report("battery health, no-starts", 3)
    dist = L["distance_km"].to_numpy()[var]
    vd = t_veh * D + t_day

    def daily(weights) -> np.ndarray:
        return np.bincount(vd, weights=weights, minlength=N * D).reshape(N, D)

    ntrips_d = daily(None)
    drive_d = daily(dur.astype(float))
    undercharged = (ntrips_d > 0) & (drive_d < 1200)
    idle_day = ntrips_d == 0
    idle_run = np.zeros((N, D), dtype=np.int32)       # consecutive days without trips so far
    for d in range(D):
        idle_run[:, d] = np.where(idle_day[:, d], (idle_run[:, d - 1] if d else 7) + 1, 0)
    batt_daily = wear.battery_daily_wear(temp, undercharged, idle_run > 7, batt_q)
    batt_cum = np.cumsum(batt_daily, axis=1)
    dist_d = daily(dist)
    mean_km_day = dist_d.mean(axis=1)
    age_days = (day0 - first_reg).days.to_numpy().astype(float)
    odo0 = np.round(age_days * mean_km_day * r_veh.uniform(0.7, 1.3, N), 1)
    cumkm = odo0[:, None] + np.cumsum(dist_d, axis=1)

    # routine services: yearly around the registration anniversary, and every 30,000 km for high-mileage use
    svc_days: list[np.ndarray] = []
    for v in range(N):
        ann = []
        fr = first_reg[v]
        for y in range(day0.year - 1, dates[-1].year + 2):
            try:
                a = pd.Timestamp(year=y, month=fr.month, day=min(fr.day, 28))
            except ValueError:
                continue
            ann.append((a - day0).days + int(r_svc.normal(0, 12)))
        by_km = []
        if pattern[v] in (TAXI, LONGD):
            k = np.floor(cumkm[v] / 30_000.0)
            by_km = list(np.flatnonzero(np.diff(np.r_[np.floor(odo0[v] / 30_000.0), k]) > 0) + r_svc.integers(0, 10))
        cand = np.unique(np.array([d for d in ann + by_km if 0 <= d < D], dtype=np.int64))
        kept = []
        for d in cand:
            if not kept or d - kept[-1] >= 45:
                kept.append(d)
        svc_days.append(np.array(kept, dtype=np.int64))
    batt_tested = [d[r_svc.random(len(d)) < 0.5] for d in svc_days]  # a load test at half the services

    u_ns = r_batt.random((N, D))
    p_ns = 0.03 + 0.25 * np.clip((5.0 - temp) / 15.0, 0, 1)
    nostart_ok = u_ns < p_ns
    init_b = np.minimum(r_batt.uniform(0, 0.97, N), age_days * batt_daily.mean(axis=1))
    batt_lives: list[list[wear.Life]] = []
    for v in range(N):
        ns_days = np.flatnonzero(nostart_ok[v])

        def resolve_b(n, v=v, ns_days=ns_days):
            noticed = n + int(np.ceil(r_batt.lognormal(np.log(12), 0.6)))
            i = np.searchsorted(ns_days, n)
            ns = int(ns_days[i]) if i < len(ns_days) else 10**9
            if ns < noticed:
                return ns + int(r_batt.choice([0, 1, 1, 2])), "no_start", ns
            return noticed, "reactive", -1
        batt_lives.append(wear.lifecycles(batt_cum[v], init_b[v], batt_tested[v], wear.BATT_INSPECT_FRAC, resolve_b))

    dead = np.zeros((N, D), dtype=bool)
    for v, lives in enumerate(batt_lives):
        for lf in lives:
            if lf.dead_from >= 0:
                dead[v, lf.dead_from: (lf.replace_day if lf.replace_day >= 0 else D)] = True
    alive = ~dead[t_veh, t_day]
    t_veh, t_day, t_kind, var, dur, rel, start_s, dist, vd = (a[alive] for a in (t_veh, t_day, t_kind, var, dur, rel, start_s, dist, vd))
    nT = len(t_veh)

    report("brake pads and tires", 4)
    hb = L["harsh_brake_count"].to_numpy()[var]
    ha = L["harsh_accel_count"].to_numpy()[var]
    bke = L["brake_energy_kj_per_t"].to_numpy()[var]
    dist_d = daily(dist)
    cumkm = odo0[:, None] + np.cumsum(dist_d, axis=1)
    fric = L["friction_kj_per_t"].to_numpy()[var]
    pad_cum = np.cumsum(daily(wear.pad_trip_wear(fric, dist)), axis=1) / (wear.PAD_CAPACITY * pad_q[:, None])

    # tire pressure: slow leaks since the last top-up (driver or workshop), and temperature
    topup = r_tire.random((N, D)) < (1.0 / topup_every)[:, None]
    for v in range(N):
        topup[v, svc_days[v]] = True
    idx = np.where(topup, np.arange(D)[None, :], -(r_tire.random(N) * topup_every).astype(np.int64)[:, None])
    since = np.arange(D)[None, :] - np.maximum.accumulate(idx, axis=1)
    deficit = np.minimum(0.45, leak[:, None] * since)
    cold_p = placard[:, None] * (1 - deficit) * (1 + 0.0033 * (temp - 18.0))
    psi_under = np.clip(placard[:, None] - cold_p, 0, None) / wear.KPA_PER_PSI
    tire_day = daily(wear.tire_trip_wear(dist, hb + ha)) * wear.tire_day_factor(psi_under, temp)
    tire_cum = np.cumsum(tire_day, axis=1) / (wear.TIRE_CAPACITY_KM * tire_q[:, None])
    del idx, since, topup

    init_p = np.minimum(r_svc.uniform(0, 0.97, N), age_days * pad_cum[:, -1] / D)
    init_t = np.minimum(r_svc.uniform(0, 0.97, N), age_days * tire_cum[:, -1] / D)
    pad_lives, tire_lives = [], []
    for v in range(N):
        pad_lives.append(wear.lifecycles(pad_cum[v], init_p[v], svc_days[v], wear.PAD_INSPECT_FRAC,
                                         lambda n: (n + int(min(45, np.ceil(r_svc.lognormal(np.log(8), 0.7)))), "reactive", -1)))
        tire_lives.append(wear.lifecycles(tire_cum[v], init_t[v], svc_days[v], wear.TIRE_INSPECT_FRAC,
                                          lambda n: (n + int(min(120, np.ceil(r_svc.lognormal(np.log(14), 0.8)))), "reactive", -1)))
    soh = wear.soh_from_wear(np.vstack([wear.wear_fraction(batt_cum[v], batt_lives[v]) for v in range(N)]))

    # ---- 4. per-trip telemetry --------------------------------------------------------------------------
    report("telemetry: voltages, temperatures, pressures", 5)
    end_s = start_s + dur
    same_v = np.r_[False, t_veh[1:] == t_veh[:-1]]
    gap_h = np.where(same_v, (start_s - np.r_[0, end_s[:-1]]) / 3600.0, 36.0)
    hour = rel / 3600.0
    amb_true = temp[t_veh, t_day] + 4.0 * np.sin(2 * np.pi * (hour - 9.0) / 24.0) + r_tel.normal(0, 0.8, nT)
    amb = np.round(amb_true)
    intake0 = np.round(amb_true + 2.0 + 15.0 * np.exp(-gap_h / 1.0))
    coolant0 = np.round(amb_true + (88.0 - amb_true) * np.exp(-gap_h / 2.0))
    s_trip = soh[t_veh, t_day]
    under_prev = np.r_[False, undercharged.ravel()[:-1]][vd] & (t_day > 0)
    rest = (12.68 - 0.6 * (1 - s_trip) - 0.08 * under_prev - 0.012 * np.minimum(gap_h / 24.0, 14.0)
            + 0.002 * (amb_true - 20.0) + r_tel.normal(0, 0.02, nT))
    crank = (wear.crank_threshold(amb_true) + 1.05 - 2.3 * (1 - s_trip) - 0.015 * (1 - s_trip) * np.clip(15 - amb_true, 0, None)
             + 0.25 * (coolant0 > 50) + r_tel.normal(0, 0.07, nT))
    rest = np.round(rest, 2)
    crank = np.round(np.minimum(crank, rest - 1.0), 2)
    charge = np.round(np.clip(alt_v[t_veh] - 0.006 * (amb_true - 25.0) + r_tel.normal(0, 0.03, nT), 13.2, 14.9), 2)
    late = late_logger[t_veh]
    rest[late], crank[late] = np.nan, np.nan
    tire_base = cold_p[t_veh, t_day]
    tires4 = np.round(tire_base[:, None] * (1 - tire_spread[t_veh]), 0)
    tire_min = np.where(has_tpms[t_veh], tires4.min(axis=1), np.nan)
    cumdist = _within_group_cumsum(dist, ~same_v)
    odo_end = np.round(odo0[t_veh] + cumdist, 1)
    fuel0 = np.round(r_tel.uniform(15, 100, nT), 1)

    # coverage: dongle plugged in stretches, some days missed
    report("coverage, DTCs, service history", 6)
    reported = np.zeros((N, D), dtype=bool)
    flaky = r_cov.random(N) < 0.15
    late_install = np.where(r_cov.random(N) < 0.3, r_cov.integers(0, max(1, min(60, D // 4)), N), 0)
    for v in range(N):
        reported[v] = _runs_mask(r_cov, D, r_cov.choice([120.0, 400.0]), 12.0, start_on=r_cov.random() < 0.93)
        reported[v, :late_install[v]] = False
    reported &= r_cov.random((N, D)) >= np.where(flaky, 0.2, 0.03)[:, None]
    rep_trip = reported[t_veh, t_day]

    vin_arr = np.array(vins, dtype=object)
    trips_df = pd.DataFrame({
        "vehicle_id": vin_arr[t_veh],
        "start_s": start_s, "end_s": end_s,
        "distance_km": dist, "duration_s": dur.astype(float),
        "idle_s": L["idle_s"].to_numpy()[var], "brake_energy_kj_per_t": bke,
        "harsh_brake_count": hb, "harsh_accel_count": ha,
        "max_decel_mps2": L["max_decel_mps2"].to_numpy()[var], "mean_speed_kph": L["mean_speed_kph"].to_numpy()[var],
        "rest_voltage_v": rest, "crank_min_voltage_v": crank, "charge_voltage_v": charge,
        "ambient_temp_c": np.where(has_amb[t_veh], amb, intake0),
        "odometer_end_km": np.where(has_odo[t_veh], odo_end, np.nan),
        "max_speed_kph": L["max_speed_kph"].to_numpy()[var], "stop_count": L["stop_count"].to_numpy()[var],
        "start_coolant_temp_c": coolant0, "tire_pressure_min_kpa": tire_min,
        "n_samples": L["n_samples"].to_numpy()[var], "source": "sim",
    })[rep_trip]
    trips_df = _finish_trips(trips_df)

    # DTCs: P0562 (system voltage low) on weak cranks and no-start days; TPMS and wheel-speed C-codes rarely
    dtc_rows = []
    weak = rep_trip & ~np.isnan(crank) & ((crank < wear.crank_threshold(amb_true) - 0.15) | (rest < 12.2)) & (r_tel.random(nT) < 0.35)
    dtc_rows.append(pd.DataFrame({"v": t_veh[weak], "ts": start_s[weak] + 2, "code": "P0562", "status": "pending"}))
    low_p = rep_trip & has_tpms[t_veh] & (tire_base < 0.7 * placard[t_veh]) & (r_tel.random(nT) < 0.05)
    dtc_rows.append(pd.DataFrame({"v": t_veh[low_p], "ts": start_s[low_p] + 5, "code": "C0750", "status": "stored"}))
    wss = r_tel.random((N, D)) < 2e-4
    wv, wd = np.nonzero(wss & reported)
    dtc_rows.append(pd.DataFrame({"v": wv, "ts": day_epoch[wd] + 9 * 3600, "code": "C0035", "status": "stored"}))
    ns_v, ns_d = [], []
    for v, lives in enumerate(batt_lives):
        for lf in lives:
            if lf.dead_from >= 0 and reported[v, lf.dead_from]:
                ns_v.append(v)
                ns_d.append(lf.dead_from)
    ns_v, ns_d = np.array(ns_v, dtype=np.int64), np.array(ns_d, dtype=np.int64)
    dtc_rows.append(pd.DataFrame({"v": ns_v, "ts": day_epoch[ns_d] + 7 * 3600 + 1800, "code": "P0562", "status": "stored"}))
    dtc = pd.concat(dtc_rows, ignore_index=True)
    dtc["day"] = (dtc["ts"] - day_epoch[0]) // 86400
    dtc = dtc.sort_values(["v", "ts", "code"], kind="stable").drop_duplicates(["v", "day", "code"])
    dtc_df = pd.DataFrame({"vehicle_id": vin_arr[dtc["v"].to_numpy()],
                           "ts": pd.to_datetime(dtc["ts"].to_numpy() * 1000, unit="ms", utc=True).astype("datetime64[ms, UTC]"),
                           "code": dtc["code"].to_numpy(), "status": dtc["status"].to_numpy()}).reset_index(drop=True)
    dtc_df = schemas.conform(dtc_df, "dtc_events")

    # ---- 5. service history and hidden truth --------------------------------------------------------------
    report("service events and true needs", 7)
    events, needs, lives_rows = [], [], []
    comp_lives = {"brake": pad_lives, "tire": tire_lives, "battery": batt_lives}
    comp_cum = {"brake": pad_cum, "tire": tire_cum, "battery": batt_cum}
    km_day = dist_d.mean(axis=1)
    for v in range(N):
        odo_at = lambda d, v=v: float(np.round(cumkm[v, d]))  # noqa: E731
        replaced = {c: {lf.replace_day for lf in comp_lives[c][v] if lf.replace_day >= 0} for c in comp_lives}
        for d in svc_days[v]:
            events.append((v, d, "other", "replace"))              # oil and filter: the routine service
            if d not in replaced["brake"]:
                events.append((v, d, "brake", "inspect"))
            if d not in replaced["tire"] and r_svc.random() < 0.6:
                events.append((v, d, "tire", "inspect"))
        for d in batt_tested[v]:
            if d not in replaced["battery"]:
                events.append((v, d, "battery", "inspect"))
        for d in np.flatnonzero(r_svc.random(D) < 0.4 / 365.25):     # bulbs, wipers, exhaust…
            events.append((v, d, "other", "repair"))
        for comp, all_lives in comp_lives.items():
            for lf in all_lives[v]:
                if lf.replace_day >= 0:
                    events.append((v, lf.replace_day, comp, "replace"))
                    if lf.resolution == "reactive" and r_svc.random() < 0.25 and lf.replace_day - lf.need_day >= 3:
                        # looked at first (quote, parts ordered), replaced on a later visit
                        events.append((v, int(r_svc.integers(lf.need_day, lf.replace_day)), comp, "inspect"))
                if lf.need_day >= 0:
                    inst = lf.install_day
                    needs.append((v, comp, lf.need_day, odo_at(lf.need_day), inst,
                                  lf.replace_day, lf.resolution, lf.dead_from,
                                  (cumkm[v, lf.need_day] - cumkm[v, inst]) if inst >= 0 else np.nan,
                                  (lf.need_day - inst) if inst >= 0 else np.nan))
            rate = comp_cum[comp][v, -1] / D
            lives_rows.append((v, comp, km_day[v] / rate if rate > 0 else np.inf, 1.0 / rate / 365.25 if rate > 0 else np.inf))
    ev = pd.DataFrame(events, columns=["v", "d", "component", "action"]).astype({"v": np.int64, "d": np.int64}).sort_values(["v", "d", "component", "action"], kind="stable")
    ev = ev.drop_duplicates(["v", "d", "component", "action"]).reset_index(drop=True)
    service_df = schemas.conform(pd.DataFrame({
        "event_id": [f"SIM{seed % 100000:05d}-{i:07d}" for i in range(len(ev))],
        "vehicle_id": vin_arr[ev["v"].to_numpy()],
        "date": dates[ev["d"].to_numpy()].date,
        "odometer_km": np.round(cumkm[ev["v"].to_numpy(), ev["d"].to_numpy()]),
        "component": ev["component"].to_numpy(), "action": ev["action"].to_numpy(), "source": "workshop"}), "service_events")

    nd = pd.DataFrame(needs, columns=["v", "component", "need_day", "odometer_km", "install_day", "replace_day",
                                      "resolution", "dead_from", "life_km", "life_days"])
    nd = nd.astype({"v": np.int64, "need_day": np.int64, "install_day": np.int64, "replace_day": np.int64, "dead_from": np.int64,
                    "odometer_km": float, "life_km": float, "life_days": float})
    def day_or_nat(days: pd.Series) -> pd.Series:
        d = days.to_numpy(dtype=np.int64)
        out = dates[np.clip(d, 0, D - 1)].to_numpy().astype("datetime64[ms]")
        out[d < 0] = np.datetime64("NaT")
        return pd.Series(out, index=days.index)
    true_needs = pd.DataFrame({
        "vehicle_id": vin_arr[nd["v"].to_numpy()],
        "component": nd["component"],
        "need_date": day_or_nat(nd["need_day"]),
        "odometer_km": nd["odometer_km"],
        "install_date": day_or_nat(nd["install_day"]),
        "replace_date": day_or_nat(nd["replace_day"]),
        "resolution": nd["resolution"],
        "no_start_date": day_or_nat(nd["dead_from"]),
        "delay_days": np.where(nd["replace_day"] >= 0, nd["replace_day"] - nd["need_day"], np.nan),
        "life_km": nd["life_km"], "life_days": nd["life_days"],
    }).sort_values(["vehicle_id", "need_date", "component"], kind="stable").reset_index(drop=True)
    lv = pd.DataFrame(lives_rows, columns=["v", "component", "expected_life_km", "expected_life_years"])
    lives_df = pd.DataFrame({"vehicle_id": vin_arr[lv["v"].to_numpy()], "component": lv["component"],
                             "expected_life_km": lv["expected_life_km"], "expected_life_years": lv["expected_life_years"],
                             "segment": segment[lv["v"].to_numpy()], "pattern": np.array(PATTERNS)[pattern[lv["v"].to_numpy()]],
                             "climate": np.array(ZONES)[zone[lv["v"].to_numpy()]], "style": style[lv["v"].to_numpy()]})

    vehicles_df = schemas.conform(pd.DataFrame({
        "vehicle_id": vins, "make": [c[0] for c in cat], "model": [c[1] for c in cat], "model_year": model_year,
        "segment": segment, "curb_mass_kg": np.round(mass), "first_registration_date": first_reg.date,
        "customer_id": [f"C{c:06d}" for c in customer], "preferred_channel": channel}), "vehicles")

    # ---- 6. raw samples -----------------------------------------------------------------------------------
    samples = schemas.empty("samples")
    if raw_vehicles:
        report(f"rendering 1 Hz samples for {min(raw_vehicles, N)} vehicle(s)", 8)
        sel = rep_trip & (t_veh < raw_vehicles)
        tele = dict(start_s=start_s, var=var, rest=rest, crank=crank, charge=charge, amb=amb, intake0=intake0, coolant0=coolant0,
                    tires4=tires4, odo_end=odo_end, fuel0=fuel0)
        tele = {k: a[sel] for k, a in tele.items()}
        tv = t_veh[sel]
        tele.update(vin=vin_arr[tv], has_amb=has_amb[tv], has_tpms=has_tpms[tv], has_odo=has_odo[tv], late=late_logger[tv])
        # in chunks of ~1M samples: rendering needs ~40 temporary arrays per sample
        est = np.cumsum(lib.length[tele["var"]] + 45)
        bounds = np.r_[0, np.searchsorted(est, np.arange(1, est[-1] // 1_000_000 + 1) * 1_000_000), len(est)] if len(est) else [0, 0]
        chunks = [render_samples(lib, {k: a[lo:hi] for k, a in tele.items()}, r_raw)
                  for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
        samples = pd.concat(chunks, ignore_index=True) if chunks else schemas.empty("samples")
        ns_sel = ns_v < raw_vehicles
        if ns_sel.any():
            samples = pd.concat([samples, _render_no_starts(vin_arr[ns_v[ns_sel]], day_epoch[ns_d[ns_sel]], temp[ns_v[ns_sel], ns_d[ns_sel]],
                                                            has_amb[ns_v[ns_sel]], r_raw)], ignore_index=True)
            samples = samples.sort_values(["vehicle_id", "ts"], kind="stable").reset_index(drop=True)
    report("done", steps)
    return Fleet(vehicles_df, trips_df, service_df, dtc_df, true_needs, samples, lives_df)


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


def render_samples(lib: dc.Library, t: dict, rng: np.random.Generator) -> pd.DataFrame:
    """1 Hz samples of the given trips, built so that `trips.summarise` returns their trip rows.

    Per trip: engine-off readings before the start (rest voltage; none for late-waking loggers) ending
    in the crank dip one second before the first rpm reading; the variant's speed trace with rpm,
    throttle and load from its real template; alternator voltage settling within 10 s; ambient,
    warming intake/coolant/tires, odometer and fuel; two engine-off readings after the stop.
    """
    n_tr = len(t["var"])
    if n_tr == 0:
        return schemas.empty("samples")
    var = t["var"]
    length = lib.length[var]
    n_pre = np.where(t["late"], 0, rng.integers(10, 41, n_tr))
    n_post = np.full(n_tr, 2)
    tot = n_pre + length + n_post
    trip = np.repeat(np.arange(n_tr), tot)
    first = np.r_[0, np.cumsum(tot)[:-1]]
    k = np.arange(tot.sum()) - np.repeat(first, tot)           # position within the trip's block
    rel = k - n_pre[trip]                                      # seconds from the start (first rpm reading)
    on = (rel >= 0) & (rel < length[trip])
    pre, post = rel < 0, rel >= length[trip]
    n = len(trip)
    ts = t["start_s"][trip] + rel

    tmpl = lib.summary["template"].to_numpy()[var]
    on_idx = np.clip(rel, 0, length[trip] - 1)
    speed = np.where(on, lib.speed[lib.offset[var][trip] + on_idx], 0.0)
    tix = lib.tmpl_offset[tmpl][trip] + on_idx
    rpm = np.where(on, lib.rpm[tix], 0.0)
    rpm = np.where(on & (rel == 0), np.maximum(rpm, 1100.0), rpm)  # start flare
    throttle = np.where(on, lib.throttle[tix], np.nan)
    load = np.where(on, lib.load[tix], 0.0)

    rest, crank, charge = t["rest"][trip], t["crank"][trip], t["charge"][trip]
    noise = rng.choice(_NOISE, n)
    # resting readings jitter in ± pairs (an odd one out reads exactly): their median is the rest voltage
    j = np.where(pre, k, 0)
    paired = np.where(j % 2 == 0, 1.0, -1.0) * noise[np.maximum(first[trip] + j - j % 2, 0)]
    paired = np.where(pre & (j == n_pre[trip] - 2) & (j % 2 == 0), 0.0, paired)
    volt = np.empty(n)
    volt[pre] = (rest + paired)[pre]
    dip = pre & (rel == -1)
    volt[dip] = crank[dip]
    ramp = np.clip(rel / 10.0, 0, 1)
    crank_f = np.where(np.isnan(crank), charge - 1.5, crank)  # late-waking logger: no dip seen, still a ramp
    settle = crank_f + (charge - 0.15 - crank_f) * (0.6 + 0.4 * ramp)
    volt[on] = np.where(rel[on] >= 10, charge[on] + noise[on], settle[on])
    volt[post] = (12.95 - 0.05 * (rel[post] - length[trip][post]))

    amb = np.where(t["has_amb"][trip], t["amb"][trip], np.nan)
    mins = np.maximum(rel, 0) / 60.0
    intake = np.round(t["intake0"][trip] + (t["amb"][trip] + 8 - t["intake0"][trip]) * (1 - np.exp(-mins / 10.0)))
    intake = np.where(rel <= 0, t["intake0"][trip], intake)
    c0 = t["coolant0"][trip]
    coolant = np.where(rel <= 0, c0, np.round(c0 + (90.0 - c0) * (1 - np.exp(-mins / 7.0))))
    # distance and odometer: same trapezoid as the summariser; last engine-on reading = the trip's odometer
    v_ms = speed / 3.6
    step = np.where(on & (rel > 0), 0.5 * (v_ms + np.r_[0.0, v_ms[:-1]]), 0.0)
    cum_km = _within_group_cumsum(step, k == 0) / 1000.0
    dist_tot = lib.summary["distance_km"].to_numpy()[var][trip]
    odo = np.round(t["odo_end"][trip] - dist_tot + cum_km, 1)
    last_on = on & (rel == length[trip] - 1)
    odo[last_on] = t["odo_end"][trip][last_on]
    odo[post] = t["odo_end"][trip][post]
    odo = np.where(t["has_odo"][trip], odo, np.nan)
    warm = 1.0 + 0.08 * (1 - np.exp(-mins / 15.0))
    tires = t["tires4"][trip] * warm[:, None]
    tires = np.where(t["has_tpms"][trip][:, None], np.round(tires, 1), np.nan)
    fuel = fuel_level(t["fuel0"][trip], cum_km)
    brake = pd.array(np.r_[False, np.diff(speed) < -1.5] & on, dtype="boolean")

    df = pd.DataFrame({
        "vehicle_id": t["vin"][trip],
        "ts": pd.to_datetime(ts * 1000, unit="ms", utc=True).astype("datetime64[ms, UTC]"),
        "source": "sim", "speed_kph": speed, "rpm": rpm, "engine_load_pct": load, "throttle_pct": throttle,
        "coolant_temp_c": coolant, "intake_air_temp_c": intake, "ambient_air_temp_c": amb, "fuel_level_pct": fuel,
        "control_module_voltage_v": np.round(volt, 3), "odometer_km": odo, "distance_since_dtc_clear_km": np.nan,
        "brake_pressure_bar": np.nan, "brake_switch": brake,
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

    Single-file tables (vehicles, trips, service_events, true_needs, true_lives) via `store.write_table`;
    recorded (non-sim) trips and their vehicles' rows are kept. Samples and DTC events via `store.append`
    (validated, partitioned by vehicle and date), after removing the partitions of earlier simulated vehicles.
    """
    paths.ensure()
    old_trips = store.read_table("trips", paths)
    recorded = old_trips[old_trips["source"] != "sim"]
    keep_v = set(recorded["vehicle_id"]) - set(fleet.vehicles["vehicle_id"])
    old_sim_v = set(old_trips.loc[old_trips["source"] == "sim", "vehicle_id"]) | set(fleet.vehicles["vehicle_id"])

    def merged(name: str, new: pd.DataFrame) -> pd.DataFrame:
        if not keep_v:
            return new
        try:
            old = store.read_table(name, paths)
        except FileNotFoundError:
            return new
        old = old[old["vehicle_id"].isin(keep_v)]
        return pd.concat([old, new], ignore_index=True) if len(old) else new

    store.write_table(pd.concat([recorded, fleet.trips], ignore_index=True) if len(recorded) else fleet.trips, "trips", paths)
    store.write_table(merged("vehicles", fleet.vehicles), "vehicles", paths)
    store.write_table(merged("service_events", fleet.service_events), "service_events", paths)
    store.write_table(fleet.true_needs, "true_needs", paths)
    if len(fleet.lives):
        store.write_table(fleet.lives, "true_lives", paths)
    for root in (paths.samples, paths.dtc_events):
        for vin in old_sim_v - keep_v:
            d = root / f"vehicle_id={vin}"
            if d.exists():
                shutil.rmtree(d)
    if len(fleet.dtc_events):
        store.append(fleet.dtc_events, "dtc_events", paths, origin="simulate")
    if len(fleet.samples):
        for _, part in fleet.samples.groupby("vehicle_id", sort=True):  # one vehicle at a time bounds memory
            store.append(part, "samples", paths, origin="simulate")
