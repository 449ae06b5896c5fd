"""Champion hot reload against a real `bentoml serve`: a promotion under load fails no request, and
POST /reload (with the token) swaps models and features on demand."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import httpx
import pandas as pd
import pytest

from autopdm import components, store
from autopdm.modeling import tracking
from autopdm.modeling.tracking import client as tracking_client

from .service_fleet import fleet_copy, headers, home_paths, post, serving

pytestmark = pytest.mark.slow
CLIENTS = 20


def promote_copies(home, threshold: float) -> dict[str, str]:
    """Register a new version of every champion (the same booster at another operating threshold, logged
    as training logs a model) and move the `champion` alias to it, one component after the other, as a
    training run does. The threshold lives in the model's own operating point, not in a tag."""
    import dataclasses

    import mlflow

    from autopdm.modeling.champion import get_champion
    from autopdm.modeling.train import log_pyfunc

    p = home_paths(home)
    c = tracking_client(p)
    feats = store.read_table("features", p)
    out = {}
    with mlflow.start_run(experiment_id=c.get_experiment_by_name(tracking.EXPERIMENT).experiment_id,
                          run_name=f"threshold {threshold}"):
        for comp in components.names():
            champ = get_champion(c, comp)
            info = {"rule": "test copy", "cost_missed_need": 500.0, "cost_alert": 40.0, "alert_budget": 0.1,
                    "break_even_risk": threshold}
            cand = SimpleNamespace(model=dataclasses.replace(champ, threshold=threshold), threshold_info=info)
            new = str(log_pyfunc(cand, feats[champ.feature_names].head(5).astype("float64")).registered_model_version)
            c.set_registered_model_alias(champ.name, components.CHAMPION_ALIAS, new)
            out[comp] = new
    return out


def load(url: str, bodies: list[dict], stop: threading.Event, seen: list, errors: list) -> None:
    """One client: /assess in a loop; every answer's (component, version, threshold) in order."""
    with httpx.Client(base_url=url, headers=headers(), timeout=30) as client:
        i = 0
        while not stop.is_set():
            body = bodies[i % len(bodies)]
            i += 1
            try:
                r = client.post("/assess", json=body)
            except httpx.HTTPError as exc:  # a dropped connection counts as a failure
                errors.append(repr(exc))
                continue
            if r.status_code != 200:
                errors.append(f"{r.status_code} {r.text[:200]}")
                continue
            for v in r.json()["vehicles"]:
                seen.append({c: (x["model"]["version"], x["threshold"]) for c, x in v["components"].items()})


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    home = fleet_copy(tmp_path_factory, "reload")
    feats = store.read_table("features", home_paths(home), columns=["vehicle_id", "date"])
    feats["date"] = pd.to_datetime(feats["date"])
    return home, feats


def test_promotion_under_load_fails_no_request(fleet, tmp_path):
    home, feats = fleet
    vins = list(feats["vehicle_id"].drop_duplicates())
    last = feats["date"].max()
    # latest days (the scored fleet) and past days (scored on demand, in batches) both under load
    bodies = [{"vehicle_ids": [v]} for v in vins] + \
             [{"vehicle_ids": [v], "as_of": str((last - pd.Timedelta(days=5 + k % 40)).date())} for k, v in enumerate(vins)]
    with serving(home, tmp_path / "serve.log", AUTOPDM_RELOAD_POLL_S="0.5") as url:
        before = post(url, "/model_info", {}).json()["components"]
        stop, errors, seen = threading.Event(), [], [[] for _ in range(CLIENTS)]
        threads = [threading.Thread(target=load, args=(url, bodies[k::CLIENTS] or bodies, stop, seen[k], errors))
                   for k in range(CLIENTS)]
        for t in threads:
            t.start()
        time.sleep(2)
        new = promote_copies(home, threshold=0.4321)
        now, deadline = before, time.monotonic() + 30
        while time.monotonic() < deadline:
            r = post(url, "/model_info", {})
            if r.status_code != 200:
                errors.append(f"/model_info {r.status_code} {r.text[:200]}")
            elif {c: v["version"] for c, v in r.json()["components"].items()} == new:
                now = r.json()["components"]
                break
            time.sleep(0.2)
        time.sleep(2)  # keep the load on after the swap
        stop.set()
        for t in threads:
            t.join(60)
    assert errors == [], f"{len(errors)} failed requests during the promotion, e.g. {errors[:3]}"
    assert {c: v["version"] for c, v in now.items()} == new, f"still {now} after 30 s"
    answers = [a for s in seen for a in s]
    assert len(answers) > 200
    old = {c: (v["version"], round(v["threshold"], 4)) for c, v in before.items()}
    for a in answers:  # every answer comes whole from one model version per component
        for c, (ver, thr) in a.items():
            assert (ver, thr) in (old[c], (new[c], 0.4321)), (c, ver, thr)
    for s in seen:  # and once a client saw the new version, it never sees the old one again
        for c in components.names():
            vers = [a[c][0] for a in s]
            if new[c] in vers:
                assert old[c][0] not in vers[vers.index(new[c]):], c
    assert {a["brake"][0] for a in answers} == {old["brake"][0], new["brake"]}


def test_reload_endpoint_swaps_models_and_features(fleet, tmp_path):
    home, feats = fleet
    p = home_paths(home)
    vin = str(feats["vehicle_id"].iloc[0])
    with serving(home, tmp_path / "serve.log", AUTOPDM_RELOAD_POLL_S="0") as url:
        assert post(url, "/reload", {}, token=None).status_code == 401
        assert post(url, "/reload", {}, token="wrong").status_code == 401
        first = post(url, "/reload", {}).json()
        assert first["changed"] is False and first["error"] is None
        versions = first["models"]
        new = promote_copies(home, threshold=0.2468)
        time.sleep(1)  # no polling: nothing moves until asked
        assert post(url, "/model_info", {}).json()["components"]["tire"]["version"] == versions["tire"]
        r = post(url, "/reload", {})
        assert r.status_code == 200 and r.json()["changed"] is True and r.json()["models"] == new
        a = post(url, "/assess", {"vehicle_ids": [vin]}).json()["vehicles"][0]["components"]
        assert {c: x["model"]["version"] for c, x in a.items()} == new
        assert {x["threshold"] for x in a.values()} == {0.2468}

        # a rebuilt features table (here: without its last day) is picked up by the next check
        f = store.read_table("features", p)
        latest = pd.to_datetime(f["date"]).max()
        store.write_table(f[pd.to_datetime(f["date"]) < latest], "features", p)
        r = post(url, "/reload", {}).json()
        assert r["changed"] is True and r["features_latest_day"] == str((latest - pd.Timedelta(days=1)).date())
        a = post(url, "/assess", {"vehicle_ids": [vin]}).json()
        assert a["as_of"] == r["features_latest_day"] and a["vehicles"][0]["feature_date"] <= a["as_of"]

        # a broken registry: the service keeps answering with what it has, and says why
        c = tracking_client(p)
        c.delete_registered_model_alias(components.get("battery").model_name, components.CHAMPION_ALIAS)
        r = post(url, "/reload", {})
        assert r.status_code == 503 and "autopdm-battery" in r.json()["error"]
        assert post(url, "/assess", {"vehicle_ids": [vin]}).status_code == 200
        assert httpx.get(url + "/readyz", timeout=10).status_code == 200
