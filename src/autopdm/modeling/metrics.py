"""Metrics over held-out rows against need events: early-warning recall, alert precision, PR-AUC,
Brier, lead times.

Plain functions over a frame of feature rows (`vehicle_id`, `date`), an array of risks or alerts
and the need events they are judged against: a frame of `vehicle_id`, `component`, `need_date`
(the simulator's `true_needs`, the records' `needs`, ...). Without one, the needs are those the
rows' own labels were built from (`needs_from_labels`), so the figures match the labels.

Definitions:

* label of a row — 1 when a need of the component falls in (date, date + 15 days]
  (`labels_from_needs`); PR-AUC and Brier are against these labels.
* evaluable need — a need whose whole early-warning window (7..15 days before it) lies inside its
  vehicle's evaluated dates.
* alert — a row (vehicle-day) whose calibrated risk is at or above the operating threshold.
* early-warning recall — share of evaluable needs with at least one alert 7–15 days before.
* alert precision — share of alert rows followed by a need within 15 days (label 1).
* alert rate — alert rows per vehicle-day (the volume a workshop has to absorb).
* lead time — for each evaluable need, the largest number of days before it at which an alert
  fired, within 30 days (0 = never alerted).
* work order — what the alerts become in the outbox: an alert on a vehicle opens one unless a work
  order of the same vehicle opened in the 15 days before is still open (its window has not ended),
  as `delivery.outbox` suppresses equivalent recommendations.
* work-order yield — share of work orders followed by a need within 15 days (the part really needed
  service within the horizon): what the workshop feels of the alerts, one contact per work order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from autopdm import components
from autopdm.modeling.baselines import at_volume
from autopdm.pipeline.features import EARLY_WARNING, HORIZON_DAYS

LEAD_MAX_DAYS = 30
NEED_COLUMNS = ("vehicle_id", "component", "need_date")


def _days(s) -> np.ndarray:
    return pd.to_datetime(pd.Series(s)).to_numpy("datetime64[D]").astype(np.int64)


def needs_from_labels(rows: pd.DataFrame, component: str) -> pd.DataFrame:
    """The need events the rows' labels were built from: `date + days_to_need_<c>` wherever known."""
    dtn = pd.to_numeric(rows[components.get(component).days_to_need], errors="coerce").to_numpy(dtype=float)
    known = np.isfinite(dtn)
    need = pd.to_datetime(rows["date"]).to_numpy("datetime64[D]")[known] + dtn[known].astype(np.int64).astype("timedelta64[D]")
    out = pd.DataFrame({"vehicle_id": rows["vehicle_id"].astype(str).to_numpy()[known], "component": component,
                        "need_date": need.astype("datetime64[ns]")})
    return out.drop_duplicates(["vehicle_id", "need_date"]).sort_values(["vehicle_id", "need_date"]).reset_index(drop=True)


def component_needs(needs: pd.DataFrame | None, rows: pd.DataFrame, component: str) -> pd.DataFrame:
    """One component's needs (`needs` may hold several components; None → the rows' own labels')."""
    if needs is None:
        return needs_from_labels(rows, component)
    missing = [c for c in ("vehicle_id", "need_date") if c not in needs]
    if missing:
        raise ValueError(f"need events need the columns {', '.join(NEED_COLUMNS)}; missing: {', '.join(missing)}")
    nd = needs[needs["component"] == component] if "component" in needs else needs
    nd = nd.dropna(subset=["need_date"])
    return pd.DataFrame({"vehicle_id": nd["vehicle_id"].astype(str).to_numpy(), "component": component,
                         "need_date": pd.to_datetime(nd["need_date"]).to_numpy("datetime64[ns]")})


def _keys(vehicle_codes: np.ndarray, days: np.ndarray) -> np.ndarray:
    return vehicle_codes.astype(np.int64) * (1 << 32) + (days + (1 << 31))


def labels_from_needs(rows: pd.DataFrame, needs: pd.DataFrame, horizon: int = HORIZON_DAYS) -> tuple[np.ndarray, np.ndarray]:
    """(label, days to the next need) per row: label 1 when a need falls in (date, date + horizon]."""
    vids = rows["vehicle_id"].astype(str).to_numpy()
    codes, uniq = pd.factorize(np.r_[vids, needs["vehicle_id"].astype(str).to_numpy()])
    row_key = _keys(codes[:len(vids)], _days(rows["date"]))
    need_key = np.sort(_keys(codes[len(vids):], _days(needs["need_date"])))
    pos = np.searchsorted(need_key, row_key, side="right")     # the next need strictly after the day
    nxt = np.append(need_key, np.iinfo(np.int64).max)[pos]
    same = (nxt >> 32) == (row_key >> 32)
    dtn = np.where(same, (nxt - row_key).astype(float), np.nan)
    return ((dtn >= 1) & (dtn <= horizon)).astype(np.int8), dtn


def evaluable_needs(rows: pd.DataFrame, needs: pd.DataFrame) -> pd.DataFrame:
    """The needs whose early-warning window lies inside their vehicle's evaluated dates."""
    d = pd.to_datetime(rows["date"])
    span = pd.DataFrame({"vehicle_id": rows["vehicle_id"].astype(str).to_numpy(), "d": d.to_numpy()}) \
        .groupby("vehicle_id")["d"].agg(["min", "max"])
    ev = needs.loc[:, ["vehicle_id", "need_date"]].drop_duplicates().join(span, on="vehicle_id", how="inner")
    lo_w, hi_w = EARLY_WARNING
    ok = (ev["need_date"] - pd.Timedelta(days=hi_w) >= ev["min"]) & (ev["need_date"] - pd.Timedelta(days=lo_w) <= ev["max"])
    return ev.loc[ok, ["vehicle_id", "need_date"]].reset_index(drop=True)


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


def work_order_starts(rows: pd.DataFrame, alert: np.ndarray, open_days: int = HORIZON_DAYS) -> np.ndarray:
    """Per row: whether its alert opens a work order — no work order of the same vehicle opened in the
    `open_days` days before (that one would still be open: its window ends `open_days` after it)."""
    alert = np.asarray(alert, dtype=bool)
    out = np.zeros(len(rows), dtype=bool)
    idx = np.flatnonzero(alert)
    if not len(idx):
        return out
    vid = pd.factorize(rows["vehicle_id"].astype(str).to_numpy()[idx])[0]
    day = _days(rows["date"].to_numpy()[idx])
    order = np.lexsort((day, vid))
    last_v, last_day = -1, 0
    for i in order:                      # alerted rows only; a work order depends on the one before it
        if vid[i] != last_v or day[i] - last_day > open_days:
            out[idx[i]] = True
            last_v, last_day = vid[i], day[i]
    return out


def alert_metrics(rows: pd.DataFrame, alert: np.ndarray, component: str, needs: pd.DataFrame | None = None) -> dict:
    """Early-warning recall, precision and volume of a set of alerts (boolean per row) against `needs`."""
    alert = np.asarray(alert, dtype=bool)
    nd = component_needs(needs, rows, component)
    y, _ = labels_from_needs(rows, nd)
    lt = alert_lead_times(rows, alert, evaluable_needs(rows, nd))
    n_alerts = int(alert.sum())
    starts = work_order_starts(rows, alert)
    return {
        "ew_recall": float(lt["early"].mean()) if len(lt) else float("nan"),
        "precision": float(y[alert].mean()) if n_alerts else float("nan"),
        "alert_rate": float(n_alerts / max(len(rows), 1)),
        "n_alerts": n_alerts,
        "n_events": int(len(lt)),
        "n_events_warned": int(lt["early"].sum()) if len(lt) else 0,
        "lead_days_median": float(lt.loc[lt["lead_days"] > 0, "lead_days"].median()) if (lt["lead_days"] > 0).any() else 0.0,
        "n_work_orders": int(starts.sum()),
        "work_order_yield": float(y[starts].mean()) if starts.any() else float("nan"),
        "_work_orders": starts,                                 # per row: opens a work order
        "_lead_days": lt["lead_days"].to_numpy(),
        "_events": lt,                                          # per evaluable need: lead_days, early
        "_y": y,                                                # per row: label against these needs
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


def evaluate(rows: pd.DataFrame, risk: np.ndarray, threshold: float, component: str, needs: pd.DataFrame | None = None) -> dict:
    """All headline metrics of calibrated risks on held-out rows at the operating threshold, against `needs`."""
    nd = component_needs(needs, rows, component)
    out = score_metrics(labels_from_needs(rows, nd)[0], risk)
    out.update(alert_metrics(rows, np.asarray(risk) >= threshold, component, nd))
    return out


def lead_time_histogram(lead_days: np.ndarray) -> dict[str, int]:
    """Days before the need of each evaluable need's earliest alert (0 = never alerted) → count."""
    return {str(k): int(v) for k, v in zip(*np.unique(np.asarray(lead_days, dtype=int), return_counts=True))}


def by_vehicle_interval(rows: pd.DataFrame, alert: np.ndarray, m: dict, n_boot: int = 400, level: float = 0.9,
                        seed: int = 0) -> dict:
    """Bootstrap intervals (resampling vehicles) of early-warning recall and precision of the alerts whose
    `alert_metrics` are `m`: few needs make single figures noisy."""
    vid = rows["vehicle_id"].astype(str).to_numpy()
    codes, uniq = pd.factorize(vid)
    uniq = pd.Index(uniq)
    alert = np.asarray(alert, dtype=bool)
    n_alert = np.bincount(codes, weights=alert, minlength=len(uniq))
    ev = m["_events"]
    ev_codes = uniq.get_indexer(ev["vehicle_id"].astype(str))
    n_ev = np.bincount(ev_codes, minlength=len(uniq))
    n_warned = np.bincount(ev_codes, weights=ev["early"].to_numpy(dtype=float), minlength=len(uniq))
    tp = np.bincount(codes, weights=alert & (m["_y"] == 1), minlength=len(uniq))
    w = np.random.default_rng(seed).multinomial(len(uniq), np.full(len(uniq), 1.0 / len(uniq)), size=n_boot)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = (w @ n_warned) / (w @ n_ev)
        precision = (w @ tp) / (w @ n_alert)
    q = [(1 - level) / 2, (1 + level) / 2]
    return {"level": level, "n_vehicles": int(len(uniq)),
            "ew_recall": [float(v) for v in np.nanquantile(recall, q)] if np.isfinite(recall).any() else [float("nan")] * 2,
            "precision": [float(v) for v in np.nanquantile(precision, q)] if np.isfinite(precision).any() else [float("nan")] * 2}


CURVE_MULTIPLIERS = (0.5, 1.0, 1.5, 2.0, 3.0)


def operating_curve(rows: pd.DataFrame, risk: np.ndarray, baseline_score: np.ndarray, component: str,
                    needs: pd.DataFrame | None = None, multipliers=CURVE_MULTIPLIERS) -> list[dict]:
    """Early-warning recall and precision of the model and the baseline at alert volumes of
    m × prevalence (the top-k rows by risk / by baseline score), for m in `multipliers`."""
    nd = component_needs(needs, rows, component)
    y, _ = labels_from_needs(rows, nd)
    n = len(rows)
    out = []
    for mult in multipliers:
        k = int(round(mult * float(y.mean()) * n)) if n else 0
        am = alert_metrics(rows, at_volume(risk, k), component, nd)
        bm = alert_metrics(rows, at_volume(baseline_score, k), component, nd)
        out.append({"x_prevalence": mult, "alert_rate": k / max(n, 1), "ew_recall": am["ew_recall"], "precision": am["precision"],
                    "baseline_ew_recall": bm["ew_recall"], "baseline_precision": bm["precision"]})
    return out
