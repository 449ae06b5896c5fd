"""A workshop that runs autopdm with no simulator: real carOBD logs of its car, its CRM's export, and
champion models trained elsewhere (a registry it points at), to a signed work order in its CRM.

The champion comes from a simulated fleet trained in a home of its own — that is how a workshop
starts: with models trained on a fleet. The workshop's home holds nothing simulated: its samples
come from `autopdm ingest csv --format carobd`, its trips from `autopdm trips`, its vehicles,
service history, inspections and outcomes from `autopdm ingest crm` (examples/crm/), and the work
order from `autopdm score --emit`, delivered to the reference CRM receiver.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest

from autopdm import components, store
from autopdm.config import Paths
from autopdm.localproc import free_port
from autopdm.modeling.champion import load_champions
from autopdm.serving import recommend
from autopdm.serving.feature_index import latest_feature_rows
from autopdm.serving.score import score_fleet

from .conftest import CAROBD, ROOT
from .procs import AUTOPDM, receiver_work_orders, start_receiver, stop
from .service_fleet import home_env

pytestmark = [pytest.mark.slow, pytest.mark.heavy]
EX = ROOT / "examples" / "crm"
ETIOS = "9BRBL3HE5E0123456"  # the carOBD car (a 2014 Toyota Etios) in the example CRM export
DAY = "2026-03-02"           # the day the workshop recorded it
# the fleet the champions were trained on, elsewhere (its size: small fleets give unstable operating points)
FLEET = ["--vehicles", "1000", "--days", "540", "--seed", "5", "--start", "2024-09-01"]


def autopdm(env: dict, *args, ok=(0,)) -> str:
    r = subprocess.run([AUTOPDM, *map(str, args)], env=env, capture_output=True, text=True, timeout=1200)
    assert r.returncode in ok, f"autopdm {' '.join(map(str, args))} → {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    return r.stdout + r.stderr


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Path:
    """Champions trained elsewhere: simulate → features → train in a home of their own."""
    fleet = tmp_path_factory.mktemp("fleet") / "var"
    env = home_env(fleet)
    for step in (["simulate", *FLEET], ["features"], ["train"]):
        autopdm(env, *step)
    return fleet


def test_carobd_logs_and_a_crm_export_give_a_work_order_in_the_crm(registry, tmp_path):
    shop = tmp_path / "shop"
    port = free_port()
    tracking = f"sqlite:///{registry / 'mlflow.db'}"
    env = home_env(shop, MLFLOW_TRACKING_URI=tracking, AUTOPDM_CRM_WEBHOOK_URL=f"http://127.0.0.1:{port}/work-orders")
    receiver = start_receiver(tmp_path / "crm", port, tmp_path / "receiver.log")
    try:
        autopdm(env, "ingest", "csv", "--format", "carobd", "--vehicle-id", ETIOS, "--start", f"{DAY}T07:30:00Z",
                *sorted(CAROBD.glob("*.csv")))
        autopdm(env, "trips")
        autopdm(env, "ingest", "crm", "--map", EX / "map.yaml", "--vehicles", EX / "vehicles.csv",
                "--service-events", EX / "service_history.csv", "--inspections", EX / "inspections.jsonl",
                "--outcomes", EX / "outcomes.csv")
        autopdm(env, "features")
        out = autopdm(env, "score", "--as-of", DAY, "--emit")
        delivered = receiver_work_orders(port)
    finally:
        stop(receiver)

    p = Paths(shop.resolve(), tracking)
    # nothing simulated in the workshop's home: telemetry from the logger, records from the CRM
    assert not any(p.table(t).exists() for t in ("true_needs", "true_state", "true_lives"))
    assert set(store.read_table("trips", p)["source"]) == {"csv"}
    assert set(store.read_samples(p)["source"]) == {"csv"}
    for t in ("vehicles", "service_events", "inspections", "outcomes"):
        assert len(store.read_table(t, p)), t
    assert set(store.read_table("inspections", p)["source"]) == {"crm"}
    # the CRM's readings reached the car's features: the front pads' last reading and its age
    f = store.read_table("features", p).set_index("vehicle_id").loc[ETIOS]
    assert (f["pad_mm_front_last"], f["pad_mm_front_age_days"]) == (3.5, 119.0)
    assert str(pd.Timestamp(f["date"]).date()) == DAY

    # the work orders the real scoring path makes for this day (champions from the registry) ...
    expected = score_fleet(DAY, p, emit=False).work_orders
    mine = [w for w in expected if w["vehicle_id"] == ETIOS]
    risks = {c: a["risk"] for c, a in _risks(p).items()}
    assert mine, f"no work order for {ETIOS}: risks {risks}\n{out}"
    # ... are what the CRM received, signed and stored once, addressed the way the CRM said
    got = {w["work_order_id"]: w for w in delivered if w["vehicle_id"] == ETIOS}
    assert set(got) == {w["work_order_id"] for w in mine}
    for w in mine:
        g = got[w["work_order_id"]]
        assert (g["customer_id"], g["channel"]) == ("C104233", "sms") and g["_deliveries"] == 1
        assert g["component"] in components.names() and g["risk"] == pytest.approx(w["risk"], abs=1e-6)
        assert g["recommended_window"] == w["recommended_window"] and g["model"]["name"].startswith("autopdm-")


def _risks(p: Paths) -> dict:
    """This car's assessment, for the failure message."""
    rows = latest_feature_rows(p, [ETIOS], DAY)
    return recommend.assess(rows, load_champions(p), DAY)[0]["components"]
