"""Calibration and the operating threshold of a component's model, fitted on validation rows.

Platt scaling turns the booster's raw log-odds into a probability of a need within 15 days.
`threshold_for_budget` picks the operating threshold: the lowest threshold whose alert rate stays
within the alert budget and whose alert precision reaches the precision floor (lowest → the
highest recall those two constraints allow). The budget is relative: `budget` alerts per
need-day, i.e. alert rate <= budget × label prevalence (1.5 by default: a vehicle is alerted on
about the 15 days before its need, plus half as many again for false alarms). The precision
floor (0.5) bounds the volume too (<= 2 × prevalence). Both defaults are settings
(AUTOPDM_ALERT_BUDGET, AUTOPDM_MIN_PRECISION).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from autopdm import components
from autopdm.config import Settings

DEFAULT_ALERT_BUDGET = Settings.model_fields["alert_budget"].default
DEFAULT_MIN_PRECISION = Settings.model_fields["min_precision"].default


def platt(margin: np.ndarray, y: np.ndarray, spw: float) -> dict:
    """Platt calibration of raw log-odds; `spw` is the class weight the booster was trained with."""
    if len(y) == 0 or y.min() == y.max():
        # nothing to fit on: undo the class weighting's shift of the log-odds
        return {"method": "platt", "a": 1.0, "b": float(-np.log(spw)), "fitted": False}
    from sklearn.linear_model import LogisticRegression  # heavy: only when fitting

    lr = LogisticRegression(C=1e4, max_iter=1000)
    lr.fit(margin.reshape(-1, 1), y)
    return {"method": "platt", "a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0]), "fitted": True}


def threshold_for_budget(rows: pd.DataFrame, risk: np.ndarray, component: str, budget: float = DEFAULT_ALERT_BUDGET,
                         min_precision: float = DEFAULT_MIN_PRECISION) -> tuple[float, dict]:
    """Lowest threshold with alert rate <= budget and precision >= min_precision (on these rows).

    When no threshold reaches the precision floor within the budget, the threshold that fills the
    budget is used and `info["precision_floor_met"]` is False.
    """
    y = rows[components.get(component).label].to_numpy() == 1
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


def set_operating_point(cand, df: pd.DataFrame, split, spw: float, budget: float = DEFAULT_ALERT_BUDGET,
                        min_precision: float = DEFAULT_MIN_PRECISION):
    """Platt calibration and the alert threshold of `cand` (a Champion), fitted in place → (rows, their risk, threshold info).

    Fitted on every row the trees never saw before the test period: the calibration vehicles plus the
    early-stopping vehicles (same period; the latter only chose the number of boosting rounds). At the
    sizes we run, the precision-at-volume curve on the calibration vehicles alone was noisy enough to
    move the threshold by a third of the alert volume."""
    rows = df.loc[split.calib | split.early_stop]
    y = rows[components.get(cand.component).label].to_numpy(dtype=np.int8)
    cand.calibration = platt(cand.margin(rows[cand.feature_names]), y, spw)
    risk = cand.predict(rows)
    cand.threshold, info = threshold_for_budget(rows, risk, cand.component, budget, min_precision)
    return rows, risk, info
