"""End to end on a tiny simulated fleet: train → MLflow registry → champion alias → gate; serving API."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from autopdm import components, store
from autopdm.modeling.train import gate_decision
from autopdm.pipeline.features import build_features, feature_columns
from autopdm.sim.fleet import simulate_fleet  # first-party: an import error fails the suite, never skips it

COMPONENTS = components.names()

FAST = {"num_iterations": 150, "learning_rate": 0.1, "early_stopping_rounds": 20}  # keep the suite quick


@pytest.fixture
def tiny_fleet(home):
    """A small simulated fleet with its features table under the per-test $AUTOPDM_HOME."""
    fleet = simulate_fleet(150, 420, seed=7)
    store.write_table(fleet.trips, "trips", home)
    store.write_table(fleet.vehicles, "vehicles", home)
    store.write_table(fleet.service_events, "service_events", home)
    store.write_table(fleet.true_needs, "true_needs", home)  # the simulator's hidden truth: evaluation only
    store.write_table(fleet.true_state, "true_state", home)
    df = build_features(fleet.trips, fleet.vehicles, fleet.service_events, fleet.dtc_events)
    store.write_table(df, "features", home)
    return home, store.read_table("features", home)


def test_gate_decision_rules():
    champ = {"ew_recall": 0.5, "pr_auc": 0.4}
    assert gate_decision({"ew_recall": 0.5, "pr_auc": 0.4}, champ)[0]            # equal is good enough
    assert gate_decision({"ew_recall": 0.6, "pr_auc": 0.41}, champ)[0]
    ok, why = gate_decision({"ew_recall": 0.6, "pr_auc": 0.3}, champ)
    assert not ok and "pr_auc" in why
    assert not gate_decision({"ew_recall": 0.49, "pr_auc": 0.9}, champ)[0]
    assert not gate_decision({"ew_recall": float("nan"), "pr_auc": 0.9}, champ)[0]
    assert gate_decision({"ew_recall": 0.0, "pr_auc": 0.0}, None)[0]              # no champion yet


def test_train_registers_three_models_sets_champion_and_gate_refuses_worse(tiny_fleet):
    import mlflow
    from mlflow import MlflowClient

    from autopdm.modeling.champion import ChampionError, load_champions
    from autopdm.serving.feature_index import latest_feature_rows
    from autopdm.modeling.train import train_all

    paths, df = tiny_fleet
    res = train_all(paths, params=FAST)
    client = MlflowClient(tracking_uri=paths.tracking_uri)
    assert paths.tracking_uri.startswith("sqlite:///") and str(paths.home) in paths.tracking_uri
    for comp in COMPONENTS:
        r = res[comp]
        assert r["promoted"] and r["version"] == "1", r
        mv = client.get_model_version_by_alias(f"autopdm-{comp}", "champion")
        assert str(mv.version) == "1"
        assert 0.0 < float(mv.tags["threshold"]) < 1.0
        assert json.loads(mv.tags["calibration"])["method"] == "platt"
        run = client.get_run(r["run_id"])
        for k in ("test_ew_recall", "test_precision", "test_pr_auc", "test_brier", "baseline_ew_recall",
                  "baseline_precision", "baseline_rule_ew_recall", "gate_promoted"):
            assert k in run.data.metrics, k
        # against the true needs (the headline on a simulated fleet) and the observed ones, baseline beside each
        assert r["headline_needs"] == "true_needs" and set(r["against"]) == {"true_needs", "observed_needs"}
        for k in ("true_needs/ew_recall", "true_needs/precision", "true_needs/pr_auc", "true_needs/baseline_ew_recall",
                  "observed_needs/ew_recall", "observed_needs/baseline_ew_recall", "calib_break_even_risk"):
            assert k in run.data.metrics, k
        assert run.data.metrics["test_ew_recall"] == run.data.metrics["true_needs/ew_recall"]
        # the quality headline: model, fixed-interval rule, careful advisor, physical ceiling (true state), yields
        q = r["quality"]
        assert q["needs"] == "true_needs" and {"model", "fixed_interval", "advisor", "ceiling"} <= set(q)
        for k in ("quality/model_ew_recall", "quality/fixed_interval_ew_recall", "quality/advisor_pr_auc",
                  "quality/ceiling_pr_auc", "true_needs/advisor_ew_recall", "true_needs/ceiling_n_alerts",
                  "true_needs/n_work_orders", "observed_needs/advisor_ew_recall"):
            assert k in run.data.metrics, k
        assert run.data.metrics["true_needs/ceiling_n_alerts"] == run.data.metrics["true_needs/n_alerts"]
        if r["metrics"]["n_work_orders"]:
            assert 0.0 <= run.data.metrics["quality/model_work_order_yield"] <= 1.0
            assert 0.0 <= run.data.metrics["quality/model_advise_yield"] <= 1.0
        assert run.data.params["threshold_rule"] in ("break-even risk", "alert budget")
        assert float(mv.tags["cost_alert"]) < float(mv.tags["cost_missed_need"])
        assert run.data.params["train_end"] < run.data.params["test_start"]
        arts = {a.path for a in client.list_artifacts(r["run_id"], "plots")}
        assert {"plots/calibration.png", "plots/pr_curve.png", "plots/feature_importance.png",
                "plots/lead_time_hist.png"} <= arts
    # artifacts under $AUTOPDM_HOME/mlartifacts
    assert any(paths.artifacts.rglob("model.lgb"))

    # the serving contract
    champs = load_champions(paths)
    assert set(champs) == set(COMPONENTS)
    vids = sorted(df["vehicle_id"].unique())[:5]
    as_of = df["date"].max() - pd.Timedelta(days=3)
    rows = latest_feature_rows(paths, vids, as_of)
    assert len(rows) == 5 and (rows["date"] <= as_of).all() and set(rows["vehicle_id"]) == set(vids)
    for comp, ch in champs.items():
        assert ch.name == f"autopdm-{comp}" and ch.component == comp and ch.version == "1"
        assert ch.feature_names == feature_columns(df)
        p = ch.predict(rows)
        assert p.shape == (5,) and np.all((p >= 0) & (p <= 1))
        c = ch.contributions(rows)
        assert list(c.columns) == ch.feature_names and c.shape == (5, len(ch.feature_names))
        # contributions + bias = raw log-odds
        raw = ch.margin(rows)
        bias = ch.booster.predict(ch.matrix(rows), pred_contrib=True)[:, -1]
        np.testing.assert_allclose(c.sum(axis=1).to_numpy() + bias, raw, rtol=1e-6, atol=1e-6)
        # strings and missing columns are tolerated (JSON rows)
        assert ch.predict(rows.astype({"segment_code": str}).drop(columns=["odometer_km"])).shape == (5,)

    # a deliberately worse candidate (one stump-less round: constant risk) is registered, not promoted
    bad = train_all(paths, components=["battery"], params={**FAST, "num_iterations": 1, "min_data_in_leaf": 10**7})
    b = bad["battery"]
    assert b["version"] == "2" and not b["promoted"] and b["reason"].startswith("rejected")
    assert b["champion_metrics"]["pr_auc"] > b["metrics"]["pr_auc"]
    assert str(client.get_model_version_by_alias("autopdm-battery", "champion").version) == "1"
    run = client.get_run(b["run_id"])
    assert run.data.metrics["gate_promoted"] == 0.0 and run.data.tags["gate_decision"].startswith("rejected")
    assert "gate_champion_pr_auc" in run.data.metrics
    assert client.get_model_version("autopdm-battery", "2").tags["gate_decision"].startswith("rejected")

    # a missing champion is named in the error
    client.delete_registered_model_alias("autopdm-tire", "champion")
    with pytest.raises(ChampionError, match="autopdm-tire"):
        load_champions(paths)
    mlflow.set_tracking_uri(None)


def test_cli_features_and_evaluate(tiny_fleet, monkeypatch):
    from typer.testing import CliRunner

    from autopdm.cli import app
    from autopdm.modeling.train import train_all

    paths, df = tiny_fleet
    runner = CliRunner()
    as_of = (df["date"].max() - pd.Timedelta(days=30)).date().isoformat()
    r = runner.invoke(app, ["features", "--as-of", as_of])
    assert r.exit_code == 0, r.output
    f = store.read_table("features", paths)
    assert f["date"].max() == pd.Timestamp(as_of)
    store.write_table(df, "features", paths)
    train_all(paths, components=list(COMPONENTS), params=FAST)
    out = paths.home / "exported"
    r = runner.invoke(app, ["evaluate", "--export", str(out)])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())                  # the console wraps long lines
    for comp in COMPONENTS:   # the quality headline per component
        line = text.split(f"{comp} quality (", 1)[1].split(" quality (")[0]
        assert all(w in line for w in ("model", "fixed-interval rule", "careful advisor", "physical ceiling",
                                       "work-order yield", "advise line")), line
    rep = json.loads((paths.reports / "evaluation.json").read_text())
    assert set(rep["components"]) == set(COMPONENTS)
    assert (paths.reports / "model_card_brake.md").exists()
    for comp, r in rep["components"].items():
        assert r["headline_needs"] == "true_needs" and list(r["against"]) == ["true_needs", "observed_needs"]
        for block in r["against"].values():
            assert {"model", "baseline_same_volume", "baseline_rule", "lead_time_histogram"} <= set(block)
            assert block["baseline_same_volume"]["n_alerts"] == block["model"]["n_alerts"]
        assert json.dumps(r["test"]) == json.dumps(r["against"]["true_needs"]["model"])  # NaN-safe
        assert set(r["quality"]) >= {"model", "fixed_interval", "advisor", "ceiling"}
        assert {"advisor_same_volume", "ceiling_same_volume"} <= set(r["against"]["true_needs"])
    card = (paths.reports / "model_card_brake.md").read_text()
    assert "Against true needs" in card and "Against observed needs" in card
    assert "careful advisor" in card and "physical ceiling" in card and "work-order yield" in card
    meta = json.loads((out / "autopdm-battery.json").read_text())
    assert meta["version"] == "1" and "threshold" in meta and "feature_names" in meta
    r = runner.invoke(app, ["train", "--component", "wheel"])
    assert r.exit_code == 2 and "wheel" in r.output
