"""Trip templates from the real carOBD drive cycles, and the variant library built from them.

The simulator never invents a speed trace: every simulated trip is one of the real 1 Hz
cycles in `data/carobd_cycles.parquet` (built by `scripts/build_drive_cycles.py`), a piece of one
(short hops cut at real stops), or several long cycles joined at a stop (long-distance days), then
varied per driver by a speed scale and a driving style.

A *variant* = template × speed scale × style. The library renders every variant once at 1 Hz and
summarises it with `trips.summarise` — the same code that summarises recorded data — so each
simulated trip takes its kinematic summary (distance, braking energy per tonne, harsh counts, idle,
stops, speeds) from the one trip code path, and `--raw-vehicles` renders the identical speed trace.
Where the cycles come from: data/README.md; how the simulator uses the variants: docs/simulator.md.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from autopdm import schemas
from autopdm.config import Settings
from autopdm.pipeline import trips
from autopdm.sim import wear

CYCLES_FILE = "carobd_cycles.parquet"

# trip kinds the usage patterns draw from
KINDS = ("short", "urban", "commute", "long")
SHORT, URBAN, COMMUTE, LONG = range(4)

SPEED_SCALES = np.array([0.9, 1.0, 1.12, 1.25])
STYLES = np.array([0.7, 1.0, 1.35, 1.8])   # <1 smooth, >1 harsher accelerations and later, harder braking
STYLE_WINDOW_S = 9                         # centred moving average that separates "route" from "driver"
SHORT_PIECE_KM = 1.5                       # short hops: real cycles cut at a stop after ~this distance
JOIN_IDLE_S = 20                           # idle at the stop where long cycles are joined
COMPOSITES = (("long2", "long5"), ("long5", "long6"), ("long2", "long6"), ("long1", "long8"),
              ("long3", "long4"), ("long7", "long2"), ("long6", "long2", "long5"), ("drive9", "long5"))
LIB_VIN = "SIMLIBRARY0000000"


def cycles_path() -> Path:
    configured = Settings().cycles
    if configured:
        return Path(configured)
    here = Path(__file__).resolve()
    # the repository's data/ (source checkout) or the package's own data/ (installed wheel)
    for base in (here.parents[3] / "data", here.parents[1] / "data"):
        if (base / CYCLES_FILE).exists():
            return base / CYCLES_FILE
    raise FileNotFoundError(f"{CYCLES_FILE} not found; run scripts/build_drive_cycles.py or set AUTOPDM_CYCLES")


def load_cycles(path: Path | None = None) -> pd.DataFrame:
    return pd.read_parquet(path or cycles_path())


@dataclass(frozen=True)
class Template:
    name: str
    kind: int
    speed: np.ndarray   # km/h, 1 Hz, starts and ends at rest
    rpm: np.ndarray
    throttle: np.ndarray
    load: np.ndarray


def _stop_cuts(v: np.ndarray, min_run: int = 3) -> np.ndarray:
    """Indices in the middle of standstills of at least `min_run` seconds."""
    z = np.r_[False, v == 0, False]
    d = np.diff(z.astype(np.int8))
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    keep = (ends - starts) >= min_run
    return ((starts + ends) // 2)[keep]


def build_templates(cycles: pd.DataFrame) -> list[Template]:
    out: list[Template] = []
    by = {name: g for name, g in cycles.groupby("cycle", sort=False)}
    arr = {n: (g["speed_kph"].to_numpy(float), g["rpm"].to_numpy(float), g["throttle_pct"].to_numpy(float),
               g["engine_load_pct"].to_numpy(float)) for n, g in by.items()}
    kind_of = {n: g["kind"].iloc[0] for n, g in by.items()}
    base_kind = {"ufpe": URBAN, "drive": URBAN, "live": COMMUTE, "long": LONG}
    for n, (v, r, th, ld) in arr.items():
        out.append(Template(n, base_kind[kind_of[n]], v, r, th, ld))
    # short hops: ufpe and drive cycles cut at real stops every ~SHORT_PIECE_KM
    for n, (v, r, th, ld) in arr.items():
        if kind_of[n] not in ("ufpe", "drive", "live"):
            continue
        cuts = _stop_cuts(v)
        dist = np.cumsum(v) / 3600.0
        lo, k = 0, 0
        for c in cuts:
            if dist[c] - dist[lo] >= SHORT_PIECE_KM and c - lo >= 60:
                if dist[-1] - dist[c] < 0.5 * SHORT_PIECE_KM:
                    break  # the remainder would be a stub: keep the whole cycle as the last piece's parent
                out.append(Template(f"{n}/s{k}", SHORT, v[lo:c + 1], r[lo:c + 1], th[lo:c + 1], ld[lo:c + 1]))
                lo, k = c, k + 1
    # long-distance days: long cycles joined at a stop
    for parts in COMPOSITES:
        if not all(p in arr for p in parts):
            continue
        segs = []
        for i, p in enumerate(parts):
            v, r, th, ld = arr[p]
            if i:
                segs.append((np.zeros(JOIN_IDLE_S), np.full(JOIN_IDLE_S, 800.0), np.full(JOIN_IDLE_S, th.min()), np.full(JOIN_IDLE_S, 20.0)))
            segs.append((v, r, th, ld))
        cat = [np.concatenate([s[j] for s in segs]) for j in range(4)]
        out.append(Template("+".join(parts), LONG, *cat))
    return out


def styled_speed(v: np.ndarray, scale: float, style: float) -> np.ndarray:
    """A driver's version of a route: smooth part kept, fluctuations scaled by style, all by speed scale."""
    k = STYLE_WINDOW_S
    pad = np.pad(v, k // 2, mode="edge")
    smooth = np.convolve(pad, np.ones(k) / k, mode="valid")
    out = np.clip(smooth + style * (v - smooth), 0.0, None) * scale
    out[v == 0] = 0.0                         # real standstills stay standstills
    return np.round(out, 1)                   # OBD speed resolution (km/h); round keeps renders exact


@dataclass
class Library:
    templates: list[Template]
    summary: pd.DataFrame           # one row per variant: template, kind, scale_i, style_i + trip kinematics
    speed: np.ndarray               # all variant speed traces concatenated
    offset: np.ndarray              # start of each variant in `speed`
    length: np.ndarray
    tmpl_offset: np.ndarray         # start of each template's rpm/throttle/load in the arrays below
    rpm: np.ndarray
    throttle: np.ndarray
    load: np.ndarray
    pools: dict[int, np.ndarray]    # kind -> template indices

    def variant(self, template: int, scale_i: int, style_i: int) -> int:
        return (template * len(SPEED_SCALES) + scale_i) * len(STYLES) + style_i


KINEMATIC = ["distance_km", "duration_s", "idle_s", "brake_energy_kj_per_t", "harsh_brake_count", "harsh_accel_count",
             "max_decel_mps2", "mean_speed_kph", "max_speed_kph", "stop_count", "n_samples"]


def _library_samples(speed: np.ndarray, offset: np.ndarray, length: np.ndarray, rpm_full: np.ndarray) -> pd.DataFrame:
    """All variants as engine-on 1 Hz samples of one pseudo vehicle, an hour apart."""
    n = len(speed)
    vid = np.repeat(np.arange(len(offset)), length)
    t = np.arange(n, dtype=np.int64) + vid * 3600
    df = pd.DataFrame({"vehicle_id": LIB_VIN,
                       "ts": pd.to_datetime(t * 1000, unit="ms", utc=True).astype("datetime64[ms, UTC]"),
                       "source": "sim", "speed_kph": speed, "rpm": rpm_full})
    for c in schemas.SAMPLE_FLOATS:
        if c not in df:
            df[c] = np.nan
    df["brake_switch"] = pd.array(np.zeros(n, dtype=bool), dtype="boolean")
    return df


LIBRARY_VERSION = "1"


def _cache_file(cycles_file: Path) -> Path | None:
    """Disk cache of the variant summaries, keyed by the cycles file, the summariser's code and this module."""
    if not Settings().cache:
        return None
    h = hashlib.sha256(LIBRARY_VERSION.encode())
    for f in (cycles_file, Path(trips.__file__), Path(__file__)):
        h.update(f.read_bytes())
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "autopdm"
    return root / f"variants-{h.hexdigest()[:16]}.parquet"


def _summarise_variants(speed, offset, length, rpm_full, cache: Path | None) -> pd.DataFrame:
    if cache is not None and cache.exists():
        try:
            summ = pd.read_parquet(cache)
            if len(summ) == len(length):
                return summ
        except Exception:  # a corrupt cache is rebuilt, never trusted
            pass
    parts, lo = [], 0
    while lo < len(length):  # in chunks of ~1M samples: summarise needs ~0.5 KB per sample at its peak
        hi = lo + max(1, int(np.searchsorted(np.cumsum(length[lo:]), 1_000_000)))
        a, b = offset[lo], offset[hi - 1] + length[hi - 1]
        parts.append(trips.summarise(_library_samples(speed[a:b], offset[lo:hi] - a, length[lo:hi], rpm_full[a:b]),
                                     min_duration_s=0))
        lo = hi
    summ = pd.concat(parts, ignore_index=True)
    if len(summ) != len(length):
        raise RuntimeError(f"variant library: {len(summ)} trips summarised from {len(length)} variants")
    summ = summ[KINEMATIC].reset_index(drop=True)
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
            summ.to_parquet(tmp)
            os.replace(tmp, cache)
        except OSError:
            pass
    return summ


@functools.lru_cache(maxsize=4)
def _library_cached(path: str, mtime: float) -> Library:
    cycles = load_cycles(Path(path))
    tmpls = build_templates(cycles)
    speeds, lengths, rpms = [], [], []
    rows = []
    for ti, tp in enumerate(tmpls):
        rpm = np.clip(tp.rpm, 600, None)
        for si, sc in enumerate(SPEED_SCALES):
            for ki, st in enumerate(STYLES):
                sp = styled_speed(tp.speed, float(sc), float(st))
                speeds.append(sp)
                rpms.append(rpm)
                lengths.append(len(sp))
                rows.append((ti, tp.kind, si, ki, tp.name))
    length = np.asarray(lengths, dtype=np.int64)
    offset = np.r_[0, np.cumsum(length)[:-1]]
    speed = np.concatenate(speeds)
    summ = _summarise_variants(speed, offset, length, np.concatenate(rpms), _cache_file(Path(path)))
    meta = pd.DataFrame(rows, columns=["template", "kind", "scale_i", "style_i", "template_name"])
    summary = pd.concat([meta, summ], axis=1)
    # hidden wear physics: computed here once per variant, never a trip column
    summary["friction_kj_per_t"] = wear.friction_energy(speed, offset)
    for c in ("harsh_brake_count", "harsh_accel_count", "stop_count", "n_samples"):
        summary[c] = summary[c].astype(np.int64)
    tl = np.array([len(t.speed) for t in tmpls], dtype=np.int64)
    pools = {k: np.flatnonzero(np.array([t.kind for t in tmpls]) == k) for k in range(len(KINDS))}
    return Library(tmpls, summary, speed, offset, length, np.r_[0, np.cumsum(tl)[:-1]],
                   np.concatenate([np.clip(t.rpm, 600, None) for t in tmpls]),
                   np.concatenate([t.throttle for t in tmpls]), np.concatenate([t.load for t in tmpls]), pools)


def library(path: Path | None = None) -> Library:
    """The variant library: built once per process; its summaries are cached on disk (~15 s to rebuild)."""
    p = Path(path or cycles_path())
    return _library_cached(str(p), p.stat().st_mtime)
