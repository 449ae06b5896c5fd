"""What a component's alerts are judged against, and the block of figures every report carries.

Two sets of needs, in this order:

* `true_needs` — on a simulated fleet, the day each part physically reached its service limit
  (the simulator's hidden table under the features directory; only evaluation reads it). When it
  exists it is the headline.
* `observed_needs` — the needs the features' labels were built from (the workshop's records:
  today the replace/repair events). The only set a real deployment has.

Against each: the model at its operating threshold, the workshop's rule at the same alert volume
and the literal rule at its own, a lead-time histogram and by-vehicle bootstrap intervals. Used by
training (`train.assess_candidate`) and by `autopdm evaluate` (`reports`), on the held-out split.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from autopdm import store
from autopdm.config import Paths
from autopdm.modeling import baselines
from autopdm.modeling.metrics import (NEED_COLUMNS, alert_metrics, by_vehicle_interval, component_needs, evaluate,
                                      labels_from_needs, lead_time_histogram, needs_from_labels, score_metrics)

TRUE = "true_needs"
OBSERVED = "observed_needs"


def read_true_needs(paths: Paths) -> pd.DataFrame | None:
    """The simulator's true needs of this home, or None (not a simulated fleet)."""
    if not paths.table(TRUE).exists():
        return None
    return store.read_table(TRUE, paths, columns=list(NEED_COLUMNS))


def need_sets(rows: pd.DataFrame, component: str, true_needs: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """{name: one component's needs}, the headline first (see the module docstring). The true needs count
    only for a component the simulator simulates (it has needs in the table)."""
    out = {}
    if true_needs is not None and (true_needs["component"] == component).any():
        out[TRUE] = component_needs(true_needs, rows, component)
    out[OBSERVED] = needs_from_labels(rows, component)
    return out


def headline(sets: dict) -> str:
    return next(iter(sets))


def assess_alerts(rows: pd.DataFrame, risk: np.ndarray, threshold: float, component: str, needs: pd.DataFrame) -> dict:
    """The model at its threshold beside the workshop's rule (same volume, and its own), against `needs`."""
    m = evaluate(rows, risk, threshold, component, needs)
    bscore = baselines.score(rows, component)
    b_alert = baselines.at_volume(bscore, m["n_alerts"])
    bm = alert_metrics(rows, b_alert, component, needs)
    y = labels_from_needs(rows, needs)[0]
    bm.update({k: v for k, v in score_metrics(y, bscore).items() if k in ("pr_auc", "roc_auc")})
    rm = alert_metrics(rows, baselines.rule(rows, component), component, needs)
    return {"model": m, "baseline_same_volume": bm, "baseline_rule": rm,
            "lead_time_histogram": lead_time_histogram(m["_lead_days"]),
            "interval_90": {"model": by_vehicle_interval(rows, np.asarray(risk) >= threshold, m),
                            "baseline_same_volume": by_vehicle_interval(rows, b_alert, bm)},
            "_baseline_alerts": b_alert}


def assess_all(rows: pd.DataFrame, risk: np.ndarray, threshold: float, component: str, sets: dict) -> dict:
    """{need set: assess_alerts(...)} for every set of needs."""
    return {name: assess_alerts(rows, risk, threshold, component, nd) for name, nd in sets.items()}


def public(d):
    """Without the private (underscore) entries, recursively: what goes into JSON reports."""
    if isinstance(d, dict):
        return {k: public(v) for k, v in d.items() if not str(k).startswith("_")}
    return d
