"""Who may see what, against a real `bentoml serve`: every endpoint × role × a car inside or outside
the token's dealer scope, with the answer about another dealer's car equal to the answer about a car
nobody knows; revoked tokens; the audit trail of it all; `autopdm token` and `autopdm audit`."""

from __future__ import annotations

import itertools
import json
import re
import time

import httpx
import pytest
from typer.testing import CliRunner

from autopdm import store
from autopdm.cli import app
from autopdm.serving import audit
from autopdm.serving.tokens import ROLES, TokenStore, db_path

from .service_fleet import TOKEN, fleet_copy, home_paths, serving

pytestmark = pytest.mark.slow
DEALER, OTHER = "D001", "D002"
UNKNOWN = "1HGCM82633A004352"   # a valid VIN nobody has
ROLE_OF = {"assess": "crm", "records": "crm", "telemetry": "crm", "predict": "data-science",
           "model_info": "data-science", "reload": "operator", "ui_vehicle": "advisor",
           "ui_outcome": "advisor"}
_batch = itertools.count()


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return fleet_copy(tmp_path_factory, "access")


@pytest.fixture(scope="module")
def tokens(home):
    """role × scope → (token id, secret); "api" is AUTOPDM_API_TOKEN."""
    ts = TokenStore(db_path(home_paths(home)))
    out = {("api", None): ("api", TOKEN)}
    for role in ROLES:
        for dealer in (None, DEALER):
            out[(role, dealer)] = ts.create(role, dealer, name=f"test {role}")
    rid, rsecret = ts.create("crm", None, name="revoked")
    ts.revoke(rid)
    out[("revoked", None)] = (rid, rsecret)
    return out


@pytest.fixture(scope="module")
def server(home, tokens, tmp_path_factory):
    with serving(home, tmp_path_factory.mktemp("logs") / "serve.log", AUTOPDM_RELOAD_POLL_S="0") as url:
        yield url


@pytest.fixture(scope="module")
def vins(home):
    """A scored car of DEALER and one of OTHER."""
    v = store.read_table("vehicles", home_paths(home))
    feats = set(store.read_table("features", home_paths(home), columns=["vehicle_id"])["vehicle_id"])
    v = v[v["vehicle_id"].isin(feats)]
    return {"in": v.loc[v["dealer_id"] == DEALER, "vehicle_id"].iloc[0],
            "out": v.loc[v["dealer_id"] == OTHER, "vehicle_id"].iloc[0], "unknown": UNKNOWN}


@pytest.fixture(scope="module")
def feature(server):
    r = httpx.post(server + "/model_info", json={}, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    return r.json()["feature_order"][0]


def _auth(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}"}


def sign_in(c: httpx.Client, url: str, secret: str) -> httpx.Response:
    form = c.get(url + "/ui/signin")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    return c.post(url + "/ui/signin", data={"csrf": csrf, "token": secret, "next": "/ui/"})


_SESSIONS: dict = {}


def _session(url: str, secret: str) -> httpx.Client | None:
    """A signed-in client per token (None: the sign-in refused it), made once: a refusal waits 0.5 s."""
    if (url, secret) not in _SESSIONS:
        c = httpx.Client(timeout=60)
        _SESSIONS[(url, secret)] = c if sign_in(c, url, secret).status_code == 303 else None
    return _SESSIONS[(url, secret)]


def call(url: str, endpoint: str, secret: str, vin: str, feature: str) -> tuple[int, str]:
    """One request about `vin` → (status, body with the VIN and the batch id made neutral)."""
    batch = f"access-{next(_batch)}"
    if endpoint == "assess":
        r = httpx.post(url + "/assess", json={"vehicle_ids": [vin]}, headers=_auth(secret), timeout=60)
    elif endpoint == "records":
        row = {"inspection_id": f"i-{batch}", "vehicle_id": vin, "date": "2026-01-05", "component": "battery",
               "position": "-", "measurement": "battery_soh_pct", "value": 80}
        r = httpx.post(url + "/records", json={"batch_id": batch, "inspections": [row]}, headers=_auth(secret), timeout=60)
    elif endpoint == "telemetry":
        row = {"vehicle_id": vin, "ts": "2026-01-05T08:00:00Z", "source": "obd", "speed_kph": 10}
        r = httpx.post(url + "/telemetry", json={"batch_id": batch, "samples": [row]}, headers=_auth(secret), timeout=60)
    elif endpoint == "predict":
        r = httpx.post(url + "/predict", json={"rows": [{feature: 1.0}]}, headers=_auth(secret), timeout=60)
    elif endpoint == "model_info":
        r = httpx.post(url + "/model_info", json={}, headers=_auth(secret), timeout=60)
    elif endpoint == "reload":
        r = httpx.post(url + "/reload", json={}, headers=_auth(secret), timeout=60)
    else:
        c = _session(url, secret)
        if c is None:
            return 401, "no session"
        if endpoint == "ui_vehicle":
            r = c.get(f"{url}/ui/vehicles/{vin}")
        else:
            page = c.get(url + "/ui/")
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
            r = c.post(f"{url}/ui/vehicles/{vin}/outcomes", data={"csrf": csrf, "work_order_id": "wo-1", "status": "booked"})
    body = re.sub(r'name="csrf" value="[^"]+"', "csrf", r.text.replace(vin, "<VIN>").replace(batch, "<BATCH>"))
    return r.status_code, body


@pytest.mark.parametrize("endpoint", sorted(ROLE_OF))
def test_every_endpoint_by_role_and_dealer_scope(server, tokens, vins, feature, endpoint):
    need = ROLE_OF[endpoint]
    vehicle_data = endpoint in ("assess", "records", "telemetry", "ui_vehicle", "ui_outcome")
    for (role, dealer), (_, secret) in tokens.items():
        if role == "revoked":
            assert call(server, endpoint, secret, vins["in"], feature)[0] == 401, endpoint
            continue
        allowed = role in ("api", need)
        cases = ("in", "out", "unknown") if vehicle_data and allowed else ("in",)
        got = {k: call(server, endpoint, secret, vins[k], feature) for k in cases}
        if not allowed:
            expect = 401 if endpoint.startswith("ui_") else 403  # the pages: the sign-in refuses the token
            assert {s for s, _ in got.values()} == {expect}, (endpoint, role, dealer, got)
            continue
        status, body = got["in"]
        assert status in (200, 404) if endpoint == "ui_outcome" else status == 200, (endpoint, role, dealer, got["in"])
        if not vehicle_data:
            continue
        if endpoint == "records":
            assert json.loads(body)["accepted"] == {"inspections": 1}, body
        if dealer is None:
            # every car is open to an unscoped token: another dealer's car is answered like this dealer's
            assert got["out"][0] == got["in"][0], (endpoint, role, got)
            if endpoint == "assess":
                assert '"unknown":[]' in got["out"][1].replace(" ", "")
        else:
            # another dealer's car: exactly the answer about a car nobody knows
            assert got["out"] == got["unknown"], (endpoint, role, dealer, got)
            if endpoint in ("assess", "records", "ui_vehicle"):
                assert got["in"] != got["unknown"], (endpoint, got)


def test_batch_answers_hide_other_dealers_cars(server, home, tokens, vins):
    _, secret = tokens[("crm", DEALER)]
    ids = [vins["out"], vins["in"], vins["unknown"]]
    body = httpx.post(server + "/assess", json={"vehicle_ids": ids}, headers=_auth(secret), timeout=60).json()
    assert [v["vehicle_id"] for v in body["vehicles"]] == [vins["in"]]
    assert body["unknown"] == [vins["out"], vins["unknown"]] and body["no_data"] == []
    full = httpx.post(server + "/assess", json={"vehicle_ids": ids}, headers=_auth(TOKEN), timeout=60).json()
    assert {v["vehicle_id"] for v in full["vehicles"]} == {vins["in"], vins["out"]}
    # /records: rows about another dealer's car are rejected as rows about an unknown car; a vehicles row
    # of the scoped token becomes this dealer's; one claiming another dealer is refused
    rows = [{"inspection_id": f"b-{k}", "vehicle_id": v, "date": "2026-01-06", "component": "battery",
             "position": "-", "measurement": "battery_soh_pct", "value": 81} for k, v in enumerate(ids)]
    new_vin = "WDB1240221A000001"
    r = httpx.post(server + "/records", headers=_auth(secret), timeout=60, json={
        "batch_id": "scoped-batch", "inspections": rows,
        "vehicles": [{"vehicle_id": new_vin, "preferred_channel": "sms"},
                     {"vehicle_id": "WDB1240221A000002", "preferred_channel": "sms", "dealer_id": OTHER}]}).json()
    assert r["accepted"] == {"vehicles": 1, "inspections": 1}, r["rejected"]
    reasons = {(x["table"], x["row"]): x["reason"] for x in r["rejected"]}
    assert reasons[("inspections", 0)] == reasons[("inspections", 2)].replace("row 2", "row 0")
    assert "unknown vehicle" in reasons[("inspections", 0)] and "dealer_id" in reasons[("vehicles", 1)]
    v = store.read_table("vehicles", home_paths(home))
    assert v.loc[v["vehicle_id"] == new_vin, "dealer_id"].tolist() == [DEALER]


def test_revoked_token_and_audit_trail(server, home, tokens, vins, tmp_path):
    tid, secret = tokens[("crm", DEALER)]
    paths = home_paths(home)
    t0 = time.time()
    assert httpx.post(server + "/assess", json={"vehicle_ids": [vins["in"], vins["out"]]}, headers=_auth(secret),
                      timeout=60).status_code == 200
    deadline = time.time() + 10
    while time.time() < deadline:
        mine = [e for e in audit.query(paths, vins["out"]) if e["token_id"] == tid and e["endpoint"] == "/assess"]
        if mine:
            break
        time.sleep(0.1)
    assert mine and mine[-1]["shown"] is False and mine[-1]["dealer"] == DEALER and mine[-1]["role"] == "crm"
    seen = [e for e in audit.query(paths, vins["in"]) if e["token_id"] == tid]
    assert seen and seen[-1]["shown"] is True
    # the trail holds no secrets
    raw = audit.db_path(paths).read_bytes() + (audit.db_path(paths).parent / "audit.sqlite-wal").read_bytes()
    assert all(s.encode() not in raw for _, s in tokens.values())
    # `autopdm audit`: who looked at this car since a day
    res = CliRunner().invoke(app, ["audit", "--vehicle", vins["out"], "--since", time.strftime("%Y-%m-%d", time.gmtime(t0))],
                             env={"AUTOPDM_HOME": str(home)})
    assert res.exit_code == 0, res.output
    assert tid in res.output and "/assess" in res.output
    # append-only
    con = audit.connect(audit.db_path(paths))
    with pytest.raises(Exception, match="append-only"):
        con.execute("DELETE FROM entries")
    con.close()
    # an advisor's page views are recorded too: another dealer's car as not shown
    aid, asecret = TokenStore(db_path(paths)).create("advisor", DEALER, name="revoked in test")
    with httpx.Client(timeout=60, follow_redirects=False) as c:
        assert sign_in(c, server, asecret).status_code == 303
        assert c.get(f"{server}/ui/vehicles/{vins['out']}").status_code == 404
        assert c.get(f"{server}/ui/vehicles/{vins['in']}").status_code == 200
        deadline = time.time() + 10
        while time.time() < deadline and not [e for e in audit.query(paths, vins["in"]) if e["token_id"] == aid]:
            time.sleep(0.1)
        assert [(e["endpoint"], e["shown"]) for e in audit.query(paths, vins["out"]) if e["token_id"] == aid] == \
            [("/ui/vehicles", False)]
        assert ("/ui/vehicles", True) in [(e["endpoint"], e["shown"]) for e in audit.query(paths, vins["in"])
                                          if e["token_id"] == aid]
        # revoking works at the next request: the API refuses the token, the page's session ends
        for t in (tid, aid):
            res = CliRunner().invoke(app, ["token", "revoke", t], env={"AUTOPDM_HOME": str(home)})
            assert res.exit_code == 0, res.output
        assert httpx.post(server + "/assess", json={"vehicle_ids": [vins["in"]]}, headers=_auth(secret),
                          timeout=60).status_code == 401
        r = c.get(f"{server}/ui/vehicles/{vins['in']}")
        assert r.status_code == 303 and "/ui/signin" in r.headers["location"]


def test_token_commands(tmp_path):
    env = {"AUTOPDM_HOME": str(tmp_path / "var")}
    r = CliRunner().invoke(app, ["token", "create", "--role", "advisor", "--dealer", "D9", "--name", "front desk"], env=env)
    assert r.exit_code == 0, r.output
    secret = r.output.strip().splitlines()[-1]   # alone on the last line, for scripts
    assert re.fullmatch(r"apdm_[A-Za-z0-9_\-]+", secret)
    tid = re.search(r"tok_[0-9a-f]+", r.output).group(0)
    listed = CliRunner().invoke(app, ["token", "list"], env=env)
    assert tid in listed.output and "D9" in listed.output and secret not in listed.output
    assert secret.encode() not in (tmp_path / "var" / "access" / "tokens.sqlite").read_bytes()
    bad = CliRunner().invoke(app, ["token", "create", "--role", "admin"], env=env)
    assert bad.exit_code == 2 and "--role" in bad.output
    assert CliRunner().invoke(app, ["token", "revoke", "tok_nope"], env=env).exit_code == 1
    assert CliRunner().invoke(app, ["token", "revoke", tid], env=env).exit_code == 0
    assert "revoked" in CliRunner().invoke(app, ["token", "list"], env=env).output
