"""Build data/carobd_cycles.parquet: compact 1 Hz speed profiles from the real carOBD logs.

Usage: python scripts/build_drive_cycles.py [CAROBD_DIR] [OUT]
(defaults: data/carobd, data/carobd_cycles.parquet; the shipped cycles were built from all 85 logs
of the carOBD dataset's obdiidata/ folder)

Source: carOBD (github eron93br/carOBD), 1 Hz OBD-II logs of a 2014 Toyota Etios. Cite:
"Detecting Anomalies in the Engine Coolant Sensor Using One-Class Classifiers" (IEEE).

What is kept: only the driving logs (drive*, live*, ufpe*, long*; idle* are parked), trimmed to the
engine-on span (first to last ENGINE_RPM >= 300), with VEHICLE_SPEED, ENGINE_RPM, THROTTLE and
ENGINE_LOAD. Isolated missing values are interpolated. A log that was cut while the car was still
moving gets a synthetic stop appended (-2 m/s², flagged `synthetic_tail`), so every cycle ends at rest.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("drive", "live", "ufpe", "long")
COLS = {"VEHICLE_SPEED": "speed_kph", "ENGINE_RPM": "rpm", "THROTTLE": "throttle_pct", "ENGINE_LOAD": "engine_load_pct"}
TAIL_DECEL_KPH_S = 7.2  # 2 m/s²


def read_log(path: Path) -> pd.DataFrame:
    raw = pd.read_csv(path, skipinitialspace=True, index_col=False)
    raw.columns = [str(c).split("(")[0].strip() for c in raw.columns]
    df = raw[list(COLS)].rename(columns=COLS).apply(pd.to_numeric, errors="coerce")
    return df.interpolate(limit_direction="both")


def cycle_frame(path: Path) -> pd.DataFrame | None:
    m = re.match(r"([a-z]+)(\d+)\.csv$", path.name)
    if not m or m.group(1) not in KINDS:
        return None
    df = read_log(path)
    on = np.flatnonzero(df["rpm"].to_numpy() >= 300)
    if len(on) < 60:
        return None
    df = df.iloc[on[0]: on[-1] + 1].reset_index(drop=True)
    df["rpm"] = df["rpm"].clip(lower=600)  # engine-on span: no stall readings inside a template
    df["synthetic_tail"] = False
    v_end = float(df["speed_kph"].iloc[-1])
    if v_end > 0:
        steps = np.arange(v_end - TAIL_DECEL_KPH_S, -TAIL_DECEL_KPH_S, -TAIL_DECEL_KPH_S).clip(min=0)
        steps = np.r_[steps[steps > 0], 0.0, 0.0, 0.0]
        tail = pd.DataFrame({"speed_kph": steps, "rpm": 800.0, "throttle_pct": float(df["throttle_pct"].min()),
                             "engine_load_pct": 20.0, "synthetic_tail": True})
        df = pd.concat([df, tail], ignore_index=True)
    df.insert(0, "t_s", np.arange(len(df), dtype=np.int32))
    df.insert(0, "kind", m.group(1))
    df.insert(0, "cycle", path.stem)
    return df


def main(src: Path, out: Path) -> None:
    frames = [f for p in sorted(src.glob("*.csv"), key=lambda p: (re.sub(r"\d+", "", p.stem), int(re.sub(r"\D", "", p.stem) or 0)))
              if (f := cycle_frame(p)) is not None]
    df = pd.concat(frames, ignore_index=True)
    schema = pa.schema([("cycle", pa.string()), ("kind", pa.string()), ("t_s", pa.int32()),
                        ("speed_kph", pa.float32()), ("rpm", pa.float32()), ("throttle_pct", pa.float32()),
                        ("engine_load_pct", pa.float32()), ("synthetic_tail", pa.bool_())])
    tbl = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
    tbl = tbl.replace_schema_metadata({b"source": b"carOBD (github eron93br/carOBD), 2014 Toyota Etios, 1 Hz OBD-II",
                                       b"citation": b"Detecting Anomalies in the Engine Coolant Sensor Using One-Class Classifiers (IEEE)"})
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(tbl, out, compression="zstd")
    g = df.groupby("cycle", sort=False)
    km = g["speed_kph"].sum() / 3600
    print(f"{out}: {len(df):,} rows, {df['cycle'].nunique()} cycles ({km.sum():.0f} km), {out.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "data" / "carobd"
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "data" / "carobd_cycles.parquet"
    main(src, out)
