"""Drift monitoring: a fleet with a shifted climate or driving style is flagged, the same fleet is not — in any season."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from autopdm import monitor, store
from autopdm.cli import app
from autopdm.pipeline.features import build_features
from autopdm.sim.fleet import simulate_fleet, write_fleet

N_VEHICLES, DAYS, SEED = 200, 730, 1   # two years: the reference holds the current window's season a year earlier
FAST = {"num_iterations": 40, "early_stopping_rounds": 10}


def _features(fleet) -> pd.DataFrame:
    return build_features(fleet.trips, fleet.vehicles, fleet.service_events, fleet.dtc_events)


@pytest.fixture
def trained(home):
    """A mixed-climate fleet, its features and champions (few boosting rounds: the model is not under test)."""
    from autopdm.modeling.train import train_all

    fleet = simulate_fleet(N_VEHICLES, DAYS, seed=SEED)
    write_fleet(fleet, home)
    store.write_table(_features(fleet), "features", home)
    train_all(home, params=FAST)
    return home


def test_same_fleet_no_drift_shifted_fleets_drift(trained):
    home = trained
    runner = CliRunner()

    # the fleet the champions were trained on: exit 0, report and MLflow summary written
    res = runner.invoke(app, ["monitor", "--current-days", "30", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout[res.stdout.index("{"):res.stdout.rindex("}") + 1])
    assert summary["drift"] is False and summary["reference_source"].startswith("artifact")
    assert summary["drift_share"] < monitor.DEFAULT_DRIFT_SHARE
    assert set(summary["prediction_scores"]) == {"brake", "tire", "battery"}  # reported, not gating (see monitor)
    html = list(home.reports.glob("drift-*.html"))
    assert html and html[0].stat().st_size > 10_000
    assert summary["mlflow_run_id"]
    import mlflow

    mlflow.set_tracking_uri(home.tracking_uri)
    run = mlflow.get_run(summary["mlflow_run_id"])
    assert run.data.metrics["drift"] == 0.0 and "drift_share" in run.data.metrics
    assert "drift_summary.json" in [a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)]

    # the same vehicles in a hot climate: temperature columns move by ~1.7 reference SDs → exit 1
    hot = _features(simulate_fleet(N_VEHICLES, DAYS, seed=SEED, climate="hot"))
    store.write_table(hot, "features", home)
    res = runner.invoke(app, ["monitor", "--no-mlflow", "--no-report"])
    assert res.exit_code == 1, res.output
    r = json.loads(sorted(home.reports.glob("drift-*.json"))[-1].read_text())
    assert r["drift"] and r["data_drift"]
    assert any(c.startswith("ambient_temp_c") for c in r["severe_columns"])

    # twice as aggressive drivers: harsh-event rates and brake risk move
    aggressive = _features(simulate_fleet(N_VEHICLES, DAYS, seed=SEED, aggressiveness=2.0))
    r = monitor.run_monitor(home, features=aggressive, log_to_mlflow=False, write_report=False)
    assert r.drift and r.data_drift
    assert any(c.startswith("harsh_brake_per_100km") for c in r.severe_columns)
    assert r.prediction_drift["brake"]          # brake risk moves when drivers brake twice as hard


SEASON_VEHICLES, YEAR, SEASON_SEED = 150, 365, 2
MONTH_ENDS = [str(d.date()) for d in pd.date_range("2025-01-31", periods=12, freq="ME")]


def _max_score(r) -> str:
    c = max(r.column_scores, key=r.column_scores.get)
    return f"{r.current_end}: drift={r.drift}, max {c} {r.column_scores[c]:.2f}, share {r.drift_share:.2f}"


@pytest.mark.heavy
def test_season_is_not_drift_a_changed_fleet_is(home):
    """Trained on a gentle temperate fleet's year: none of its own twelve months is drift; a cold fleet and a hot
    fleet driven twice as hard are drift in the first 30-day window the monitor looks at."""
    from autopdm.modeling.champion import load_champions
    from autopdm.modeling.train import train_all

    def fleet(climate, aggressiveness):
        return _features(simulate_fleet(SEASON_VEHICLES, YEAR, seed=SEASON_SEED, climate=climate,
                                        aggressiveness=aggressiveness))

    own = fleet("temperate", 0.8)
    store.write_table(own, "features", home)
    train_all(home, params=FAST)
    champions = load_champions(home)
    runner = CliRunner()

    # the case: December of the training fleet's own year, through the command line → exit 0
    res = runner.invoke(app, ["monitor", "--current-days", "30", "--no-mlflow", "--no-report"])
    assert res.exit_code == 0, res.output
    dec = json.loads(sorted(home.reports.glob("drift-*.json"))[-1].read_text())
    assert dec["current_start"] == "2025-12-02" and dec["reference_source"] == "artifact"
    assert any(c.startswith("ambient_temp_c") for c in dec["season"]["moved_to_season"])
    assert any(c.startswith("cold_start_share") for c in dec["season"]["matched_on_temperature"])
    assert "held-out" in dec["season"]["prediction_reference"]

    # every month of that year: season, not drift
    months = [monitor.run_monitor(home, features=own, as_of=end, champions=champions, log_to_mlflow=False,
                                  write_report=False) for end in MONTH_ENDS]
    assert not any(r.drift for r in months), [_max_score(r) for r in months if r.drift]
    assert all(v < monitor.SEVERE_COLUMN_THRESHOLD for r in months for v in r.column_scores.values())
    # the first month's 30- and 90-day windows are not full yet: compared only where they are
    assert any(c.endswith("_90d") for c in months[0].skipped) and not months[-1].skipped

    # a fleet living in a colder climate, driven the same way: its ambient temperature is off the season
    cold = fleet("cold", 0.8)
    for end in ("2025-07-31", "2025-12-31"):  # summer (5 °C colder than the reference) and winter (13 °C)
        r = monitor.run_monitor(home, features=cold, as_of=end, champions=champions, log_to_mlflow=False,
                                write_report=False)
        assert r.drift and any(c.startswith("ambient_temp_c") for c in r.severe_columns), _max_score(r)

    # a hot fleet driven twice as hard: temperature and harsh events, through the command line → exit 1
    store.write_table(fleet("hot", 2.0), "features", home)
    res = runner.invoke(app, ["monitor", "--current-days", "30", "--no-mlflow", "--no-report"])
    assert res.exit_code == 1, res.output
    hot = json.loads(sorted(home.reports.glob("drift-*.json"))[-1].read_text())
    assert any(c.startswith("ambient_temp_c") for c in hot["severe_columns"])
    assert any(c.startswith("harsh_") for c in hot["severe_columns"])


def test_window_days_and_column_kinds():
    assert [monitor.window_days(c) for c in ("trips_7d", "crank_margin_v_min_30d", "rest_voltage_v_delta_7_90",
                                              "crank_margin_cold_v_slope_60d", "curb_mass_kg")] == [7, 30, 90, 60, 90]
    assert [monitor.column_kind(c) for c in ("ambient_temp_c_min_7d", "cold_start_share_30d", "rest_voltage_v_7d",
                                              "harsh_brake_per_100km_30d")] == ["ambient", "weather", "weather", "plain"]


def test_move_to_season_keeps_deviations_from_the_cycle():
    import numpy as np

    dates = pd.Series(pd.date_range("2025-01-01", periods=365, freq="D"))
    cycle = 11 - 9 * np.cos(2 * np.pi * (dates.dt.dayofyear - 20) / 365.25)
    weather = np.random.default_rng(0).normal(0, 2, 365)
    moved = monitor.move_to_season(pd.Series(cycle + weather), dates, pd.date_range("2025-12-01", "2025-12-30"))
    december = cycle[dates.dt.month == 12].mean()
    assert abs(moved.mean() - december) < 0.5 and abs(moved.std() - weather.std()) < 0.5


def test_match_rows_finds_the_same_temperature():
    import numpy as np

    rng = np.random.default_rng(0)
    pool = pd.DataFrame({"t": rng.uniform(-10, 30, 2000)})
    pos = monitor.match_rows(pool, pd.DataFrame({"t": [-5.0, 25.0]}), ["t"], k=5)
    assert len(pos) == 10
    assert np.abs(pool["t"].to_numpy()[pos[:5]] + 5).max() < 0.5 and np.abs(pool["t"].to_numpy()[pos[5:]] - 25).max() < 0.5


def test_monitor_without_models_fails_cleanly(home):
    res = CliRunner().invoke(app, ["monitor"])
    assert res.exit_code == 2
    assert "features" in res.output or "champion" in res.output


def test_quantile_psi_and_monitored_columns():
    import numpy as np

    rng = np.random.default_rng(0)
    a = pd.Series(rng.beta(0.5, 20, 5000))
    assert monitor.quantile_psi(a, pd.Series(rng.beta(0.5, 20, 5000)))[0] < 0.05
    assert monitor.quantile_psi(a, pd.Series(rng.beta(0.5, 8, 5000)))[0] > monitor.PREDICTION_THRESHOLD
    frame = pd.DataFrame({"vehicle_age_days": [1.0], "km_since_brake_service": [2.0], "ambient_temp_c_7d": [3.0],
                          "telemetry_days_total": [4.0], "brake_serviced_on_record": [1.0], "segment": ["suv"],
                          "rest_voltage_v_7d": [12.5]})
    num, cat = monitor.monitored_columns(frame, list(frame.columns))
    assert num == ["ambient_temp_c_7d", "rest_voltage_v_7d"] and cat == ["segment"]  # "age" is not in "voltage"
