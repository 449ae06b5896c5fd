"""Outbox and dispatcher: suppression, backoff, parking, and real-process delivery guarantees."""

from __future__ import annotations

import json
import random
import subprocess
import time

import httpx
import pytest

from autopdm.delivery.dispatcher import Dispatcher, backoff_delay
from autopdm.delivery.outbox import DELIVERED, PARKED, PENDING, Outbox
from autopdm.delivery import signing

from .conftest import free_port
from .procs import (AUTOPDM, SECRET, env_for, fake_work_orders, receiver_stats, receiver_work_orders, start, start_receiver,
                    stop)


def _mock(handler):
    return httpx.Client(transport=httpx.MockTransport(handler))


def test_signature_roundtrip():
    body = b'{"a":1}'
    h = signing.sign("wo-1", body, "k")
    s = h["webhook-signature"]
    assert s.startswith("v1,") and len(s) == 3 + 44  # base64 of a 32-byte HMAC-SHA256
    assert signing.verify(body, h, "k") == "wo-1"
    for bad_body, bad_h in [(body + b" ", h), (body, {**h, "webhook-signature": ""})]:
        with pytest.raises(signing.SignatureError):
            signing.verify(bad_body, bad_h, "k")


def test_enqueue_is_idempotent_and_suppresses_open_recommendations(home):
    ob = Outbox.open(home)
    wos = fake_work_orders(6)
    r = ob.enqueue(wos, as_of="2026-06-01")
    assert len(r.enqueued) == 6 and not r.suppressed
    r = ob.enqueue(wos, as_of="2026-06-01")  # the very same ones
    assert not r.enqueued and len(r.suppressed) == 6
    # next day, same vehicle and component, new window: suppressed while the first is open
    nxt = fake_work_orders(6, as_of="2026-06-02")
    assert {w["work_order_id"] for w in nxt}.isdisjoint({w["work_order_id"] for w in wos})
    r = ob.enqueue(nxt, as_of="2026-06-02")
    assert not r.enqueued and len(r.suppressed) == 6
    # after the window ended, a new recommendation may be issued
    late = fake_work_orders(1, as_of="2026-07-01")
    assert len(ob.enqueue(late, as_of="2026-07-01").enqueued) == 1
    # a service closes the open one, so a new one is allowed again
    import pandas as pd

    v, c = wos[1]["vehicle_id"], wos[1]["component"]
    ev = pd.DataFrame({"vehicle_id": [v], "component": [c], "date": ["2026-06-03"]})
    assert ob.close_serviced(ev) == 1
    again = [w for w in fake_work_orders(6, as_of="2026-06-04") if w["vehicle_id"] == v]
    assert len(ob.enqueue(again, as_of="2026-06-04").enqueued) == 1


def test_backoff_grows_with_jitter_and_cap():
    rng = random.Random(0)
    ds = [backoff_delay(a, base=1, cap=60, rng=rng) for a in range(1, 12)]
    for a, d in enumerate(ds, start=1):
        full = min(60, 2 ** (a - 1))
        assert full / 2 <= d <= full
    assert len({round(backoff_delay(5, rng=rng), 6) for _ in range(20)}) > 1  # jittered


def test_statuses_5xx_retry_4xx_park_2xx_deliver(home):
    ob = Outbox.open(home)
    wos = fake_work_orders(3)
    ob.enqueue(wos)
    plan = {wos[0]["work_order_id"]: [503, 200], wos[1]["work_order_id"]: [422], wos[2]["work_order_id"]: ["timeout", 201]}
    seen = []

    def handler(req: httpx.Request):
        key = req.headers["Idempotency-Key"]
        assert signing.verify(req.content, req.headers, SECRET) == key
        assert json.loads(req.content)["work_order_id"] == key
        seen.append(key)
        code = plan[key].pop(0)
        if code == "timeout":
            raise httpx.ReadTimeout("slow", request=req)
        return httpx.Response(code, json={"error": "nope"} if code >= 400 else {})

    d = Dispatcher(ob, url="http://crm.invalid/hook", secret=SECRET, backoff_base=0.05, backoff_cap=0.1,
                   client=_mock(handler))
    st = d.run(until_empty=True, max_seconds=10, poll=0.05)
    assert st.delivered == 2 and st.parked == 1
    rows = {r["work_order_id"]: r for r in ob.rows()}
    assert rows[wos[0]["work_order_id"]]["status"] == DELIVERED and rows[wos[0]["work_order_id"]]["attempts"] == 2
    parked = rows[wos[1]["work_order_id"]]
    assert parked["status"] == PARKED and "422" in parked["last_error"]
    assert ob.status()["counts"] == {PENDING: 0, DELIVERED: 2, PARKED: 1, "closed": 0}
    # operator fixes the CRM and retries the parked one
    plan[wos[1]["work_order_id"]] = [200]
    assert ob.retry() == 1
    assert d.run(until_empty=True, max_seconds=5).delivered == 1
    assert sorted(seen).count(wos[1]["work_order_id"]) == 2


def _dispatch_cmd(max_seconds: float = 60) -> list[str]:
    return [AUTOPDM, "outbox", "dispatch", "--timeout", "3", "--poll", "0.1", "--max-seconds", str(max_seconds)]


def _fast_backoff_env(home, port):
    return env_for(home, AUTOPDM_CRM_WEBHOOK_URL=f"http://127.0.0.1:{port}/work-orders",
                   AUTOPDM_OUTBOX_BACKOFF_BASE_S="0.2", AUTOPDM_OUTBOX_BACKOFF_CAP_S="1")


@pytest.mark.slow
def test_receiver_down_then_up_delivers_each_exactly_once(home, tmp_path):
    port = free_port()
    env = _fast_backoff_env(home.home, port)
    ob = Outbox.open(home)
    wos = fake_work_orders(30)
    ob.enqueue(wos)
    # receiver down: the dispatcher retries with backoff and keeps everything pending
    r = subprocess.run(_dispatch_cmd(2), env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    st = ob.status()
    assert st["counts"][PENDING] == 30 and all(p["attempts"] >= 1 for p in st["problems"])
    assert "ConnectError" in st["problems"][0]["last_error"]
    # receiver up: retry delivers everything, exactly once
    rec = start_receiver(home.home, port, tmp_path / "receiver.log")
    try:
        r = subprocess.run([AUTOPDM, "outbox", "retry"], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert ob.status()["counts"][DELIVERED] == 30
        stats = receiver_stats(port)
        assert stats == {"work_orders": 30, "deliveries": 30, "duplicates": 0, "rejected": 0}
        got = {w["work_order_id"] for w in receiver_work_orders(port)}
        assert got == {w["work_order_id"] for w in wos}
        # a second run has nothing left to send
        subprocess.run(_dispatch_cmd(2), env=env, capture_output=True, timeout=60)
        assert receiver_stats(port)["deliveries"] == 30
    finally:
        stop(rec)


@pytest.mark.slow
def test_dispatcher_killed_mid_delivery_loses_and_duplicates_nothing(home, tmp_path):
    port = free_port()
    env = _fast_backoff_env(home.home, port)
    ob = Outbox.open(home)
    wos = fake_work_orders(40)
    ob.enqueue(wos)
    rec = start_receiver(home.home, port, tmp_path / "receiver.log", delay=0.05)
    try:
        disp = start(_dispatch_cmd(), env, tmp_path / "dispatch1.log")
        deadline = time.monotonic() + 30
        while receiver_stats(port)["work_orders"] < 12 and time.monotonic() < deadline:
            time.sleep(0.02)
        stop(disp, sig_kill=True)  # SIGKILL, most likely while a POST is in flight
        assert disp.returncode == -9
        n_before = receiver_stats(port)["work_orders"]
        assert 12 <= n_before < 40
        assert ob.status()["counts"][PENDING] > 0
        # restart: picks up the dead process's lease at once and finishes
        r = subprocess.run(_dispatch_cmd(), env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert ob.status()["counts"] == {PENDING: 0, DELIVERED: 40, PARKED: 0, "closed": 0}
        stats = receiver_stats(port)
        assert stats["work_orders"] == 40  # none lost, each stored once
        assert stats["duplicates"] <= 1  # at most the request in flight at the kill, de-duplicated by key
        got = [w["work_order_id"] for w in receiver_work_orders(port)]
        assert sorted(got) == sorted(w["work_order_id"] for w in wos)
    finally:
        stop(rec)


def test_breaker_stops_hammering_a_down_endpoint(home):
    ob = Outbox.open(home)
    ob.enqueue(fake_work_orders(20))
    calls = []

    def handler(req):
        calls.append(req.headers["Idempotency-Key"])
        raise httpx.ConnectError("refused", request=req)

    d = Dispatcher(ob, url="http://crm.invalid/hook", secret=SECRET, backoff_base=5, client=_mock(handler))
    st = d.run_once()
    assert st.attempts == Dispatcher.BREAKER == len(calls) and st.delivered == 0
    assert not ob.claim(100)  # everything else postponed, nothing due
    assert ob.status()["counts"][PENDING] == 20
    assert ob.retry() == 20 and len(ob.claim(100)) == 20  # an operator retry makes them due again


def test_unusable_home_is_one_line_not_a_traceback(tmp_path):
    blocker = tmp_path / "home-is-a-file"
    blocker.write_text("x")
    env = env_for(blocker / "var")
    for cmd in (["outbox", "status"], ["outbox", "dispatch", "--max-seconds", "1"], ["outbox", "retry"]):
        r = subprocess.run([AUTOPDM, *cmd], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and "Traceback" not in r.stderr, (cmd, r.stderr)
        assert "error:" in r.stderr and str(blocker) in r.stderr.replace("\n", ""), (cmd, r.stderr)
