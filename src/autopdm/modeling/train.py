"""Train, calibrate, evaluate, register and gate one LightGBM model per component.

`train_all` is what `autopdm train`, `mlflow run . -e train`, the demo and the tests call:

1. features table (built from the stored tables when absent) → `split.time_vehicle_split`;
2. per component, in a nested MLflow run (`train_component`):
   `fit_candidate` — LightGBM (binary, `scale_pos_weight` = neg/pos capped at 10) with early
   stopping on the early-stop set (`fit`; the Dask engine brings its own fit, same contract);
   `operating_point.set_operating_point` — Platt calibration of the raw log-odds and the alert
   threshold from the cost model within the alert budget, on the calibration + early-stop vehicles
   (validation period, never trained on);
   `assess_candidate` — on the held-out test set, against each set of needs (`evaluation`: the
   simulator's true needs when the home has them — the headline — and the observed needs the
   labels were built from): early-warning recall, alert precision, alert rate, PR-AUC, Brier, lead
   times, work-order yield, the workshop baseline at the same alert volume plus the literal rule,
   the careful advisor's measured-wear rule and (simulated fleets: `truth`) the physical ceiling;
   `gate` — the current champion scored on the same test rows against the same needs with its own
   threshold: the alias `champion` moves to the candidate only when its early-warning recall and
   PR-AUC are both at least the champion's (minus `tolerance`, default 0);
   `log_run` and `register` — params, metrics, plots and the summary to MLflow; the model to the
   registry as `autopdm-<c>`: a pyfunc model (`pyfunc_model.py`) with the booster and its operating
   point as artifacts, so that `mlflow.pyfunc.load_model` gives the calibrated risk.
"""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from autopdm import components as registry
from autopdm import store
from autopdm.config import Paths, Settings
from autopdm.modeling import baselines, evaluation, plots, pyfunc_model, train_dask, truth
from autopdm.modeling.champion import Champion, get_champion
from autopdm.modeling.evaluation import public
from autopdm.modeling.fit import fit_booster, pip_requirements, subsample_negatives
from autopdm.modeling.lock import holding_modeling_lock
from autopdm.modeling.metrics import evaluate, operating_curve, score_metrics
from autopdm.modeling.operating_point import costs, set_operating_point
from autopdm.modeling.split import time_vehicle_split
from autopdm.modeling.tracking import EXPERIMENT, setup_mlflow
from autopdm.monitor import log_reference
from autopdm.pipeline import features_chunked, features_dask
from autopdm.pipeline.features import feature_columns

GATE_METRICS = ("ew_recall", "pr_auc")   # higher is better; the candidate must match or beat both
LGB_ENGINES = ("pandas", "dask")


def load_or_build_features(paths: Paths) -> pd.DataFrame:
    """The stored features table; built (and stored, with its needs) first when there is none."""
    if not paths.table("features").exists():
        features_chunked.build_chunked(paths)  # a block of vehicles at a time, then read once
    return store.read_table("features", paths)


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


def _prefixed(d: dict, prefix: str) -> dict:
    return {f"{prefix}{k}": float(v) for k, v in d.items()
            if not k.startswith("_") and isinstance(v, (int, float, np.integer, np.floating)) and np.isfinite(v)}


@dataclass
class Candidate:
    """A freshly fitted model before registration, with what was learned while fitting it."""
    model: Champion
    fit_params: dict
    scale_pos_weight: float
    train_rows: np.ndarray          # mask of the rows the trees were fitted on
    threshold_info: dict            # how the operating point was chosen (`operating_point.choose_threshold`)
    calib_metrics: dict             # ranking metrics on the rows calibration and threshold were fitted on


@dataclass
class Assessment:
    """A candidate on the held-out test rows against each set of needs, beside the workshop's rule."""
    test: pd.DataFrame
    risk: np.ndarray
    needs: dict                     # need set name → its needs (`evaluation.need_sets`), headline first
    blocks: dict                    # need set name → `evaluation.assess_alerts(...)`
    curve: list[dict]               # operating curve against the headline needs

    @property
    def headline(self) -> str:
        return evaluation.headline(self.blocks)

    @property
    def metrics(self) -> dict:      # the model at its operating threshold, headline needs
        return self.blocks[self.headline]["model"]

    @property
    def baseline(self) -> dict:     # the rule's score at the model's alert volume, headline needs
        return self.blocks[self.headline]["baseline_same_volume"]

    @property
    def rule(self) -> dict:         # the literal rule at its own volume, headline needs
        return self.blocks[self.headline]["baseline_rule"]

    @property
    def quality(self) -> dict:      # model vs fixed-interval rule vs careful advisor vs ceiling, and the yields
        return evaluation.quality(self.blocks)

    @property
    def ratio(self) -> float:       # early-warning recall over the baseline's at the same volume
        b = self.baseline["ew_recall"]
        return self.metrics["ew_recall"] / b if b and np.isfinite(b) and b > 0 else float("nan")


def fit_candidate(component: str, df: pd.DataFrame, split, feats: list[str], *, seed: int, params: dict | None,
                  cost_model: dict | None = None, fit=None) -> Candidate:
    y = df[registry.get(component).label].to_numpy(dtype=np.int8)
    X = df[feats]
    tr = subsample_negatives(split.train, y, seed)
    booster, fit_params, spw = (fit or fit_booster)(X[tr], y[tr], X[split.early_stop], y[split.early_stop], params, seed)
    model = Champion(component, registry.get(component).model_name, "", list(feats), 0.5, booster=booster)
    cal_rows, cal_risk, thr_info = set_operating_point(model, df, split, spw, cost_model)
    cal_m = score_metrics(cal_rows[registry.get(component).label].to_numpy(), cal_risk)
    return Candidate(model, fit_params, spw, tr, thr_info, cal_m)


def assess_candidate(cand: Candidate, df: pd.DataFrame, split, true_needs: pd.DataFrame | None = None,
                     true_state: "truth.TrueState | None" = None) -> Assessment:
    """The candidate on the test rows against the true needs (when given: the headline) and the observed ones;
    with the true state (simulated fleets), the physical ceiling and the advise-line yield too."""
    component = cand.model.component
    test = df.loc[split.test]
    risk = cand.model.predict(test)
    sets = evaluation.need_sets(test, component, true_needs)
    blocks = evaluation.assess_all(test, risk, cand.model.threshold, component, sets, true_state)
    curve = operating_curve(test, risk, baselines.score(test, component), component, sets[evaluation.headline(sets)])
    return Assessment(test, risk, sets, blocks, curve)


def gate(client, component: str, a: Assessment, tolerance: float, promote: bool):
    """(promote?, reason, current champion or None, its metrics on the same rows and needs or None)."""
    current = get_champion(client, component)
    champ_m = None
    if current is not None:
        try:
            champ_m = evaluate(a.test, current.predict(a.test), current.threshold, component, a.needs[a.headline])
        except Exception as exc:  # incompatible champion: say so, do not promote silently
            champ_m = {"ew_recall": float("inf"), "pr_auc": float("inf"), "error": str(exc)}
    ok, reason = gate_decision(a.metrics, champ_m, tolerance)
    return ok and promote, reason, current, champ_m


def _log_fig(fig, path: str) -> None:
    import matplotlib.pyplot as plt
    import mlflow

    mlflow.log_figure(fig, path)
    plt.close(fig)


def log_plots(cand: Candidate, a: Assessment) -> None:
    import mlflow

    component, thr = cand.model.component, cand.model.threshold
    title = f"{component} (test, {a.headline.replace('_', ' ')})"
    yt = a.metrics["_y"]
    risk, m, bm = a.risk, a.metrics, a.baseline
    b_alerts = a.blocks[a.headline]["_baseline_alerts"]
    _log_fig(plots.plot_calibration(yt, risk, f"calibration — {title}"), "plots/calibration.png")
    _log_fig(plots.plot_pr(yt, risk, f"precision-recall — {title}",
                           {"operating threshold (row level)": (float(yt[risk >= thr].sum() / max(yt.sum(), 1)), m["precision"]),
                            "baseline, same volume": (float(yt[b_alerts].sum() / max(yt.sum(), 1)), bm["precision"])}),
             "plots/pr_curve.png")
    booster = cand.model.booster
    gain = booster.feature_importance("gain")
    _log_fig(plots.plot_importance(cand.model.feature_names, gain, f"feature importance — {component}"),
             "plots/feature_importance.png")
    _log_fig(plots.plot_lead_times({"model": m["_lead_days"], "baseline (same volume)": bm["_lead_days"]},
                                   f"lead time before need — {title}"), "plots/lead_time_hist.png")
    mlflow.log_dict({"feature": list(cand.model.feature_names), "gain": [float(g) for g in gain],
                     "split": [int(s) for s in booster.feature_importance("split")]}, "feature_importance.json")


def _run_metrics(cand: Candidate, a: Assessment) -> dict:
    """MLflow metrics of one component's run: `test_*`, `baseline_*` on the headline needs (what the gate
    compares), `<need set>/...` for every set of needs, `calib_*` for how the operating point was chosen."""
    m, bm, rm, info = a.metrics, a.baseline, a.rule, cand.threshold_info
    out = {**_prefixed(m, "test_"), **_prefixed(cand.calib_metrics, "calib_"), **_prefixed(info, "calib_"),
           **_prefixed(bm, "baseline_"), **_prefixed(rm, "baseline_rule_"),
           "ew_recall_vs_baseline": a.ratio if np.isfinite(a.ratio) else -1.0,
           "threshold": cand.model.threshold, "best_iteration": cand.fit_params["best_iteration"],
           **{f"curve_x{c['x_prevalence']:g}_{k}": float(v) for c in a.curve for k, v in c.items()
              if k in ("ew_recall", "precision", "baseline_ew_recall", "baseline_precision") and np.isfinite(v)}}
    for name, b in a.blocks.items():
        out.update({**_prefixed(b["model"], f"{name}/"), **_prefixed(b["baseline_same_volume"], f"{name}/baseline_"),
                    **_prefixed(b["baseline_rule"], f"{name}/baseline_rule_")})
        for who in ("advisor_same_volume", "ceiling_same_volume"):
            if who in b:
                out.update(_prefixed(b[who], f"{name}/{who.removesuffix('_same_volume')}_"))
    for who, d in a.quality.items():     # the headline: quality/<who>_<metric>, headline needs
        if isinstance(d, dict):
            out.update(_prefixed(d, f"quality/{who}_"))
    return out


def log_run(cand: Candidate, a: Assessment, split, y: np.ndarray, *, engine: str, seed: int, decision: tuple) -> dict:
    """Params, metrics, plots and the summary of one component's run; returns the summary."""
    import mlflow

    ok, reason, current, champ_m = decision
    component, thr, tr, info = cand.model.component, cand.model.threshold, cand.train_rows, cand.threshold_info
    split_params = split.params()
    mlflow.log_params({"component": component, "engine": engine, "seed": seed, "n_features": len(cand.model.feature_names),
                       "alert_budget": info["alert_budget"], "cost_missed_need": info["cost_missed_need"],
                       "cost_alert": info["cost_alert"], "threshold": round(thr, 6), "threshold_rule": info["rule"],
                       "calibration": json.dumps(cand.model.calibration), "scale_pos_weight": round(cand.scale_pos_weight, 4),
                       "n_rows_train_used": int(tr.sum()), "train_positives": int(y[tr].sum()), "headline_needs": a.headline,
                       **{f"lgb.{k}": v for k, v in cand.fit_params.items() if k not in ("scale_pos_weight",)},
                       **split_params})
    mlflow.log_metrics({**_run_metrics(cand, a), "gate_promoted": float(ok),
                        **({f"gate_champion_{k}": float(v) for k, v in champ_m.items()
                            if k in ("ew_recall", "pr_auc", "precision", "brier") and np.isfinite(v)} if champ_m else {})})
    mlflow.set_tags({"component": component, "gate_decision": reason, "baseline": baselines.description(component),
                     "gate_champion_version": current.version if current else "none"})
    log_plots(cand, a)
    summary = {
        "component": component, "threshold": thr, "threshold_selection": info, "calibration": cand.model.calibration,
        "headline_needs": a.headline, "quality": a.quality, "test": public(a.metrics), "baseline_same_volume": public(a.baseline),
        "baseline_rule": public(a.rule), "operating_curve": a.curve,
        "lead_time_histogram": a.blocks[a.headline]["lead_time_histogram"],
        "against": {name: public(b) for name, b in a.blocks.items()},
        "gate": {"promoted": ok, "reason": reason, "champion": champ_m and public(champ_m)},
        "split": split_params,
    }
    mlflow.log_dict(json.loads(json.dumps(summary, default=float)), "summary.json")
    return summary


def operating_point_doc(model: Champion, info: dict) -> dict:
    """What `operating_point.json` in the registered model holds (read by the pyfunc model and the service)."""
    return {"component": model.component, "threshold": model.threshold, "calibration": model.calibration,
            "feature_names": list(model.feature_names), "horizon_days": 15,
            **{k: info[k] for k in ("rule", "cost_missed_need", "cost_alert", "alert_budget", "break_even_risk")}}


def log_pyfunc(cand: Candidate, example: pd.DataFrame):
    """The candidate as an MLflow pyfunc model (code `pyfunc_model.py`, artifacts booster + operating point),
    registered under the component's model name → the ModelInfo."""
    import mlflow
    from mlflow.models import infer_signature

    model = cand.model
    op = operating_point_doc(model, cand.threshold_info)
    with tempfile.TemporaryDirectory(prefix="autopdm-model-") as tmp:
        files = {name: Path(tmp) / fname for name, fname in pyfunc_model.ARTIFACTS.items()}
        model.booster.save_model(str(files["booster"]))
        files["operating_point"].write_text(json.dumps(op, indent=2))
        return mlflow.pyfunc.log_model(
            name="model", python_model=pyfunc_model.__file__, artifacts={k: str(f) for k, f in files.items()},
            signature=infer_signature(example, model.predict(example)), input_example=example,
            registered_model_name=model.name, pip_requirements=pip_requirements(),
            metadata={k: op[k] for k in ("component", "threshold", "calibration", "cost_missed_need", "cost_alert",
                                         "alert_budget", "horizon_days")})


def register(client, cand: Candidate, a: Assessment, split, *, promote: bool, reason: str) -> str:
    """Log the model as a registered version with its operating point; move the alias when promoted."""
    import mlflow

    model, m, info = cand.model, a.metrics, cand.threshold_info
    feats = model.feature_names
    example = (a.test[feats].head(5) if len(a.test) else a.test[feats]).astype("float64")
    version = str(log_pyfunc(cand, example).registered_model_version)
    split_params = split.params()
    vtags = {"component": model.component, "threshold": repr(model.threshold), "calibration": json.dumps(model.calibration),
             "threshold_rule": info["rule"], "alert_budget": str(info["alert_budget"]),
             "cost_missed_need": str(info["cost_missed_need"]), "cost_alert": str(info["cost_alert"]),
             "gate_decision": reason, "headline_needs": a.headline,
             "feature_names": json.dumps(list(feats)), "train_start": split_params["train_start"],
             "train_end": split_params["train_end"],
             **{f"metric.{k}": repr(float(v)) for k, v in m.items()
                if k in ("ew_recall", "precision", "alert_rate", "pr_auc", "brier", "roc_auc") and np.isfinite(v)}}
    for k, v in vtags.items():
        client.set_model_version_tag(model.name, version, k, v)
    if promote:
        client.set_registered_model_alias(model.name, registry.CHAMPION_ALIAS, version)
    mlflow.set_tag("registered_version", version)
    return version


def train_component(component: str, df: pd.DataFrame, split, feats: list[str], *, client, paths: Paths,
                    seed: int = 0, params: dict | None = None, cost_model: dict | None = None,
                    tolerance: float = 0.0, promote: bool = True, fit=None, engine: str = "pandas") -> dict:
    """One component inside the active (nested) MLflow run. Returns a summary dict.

    cost_model: `operating_point.costs(...)` (default: the settings). fit: the booster fit (default
    `fit.fit_booster`; the Dask engine passes its own, same contract)."""
    import mlflow

    t0 = time.perf_counter()
    cand = fit_candidate(component, df, split, feats, seed=seed, params=params, cost_model=cost_model, fit=fit)
    a = assess_candidate(cand, df, split, evaluation.read_true_needs(paths), truth.read_true_state(paths, component))
    decision = gate(client, component, a, tolerance, promote)
    ok, reason = decision[0], decision[1]
    y = df[registry.get(component).label].to_numpy(dtype=np.int8)
    summary = log_run(cand, a, split, y, engine=engine, seed=seed, decision=decision)
    log_reference(df, feats, train_rows=cand.train_rows)
    version = register(client, cand, a, split, promote=ok, reason=reason)
    mlflow.log_metric("train_seconds", time.perf_counter() - t0)
    return {"component": component, "name": cand.model.name, "version": version, "promoted": ok, "reason": reason,
            "threshold": cand.model.threshold, "threshold_selection": cand.threshold_info,
            "run_id": mlflow.active_run().info.run_id, "headline_needs": a.headline, "quality": a.quality,
            "metrics": summary["test"],
            "baseline": summary["baseline_same_volume"], "baseline_rule": summary["baseline_rule"],
            "against": summary["against"], "champion_metrics": summary["gate"]["champion"],
            "ew_recall_vs_baseline": a.ratio, "best_iteration": cand.fit_params["best_iteration"],
            "operating_curve": a.curve, "seconds": time.perf_counter() - t0}


def _prepare(paths: Paths | None, components, features: pd.DataFrame | None, seed: int):
    names = registry.check([components] if isinstance(components, str) else list(components or registry.names()))
    paths = (paths or Paths.from_env()).ensure()
    df = features if features is not None else load_or_build_features(paths)
    if df.empty:
        raise ValueError("the features table is empty")
    split = time_vehicle_split(df, seed=seed)
    for k, msk in split.masks().items():
        if not msk.any():
            raise ValueError(f"the {k} set is empty: the fleet is too small or the history too short for the split")
    return names, paths, df, split


@holding_modeling_lock("training")
def train_all(paths: Paths | None = None, components=None, engine: str = "pandas", seed: int = 0, *,
              params: dict | None = None, features: pd.DataFrame | None = None, budget: float | None = None,
              cost_missed_need: float | None = None, cost_alert: float | None = None, tolerance: float = 0.0,
              promote: bool = True, _client=None) -> dict:
    """Train, log, register and gate the given components (default: all registered). Returns {component: summary}.

    params: LightGBM parameter overrides (e.g. {"num_iterations": 1}). features: a features frame
    instead of the stored table. budget, cost_missed_need, cost_alert: the operating point's cost model
    (default: the settings; see `operating_point`). promote=False registers without moving the alias. The Dask engine
    replaces only the booster fit (`train_dask.fit_booster_dask`); everything else is shared.
    """
    import mlflow

    if engine not in LGB_ENGINES:
        raise ValueError(f"unknown engine {engine!r}; expected one of {LGB_ENGINES}")
    if engine == "dask":
        _client = _client or features_dask.current_client()
        if _client is None:  # no cluster given: a temporary LocalCluster for this call
            with features_dask.local_client() as c:
                return train_all(paths, components, "dask", seed, params=params, features=features, budget=budget,
                                 cost_missed_need=cost_missed_need, cost_alert=cost_alert, tolerance=tolerance,
                                 promote=promote, _client=c)
    if Settings().lgb_max_rounds:
        params = {"num_iterations": Settings().lgb_max_rounds, **(params or {})}
    names, paths, df, split = _prepare(paths, components, features, seed)
    cost_model = costs(cost_missed_need, cost_alert, budget)
    feats = feature_columns(df)
    client = setup_mlflow(paths)
    results = {}
    with mlflow.start_run(run_name="train") as parent:
        art = parent.info.artifact_uri or ""
        if not art.startswith(paths.artifacts.as_uri()):
            warnings.warn(f"artifacts of this run go to {art}, not {paths.artifacts}: the experiment was created "
                          f"elsewhere (e.g. by `mlflow run`). Create it once with `mlflow experiments create -n "
                          f"{EXPERIMENT} -l {paths.artifacts.as_uri()}` or run `autopdm train` first.", stacklevel=2)
        mlflow.log_params({"components": ",".join(names), "engine": engine, "seed": seed,
                           "n_rows": len(df), "n_vehicles": int(df["vehicle_id"].nunique()), **split.params()})
        for comp in names:
            with mlflow.start_run(run_name=comp, nested=True):
                fit = None
                if engine == "dask":
                    def fit(Xtr, ytr, Xes, yes, params, seed, _c=comp):
                        return train_dask.fit_booster_dask(Xtr, ytr, Xes, yes, params, seed, client=_client,
                                                           paths=paths, component=_c)
                results[comp] = train_component(comp, df, split, feats, client=client, paths=paths, seed=seed,
                                                params=params, cost_model=cost_model, tolerance=tolerance,
                                                promote=promote, fit=fit, engine=engine)
            mlflow.log_metrics({f"{comp}_{k}": float(v) for k, v in results[comp]["metrics"].items()
                                if isinstance(v, (int, float)) and np.isfinite(v)})
            mlflow.log_metric(f"{comp}_promoted", float(results[comp]["promoted"]))
        results["_run_id"] = parent.info.run_id
    return results
