"""The service's edges against a real `bentoml serve`: open API docs and a token on everything
else, JSON bodies only, the answers /assess gives from its scored fleet, /telemetry batch ids,
and a metrics directory per server."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor

import httpx
import pandas as pd
import pyarrow.dataset as ds
import pytest
from prometheus_client.parser import text_string_to_metric_families

from autopdm import store
from autopdm.modeling.champion import load_champions
from autopdm.serving import recommend
from autopdm.serving.auth import is_public
from autopdm.serving.service import Autopdm

from .service_fleet import fleet_copy, headers, home_paths, post, serving

pytestmark = pytest.mark.slow
VIN = "1HGCM82633A004352"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return fleet_copy(tmp_path_factory, "api")


@pytest.fixture(scope="module")
def server(home, tmp_path_factory):
    with serving(home, tmp_path_factory.mktemp("logs") / "serve.log", AUTOPDM_ASSESS_HISTORY_DAYS="60") as url:
        yield url


def app_paths() -> set[str]:
    """Every route the service's ASGI app has (BentoML's own and ours)."""
    return {r.path for r in Autopdm.to_asgi().routes if getattr(r, "path", None)}


def test_api_docs_are_open(server):
    page = httpx.get(server + "/docs", timeout=10)
    assert page.status_code == 200 and "swagger-ui" in page.text
    for asset in ("swagger-ui-bundle.js", "swagger-initializer.js", "swagger-ui.css"):  # what the page loads
        assert f"./static_content/{asset}" in page.text
        assert httpx.get(f"{server}/static_content/{asset}", timeout=10).status_code == 200, asset
    spec = httpx.get(server + "/docs.json", timeout=10)
    assert spec.status_code == 200 and spec.json()["openapi"].startswith("3.")
    assert {"/assess", "/predict", "/telemetry", "/model_info", "/reload"} <= set(spec.json()["paths"])
    assert "/assess" in httpx.get(server + "/schema.json", timeout=10).text


def test_every_other_endpoint_needs_the_token(server):
    paths = app_paths() | {"/", "/static_content", "/nope", "/docs/", "/assess/", "/ui", "//assess"}
    protected = sorted(p for p in paths if not is_public(p))
    assert {"/", "/assess", "/predict", "/telemetry", "/model_info", "/reload"} <= set(protected)
    for path in protected:
        for h in ({}, headers("wrong"), {"Authorization": "Bearer"}, {"Authorization": "Basic dGVzdA=="},
                  {"Authorization": "bearer test-token-12"}, {"Authorization": "Bearer test-token-123x"}):
            for method in ("GET", "POST", "PUT", "DELETE"):
                r = httpx.request(method, server + path, json={"vehicle_ids": [VIN]}, headers=h, timeout=10)
                assert r.status_code == 401, (method, path, h, r.status_code)
                assert VIN not in r.text and "/docs" in r.json()["error"]
    assert post(server, "/model_info", {}).status_code == 200  # the token itself works
    for path in ("/livez", "/readyz", "/healthz", "/docs.json", "/schema.json"):
        assert httpx.get(server + path, timeout=10).status_code == 200, path
    # /metrics is open, as health is (per-endpoint counts and latencies, no vehicle data)
    assert httpx.get(server + "/metrics", timeout=10).status_code == 200


@pytest.mark.parametrize("path", ["/assess", "/predict", "/telemetry", "/model_info", "/reload"])
def test_bodies_must_be_json(server, path):
    for ct, body in (("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--x--\r\n"),
                     ("multipart/form-data", b"garbage"), ("application/x-www-form-urlencoded", b"vehicle_ids=A"),
                     ("text/plain", b'{"vehicle_ids": ["A"]}'), ("application/vnd.bentoml+pickle", b"\x80\x04N."),
                     ("application/xml", b"<a/>")):
        r = httpx.post(server + path, content=body, headers={**headers(), "Content-Type": ct}, timeout=10)
        assert r.status_code == 415 and "Content-Type" in r.text, (ct, r.status_code, r.text)
    body = b'{"vehicle_ids": ["%s"]}' % VIN.encode() if path == "/assess" else b"{}"
    if path in ("/assess", "/model_info"):
        for ct in ("application/json; charset=utf-8", None):
            h = {**headers(), **({"Content-Type": ct} if ct else {})}
            assert httpx.post(server + path, content=body, headers=h, timeout=10).status_code == 200, ct


def test_assess_answers_from_the_scored_fleet(server, home):
    """Every vehicle's latest day was scored when the server started: /model_info says so, and the
    answers are the ones batch scoring gives for the same rows (risks, evidence, windows, ids)."""
    p = home_paths(home)
    feats = store.read_table("features", p)
    feats["date"] = pd.to_datetime(feats["date"])
    vins = sorted(feats["vehicle_id"].unique())
    info = post(server, "/model_info", {}).json()
    assert info["features"]["vehicles_scored"] == len(vins)
    assert info["features"]["latest_day"] == str(feats["date"].max().date())
    champions = load_champions(p)
    last = feats.sort_values("date").groupby("vehicle_id").tail(1).set_index("vehicle_id").loc[vins].reset_index()
    day = "2099-01-01"  # after every vehicle's last feature day: each one's latest row answers
    expect = recommend.assess(last, champions, day)
    got = post(server, "/assess", {"vehicle_ids": vins, "as_of": day}).json()
    assert [v["vehicle_id"] for v in got["vehicles"]] == vins
    for g, e in zip(got["vehicles"], expect):
        assert g["feature_date"] == e["feature_date"]
        for comp, c in e["components"].items():
            gc = g["components"][comp]
            assert gc["risk"] == pytest.approx(c["risk"], abs=1e-4)
            assert [x["feature"] for x in gc["evidence"]] == [x["feature"] for x in c["evidence"]]
            assert (gc["recommended_window"], gc["work_order_id"]) == (c["recommended_window"], c["work_order_id"])
    # past days, in memory (scored on demand) and before the 60 days in memory (read from the
    # table), asked concurrently so that they are answered in shared batches: the same answers as
    # scoring that day's rows in process
    asks = [(vins[k % len(vins):k % len(vins) + 3], feats["date"].max() - pd.Timedelta(days=d))
            for k, d in enumerate((20, 90, 95, 21, 130, 3, 90, 199, 250))]
    with ThreadPoolExecutor(len(asks)) as ex:
        answers = list(ex.map(lambda a: post(server, "/assess", {"vehicle_ids": a[0], "as_of": str(a[1].date())}), asks))
    for (some, day), r in zip(asks, answers):
        rows = feats[feats["date"] <= day].sort_values("date").groupby("vehicle_id").tail(1).set_index("vehicle_id")
        have = [v for v in some if v in rows.index]
        got = r.json()
        assert [v["vehicle_id"] for v in got["vehicles"]] == have and got["no_data"] == [v for v in some if v not in have]
        exp = recommend.assess(rows.loc[have].reset_index(), champions, day) if have else []
        for g, e in zip(got["vehicles"], exp):
            assert g["feature_date"] == e["feature_date"]
            assert {c: x["risk"] for c, x in g["components"].items()} == \
                pytest.approx({c: x["risk"] for c, x in e["components"].items()}, abs=1e-4)
            assert {c: x["work_order_id"] for c, x in g["components"].items()} == \
                {c: x["work_order_id"] for c, x in e["components"].items()}


def test_assess_shows_upcoming_service_reminders(server, home):
    """Each assessed car carries its services due within 30 days, as the reminders module computes
    them from the same records (the odometer forecast from its trips, the schedules)."""
    from autopdm.serving.upcoming import Upcoming

    p = home_paths(home)
    feats = store.read_table("features", p)
    day = pd.to_datetime(feats["date"]).max().date()
    vins = sorted(feats["vehicle_id"].unique())[:40]
    got = post(server, "/assess", {"vehicle_ids": vins, "as_of": str(day)}).json()
    up = Upcoming(p)
    shown = 0
    for v in got["vehicles"]:
        want = up.upcoming(v["vehicle_id"], day)
        assert v["upcoming_reminders"] == want
        shown += len(want)
        for s in want:
            assert s["days_left"] <= 30 and s["reminder"] == (-30 <= s["days_left"] <= 7)
    assert shown > 0


def test_past_days_are_capped_per_request(server, home):
    feats = store.read_table("features", home_paths(home), columns=["vehicle_id", "date"])
    vins = sorted(feats["vehicle_id"].unique())
    past = str((pd.to_datetime(feats["date"]).max() - pd.Timedelta(days=10)).date())
    ok = post(server, "/assess", {"vehicle_ids": vins[:100], "as_of": past})
    assert ok.status_code == 200 and len(ok.json()["vehicles"]) == min(100, len(vins))
    more = [f"{VIN[:-3]}{i:03d}" for i in range(120)]
    # unknown vehicles cost nothing: 101 asked, 80 of them known
    assert post(server, "/assess", {"vehicle_ids": vins + more[:101 - len(vins)], "as_of": past}).status_code == 200
    old = str((pd.to_datetime(feats["date"]).max() - pd.Timedelta(days=90)).date())  # before the 60 days in memory
    r = post(server, "/assess", {"vehicle_ids": vins[:1] + more[:100], "as_of": old})
    assert r.status_code == 400 and "vehicle_ids" in str(r.json()["detail"]) and "100" in r.json()["error"]
    for bad in ("0001-01-01", "1899-12-31", "2200-01-01", "9999-12-31"):
        r = post(server, "/assess", {"vehicle_ids": vins[:1], "as_of": bad})
        assert r.status_code == 400 and "as_of" in str(r.json()["detail"]), bad
    for fine in ("1900-01-01", "2199-12-31"):
        assert post(server, "/assess", {"vehicle_ids": vins[:1], "as_of": fine}).status_code == 200, fine


def test_telemetry_batch_id_reused_for_other_content_is_409(server, home):
    p = home_paths(home)
    samples = [{"vehicle_id": VIN, "ts": f"2032-03-01T10:00:{s:02d}Z", "source": "obd", "speed_kph": float(s)}
               for s in range(6)]
    body = {"batch_id": "shop-3:0042", "samples": samples}
    first = post(server, "/telemetry", body).json()
    assert first == {"batch_id": "shop-3:0042", "accepted": 6, "quarantined": 0, "duplicate": False}
    assert post(server, "/telemetry", body).json()["duplicate"] is True  # the same batch again: fine
    other = {"batch_id": "shop-3:0042", "samples": [{**samples[0], "speed_kph": 99.0}]}
    r = post(server, "/telemetry", other)
    assert r.status_code == 409 and r.json()["detail"][0]["loc"] == ["batch_id"] and "shop-3:0042" in r.text
    got = store.read_samples(p, vehicle_ids=[VIN], start="2032-03-01", end="2032-03-02")
    assert sorted(got["speed_kph"]) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]  # the first content stays


def test_telemetry_replayed_after_a_lost_ledger_entry_is_stored_once(server, home):
    """A crash between storing a batch and recording it in the ledger: the uploader sends it again
    and the files are replaced, not added beside (the batch id names the files)."""
    p = home_paths(home)
    samples = [{"vehicle_id": VIN, "ts": f"2033-05-01T07:00:{s:02d}Z", "source": "can", "rpm": 900.0 + s} for s in range(8)]
    body = {"batch_id": "shop-9:0001", "samples": samples}
    assert post(server, "/telemetry", body).json()["accepted"] == 8
    with sqlite3.connect(p.telemetry / "batches.sqlite") as con:
        con.execute("DELETE FROM batches WHERE batch_id = ?", ("shop-9:0001",))
    again = post(server, "/telemetry", body).json()
    assert again["duplicate"] is False and again["accepted"] == 8
    raw = ds.dataset(p.samples / f"vehicle_id={VIN}" / "date=2033-05-01", format="parquet").to_table()
    assert raw.num_rows == 8


def _requests_served(url: str, endpoint: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == "bentoml_service_request_total" and s.labels.get("endpoint") == endpoint)


def test_two_servers_keep_their_own_metrics(home, tmp_path):
    with serving(home, tmp_path / "a.log") as a:
        for _ in range(7):
            assert post(a, "/model_info", {}).status_code == 200
        assert _requests_served(a, "/model_info") == 7
        with serving(home, tmp_path / "b.log") as b:  # starting used to empty the shared directory
            for _ in range(3):
                assert post(b, "/model_info", {}).status_code == 200
            for _ in range(2):
                assert post(a, "/model_info", {}).status_code == 200
            assert (_requests_served(a, "/model_info"), _requests_served(b, "/model_info")) == (9, 3)
