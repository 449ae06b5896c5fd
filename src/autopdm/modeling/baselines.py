"""The rules a workshop uses today, as baselines for the models.

Each component's rule lives in the registry (`autopdm.components`) as two functions over feature
rows: `baseline_rule` (the literal rule, a boolean alert per row, at its own alert volume) and
`baseline_score` (the quantity the rule thresholds). `at_volume(score, k)` alerts on the k
highest-scoring rows, so a rule can be compared with a model *at the same alert volume*.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from autopdm import components


def score(rows: pd.DataFrame, component: str) -> np.ndarray:
    return np.asarray(components.get(component).baseline_score(rows), dtype=float)


def rule(rows: pd.DataFrame, component: str) -> np.ndarray:
    return np.asarray(components.get(component).baseline_rule(rows), dtype=bool)


def description(component: str) -> str:
    return components.get(component).baseline_description


def at_volume(s: np.ndarray, k: int) -> np.ndarray:
    """Alert on the k highest scores (stable order for ties)."""
    s = np.asarray(s, dtype=float)
    out = np.zeros(len(s), dtype=bool)
    if k > 0:
        out[np.argsort(-s, kind="stable")[:k]] = True
    return out
