"""Metrics on held-out rows: early-warning recall, alert precision, PR-AUC, Brier, lead times; plots.

Definitions (DESIGN.md "Models"):

* need event — a replace/repair service event of the component, recovered from the rows as
  `date + days_to_need` where the label is 1. It is *evaluable* when its whole early-warning
  window (7..15 days before) lies inside the evaluated dates.
* alert — a row (vehicle-day) whose calibrated risk is at or above the operating threshold.
* early-warning recall — share of evaluable need events with at least one alert 7–15 days
  before the need date.
* alert precision — share of alert rows followed by a need event within 15 days (label = 1).
* alert rate — alert rows per vehicle-day (the volume a workshop has to absorb).
* lead time — for each evaluable event, the largest number of days before the need at which an
  alert fired, within 30 days (0 = never alerted).

`threshold_for_budget` picks the operating threshold on the calibration set: the lowest
threshold whose alert rate stays within the alert budget and whose alert precision reaches the
precision floor (lowest → the highest recall those two constraints allow). The budget is
relative: `budget` alerts per need-day, i.e. alert rate <= budget × label prevalence (1.5 by
default: a vehicle is alerted on about the 15 days before its need, plus half as many again for
false alarms). The precision floor (0.5) bounds the volume too (<= 2 × prevalence).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .features import EARLY_WARNING, HORIZON_DAYS

LEAD_MAX_DAYS = 30
DEFAULT_ALERT_BUDGET = 1.5       # alerts per need-day: alert rate <= 1.5 × the share of vehicle-days
                                 # with a need within 15 days (the label prevalence, calibration set)
DEFAULT_MIN_PRECISION = 0.5      # alerts must be right at least half of the time


def need_events(rows: pd.DataFrame, component: str) -> pd.DataFrame:
    """Distinct (vehicle_id, need_date) visible in `rows`, evaluable ones flagged."""
    lab = rows[f"label_{component}"].to_numpy() == 1
    sub = rows.loc[lab, ["vehicle_id", "date", f"days_to_need_{component}"]]
    need = pd.to_datetime(sub["date"]) + pd.to_timedelta(sub[f"days_to_need_{component}"].astype(float), unit="D")
    ev = pd.DataFrame({"vehicle_id": sub["vehicle_id"].astype(str).to_numpy(), "need_date": need.to_numpy()}).drop_duplicates()
    d = pd.to_datetime(rows["date"])
    lo, hi = d.min(), d.max()
    lo_w, hi_w = EARLY_WARNING
    ev["evaluable"] = (ev["need_date"] - pd.Timedelta(days=hi_w) >= lo) & (ev["need_date"] - pd.Timedelta(days=lo_w) <= hi)
    return ev.reset_index(drop=True)


def alert_lead_times(rows: pd.DataFrame, alert: np.ndarray, events: pd.DataFrame) -> pd.DataFrame:
    """Per event: max lead (days) of an alert within LEAD_MAX_DAYS before it, and whether one fell in 7..15."""
    a = pd.DataFrame({"vehicle_id": rows["vehicle_id"].astype(str).to_numpy()[alert],
                      "alert_date": pd.to_datetime(rows["date"]).to_numpy()[alert]})
    ev = events.reset_index(drop=True).assign(event=lambda e: np.arange(len(e)))
    out = ev.assign(lead_days=0, early=False)
    if a.empty or ev.empty:
        return out
    m = ev.merge(a, on="vehicle_id")
    lead = (m["need_date"] - m["alert_date"]).dt.days
    m = m.assign(lead=lead)[(lead >= 1) & (lead <= LEAD_MAX_DAYS)]
    lo, hi = EARLY_WARNING
    g = m.groupby("event")
    out.loc[:, "lead_days"] = g["lead"].max().reindex(out["event"]).fillna(0).astype(int).to_numpy()
    out.loc[:, "early"] = m[(m["lead"] >= lo) & (m["lead"] <= hi)].groupby("event").size().reindex(out["event"]).fillna(0).to_numpy() > 0
    return out


def alert_metrics(rows: pd.DataFrame, alert: np.ndarray, component: str) -> dict:
    """Early-warning recall, precision and volume of a set of alerts (boolean per row)."""
    alert = np.asarray(alert, dtype=bool)
    y = rows[f"label_{component}"].to_numpy() == 1
    ev = need_events(rows, component)
    ev = ev[ev["evaluable"]]
    lt = alert_lead_times(rows, alert, ev)
    n_alerts = int(alert.sum())
    return {
        "ew_recall": float(lt["early"].mean()) if len(lt) else float("nan"),
        "precision": float(y[alert].mean()) if n_alerts else float("nan"),
        "alert_rate": float(n_alerts / max(len(rows), 1)),
        "n_alerts": n_alerts,
        "n_events": int(len(lt)),
        "n_events_warned": int(lt["early"].sum()) if len(lt) else 0,
        "lead_days_median": float(lt.loc[lt["lead_days"] > 0, "lead_days"].median()) if (lt["lead_days"] > 0).any() else 0.0,
        "_lead_days": lt["lead_days"].to_numpy(),
    }


def score_metrics(y: np.ndarray, p: np.ndarray) -> dict:
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=float)
    if y.min(initial=0) == y.max(initial=0):
        return {"pr_auc": float("nan"), "roc_auc": float("nan"), "brier": float(np.mean((p - y) ** 2)) if len(y) and p.max(initial=0) <= 1 else float("nan"),
                "prevalence": float(y.mean()) if len(y) else float("nan")}
    out = {"pr_auc": float(average_precision_score(y, p)), "roc_auc": float(roc_auc_score(y, p)), "prevalence": float(y.mean())}
    if p.min() >= 0 and p.max() <= 1:  # a probability, not just a ranking score
        out["brier"] = float(brier_score_loss(y, p))
    return out


def evaluate(rows: pd.DataFrame, risk: np.ndarray, threshold: float, component: str) -> dict:
    """All headline metrics of calibrated risks on held-out rows at the operating threshold."""
    out = score_metrics(rows[f"label_{component}"].to_numpy(), risk)
    out.update(alert_metrics(rows, np.asarray(risk) >= threshold, component))
    return out


def threshold_for_budget(rows: pd.DataFrame, risk: np.ndarray, component: str, budget: float = DEFAULT_ALERT_BUDGET,
                         min_precision: float = DEFAULT_MIN_PRECISION) -> tuple[float, dict]:
    """Lowest threshold with alert rate <= budget and precision >= min_precision (on these rows).

    When no threshold reaches the precision floor within the budget, the threshold that fills the
    budget is used and `info["precision_floor_met"]` is False.
    """
    y = rows[f"label_{component}"].to_numpy() == 1
    risk = np.asarray(risk, dtype=float)
    n = len(risk)
    order = np.argsort(-risk, kind="stable")
    r_sorted = risk[order]
    tp = np.cumsum(y[order])
    k = np.arange(1, n + 1)
    # only cut between distinct risk values: alerting at threshold r_sorted[i] alerts everything >= it
    last_of_value = np.r_[r_sorted[1:] != r_sorted[:-1], True]
    prec = tp / k
    max_rate = budget * float(y.mean()) if n else 0.0
    ok = last_of_value & (k <= max_rate * n) & (prec >= min_precision)
    info = {"alert_budget": budget, "max_alert_rate": max_rate, "min_precision": min_precision}
    if ok.any():
        i = int(np.flatnonzero(ok).max())
        info["precision_floor_met"] = True
    else:
        within = np.flatnonzero(last_of_value & (k <= max_rate * n))
        i = int(within.max()) if len(within) else 0
        info["precision_floor_met"] = False
    thr = float(r_sorted[i]) if n else 0.5
    info.update({"calib_alert_rate": float((risk >= thr).mean()) if n else 0.0,
                 "calib_precision": float(y[risk >= thr].mean()) if (risk >= thr).any() else float("nan")})
    return thr, info


# ------------------------------------------------------------------------------------------ plots


def _fig():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_calibration(y, p, title: str):
    plt = _fig()
    fig, ax = plt.subplots(figsize=(5, 5))
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    # risks are mostly tiny: bins by quantile, denser in the upper tail where alerts live
    levels = np.r_[0, 0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 1.0]
    qs = np.unique(np.quantile(p, levels)) if len(p) else np.array([0, 1])
    b = np.clip(np.searchsorted(qs, p, side="right") - 1, 0, max(len(qs) - 2, 0))
    df = pd.DataFrame({"b": b, "p": p, "y": y}).groupby("b").agg(p=("p", "mean"), y=("y", "mean"), n=("y", "size"))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect")
    ax.plot(df["p"], df["y"], "o-", label="model (quantile bins)")
    top = max(float(df["p"].max()) if len(df) else 0.1, float(df["y"].max()) if len(df) else 0.1, 0.05) * 1.1
    ax.set_xlim(0, min(1, top))
    ax.set_ylim(0, min(1, top))
    ax.set_xlabel("predicted risk")
    ax.set_ylabel("observed need rate within 15 days")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_pr(y, p, title: str, points: dict | None = None):
    from sklearn.metrics import precision_recall_curve

    plt = _fig()
    fig, ax = plt.subplots(figsize=(5, 5))
    if len(np.unique(y)) > 1:
        prec, rec, _ = precision_recall_curve(y, p)
        ax.plot(rec, prec, label="model (row level)")
    for name, (r, pr) in (points or {}).items():
        if np.isfinite(r) and np.isfinite(pr):
            ax.plot([r], [pr], "o", label=name)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_importance(names, gain, title: str, top: int = 25):
    plt = _fig()
    s = pd.Series(np.asarray(gain, dtype=float), index=list(names)).sort_values(ascending=True).tail(top)
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(s) + 1.2))
    ax.barh(s.index, s.to_numpy() / max(float(s.max()), 1e-12))
    ax.set_xlabel("total gain (relative to the top feature)")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_lead_times(leads: dict[str, np.ndarray], title: str):
    plt = _fig()
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.arange(-0.5, LEAD_MAX_DAYS + 1.5, 1)
    for name, arr in leads.items():
        ax.hist(np.asarray(arr), bins=bins, alpha=0.6, label=name)
    lo, hi = EARLY_WARNING
    ax.axvspan(lo - 0.5, hi + 0.5, color="green", alpha=0.1, label=f"early window {lo}-{hi} d")
    ax.set_xlabel(f"days between first alert (within {LEAD_MAX_DAYS} d) and the need; 0 = no alert")
    ax.set_ylabel("need events")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


__all__ = ["need_events", "alert_metrics", "score_metrics", "evaluate", "threshold_for_budget", "HORIZON_DAYS"]


# ------------------------------------------------------------------------------------------ champions


def evaluate_champions(paths=None, seed: int = 0, components=None, log_to_mlflow: bool = True) -> dict:
    """`autopdm evaluate`: the current champions on the held-out split of the current features table.

    Baselines at the same alert volume beside each; writes var/reports/evaluation.json and a model
    card per component (var/reports/model_card_<component>.md); logs a run `evaluate` to MLflow.
    """
    import json

    from . import baselines, store
    from .champion import load_champions
    from .config import Paths
    from .features import COMPONENTS
    from .split import time_vehicle_split

    paths = paths or Paths.from_env()
    components = components or COMPONENTS
    champs = load_champions(paths, components)
    df = store.read_table("features", paths)
    split = time_vehicle_split(df, seed=seed)
    test = df.loc[split.test]
    rep = {"split": split.params(), "components": {}}
    for comp, ch in champs.items():
        risk = ch.predict(test)
        m = evaluate(test, risk, ch.threshold, comp)
        b = alert_metrics(test, baselines.at_volume(baselines.score(test, comp), m["n_alerts"]), comp)
        r = alert_metrics(test, baselines.rule(test, comp), comp)
        rep["components"][comp] = {
            "name": ch.name, "version": ch.version, "threshold": ch.threshold, "run_id": ch.run_id,
            "test": {k: v for k, v in m.items() if not k.startswith("_")},
            "baseline_same_volume": {k: v for k, v in b.items() if not k.startswith("_")},
            "baseline_rule": {k: v for k, v in r.items() if not k.startswith("_")},
            "baseline_description": baselines.DESCRIPTION[comp],
        }
        paths.reports.mkdir(parents=True, exist_ok=True)
        (paths.reports / f"model_card_{comp}.md").write_text(model_card(ch, rep["components"][comp], rep["split"]))
    out = paths.reports / "evaluation.json"
    out.write_text(json.dumps(rep, indent=2, default=float))
    rep["report"] = str(out)
    if log_to_mlflow:
        import mlflow

        from .train import setup_mlflow

        setup_mlflow(paths)
        with mlflow.start_run(run_name="evaluate", nested=mlflow.active_run() is not None):
            for comp, r in rep["components"].items():
                mlflow.log_metrics({f"{comp}_{k}": float(v) for k, v in r["test"].items()
                                    if isinstance(v, (int, float)) and np.isfinite(v)})
                mlflow.log_metrics({f"{comp}_baseline_{k}": float(v) for k, v in r["baseline_same_volume"].items()
                                    if isinstance(v, (int, float)) and np.isfinite(v)})
                mlflow.set_tag(f"{comp}_version", r["version"])
            mlflow.log_artifact(str(out))
    return rep


def model_card(ch, r: dict, split: dict) -> str:
    """Model card (markdown) filled from a champion and its evaluation (template: models/README.md)."""
    m, b, rule = r["test"], r["baseline_same_volume"], r["baseline_rule"]

    def f(v):
        return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else (f"{v:.3f}" if isinstance(v, float) else str(v))

    return f"""# Model card: {ch.name} v{ch.version}

- **Predicts**: calibrated probability that a {ch.component} replace/repair is needed within 15 days.
- **Model**: LightGBM binary classifier, {len(ch.feature_names)} features, Platt-calibrated log-odds
  (`{ch.calibration}`); MLflow run `{ch.run_id}`.
- **Operating threshold**: {ch.threshold:.4f} (alert budget {ch.tags.get('alert_budget', 'n/a')} of vehicle-days,
  precision floor {ch.tags.get('min_precision', 'n/a')}, chosen on the calibration set).
- **Training data**: {split.get('train_start')}..{split.get('train_end')} (train vehicles only); held out
  {split.get('test_start')}..{split.get('test_end')} on other vehicles.

## Held-out performance

| | model | baseline, same alert volume | literal rule |
|---|---|---|---|
| early-warning recall (7–15 d) | {f(m['ew_recall'])} | {f(b['ew_recall'])} | {f(rule['ew_recall'])} |
| alert precision | {f(m['precision'])} | {f(b['precision'])} | {f(rule['precision'])} |
| alert rate (per vehicle-day) | {f(m['alert_rate'])} | {f(b['alert_rate'])} | {f(rule['alert_rate'])} |
| need events | {m['n_events']} | | |
| PR-AUC | {f(m['pr_auc'])} | | |
| Brier | {f(m.get('brier'))} | | |

Baseline: {r.get('baseline_description', '')}.

## Limits

Trained and evaluated on the data in this installation (simulated unless real service history was
imported). Need events are workshop replace/repair records: a part replaced early at an inspection
counts as a need on its replacement day.
"""


CURVE_MULTIPLIERS = (0.5, 1.0, 1.5, 2.0, 3.0)


def operating_curve(rows: pd.DataFrame, risk: np.ndarray, baseline_score: np.ndarray, component: str,
                    multipliers=CURVE_MULTIPLIERS) -> list[dict]:
    """Early-warning recall and precision of the model and the baseline at alert volumes of
    m × prevalence (the top-k rows by risk / by baseline score), for m in `multipliers`."""
    from .baselines import at_volume

    y = rows[f"label_{component}"].to_numpy() == 1
    n = len(rows)
    out = []
    for mult in multipliers:
        k = int(round(mult * float(y.mean()) * n)) if n else 0
        am = alert_metrics(rows, at_volume(risk, k), component)
        bm = alert_metrics(rows, at_volume(baseline_score, k), component)
        out.append({"x_prevalence": mult, "alert_rate": k / max(n, 1), "ew_recall": am["ew_recall"], "precision": am["precision"],
                    "baseline_ew_recall": bm["ew_recall"], "baseline_precision": bm["precision"]})
    return out
