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
    f = od.forecast(dd, date(2026, 4, 10), service_odometer=(date(2026, 1, 1), 30_000.0))
    assert f.status == "ok" and f.odometer_from == "service record + trips"
    assert f.km_per_day == pytest.approx((50, 50))
    assert f.odometer_km == pytest.approx(30_000 + 50 * 89)   # day 0 is the service day; 10 days unseen


def test_stopped_telemetry_is_said_not_guessed():
    trips = regular_trips(60)
    f = od.forecast(od.daily_driving(trips)[VIN], date(2026, 3, 20))
    assert f.status == "telemetry stopped since 2026-03-01" and f.reach(1e9) is None
    assert od.forecast(None, date(2026, 3, 20), vehicle_id=VIN).status == "no telemetry"
