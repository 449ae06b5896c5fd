"""Labels of the features table: does a component need service within the horizon?

Labels look forward, features look back. `label_<c>` = 1 when a resolving event for component c
(by default a replace or repair, see `Component.resolving_actions`) falls in (d, d + HORIZON_DAYS];
`days_to_need_<c>` is the distance in days to the next such event when one is known.
`label_complete` is False where the horizon runs past the end of the service history (negatives
there are not yet known to be negatives): training and evaluation drop those rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from autopdm import components
from autopdm.pipeline.grid import NO

HORIZON_DAYS = 15
EARLY_WARNING = (7, 15)  # an alert d days before the need counts as early when 7 <= d <= 15
LABEL_PREFIXES = ("label_", "days_to_need_")  # label_<component>, days_to_need_<component>, label_complete
COMPLETE = "label_complete"


def is_label_column(name: str) -> bool:
    return name.startswith(LABEL_PREFIXES)


def label_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if is_label_column(c)]


def labels_until(service_days: np.ndarray, day_end: int) -> int:
    """The last day whose labels are known: how far the service history reaches past `day_end`.

    service_days: day numbers of the service events (NO where missing); the features end at
    `day_end`, so only events within one horizon of it matter.
    """
    reach = service_days[(service_days > NO) & (service_days <= day_end + HORIZON_DAYS)]
    return max(day_end, int(reach.max())) if len(reach) else day_end


def days_to_next(vi: np.ndarray, ti: np.ndarray, V: int, T: int) -> np.ndarray:
    """Days from each grid day to the next event strictly after it (NaN when none).

    vi, ti: vehicle and day index of each event (days may lie past the grid). One sorted key per
    event, one binary search per grid cell: no loop over vehicles or days.
    """
    key = np.sort(vi.astype(np.int64) * (1 << 32) + (ti + (1 << 31)))
    tidx = np.broadcast_to(np.arange(T), (V, T))
    q = np.arange(V, dtype=np.int64)[:, None] * (1 << 32) + (tidx + (1 << 31))
    pos = np.searchsorted(key, q.ravel(), side="right").reshape(V, T)
    nxt = np.append(key, np.iinfo(np.int64).max)[pos]
    same = (nxt >> 32) == np.arange(V)[:, None]
    return np.where(same, (nxt & ((1 << 32) - 1)) - (1 << 31) - tidx, np.nan).astype(float)


def build_labels(events: pd.DataFrame, vids: pd.Index, day0: int, T: int, until: int) -> dict[str, np.ndarray]:
    """Label arrays (vehicles × days) of every registered component, then `label_complete`.

    events: service events of the grid's vehicles with a `day` column (day number); those after
    `until` are not known yet and count for nothing.
    """
    known = events[events["day"] <= until]
    out: dict[str, np.ndarray] = {}
    for comp in components.all_components():
        ev = known[(known["component"] == comp.name) & known["action"].isin(comp.resolving_actions)]
        dtn = days_to_next(vids.get_indexer(ev["vehicle_id"]), ev["day"].to_numpy() - day0, len(vids), T)
        out[comp.label] = ((dtn >= 1) & (dtn <= HORIZON_DAYS)).astype(np.int8)
        out[comp.days_to_need] = dtn
    out[COMPLETE] = np.broadcast_to(np.arange(T) + day0 + HORIZON_DAYS <= until, (len(vids), T))
    return out
