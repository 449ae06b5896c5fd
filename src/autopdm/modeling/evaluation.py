"""What a component's alerts are judged against, and the block of figures every report carries.

Two sets of needs, in this order:

* `true_needs` — on a simulated fleet, the day each part physically reached its service limit
  (the simulator's hidden table under the features directory; only evaluation reads it). When it
  exists it is the headline.
* `observed_needs` — the needs the features' labels were built from (the workshop's records:
  today the replace/repair events). The only set a real deployment has.

Against each: the model at its operating threshold, the workshop's rule at the same alert volume
and the literal rule at its own, the careful advisor's measured-wear rule at the same volume, on a
simulated fleet the physical ceiling at the same volume (`truth`: the best the noisy readings
allow), each with its work-order yield (and, on a simulated fleet, the advise-line yield: the part
found at or below the advise line in the recommended window), a lead-time histogram and by-vehicle
bootstrap intervals. Used by training (`train.assess_candidate`) and by `autopdm evaluate`
(`reports`), on the held-out split. `quality(blocks)` is the headline the commands print and MLflow
logs: model, fixed-interval rule, careful advisor and ceiling at the same volume, and the yields.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from autopdm import store
from autopdm.config import Paths
from autopdm.modeling import baselines, truth
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


def _same_volume(rows: pd.DataFrame, score: np.ndarray, k: int, component: str, needs: pd.DataFrame, y: np.ndarray) -> dict:
    """A ranking score's k highest rows as alerts, against `needs`, with the score's PR-AUC."""
    out = alert_metrics(rows, baselines.at_volume(score, k), component, needs)
    out.update({kk: v for kk, v in score_metrics(y, score).items() if kk in ("pr_auc", "roc_auc")})
    return out


def assess_alerts(rows: pd.DataFrame, risk: np.ndarray, threshold: float, component: str, needs: pd.DataFrame,
                  true_state: "truth.TrueState | None" = None) -> dict:
    """The model at its threshold beside the workshop's rule (same volume, and its own), the careful
    advisor and, given the true state, the physical ceiling (same volume), against `needs`."""
    m = evaluate(rows, risk, threshold, component, needs)
    y = labels_from_needs(rows, needs)[0]
    k = m["n_alerts"]
    bscore = baselines.score(rows, component)
    b_alert = baselines.at_volume(bscore, k)
    bm = _same_volume(rows, bscore, k, component, needs, y)
    rm = alert_metrics(rows, baselines.rule(rows, component), component, needs)
    am = _same_volume(rows, baselines.advisor_score(rows, component), k, component, needs, y)
    out = {"model": m, "baseline_same_volume": bm, "baseline_rule": rm, "advisor_same_volume": am,
           "lead_time_histogram": lead_time_histogram(m["_lead_days"]),
           "interval_90": {"model": by_vehicle_interval(rows, np.asarray(risk) >= threshold, m),
                           "baseline_same_volume": by_vehicle_interval(rows, b_alert, bm)},
           "_baseline_alerts": b_alert}
    if true_state is not None:
        out["ceiling_same_volume"] = _same_volume(rows, truth.ceiling_score(rows, component, true_state), k,
                                                  component, needs, y)
        for who in ("model", "baseline_same_volume", "advisor_same_volume", "ceiling_same_volume"):
            out[who].update(truth.advise_yield(rows, out[who]["_work_orders"], component, true_state))
    return out


def assess_all(rows: pd.DataFrame, risk: np.ndarray, threshold: float, component: str, sets: dict,
               true_state: "truth.TrueState | None" = None) -> dict:
    """{need set: assess_alerts(...)} for every set of needs."""
    return {name: assess_alerts(rows, risk, threshold, component, nd, true_state) for name, nd in sets.items()}


QUALITY_KEYS = ("ew_recall", "precision", "pr_auc", "work_order_yield", "advise_yield")
QUALITY_OF = {"model": "model", "fixed_interval": "baseline_same_volume", "advisor": "advisor_same_volume",
              "ceiling": "ceiling_same_volume"}


def quality(blocks: dict) -> dict:
    """The headline of model quality, against the headline needs: {who: {metric: value}} for the model, the
    fixed-interval rule, the careful advisor and (simulated fleets) the physical ceiling, all at the model's
    alert volume; plus `needs` (which set) and `alert_rate`."""
    name = headline(blocks)
    b = blocks[name]
    out = {"needs": name, "alert_rate": b["model"]["alert_rate"], "n_events": b["model"]["n_events"]}
    for who, key in QUALITY_OF.items():
        if key in b:
            out[who] = {k: b[key][k] for k in QUALITY_KEYS if k in b[key]}
    return out


def public(d):
    """Without the private (underscore) entries, recursively: what goes into JSON reports."""
    if isinstance(d, dict):
        return {k: public(v) for k, v in d.items() if not str(k).startswith("_")}
    return d
