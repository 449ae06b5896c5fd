"""Property-based fuzzing of every endpoint of a real `bentoml serve` (Hypothesis, derandomized,
with a fixed budget so that CI is fast and gives the same answer every run).

Properties: no 5xx and no traceback for any request; /assess and /predict accept exactly what
their schema allows (and a refusal names the field); /telemetry stores only what the canonical
schema allows, counts every row once, and answers a reused batch id with other content with 409.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from datetime import date, timedelta

import httpx
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from autopdm import schemas, store
from autopdm.serving.auth import is_public
from autopdm.serving.requests import AS_OF_MAX, AS_OF_MIN

from .service_fleet import TOKEN, fleet_copy, home_paths, serving

pytestmark = pytest.mark.slow
FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=80, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much])
NO_SHRINK = [Phase.explicit, Phase.reuse, Phase.generate]  # an expected failure must not spend minutes shrinking
ENDPOINTS = ["/assess", "/predict", "/telemetry", "/model_info", "/reload"]
VIN_CHARS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
CONTENT_TYPES = [None, "application/json", "application/json; charset=utf-8", "multipart/form-data",
                 "multipart/form-data; boundary=b", "application/x-www-form-urlencoded", "text/plain",
                 "application/octet-stream", "application/vnd.bentoml+pickle", "image/png", "*/*", "json", ""]

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
scalars = st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats() | text
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(text, c, max_size=4), max_leaves=12)


class Api(tuple):
    """(client, paths, model info + known vehicles); short in Hypothesis' failure reports."""

    def __repr__(self) -> str:
        return "api"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    home = fleet_copy(tmp_path_factory, "fuzz")
    with serving(home, tmp_path_factory.mktemp("logs") / "serve.log") as url:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as client:
            info = client.post("/model_info", json={}).json()
            paths = home_paths(home)
            info["known_vehicles"] = sorted(store.read_table("features", paths, columns=["vehicle_id"])["vehicle_id"].unique())
            yield Api((client, paths, info))


def sane(r: httpx.Response) -> None:
    assert r.status_code < 500, (r.request.method, r.request.url, r.status_code, r.text[:500])
    assert "Traceback" not in r.text and 'File "' not in r.text, r.text[:500]


def dumps(v) -> bytes:
    return json.dumps(v, allow_nan=True).encode()


# -- anything, anywhere ------------------------------------------------------------------------

@FUZZ
@given(path=st.sampled_from(ENDPOINTS + ["/", "/docs", "/docs.json", "/schema.json", "/livez", "/readyz", "/metrics"]),
       method=st.sampled_from(["POST", "GET", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]),
       body=st.one_of(json_values.map(dumps), st.binary(max_size=300),
                      st.dictionaries(st.sampled_from(["vehicle_ids", "as_of", "rows", "batch_id", "samples",
                                                       "dtc_events"]), json_values, max_size=4).map(dumps)),
       content_type=st.sampled_from(CONTENT_TYPES), token=st.sampled_from([TOKEN, None, "x", TOKEN[:-1], TOKEN + "4"]))
def test_no_request_gets_a_5xx_or_a_traceback(api, path, method, body, content_type, token):
    client, _, _ = api
    h = {"Authorization": f"Bearer {token}"} if token else {"Authorization": ""}
    if content_type is not None:
        h["Content-Type"] = content_type
    r = client.request(method, path, content=body if method not in ("GET", "HEAD") else None, headers=h)
    sane(r)
    if token != TOKEN and not is_public(path):
        assert r.status_code == 401
    if r.status_code == 200 and method == "POST" and path in ("/assess", "/predict", "/telemetry"):
        media = (content_type or "application/json").split(";")[0].strip()
        assert media in ("", "application/json"), content_type  # nothing but JSON is read


@FUZZ
@given(path=st.text(st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters="?#%"), max_size=30),
       method=st.sampled_from(["GET", "POST"]))
def test_unknown_paths_need_the_token_and_never_fail(api, path, method):
    client, _, _ = api
    path = "/" + path
    r = client.request(method, path, headers={"Authorization": ""})
    sane(r)
    if not is_public(r.request.url.path):
        assert r.status_code == 401


# -- /assess -------------------------------------------------------------------------------

def valid_as_of(v) -> bool:
    if v is None:
        return True
    if not isinstance(v, str) or not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", v):
        return False
    try:
        return AS_OF_MIN <= date.fromisoformat(v) <= AS_OF_MAX
    except ValueError:
        return False


dates = st.dates(date(1, 1, 1), date(9999, 12, 31)).map(date.isoformat)
as_ofs = st.one_of(dates, st.sampled_from(["2026-02-30", "2026-13-01", "26-01-01", "2026-1-1", "20260101",
                                           "2026-01-01T00:00", "2026-01-01\n", "١٠٢٦-٠١-٠١", ""]), scalars)


@FUZZ
@given(data=st.data(), as_of=as_ofs, has_as_of=st.booleans(),
       ids=st.one_of(st.lists(st.one_of(text, st.text(VIN_CHARS, min_size=17, max_size=17), st.just("A" * 65)),
                              max_size=5), scalars))
def test_assess_accepts_exactly_its_schema(api, data, as_of, has_as_of, ids):
    client, _, info = api
    known = data.draw(st.lists(st.sampled_from(info["known_vehicles"]), max_size=3))
    if isinstance(ids, list):
        ids = ids + known
    body = {"vehicle_ids": ids, **({"as_of": as_of} if has_as_of else {})}
    r = client.post("/assess", content=dumps(body), headers={"Content-Type": "application/json"})
    sane(r)
    ids_ok = isinstance(ids, list) and 1 <= len(ids) <= 1000 and all(isinstance(v, str) and 1 <= len(v) <= 64 for v in ids)
    as_of_ok = not has_as_of or valid_as_of(as_of)
    assert (r.status_code == 200) == (ids_ok and as_of_ok), (body, r.status_code, r.text[:300])
    if r.status_code == 200:
        a = r.json()
        got = [v["vehicle_id"] for v in a["vehicles"]] + a["unknown"] + a["no_data"]
        assert sorted(got) == sorted(set(ids))
        for v in a["vehicles"]:
            for c in v["components"].values():
                assert 0 <= c["risk"] <= 1 and c["risk_band"] in ("low", "medium", "high")
    else:
        assert r.status_code == 400
        named = json.dumps(r.json().get("detail"))
        assert ("vehicle_ids" in named) if not ids_ok else ("as_of" in named)


# -- /predict ------------------------------------------------------------------------------

def predict_row_ok(row, order: list[str]) -> bool:
    feats = set(order)
    numeric = feats - {"segment_code"}

    def num(v):
        return v is None or isinstance(v, bool) or (isinstance(v, (int, float)) and not math.isinf(v))

    if isinstance(row, list):
        return len(row) == len(order) and all(num(v) for v in row)
    if not isinstance(row, dict) or feats.isdisjoint(row):
        return False
    for k, v in row.items():
        if isinstance(v, (list, dict)):
            return False
        if k in numeric and not num(v):
            return False
        if k == "segment_code" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isinf(v):
            return False
    return True


@FUZZ
@given(data=st.data())
def test_predict_accepts_exactly_its_schema(api, data):
    client, _, info = api
    order = info["feature_order"]
    values = st.one_of(st.none(), st.booleans(), st.floats(), st.integers(-10**6, 10**6),
                       st.sampled_from(["high", "3", "", "1e3"]), st.lists(st.floats(), max_size=2))
    obj_row = st.dictionaries(st.one_of(st.sampled_from(order), text), values, max_size=6)
    arr_row = st.one_of(st.lists(st.one_of(st.none(), st.floats(-1e6, 1e6)), min_size=len(order), max_size=len(order)),
                        st.lists(values, max_size=4))
    rows = data.draw(st.one_of(st.lists(st.one_of(obj_row, arr_row), max_size=4), scalars))
    r = client.post("/predict", content=dumps({"rows": rows}), headers={"Content-Type": "application/json"})
    sane(r)
    ok = isinstance(rows, list) and 1 <= len(rows) <= 10_000 and all(predict_row_ok(x, order) for x in rows)
    assert (r.status_code == 200) == ok, (rows, r.status_code, r.text[:300])
    if ok:
        risks = r.json()
        assert len(risks) == len(rows) and all(0 <= v <= 1 for x in risks for v in x.values())
    else:
        assert r.status_code == 400 and "rows" in json.dumps(r.json().get("detail"))


# -- /telemetry ----------------------------------------------------------------------------

_day = itertools.count()
vins = st.text(VIN_CHARS, min_size=17, max_size=17)
bad_vins = st.one_of(st.text(VIN_CHARS, min_size=16, max_size=16), st.text(VIN_CHARS, min_size=18, max_size=18),
                     vins.map(str.lower), vins.map(lambda v: v[:8] + "I" + v[9:]), st.just(""))


def batch_day() -> date:
    """Every example writes a day of its own, so that what it stored can be read back alone."""
    return date(2040, 1, 1) + timedelta(days=next(_day))


def iso(ts: pd.Timestamp, precision: str) -> str:
    return {"s": ts.strftime("%Y-%m-%dT%H:%M:%SZ"), "ms": ts.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "us": ts.strftime("%Y-%m-%dT%H:%M:%S.%f") + "+00:00", "min": ts.strftime("%Y-%m-%dT%H:%MZ")}[precision]


def sample_rows(draw, day: date, vin_strategy, precisions, brake_values) -> list[dict]:
    n = draw(st.integers(1, 8))
    out = []
    for i in range(n):
        ts = pd.Timestamp(day, tz="UTC") + pd.Timedelta(minutes=i)
        row = {"vehicle_id": draw(vin_strategy), "ts": iso(ts, draw(st.sampled_from(precisions))),
               "source": draw(st.sampled_from(["obd", "can", "csv", "sim", "gps"]))}
        for col, (lo, hi) in draw(st.lists(st.sampled_from(sorted(schemas.SAMPLE_RANGES.items())), max_size=3, unique=True)):
            row[col] = draw(st.one_of(st.floats(lo, hi), st.floats(hi + 1, hi * 10 + 10), st.none()))
        if brake_values is not None:
            row["brake_switch"] = draw(brake_values)
        out.append(row)
    return out


def allowed(row: dict) -> bool:
    """What the canonical samples schema accepts (VIN, timestamp, source, ranges)."""
    if not isinstance(row["vehicle_id"], str) or not re.fullmatch(r"[A-HJ-NPR-Z0-9]{17}", row["vehicle_id"]):
        return False
    if row["source"] not in schemas.SOURCES:
        return False
    return all(row.get(c) is None or lo <= row[c] <= hi for c, (lo, hi) in schemas.SAMPLE_RANGES.items())


def post_and_read_back(api, rows: list[dict], day: date):
    client, paths, _ = api
    r = client.post("/telemetry", json={"batch_id": f"fuzz-{day}", "samples": rows})
    sane(r)
    stored = store.read_samples(paths, start=day, end=day + timedelta(days=1))
    return r, stored


def check_stored(r, stored, rows) -> None:
    assert r.status_code == 200, r.text[:300]
    res = r.json()
    assert res["accepted"] + res["quarantined"] == len(rows) and len(stored) == res["accepted"]
    assert stored["vehicle_id"].map(lambda v: re.fullmatch(r"[A-HJ-NPR-Z0-9]{17}", v) is not None).all(), \
        list(stored["vehicle_id"])  # nothing stored that the schema forbids
    assert res["accepted"] == sum(allowed(x) for x in rows), (rows, res)


@settings(FUZZ, max_examples=30)
@given(data=st.data())
def test_telemetry_stores_exactly_what_the_schema_allows(api, data):
    day = batch_day()
    rows = sample_rows(data.draw, day, st.one_of(vins, bad_vins), [data.draw(st.sampled_from(["s", "ms", "us"]))],
                       st.one_of(st.booleans(), st.none()))
    r, stored = post_and_read_back(api, rows, day)
    check_stored(r, stored, rows)


@settings(FUZZ, max_examples=15, phases=NO_SHRINK)
@given(data=st.data())
def test_telemetry_refuses_vins_with_trailing_whitespace(api, data):
    day = batch_day()
    rows = sample_rows(data.draw, day, vins.map(lambda v: v + data.draw(st.sampled_from(["\n", " ", "\t", "\r\n"]))),
                       ["s"], None)
    r, stored = post_and_read_back(api, rows, day)
    check_stored(r, stored, rows)


@settings(FUZZ, max_examples=15, phases=NO_SHRINK)
@given(data=st.data())
def test_telemetry_accepts_timestamps_of_any_iso_precision_in_one_batch(api, data):
    day = batch_day()
    rows = sample_rows(data.draw, day, vins, ["s", "ms", "us", "min"], None)
    r, stored = post_and_read_back(api, rows, day)
    check_stored(r, stored, rows)


@settings(FUZZ, max_examples=15, phases=NO_SHRINK)
@given(data=st.data())
def test_telemetry_quarantines_booleans_that_are_not(api, data):
    day = batch_day()
    # (an empty field is "not reported", a null, as everywhere in the canonical tables: not in this list)
    rows = sample_rows(data.draw, day, vins, ["s"], st.sampled_from(["maybe", "yes?", "2", "on/off"]))
    r, stored = post_and_read_back(api, rows, day)
    assert r.status_code == 200, r.text[:300]
    assert r.json()["accepted"] == 0 and r.json()["quarantined"] == len(rows) and stored.empty


@settings(FUZZ, max_examples=25)
@given(data=st.data())
def test_telemetry_batch_id_names_one_content(api, data):
    client, _, _ = api
    day = batch_day()
    first = sample_rows(data.draw, day, vins, ["s"], None)
    second = first if data.draw(st.booleans()) else sample_rows(data.draw, day, vins, ["s"], None)
    bid = f"fuzz-id-{day}"
    a = client.post("/telemetry", json={"batch_id": bid, "samples": first})
    sane(a)
    assert a.status_code == 200 and a.json()["duplicate"] is False
    b = client.post("/telemetry", json={"batch_id": bid, "samples": second})
    sane(b)
    if second == first:
        assert b.status_code == 200 and b.json() == {**a.json(), "duplicate": True}
    else:
        assert b.status_code == 409 and b.json()["detail"][0]["loc"] == ["batch_id"] and bid in b.text
