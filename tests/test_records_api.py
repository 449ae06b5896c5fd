"""POST /records against a real `bentoml serve`: accepted counts and rejected rows naming table, row
and field; one import per batch id (a replay gets the same answer, another content under the same
id a 409); bad input a 4xx naming the field; and the service answering from the new records at its
next refresh (a vehicle the CRM hands over becomes known to /assess, a changed channel shows)."""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from autopdm import schemas, store
from autopdm.ingest import crm

from .service_fleet import fleet_copy, headers, home_paths, post, serving

pytestmark = pytest.mark.slow
NEW = "9BRBL3HE5E0123456"
RECORD_TABLES = ("vehicles", "service_events", "inspections", "outcomes")


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return fleet_copy(tmp_path_factory, "records")


@pytest.fixture(scope="module")
def server(home, tmp_path_factory):
    with serving(home, tmp_path_factory.mktemp("logs") / "serve.log", AUTOPDM_RELOAD_POLL_S="1") as url:
        yield url


def mtimes(home) -> dict:
    p = home_paths(home)
    return {t: p.table(t).stat().st_mtime_ns for t in RECORD_TABLES if p.table(t).exists()}


def known_vin(home) -> str:
    return sorted(store.read_table("features", home_paths(home), columns=["vehicle_id"])["vehicle_id"].unique())[0]


def test_accepted_counts_and_rejected_rows_then_a_replay_changes_nothing(server, home):
    sim = known_vin(home)
    body = {
        "batch_id": "crm-7:2026-03-02:0001",
        "vehicles": [
            {"vehicle_id": NEW, "make": "Toyota", "model": "Etios", "model_year": 2014, "segment": "small",
             "first_registration_date": "2014-03-14", "customer_id": 104233, "preferred_channel": "sms",
             "full_name": "dropped, never stored"},
            {"vehicle_id": "9BRBL3HE5E012345", "preferred_channel": "sms"},                   # 16 characters
        ],
        "service_events": [
            {"event_id": "J-1", "vehicle_id": NEW, "date": "2025-11-03", "odometer_km": 55410, "component": "brake",
             "action": "inspect"},
            {"event_id": "J-2", "vehicle_id": NEW, "date": "2025-11-03", "component": "wipers", "action": "replace"},
        ],
        "inspections": [
            {"inspection_id": "I-1", "vehicle_id": NEW, "date": "2025-11-03", "odometer_km": 55410, "component": "brake",
             "position": "front", "measurement": "pad_mm", "value": 3.5, "verdict": "advise"},
            {"inspection_id": "I-2", "vehicle_id": NEW, "date": "2025-11-03", "component": "brake",
             "position": "front", "measurement": "pad_mm", "value": "thin"},
            {"inspection_id": "I-3", "vehicle_id": "WDD2050041R123456", "date": "2025-11-03", "component": "brake",
             "position": "rear", "measurement": "pad_mm", "value": 6.0},
        ],
        "outcomes": [{"work_order_id": "wo-0123456789abcdef01234567", "vehicle_id": sim, "component": "battery",
                      "date": "2026-01-05", "status": "booked"}],
    }
    r = post(server, "/records", body)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["duplicate"] is False and got["batch_id"] == body["batch_id"]
    assert got["accepted"] == {"vehicles": 1, "service_events": 1, "inspections": 1, "outcomes": 1}
    assert {(x["table"], x["row"], x["field"]) for x in got["rejected"]} == {
        ("vehicles", 1, "vehicle_id"), ("service_events", 1, "component"),
        ("inspections", 1, "value"), ("inspections", 2, "vehicle_id")}
    for x in got["rejected"]:
        assert x["reason"].startswith(f"{x['table']} row {x['row']}: {x['field']}: ")
    assert got["tables"]["vehicles"]["ignored_fields"] == ["full_name"]
    p = home_paths(home)
    v = store.read_table("vehicles", p).set_index("vehicle_id")
    assert v.loc[NEW, "customer_id"] == "104233" and v.loc[NEW, "preferred_channel"] == "sms"
    assert "never stored" not in p.table("vehicles").read_bytes().decode("latin-1")
    ins = store.read_table("inspections", p)
    assert ins.loc[ins["inspection_id"] == "I-1", "value"].tolist() == [3.5]
    assert set(store.read_quarantine(p, "inspections")["origin"]) == {f"records:{body['batch_id']}"}

    before = mtimes(home)
    again = post(server, "/records", body).json()
    assert again.pop("duplicate") is True and got.pop("duplicate") is False
    assert again == got
    assert mtimes(home) == before
    # the same id with other content: refused, nothing changes
    other = {**body, "inspections": body["inspections"][:1] + [{**body["inspections"][0], "inspection_id": "I-9"}]}
    r = post(server, "/records", other)
    assert r.status_code == 409 and r.json()["detail"][0]["loc"] == ["batch_id"] and body["batch_id"] in r.text
    assert mtimes(home) == before and "I-9" not in set(store.read_table("inspections", p)["inspection_id"])
    # a new batch with the same rows: accepted, and nothing is new
    same = post(server, "/records", {**body, "batch_id": "crm-7:2026-03-02:0002"}).json()
    assert same["duplicate"] is False and {t: x["unchanged"] for t, x in same["tables"].items()} == got["accepted"]
    assert mtimes(home) == before


BAD = [
    ({}, "batch_id"),
    ({"batch_id": "has space", "vehicles": [{"vehicle_id": NEW}]}, "batch_id"),
    ({"batch_id": "b-1"}, "vehicles"),                                                   # an empty batch
    ({"batch_id": "b-2", "vehicles": {"vehicle_id": NEW}}, "vehicles"),
    ({"batch_id": "b-3", "vehicles": [[NEW, "sms"]]}, "vehicles.0"),
    ({"batch_id": "b-4", "vehicles": [{"vehicle_id": {"vin": NEW}, "preferred_channel": "sms"}]}, "vehicles.0.vehicle_id"),
    ({"batch_id": "b-5", "inspections": [{"vin": NEW, "pad": 3.5}]}, "inspections"),   # not inspections at all
    ({"batch_id": "b-6", "outcomes": [{f"f{i}": i for i in range(101)}]}, "outcomes.0"),
    ({"batch_id": "b-7", "vehicles": [{"x" * 101: 1}]}, "vehicles.0"),
]


@pytest.mark.parametrize("body,field", BAD, ids=[f for _, f in BAD])
def test_bad_input_is_a_4xx_naming_the_field(server, body, field):
    r = post(server, "/records", body)
    assert 400 <= r.status_code < 500, r.text
    locs = [".".join(map(str, d["loc"])) for d in r.json()["detail"]]
    assert any(loc == field or loc.startswith(field + ".") for loc in locs), (field, locs)


def test_a_body_that_is_not_json_is_a_4xx(server):
    for body in (b"{not json", b"", b"[]", b"null"):
        r = httpx.post(server + "/records", content=body, headers={**headers(), "Content-Type": "application/json"}, timeout=10)
        assert 400 <= r.status_code < 500, (body, r.status_code, r.text)


def _assess(server, vins):
    return post(server, "/assess", {"vehicle_ids": vins}).json()


def test_vehicles_handed_over_are_known_to_assess_at_the_next_refresh(server, home):
    sim = known_vin(home)
    vin = "VF1RJA00067412983"
    first = _assess(server, [sim, vin])
    assert first["unknown"] == [vin]
    old = next(x for x in first["vehicles"] if x["vehicle_id"] == sim)
    channel = "wechat" if old["channel"] != "wechat" else "email"
    body = {"batch_id": "crm-7:refresh", "vehicles": [
        {"vehicle_id": vin, "make": "Renault", "customer_id": "C105102", "preferred_channel": "phone"},
        {"vehicle_id": sim, "customer_id": "C-MOVED-1", "preferred_channel": channel}]}
    assert post(server, "/records", body).json()["tables"]["vehicles"] == {
        "received": 2, "new": 1, "changed": 1, "unchanged": 0, "rejected": 0, "ignored_fields": []}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the service polls every second (AUTOPDM_RELOAD_POLL_S=1)
        now = _assess(server, [sim, vin])
        if now["unknown"] == []:
            break
        time.sleep(0.5)
    assert now["unknown"] == [] and now["no_data"] == [vin]  # known now; no telemetry yet
    mine = next(x for x in now["vehicles"] if x["vehicle_id"] == sim)
    assert (mine["customer_id"], mine["channel"]) == ("C-MOVED-1", channel)


def test_the_same_batch_posted_at_once_is_imported_once(server, home):
    rows = [{"vehicle_id": f"WVWZZZAUZKW{i:06d}", "preferred_channel": "email", "customer_id": f"C{i}"} for i in range(300)]
    body = {"batch_id": "crm-7:burst", "vehicles": rows}
    with ThreadPoolExecutor(6) as ex:
        answers = [r.json() for r in ex.map(lambda _: post(server, "/records", body), range(6))]
    assert sorted(a.pop("duplicate") for a in answers) == [False] + [True] * 5
    assert all(a == answers[0] for a in answers)
    assert answers[0]["tables"]["vehicles"]["new"] == 300


# -- fuzzing: whatever a CRM sends, never a 5xx, and every row is accounted for ------------------

FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=60, print_blob=False,
                phases=[Phase.explicit, Phase.reuse, Phase.generate],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
values = (st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats() | text
          | st.sampled_from([NEW, "2025-11-03", "brake", "front", "pad_mm", "sms", "replace", "booked", "3.5", ""]))


GOOD = {"vehicle_id": [NEW], "preferred_channel": ["sms", "email"], "event_id": ["E-1", "E-2"], "date": ["2025-11-03"],
        "component": ["brake", "tire", "battery", "other"], "action": ["replace", "inspect"], "inspection_id": ["I-7", "I-8"],
        "position": ["front", "rear", "fl", "-"], "measurement": ["pad_mm", "tread_mm", "battery_soh_pct"],
        "value": [3.5, 7.0, 80.0], "work_order_id": ["wo-1", "wo-2"], "status": ["booked", "done_ok"]}


def rows_of(table: str):
    """Rows with any fields, and rows with at least the required ones, often plausible (so that most
    batches get to the row checks and some rows are stored)."""
    keys = st.sampled_from(list(schemas.TABLES[table].names)) | text
    anything = st.dictionaries(keys, values, max_size=12)
    required = st.builds(lambda req, extra: {**extra, **req},
                         st.fixed_dictionaries({k: st.sampled_from(GOOD[k]) | values for k in crm.REQUIRED[table]}), anything)
    return st.lists(required | anything, max_size=6)


@FUZZ
@given(vehicles=rows_of("vehicles"), service_events=rows_of("service_events"),
       inspections=rows_of("inspections"), outcomes=rows_of("outcomes"))
def test_any_records_get_an_answer_that_accounts_for_every_row(server, home, vehicles, service_events, inspections, outcomes):
    tables = {"vehicles": vehicles, "service_events": service_events, "inspections": inspections, "outcomes": outcomes}
    content = json.dumps(tables, allow_nan=True, sort_keys=True)
    batch = "fuzz-" + hashlib.sha1(content.encode()).hexdigest()  # one batch id per content: no 409s
    r = httpx.post(server + "/records", content=json.dumps({"batch_id": batch, **tables}, allow_nan=True),
                   headers={**headers(), "Content-Type": "application/json"}, timeout=60)
    assert r.status_code < 500 and "Traceback" not in r.text, r.text[:500]
    if r.status_code != 200:
        assert r.status_code == 400 and r.json()["detail"][0]["loc"], r.text
        return
    got = r.json()
    for t, rows in tables.items():
        if rows and not got["duplicate"]:
            assert got["accepted"][t] + got["rejected_count"][t] == len(rows), (t, got)
            assert sorted({x["row"] for x in got["rejected"] if x["table"] == t}) == \
                sorted(x["row"] for x in got["rejected"] if x["table"] == t)  # one reason per rejected row
    for t in tables:  # whatever was stored is valid
        assert schemas.validate(store.read_table(t, home_paths(home)), t).n_quarantined == 0, t
