"""POST /assess: which feature row answers each vehicle, and the answer.

* A vehicle's latest feature row (as_of on or after its latest feature day, or no as_of) was scored
  with the whole fleet when the snapshot was built: the answer is a dictionary lookup.
* An earlier row still in memory (the last AUTOPDM_ASSESS_HISTORY_DAYS days) is scored on demand,
  together with whatever other requests wait at that moment, and kept in an LRU.
* An as_of before the in-memory history is read from the Parquet table (slowest).
Past rows cost a model pass each, so a request may ask for at most AUTOPDM_ASSESS_PAST_MAX_VEHICLES
vehicles whose answer is not their latest row. All of that is decided in `plan`, before a request
joins others; `answer_many` scores a group and one failing request never fails another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import pandas as pd

from autopdm.serving import recommend, upcoming
from autopdm.serving.feature_index import latest_rows_many
from autopdm.serving.requests import RequestError
from autopdm.serving.snapshot import Snapshot


@dataclass
class Plan:
    snap: Snapshot
    day: date
    vehicles: list[str]                                    # known vehicles with a row, in request order
    unknown: list[str] = field(default_factory=list)
    no_data: list[str] = field(default_factory=list)
    scored: dict = field(default_factory=dict)             # vehicle → (feature day, scored row)
    todo: dict = field(default_factory=dict)               # vehicle → row position (to score)
    from_table: bool = False                               # before the in-memory history

    @property
    def complete(self) -> bool:
        return not self.todo and not self.from_table


def plan(snap: Snapshot, vehicle_ids: list[str], as_of: str | None, past_max: int) -> Plan:
    fx = snap.features
    day = date.fromisoformat(as_of) if as_of else (fx.max_date or date.today())
    ids = list(dict.fromkeys(vehicle_ids))
    p = Plan(snap, day, [])
    if not fx.in_memory(day):
        if len(ids) > past_max:
            raise _too_many(len(ids), past_max, "before the in-memory history")
        p.from_table, p.vehicles = True, ids
        return p
    frame_dates = fx.frame["date"]
    for v in ids:
        last = snap.latest.get(v)
        if last is not None and day >= last.day:  # the usual call: answered by the scored fleet
            p.vehicles.append(v)
            p.scored[v] = (last.ts, last.scored)
            continue
        hit = fx.locate(v, day)
        if hit is None:
            (p.no_data if v in fx.known else p.unknown).append(v)
            continue
        p.vehicles.append(v)
        d = frame_dates.iat[hit[0]]
        got = snap.cache.get((v, d))
        if got is None:
            p.todo[v] = hit[0]
        else:
            p.scored[v] = (d, got)
    if len(p.todo) > past_max:
        raise _too_many(len(p.todo), past_max, "at a day before their latest features")
    return p


def _too_many(n: int, cap: int, what: str) -> RequestError:
    return RequestError("vehicle_ids", f"at most {cap} vehicles per request {what} (got {n}); split the request, "
                                       "or score the fleet with `autopdm score --as-of`", status=400)


def answer(p: Plan) -> dict:
    fx = p.snap.features
    out = []
    for v in p.vehicles:
        hit = p.scored.get(v)
        if hit is None:  # read from the table: it had no row by then
            continue
        d, scored = hit
        out.append({"vehicle_id": v, "feature_date": d.date().isoformat(), **fx.contact(v),
                    "components": recommend.finalize(v, scored, p.day),
                    "upcoming_reminders": upcoming.safe_upcoming(p.snap, v, p.day)})
    if p.from_table:
        found = set(p.scored)
        missing = [v for v in p.vehicles if v not in found]
        p.unknown = [v for v in missing if v not in fx.known]
        p.no_data = [v for v in missing if v in fx.known]
    return {"as_of": p.day.isoformat(), "vehicles": out, "unknown": p.unknown, "no_data": p.no_data}


def answer_many(plans: list[Plan]) -> list[dict]:
    """Answers for concurrent requests (serving.batching): per snapshot, the rows still to score
    are scored in one model pass, and rows older than the in-memory history are read for all
    requests at once."""
    groups: dict[int, list[Plan]] = {}
    for p in plans:
        groups.setdefault(id(p.snap), []).append(p)
    for group in groups.values():
        snap = group[0].snap
        old = [p for p in group if p.from_table]
        if old:
            frames = latest_rows_many(snap.features.paths, [(p.vehicles, p.day) for p in old], snap.features.columns)
            _score(snap, list(zip(old, frames)))
        todo = [p for p in group if p.todo]
        if todo:
            pos = sorted({i for p in todo for i in p.todo.values()})
            rows = snap.features.frame.iloc[pos]
            at = {i: k for k, i in enumerate(pos)}
            _score(snap, [(p, rows.iloc[[at[i] for i in p.todo.values()]]) for p in todo], cache=True)
    return [answer(p) for p in plans]


def _score(snap: Snapshot, parts: list[tuple[Plan, pd.DataFrame]], cache: bool = False) -> None:
    """Score the rows of several plans in one pass (rows shared between plans once) and file each
    plan's answers; `cache` keeps them for the next request of the same vehicle-day."""
    rows = pd.concat([f for _, f in parts]) if len(parts) > 1 else parts[0][1]
    keys = list(zip(rows["vehicle_id"].astype(str), rows["date"]))
    uniq = list(dict.fromkeys(keys))
    first = {k: i for i, k in reversed(list(enumerate(keys)))}
    scored = dict(zip(uniq, recommend.score_rows(rows.iloc[[first[k] for k in uniq]], snap.champions))) if uniq else {}
    if cache:
        snap.cache.put_many(scored.items())
    at = 0
    for p, f in parts:
        for k in keys[at:at + len(f)]:
            p.scored[k[0]] = (k[1], scored[k])
        at += len(f)
        p.todo = {}
