"""Drift monitoring: the current feature window against the champion's training reference.

What is compared
----------------
* **Current** — the last ``current_days`` days of the ``features`` table (ending at its last date,
  or ``as_of``).
* **Reference** — the rows the champion was trained on. It is identified through MLflow: the
  ``champion`` alias of ``autopdm-<component>`` → model version → its source run (or the run given
  with ``--reference RUN``). In that run, in this order:

  1. an artifact ``monitor/reference.parquet`` (a per-vehicle sample of the training rows, written by
     :func:`log_reference` at training time) — self-contained, survives a rebuilt features table;
  2. the training date range logged as run params (``train_start``/``train_end`` or the
     ``split.*``/``train_date_*`` variants), applied to the current ``features`` table;
  3. fallback: every feature row dated before the current window (logged as
     ``reference_source=before_window`` so nobody mistakes it for the training set).

  When the reference spans the same calendar days one year before the current window, only those
  rows are used (a *seasonal* reference) so winter is not reported as drift against a whole year.

* Monitored columns are the champion's features minus *clock* columns that grow by construction
  (vehicle age, days/km since a service, odometer, model year): they would drift on any healthy fleet.

Decision
--------
Evidently 0.7 ``DataDriftPreset`` with fixed methods (normed Wasserstein for numbers, Jensen–Shannon
for categories, threshold 0.5, see below) so the decision does not change with fleet size; data drift when the
share of drifted columns reaches ``drift_share`` or any column moves by at least one reference standard
deviation (``SEVERE_COLUMN_THRESHOLD``). Prediction drift: the calibrated risk of each
champion on reference vs current rows (``ValueDrift`` with a PSI over the reference's deciles, registered
with Evidently as ``quantile_psi``). Drift = data drift or
(with ``prediction_gates=True``, ``--prediction-gates``) prediction drift of any component. Prediction drift
is always computed, reported and logged, but by default it does not decide the exit code: the reference
risks are *in-sample* (the champion was fit on those rows) and the models use features that accumulate
with time since a part was fitted, so the risk distribution moves on an unchanged fleet — measured PSI 0.64
for the battery on the very fleet it was trained on, against 0.50 for brakes on a fleet driven twice as
hard. Thresholds and the numbers behind them are next to the constants
below. :func:`run_monitor` returns a :class:`MonitorResult`; the CLI
exits 1 on drift, 0 otherwise.

Evidently is imported inside the functions (about 3–5 s to import).
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
from autopdm.modeling import tracking
from autopdm.modeling.champion import load_champions
from autopdm.config import Paths, quiet_telemetry

log = logging.getLogger(__name__)

REFERENCE_ARTIFACT = "monitor/reference.parquet"
EXPERIMENT = "autopdm-monitor"
DEFAULT_DRIFT_SHARE = 0.1
# Rows are vehicle-days, strongly clustered by vehicle: the effective sample size is the number of
# vehicles, not of rows, so Evidently's default 0.1 (made for i.i.d. rows) flags two samples of the *same*
# fleet. Measured (200 vehicles, 730 days; same fleet vs its training reference): no kept column above 0.31;
# climate="hot": ambient-temperature columns 1.6-1.8; aggressiveness=2: harsh-event rates 3.3-3.7.
COLUMN_THRESHOLD = 0.5          # normed Wasserstein (shift in reference std units) / Jensen-Shannon per column
# PSI of the calibrated risk over the reference's deciles; 0.25 is the usual "major shift" line.
# Measured: same fleet <= 0.09, another seed of the same population <= 0.23, hot battery 0.66, aggressive brake 0.36.
PREDICTION_THRESHOLD = 0.25
# One column moved by a whole reference standard deviation is drift on its own, however many columns there
# are (same fleet: max 0.31; hot: 1.6-1.8; aggressive: 3.3-3.7 — measured as above).
SEVERE_COLUMN_THRESHOLD = 1.0
PSI_BINS = 10
PSI_TEST = "quantile_psi"
MAX_ROWS = 20_000               # per side; drift statistics are stable well below this
MIN_SEASONAL_ROWS = 500

# clock columns: grow with time on any fleet, so they are not drift signals (ages, distances and counts since
# a service, running bests since a part was fitted, totals, odometer)
CLOCK_PATTERNS = (r"age", r"since", r"odometer", r"model_year", r"registration", r"_on_record$", r"_total$", r"_from_best$",
                  r"^days_to_need", r"^label_")
ID_COLUMNS = ("vehicle_id", "date", "customer_id", "preferred_channel")
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
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- reference


def log_reference(train_rows: pd.DataFrame, feature_names=None, max_rows: int = MAX_ROWS, seed: int = 0,
                  run_id: str | None = None) -> str:
    """Log a sample of the training rows as the drift reference of an MLflow run.

    Call it from the training run (active run) or pass ``run_id``. Keeps ``vehicle_id``, ``date`` and
    the features; samples whole rows uniformly (fixed seed) down to ``max_rows``.
    """
    import mlflow

    cols = [c for c in ("vehicle_id", "date") if c in train_rows.columns]
    cols += [c for c in (feature_names or train_rows.columns) if c not in cols and c in train_rows.columns]
    ref = train_rows[cols]
    if len(ref) > max_rows:
        ref = ref.sample(max_rows, random_state=seed).sort_index()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(REFERENCE_ARTIFACT).name
        ref.reset_index(drop=True).to_parquet(path, index=False)
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


def _date(s) -> pd.Timestamp:
    return pd.Timestamp(s).tz_localize(None).normalize() if pd.Timestamp(s).tzinfo else pd.Timestamp(s).normalize()


def _as_dates(col: pd.Series) -> pd.Series:
    d = pd.to_datetime(col)
    if getattr(d.dt, "tz", None) is not None:
        d = d.dt.tz_localize(None)
    return d.dt.normalize()


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


def seasonal(reference: pd.DataFrame, current_start: pd.Timestamp, current_end: pd.Timestamp) -> pd.DataFrame | None:
    """Reference rows on the same calendar days one year earlier, when there are enough of them."""
    d = _as_dates(reference["date"])
    lo, hi = current_start - pd.DateOffset(years=1), current_end - pd.DateOffset(years=1)
    sub = reference[(d >= lo) & (d <= hi)]
    return sub if len(sub) >= MIN_SEASONAL_ROWS else None


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


def _prepare(df: pd.DataFrame, num: list[str], cat: list[str]) -> pd.DataFrame:
    out = pd.DataFrame(index=df.index)
    for c in num:
        out[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    for c in cat:
        out[c] = df[c].astype("string").fillna("<NA>").astype(object)
    return out


def _cap(df: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    return df.sample(n, random_state=seed).sort_index() if len(df) > n else df


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


def build_report(reference: pd.DataFrame, current: pd.DataFrame, num: list[str], cat: list[str],
                 risk_columns: list[str], drift_share: float = DEFAULT_DRIFT_SHARE):
    """Run the Evidently report. Returns (snapshot, column_scores, drifted, share, risk_scores)."""
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
    snap = Report(metrics, include_tests=True).run(current_data=cur_ds, reference_data=ref_ds)
    d = snap.dict()
    col_scores, risk_scores, share = {}, {}, None
    for m in d["metrics"]:
        cfg = m.get("config", {})
        kind = cfg.get("type", "")
        if kind.endswith("DriftedColumnsCount"):
            share = float(m["value"]["share"])
        elif kind.endswith("ValueDrift"):
            col = cfg["column"]
            val = m["value"]
            val = float(val) if val is not None and not (isinstance(val, float) and np.isnan(val)) else float("nan")
            (risk_scores if col in risk_columns else col_scores)[col] = val
    drifted = sorted(c for c, v in col_scores.items() if v >= COLUMN_THRESHOLD)
    if share is None:
        share = len(drifted) / max(1, len(col_scores))
    return snap, col_scores, drifted, share, risk_scores


def _risks(champions: dict, frame: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(index=frame.index)
    for comp, champ in champions.items():
        X = frame.reindex(columns=list(champ.feature_names))
        out[f"risk_{comp}"] = np.asarray(champ.predict(X), dtype="float64")
    return out


def run_monitor(paths: Paths | None = None, reference: str | None = None, current_days: int = 30,
                as_of: str | None = None, drift_share: float = DEFAULT_DRIFT_SHARE, log_to_mlflow: bool = True,
                champions: dict | None = None, max_rows: int = MAX_ROWS, seasonal_reference: bool = True,
                features: pd.DataFrame | None = None, prediction_gates: bool = False) -> MonitorResult:
    """Compare the current feature window with the champion's reference; write HTML + JSON; log to MLflow."""
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

    dates = _as_dates(features["date"])
    end = _date(as_of) if as_of else dates.max()
    start = end - pd.Timedelta(days=int(current_days) - 1)
    current = features[(dates >= start) & (dates <= end)]
    if current.empty:
        raise MonitorError(f"no feature rows between {start.date()} and {end.date()}")

    run_id = reference
    if run_id is None:
        runs = champion_run_ids(paths, list(champions))
        run_id = next((runs[c] for c in components.names() if c in runs), None)
        if len(set(runs.values())) > 1:
            notes.append(f"champions come from different runs {runs}; reference taken from {run_id}")
    ref, source = resolve_reference(paths, features, run_id, start)
    if source == "artifact" or source.startswith("params"):
        # never compare a window with itself
        ref = ref[_as_dates(ref["date"]) < start] if "date" in ref.columns else ref
    if ref.empty:
        raise MonitorError(f"reference ({source}) has no rows before {start.date()}")
    if seasonal_reference and "date" in ref.columns:
        sub = seasonal(ref, start, end)
        if sub is not None:
            ref, source = sub, source + "+seasonal"

    feature_names: list[str] = []
    for champ in champions.values():
        feature_names += [f for f in champ.feature_names if f not in feature_names]
    num, cat = monitored_columns(ref, feature_names)
    if not num and not cat:
        raise MonitorError("no monitorable feature columns shared by the reference and the champions")

    ref_s, cur_s = _cap(ref, max_rows), _cap(current, max_rows)
    ref_x = pd.concat([_prepare(ref_s, num, cat), _risks(champions, ref_s.reindex(columns=feature_names))], axis=1)
    cur_x = pd.concat([_prepare(cur_s, num, cat), _risks(champions, cur_s.reindex(columns=feature_names))], axis=1)
    risk_cols = [f"risk_{c}" for c in champions]
    snap, col_scores, drifted, share, risk_scores = build_report(
        ref_x.reset_index(drop=True), cur_x.reset_index(drop=True), num, cat, risk_cols, drift_share)

    pred_drift = {c.removeprefix("risk_"): bool(v >= PREDICTION_THRESHOLD) for c, v in risk_scores.items()}
    severe = sorted(c for c, v in col_scores.items() if v >= SEVERE_COLUMN_THRESHOLD)
    data_drift = bool(share >= drift_share or severe)
    drift = data_drift or (prediction_gates and any(pred_drift.values()))

    stamp = pd.Timestamp.now(tz="UTC").strftime("%Y%m%dT%H%M%SZ")
    report_path = paths.reports / f"drift-{end.date()}-{stamp}.html"
    summary_path = report_path.with_suffix(".json")
    snap.save_html(str(report_path))
    result = MonitorResult(
        drift=drift, data_drift=data_drift, drift_share=float(share), drift_share_threshold=drift_share,
        n_columns=len(col_scores), drifted_columns=drifted, severe_columns=severe, column_scores=col_scores,
        prediction_drift=pred_drift, prediction_scores={c.removeprefix("risk_"): v for c, v in risk_scores.items()},
        reference_run=run_id, reference_source=source, reference_rows=len(ref), current_rows=len(current),
        current_start=str(start.date()), current_end=str(end.date()), report_path=str(report_path),
        summary_path=str(summary_path), prediction_gates=prediction_gates, notes=notes)
    if log_to_mlflow:
        result.mlflow_run_id = _log(paths, result, report_path)
    summary_path.write_text(json.dumps(result.to_dict(), indent=2, default=str))
    return result


def _log(paths: Paths, r: MonitorResult, report_path: Path) -> str:
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
                           "current_rows": r.current_rows, "n_columns": r.n_columns})
        metrics = {"drift": float(r.drift), "data_drift": float(r.data_drift), "drift_share": r.drift_share,
                   "n_drifted_columns": float(len(r.drifted_columns)), "n_severe_columns": float(len(r.severe_columns))}
        metrics.update({f"prediction_drift_{c}": v for c, v in r.prediction_scores.items() if np.isfinite(v)})
        metrics.update({f"col_drift.{c}": v for c, v in r.column_scores.items() if np.isfinite(v)})
        mlflow.log_metrics(metrics)
        summary = r.to_dict()
        summary["mlflow_run_id"] = run.info.run_id
        mlflow.log_dict(summary, "drift_summary.json")
        mlflow.log_artifact(str(report_path), artifact_path="reports")
        return run.info.run_id
