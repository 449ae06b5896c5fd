"""Drift monitoring: a fleet with a shifted climate or driving style is flagged, the same fleet is not."""

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
    res = runner.invoke(app, ["monitor", "--no-mlflow"])
    assert res.exit_code == 1, res.output
    r = json.loads(sorted(home.reports.glob("drift-*.json"))[-1].read_text())
    assert r["drift"] and r["data_drift"]
    assert any(c.startswith("ambient_temp_c") for c in r["severe_columns"])

    # twice as aggressive drivers: harsh-event rates and brake risk move
    aggressive = _features(simulate_fleet(N_VEHICLES, DAYS, seed=SEED, aggressiveness=2.0))
    r = monitor.run_monitor(home, features=aggressive, log_to_mlflow=False)
    assert r.drift and r.data_drift
    assert any(c.startswith("harsh_brake_per_100km") for c in r.severe_columns)
    assert r.prediction_drift["brake"]          # brake risk moves when drivers brake twice as hard


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
                          "telemetry_days_total": [4.0], "brake_serviced_on_record": [1.0], "segment": ["suv"]})
    num, cat = monitor.monitored_columns(frame, list(frame.columns))
    assert num == ["ambient_temp_c_7d"] and cat == ["segment"]
