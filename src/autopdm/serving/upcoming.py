"""Upcoming service reminders of a car at a day, for /assess and the advisor's page.

The inputs — the vehicles, their service records and their trips by day — are read once per
snapshot (in the background as soon as it is built; a request that comes earlier waits for them)
and kept with it, so they change when the features do. Each vehicle-day is then ~2–3 ms (the odometer forecast and one
due date per service) and kept in a small cache.
"""

from __future__ import annotations

import logging
import threading
from datetime import date

from autopdm import schedules, store
from autopdm.config import Paths
from autopdm.pipeline import odometer as od
from autopdm.pipeline import reminders
from autopdm.serving.feature_index import LRU

HORIZON_DAYS = 30      # services due within this many days are shown (a reminder goes out at LEAD_DAYS)
CACHE = 20_000
log = logging.getLogger("autopdm.upcoming")


class Upcoming:
    def __init__(self, paths: Paths) -> None:
        vehicles = store.read_table("vehicles", paths)
        self.vehicles = {str(r["vehicle_id"]): r for r in vehicles.drop_duplicates("vehicle_id").to_dict("records")}
        events = store.read_table("service_events", paths)
        self.events = schedules.event_lists(events)
        self.odometers = od.service_odometers(events)  # as the scoring run reads them (one per day: the highest)
        trips = store.read_table("trips", paths, columns=["vehicle_id", "start_ts", "distance_km", "odometer_end_km"])
        self.driving = od.daily_driving(trips)
        self.schedules = schedules.load()
        self._cache = LRU(CACHE)

    def due(self, vehicle_id: str, day: date) -> list[dict]:
        """Every service of the car's schedule with its due date (soonest first)."""
        key = (vehicle_id, day)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        ev = self.events.get(vehicle_id)
        fc = od.forecast(self.driving.get(vehicle_id), day, self.odometers.get(vehicle_id), vehicle_id=vehicle_id)
        out = reminders.due_services(self.vehicles.get(vehicle_id, {}), ev, fc, day, self.schedules)
        self._cache.put_many([(key, out)])
        return out

    def upcoming(self, vehicle_id: str, day: date, horizon_days: int = HORIZON_DAYS) -> list[dict]:
        """The services due within `horizon_days` (overdue ones too), each saying whether its reminder
        goes out at this day (`reminder`: due within LEAD_DAYS, or overdue by at most OVERDUE_DAYS)."""
        due = self.due(vehicle_id, day)
        out_now = {s["reminder_id"] for s in reminders.upcoming(due)}
        return [{**_public(s), "reminder": s["reminder_id"] in out_now} for s in due if s["days_left"] <= horizon_days]


def _public(s: dict) -> dict:
    return {k: s[k] for k in ("service", "text", "due_date", "due_by", "due_km", "due_by_date", "forecast",
                              "days_left", "odometer_km", "odometer_status", "last_done", "reminder_id")}


_lock = threading.Lock()


def of(snapshot) -> Upcoming:
    """The snapshot's `Upcoming`, read on first use."""
    up = getattr(snapshot, "_upcoming", None)
    if up is None:
        with _lock:
            up = getattr(snapshot, "_upcoming", None)
            if up is None:
                up = Upcoming(snapshot.features.paths)
                snapshot._upcoming = up
    return up


def warm(snapshot) -> None:
    """Read the snapshot's inputs ahead of the first request (a background thread of serving.models)."""
    try:
        of(snapshot)
    except (schedules.ScheduleError, OSError, ValueError, KeyError) as exc:
        log.warning("upcoming reminders unavailable: %s", exc)


def safe_upcoming(snapshot, vehicle_id: str, day: date) -> list[dict]:
    """`Upcoming.upcoming`, or [] with one logged line when the schedules or records cannot be used:
    a bad schedules file must not take the risks down with it."""
    try:
        return of(snapshot).upcoming(vehicle_id, day)
    except (schedules.ScheduleError, OSError, ValueError, KeyError) as exc:
        if not getattr(snapshot, "_upcoming_warned", False):
            snapshot._upcoming_warned = True
            log.warning("upcoming reminders unavailable: %s", exc)
        return []
