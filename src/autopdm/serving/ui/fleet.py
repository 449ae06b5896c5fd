"""What the advisor's pages show: the cars at risk today, a car's risk history and evidence, and its
work orders with their delivery state and recorded outcomes.

"Today" is the snapshot's latest feature day (`Snapshot.features.max_date`): the day the fleet was
scored for. The list is what `autopdm score` would alert on that day (the same staleness rule),
computed once per snapshot (`AlertsOfSnapshot`); delivery states and outcomes are read at every
request, since the dispatcher and the CRM change them at any time.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pandas as pd

from autopdm import components, store
from autopdm.config import Paths
from autopdm.delivery import outbox
from autopdm.pipeline import reminders
from autopdm.serving import explain, recommend, upcoming
from autopdm.serving.score import MAX_STALENESS_DAYS
from autopdm.serving.snapshot import Snapshot

BANDS = ("high", "medium")
HISTORY_DAYS = 90
OUTBOX_COLUMNS = ("work_order_id, vehicle_id, component, window_start, window_end, issued_on, status, attempts, "
                  "last_status, last_error, created_at, delivered_at, closed_at, closed_reason")


@dataclass(frozen=True)
class Alert:
    vehicle_id: str
    customer_id: str | None
    channel: str | None
    component: str
    part: str
    risk: float
    band: str
    window: dict
    work_order_id: str
    data_day: date            # the feature day the risk comes from (today, or a few days before)


def today(snap: Snapshot) -> date:
    return snap.features.max_date or date.today()


def alerts(snap: Snapshot) -> list[Alert]:
    """Every alerting (vehicle, component) of the fleet today, riskiest first."""
    day, out = today(snap), []
    for v, latest in snap.latest.items():
        if (day - latest.day).days > MAX_STALENESS_DAYS:
            continue
        contact = snap.features.contact(v)
        for comp, c in recommend.finalize(v, latest.scored, day).items():
            if c["alert"]:
                out.append(Alert(v, contact["customer_id"], contact["channel"], comp, components.get(comp).part,
                                 c["risk"], c["risk_band"], c["recommended_window"], c["work_order_id"], latest.day))
    out.sort(key=lambda a: (-a.risk, a.vehicle_id, a.component))
    return out


class AlertsOfSnapshot:
    """`alerts` computed once per snapshot: they change only when the service swaps in a new one."""

    def __init__(self) -> None:
        self._last: tuple[Snapshot, list[Alert]] | None = None
        self._lock = threading.Lock()

    def __call__(self, snap: Snapshot) -> list[Alert]:
        with self._lock:
            if self._last is None or self._last[0] is not snap:
                self._last = (snap, alerts(snap))
            return self._last[1]


# ------------------------------------------------------------------------------- work orders and outcomes


def work_orders(paths: Paths, vehicle_id: str | None = None, window_end_from: date | None = None,
                service_reminders: bool = False) -> list[dict]:
    """Outbox rows (without their bodies), newest first: one vehicle's, or those whose window ends on or
    after a day. None when the service has never written an outbox. Work orders, or with
    `service_reminders` the service reminders that share the outbox."""
    if not paths.outbox.exists():
        return []
    q = f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE component {'' if service_reminders else 'NOT '}LIKE ?"
    args = [reminders.slot("%")]
    if vehicle_id is not None:
        q, args = q + " AND vehicle_id = ?", [*args, vehicle_id]
    if window_end_from is not None:
        q, args = q + " AND window_end >= ?", [*args, window_end_from.isoformat()]
    con = outbox.connect(paths.outbox)
    try:
        rows = [dict(r) for r in con.execute(q + " ORDER BY issued_on DESC, created_at DESC", args)]
    finally:
        con.close()
    for r in rows:
        r["state"], r["state_text"] = delivery_state(r)
    return rows


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if ts else ""


def delivery_state(row: dict) -> tuple[str, str]:
    """(state, words) of a work order's delivery to the CRM."""
    status, n = row["status"], row.get("attempts") or 0
    if status == outbox.DELIVERED:
        text = f"delivered {_when(row.get('delivered_at'))}"
        if row.get("closed_at"):
            text += f"; closed ({row.get('closed_reason') or 'closed'})"
        return "delivered", text
    if status == outbox.PARKED:
        return "failed", f"not delivered: parked after {n} attempts ({_last_error(row)}); an operator must retry"
    if status == outbox.CLOSED:
        return "closed", f"closed before delivery ({row.get('closed_reason') or 'closed'})"
    if n:
        return "retrying", f"being retried: {n} attempts so far ({_last_error(row)})"
    return "queued", "queued for delivery"


def _last_error(row: dict) -> str:
    if row.get("last_status"):
        return f"the CRM answered {row['last_status']}"
    return str(row.get("last_error") or "no answer")[:120]


def current_orders(paths: Paths, day: date) -> dict[tuple[str, str], dict]:
    """(vehicle, component) → its latest work order whose window has not ended by `day`."""
    out: dict[tuple[str, str], dict] = {}
    for r in work_orders(paths, window_end_from=day):
        out.setdefault((r["vehicle_id"], r["component"]), r)  # newest first
    return out


def outcomes(paths: Paths, vehicle_id: str) -> pd.DataFrame:
    """A car's recorded outcomes (from any source: the CRM's and the advisors')."""
    return _sorted(store.read_table("outcomes", paths, filters=[("vehicle_id", "==", vehicle_id)]))


def outcomes_of(paths: Paths, work_order_ids: list[str]) -> pd.DataFrame:
    return _sorted(store.read_table("outcomes", paths, filters=[("work_order_id", "in", list(work_order_ids))]))


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["date", "status"], kind="stable") if len(df) else df


def outcomes_by_order(df: pd.DataFrame) -> dict[str, list[dict]]:
    """work_order_id → its recorded outcomes, oldest first."""
    out: dict[str, list[dict]] = {}
    for r in df.to_dict("records"):
        d = r.get("date")
        out.setdefault(str(r["work_order_id"]), []).append(
            {"status": r["status"], "date": pd.Timestamp(d).date().isoformat() if d is not None and not pd.isna(d) else "",
             "source": r.get("source") or ""})
    return out


# ---------------------------------------------------------------------------------------------- a vehicle


@dataclass
class ComponentView:
    name: str
    part: str
    risk: float
    band: str
    alert: bool
    threshold: float
    high_cut: float
    window: dict | None
    action: str | None
    work_order_id: str | None               # today's recommendation (None: no alert)
    facts: list[str]                        # the part's state and trends in words
    evidence: list[str]                     # what the model weighed most, in words
    history: list[tuple[date, float]]       # (feature day, risk)


@dataclass
class VehicleView:
    vehicle_id: str
    customer_id: str | None
    channel: str | None
    today: date
    data_day: date
    components: list[ComponentView]
    work_orders: list[dict] = field(default_factory=list)   # outbox rows, each with its `outcomes`
    reminders: list[dict] = field(default_factory=list)     # services due within 30 days (serving.upcoming)
    unsent: list[dict] = field(default_factory=list)          # alerts without a current work order


def rows_of(snap: Snapshot, vehicle_id: str) -> pd.DataFrame:
    """The vehicle's feature rows held in memory (sorted by vehicle and day: a binary search), with every
    column the models read — the part-state and trend columns the words come from among them."""
    fr = snap.features.frame
    vids = fr["vehicle_id"].to_numpy()
    return fr.iloc[np.searchsorted(vids, vehicle_id, "left"):np.searchsorted(vids, vehicle_id, "right")]


def risk_history(snap: Snapshot, rows: pd.DataFrame, days: int = HISTORY_DAYS) -> dict[str, list[tuple[date, float]]]:
    """component → (day, risk) over a vehicle's feature rows of the last `days` days."""
    rows = rows[rows["date"] >= pd.Timestamp(today(snap) - timedelta(days=days))]
    if rows.empty:
        return {c: [] for c in snap.champions}
    dates = [d.date() for d in rows["date"]]
    return {c: list(zip(dates, np.asarray(m.predict(rows), dtype=float).tolist())) for c, m in snap.champions.items()}


def vehicle(snap: Snapshot, paths: Paths, vehicle_id: str) -> VehicleView | None:
    """Everything the vehicle page shows, or None for a car the snapshot has not scored."""
    latest = snap.latest.get(vehicle_id)
    if latest is None:
        return None
    day = today(snap)
    final = recommend.finalize(vehicle_id, latest.scored, day)
    rows = rows_of(snap, vehicle_id)
    row = rows.iloc[-1] if len(rows) else pd.Series({"date": latest.ts})
    history = risk_history(snap, rows)
    comps = []
    for comp, c in final.items():
        thr, said = c["threshold"], explain.facts(comp, row)
        comps.append(ComponentView(comp, components.get(comp).part, c["risk"], c["risk_band"], c["alert"], thr,
                                   recommend.high_cut(thr), c["recommended_window"], c["recommended_action"],
                                   c["work_order_id"], said, explain.evidence_words(c["evidence"], said),
                                   history.get(comp, [])))
    comps.sort(key=lambda x: -x.risk)
    contact = snap.features.contact(vehicle_id)
    view = VehicleView(vehicle_id, contact["customer_id"], contact["channel"], day, latest.day, comps)
    recorded = outcomes_by_order(outcomes(paths, vehicle_id))
    view.work_orders = [dict(r, outcomes=recorded.get(r["work_order_id"], [])) for r in work_orders(paths, vehicle_id)]
    open_comps = {r["component"] for r in view.work_orders if r["window_end"] >= day.isoformat()}
    view.unsent = [_unsent(c, recorded) for c in comps if c.alert and c.name not in open_comps]
    view.reminders = _with_delivery(upcoming.safe_upcoming(snap, vehicle_id, day),
                                    work_orders(paths, vehicle_id, service_reminders=True))
    return view


def _with_delivery(due: list[dict], rows: list[dict]) -> list[dict]:
    """Each upcoming service with what became of its reminder: the outbox row's state, or when it goes out."""
    by_id = {r["work_order_id"]: r for r in rows}
    out = []
    for s in due:
        r = by_id.get(s["reminder_id"])
        text = r["state_text"] if r else ("goes out at the next scoring" if s["reminder"] else
                                          "not sent: overdue too long for an automatic reminder" if s["days_left"] < 0
                                          else f"goes out {reminders.LEAD_DAYS} days before")
        out.append({**s, "state_text": text})
    return out


def _unsent(c: ComponentView, recorded: dict[str, list[dict]]) -> dict:
    """An alert not (yet) sent as a work order, with the outcomes recorded against its id."""
    return {"component": c.name, "part": c.part, "work_order_id": c.work_order_id, "window": c.window,
            "outcomes": recorded.get(c.work_order_id or "", [])}
