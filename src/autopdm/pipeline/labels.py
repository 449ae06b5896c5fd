"""Labels of the features table: does a component need service within the horizon?

Labels look forward, features look back. `label_<c>` = 1 when a need of component c (the `needs`
derived from the workshop's records, `autopdm.pipeline.needs`: a reading at or below the limit, a
breakdown, or — where a part's records hold no readings — its replace/repair event) falls in
(d, d + HORIZON_DAYS]; `days_to_need_<c>` is the distance in days to the next need when one is known.
`label_complete` is False where the horizon runs past the end of the records (negatives there are
not yet known to be negatives): training and evaluation drop those rows. How needs and labels are
derived, with a worked example: docs/labels.md.
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
    """The last day whose labels are known: how far the records reach past `day_end`.

    service_days: day numbers of the service events and inspections (NO where missing); the features
    end at `day_end`, so only records within one horizon of it matter.
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


def build_labels(needs: pd.DataFrame, vids: pd.Index, day0: int, T: int, until: int) -> dict[str, np.ndarray]:
    """Label arrays (vehicles × days) of every registered component, then `label_complete`.

    needs: `autopdm.pipeline.needs.derive` of the records known by `until` (vehicle_id, component,
    need_day); needs of vehicles off the grid count for nothing.
    """
    out: dict[str, np.ndarray] = {}
    for comp in components.all_components():
        nd = needs[(needs["component"] == comp.name) & needs["vehicle_id"].isin(vids)]
        dtn = days_to_next(vids.get_indexer(nd["vehicle_id"]), nd["need_day"].to_numpy() - day0, len(vids), T)
        out[comp.label] = ((dtn >= 1) & (dtn <= HORIZON_DAYS)).astype(np.int8)
        out[comp.days_to_need] = dtn
    out[COMPLETE] = np.broadcast_to(np.arange(T) + day0 + HORIZON_DAYS <= until, (len(vids), T))
    return out
