"""Two dispatcher processes against one outbox and a real receiver deliver each work order once.

The same run with dispatchers that ignore another live dispatcher's lease (the liveness check
patched out in both processes) must be caught by the same check: that shows the test can fail."""

from __future__ import annotations

import re
import sqlite3
import sys
import time

import pytest

from autopdm.delivery.outbox import DELIVERED, Outbox

from .conftest import free_port
from .procs import env_for, fake_work_orders, receiver_stats, receiver_work_orders, start, start_receiver, stop

N = 80
# the dispatcher exactly as `autopdm outbox dispatch` runs it; BROKEN takes every lease as abandoned
RUN = "from autopdm.cli import app; app(['outbox', 'dispatch', '--poll', '0.05', '--timeout', '5', '--max-seconds', '60'])"
BROKEN = "import autopdm.delivery.outbox as o; o._pid_alive = lambda pid: False; " + RUN


@pytest.fixture
def receiver(home, tmp_path):
    port = free_port()
    proc = start_receiver(home.home, port, tmp_path / "receiver.log", delay=0.02)
    yield port
    stop(proc)


def assert_each_delivered_once(port: int, ids: set[str]) -> None:
    per_id = {w["work_order_id"]: w["_deliveries"] for w in receiver_work_orders(port)}
    assert set(per_id) == ids, "lost or unexpected work orders"
    twice = {k: n for k, n in per_id.items() if n != 1}
    assert not twice, f"{len(twice)} work orders delivered more than once"
    assert receiver_stats(port) == {"work_orders": len(ids), "deliveries": len(ids), "duplicates": 0, "rejected": 0}


def run_two_dispatchers(home, tmp_path, port: int, code: str) -> tuple[set[str], list[int]]:
    """Enqueue N work orders due in a few seconds, start two dispatchers, wait for both to finish."""
    env = env_for(home.home, AUTOPDM_CRM_WEBHOOK_URL=f"http://127.0.0.1:{port}/work-orders",
                  AUTOPDM_OUTBOX_BACKOFF_BASE_S="0.2", AUTOPDM_OUTBOX_BACKOFF_CAP_S="1")
    ob = Outbox.open(home)
    wos = fake_work_orders(N)
    ob.enqueue(wos)
    due = time.time() + 6  # both processes are up and polling when the work becomes due
    con = sqlite3.connect(ob.path)
    con.execute("UPDATE outbox SET next_attempt_at=?", (due,))
    con.commit()
    con.close()
    procs = [start([sys.executable, "-c", code], env, tmp_path / f"dispatch{i}.log") for i in (1, 2)]
    try:
        for p in procs:
            p.wait(120)
    finally:
        for p in procs:
            stop(p)
    logs = [(tmp_path / f"dispatch{i}.log").read_text() for i in (1, 2)]
    assert [p.returncode for p in procs] == [0, 0], logs
    assert ob.status()["counts"][DELIVERED] == N
    sent = []
    for log in logs:
        m = re.search(r"'delivered': (\d+)", log)
        assert m, log
        sent.append(int(m.group(1)))
    return {w["work_order_id"] for w in wos}, sent


@pytest.mark.slow
def test_two_dispatchers_deliver_each_work_order_exactly_once(home, tmp_path, receiver):
    ids, sent = run_two_dispatchers(home, tmp_path, receiver, RUN)
    assert_each_delivered_once(receiver, ids)
    assert sum(sent) == N and min(sent) > 0, sent  # both took part; neither sent what the other did
    print(f"two dispatchers: {sent[0]} + {sent[1]} sent, {N} stored once each")


@pytest.mark.slow
def test_dispatchers_ignoring_live_leases_are_caught(home, tmp_path, receiver):
    ids, sent = run_two_dispatchers(home, tmp_path, receiver, BROKEN)
    with pytest.raises(AssertionError, match="more than once"):
        assert_each_delivered_once(receiver, ids)
    print(f"lease ignored: {sent[0]} + {sent[1]} sent, {receiver_stats(receiver)['duplicates']} duplicates")
