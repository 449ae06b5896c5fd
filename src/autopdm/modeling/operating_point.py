"""Calibration and the operating threshold of a component's model, fitted on validation rows.

Platt scaling turns the booster's raw log-odds into a probability of a need within 15 days.
The threshold comes from a cost model (docs/operating-point.md has the reasoning and figures):

* an alert costs `cost_alert` (a call, and perhaps a visit that finds nothing to do yet);
* a need that gets no early warning costs `cost_missed_need` (breakdown, towing, worn discs,
  a lost customer).

A work order on a vehicle whose calibrated risk is p is worth p × cost_missed_need − cost_alert,
so an alert pays off from the break-even risk cost_alert / cost_missed_need up. The threshold is
that break-even risk, raised where needed so that the alerts on the validation rows stay within
the alert budget (at most `budget` × the need prevalence of the vehicle-days). Both parts are
smooth in the data: the break-even risk is a constant, and the budget's threshold is a quantile
of many calibrated risks, not a count of the few needs. (The rule before — the largest volume
whose counted precision reached 0.5, else fill the budget — flipped between its two branches
from one retrain to the next and moved the alert rate by orders of magnitude.)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from autopdm import components
from autopdm.config import Settings


def platt(margin: np.ndarray, y: np.ndarray, spw: float) -> dict:
    """Platt calibration of raw log-odds; `spw` is the class weight the booster was trained with."""
    if len(y) == 0 or y.min() == y.max():
        # nothing to fit on: undo the class weighting's shift of the log-odds
        return {"method": "platt", "a": 1.0, "b": float(-np.log(spw)), "fitted": False}
    from sklearn.linear_model import LogisticRegression  # heavy: only when fitting

    lr = LogisticRegression(C=1e4, max_iter=1000)
    lr.fit(margin.reshape(-1, 1), y)
    return {"method": "platt", "a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0]), "fitted": True}


def costs(cost_missed_need: float | None = None, cost_alert: float | None = None, budget: float | None = None) -> dict:
    """The cost model's parameters: the given values, else the settings (AUTOPDM_COST_MISSED_NEED,
    AUTOPDM_COST_ALERT, AUTOPDM_ALERT_BUDGET)."""
    s = Settings()
    out = {"cost_missed_need": s.cost_missed_need if cost_missed_need is None else float(cost_missed_need),
           "cost_alert": s.cost_alert if cost_alert is None else float(cost_alert),
           "alert_budget": s.alert_budget if budget is None else float(budget)}
    if not out["cost_alert"] < out["cost_missed_need"]:
        raise ValueError(f"cost of an alert ({out['cost_alert']:g}, AUTOPDM_COST_ALERT) must be below the cost of a "
                         f"missed need ({out['cost_missed_need']:g}, AUTOPDM_COST_MISSED_NEED): no alert could pay off")
    if not out["alert_budget"] > 0:
        raise ValueError(f"alert budget {out['alert_budget']:g} (AUTOPDM_ALERT_BUDGET) must be positive")
    return out


def threshold_at_volume(risk: np.ndarray, k: float) -> float:
    """The threshold whose number of alerts (rows with risk >= it) comes closest to k, by ratio.

    Only cuts between distinct values exist: a block of tied risks is alerted whole or not at all.
    With k < 1 (or no rows): just above the highest risk, so that none of these rows is alerted."""
    r = np.sort(np.asarray(risk, dtype=float))[::-1]
    if len(r) == 0 or k < 1:
        return float(np.nextafter(r[0], np.inf)) if len(r) else 1.0
    last_of_value = np.r_[r[1:] != r[:-1], True]
    counts = np.flatnonzero(last_of_value) + 1                # alert counts of the possible cuts
    i = int(np.argmin(np.abs(np.log(counts / float(k)))))
    return float(r[counts[i] - 1])


def choose_threshold(risk: np.ndarray, cost_missed_need: float, cost_alert: float, budget: float) -> tuple[float, dict]:
    """The operating threshold on calibrated risks of validation rows → (threshold, what decided it).

    max(break-even risk, the threshold that fills the budget): the break-even risk decides when the
    model is confident enough that fewer alerts than the budget pay off, the budget otherwise."""
    risk = np.asarray(risk, dtype=float)
    n = len(risk)
    break_even = cost_alert / cost_missed_need
    prevalence = float(risk.mean()) if n else 0.0             # calibrated: the expected share of need-days
    max_rate = budget * prevalence
    t_budget = threshold_at_volume(risk, max_rate * n)
    thr = max(break_even, t_budget)
    alerted = risk >= thr
    exp_prec = float(risk[alerted].mean()) if alerted.any() else float("nan")
    return thr, {
        "rule": "break-even risk" if break_even >= t_budget else "alert budget",
        "cost_missed_need": cost_missed_need, "cost_alert": cost_alert, "alert_budget": budget,
        "break_even_risk": break_even, "budget_threshold": t_budget, "prevalence": prevalence,
        "max_alert_rate": max_rate, "break_even_alert_rate": float((risk >= break_even).mean()) if n else 0.0,
        "calib_alert_rate": float(alerted.mean()) if n else 0.0,
        "expected_precision": exp_prec,
        "expected_value_per_alert": exp_prec * cost_missed_need - cost_alert if alerted.any() else float("nan"),
    }


def set_operating_point(cand, df: pd.DataFrame, split, spw: float, cost_model: dict | None = None):
    """Platt calibration and the alert threshold of `cand` (a Champion), fitted in place → (rows, their risk, threshold info).

    Fitted on every row the trees never saw before the test period: the calibration vehicles plus the
    early-stopping vehicles (same period; the latter only chose the number of boosting rounds).
    cost_model: `costs(...)` (default: the settings)."""
    cm = cost_model or costs()
    rows = df.loc[split.calib | split.early_stop]
    y = rows[components.get(cand.component).label].to_numpy(dtype=np.int8)
    cand.calibration = platt(cand.margin(rows[cand.feature_names]), y, spw)
    risk = cand.predict(rows)
    cand.threshold, info = choose_threshold(risk, cm["cost_missed_need"], cm["cost_alert"], cm["alert_budget"])
    alerted = risk >= cand.threshold
    info["calib_precision"] = float(y[alerted].mean()) if alerted.any() else float("nan")  # counted, for reference
    return rows, risk, info
