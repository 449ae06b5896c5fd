"""Service reminders: schedules as data, the odometer forecast, reminders through the outbox."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from autopdm import schedules
from autopdm.pipeline import odometer as od

VIN = "WVWZZZ1KZAW000123"


def regular_trips(days: int, start: str = "2026-01-01", weekday_km: float = 40.0, weekend_km: float = 100.0,
                  odometer0: float | None = 20_000.0, vin: str = VIN, skip: set[int] = frozenset()) -> pd.DataFrame:
    """One trip a day: `weekday_km` Monday–Friday, `weekend_km` on weekends; odometer readings unless None."""
    rows, odo = [], odometer0 or 0.0
    for k in range(days):
        d = pd.Timestamp(start) + pd.Timedelta(days=k)
        km = weekend_km if d.weekday() >= 5 else weekday_km
        odo += km
        if k in skip:
            continue
        rows.append({"vehicle_id": vin, "start_ts": d.tz_localize("UTC") + pd.Timedelta(hours=8),
                     "distance_km": km, "odometer_end_km": odo if odometer0 is not None else np.nan})
    return pd.DataFrame(rows)


# -- schedules -------------------------------------------------------------------------------------

def test_shipped_schedules_resolve_per_make_and_model():
    s = schedules.load(schedules.default_path())
    default = {r.service: r for r in s.for_vehicle("Fiat", "500")}
    assert default["brake_check"].every_km == 10_000 and default["oil_service"].every_km == 15_000
    assert default["battery_test"].from_age_years == 3 and default["battery_test"].every_km is None
    toyota = {r.service: r for r in s.for_vehicle("TOYOTA", "Yaris")}
    assert toyota["oil_service"].every_km == 10_000
    van = {r.service: r for r in s.for_vehicle("Volkswagen", "Transporter")}
    assert van["oil_service"].every_months == 24 and van["brake_check"].every_km == 10_000
    assert ("other", "replace") in default["oil_service"].done_by


@pytest.mark.parametrize("text, where", [
    ("services: {oil: {done_by: [other/replace]}}\nschedules: {default: {oil: {every_km: -5}}}\n",
     "schedules.default.oil.every_km"),
    ("services: {oil: {done_by: [engine/replace]}}\nschedules: {default: {oil: {every_km: 5}}}\n",
     "services.oil.done_by[0]"),
    ("services: {oil: {done_by: [other/replace]}}\nschedules: {default: {oil: {every_km: 5}}, Fiat: {brakes: {every_km: 1}}}\n",
     "schedules.Fiat.brakes"),
    ("services: {oil: {done_by: [other/replace]}}\nschedules: {default: {oil: {evry_km: 5}}}\n",
     "schedules.default.oil.evry_km"),
    ("services: {oil: {done_by: [other/replace]}}\nschedules: {Fiat: {oil: {every_km: 5}}}\n", "schedules"),
    ("services: {oil: {done_by: [other/replace]}}\nschedules: {default: {oil: {from_age_years: 3}}}\n",
     "schedules.default.oil"),
    ("services: [oops\n", "not a YAML file"),
])
def test_schedule_errors_name_the_file_and_key(tmp_path, text, where):
    p = tmp_path / "mine.yaml"
    p.write_text(text)
    with pytest.raises(schedules.ScheduleError) as e:
        schedules.load(p)
    assert str(e.value).startswith(f"{p}: ") and where in str(e.value)


def test_schedules_setting_points_to_the_workshops_file(tmp_path, monkeypatch):
    p = tmp_path / "workshop.yaml"
    p.write_text("services: {oil: {text: Oil, done_by: [other/replace]}}\nschedules: {default: {oil: {every_km: 7500}}}\n")
    monkeypatch.setenv("AUTOPDM_SCHEDULES", str(p))
    assert [r.every_km for r in schedules.load().for_vehicle("Fiat", "500")] == [7500]
    monkeypatch.setenv("AUTOPDM_SCHEDULES", str(tmp_path / "missing.yaml"))
    with pytest.raises(schedules.ScheduleError, match="missing.yaml: cannot read"):
        schedules.load()


# -- odometer forecast -----------------------------------------------------------------------------

def test_forecast_of_a_regular_driver_hits_the_day():
    trips = regular_trips(120)
    as_of = date(2026, 4, 30)  # day 119, a Thursday
    f = od.forecast(od.daily_driving(trips)[VIN], as_of)
    assert f.status == "ok" and f.odometer_from == "odometer"
    true_now = float(trips["odometer_end_km"].iloc[-1])
    assert f.odometer_km == pytest.approx(true_now)
    assert f.km_per_day[0] == pytest.approx(40) and f.km_per_day[1] == pytest.approx(100)
    # Fri 40, Sat 100, Sun 100, Mon 40 → +280 km is reached on Monday May 4
    r = f.reach(true_now + 280)
    assert r["date"] == "2026-05-04" and r["earliest"] <= r["date"] <= r["latest"]
    assert f.reach(true_now - 1)["date"] == as_of.isoformat()  # already passed: due now


def test_forecast_bridges_gaps_and_uses_service_odometer_without_an_odometer_pid():
    # no odometer readings; a 10-day gap in telemetry must not be read as 10 parked days
    trips = regular_trips(100, weekday_km=50, weekend_km=50, odometer0=None, skip=set(range(80, 90)))
    dd = od.daily_driving(trips)[VIN]
    f = od.forecast(dd, date(2026, 4, 10), service_odometers=[(date(2026, 1, 1), 30_000.0)])
    assert f.status == "ok" and f.odometer_from == "service record + trips"
    assert f.km_per_day == pytest.approx((50, 50))
    assert f.odometer_km == pytest.approx(30_000 + 50 * 89)   # day 0 is the service day; 10 days unseen


def test_stopped_telemetry_is_said_not_guessed():
    trips = regular_trips(60)
    f = od.forecast(od.daily_driving(trips)[VIN], date(2026, 3, 20))
    assert f.status == "telemetry stopped since 2026-03-01" and f.reach(1e9) is None
    assert od.forecast(None, date(2026, 3, 20), vehicle_id=VIN).status == "no telemetry"


# -- due dates and reminders -----------------------------------------------------------------------

from autopdm.pipeline import reminders as rm  # noqa: E402


def _schedules(text: str, tmp_path) -> schedules.Schedules:
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return schedules.load(p)


def test_due_date_is_the_earlier_of_km_and_time(tmp_path):
    s = _schedules("services: {oil: {text: Oil, done_by: [other/replace]}}\n"
                   "schedules: {default: {oil: {every_km: 15000, every_months: 12}}}\n", tmp_path)
    trips = regular_trips(120, weekday_km=50, weekend_km=50)          # 50 km a day, odometer 26,000 on Apr 30
    dd = od.daily_driving(trips)[VIN]
    as_of = date(2026, 4, 30)
    fc = od.forecast(dd, as_of)
    car = {"make": "Fiat", "model": "500", "first_registration_date": date(2020, 6, 1)}
    # done at 13,000 km on 2025-05-20: due by time (2026-05-20) before 28,000 km (2026-06-09)
    events = [(date(2025, 5, 20), "other", "replace", 13_000.0)]
    (d,) = rm.due_services(car, events, fc, as_of, s)
    assert (d["due_by"], d["due_date"], d["due_km"], d["days_left"]) == ("time", "2026-05-20", 28_000, 20)
    assert d["forecast"]["date"] == "2026-06-09"
    # done at 11,500 km on 2025-12-01: 26,500 km in 10 days comes before 2026-12-01
    events = [(date(2025, 12, 1), "other", "replace", 11_500.0)]
    (d,) = rm.due_services(car, events, fc, as_of, s)
    assert (d["due_by"], d["due_date"], d["days_left"]) == ("km", "2026-05-10", 10)
    # never done: the next multiple of 15,000 km, or the next registration anniversary
    (d,) = rm.due_services(car, [], fc, as_of, s)
    assert d["due_km"] == 30_000 and d["due_by_date"] == "2026-06-01" and d["due_by"] == "time"
    # passed 1,000 km ago at 50 km a day: 20 days overdue, reminded; 2,000 km ago (40 days): left to the advisor
    (d,) = rm.due_services(car, [(date(2025, 12, 1), "other", "replace", 10_000.0)], fc, as_of, s)
    assert (d["due_by"], d["days_left"], d["due_date"]) == ("km", -20, "2026-04-10") and rm.upcoming([d]) == [d]
    (d,) = rm.due_services(car, [(date(2025, 12, 1), "other", "replace", 9_000.0)], fc, as_of, s)
    assert d["days_left"] == -40 and rm.upcoming([d]) == []
    # telemetry stopped: only the time limit counts, and the status says why
    late = od.forecast(dd, date(2026, 6, 20))
    (d,) = rm.due_services(car, events, late, date(2026, 6, 20), s)
    assert d["due_by"] == "time" and d["forecast"] is None and d["odometer_status"].startswith("telemetry stopped since")


class _NoAlerts:
    """A stand-in champion that never alerts: these tests are about reminders, not risks."""
    feature_names, threshold, name, version = [], 0.5, "autopdm-none", "1"

    def predict(self, X):
        return np.zeros(len(X))


def _home_with_cars(home):
    from autopdm import store
    from autopdm.ingest.crm import import_records

    cars = pd.DataFrame({"vehicle_id": [VIN, "WVWZZZ1KZAW000999"], "make": ["Fiat", "Fiat"], "model": ["500", "500"],
                         "first_registration_date": ["2020-06-01", "2020-06-01"], "customer_id": ["C1", "C2"],
                         "preferred_channel": ["wechat", "email"]})
    events = pd.DataFrame({"event_id": ["E1"], "vehicle_id": [VIN], "date": ["2025-12-01"], "odometer_km": [16_500.0],
                           "component": ["brake"], "action": ["inspect"]})
    res = import_records({"vehicles": cars, "service_events": events}, home, origin="test")
    assert not any(r.quarantined for r in res.values())
    trips = regular_trips(131, weekday_km=50, weekend_km=50)   # 26,000 km on 2026-04-30, to 2026-05-11
    store.write_table(trips.assign(source="sim"), "trips", home)
    feats = pd.DataFrame({"vehicle_id": [VIN], "date": [pd.Timestamp("2026-04-30")]})
    store.write_table(feats, "features", home)


def test_reminder_issued_once_per_service_and_due_date_and_delivered_signed(home, tmp_path, monkeypatch):
    from autopdm.delivery.outbox import Outbox
    from autopdm.serving.score import score_fleet

    from .conftest import free_port
    from .procs import SECRET, receiver_work_orders, start_receiver, stop

    _home_with_cars(home)
    port = free_port()
    proc = start_receiver(home.home, port, tmp_path / "receiver.log")
    try:
        monkeypatch.setenv("AUTOPDM_CRM_WEBHOOK_URL", f"http://127.0.0.1:{port}/work-orders")
        monkeypatch.setenv("AUTOPDM_CRM_WEBHOOK_SECRET", SECRET)
        champs = {"brake": _NoAlerts()}
        # brake check done at 16,500 km: due at 26,500 km = 10 days after Apr 30 → not yet
        r0 = score_fleet("2026-04-28", home, emit=True, champions=champs)
        assert r0.reminders == [] and r0.enqueued == 0
        r1 = score_fleet("2026-05-04", home, emit=True, champions=champs)   # 26,200 km: due May 10, 6 days
        (rem,) = [r for r in r1.reminders if r["service"] == "brake_check"]
        assert rem["kind"] == "reminder" and rem["channel"] == "wechat" and rem["customer_id"] == "C1"
        assert rem["due"]["due_date"] == "2026-05-10" and rem["due"]["due_km"] == 26_500
        assert r1.delivery["delivered"] >= 1
        # the same day again, and the next days while the forecast moves: nothing new
        for day in ("2026-05-04", "2026-05-08"):
            r = score_fleet(day, home, emit=True, champions=champs)
            assert rem["work_order_id"] not in Outbox.open(home).rows(status="pending")
            assert r.enqueued == 0, (day, r.summary())
        got = [w for w in receiver_work_orders(port) if w["work_order_id"] == rem["work_order_id"]]
        # the receiver verified the signature and stored the body once, as sent
        assert len(got) == 1 and got[0]["_deliveries"] == 1
        assert {k: v for k, v in got[0].items() if not k.startswith("_")} == rem
        rows = [r for r in Outbox.open(home).rows() if r["work_order_id"] == rem["work_order_id"]]
        assert len(rows) == 1 and rows[0]["component"] == "reminder:brake_check" and rows[0]["status"] == "delivered"
        # no personal data in the payload: the customer id and channel only
        assert set(rem) >= {"customer_id", "channel"} and not {"name", "phone", "email"} & set(rem)
    finally:
        stop(proc)


def test_a_service_done_closes_the_undelivered_reminder(home):
    from autopdm.delivery.outbox import CLOSED, Outbox
    from autopdm.ingest.crm import import_records
    from autopdm.serving.score import score_fleet

    _home_with_cars(home)
    champs = {"brake": _NoAlerts()}
    r = score_fleet("2026-05-04", home, emit=True, deliver=False, champions=champs)
    rid = next(x["work_order_id"] for x in r.reminders if x["service"] == "brake_check")
    import_records({"service_events": pd.DataFrame({
        "event_id": ["E2"], "vehicle_id": [VIN], "date": ["2026-05-06"], "odometer_km": [26_300.0],
        "component": ["brake"], "action": ["inspect"]})}, home, origin="test")
    r = score_fleet("2026-05-07", home, emit=True, deliver=False, champions=champs)
    row = next(x for x in Outbox.open(home).rows() if x["work_order_id"] == rid)
    assert row["status"] == CLOSED and "service done on 2026-05-06" in row["closed_reason"]
    assert not [x for x in r.reminders if x["service"] == "brake_check"]   # next one: 36,300 km
