"""At-least-once delivery, stored once: a work order whose answer was lost is sent again with the
same body and the same key (`Idempotency-Key` = `webhook-id` = the work order id), so a CRM that
de-duplicates by key (the reference receiver's store) keeps each work order once.

The CRM here is a real HTTP server on 127.0.0.1 storing through `autopdm.sim.receiver.Store`; it
stores every first request and then hangs up without answering, as a CRM that crashes (or a
proxy that times out) after committing would. The dispatcher is the real one over HTTP."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from autopdm.delivery import signing
from autopdm.delivery.dispatcher import Dispatcher
from autopdm.delivery.outbox import DELIVERED, Outbox
from autopdm.sim.receiver import DUPLICATE, STORED, Store

from .procs import SECRET, fake_work_orders


class ForgetfulCRM:
    """Stores by Idempotency-Key; the first request of each key gets no answer (stored, reply lost)."""

    def __init__(self, db):
        self.store = Store(db)
        self.seen: dict[str, list[dict]] = defaultdict(list)   # work order id in the body -> request headers
        self.lock = threading.Lock()
        crm = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                signing.verify(body, headers, SECRET)
                wo = json.loads(body)
                key = headers["idempotency-key"]
                with crm.lock:
                    first = not crm.seen[wo["work_order_id"]]
                    crm.seen[wo["work_order_id"]].append(headers)
                outcome = crm.store.put(key, wo, body.decode())
                if first:
                    self.close_connection = True
                    self.connection.shutdown(2)  # committed, but the answer never leaves
                    return
                self.send_response(201 if outcome == STORED else 200 if outcome == DUPLICATE else 409)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/work-orders"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def crm(tmp_path):
    c = ForgetfulCRM(tmp_path / "crm.sqlite")
    yield c
    c.close()


def test_a_redelivery_after_a_lost_answer_carries_the_same_key_and_is_stored_once(home, crm):
    ob = Outbox.open(home)
    wos = fake_work_orders(5)
    ob.enqueue(wos)
    with Dispatcher(ob, crm.url, SECRET, timeout=3.0, backoff_base=0.05, backoff_cap=0.1) as d:
        d.run(until_empty=True, max_seconds=20, poll=0.05)
    ids = {w["work_order_id"] for w in wos}
    assert ob.status()["counts"][DELIVERED] == len(wos)
    assert set(crm.seen) == ids
    for wid, attempts in crm.seen.items():
        assert len(attempts) >= 2, wid                                  # the lost answer made it send again …
        keys = {(h["idempotency-key"], h["webhook-id"]) for h in attempts}
        assert keys == {(wid, wid)}, keys                               # … under the same key every time
    stats = crm.store.stats()
    assert stats["work_orders"] == len(wos), stats                      # so the CRM kept each once
    assert stats["duplicates"] == sum(len(a) for a in crm.seen.values()) - len(wos)
