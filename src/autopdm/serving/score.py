"""Batch scoring: `autopdm score --as-of DATE [--emit]`.

Scores every vehicle on its latest feature row at `as_of` with the three champion models, turns
risks over the threshold into work orders, and with `--emit` puts them into the outbox (suppressing
recommendations that are still open) and makes one delivery pass when a webhook is configured.
Service reminders due within 7 days (`pipeline.reminders`) go out the same way.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

from autopdm.serving import recommend
from autopdm import schedules, store
from autopdm.pipeline import reminders
from autopdm.config import Paths, Settings
from autopdm.delivery.dispatcher import Dispatcher
from autopdm.delivery.outbox import Outbox
from autopdm.modeling.champion import load_champions
from autopdm.serving.feature_index import latest_feature_rows

MAX_STALENESS_DAYS = 30


@dataclass
class ScoreResult:
    as_of: str
    vehicles: int = 0
    scored: int = 0
    stale: int = 0
    no_features: int = 0
    alerts: dict = field(default_factory=dict)  # component -> {band: n}
    work_orders: list = field(default_factory=list)
    reminders: list = field(default_factory=list)       # service reminders due within 7 days (pipeline.reminders)
    enqueued: int = 0
    suppressed: int = 0
    closed: int = 0
    delivery: dict | None = None

    def summary(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k not in ("work_orders", "reminders")}
        d["n_work_orders"] = len(self.work_orders)
        d["n_reminders"] = len(self.reminders)
        return d


def score_fleet(as_of, paths: Paths | None = None, emit: bool = False, deliver: bool = True,
                champions=None, max_staleness_days: int = MAX_STALENESS_DAYS) -> ScoreResult:
    paths = paths or Paths.from_env()
    as_of = recommend.to_date(as_of)
    res = ScoreResult(as_of=as_of.isoformat())
    vehicles = store.read_table("vehicles", paths)
    res.vehicles = len(vehicles)
    if vehicles.empty:
        return res
    scheds = schedules.load()   # a bad schedules file is said before any work is done
    champions = champions or load_champions(paths)
    rows = latest_feature_rows(paths, list(vehicles["vehicle_id"]), as_of)
    res.no_features = res.vehicles - (rows["vehicle_id"].nunique() if len(rows) else 0)
    if len(rows) and "date" in rows:
        age = (pd.Timestamp(as_of) - pd.to_datetime(rows["date"]).dt.tz_localize(None)).dt.days
        res.stale = int((age > max_staleness_days).sum())
        rows = rows[age <= max_staleness_days]
    res.scored = len(rows)
    if not rows.empty:
        assessments = recommend.assess(rows, champions, as_of, with_evidence="alerts")
        res.work_orders = recommend.work_orders(assessments, vehicles)
        counts: dict[str, Counter] = {c: Counter() for c in champions}
        for a in assessments:
            for comp, c in a["components"].items():
                counts[comp][c["risk_band"]] += 1
        res.alerts = {c: dict(v) for c, v in counts.items()}
    events = store.read_table("service_events", paths)
    res.reminders = reminders.payloads(reminders.fleet_due(vehicles, events, _trips(paths), as_of, scheds), vehicles, as_of)
    if emit:
        ob = Outbox.open(paths)
        er = ob.enqueue(res.work_orders + res.reminders, as_of=as_of)
        res.enqueued, res.suppressed = len(er.enqueued), len(er.suppressed)
        # after enqueueing: an order for a part that was serviced on the scoring day itself is closed
        # before any delivery, instead of going out once and being closed by the next run
        res.closed = ob.close_serviced(events, as_of) + reminders.close_done(ob, events, as_of, scheds)
        if deliver and Settings().crm_webhook_url:
            with Dispatcher(ob, timeout=5.0) as d:
                res.delivery = d.run_once(deadline=time.monotonic() + 60).as_dict()
    return res


def _trips(paths: Paths) -> pd.DataFrame:
    return store.read_table("trips", paths, columns=["vehicle_id", "start_ts", "distance_km", "odometer_end_km"])
