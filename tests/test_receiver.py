"""The reference CRM receiver as a real process: signatures, replays, de-duplication, field checks,
the bearer token on its reads, limits and timeouts."""

from __future__ import annotations

import json
import socket
import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from autopdm.delivery import signing
from autopdm.delivery.outbox import encode_body

from .conftest import free_port
from .procs import (RECEIVER_TOKEN, SECRET, fake_work_orders, receiver_auth, receiver_stats, receiver_work_orders,
                    start_receiver, stop)


@pytest.fixture
def receiver(home, tmp_path):
    port = free_port()
    log = tmp_path / "receiver.log"
    proc = start_receiver(home.home, port, log, timeout=1.0)
    yield f"http://127.0.0.1:{port}", port, log
    stop(proc)


@pytest.fixture(scope="module")
def shared_receiver(tmp_path_factory):
    """One receiver for tests that store nothing."""
    tmp = tmp_path_factory.mktemp("receiver")
    port = free_port()
    log = tmp / "receiver.log"
    proc = start_receiver(tmp / "var", port, log, timeout=1.0)
    yield f"http://127.0.0.1:{port}", port, log
    stop(proc)


def _post(url, body: bytes, key: str | None, signed: str | bool = True, when: datetime | None = None,
          secret: str = SECRET, client=httpx):
    """POST a delivery; `signed`: True (sign with `key`), False (no signature) or a webhook-id to sign with."""
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    if signed:
        headers.update(signing.sign(signed if isinstance(signed, str) else (key or ""), body, secret, when))
    return client.post(url + "/work-orders", content=body, headers=headers, timeout=5)


def test_store_once_and_reject_bad_requests(receiver):
    url, port, _ = receiver
    wo = fake_work_orders(1)[0]
    body = encode_body(wo).encode()
    key = wo["work_order_id"]

    r = _post(url, body, key)
    assert r.status_code == 201 and r.json()["status"] == "stored"
    r = _post(url, body, key)
    assert r.status_code == 200 and r.json()["status"] == "duplicate"

    assert _post(url, body, key, signed=False).status_code == 401
    assert _post(url, body, key, secret="wrong").status_code == 401
    tampered = body.replace(b'"sms"', b'"email"')
    h = {"Idempotency-Key": key, **signing.sign(key, body, SECRET)}
    assert httpx.post(url + "/work-orders", content=tampered, headers=h, timeout=5).status_code == 401
    assert _post(url, body, None, signed=key).status_code == 400
    other = json.dumps({**wo, "work_order_id": "wo-other"}).encode()
    assert _post(url, other, key).status_code == 422
    notjson = b"{not json"
    assert _post(url, notjson, key).status_code == 400
    partial = json.dumps({"work_order_id": key}).encode()
    r = _post(url, partial, key)
    assert r.status_code == 422 and "vehicle_id" in r.json()["error"]
    big = b"x" * (2 << 20)
    assert _post(url, big, key, signed=False).status_code == 413

    st = receiver_stats(port)
    assert st["work_orders"] == 1 and st["deliveries"] == 2 and st["duplicates"] == 1
    listed = receiver_work_orders(port)
    assert [w["work_order_id"] for w in listed] == [key]
    assert listed[0]["_deliveries"] == 2


def test_timestamps_and_replays(receiver):
    url, port, _ = receiver
    wo = fake_work_orders(1)[0]
    body, key = encode_body(wo).encode(), wo["work_order_id"]
    now = datetime.now(timezone.utc)
    for off in (-6, 6):  # a captured request replayed later, or a clock far ahead
        r = _post(url, body, key, when=now + timedelta(minutes=off))
        assert r.status_code == 401 and "timestamp" in r.json()["error"]
    assert _post(url, body, key, when=now - timedelta(minutes=4)).status_code == 201
    # a retry: same id and body, signed anew -> an idempotent duplicate, stored once
    assert _post(url, body, key).status_code == 200
    # the same id with another body is not a retry
    changed = encode_body({**wo, "risk": 0.99}).encode()
    r = _post(url, changed, key)
    assert r.status_code == 409 and key in r.json()["error"]
    latin1 = encode_body({**wo, "recommended_action": "Bremsbeläge prüfen"}).encode("latin-1")
    h = {"Idempotency-Key": key, **signing.sign(key, body, SECRET)}
    r = httpx.post(url + "/work-orders", content=latin1, headers=h, timeout=5)
    assert r.status_code == 400 and "UTF-8" in r.json()["error"]
    st = receiver_stats(port)
    assert st["work_orders"] == 1 and st["deliveries"] == 2 and st["rejected"] >= 4
    assert receiver_work_orders(port)[0]["risk"] == wo["risk"]  # the first body is the one kept


@pytest.mark.parametrize("field,value", [
    ("vehicle_id", {"vin": "X"}), ("risk", "0.8"), ("risk", True), ("risk", 7), ("customer_id", 123),
    ("recommended_window", ["2026-06-08", "2026-06-16"]), ("recommended_window.start", "next week"),
    ("evidence", {"feature": "x"}), ("evidence.0.contribution", "big"), ("evidence.0.value", [1, 2]),
    ("model.version", 3), ("created_at", 1764000000), ("component", None), ("kind", "invoice"),
])
def test_wrong_field_type_gets_422_naming_the_field(shared_receiver, field, value):
    url, port, log = shared_receiver
    wo = fake_work_orders(1)[0]
    path = field.split(".")
    node = wo
    for p in path[:-1]:
        node = node[int(p)] if p.isdigit() else node[p]
    node[int(path[-1]) if path[-1].isdigit() else path[-1]] = value
    body = encode_body(wo).encode()
    with httpx.Client() as c:  # one kept-alive connection: it must survive the bad request
        r = _post(url, body, wo["work_order_id"], client=c)
        assert r.status_code == 422, r.text
        assert r.json()["error"].startswith(field), r.json()
        assert c.get(url + "/healthz", timeout=5).status_code == 200
    assert receiver_stats(port)["work_orders"] == 0
    assert "Traceback" not in log.read_text()


def test_reads_need_the_bearer_token(receiver, home, tmp_path):
    url, port, _ = receiver
    wo = fake_work_orders(1)[0]
    assert _post(url, encode_body(wo).encode(), wo["work_order_id"]).status_code == 201  # POST: the signature
    for path in ("/work-orders", "/stats", "/work-orders?limit=5"):
        assert httpx.get(url + path, timeout=5).status_code == 401
        assert httpx.get(url + path, headers=receiver_auth("wrong"), timeout=5).status_code == 401
        assert httpx.get(url + path, headers={"Authorization": RECEIVER_TOKEN}, timeout=5).status_code == 401
        r = httpx.get(url + path, headers=receiver_auth(), timeout=5)
        assert r.status_code == 200 and wo["vehicle_id"] in r.text or path == "/stats"
    assert httpx.get(url + "/healthz", timeout=5).status_code == 200
    # without a configured token the reads refuse everyone, as the service does
    port2 = free_port()
    p = start_receiver(home.home, port2, tmp_path / "r2.log", token=None)
    try:
        for auth in ({}, receiver_auth(), {"Authorization": "Bearer"}):
            r = httpx.get(f"http://127.0.0.1:{port2}/work-orders", headers=auth, timeout=5)
            assert r.status_code == 401 and "AUTOPDM_API_TOKEN" in r.json()["error"]
        w2 = fake_work_orders(2)[1]
        assert _post(f"http://127.0.0.1:{port2}", encode_body(w2).encode(), w2["work_order_id"]).status_code == 201
    finally:
        stop(p)


def test_stalled_connections_are_closed_and_others_still_served(receiver):
    url, port, log = receiver  # started with a 1 s socket timeout
    stalled = []
    for i in range(200):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if i % 2:  # half send part of a request and stop
            s.sendall(b"POST /work-orders HTTP/1.1\r\nContent-Length: 900\r\n\r\n{\"work_order_id\"")
        stalled.append(s)
    # while they hang, a normal delivery and a read go through
    wo = fake_work_orders(1)[0]
    t0 = time.monotonic()
    assert _post(url, encode_body(wo).encode(), wo["work_order_id"]).status_code == 201
    assert receiver_stats(port)["work_orders"] == 1
    served = time.monotonic() - t0
    assert served < 3
    closed, deadline = 0, t0 + 8
    for s in stalled:
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = s.recv(4096)  # the server hangs up after its timeout: EOF (or a reset)
            closed += data == b"" or b"HTTP/1.1" in data
        except ConnectionResetError:
            closed += 1
        except TimeoutError:
            pass
        finally:
            s.close()
    assert closed == len(stalled)
    assert time.monotonic() - t0 < 12
    print(f"{len(stalled)} stalled connections: a delivery served in {served:.2f} s beside them, "
          f"all closed {time.monotonic() - t0:.1f} s after (socket timeout 1 s)")
    assert "Traceback" not in log.read_text()
