"""The HTTP API as a real `bentoml serve` process over a tiny trained fleet, plus batch scoring into
the outbox and delivery into a real receiver. The fleet and the server are built once per module."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest

from autopdm.serving import recommend
from autopdm import store
from autopdm.delivery.outbox import DELIVERED, Outbox

from .conftest import free_port
from .procs import AUTOPDM, receiver_stats, start, start_receiver, stop, wait_http
from .service_fleet import fleet_copy, home_env, home_paths

TOKEN = "test-token-123"
pytestmark = pytest.mark.slow


# -- pure functions (fast) -------------------------------------------------------------------

def test_window_band_and_id_rules():
    assert recommend.recommended_window("2026-12-01", 0.2) == {"start": "2026-12-08", "end": "2026-12-16"}
    assert recommend.recommended_window("2026-12-01", 0.5) == {"start": "2026-12-08", "end": "2026-12-16"}
    w = recommend.recommended_window("2026-12-01", 0.95)
    assert w == {"start": "2026-12-02", "end": "2026-12-08"}  # sooner when the need is sooner
    ends = [recommend.recommended_window("2026-12-01", p)["end"] for p in np.linspace(0.3, 0.99, 30)]
    assert ends == sorted(ends, reverse=True)
    for p in np.linspace(0.01, 0.999, 50):
        w = recommend.recommended_window("2026-12-01", p)
        lead_end = (date.fromisoformat(w["end"]) - date(2026, 12, 1)).days
        assert 7 <= lead_end <= 15 and w["start"] > "2026-12-01"
    assert recommend.risk_band(0.1, 0.2) == "low"
    assert recommend.risk_band(0.3, 0.2) == "medium"
    assert recommend.risk_band(0.6, 0.2) == "high"
    a = recommend.work_order_id("VIN", "brake", {"start": "2026-12-08", "end": "2026-12-16"})
    assert a == recommend.work_order_id("VIN", "brake", {"start": "2026-12-08", "end": "2026-12-16"})
    assert a != recommend.work_order_id("VIN", "tire", {"start": "2026-12-08", "end": "2026-12-16"})
    assert a.startswith("wo-") and len(a) == 27


# -- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fleet_home(tmp_path_factory) -> Path:
    """A tiny simulated fleet, features and three trained champions (≈20 s, once per session)."""
    return fleet_copy(tmp_path_factory, "fleet")


@pytest.fixture(scope="module")
def server(fleet_home, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("logs") / "serve.log"
    env = home_env(fleet_home, AUTOPDM_API_TOKEN=TOKEN, AUTOPDM_MAX_BODY_BYTES=str(1 << 20),
                  AUTOPDM_ASSESS_HISTORY_DAYS="60")  # older as_of days go through the Parquet path
    proc = start([sys.executable, "-m", "bentoml", "serve", "autopdm.serving.service:Autopdm", "--host", "127.0.0.1",
                  "--port", str(port)], env, log)
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", 120, proc, log)
        yield f"http://127.0.0.1:{port}", log
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def fleet(fleet_home):
    p = home_paths(fleet_home)
    feats = store.read_table("features", p)
    feats["date"] = pd.to_datetime(feats["date"])
    return p, feats, store.read_table("vehicles", p)


def _keys(obj) -> set[str]:
    if isinstance(obj, dict):
        return set(obj) | {k for v in obj.values() for k in _keys(v)}
    if isinstance(obj, list):
        return {k for v in obj for k in _keys(v)}
    return set()


def _h(token=TOKEN):
    return {"Authorization": f"Bearer {token}"}


# -- HTTP API --------------------------------------------------------------------------------

def test_health_and_schema_are_open(server):
    url, _ = server
    for path in ("/livez", "/readyz", "/schema.json"):
        assert httpx.get(url + path, timeout=10).status_code == 200, path
    assert httpx.get(url + "/metrics", timeout=10).status_code == 200  # open: counts and latencies, no vehicle data


def test_assess_with_token(server, fleet):
    url, _ = server
    _, feats, vehicles = fleet
    vins = list(vehicles["vehicle_id"][:3])
    day = str(feats["date"].max().date())
    r = httpx.post(url + "/assess", json={"vehicle_ids": vins + ["WDB0000000000000X"], "as_of": day},
                   headers=_h(), timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["as_of"] == day and body["unknown"] == ["WDB0000000000000X"]
    assert [v["vehicle_id"] for v in body["vehicles"]] == vins
    for v in body["vehicles"]:
        assert set(v["components"]) == {"brake", "tire", "battery"}
        assert v["feature_date"] <= day and v["channel"] in ("phone", "sms", "wechat", "email")
        for c in v["components"].values():
            assert 0 <= c["risk"] <= 1 and c["risk_band"] in ("low", "medium", "high")
            assert {"recommended_window", "recommended_action", "evidence"} <= set(c)
            for e in c["evidence"]:
                assert set(e) == {"feature", "value", "contribution"} and e["contribution"] > 0
            if c["alert"]:
                assert c["recommended_action"] and c["recommended_window"]["start"] > day
    assert not {k for k in _keys(body) if "phone" in k or "name" in k or "email" in k} - {"name"}  # model.name only
    # default as_of = the latest feature day; a later as_of keeps the last row (feature_date)
    r2 = httpx.post(url + "/assess", json={"vehicle_ids": vins[:1]}, headers=_h(), timeout=30).json()
    assert r2["as_of"] == day
    early = str((feats["date"].min() - pd.Timedelta(days=3)).date())
    r3 = httpx.post(url + "/assess", json={"vehicle_ids": vins[:1], "as_of": early}, headers=_h(), timeout=30).json()
    assert r3["no_data"] == vins[:1] and r3["vehicles"] == []
    # an as_of before the in-memory history (60 days here) is read from Parquet: same answer shape
    old = str((feats["date"].max() - pd.Timedelta(days=100)).date())
    r4 = httpx.post(url + "/assess", json={"vehicle_ids": vins + ["WDB0000000000000X"], "as_of": old}, headers=_h(),
                    timeout=30).json()
    assert [v["vehicle_id"] for v in r4["vehicles"]] == vins and r4["unknown"] == ["WDB0000000000000X"]
    exp = feats[(feats["vehicle_id"] == vins[0]) & (feats["date"] <= old)]["date"].max()
    assert r4["vehicles"][0]["feature_date"] == str(exp.date())


def test_bentoml_client_with_token(server, fleet):
    import bentoml

    url, _ = server
    _, _, vehicles = fleet
    with bentoml.SyncHTTPClient(url, token=TOKEN) as client:
        out = client.assess(vehicle_ids=[vehicles["vehicle_id"][0]])
    assert out["vehicles"][0]["vehicle_id"] == vehicles["vehicle_id"][0]


@pytest.mark.parametrize("path", ["/assess", "/predict", "/telemetry", "/"])
@pytest.mark.parametrize("token", [None, "wrong"])
def test_401_without_valid_token(server, path, token):
    url, _ = server
    headers = {} if token is None else _h(token)
    r = httpx.post(url + path, json={"vehicle_ids": ["X"]}, headers=headers, timeout=10) if path != "/" else \
        httpx.get(url + path, headers=headers, timeout=10)
    assert r.status_code == 401


@pytest.mark.parametrize("body,field", [
    ({}, "vehicle_ids"),
    ({"vehicle_ids": []}, "vehicle_ids"),
    ({"vehicle_ids": "WVW"}, "vehicle_ids"),
    ({"vehicle_ids": [1, 2]}, "vehicle_ids"),
    ({"vehicle_ids": ["A"], "as_of": "yesterday"}, "as_of"),
    ({"vehicle_ids": ["A"], "as_of": "2026-02-30"}, "as_of"),
    ({"vehicle_ids": ["A" * 65]}, "vehicle_ids"),
])
def test_assess_bad_bodies_name_the_field(server, body, field):
    url, _ = server
    r = httpx.post(url + "/assess", json=body, headers=_h(), timeout=10)
    assert r.status_code == 400, r.text
    assert field in json.dumps(r.json()["detail"])


def test_predict_matches_in_process(server, fleet):
    from autopdm.modeling.champion import load_champions

    url, _ = server
    p, feats, _ = fleet
    champs = load_champions(p)
    rows = feats.sample(50, random_state=0)
    records = json.loads(rows.drop(columns=["date"]).to_json(orient="records"))
    r = httpx.post(url + "/predict", json={"rows": records}, headers=_h(), timeout=30)
    assert r.status_code == 200, r.text
    got = r.json()
    assert len(got) == 50
    for comp, ch in champs.items():
        np.testing.assert_allclose([g[comp] for g in got], ch.predict(rows), atol=1e-5)
    bad = httpx.post(url + "/predict", json={"rows": [{list(champs["brake"].feature_names)[0]: "high"}]},
                     headers=_h(), timeout=10)
    assert bad.status_code == 400 and champs["brake"].feature_names[0] in bad.text
    # compact rows: arrays in /model_info feature_order, mixed with object rows in one request
    info = httpx.post(url + "/model_info", json={}, headers=_h(), timeout=10).json()
    order = info["feature_order"]
    assert {c: v["version"] for c, v in info["components"].items()} == {c: str(m.version) for c, m in champs.items()}
    arrays = json.loads(rows[order].astype(float).to_json(orient="values", double_precision=15))
    mixed = arrays[:25] + records[25:]
    r = httpx.post(url + "/predict", json={"rows": mixed}, headers=_h(), timeout=30)
    assert r.status_code == 200, r.text
    for comp, ch in champs.items():
        np.testing.assert_allclose([g[comp] for g in r.json()], ch.predict(rows), atol=1e-5)
    short = httpx.post(url + "/predict", json={"rows": [[1.0, 2.0]]}, headers=_h(), timeout=10)
    assert short.status_code == 400 and "feature_order" in short.text


def test_telemetry_idempotent_per_batch(server, fleet):
    url, _ = server
    p, _, vehicles = fleet
    vin = vehicles["vehicle_id"][0]
    samples = [{"vehicle_id": vin, "ts": f"2031-01-01T08:00:{s:02d}Z", "source": "obd", "speed_kph": 40.0 + s,
                "rpm": 1500.0, "brake_switch": s % 2 == 0} for s in range(10)]
    samples.append({"vehicle_id": vin, "ts": "2031-01-01T08:01:00Z", "source": "obd", "speed_kph": 900.0})
    dtcs = [{"vehicle_id": vin, "ts": "2031-01-01T08:00:05Z", "code": "P0562", "status": "stored"}]
    body = {"batch_id": "wkshp-7:2031-01-01:0001", "samples": samples, "dtc_events": dtcs}
    r1 = httpx.post(url + "/telemetry", json=body, headers=_h(), timeout=30).json()
    assert r1 == {"batch_id": body["batch_id"], "accepted": 11, "quarantined": 1, "duplicate": False}
    r2 = httpx.post(url + "/telemetry", json=body, headers=_h(), timeout=30).json()
    assert r2 == {**r1, "duplicate": True}
    got = store.read_samples(p, vehicle_ids=[vin], start="2031-01-01")
    assert len(got) == 10 and got["speed_kph"].max() == 49.0
    # read_samples drops duplicate readings: count what is stored, every copy of it
    raw = ds.dataset(p.samples / f"vehicle_id={vin}" / "date=2031-01-01", format="parquet").to_table()
    assert raw.num_rows == 10
    assert len(store.read_quarantine(p, "samples")) == 1
    r = httpx.post(url + "/telemetry", json={"batch_id": "b2", "samples": [{"vehicle_id": vin}]}, headers=_h(), timeout=10)
    assert r.status_code == 400 and "ts" in r.text


def test_oversized_body_is_413(server):
    url, _ = server
    big = b'{"vehicle_ids": ["' + b"A" * (2 << 20) + b'"]}'
    r = httpx.post(url + "/assess", content=big, headers={**_h(), "Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 413

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(40):
            yield b"A" * 65536

    r = httpx.post(url + "/telemetry", content=chunks(), headers={**_h(), "Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 413


MALFORMED = [b"", b"{", b"null", b"[]", b"42", b'"x"', b"\xff\xfe", b'{"vehicle_ids": null}', b'{"vehicle_ids": [null]}',
             b'{"vehicle_ids": [{}]}', b'{"vehicle_ids": ["A"], "as_of": 20260101}', b'{"rows": "x"}', b'{"rows": [1]}',
             b'{"rows": [{"a": [1]}]}', b'{"rows": [{"a": {"b": 1}}]}', b'{"rows": [[]]}', b'{"batch_id": ""}',
             b'{"batch_id": "b", "samples": [1]}', b'{"batch_id": "b", "samples": [{"ts": {"x": 1}}]}',
             b'{"batch_id": "b", "dtc_events": [{"vehicle_id": "x", "ts": "x", "code": 5}]}',
             b'{"vehicle_ids": ["A"], "as_of": "9999-99-99"}', b'{"rows": [{"x": 1e999}]}',
             b'{"batch_id": "fz", "samples": [{"vehicle_id": 1, "ts": 1, "source": 1}]}']


def test_fuzz_malformed_bodies_never_500(server):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    url, log = server
    client = httpx.Client(base_url=url, headers={**_h(), "Content-Type": "application/json"}, timeout=30)
    for path in ("/assess", "/predict", "/telemetry"):
        for body in MALFORMED:
            r = client.post(path, content=body)
            assert r.status_code < 500, (path, body, r.status_code, r.text)

    scalars = st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=False) | st.text(max_size=30)
    values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
                          max_leaves=10)
    keys = st.sampled_from(["vehicle_ids", "as_of", "rows", "batch_id", "samples", "dtc_events", "x"])

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(path=st.sampled_from(["/assess", "/predict", "/telemetry"]), body=st.dictionaries(keys, values, max_size=4))
    def fuzz(path, body):
        r = client.post(path, content=json.dumps(body))
        assert r.status_code < 500, (path, body, r.status_code, r.text)

    fuzz()
    client.close()


# -- batch scoring → outbox → receiver ---------------------------------------------------------

def test_score_emit_with_receiver_down_then_up_delivers_each_once(fleet_home, fleet, tmp_path, monkeypatch):
    from autopdm.serving.score import score_fleet

    p, feats, _ = fleet
    port = free_port()
    extra = dict(AUTOPDM_CRM_WEBHOOK_URL=f"http://127.0.0.1:{port}/work-orders", AUTOPDM_OUTBOX_BACKOFF_BASE_S="0.2",
                 AUTOPDM_OUTBOX_BACKOFF_CAP_S="1")
    env = home_env(fleet_home, **extra)
    for k in ("AUTOPDM_CRM_WEBHOOK_URL", "AUTOPDM_CRM_WEBHOOK_SECRET", "AUTOPDM_OUTBOX_BACKOFF_BASE_S", "AUTOPDM_OUTBOX_BACKOFF_CAP_S"):
        monkeypatch.setenv(k, env[k])
    last = feats["date"].max()
    days = [(last - pd.Timedelta(days=k)).date() for k in range(90, -1, -6)]
    emitted = n_wo = 0
    for d in days:  # receiver down: every delivery attempt fails, nothing is lost
        res = score_fleet(d, p, emit=True)
        assert res.scored > 0 and res.enqueued + res.suppressed == len(res.work_orders) + len(res.reminders)
        emitted += res.enqueued
        n_wo += len(res.work_orders)
    ob = Outbox.open(p)
    rows = ob.rows()
    assert emitted == len(rows) > 0, f"no work orders in {len(days)} days"
    # closed = a later service event of that component already happened (history is replayed)
    assert {r["status"] for r in rows} <= {"pending", "closed"} and any(r["attempts"] >= 1 for r in rows)
    to_deliver = sum(r["status"] == "pending" for r in rows)
    assert to_deliver > 0
    for r in rows:  # the exact payload contract
        wo = json.loads(r["body"])
        if wo.get("kind") == "reminder":   # service reminders share the outbox (tests/test_reminders.py)
            assert r["component"] == "reminder:" + wo["service"] and r["work_order_id"].startswith("rm-")
            continue
        assert set(wo) == {"work_order_id", "vehicle_id", "customer_id", "channel", "component", "risk", "risk_band",
                           "recommended_window", "recommended_action", "evidence", "explanation", "model", "created_at", "kind"}
        assert wo["work_order_id"] == r["work_order_id"] and set(wo["model"]) == {"name", "version"}
        assert isinstance(wo["explanation"], list) and all(isinstance(t, str) and t for t in wo["explanation"])
    # the last day again, through the CLI: nothing new while the recommendations are open
    r = subprocess.run([AUTOPDM, "score", "--as-of", str(days[-1]), "--emit", "--json", "--no-deliver"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    again = json.loads(r.stdout)
    # nothing new while the recommendations are open, and nothing left to close: an order for a part
    # serviced on its scoring day was closed by that run, before it could be delivered
    assert again["enqueued"] == 0 and again["closed"] == 0

    rec = start_receiver(fleet_home, port, tmp_path / "receiver.log")
    try:
        r = subprocess.run([AUTOPDM, "outbox", "retry"], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert {x["status"] for x in ob.rows()} <= {DELIVERED, "closed"}
        n = to_deliver
        assert receiver_stats(port) == {"work_orders": n, "deliveries": n, "duplicates": 0, "rejected": 0}
        st = subprocess.run([AUTOPDM, "outbox", "status", "--json"], env=env, capture_output=True, text=True, timeout=60)
        assert json.loads(st.stdout)["counts"]["delivered"] == n
    finally:
        stop(rec)
