"""Metrics over held-out rows: early-warning recall, alert precision, PR-AUC, Brier, lead times.

Plain functions over a frame of feature rows (with their labels) and an array of risks or alerts.

Definitions:

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
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from autopdm import components
from autopdm.modeling.baselines import at_volume
from autopdm.pipeline.features import EARLY_WARNING

LEAD_MAX_DAYS = 30


def need_events(rows: pd.DataFrame, component: str) -> pd.DataFrame:
    """Distinct (vehicle_id, need_date) visible in `rows`, evaluable ones flagged."""
    lab = rows[components.get(component).label].to_numpy() == 1
    sub = rows.loc[lab, ["vehicle_id", "date", components.get(component).days_to_need]]
    need = pd.to_datetime(sub["date"]) + pd.to_timedelta(sub[components.get(component).days_to_need].astype(float), unit="D")
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
    y = rows[components.get(component).label].to_numpy() == 1
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
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score  # heavy: only when scoring

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
    out = score_metrics(rows[components.get(component).label].to_numpy(), risk)
    out.update(alert_metrics(rows, np.asarray(risk) >= threshold, component))
    return out


CURVE_MULTIPLIERS = (0.5, 1.0, 1.5, 2.0, 3.0)


def operating_curve(rows: pd.DataFrame, risk: np.ndarray, baseline_score: np.ndarray, component: str,
                    multipliers=CURVE_MULTIPLIERS) -> list[dict]:
    """Early-warning recall and precision of the model and the baseline at alert volumes of
    m × prevalence (the top-k rows by risk / by baseline score), for m in `multipliers`."""
    y = rows[components.get(component).label].to_numpy() == 1
    n = len(rows)
    out = []
    for mult in multipliers:
        k = int(round(mult * float(y.mean()) * n)) if n else 0
        am = alert_metrics(rows, at_volume(risk, k), component)
        bm = alert_metrics(rows, at_volume(baseline_score, k), component)
        out.append({"x_prevalence": mult, "alert_rate": k / max(n, 1), "ew_recall": am["ew_recall"], "precision": am["precision"],
                    "baseline_ew_recall": bm["ew_recall"], "baseline_precision": bm["precision"]})
    return out
