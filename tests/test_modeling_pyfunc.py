"""The registered model is the model: `mlflow.pyfunc` on `models:/autopdm-<c>@champion` gives the risk the
service gives (Champion.predict as `load_champions` loads it, /assess and /predict in process)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from autopdm import components, store
from autopdm.pipeline.features import build_features

from .asgi import service_app

FAST = {"num_iterations": 40, "learning_rate": 0.1, "early_stopping_rounds": 10}
TOKEN = "pyfunc-t0ken"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small simulated fleet under its own $AUTOPDM_HOME, trained once for the module."""
    from autopdm.config import Paths
    from autopdm.modeling.train import train_all
    from autopdm.sim.fleet import simulate_fleet, write_fleet

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTOPDM_HOME", str(tmp_path_factory.mktemp("pyfunc") / "var"))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("AUTOPDM_API_TOKEN", TOKEN)
        home = Paths.from_env().ensure()
        fleet = simulate_fleet(80, 360, seed=11)
        write_fleet(fleet, home)
        df = build_features(fleet.trips, fleet.vehicles, fleet.service_events, fleet.dtc_events)
        store.write_table(df, "features", home)
        res = train_all(home, params=FAST)
        yield home, df, res


def test_pyfunc_champion_and_service_give_the_same_risk(trained):
    import mlflow
    from starlette.testclient import TestClient

    from autopdm.modeling.champion import load_champions
    from autopdm.serving.feature_index import latest_feature_rows

    paths, df, res = trained
    champs = load_champions(paths)
    vids = sorted(df["vehicle_id"].unique())[:25]
    as_of = df["date"].max() - pd.Timedelta(days=2)
    rows = latest_feature_rows(paths, vids, as_of).reset_index(drop=True)
    assert len(rows) == len(vids)
    with TestClient(service_app()) as client:
        h = {"Authorization": f"Bearer {TOKEN}"}
        r = client.post("/assess", json={"vehicle_ids": vids, "as_of": as_of.date().isoformat()}, headers=h)
        assert r.status_code == 200, r.text
        assessed = {v["vehicle_id"]: v for v in r.json()["vehicles"]}
        body = [{k: (None if pd.isna(v) else float(v)) for k, v in row.items()}
                for row in rows[sorted({f for c in champs.values() for f in c.feature_names})].to_dict("records")]
        p = client.post("/predict", json={"rows": body}, headers=h)
        assert p.status_code == 200, p.text
        predicted = p.json()
    for comp, ch in champs.items():
        model = mlflow.pyfunc.load_model(components.get(comp).champion_uri)
        assert model.metadata.run_id == ch.run_id                     # the champion version, not another
        from_pyfunc = np.asarray(model.predict(rows[ch.feature_names]), dtype=float)
        from_service = ch.predict(rows)
        assert from_pyfunc.shape == (len(rows),) and np.ptp(from_pyfunc) > 0
        np.testing.assert_allclose(from_pyfunc, from_service, rtol=0, atol=1e-9)
        # the raw booster output is not the risk: the calibration is inside the pyfunc model
        raw = 1 / (1 + np.exp(-ch.margin(rows)))
        assert np.abs(raw - from_pyfunc).max() > 1e-3
        # /assess rounds to 4 decimals, /predict to 6: the same risk, as far as they print it
        for i, vin in enumerate(rows["vehicle_id"]):
            a = assessed[vin]
            assert a["feature_date"] == pd.Timestamp(rows.loc[i, "date"]).date().isoformat()
            assert abs(a["components"][comp]["risk"] - from_pyfunc[i]) <= 0.5e-4 + 1e-12
            assert abs(predicted[i][comp] - from_pyfunc[i]) <= 0.5e-6 + 1e-12


def test_registered_version_is_a_pyfunc_with_its_operating_point(trained):
    from mlflow import MlflowClient

    from autopdm.modeling.champion import _model_dir, load_champions

    paths, df, res = trained
    client = MlflowClient(tracking_uri=paths.tracking_uri)
    champs = load_champions(paths)
    for comp, ch in champs.items():
        mv = client.get_model_version_by_alias(ch.name, "champion")
        d = _model_dir(client, ch.name, mv)
        mlmodel = yaml.safe_load((d / "MLmodel").read_text())
        pf = mlmodel["flavors"]["python_function"]
        assert pf["loader_module"] == "mlflow.pyfunc.loaders.code_model" and "lightgbm" not in mlmodel["flavors"]
        assert (d / pf["artifacts"]["booster"]["path"]).exists()
        op = json.loads((d / pf["artifacts"]["operating_point"]["path"]).read_text())
        assert op["component"] == comp and op["threshold"] == ch.threshold and op["calibration"] == ch.calibration
        assert op["feature_names"] == ch.feature_names and op["rule"] == res[comp]["threshold_selection"]["rule"]
        inputs = [c["name"] for c in json.loads(mlmodel["signature"]["inputs"])]
        assert inputs == ch.feature_names
        reqs = (d / "requirements.txt").read_text()
        assert "lightgbm==" in reqs and "autopdm" not in reqs       # the model needs nothing of autopdm
        assert mlmodel["metadata"]["threshold"] == ch.threshold


def test_a_version_registered_before_the_pyfunc_model_still_loads(home):
    """Versions logged with the LightGBM flavor (booster at the root, operating point in tags) keep serving."""
    import lightgbm as lgb
    import mlflow
    from mlflow import MlflowClient

    from autopdm.modeling.champion import get_champion
    from autopdm.modeling.tracking import setup_mlflow

    client = setup_mlflow(home)
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(400, 3)), columns=["a", "b", "c"])
    booster = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(X, (X["a"] > 0).astype(int)), 5)
    with mlflow.start_run():
        info = mlflow.lightgbm.log_model(booster, name="model", registered_model_name="autopdm-brake",
                                         pip_requirements=["lightgbm"])
    v = str(info.registered_model_version)
    client.set_model_version_tag("autopdm-brake", v, "threshold", "0.3")
    client.set_model_version_tag("autopdm-brake", v, "calibration", json.dumps({"method": "platt", "a": 0.5, "b": -1.0}))
    client.set_registered_model_alias("autopdm-brake", "champion", v)
    ch = get_champion(MlflowClient(tracking_uri=home.tracking_uri), "brake")
    assert ch.threshold == 0.3 and ch.calibration["a"] == 0.5
    np.testing.assert_allclose(ch.predict(X), 1 / (1 + np.exp(-(0.5 * booster.predict(X, raw_score=True) - 1.0))))
    mlflow.set_tracking_uri(None)
