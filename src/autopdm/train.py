"""Train, calibrate, evaluate, register and gate one LightGBM model per component.

`train_all` is what `autopdm train`, `mlflow run . -e train`, the demo and the tests call:

1. features table (built from the stored tables when absent) → `split.time_vehicle_split`;
2. per component, in a nested MLflow run: LightGBM (binary, `scale_pos_weight` = neg/pos capped
   at 10 — not together with `is_unbalance`) with early stopping on the early-stop set; Platt
   calibration of the raw log-odds and the operating threshold for the alert budget
   (`evaluate.threshold_for_budget`) on the calibration + early-stop vehicles (validation period,
   never trained on: twice the events of the calibration set alone, a steadier threshold);
3. metrics on the held-out test set (early-warning recall, alert precision, alert rate, PR-AUC,
   Brier, lead times) and the workshop baseline at the same alert volume plus the literal rule;
   PNG plots; all logged;
4. `mlflow.lightgbm.log_model(..., registered_model_name="autopdm-<c>")`, with threshold and
   calibration as model-version tags and MLmodel metadata;
5. the gate: the current champion is scored on the same test rows with its own threshold; the
   alias `champion` moves to the candidate only when its early-warning recall and PR-AUC are both
   at least the champion's (minus `tolerance`, default 0). Decision and numbers are logged.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import baselines, store
from .champion import ALIAS, Champion, _client, get_champion, model_name
from .config import Paths, quiet_telemetry
from .evaluate import (DEFAULT_ALERT_BUDGET, DEFAULT_MIN_PRECISION, evaluate, plot_calibration, plot_importance,
                       plot_lead_times, plot_pr, score_metrics, threshold_for_budget, alert_metrics, operating_curve)
from .features import CATEGORICAL, COMPONENTS, feature_columns
from .split import time_vehicle_split

EXPERIMENT = "autopdm-train"
NUM_BOOST_ROUND = 2000
EARLY_STOPPING_ROUNDS = 50
MAX_SCALE_POS_WEIGHT = 10.0
BIN_SAMPLE_ROWS = 200_000           # LightGBM's bin_construct_sample_cnt: bin boundaries come from at most this many rows
BAGGING_BLOCK = 1024               # LightGBM draws bagging per block of this many rows (bagging_rand_block_)
MAX_TRAIN_NEGATIVES = 150_000       # negatives beyond this are subsampled (positives all kept); the
                                    # calibration set is not subsampled, so Platt scaling restores the prior
GATE_METRICS = ("ew_recall", "pr_auc")   # higher is better; the candidate must match or beat both
DEFAULT_PARAMS = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 100,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "metric": "average_precision",
    "verbose": -1,
    "deterministic": True,
    "force_col_wise": True,
}
PIP_REQUIREMENTS = ["lightgbm==4.7.*", "pandas<3", "numpy"]
LGB_ENGINES = ("pandas", "dask")


def _lgb_version_requirements() -> list[str]:
    import lightgbm

    return [f"lightgbm=={lightgbm.__version__}", "pandas<3", "numpy"]


def setup_mlflow(paths: Paths):
    """Tracking URI from `paths`; experiment `autopdm-train` with artifacts under var/mlartifacts.

    Inside `mlflow run` (MLFLOW_RUN_ID set) the run and its experiment already exist: leave them.
    """
    import mlflow

    quiet_telemetry()
    from .tracking import ensure_store

    ensure_store(paths)
    client = _client(paths)
    if not os.environ.get("MLFLOW_RUN_ID"):
        if client.get_experiment_by_name(EXPERIMENT) is None:
            paths.artifacts.mkdir(parents=True, exist_ok=True)
            client.create_experiment(EXPERIMENT, artifact_location=paths.artifacts.as_uri())
        mlflow.set_experiment(EXPERIMENT)
    return client


def load_or_build_features(paths: Paths, engine: str = "pandas") -> pd.DataFrame:
    f = paths.table("features")
    if f.exists():
        return store.read_table("features", paths)
    from .features import build_features

    trips = store.read_table("trips", paths)
    if trips.empty:
        raise FileNotFoundError(f"no features table ({f}) and no trips: run `autopdm simulate` (or ingest) and `autopdm features`")
    df = build_features(trips, store.read_table("vehicles", paths), store.read_table("service_events", paths),
                        store.read_dtc_events(paths), engine="pandas")
    store.write_table(df, "features", paths)
    return df


def gate_decision(candidate: dict, champion: dict | None, tolerance: float = 0.0) -> tuple[bool, str]:
    """Promote when there is no champion, or the candidate is at least as good on every gate metric."""
    if champion is None:
        return True, "no current champion"
    worse = []
    for m in GATE_METRICS:
        c, h = candidate.get(m, float("nan")), champion.get(m, float("nan"))
        if np.isnan(c) and not np.isnan(h):
            worse.append(f"{m}: candidate undefined, champion {h:.4f}")
        elif not np.isnan(c) and not np.isnan(h) and c < h - tolerance:
            worse.append(f"{m}: candidate {c:.4f} < champion {h:.4f}")
    if worse:
        return False, "rejected: " + "; ".join(worse)
    return True, "candidate at least as good as champion on " + ", ".join(
        f"{m} ({candidate.get(m, float('nan')):.4f} vs {champion.get(m, float('nan')):.4f})" for m in GATE_METRICS)


def _platt(margin: np.ndarray, y: np.ndarray, spw: float) -> dict:
    if len(y) == 0 or y.min() == y.max():
        # nothing to fit on: undo the class weighting's shift of the log-odds
        return {"method": "platt", "a": 1.0, "b": float(-np.log(spw)), "fitted": False}
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=1e4, max_iter=1000)
    lr.fit(margin.reshape(-1, 1), y)
    return {"method": "platt", "a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0]), "fitted": True}


def lgb_threads() -> int:
    """LightGBM threads: $AUTOPDM_LGB_THREADS, else all cores but one.

    OpenMP threads spin while they wait: on a busy 2-core machine, 2 threads measured 5-40x slower
    than 1 (26 s vs 0.6 s for 30 rounds on 57k rows), so one core is left for everything else.
    """
    env = os.environ.get("AUTOPDM_LGB_THREADS")
    if env:
        return max(1, int(env))
    return max(1, (os.cpu_count() or 2) - 1)


def _subsample_negatives(mask: np.ndarray, y: np.ndarray, seed: int, cap: int = MAX_TRAIN_NEGATIVES) -> np.ndarray:
    neg = np.flatnonzero(mask & (y == 0))
    if len(neg) <= cap:
        return mask
    rng = np.random.default_rng(seed)
    out = mask.copy()
    out[rng.choice(neg, len(neg) - cap, replace=False)] = False
    return out


def bin_sample(X, seed: int, max_rows: int = BIN_SAMPLE_ROWS) -> np.ndarray:
    """The rows LightGBM finds feature bin boundaries on, as float32: all of them up to `max_rows`, else a
    seeded sample. Both engines bin from these rows, so a model trained on a Dask cluster splits on the
    same thresholds as the single-machine one (see train_dask)."""
    if hasattr(X, "dask"):  # a Dask DataFrame: sample on the cluster, collect only the sample
        n = len(X)
        X = (X.sample(frac=max_rows / n, random_state=seed) if n > max_rows else X).compute()
    if len(X) > max_rows:
        X = X.iloc[np.sort(np.random.default_rng(seed).choice(len(X), max_rows, replace=False))]
    return X.to_numpy(np.float32)


def lgb_params(ytr, params: dict | None, seed: int) -> tuple[dict, float]:
    """LightGBM parameters of a fit on labels `ytr` → (params, scale_pos_weight). Shared by both engines."""
    ytr = np.asarray(ytr)
    pos = float(ytr.sum())
    neg = float(len(ytr) - pos)
    spw = float(min(neg / pos, MAX_SCALE_POS_WEIGHT)) if pos > 0 else 1.0
    # bagging_seed explicit: the Dask engine offsets it per worker to draw the same rows as one machine
    p = {**DEFAULT_PARAMS, "seed": seed, "bagging_seed": seed, "num_threads": lgb_threads(), "scale_pos_weight": spw}
    p.update(params or {})
    if p.get("is_unbalance"):
        p.pop("scale_pos_weight", None)
    return p, spw


def _fit_booster(Xtr, ytr, Xes, yes, params: dict, seed: int):
    import lightgbm as lgb

    p, spw = lgb_params(ytr, params, seed)
    rounds = int(p.pop("num_iterations", p.pop("num_boost_round", NUM_BOOST_ROUND)))
    es_rounds = int(p.pop("early_stopping_rounds", EARLY_STOPPING_ROUNDS))
    names = list(Xtr.columns)
    cats = [c for c in CATEGORICAL if c in names]
    reference = None  # up to BIN_SAMPLE_ROWS rows LightGBM bins on all of them itself
    if len(Xtr) > BIN_SAMPLE_ROWS:
        reference = lgb.Dataset(bin_sample(Xtr, seed), feature_name=names, categorical_feature=cats, params=dict(p))
    # numpy in, names alongside: the pandas path of lightgbm costs seconds per Dataset
    dtrain = lgb.Dataset(Xtr.to_numpy(np.float32), ytr, feature_name=names, categorical_feature=cats,
                         reference=reference, free_raw_data=True, params={"verbose": -1})
    valid_sets, callbacks, early = [], [], False
    if len(yes) and yes.min() != yes.max():
        valid_sets = [lgb.Dataset(Xes.to_numpy(np.float32), yes, reference=dtrain, feature_name=names,
                                  categorical_feature=cats, params={"verbose": -1})]
        callbacks = [lgb.early_stopping(es_rounds, verbose=False)]
        early = True
    else:
        rounds = min(rounds, 200)
    booster = lgb.train(p, dtrain, num_boost_round=rounds, valid_sets=valid_sets, callbacks=callbacks)
    best = booster.best_iteration if early and booster.best_iteration > 0 else booster.current_iteration()
    booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))  # what gets logged is what we evaluate
    p.update({"num_boost_round": rounds, "best_iteration": best, "early_stopping": early,
              "early_stopping_rounds": es_rounds if early else 0})
    return booster, p, spw


def _log_fig(fig, path: str) -> None:
    import matplotlib.pyplot as plt
    import mlflow

    mlflow.log_figure(fig, path)
    plt.close(fig)


def _prefixed(d: dict, prefix: str) -> dict:
    return {f"{prefix}{k}": float(v) for k, v in d.items()
            if not k.startswith("_") and isinstance(v, (int, float, np.integer, np.floating)) and np.isfinite(v)}


def set_operating_point(cand: Champion, df: pd.DataFrame, split, spw: float, budget: float = DEFAULT_ALERT_BUDGET,
                        min_precision: float = DEFAULT_MIN_PRECISION):
    """Platt calibration and the alert threshold of `cand`, fitted in place → (rows, their risk, threshold info).

    Fitted on every row the trees never saw before the test period: the calibration vehicles plus the
    early-stopping vehicles (same period; the latter only chose the number of boosting rounds). At the
    sizes we run, the precision-at-volume curve on the calibration vehicles alone was noisy enough to
    move the threshold by a third of the alert volume."""
    cal = split.calib | split.early_stop
    rows = df.loc[cal]
    y = rows[f"label_{cand.component}"].to_numpy(dtype=np.int8)
    cand.calibration = _platt(cand.margin(rows[cand.feature_names]), y, spw)
    risk = cand.predict(rows)
    cand.threshold, info = threshold_for_budget(rows, risk, cand.component, budget, min_precision)
    return rows, risk, info


def train_component(component: str, df: pd.DataFrame, split, feats: list[str], *, client, paths: Paths,
                    seed: int = 0, params: dict | None = None, budget: float = DEFAULT_ALERT_BUDGET,
                    min_precision: float = DEFAULT_MIN_PRECISION, tolerance: float = 0.0, promote: bool = True,
                    fit=None, engine: str = "pandas") -> dict:
    """One component inside the active (nested) MLflow run. Returns a summary dict.

    fit: the booster fit (default `_fit_booster`; the Dask engine passes its own, same contract)."""
    import mlflow
    from mlflow.models import infer_signature

    t0 = time.perf_counter()
    label = f"label_{component}"
    y = df[label].to_numpy(dtype=np.int8)
    X = df[feats]
    tr, es, cal, te = split.train, split.early_stop, split.calib, split.test
    tr = _subsample_negatives(tr, y, seed)
    booster, fit_params, spw = (fit or _fit_booster)(X[tr], y[tr], X[es], y[es], params, seed)
    name = model_name(component)
    cand = Champion(component, name, "", list(feats), 0.5, booster=booster)
    cal = cal | es
    cal_rows, cal_risk, thr_info = set_operating_point(cand, df, split, spw, budget, min_precision)
    thr = cand.threshold

    test = df.loc[te]
    risk = cand.predict(test)
    m = evaluate(test, risk, thr, component)
    cal_m = score_metrics(y[cal], cal_risk)

    # baselines at the same alert volume, and the literal rule at its own volume
    bscore = baselines.score(test, component)
    b_alert = baselines.at_volume(bscore, m["n_alerts"])
    bm = alert_metrics(test, b_alert, component)
    bm.update({k: v for k, v in score_metrics(test[label].to_numpy(), bscore).items() if k in ("pr_auc", "roc_auc")})
    rm = alert_metrics(test, baselines.rule(test, component), component)
    curve = operating_curve(test, risk, bscore, component)
    ratio = m["ew_recall"] / bm["ew_recall"] if bm["ew_recall"] and np.isfinite(bm["ew_recall"]) and bm["ew_recall"] > 0 else float("nan")

    # gate: the current champion on the same held-out rows
    current = get_champion(client, component)
    champ_m = None
    if current is not None:
        try:
            champ_m = evaluate(test, current.predict(test), current.threshold, component)
        except Exception as exc:  # incompatible champion: say so, do not promote silently
            champ_m = {"ew_recall": float("inf"), "pr_auc": float("inf"), "error": str(exc)}
    ok, reason = gate_decision(m, champ_m, tolerance)
    ok = ok and promote

    # ---- log
    split_params = split.params()
    mlflow.log_params({"component": component, "engine": engine, "seed": seed, "n_features": len(feats),
                       "alert_budget": budget, "min_precision": min_precision, "threshold": round(thr, 6),
                       "calibration": json.dumps(cand.calibration), "scale_pos_weight": round(spw, 4),
                       "n_rows_train_used": int(tr.sum()), "train_positives": int(y[tr].sum()),
                       **{f"lgb.{k}": v for k, v in fit_params.items() if k not in ("scale_pos_weight",)},
                       **split_params})
    mlflow.log_metrics({**_prefixed(m, "test_"), **_prefixed(cal_m, "calib_"),
                        **_prefixed({k: v for k, v in thr_info.items() if k != "precision_floor_met"}, "calib_"),
                        "calib_precision_floor_met": float(thr_info["precision_floor_met"]),
                        **_prefixed(bm, "baseline_"), **_prefixed(rm, "baseline_rule_"),
                        "ew_recall_vs_baseline": ratio if np.isfinite(ratio) else -1.0,
                        "threshold": thr, "best_iteration": fit_params["best_iteration"],
                        **{f"curve_x{c['x_prevalence']:g}_{k}": float(v) for c in curve for k, v in c.items()
                           if k in ("ew_recall", "precision", "baseline_ew_recall", "baseline_precision") and np.isfinite(v)},
                        "gate_promoted": float(ok),
                        **({f"gate_champion_{k}": float(v) for k, v in champ_m.items()
                            if k in ("ew_recall", "pr_auc", "precision", "brier") and np.isfinite(v)} if champ_m else {})})
    mlflow.set_tags({"component": component, "gate_decision": reason, "baseline": baselines.DESCRIPTION[component],
                     "gate_champion_version": current.version if current else "none"})

    title = f"{component} (test)"
    yt = test[label].to_numpy()
    _log_fig(plot_calibration(yt, risk, f"calibration — {title}"), "plots/calibration.png")
    _log_fig(plot_pr(yt, risk, f"precision-recall — {title}",
                     {"operating threshold (row level)": (float(yt[risk >= thr].sum() / max(yt.sum(), 1)), m["precision"]),
                      "baseline, same volume": (float(yt[b_alert].sum() / max(yt.sum(), 1)), bm["precision"])}),
             "plots/pr_curve.png")
    gain = booster.feature_importance("gain")
    _log_fig(plot_importance(feats, gain, f"feature importance — {component}"), "plots/feature_importance.png")
    _log_fig(plot_lead_times({"model": m["_lead_days"], "baseline (same volume)": bm["_lead_days"]},
                             f"lead time before need — {title}"), "plots/lead_time_hist.png")
    lead_hist = {str(k): int(v) for k, v in zip(*np.unique(m["_lead_days"], return_counts=True))}
    summary = {
        "component": component, "threshold": thr, "threshold_selection": thr_info, "calibration": cand.calibration,
        "test": {k: v for k, v in m.items() if not k.startswith("_")},
        "baseline_same_volume": {k: v for k, v in bm.items() if not k.startswith("_")},
        "baseline_rule": {k: v for k, v in rm.items() if not k.startswith("_")},
        "operating_curve": curve, "lead_time_histogram": lead_hist, "gate": {"promoted": ok, "reason": reason, "champion": champ_m and
                                                    {k: v for k, v in champ_m.items() if not k.startswith("_")}},
        "split": split_params,
    }
    mlflow.log_dict(json.loads(json.dumps(summary, default=float)), "summary.json")
    mlflow.log_dict({"feature": list(feats), "gain": [float(g) for g in gain],
                     "split": [int(s) for s in booster.feature_importance("split")]}, "feature_importance.json")
    _log_reference(df.loc[tr], feats)

    # ---- register
    ex = test[feats].head(5) if len(test) else X[tr].head(5)
    ex = ex.astype("float64")
    sig = infer_signature(ex, cand.predict(ex))
    meta = {"component": component, "threshold": thr, "calibration": cand.calibration, "alert_budget": budget,
            "min_precision": min_precision, "horizon_days": 15}
    info = mlflow.lightgbm.log_model(booster, name="model", signature=sig, input_example=ex,
                                     registered_model_name=name, pip_requirements=_lgb_version_requirements(),
                                     metadata=meta)
    version = str(info.registered_model_version)
    vtags = {"component": component, "threshold": repr(thr), "calibration": json.dumps(cand.calibration),
             "alert_budget": str(budget), "min_precision": str(min_precision), "gate_decision": reason,
             "feature_names": json.dumps(list(feats)), "train_start": split_params["train_start"],
             "train_end": split_params["train_end"],
             **{f"metric.{k}": repr(float(v)) for k, v in m.items()
                if k in ("ew_recall", "precision", "alert_rate", "pr_auc", "brier", "roc_auc") and np.isfinite(v)}}
    for k, v in vtags.items():
        client.set_model_version_tag(name, version, k, v)
    if ok:
        client.set_registered_model_alias(name, ALIAS, version)
    mlflow.set_tag("registered_version", version)
    mlflow.log_metric("train_seconds", time.perf_counter() - t0)
    return {"component": component, "name": name, "version": version, "promoted": ok, "reason": reason,
            "threshold": thr, "run_id": mlflow.active_run().info.run_id, "metrics": summary["test"],
            "baseline": summary["baseline_same_volume"], "baseline_rule": summary["baseline_rule"],
            "champion_metrics": summary["gate"]["champion"], "ew_recall_vs_baseline": ratio,
            "best_iteration": fit_params["best_iteration"], "operating_curve": curve,
            "seconds": time.perf_counter() - t0}


def _log_reference(train_rows: pd.DataFrame, feats: list[str]) -> None:
    """Training sample for drift monitoring (autopdm.monitor), when that module is present."""
    try:
        from .monitor import log_reference
    except ImportError:
        return
    log_reference(train_rows, feats)


def train_all(paths: Paths | None = None, components=COMPONENTS, engine: str = "pandas", seed: int = 0, *,
              params: dict | None = None, features: pd.DataFrame | None = None, budget: float = DEFAULT_ALERT_BUDGET,
              min_precision: float = DEFAULT_MIN_PRECISION, tolerance: float = 0.0, promote: bool = True,
              _client=None) -> dict:
    """Train, log, register and gate the given components. Returns {component: summary}.

    params: LightGBM parameter overrides (e.g. {"num_iterations": 1}). features: a features frame
    instead of the stored table. promote=False registers without moving the alias.
    """
    import mlflow

    if engine not in LGB_ENGINES:
        raise ValueError(f"unknown engine {engine!r}; expected one of {LGB_ENGINES}")
    if engine == "dask":
        # The Dask engine replaces only the booster fit (autopdm.train_dask.fit_booster_dask, same
        # contract as _fit_booster); calibration, thresholds, evaluation, logging and the gate are shared.
        try:
            from . import features_dask, train_dask
        except ImportError:
            raise NotImplementedError("training with --engine dask needs autopdm.train_dask; use --engine pandas") from None
        _client = _client or features_dask.current_client()
        if _client is None:  # no cluster given: a temporary LocalCluster for this call
            with features_dask.local_client() as c:
                return train_all(paths, components, "dask", seed, params=params, features=features, budget=budget,
                                 min_precision=min_precision, tolerance=tolerance, promote=promote, _client=c)
    components = [components] if isinstance(components, str) else list(components)
    bad = [c for c in components if c not in COMPONENTS]
    if bad:
        raise ValueError(f"unknown component(s) {bad}; expected some of {COMPONENTS}")
    paths = (paths or Paths.from_env()).ensure()
    df = features if features is not None else load_or_build_features(paths, engine)
    if df.empty:
        raise ValueError("the features table is empty")
    split = time_vehicle_split(df, seed=seed)
    for k, msk in split.masks().items():
        if not msk.any():
            raise ValueError(f"the {k} set is empty: the fleet is too small or the history too short for the split")
    feats = feature_columns(df)
    client = setup_mlflow(paths)
    results = {}
    with mlflow.start_run(run_name="train") as parent:
        art = parent.info.artifact_uri or ""
        if not art.startswith(paths.artifacts.as_uri()):
            import warnings

            warnings.warn(f"artifacts of this run go to {art}, not {paths.artifacts}: the experiment was created "
                          f"elsewhere (e.g. by `mlflow run`). Create it once with `mlflow experiments create -n "
                          f"{EXPERIMENT} -l {paths.artifacts.as_uri()}` or run `autopdm train` first.", stacklevel=2)
        mlflow.log_params({"components": ",".join(components), "engine": engine, "seed": seed,
                           "n_rows": len(df), "n_vehicles": int(df["vehicle_id"].nunique()), **split.params()})
        for comp in components:
            with mlflow.start_run(run_name=comp, nested=True):
                fit = None
                if engine == "dask":
                    from .train_dask import fit_booster_dask

                    def fit(Xtr, ytr, Xes, yes, params, seed, _c=comp):
                        return fit_booster_dask(Xtr, ytr, Xes, yes, params, seed, client=_client, paths=paths, component=_c)
                results[comp] = train_component(comp, df, split, feats, client=client, paths=paths, seed=seed,
                                                params=params, budget=budget, min_precision=min_precision,
                                                tolerance=tolerance, promote=promote, fit=fit, engine=engine)
            mlflow.log_metrics({f"{comp}_{k}": float(v) for k, v in results[comp]["metrics"].items()
                                if isinstance(v, (int, float)) and np.isfinite(v)})
            mlflow.log_metric(f"{comp}_promoted", float(results[comp]["promoted"]))
        results["_run_id"] = parent.info.run_id
    return results
