"""What the service answers from: champion models, the features table in memory, and every
vehicle's latest-day risks and evidence scored ahead of the first request.

A `Snapshot` never changes after it is built. When the features table or a champion alias moves,
`serving.models` builds a new one beside it and swaps the reference; a request keeps the snapshot
it started with, so no request ever sees half of a swap.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import NamedTuple

import pandas as pd

import numpy as np

from autopdm.serving import recommend
from autopdm.serving.feature_index import LRU, FeatureIndex

PRESCORE_CHUNK = 4096  # rows per model call when scoring the fleet (bounds the contribution matrix)


class Latest(NamedTuple):
    """A vehicle's latest feature row, scored."""
    day: date                       # its feature day (a request for this day or later is answered by it)
    ts: pd.Timestamp                # the same day as the features table holds it
    scored: dict                    # recommend.score_rows of the row


@dataclass
class Snapshot:
    champions: Mapping              # component → Champion
    features: FeatureIndex
    latest: dict[str, Latest]       # vehicle → its latest row scored, for the whole fleet
    cache: LRU                      # (vehicle, feature day) → scored row, for past days asked for
    built_s: float = 0.0            # seconds the fleet scoring took
    built_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        self.versions = {c: str(m.version) for c, m in self.champions.items()}
        # column order of compact /predict rows: the sorted union of the models' features
        self.feature_order = feature_order(self.champions)
        at = {f: i for i, f in enumerate(self.feature_order)}
        self._columns = {c: np.array([at[f] for f in m.feature_names], dtype=np.intp) for c, m in self.champions.items()}

    def info(self) -> dict:
        return {"components": {c: {"name": m.name, "version": str(m.version), "threshold": float(m.threshold),
                                   "feature_names": list(m.feature_names)} for c, m in self.champions.items()},
                "feature_order": self.feature_order,
                "features": {"latest_day": _iso(self.features.max_date), "in_memory_from": _iso(self.features.window_start),
                             "vehicles_scored": len(self.latest)}}

    def predict(self, M: np.ndarray) -> list[dict]:
        """Calibrated risks per row of a matrix in `feature_order`."""
        risks = {c: np.round(m.predict_matrix(M[:, self._columns[c]]), 6).tolist()
                 for c, m in self.champions.items()}
        comps = list(risks)
        return [dict(zip(comps, r)) for r in zip(*risks.values())]


def _iso(d) -> str | None:
    return d.isoformat() if d is not None else None


def feature_order(champions: Mapping) -> list[str]:
    return sorted({f for m in champions.values() for f in m.feature_names})


def build(champions: Mapping, features: FeatureIndex, cache_size: int) -> Snapshot:
    """Score every vehicle's latest feature row: one prediction and one TreeSHAP call per model and
    chunk of rows, instead of one per request."""
    t = time.perf_counter()
    pos = features.latest_positions()
    latest: dict[str, Latest] = {}
    for i in range(0, len(pos), PRESCORE_CHUNK):
        rows = features.frame.iloc[pos[i:i + PRESCORE_CHUNK]]
        for v, ts, scored in zip(rows["vehicle_id"], rows["date"], recommend.score_rows(rows, champions)):
            latest[v] = Latest(ts.date(), ts, scored)
    return Snapshot(dict(champions), features, latest, LRU(cache_size), built_s=time.perf_counter() - t)


def predict_many(items: list[tuple[Snapshot, np.ndarray]]) -> list[list[dict]]:
    """One model pass per snapshot for concurrent /predict requests (serving.batching)."""
    out: list = [None] * len(items)
    groups: dict[int, list[int]] = {}
    for k, (snap, _) in enumerate(items):
        groups.setdefault(id(snap), []).append(k)
    for ks in groups.values():
        snap = items[ks[0]][0]
        mats = [items[k][1] for k in ks]
        res = snap.predict(np.concatenate(mats) if len(mats) > 1 else mats[0])
        at = 0
        for k, m in zip(ks, mats):
            out[k], at = res[at:at + len(m)], at + len(m)
    return out
