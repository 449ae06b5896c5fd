"""From risks and LightGBM contributions to assessments and work orders (payload: docs/crm-integration.md).

* risk band — relative to the component's operating threshold (chosen at training time):
  `low` below it (no work order), `high` from `high_cut(threshold)` up, `medium` between.
* recommended window — starts 7 days after `as_of` and ends 15 days after it (the early-warning
  lead the models are evaluated on). When the predicted need is sooner the window moves earlier:
  reading the 15-day probability `p` as a constant hazard, the median time to need is
  `15·ln2 / −ln(1−p)` days; when that is under 15 days the window ends there (never before day
  7) and starts 8 days earlier (never before tomorrow). So p ≤ 0.5 → [+7, +15]; p = 0.6 → [+3,
  +11]; p ≥ 0.75 → [+1, +7].
* evidence — the features with the largest positive `pred_contrib` (log-odds) for that row, with
  their values; these are what pushed the risk up.
* work_order_id — `wo-` + 24 hex of SHA-256 over vehicle, component and window: the same
  recommendation always has the same id, which is also the webhook `Idempotency-Key`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pandas as pd

from autopdm import components
from autopdm.serving.explain import explain

LEAD_MIN, LEAD_MAX, WINDOW_DAYS = 7, 15, 8
MIN_ALERT_RISK = 0.01  # never a work order below 1 % risk, whatever the operating threshold
N_EVIDENCE = 3


def high_cut(threshold: float) -> float:
    return max(0.5, min(2 * threshold, (1 + threshold) / 2))


def risk_band(risk: float, threshold: float) -> str:
    if risk < threshold:
        return "low"
    return "high" if risk >= high_cut(threshold) else "medium"


def days_to_need(risk: float, horizon: int = LEAD_MAX) -> float:
    """Median days to need if the `horizon`-day probability came from a constant hazard."""
    p = min(max(float(risk), 1e-9), 1 - 1e-9)
    return horizon * math.log(2) / -math.log1p(-p)


def recommended_window(as_of: date | str, risk: float) -> dict[str, str]:
    as_of = to_date(as_of)
    end = int(min(LEAD_MAX, max(LEAD_MIN, math.floor(days_to_need(risk)))))
    start = max(1, end - WINDOW_DAYS)
    return {"start": (as_of + timedelta(days=start)).isoformat(), "end": (as_of + timedelta(days=end)).isoformat()}


def work_order_id(vehicle_id: str, component: str, window: Mapping[str, str]) -> str:
    key = f"{vehicle_id}|{component}|{window['start']}|{window['end']}"
    return "wo-" + hashlib.sha256(key.encode()).hexdigest()[:24]


def to_date(d) -> date:
    if isinstance(d, datetime):
        return d.date()
    if isinstance(d, date):
        return d
    return pd.Timestamp(d).date()


def _jsonable(v):
    if v is None:
        return None
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, (np.integer, int)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return None if not np.isfinite(v) else round(float(v), 4)
    if isinstance(v, (pd.Timestamp, datetime, date)):
        return v.isoformat()
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return str(v)


def evidence(contrib: pd.Series, values: pd.Series, k: int = N_EVIDENCE) -> list[dict]:
    """Top-k features by positive contribution, with their values."""
    c = contrib.drop(labels=[x for x in ("bias", "BIAS", "__bias__") if x in contrib.index], errors="ignore")
    c = c[c > 0].sort_values(ascending=False).head(k)
    return [{"feature": str(f), "value": _jsonable(values.get(f)), "contribution": round(float(v), 4)} for f, v in c.items()]


def _top_positive(c: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest positive entries of each row, largest first (−1 = none)."""
    k = min(k, c.shape[1])
    part = np.argpartition(-c, k - 1, axis=1)[:, :k] if c.shape[1] > k else np.tile(np.arange(c.shape[1]), (len(c), 1))
    vals = np.take_along_axis(c, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1)
    return np.where(np.take_along_axis(c, idx, axis=1) > 0, idx, -1)


def model_outputs(champ, X: pd.DataFrame, contrib_mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Calibrated risk for every row and pred_contrib (log-odds, n_rows_masked × n_features) for
    the rows in `contrib_mask`."""
    risk = np.asarray(champ.predict(X), dtype=float)
    contrib = None
    if contrib_mask is not None and contrib_mask.any():
        contrib = champ.contribution_matrix(X if contrib_mask.all() else X[contrib_mask])
    return risk, contrib


def score_rows(rows: pd.DataFrame, champions: Mapping, with_evidence: str = "all") -> list[dict]:
    """The part of an assessment that depends only on the feature row: per component risk,
    threshold, evidence and model. `with_evidence`: "all" | "alerts" (contributions only for
    rows at or over the threshold — cheaper in batch)."""
    rows = rows.reset_index(drop=True)
    n = len(rows)
    out: list[dict] = [{} for _ in range(n)]
    for comp, champ in champions.items():
        names = list(champ.feature_names)
        thr = float(champ.threshold)
        X = rows.reindex(columns=names)
        if with_evidence == "all":
            risk, contrib = model_outputs(champ, X, np.ones(n, bool))
            need = np.ones(n, bool)
        else:
            risk, _ = model_outputs(champ, X, None)
            need = risk >= thr
            contrib = model_outputs(champ, X, need)[1] if need.any() else None
        top = _top_positive(np.nan_to_num(contrib, nan=-np.inf), N_EVIDENCE) if contrib is not None else None
        pos = np.full(n, -1)
        pos[np.flatnonzero(need)] = np.arange(int(need.sum()))
        model = {"name": champ.name, "version": str(champ.version)}
        for i in range(n):
            ev = []
            j = pos[i]
            if top is not None and j >= 0:
                for f in top[j]:
                    if f < 0:
                        break
                    ev.append({"feature": names[f], "value": _jsonable(X.iat[i, f]),
                               "contribution": round(float(contrib[j, f]), 4)})
            out[i][comp] = {"risk": float(risk[i]), "threshold": thr, "evidence": ev, "model": model}
    return out


def finalize(vehicle_id: str, scored: Mapping[str, dict], as_of) -> dict[str, dict]:
    """Add what depends on the day: band, alert, window, action, work_order_id."""
    out = {}
    for comp, c in scored.items():
        r, thr = c["risk"], c["threshold"]
        alert = r >= max(thr, MIN_ALERT_RISK)  # a degenerate model with threshold 0 must not alert on everything
        win = recommended_window(as_of, r) if alert else None
        out[comp] = {
            "risk": round(r, 4),
            "risk_band": risk_band(r, thr) if alert else "low",
            "threshold": round(thr, 4),
            "alert": bool(alert),
            "recommended_window": win,
            "recommended_action": components.get(comp).action if alert else None,
            "work_order_id": work_order_id(vehicle_id, comp, win) if alert else None,
            "evidence": [dict(e) for e in c["evidence"]],
            "model": dict(c["model"]),
        }
    return out


def assess(rows: pd.DataFrame, champions: Mapping, as_of, with_evidence: str = "all") -> list[dict]:
    """Per row (one per vehicle: `vehicle_id`, `date` and the model features) and component:
    risk, band, window, action, evidence. `as_of`: one date, or one per row."""
    rows = rows.reset_index(drop=True)
    n = len(rows)
    days = [to_date(d) for d in as_of] if isinstance(as_of, (list, tuple, np.ndarray, pd.Series)) else [to_date(as_of)] * n
    scored = score_rows(rows, champions, with_evidence)
    dates = pd.to_datetime(rows["date"]) if "date" in rows else [None] * n
    out = []
    for i, (vin, d, sc, day) in enumerate(zip(rows["vehicle_id"].astype(str), dates, scored, days)):
        a = {"vehicle_id": vin}
        if d is not None:
            a["feature_date"] = d.date().isoformat()
        a["components"] = finalize(vin, sc, day)
        for comp, c in a["components"].items():   # the part's state and the evidence in words, for the work order
            if c["alert"]:
                c["explanation"] = explain(comp, rows.iloc[i].to_dict(), c["evidence"])
        out.append(a)
    return out


def work_orders(assessments: list[dict], vehicles: pd.DataFrame, created_at: str | None = None) -> list[dict]:
    """Work-order payloads for every alerting component. No names or phone numbers:
    only customer_id and the preferred channel from `vehicles`."""
    created_at = created_at or datetime.now(timezone.utc).isoformat(timespec="seconds")
    v = vehicles.drop_duplicates("vehicle_id").set_index("vehicle_id")
    out = []
    for a in assessments:
        vin = a["vehicle_id"]
        cust = _jsonable(v.at[vin, "customer_id"]) if vin in v.index else None
        chan = _jsonable(v.at[vin, "preferred_channel"]) if vin in v.index else None
        for comp, c in a["components"].items():
            if not c["alert"]:
                continue
            out.append({
                "kind": "work_order",
                "work_order_id": c["work_order_id"],
                "vehicle_id": vin,
                "customer_id": cust,
                "channel": chan,
                "component": comp,
                "risk": c["risk"],
                "risk_band": c["risk_band"],
                "recommended_window": c["recommended_window"],
                "recommended_action": c["recommended_action"],
                "evidence": c["evidence"],
                "explanation": list(c.get("explanation", [])),
                "model": c["model"],
                "created_at": created_at,
            })
    return out
