"""The component registry: one definition per component, clear errors for unknown names, and a
fourth component that goes through features → training → /assess → work order with no other module
touched."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from starlette.testclient import TestClient

from autopdm import components, schemas, store
from autopdm.components import Component, Limit
from autopdm.delivery.outbox import Outbox
from autopdm.modeling import baselines
from autopdm.modeling.train import train_all
from autopdm.pipeline.features import build_features
from autopdm.serving.score import score_fleet
from autopdm.sim.fleet import simulate_fleet, write_fleet

from .asgi import service_app

FAST = {"num_iterations": 40, "early_stopping_rounds": 10, "min_data_in_leaf": 20}
COOLANT_KM = 6_000.0

COOLANT = Component(
    name="coolant", part="engine coolant",
    limit=Limit("coolant_freeze_c", need=-15.0, advise=-20.0, unit="°C"),
    measurements=("coolant_freeze_c",), positions=("-",),
    action="Coolant check: test freeze protection and level; flush and refill if it fails",
    wear={"starts": "one", "hot_km": "hot_km"},
    wear_since_pass=("distance_km", "km"),
    baseline_description=f"coolant service every {COOLANT_KM:,.0f} km",
    baseline_score=components.km_since_service_score("coolant"),
    baseline_rule=components.every_km_rule("coolant", COOLANT_KM),
)


def test_the_registry_defines_each_component_once():
    assert components.names() == ("brake", "tire", "battery")
    for c in components.all_components():
        assert c.label == f"label_{c.name}" and c.model_name == f"autopdm-{c.name}"
        assert c.champion_uri == f"models:/autopdm-{c.name}@champion"
    assert components.service_components() == ("brake", "tire", "battery", "other")


def test_unknown_component_is_a_clear_error_everywhere():
    rows = pd.DataFrame({"vehicle_id": ["V"], "date": [pd.Timestamp("2026-01-01")], "km_since_brake_service": [1.0]})
    for call in (lambda: components.get("coolant"), lambda: baselines.score(rows, "coolant"),
                 lambda: baselines.rule(rows, "coolant"), lambda: components.check(["brake", "coolant"]),
                 lambda: train_all(None, components=["coolant"])):
        with pytest.raises(components.UnknownComponent, match="unknown component 'coolant'; known: brake, tire, battery"):
            call()
    ev = pd.DataFrame({"event_id": ["e1"], "vehicle_id": ["WVWZZZ1KZ6W000001"], "date": ["2026-01-01"],
                       "component": ["coolant"], "action": ["replace"], "source": ["crm"]})
    q = schemas.validate(ev, "service_events").quarantine
    assert q["reason"].str.contains("component: not one of").all() and len(q) == 1


def test_registering_twice_or_a_bad_name_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        components.register(components.BRAKE)
    with pytest.raises(ValueError, match="other"):
        components.register(Component(**{**COOLANT.__dict__, "name": "other"}))


def _coolant_services(trips: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """A coolant service every ~6,000 km of each car's driving: learnable from km since the last one."""
    t = trips.sort_values(["vehicle_id", "end_ts"])
    km = t.groupby("vehicle_id")["distance_km"].cumsum()
    rows = []
    for vin, part in t.assign(km=km.to_numpy()).groupby("vehicle_id"):
        due = COOLANT_KM * rng.uniform(0.3, 1.0)
        for end, k in zip(part["end_ts"], part["km"]):
            if k >= due:
                rows.append((vin, end.normalize().tz_localize(None), k))
                due = k + COOLANT_KM * rng.uniform(0.9, 1.1)
    ev = pd.DataFrame(rows, columns=["vehicle_id", "date", "odometer_km"])
    ev["event_id"] = [f"coolant-{i}" for i in range(len(ev))]
    return ev.assign(component="coolant", action="replace", source="test")


def test_a_fourth_component_from_features_to_work_order(home, monkeypatch):
    """Only the registry knows about coolant: features, training, the service and the outbox iterate it."""
    monkeypatch.setenv("AUTOPDM_API_TOKEN", "t0ken")
    fleet = simulate_fleet(60, 420, seed=5)
    with components.registered(COOLANT):
        events = pd.concat([fleet.service_events, _coolant_services(fleet.trips, np.random.default_rng(0))],
                           ignore_index=True)
        fleet.service_events = events
        write_fleet(fleet, home)
        assert (store.read_table("service_events", home)["component"] == "coolant").sum() > 60
        feats = build_features(fleet.trips, fleet.vehicles, events, fleet.dtc_events)
        for col in ("label_coolant", "days_to_need_coolant", "km_since_coolant_service", "starts_since_coolant_service",
                    "hot_km_since_coolant_service", "days_since_open_coolant_inspect"):
            assert col in feats.columns, col
        store.write_table(feats, "features", home)

        res = train_all(home, params=FAST)
        assert res["coolant"]["version"] and res["coolant"]["metrics"]["pr_auc"] > 0.2

        with TestClient(service_app()) as client:
            as_of = str(pd.to_datetime(feats["date"]).max().date())
            vins = list(fleet.vehicles["vehicle_id"])
            r = client.post("/assess", json={"vehicle_ids": vins, "as_of": as_of},
                            headers={"Authorization": "Bearer t0ken"})
            assert r.status_code == 200, r.text
            coolant = [v["components"]["coolant"] for v in r.json()["vehicles"]]
            assert len(coolant) == len(vins) and all(0.0 <= c["risk"] <= 1.0 for c in coolant)

        sc = score_fleet(as_of, home, emit=True, deliver=False)
        orders = [wo for wo in sc.work_orders if wo["component"] == "coolant"]
        assert orders, f"no coolant alert among {len(vins)} vehicles: {sc.alerts.get('coolant')}"
        assert all(wo["recommended_action"] == COOLANT.action and wo["model"]["name"] == "autopdm-coolant"
                   for wo in orders)
        stored = {r["work_order_id"] for r in Outbox.open(home).rows() if r["component"] == "coolant"}
        assert stored == {wo["work_order_id"] for wo in orders}
    assert "coolant" not in components.names()
