"""The reference CRM receiver as a real process: signature, de-duplication, limits."""

from __future__ import annotations

import json

import httpx
import pytest

from autopdm.delivery.outbox import encode_body
from autopdm.delivery.webhook import sign

from .conftest import free_port
from .procs import SECRET, fake_work_orders, receiver_stats, start_receiver, stop


@pytest.fixture
def receiver(home, tmp_path):
    port = free_port()
    proc = start_receiver(home.home, port, tmp_path / "receiver.log")
    yield f"http://127.0.0.1:{port}", port
    stop(proc)


def _post(url, body: bytes, key: str | None, sig: str | None):
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    if sig is not None:
        headers["X-Autopdm-Signature"] = sig
    return httpx.post(url + "/work-orders", content=body, headers=headers, timeout=5)


def test_store_once_and_reject_bad_requests(receiver):
    url, port = receiver
    wo = fake_work_orders(1)[0]
    body = encode_body(wo).encode()
    key = wo["work_order_id"]

    r = _post(url, body, key, sign(body, SECRET))
    assert r.status_code == 201 and r.json()["status"] == "stored"
    r = _post(url, body, key, sign(body, SECRET))
    assert r.status_code == 200 and r.json()["status"] == "duplicate"

    assert _post(url, body, key, None).status_code == 401
    assert _post(url, body, key, sign(body, "wrong")).status_code == 401
    tampered = body.replace(b'"sms"', b'"email"')
    assert _post(url, tampered, key, sign(body, SECRET)).status_code == 401
    assert _post(url, body, None, sign(body, SECRET)).status_code == 400
    other = json.dumps({**wo, "work_order_id": "wo-other"}).encode()
    assert _post(url, other, key, sign(other, SECRET)).status_code == 422
    notjson = b"{not json"
    assert _post(url, notjson, key, sign(notjson, SECRET)).status_code == 400
    partial = json.dumps({"work_order_id": key}).encode()
    r = _post(url, partial, key, sign(partial, SECRET))
    assert r.status_code == 422 and "vehicle_id" in r.json()["error"]
    big = b"x" * (2 << 20)
    assert _post(url, big, key, sign(big, SECRET)).status_code == 413

    st = receiver_stats(port)
    assert st["work_orders"] == 1 and st["deliveries"] == 2 and st["duplicates"] == 1
    listed = httpx.get(url + "/work-orders", timeout=5).json()
    assert [w["work_order_id"] for w in listed] == [key]
    assert listed[0]["_deliveries"] == 2
