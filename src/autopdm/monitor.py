"""Drift monitoring that tells season from change: the current feature window against the champion's reference.

What is compared
----------------
* **Current** — the last ``current_days`` days of the ``features`` table (ending at its last date, or ``as_of``).
* **Reference** — a sample of the features table the champion was trained and tested on: every vehicle and
  every date of that table (not only the rows the trees were fitted on), each row tagged with its vehicle's
  days of history and with whether the vehicle was held out of the fit. :func:`log_reference` logs it at
  training time as the artifact ``monitor/reference.parquet`` of the champion's MLflow run, found through the
  ``champion`` alias of ``autopdm-<component>`` (or ``--reference RUN``). Older runs without it: the training
  date range from the run's params applied to the current ``features`` table, else every row before the
  window (``reference_source`` says which). Reference rows dated inside the current window are left out, so a
  window is never compared with itself.
* **Columns** — the champions' features minus *clock* columns that grow on any healthy fleet (ages, days and
  km since a service, totals, odometer). A rolling-window column (``_7d``, ``_30d``, ``_90d``, ``delta_7_90``)
  is compared only on rows whose vehicle has at least that many days of history: a 90-day sum over the first
  month of records says nothing about the fleet. A column with fewer than ``MIN_MATURE_SHARE`` of the
  window's rows old enough is skipped (listed under ``skipped``).

Season
------
A third of the features follow the weather, so a winter month differs from a whole year's reference on any
healthy fleet. Each column is compared with the reference it can honestly be compared with:

1. **Ambient temperature** (``ambient_temp_c*``) is the season itself. The reference is *moved to the current
   season*: an annual cycle (mean + one yearly harmonic) is fitted to each column on the reference's dates,
   and every reference value keeps its deviation from that cycle (its weather and its car) but takes the
   cycle's value on a date of the current window. A December window is compared with the reference fleet's
   Decembers, weather spread included; a fleet living 5 °C colder than its reference at this time of year is
   not like it. Needs a reference spanning ``SEASON_MIN_SPAN_DAYS``; a shorter one is used as it is (noted).
2. **Weather-driven** columns (cold-start share, crank/rest/charge voltages and margins, tire pressure:
   ``WEATHER_STEMS``) are compared with the reference rows nearest in temperature: for every current row the
   ``MATCH_K`` reference rows with the closest 7-, 30- and 90-day mean ambient temperatures (standardised).
   The three means also say whether it is getting warmer or colder, so slopes and 7-vs-90-day deltas follow.
   A battery cranking at -5 °C is compared with batteries cranking at -5 °C, whatever month that was.
3. Everything else (use, driving style, DTCs, the cars) is compared with the whole reference.

Predictions: the calibrated risk of each champion on the current rows against its risk on reference rows of
*held-out* vehicles (the trees never saw them; in-sample risks are sharper), matched on temperature as in 2.

Decision
--------
Evidently 0.7 ``DataDriftPreset`` with fixed methods (normed Wasserstein for numbers, Jensen-Shannon for
categories, column threshold ``COLUMN_THRESHOLD``) so the decision does not change with fleet size. Data drift
when the share of drifted columns reaches ``drift_share`` or one column moves by ``SEVERE_COLUMN_THRESHOLD``
reference standard deviations. Prediction drift: PSI over the reference's risk deciles (``quantile_psi``,
registered with Evidently) of at least ``PREDICTION_THRESHOLD``; it is computed, reported and logged, and
decides the exit code only with ``prediction_gates=True`` (``--prediction-gates``): risks also follow
features that accumulate since the records began, so on the training fleet's own year the tire risk still
moves as much as on a fleet driven twice as hard. docs/monitoring.md has the measurements behind every
threshold. :func:`run_monitor` returns a :class:`MonitorResult`; the CLI exits 1 on drift, 0 otherwise.

Evidently is imported inside the functions (about 3-5 s to import), scikit-learn likewise.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from autopdm import components, store
from autopdm.config import Paths, quiet_telemetry
from autopdm.modeling import tracking
from autopdm.modeling.champion import load_champions

log = logging.getLogger(__name__)

REFERENCE_ARTIFACT = "monitor/reference.parquet"
EXPERIMENT = "autopdm-monitor"
HISTORY = "history_days"        # reference column: days since the vehicle's first feature row
HELD_OUT = "held_out"           # reference column: the vehicle was not among the rows the trees were fitted on
DEFAULT_DRIFT_SHARE = 0.1
# Rows are vehicle-days, strongly clustered by vehicle: the effective sample size is the number of vehicles, not of
# rows, so Evidently's default 0.1 (made for i.i.d. rows) flags two samples of the *same* fleet. Measured
# (docs/monitoring.md; temperate fleets of 150 and 200 vehicles x 365 days): the training fleet's own twelve months,
# no column above 1.10 and no drift share above 0.06; the same vehicles in a cold climate, at least one column at
# 2.19 or more in every month; hot and driven at aggressiveness 2.0, 6.3-12.2.
COLUMN_THRESHOLD = 0.5          # normed Wasserstein (shift in reference std units) / Jensen-Shannon per column
SEVERE_COLUMN_THRESHOLD = 1.5   # one column moved this far is drift on its own, however many columns there are
# PSI of the calibrated risk over the reference's deciles; 0.25 is the usual "major shift" line.
PREDICTION_THRESHOLD = 0.25
PSI_BINS = 10
PSI_TEST = "quantile_psi"
MAX_ROWS = 20_000               # per side; drift statistics are stable well below this
MIN_COLUMN_ROWS = 50            # values a column needs on each side to be compared
MIN_MATURE_SHARE = 0.2          # share of the window's rows whose history covers a column's window
TEMPERATURE_PREFIX = "ambient_temp_c"
MATCH_ON = ("ambient_temp_c_7d", "ambient_temp_c_30d", "ambient_temp_c_90d")
MATCH_K = 5
SEASON_MIN_SPAN_DAYS = 300      # an annual cycle fitted on less than this is an extrapolation
WEATHER_STEMS = ("cold_start", "crank_", "rest_voltage", "charge_voltage", "tire_pressure")
DEFAULT_WINDOW_DAYS = 90        # columns without a window in their name (derived from 90-day slopes, or static)

# clock columns: grow with time on any fleet, so they are not drift signals (ages, distances and counts since
# a service, running bests since a part was fitted, totals, odometer)
CLOCK_PATTERNS = (r"(^|_)age(_|$)", r"since", r"odometer", r"model_year", r"registration", r"_on_record$", r"_total$",
                  r"_from_best$", r"^days_to_need", r"^label_")
ID_COLUMNS = ("vehicle_id", "date", "customer_id", "preferred_channel", HISTORY, HELD_OUT)
TRAIN_RANGE_PARAMS = (
    ("train_start", "train_end"), ("train_date_min", "train_date_max"), ("split.train_start", "split.train_end"),
    ("train_from", "train_to"),
)


class MonitorError(RuntimeError):
    pass


@dataclass
class MonitorResult:
    drift: bool
    data_drift: bool
    drift_share: float
    drift_share_threshold: float
    n_columns: int
    drifted_columns: list[str]
    severe_columns: list[str]
    column_scores: dict[str, float]
    prediction_drift: dict[str, bool]
    prediction_scores: dict[str, float]
    reference_run: str | None
    reference_source: str
    reference_rows: int
    current_rows: int
    current_start: str
    current_end: str
    report_path: str
    summary_path: str
    mlflow_run_id: str | None = None
    prediction_gates: bool = False
    season: dict = field(default_factory=dict)     # how each kind of column was compared (see the module docstring)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- reference


def _as_dates(col: pd.Series) -> pd.Series:
    d = pd.to_datetime(col)
    if getattr(d.dt, "tz", None) is not None:
        d = d.dt.tz_localize(None)
    return d.dt.normalize()


def _date(s) -> pd.Timestamp:
    t = pd.Timestamp(s)
    return (t.tz_localize(None) if t.tzinfo else t).normalize()


def first_dates(*frames: pd.DataFrame) -> pd.Series:
    """vehicle_id → its first date over the given frames."""
    firsts = [_as_dates(f["date"]).groupby(f["vehicle_id"].to_numpy()).min() for f in frames if len(f)]
    return pd.concat(firsts).groupby(level=0).min() if firsts else pd.Series(dtype="datetime64[ns]")


def history_days(frame: pd.DataFrame, first: pd.Series) -> np.ndarray:
    """Days between each row's date and its vehicle's first date."""
    start = pd.to_datetime(frame["vehicle_id"].map(first))
    return (_as_dates(frame["date"]) - start).dt.days.to_numpy(dtype=float)


def reference_sample(frame: pd.DataFrame, feature_names=None, train_rows=None, max_rows: int = MAX_ROWS,
                     seed: int = 0) -> pd.DataFrame:
    """A uniform sample of `frame` (ids, date, features) with each row's ``history_days`` and, given the boolean
    mask of the rows the trees were fitted on, ``held_out`` (the row's vehicle is not among them)."""
    cols = [c for c in ("vehicle_id", "date") if c in frame.columns]
    cols += [c for c in (feature_names or frame.columns) if c not in cols and c in frame.columns]
    pos = np.arange(len(frame))
    if len(frame) > max_rows:
        pos = np.sort(np.random.default_rng(seed).choice(len(frame), max_rows, replace=False))
    ref = frame.iloc[pos][cols].reset_index(drop=True)
    if {"vehicle_id", "date"} <= set(frame.columns):
        ref[HISTORY] = history_days(ref, first_dates(frame[["vehicle_id", "date"]]))
        if train_rows is not None:
            fitted = pd.unique(frame["vehicle_id"].to_numpy()[np.asarray(train_rows, dtype=bool)])
            ref[HELD_OUT] = ~ref["vehicle_id"].isin(fitted).to_numpy()
    return ref


def log_reference(frame: pd.DataFrame, feature_names=None, max_rows: int = MAX_ROWS, seed: int = 0,
                  run_id: str | None = None, train_rows=None) -> str:
    """Log :func:`reference_sample` of the training features table as the drift reference of an MLflow run.

    Pass the whole features table and the mask of the rows the trees were fitted on (``train_rows``); call it
    from the training run (active run) or pass ``run_id``.
    """
    import mlflow

    ref = reference_sample(frame, feature_names, train_rows, max_rows, seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(REFERENCE_ARTIFACT).name
        ref.to_parquet(path, index=False)
        if run_id is None:
            mlflow.log_artifact(str(path), artifact_path=str(Path(REFERENCE_ARTIFACT).parent))
            run_id = mlflow.active_run().info.run_id
        else:
            from mlflow import MlflowClient

            MlflowClient().log_artifact(run_id, str(path), artifact_path=str(Path(REFERENCE_ARTIFACT).parent))
    return run_id


def champion_run_ids(paths: Paths, names=None) -> dict[str, str]:
    """component → source run id of the version that holds the ``champion`` alias."""
    client = tracking.client(paths)
    out = {}
    for comp in components.check(names or components.names()):
        try:
            mv = client.get_model_version_by_alias(components.get(comp).model_name, components.CHAMPION_ALIAS)
        except Exception:  # no such model / alias
            continue
        if mv.run_id:
            out[comp] = mv.run_id
    return out


def training_runs(paths: Paths, runs: dict[str, str]) -> dict[str, str]:
    """component → the training run its champion came from (the parent of the per-component run)."""
    client = tracking.client(paths)
    return {c: client.get_run(r).data.tags.get("mlflow.parentRunId", r) for c, r in runs.items()}


def resolve_reference(paths: Paths, features: pd.DataFrame, run_id: str | None,
                      current_start: pd.Timestamp) -> tuple[pd.DataFrame, str]:
    """Reference rows and how they were found (see the module docstring)."""
    if run_id:
        import mlflow

        client = tracking.client(paths)
        try:
            run = client.get_run(run_id)
        except Exception as exc:
            raise MonitorError(f"reference run {run_id!r} not found in {paths.tracking_uri}: {exc}") from None
        # 1. the logged sample
        try:
            with tempfile.TemporaryDirectory() as tmp:
                local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=REFERENCE_ARTIFACT, dst_path=tmp)
                return pd.read_parquet(local), "artifact"
        except Exception:
            pass
        # 2. the training date range from params
        params = run.data.params
        for lo, hi in TRAIN_RANGE_PARAMS:
            if lo in params and hi in params:
                d = _as_dates(features["date"])
                ref = features[(d >= _date(params[lo])) & (d <= _date(params[hi]))]
                if len(ref):
                    return ref, f"params:{params[lo]}..{params[hi]}"
    # 3. everything before the current window
    ref = features[_as_dates(features["date"]) < current_start]
    return ref, "before_window"


# ---------------------------------------------------------------- columns


def monitored_columns(frame: pd.DataFrame, feature_names) -> tuple[list[str], list[str]]:
    """(numerical, categorical) feature columns to test for drift: no ids, labels or clock columns."""
    num, cat = [], []
    for c in feature_names:
        if c not in frame.columns or c in ID_COLUMNS or any(re.search(p, c) for p in CLOCK_PATTERNS):
            continue
        s = frame[c]
        if s.notna().sum() == 0:
            continue
        if isinstance(s.dtype, pd.CategoricalDtype) or s.dtype == object or s.dtype == bool or pd.api.types.is_string_dtype(s):
            cat.append(c)
        else:
            num.append(c)
    return num, cat


def window_days(column: str) -> int:
    """Days of history a column's value summarises: the largest window in its name (``_30d``, ``delta_7_90``)."""
    days = [int(n) for n in re.findall(r"_(\d+)d(?=_|$)", column)]
    days += [int(n) for pair in re.findall(r"_delta_(\d+)_(\d+)", column) for n in pair]
    return max(days) if days else DEFAULT_WINDOW_DAYS


def column_kind(column: str) -> str:
    """'ambient' (moved to the season), 'weather' (matched on temperature) or 'plain' (whole reference)."""
    if column.startswith(TEMPERATURE_PREFIX):
        return "ambient"
    return "weather" if column.startswith(WEATHER_STEMS) else "plain"


def _prepare(df: pd.DataFrame, num: list[str], cat: list[str]) -> pd.DataFrame:
    """Typed copy of the columns; values of a rolling window not yet full (history shorter than it) → missing."""
    out = pd.DataFrame(index=df.index)
    hist = df[HISTORY].to_numpy(dtype=float) if HISTORY in df.columns else np.full(len(df), np.inf)
    for c in num:
        v = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        out[c] = np.where(hist >= window_days(c), v, np.nan)
    for c in cat:
        out[c] = df[c].astype("string").fillna("<NA>").astype(object).where(hist >= window_days(c))
    return out


def _cap(df: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    return df.sample(n, random_state=seed).sort_index() if len(df) > n else df


# ---------------------------------------------------------------- season


def annual_terms(dates) -> np.ndarray:
    """Design matrix of an annual cycle: 1, cos and sin of the day of the year."""
    doy = _as_dates(pd.Series(np.asarray(dates))).dt.dayofyear.to_numpy(dtype=float)
    w = 2 * np.pi * doy / 365.25
    return np.column_stack([np.ones_like(w), np.cos(w), np.sin(w)])


def move_to_season(values: pd.Series, dates, target_dates, seed: int = 0) -> pd.Series:
    """Reference values moved to the season of `target_dates`: each keeps its deviation from the annual cycle
    fitted on (dates, values) and takes the cycle's value on a date drawn from `target_dates`."""
    y = values.to_numpy(dtype=float)
    X = annual_terms(dates)
    ok = np.isfinite(y)
    beta = np.linalg.lstsq(X[ok], y[ok], rcond=None)[0]
    targets = np.random.default_rng(seed).choice(np.asarray(target_dates), len(y))
    return pd.Series(y - X @ beta + annual_terms(targets) @ beta, index=values.index)


def match_rows(pool: pd.DataFrame, current: pd.DataFrame, on: list[str], k: int = MATCH_K) -> np.ndarray:
    """Positions in `pool` of the `k` rows nearest to each current row in the standardised `on` columns
    (rows with a missing value in `on` take no part)."""
    from sklearn.neighbors import NearestNeighbors

    P = pool[on].to_numpy(dtype=float, na_value=np.nan)
    C = current[on].to_numpy(dtype=float, na_value=np.nan)
    usable = np.flatnonzero(np.isfinite(P).all(axis=1))
    wanted = np.isfinite(C).all(axis=1)
    if len(usable) < k or not wanted.any():
        return np.array([], dtype=int)
    scale = P[usable].std(axis=0)
    scale[~(scale > 0)] = 1.0
    nn = NearestNeighbors(n_neighbors=k).fit(P[usable] / scale)
    _, idx = nn.kneighbors(C[wanted] / scale)
    return usable[idx.ravel()]


def seasonal_reference(ref: pd.DataFrame, cur: pd.DataFrame, num: list[str], cat: list[str],
                       max_rows: int = MAX_ROWS, seed: int = 0) -> tuple[pd.DataFrame, dict, list[str]]:
    """Reference columns as each kind is compared (module docstring, Season), stacked into one frame with
    missing values elsewhere: Evidently drops a column's missing values, so every column sees its own rows."""
    kinds = {c: column_kind(c) for c in num + cat}
    cols = {k: [c for c in num + cat if kinds[c] == k] for k in ("plain", "ambient", "weather")}
    notes: list[str] = []
    blocks = []
    if cols["plain"]:
        blocks.append(_prepare(ref, [c for c in cols["plain"] if c in num], [c for c in cols["plain"] if c in cat]))
    season = {"moved_to_season": [], "matched_on_temperature": [], "matched_on": [], "season_fit_days": 0}

    amb = _prepare(ref, cols["ambient"], [])
    span = int((_as_dates(ref["date"]).max() - _as_dates(ref["date"]).min()).days) if len(ref) else 0
    season["season_fit_days"] = span
    if cols["ambient"] and span >= SEASON_MIN_SPAN_DAYS:
        for c in cols["ambient"]:
            if amb[c].notna().sum() >= MIN_COLUMN_ROWS:
                amb[c] = move_to_season(amb[c], ref["date"], cur["date"], seed)
                season["moved_to_season"].append(c)
    elif cols["ambient"]:
        notes.append(f"the reference spans {span} days (< {SEASON_MIN_SPAN_DAYS}): ambient temperature compared "
                     "without moving it to the current season")
    if cols["ambient"]:
        blocks.append(amb)

    on = [c for c in MATCH_ON if c in ref.columns and c in cur.columns]
    pos = match_rows(ref, cur, on) if on and cols["weather"] else np.array([], dtype=int)
    if cols["weather"] and len(pos):
        pos = np.random.default_rng(seed).choice(pos, max_rows, replace=False) if len(pos) > max_rows else pos
        blocks.append(_prepare(ref.iloc[pos], [c for c in cols["weather"] if c in num], [c for c in cols["weather"] if c in cat]))
        season.update(matched_on_temperature=cols["weather"], matched_on=on, matched_rows=int(len(pos)))
    elif cols["weather"]:
        notes.append("no ambient temperature to match on: weather-driven columns compared with the whole reference")
        blocks.append(_prepare(ref, [c for c in cols["weather"] if c in num], [c for c in cols["weather"] if c in cat]))
    frame = pd.concat(blocks, axis=0, ignore_index=True) if blocks else pd.DataFrame()
    return frame.reindex(columns=num + cat), season, notes


def prediction_reference(ref: pd.DataFrame, cur: pd.DataFrame, champions: dict, feature_names: list[str],
                         max_rows: int = MAX_ROWS, seed: int = 0) -> tuple[pd.DataFrame, str]:
    """Champion risks on held-out reference rows matched on temperature, and how they were chosen."""
    pool, how = ref, "all reference rows (the reference does not say which vehicles were held out)"
    if HELD_OUT in ref.columns and ref[HELD_OUT].astype(bool).sum() >= MIN_COLUMN_ROWS:
        pool, how = ref[ref[HELD_OUT].astype(bool).to_numpy()], "held-out vehicles"
    on = [c for c in MATCH_ON if c in pool.columns and c in cur.columns]
    pos = match_rows(pool, cur, on) if on else np.array([], dtype=int)
    if len(pos):
        pos = np.random.default_rng(seed).choice(pos, max_rows, replace=False) if len(pos) > max_rows else pos
        pool, how = pool.iloc[pos], how + ", matched on ambient temperature"
    return _risks(champions, pool.reindex(columns=feature_names)).reset_index(drop=True), how


def usable_columns(ref_x: pd.DataFrame, cur_x: pd.DataFrame, cur_history: np.ndarray,
                   columns: list[str]) -> tuple[list[str], dict[str, str]]:
    """Columns with enough values on both sides; the others with the reason."""
    keep, skipped = [], {}
    for c in columns:
        mature = float(np.mean(cur_history >= window_days(c))) if len(cur_history) else 0.0
        if c in cur_x.columns and not c.startswith("risk_") and mature < MIN_MATURE_SHARE:
            skipped[c] = f"only {mature:.0%} of the window's rows have {window_days(c)} days of history"
        elif ref_x[c].notna().sum() < MIN_COLUMN_ROWS or cur_x[c].notna().sum() < MIN_COLUMN_ROWS:
            skipped[c] = (f"too few values (reference {int(ref_x[c].notna().sum())}, "
                          f"current {int(cur_x[c].notna().sum())}; need {MIN_COLUMN_ROWS})")
        else:
            keep.append(c)
    return keep, skipped


# ---------------------------------------------------------------- report


def quantile_psi(reference: pd.Series, current: pd.Series, feature_type=None, threshold: float = PREDICTION_THRESHOLD,
                 bins: int = PSI_BINS) -> tuple[float, bool]:
    """PSI over the reference's quantile bins (Evidently's own ``psi`` uses equal-width bins, which put a
    skewed risk distribution — almost all mass near 0 — into one bin)."""
    a = pd.to_numeric(pd.Series(reference), errors="coerce").dropna().to_numpy(float)
    b = pd.to_numeric(pd.Series(current), errors="coerce").dropna().to_numpy(float)
    if len(a) == 0 or len(b) == 0:
        return float("nan"), False
    edges = np.unique(np.quantile(a, np.linspace(0, 1, bins + 1)))
    edges[0], edges[-1] = -np.inf, np.inf
    if len(edges) < 3:  # (nearly) constant reference: split at its value
        v = float(np.median(a))
        edges = np.array([-np.inf, v, np.inf])
    pa = np.histogram(a, edges)[0] / len(a)
    pb = np.histogram(b, edges)[0] / len(b)
    pa, pb = np.clip(pa, 1e-4, None), np.clip(pb, 1e-4, None)
    value = float(np.sum((pa - pb) * np.log(pa / pb)))
    return value, value >= threshold


def _register_psi() -> None:
    from evidently.legacy.calculations.stattests.registry import StatTest, _registered_stat_tests, register_stattest
    from evidently.legacy.core import ColumnType

    if PSI_TEST in _registered_stat_tests:
        return
    register_stattest(StatTest(name=PSI_TEST, display_name="PSI over reference deciles",
                               allowed_feature_types=[ColumnType.Numerical], default_threshold=PREDICTION_THRESHOLD),
                      lambda r, c, t, th: quantile_psi(r, c, t, th))


def drift_scores(reference: pd.DataFrame, current: pd.DataFrame, num: list[str], cat: list[str],
                 risk_columns: list[str]) -> tuple[dict[str, float], dict[str, float]]:
    """(column → drift score, risk column → PSI) with Evidently's own tests, as its report computes them
    (normed Wasserstein for numbers, Jensen-Shannon for categories, `quantile_psi` for risks; missing values
    dropped per column)."""
    from evidently.legacy.calculations.stattests import get_stattest
    from evidently.legacy.core import ColumnType

    _register_psi()
    tests = [(c, ColumnType.Numerical, "wasserstein", COLUMN_THRESHOLD) for c in num]
    tests += [(c, ColumnType.Categorical, "jensenshannon", COLUMN_THRESHOLD) for c in cat]
    tests += [(c, ColumnType.Numerical, PSI_TEST, PREDICTION_THRESHOLD) for c in risk_columns]
    cols, risks = {}, {}
    for c, kind, method, threshold in tests:
        r, k = reference[c].dropna(), current[c].dropna()
        score = get_stattest(r, k, kind, method)(r, k, kind, threshold).drift_score
        (risks if c in risk_columns else cols)[c] = float(score)
    return cols, risks


def build_report(reference: pd.DataFrame, current: pd.DataFrame, num: list[str], cat: list[str],
                 risk_columns: list[str], drift_share: float = DEFAULT_DRIFT_SHARE):
    """The Evidently report (HTML) of the same comparison: the same tests and thresholds as `drift_scores`."""
    quiet_telemetry()
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    dd = DataDefinition(numerical_columns=num + risk_columns, categorical_columns=cat)
    ref_ds = Dataset.from_pandas(reference, data_definition=dd)
    cur_ds = Dataset.from_pandas(current, data_definition=dd)
    metrics = [DataDriftPreset(columns=num + cat, drift_share=drift_share, num_method="wasserstein",
                               cat_method="jensenshannon", threshold=COLUMN_THRESHOLD)]
    _register_psi()
    metrics += [ValueDrift(column=c, method=PSI_TEST, threshold=PREDICTION_THRESHOLD) for c in risk_columns]
    return Report(metrics, include_tests=True).run(current_data=cur_ds, reference_data=ref_ds)


def report_share(snapshot) -> float | None:
    """The share of drifted columns in an Evidently snapshot (its DriftedColumnsCount metric)."""
    for m in snapshot.dict()["metrics"]:
        if m.get("config", {}).get("type", "").endswith("DriftedColumnsCount"):
            return float(m["value"]["share"])
    return None


def _risks(champions: dict, frame: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(index=frame.index)
    for comp, champ in champions.items():
        X = frame.reindex(columns=list(champ.feature_names))
        out[f"risk_{comp}"] = np.asarray(champ.predict(X), dtype="float64")
    return out


def _window(features: pd.DataFrame, current_days: int, as_of) -> tuple[pd.DataFrame, pd.Timestamp, pd.Timestamp]:
    dates = _as_dates(features["date"])
    end = _date(as_of) if as_of else dates.max()
    start = end - pd.Timedelta(days=int(current_days) - 1)
    current = features[((dates >= start) & (dates <= end)).to_numpy()]
    if current.empty:
        raise MonitorError(f"no feature rows between {start.date()} and {end.date()}")
    return current, start, end


def _reference(paths: Paths, features: pd.DataFrame, champions: dict, reference: str | None,
               start: pd.Timestamp, end: pd.Timestamp, notes: list[str]) -> tuple[pd.DataFrame, str | None, str]:
    run_id = reference
    if run_id is None:
        runs = champion_run_ids(paths, list(champions))
        run_id = next((runs[c] for c in components.names() if c in runs), None)
        trainings = training_runs(paths, runs)
        if len(set(trainings.values())) > 1:
            notes.append(f"champions come from different training runs {trainings}; reference taken from {run_id}")
    ref, source = resolve_reference(paths, features, run_id, start)
    if "date" in ref.columns:  # never compare a window with itself
        d = _as_dates(ref["date"])
        ref = ref[((d < start) | (d > end)).to_numpy()]
    if ref.empty:
        raise MonitorError(f"reference ({source}) has no rows outside {start.date()}..{end.date()}")
    return ref, run_id, source


def run_monitor(paths: Paths | None = None, reference: str | None = None, current_days: int = 30,
                as_of: str | None = None, drift_share: float = DEFAULT_DRIFT_SHARE, log_to_mlflow: bool = True,
                champions: dict | None = None, max_rows: int = MAX_ROWS,
                features: pd.DataFrame | None = None, prediction_gates: bool = False,
                write_report: bool = True) -> MonitorResult:
    """Compare the current feature window with the champion's reference; write the Evidently HTML report (unless
    `write_report` is false) and a JSON summary; log to MLflow."""
    quiet_telemetry()
    paths = (paths or Paths.from_env()).ensure()
    if features is None:
        features = store.read_table("features", paths)
    if features.empty:
        raise MonitorError("the features table is empty: run `autopdm features` first")
    if champions is None:
        champions = load_champions(paths)
    if not champions:
        raise MonitorError("no champion models: run `autopdm train` first")
    notes: list[str] = []
    current, start, end = _window(features, current_days, as_of)
    ref, run_id, source = _reference(paths, features, champions, reference, start, end, notes)

    feature_names: list[str] = []
    for champ in champions.values():
        feature_names += [f for f in champ.feature_names if f not in feature_names]
    num, cat = monitored_columns(ref, feature_names)
    if not num and not cat:
        raise MonitorError("no monitorable feature columns shared by the reference and the champions")

    first = first_dates(features, ref) if "date" in ref.columns else first_dates(features)
    ref_s, cur_s = _cap(ref, max_rows).copy(), _cap(current, max_rows).copy()
    if HISTORY not in ref_s.columns:
        ref_s[HISTORY] = history_days(ref_s, first)
    cur_s[HISTORY] = history_days(cur_s, first)
    ref_cols, season, season_notes = seasonal_reference(ref_s, cur_s, num, cat, max_rows)
    notes += season_notes
    risk_ref, season["prediction_reference"] = prediction_reference(ref_s, cur_s, champions, feature_names, max_rows)
    ref_x = pd.concat([ref_cols, risk_ref], axis=0, ignore_index=True)
    cur_x = pd.concat([_prepare(cur_s, num, cat), _risks(champions, cur_s.reindex(columns=feature_names))], axis=1)
    risk_cols = [f"risk_{c}" for c in champions]
    keep, skipped = usable_columns(ref_x, cur_x, cur_s[HISTORY].to_numpy(), num + cat + risk_cols)
    num, cat, risk_cols = ([c for c in group if c in keep] for group in (num, cat, risk_cols))
    if not num and not cat:
        raise MonitorError(f"no feature column has enough values to compare: {skipped}")
    ref_x, cur_x = ref_x[num + cat + risk_cols], cur_x[num + cat + risk_cols].reset_index(drop=True)
    col_scores, risk_scores = drift_scores(ref_x, cur_x, num, cat, risk_cols)
    drifted = sorted(c for c, v in col_scores.items() if v >= COLUMN_THRESHOLD)
    share = len(drifted) / len(col_scores)

    pred_drift = {c.removeprefix("risk_"): bool(v >= PREDICTION_THRESHOLD) for c, v in risk_scores.items()}
    severe = sorted(c for c, v in col_scores.items() if v >= SEVERE_COLUMN_THRESHOLD)
    data_drift = bool(share >= drift_share or severe)
    drift = data_drift or (prediction_gates and any(pred_drift.values()))

    stamp = pd.Timestamp.now(tz="UTC").strftime("%Y%m%dT%H%M%S%fZ")
    summary_path = paths.reports / f"drift-{end.date()}-{stamp}.json"
    report_path = summary_path.with_suffix(".html") if write_report else None
    if report_path is not None:
        snap = build_report(ref_x, cur_x, num, cat, risk_cols, drift_share)
        snap.save_html(str(report_path))
        if report_share(snap) is not None and abs(report_share(snap) - share) > 1e-9:
            notes.append(f"the HTML report counts a drift share of {report_share(snap):.3f}, the decision {share:.3f}")
    result = MonitorResult(
        drift=drift, data_drift=data_drift, drift_share=float(share), drift_share_threshold=drift_share,
        n_columns=len(col_scores), drifted_columns=drifted, severe_columns=severe, column_scores=col_scores,
        prediction_drift=pred_drift, prediction_scores={c.removeprefix("risk_"): v for c, v in risk_scores.items()},
        reference_run=run_id, reference_source=source, reference_rows=len(ref), current_rows=len(current),
        current_start=str(start.date()), current_end=str(end.date()), report_path=str(report_path or ""),
        summary_path=str(summary_path), prediction_gates=prediction_gates, season=season, skipped=skipped, notes=notes)
    if log_to_mlflow:
        result.mlflow_run_id = _log(paths, result, report_path)
    summary_path.write_text(json.dumps(result.to_dict(), indent=2, default=str))
    return result


def _log(paths: Paths, r: MonitorResult, report_path: Path | None) -> str:
    import mlflow

    tracking.use(paths)
    nested = mlflow.active_run() is not None
    if not os.environ.get("MLFLOW_RUN_ID") and not nested:
        if mlflow.get_experiment_by_name(EXPERIMENT) is None:
            mlflow.create_experiment(EXPERIMENT, artifact_location=(paths.artifacts / EXPERIMENT).as_uri())
        mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name=f"monitor-{r.current_end}", nested=nested) as run:
        mlflow.set_tags({"autopdm.kind": "monitor", "reference_run": r.reference_run or "",
                         "reference_source": r.reference_source, "drift": str(r.drift).lower()})
        mlflow.log_params({"current_start": r.current_start, "current_end": r.current_end,
                           "severe_column_threshold": SEVERE_COLUMN_THRESHOLD,
                           "drift_share_threshold": r.drift_share_threshold, "column_threshold": COLUMN_THRESHOLD,
                           "prediction_threshold": PREDICTION_THRESHOLD, "reference_rows": r.reference_rows,
                           "current_rows": r.current_rows, "n_columns": r.n_columns,
                           "season_fit_days": r.season.get("season_fit_days", 0),
                           "n_moved_to_season": len(r.season.get("moved_to_season", [])),
                           "n_matched_on_temperature": len(r.season.get("matched_on_temperature", []))})
        metrics = {"drift": float(r.drift), "data_drift": float(r.data_drift), "drift_share": r.drift_share,
                   "n_drifted_columns": float(len(r.drifted_columns)), "n_severe_columns": float(len(r.severe_columns))}
        metrics.update({f"prediction_drift_{c}": v for c, v in r.prediction_scores.items() if np.isfinite(v)})
        metrics.update({f"col_drift.{c}": v for c, v in r.column_scores.items() if np.isfinite(v)})
        mlflow.log_metrics(metrics)
        summary = r.to_dict()
        summary["mlflow_run_id"] = run.info.run_id
        mlflow.log_dict(summary, "drift_summary.json")
        if report_path is not None:
            mlflow.log_artifact(str(report_path), artifact_path="reports")
        return run.info.run_id
