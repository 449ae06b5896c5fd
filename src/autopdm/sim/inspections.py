"""What a workshop measures at a visit (digital vehicle inspection), and the hidden true state it measures.

The wear physics (`autopdm.sim.wear`) gives one wear fraction per part: 0 new, 1 at the service limit.
This module turns it into what a workshop reads per position, with the errors of real gauges and
testers, and into the hidden truth evaluation reads. Nothing here changes when a part needs service
or is replaced; only what the records say about it. Figures and their sources: docs/simulator.md
("Workshop inspections").

Per position (hidden, drawn per vehicle): the *leading* position wears at the part's rate and reaches
the limit when the wear fraction reaches 1 — so the need day is the physics' need day — the others at a
fixed share of it. Pads: the front axle leads on 80 % of cars (front brakes take most of the braking
work), the other axle wears 55-95 % as fast. Tires: the front axle leads on 75 % (driven and steered
wheels), the other axle 70-95 % as fast, each tire 93-100 % of its axle (alignment). New pads read
10-12 mm (11 typical), new tires 7.5-8.8 mm (8 typical); the need stays at 3 mm.

What is read, when (`inspection_rows`):

- pads (`pad_mm` per axle) at every brake inspection and at every brake replacement (the removed
  pads). At an inspection the front axle is read at 90 % of visits and the rear at 70 % (behind a
  drum or a caliper it is often not seen); 60 % are gauged through the wheel (±0.5 mm: error sd
  0.25 mm, recorded in 0.5 mm) and the rest judged by eye (±1 mm: sd 0.5 mm, whole mm). Removed pads
  are gauged; 85 % of replacements record them (every axle), the others none.
- tread (`tread_mm` per tire) at every tire inspection (each tire at 85 %) and replacement (every
  tire at 85 % of them, else none). The reading is the tread depth at the groove the technician
  picks: a tire wears unevenly across its width by a few tenths (± 0.3 mm), plus the gauge's own
  0.1 mm, in the workshop's gauge steps (0.1 mm digital, 0.5 mm, or 1/32" = 0.79 mm).
- the battery tester printout (`battery_soh_pct`, `battery_cca_pct` = measured / rated cold-cranking
  amps, `battery_rest_v`) at every battery test and battery replacement; the rest voltage is on 80 %
  of printouts. A conductance tester reads one conductance, noisy by ~3 % of a new battery's: state of
  health in %, measured CCA = 105 % of rating new and 70 % (the testers' healthy line) at the need. On
  a discharged battery (state of charge below 75 %, from the rest voltage: 12.6 V full, 12.4 V 75 %,
  12.2 V 50 %) it reads low (by 0.6 × the charge missing below 75 %) and says "charge and retest"
  (no verdict) unless the battery still tests good; the workshop charges and retests it the same day
  at 80 % of such visits (a second printout).

Verdicts as a workshop gives them: "replace" at or below the need line, "advise" at or below the
advise line (`components.Limit`), else "ok" — each line at the gauge's mark nearest to it (a 1/32"
gauge's 3 mm line is its 4/32" = 3.18 mm mark).

Sources, in short: workshop and parts-retailer guides to checking pads (new pads 10-12 mm, replace
near 3 mm; a look through the spokes or a gauge through the caliper's window, a caliper on the
removed pad); tire retailers' instructions for tread gauges (32nds of an inch or mm, read in the
centre, inner and outer grooves because wear is uneven); Midtronics' description of conductance
testing and carmakers' battery-test procedures (verdicts GOOD, GOOD-RECHARGE, CHARGE & RETEST,
REPLACE; a battery not fully charged gives false readings); battery makers' state-of-charge tables
(12.6 V full, 12.4 V 75 %, 12.2 V 50 %). The shares of positions read, of gauged pads and of
retests are this simulator's assumptions, not published figures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from autopdm import components, schemas
from autopdm.sim import wear

# reading errors (1 sd) and resolutions
PAD_GAUGE_SD, PAD_GAUGE_STEP = 0.25, 0.5       # through the wheel with a gauge: ±0.5 mm
PAD_VISUAL_SD, PAD_VISUAL_STEP = 0.5, 1.0      # by eye: ±1 mm
PAD_GAUGED_SHARE = 0.6
PAD_READ_P = {"front": 0.9, "rear": 0.7}       # at an inspection
REMOVED_READ_P = 0.85                           # each position of a removed part
TREAD_UNEVEN_MM = 0.3                           # across the width: ± this, by the groove read
TREAD_GAUGE_SD = 0.1
TREAD_STEPS = np.array([0.1, 0.5, 25.4 / 32])   # digital, metric, 1/32"
TREAD_STEP_P = [0.3, 0.4, 0.3]
TREAD_READ_P = 0.85
TESTER_SD = 0.03                                # conductance, as a share of a new battery's
TESTER_REST_V_P = 0.8
CHARGED_SOC = 0.75                              # below this the tester asks to charge and retest
LOW_CHARGE_READS = 0.6                          # conductance lost per unit of charge missing below 75 %
RETEST_P = 0.8
CCA_NEW_PCT, CCA_SPAN = 105.0, 78.0             # measured/rated CCA: 105 % new, 70 % at SOH 0.55


@dataclass(frozen=True)
class Parts:
    """Hidden per-vehicle draws: each position's share of its part's wear, what a new part reads, and
    the step of the tread gauge at the car's workshop."""
    ratio: dict[str, np.ndarray]   # component → N × positions (1 at the leading position)
    new: dict[str, np.ndarray]     # component → N
    tread_step: np.ndarray         # N

    def leading(self, component: str) -> np.ndarray:
        """Per vehicle: the position that reaches the limit first."""
        return np.array(components.get(component).positions)[self.ratio[component].argmax(axis=1)]


def draw_parts(rng: np.random.Generator, n: int) -> Parts:
    ones = np.ones(n)
    front_leads = rng.random(n) < 0.8
    other = rng.uniform(0.55, 0.95, n)
    pad = np.where(front_leads[:, None], np.c_[ones, other], np.c_[other, ones])
    front_leads = rng.random(n) < 0.75
    axle = rng.uniform(0.70, 0.95, n)
    tire = np.where(front_leads[:, None], np.c_[ones, ones, axle, axle], np.c_[axle, axle, ones, ones])
    tire = tire * rng.uniform(0.93, 1.0, (n, 4))
    tire = tire / tire.max(axis=1, keepdims=True)
    new = {"brake": np.clip(rng.normal(wear.PAD_NEW_MM, 0.5, n), 10.0, 12.0),
           "tire": np.clip(rng.normal(wear.TREAD_NEW_MM, 0.3, n), 7.5, 8.8),
           "battery": np.full(n, 100.0)}
    step = TREAD_STEPS[rng.choice(len(TREAD_STEPS), size=n, p=TREAD_STEP_P)]
    return Parts(ratio={"brake": pad, "tire": tire, "battery": np.ones((n, 1))}, new=new, tread_step=step)


def true_states(parts: Parts, frac: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """component → N × D × positions: the true reading of each position (mm; battery: SOH %)."""
    out = {}
    for comp, need in (("brake", wear.PAD_NEED_MM), ("tire", wear.TREAD_NEED_MM)):
        new = parts.new[comp][:, None, None]
        out[comp] = np.maximum(new - (new - need) * frac[comp][:, :, None] * parts.ratio[comp][:, None, :], 0.0)
    out["battery"] = 100.0 * wear.soh_from_wear(frac["battery"])[:, :, None]
    return out


def _verdict(comp: components.Component, value: np.ndarray, step=0.0) -> np.ndarray:
    """The workshop's call on a reading: its lines, each at the gauge's mark nearest to it (a 1/32" gauge
    has no 3.0 mm mark: 4/32" = 3.18 mm is its replace line)."""
    lim, half = comp.limit, np.asarray(step, dtype=float) / 2 - 1e-9
    replace = value <= lim.need + np.maximum(half, 0)
    advise = value <= lim.advise + np.maximum(half, 0)
    return np.where(replace, "replace", np.where(advise, "advise", "ok")).astype(object)


def _rows(v, d, comp: str, position, measurement, value, verdict, seq) -> pd.DataFrame:
    return pd.DataFrame({"v": v, "d": d, "component": comp, "position": position, "measurement": measurement,
                         "value": value, "verdict": verdict, "seq": seq})


def pad_readings(rng: np.random.Generator, v, d, removed, truth: np.ndarray) -> pd.DataFrame:
    """Pad thickness per axle; truth: events × axles."""
    n, comp = len(v), components.get("brake")
    gauged = removed | (rng.random(n) < PAD_GAUGED_SHARE)
    at_visit = rng.random(truth.shape) < np.array([PAD_READ_P[p] for p in comp.positions])[None, :]
    read = np.where(removed[:, None], (rng.random(n) < REMOVED_READ_P)[:, None], at_visit)
    e = rng.normal(0.0, 1.0, truth.shape)
    gauge = np.round((truth + PAD_GAUGE_SD * e) / PAD_GAUGE_STEP) * PAD_GAUGE_STEP
    visual = np.round((truth + PAD_VISUAL_SD * e) / PAD_VISUAL_STEP) * PAD_VISUAL_STEP
    value = np.maximum(np.where(gauged[:, None], gauge, visual), 0.0)
    i, j = np.nonzero(read)
    step = np.where(gauged, PAD_GAUGE_STEP, PAD_VISUAL_STEP)[i]
    return _rows(v[i], d[i], "brake", np.array(comp.positions)[j], "pad_mm", value[i, j], _verdict(comp, value[i, j], step), 0)


def tread_readings(rng: np.random.Generator, v, d, removed, step: np.ndarray, truth: np.ndarray) -> pd.DataFrame:
    """Tread depth per tire; truth: events × tires; step: the gauge step per event."""
    comp = components.get("tire")
    at_visit = rng.random(truth.shape) < TREAD_READ_P
    read = np.where(removed[:, None], (rng.random(len(v)) < REMOVED_READ_P)[:, None], at_visit)
    z = truth + rng.uniform(-TREAD_UNEVEN_MM, TREAD_UNEVEN_MM, truth.shape) + rng.normal(0.0, TREAD_GAUGE_SD, truth.shape)
    value = np.maximum(np.round(np.round(z / step[:, None]) * step[:, None], 2), 0.0)
    i, j = np.nonzero(read)
    return _rows(v[i], d[i], "tire", np.array(comp.positions)[j], "tread_mm", value[i, j],
                 _verdict(comp, value[i, j], step[i]), 0)


def _printout(conductance: np.ndarray, rest: np.ndarray) -> dict[str, np.ndarray]:
    c = np.clip(conductance, 0.0, 1.05)
    return {"battery_soh_pct": np.round(100.0 * np.minimum(c, 1.0)),
            "battery_cca_pct": np.round(CCA_NEW_PCT - CCA_SPAN * (1.0 - c)),
            "battery_rest_v": np.round(rest, 2)}


def battery_printouts(rng: np.random.Generator, v, d, soh: np.ndarray, under_prev: np.ndarray,
                      temp: np.ndarray) -> pd.DataFrame:
    """A conductance tester's printout per test (and a retest after charging when it asked for one)."""
    n, comp = len(v), components.get("battery")
    rest = wear.rest_voltage(soh, under_prev, 0.5, temp) + rng.normal(0.0, 0.02, n)
    soc = np.clip(0.5 + (rest - 12.2) / 0.8, 0.0, 1.0)
    low = 1.0 - LOW_CHARGE_READS * np.maximum(0.0, CHARGED_SOC - soc)
    first = _printout(soh * low + TESTER_SD * rng.normal(size=n), rest + rng.normal(0.0, 0.01, n))
    charged = wear.rest_voltage(soh, False, 0.0, temp) + 0.05 + rng.normal(0.0, 0.02, n)  # surface charge
    second = _printout(soh + TESTER_SD * rng.normal(size=n), charged)
    retest_u, has_v = rng.random(n), rng.random((n, 2)) < TESTER_REST_V_P
    verdict = _verdict(comp, first["battery_soh_pct"])
    inconclusive = (soc < CHARGED_SOC) & (verdict != "ok")
    verdict[inconclusive] = None
    retest = inconclusive & (retest_u < RETEST_P)
    out = []
    for seq, (p, keep, ver, hv) in enumerate(((first, np.ones(n, bool), verdict, has_v[:, 0]),
                                              (second, retest, _verdict(comp, second["battery_soh_pct"]), has_v[:, 1]))):
        for m in comp.measurements:
            k = keep & (hv if m == "battery_rest_v" else True)
            out.append(_rows(v[k], d[k], "battery", "-", m, p[m][k], ver[k], seq))
    return pd.concat(out, ignore_index=True)


def inspection_rows(rng: np.random.Generator, parts: Parts, events: pd.DataFrame, states: dict[str, np.ndarray],
                    undercharged: np.ndarray, temp: np.ndarray) -> pd.DataFrame:
    """Readings at the workshop's visits. events: service events as (v, d, component, action); every
    inspection and replacement of a part is measured (the removed part on its replacement day)."""
    looked = events[events["action"].isin(("inspect", "replace"))]
    out = []
    for comp in ("brake", "tire", "battery"):
        ev = looked[looked["component"] == comp]
        v, d = ev["v"].to_numpy(), ev["d"].to_numpy()
        removed = (ev["action"] == "replace").to_numpy()
        if comp == "brake":
            out.append(pad_readings(rng, v, d, removed, states[comp][v, d]))
        elif comp == "tire":
            out.append(tread_readings(rng, v, d, removed, parts.tread_step[v], states[comp][v, d]))
        else:
            under_prev = np.where(d > 0, undercharged[v, np.maximum(d - 1, 0)], False)
            out.append(battery_printouts(rng, v, d, states[comp][v, d, 0] / 100.0, under_prev, temp[v, d]))
    rows = pd.concat(out, ignore_index=True)
    order = {c: i for i, c in enumerate(("brake", "tire", "battery"))}
    pos = {p: i for i, p in enumerate(schemas.POSITIONS)}
    meas = {m: i for i, m in enumerate(schemas.MEASUREMENT_RANGES)}
    key = pd.DataFrame({"v": rows["v"], "d": rows["d"], "c": rows["component"].map(order), "s": rows["seq"],
                        "p": rows["position"].map(pos), "m": rows["measurement"].map(meas)})
    return rows.iloc[np.lexsort([key[k].to_numpy() for k in ("m", "p", "s", "c", "d", "v")])].reset_index(drop=True)


def inspections_table(rows: pd.DataFrame, seed: int, vins: np.ndarray, dates: pd.DatetimeIndex,
                      cumkm: np.ndarray) -> pd.DataFrame:
    v, d = rows["v"].to_numpy(), rows["d"].to_numpy()
    return schemas.conform(pd.DataFrame({
        "inspection_id": [f"SIM{seed % 100000:05d}-I{i:07d}" for i in range(len(rows))],
        "vehicle_id": vins[v], "date": dates[d].date, "odometer_km": np.round(cumkm[v, d]),
        "component": rows["component"].to_numpy(), "position": rows["position"].to_numpy(),
        "measurement": rows["measurement"].to_numpy(), "value": rows["value"].to_numpy(dtype=float),
        "verdict": rows["verdict"].to_numpy(), "source": "workshop"}), "inspections")


def _life_rates(x: np.ndarray, use: np.ndarray, lives: list[wear.Life]) -> np.ndarray:
    """D × P: the wear per unit of use of the fitted part at each position, averaged over its life in the horizon."""
    D = x.shape[0]
    cu = np.cumsum(use)
    out = np.full(x.shape, np.nan)
    start = 0
    for lf in lives:
        end = D - 1 if lf.replace_day < 0 else lf.replace_day
        if end > start and cu[end] > cu[start]:
            out[start:end + 1] = (x[start] - x[end]) / (cu[end] - cu[start])
        start = end + 1
        if start >= D:
            break
    return out


def true_state_table(vins: np.ndarray, dates: pd.DatetimeIndex, states: dict[str, np.ndarray],
                     lives: dict[str, list[list[wear.Life]]], km: np.ndarray, use: dict[str, np.ndarray]) -> pd.DataFrame:
    """Hidden truth, one row per vehicle × component × position × day: the true reading (in the
    measurement's unit) and the fitted part's true wear rate over its life in the horizon, per 1,000 km
    and per unit of the component's `rate_use` (kJ/t of braking energy, km, days)."""
    N, D = km.shape
    # filled in place, categoricals as codes: built as per-component frames of strings and concatenated,
    # the table took ~100 bytes a row at its peak (51 M rows at 10,000 vehicles × 730 days)
    comps = list(states)
    cats = {"component": sorted(comps),
            "position": sorted({p for comp in comps for p in components.get(comp).positions}),
            "measurement": sorted({components.get(comp).limit.measurement for comp in comps})}
    sizes = [N * D * states[comp].shape[2] for comp in comps]
    total = int(sum(sizes))
    vcode = np.empty(total, dtype=np.int64)
    codes = {k: np.empty(total, dtype=np.int8) for k in cats}
    date = np.empty(total, dtype="datetime64[ms]")
    cols = {k: np.empty(total, dtype=np.float32) for k in ("value", "wear_per_1000km", "wear_per_use")}
    days = dates.to_numpy().astype("datetime64[ms]")
    lo = 0
    for comp, n in zip(comps, sizes):
        x, c = states[comp], components.get(comp)
        P, sl = x.shape[2], slice(lo, lo + n)
        per_km = np.stack([_life_rates(x[v], km[v], lives[comp][v]) for v in range(N)]) * 1000.0
        u = np.ones((N, D)) if c.rate_use == "days" else use[c.rate_use]
        per_use = np.stack([_life_rates(x[v], u[v], lives[comp][v]) for v in range(N)])
        vcode[sl] = np.repeat(np.arange(N), D * P)
        codes["component"][sl] = cats["component"].index(comp)
        codes["position"][sl] = np.tile(np.array([cats["position"].index(p) for p in c.positions], dtype=np.int8), N * D)
        codes["measurement"][sl] = cats["measurement"].index(c.limit.measurement)
        date[sl] = np.tile(np.repeat(days, P), N)
        cols["value"][sl] = x.reshape(n)
        cols["wear_per_1000km"][sl] = per_km.reshape(n)
        cols["wear_per_use"][sl] = per_use.reshape(n)
        del per_km, per_use
        lo += n
    out = pd.DataFrame({
        "vehicle_id": pd.Categorical.from_codes(vcode, categories=list(vins)),
        "component": pd.Categorical.from_codes(codes["component"], categories=cats["component"]),
        "position": pd.Categorical.from_codes(codes["position"], categories=cats["position"]),
        "date": date,
        "measurement": pd.Categorical.from_codes(codes["measurement"], categories=cats["measurement"]),
        **cols}, copy=False)
    return out
