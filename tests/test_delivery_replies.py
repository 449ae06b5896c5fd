"""The dispatcher survives any reply: a real local HTTP server that misbehaves in every way we
could think of (one way per work order), the real `autopdm outbox dispatch`, and the rows after."""

from __future__ import annotations

import email.utils
import json
import socket
import socketserver
import sqlite3
import struct
import subprocess
import threading
import time
from collections import defaultdict

import pytest

from autopdm.delivery import signing
from autopdm.delivery.dispatcher import Dispatcher
from autopdm.delivery.outbox import DELIVERED, PARKED, PENDING, Outbox
from autopdm.delivery.transport import Reply
from autopdm.delivery.webhook import parse_retry_after

from .procs import AUTOPDM, SECRET, env_for, fake_work_orders

# -- a CRM that misbehaves ------------------------------------------------------------------------


def _reply(h, status: bytes, headers: dict | None = None, body: bytes = b"", keep: bool = False) -> bool:
    lines = [b"HTTP/1.1 " + status] + [f"{k}: {v}".encode("latin-1") for k, v in (headers or {}).items()]
    lines += [f"Content-Length: {len(body)}".encode(), b"Connection: " + (b"keep-alive" if keep else b"close")]
    h.wfile.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
    return keep


def _trickle(h, data: bytes, every: float) -> bool:
    for i in range(len(data)):
        h.wfile.write(data[i:i + 1])
        time.sleep(every)
    return False


def _reset(h) -> bool:
    h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    h.connection.close()  # RST, not FIN
    return False


def _huge(h) -> bool:
    h.wfile.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 50000000\r\nConnection: close\r\n\r\n")
    for _ in range(50000000 // 65536):
        h.wfile.write(b"E" * 65536)
    return False


HTML = (b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title><style>body{color:red}</style>"
        b"<script>var x = '<b>';</script></head>\n<body>\n<h1>Oops, the gateway   fell over</h1></body></html>")

# mode -> (what the server does, what should become of the row after one dispatch run)
MODES = {
    "ok": (lambda h: _reply(h, b"201 Created", {"Content-Type": "application/json"}, b"{}", keep=True), DELIVERED),
    "retry_after_soon": (lambda h: _reply(h, b"503 Service Unavailable", {"Retry-After": "soon"}), PENDING),
    "retry_after_huge": (lambda h: _reply(h, b"503 Service Unavailable", {"Retry-After": "9" * 5000}), PENDING),
    "retry_after_date": (lambda h: _reply(h, b"429 Too Many Requests",
                                          {"Retry-After": email.utils.formatdate(time.time() + 3, usegmt=True)}), PENDING),
    "retry_after_bad_date": (lambda h: _reply(h, b"503 Service Unavailable",
                                              {"Retry-After": "Mon, 99 Foo 2026 99:99:99 GMT"}), PENDING),
    "html": (lambda h: _reply(h, b"502 Bad Gateway", {"Content-Type": "text/html"}, HTML), PENDING),
    "not_utf8": (lambda h: _reply(h, b"500 Oops", {"Content-Type": "text/plain; charset=utf-8"},
                                  b"\xff\xfe bad \x80\x81 bytes"), PENDING),
    "unknown_charset": (lambda h: _reply(h, b"500 Oops", {"Content-Type": "text/plain; charset=x-klingon"},
                                         b"qapla'"), PENDING),
    "bad_gzip_2xx": (lambda h: _reply(h, b"200 OK", {"Content-Encoding": "gzip"}, b"not gzip at all"), DELIVERED),
    "bad_gzip_5xx": (lambda h: _reply(h, b"500 Oops", {"Content-Encoding": "gzip"}, b"not gzip at all"), PENDING),
    "huge_body": (_huge, PENDING),
    "status_999": (lambda h: _reply(h, b"999 Whatever"), PENDING),
    "silent": (lambda h: time.sleep(4) or False, PENDING),
    "trickle": (lambda h: _trickle(h, b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 200, 0.2), PENDING),
    "reset": (_reset, PENDING),
    "close": (lambda h: False, PENDING),
    "garbage_status": (lambda h: h.wfile.write(b"HTTP/1.1 abc Broken\r\n\r\n") and False, PENDING),
    "not_http": (lambda h: h.wfile.write(b"\x00\x01\x02SSH-2.0-OpenSSH_9.2\r\n") and False, PENDING),
    "redirect_301": (lambda h: _reply(h, b"301 Moved Permanently", {"Location": "https://elsewhere.invalid/hook"}), PARKED),
    "redirect_307": (lambda h: _reply(h, b"307 Temporary Redirect", {"Location": "/other"}), PARKED),
    "forbidden": (lambda h: _reply(h, b"403 Forbidden", {}, b'{"error": "no"}'), PARKED),
}


class _Handler(socketserver.StreamRequestHandler):
    timeout = 30

    def handle(self) -> None:
        srv: CRM = self.server  # type: ignore[assignment]
        while True:
            line = self.rfile.readline(65537)
            if not line:
                return
            headers = {}
            while (h := self.rfile.readline(65537)) not in (b"\r\n", b"\n", b""):
                k, _, v = h.decode("latin-1").partition(":")
                headers[k.strip().lower()] = v.strip()
            body = self.rfile.read(int(headers.get("content-length", "0")))
            key = headers.get("idempotency-key", "")
            try:
                signing.verify(body, headers, SECRET)
                signed = True
            except signing.SignatureError:
                signed = False
            with srv.lock:
                srv.requests[key].append((time.time(), signed))
                mode = srv.modes.get(key, "ok")
            try:
                if not MODES[mode][0](self):
                    return
            except OSError:  # the dispatcher gave up on us
                return


class CRM(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.modes: dict[str, str] = {}
        self.requests: dict[str, list] = defaultdict(list)
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def close(self) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture
def crm():
    srv = CRM()
    yield srv
    srv.close()


# -- tests ----------------------------------------------------------------------------------------


def test_retry_after_parsing():
    now = 1_800_000_000.0
    assert parse_retry_after("120", now) == 120 and parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after("9" * 5000, now) >= 1e15  # beyond Python's int-parsing limit
    for v in (None, "", "soon", "-5", "1e9", "inf", "nan", "²", "١٢", "0x10", "12 s", "Mon, 99 Foo 2026 99:99:99 GMT",
              "Fri, 31 Dec 99999 23:59:59 GMT", "\x00"):
        assert parse_retry_after(v, now) is None, v
    later = email.utils.formatdate(now + 90, usegmt=True)
    assert parse_retry_after(later, now) == pytest.approx(90, abs=1)
    assert parse_retry_after(email.utils.formatdate(now - 90, usegmt=True), now) == 0.0


def test_dispatch_survives_every_misbehaviour_then_delivers_all(home, crm, tmp_path):
    wos = fake_work_orders(len(MODES) * 2)
    ob = Outbox.open(home)
    ob.enqueue(wos)
    # one work order per misbehaviour, each followed by one the CRM takes: the bad ones never block the others
    modes = {}
    for k, mode in enumerate(MODES):
        modes[wos[2 * k]["work_order_id"]] = mode
        modes[wos[2 * k + 1]["work_order_id"]] = "ok"
    crm.modes.update(modes)
    env = env_for(home.home, AUTOPDM_CRM_WEBHOOK_URL=crm.url, AUTOPDM_OUTBOX_BACKOFF_BASE_S="0.2",
                  AUTOPDM_OUTBOX_BACKOFF_CAP_S="30")
    t0 = time.monotonic()
    r = subprocess.run([AUTOPDM, "outbox", "dispatch", "--timeout", "1", "--poll", "0.1", "--max-seconds", "9"],
                       env=env, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert took < 30, f"dispatch took {took:.0f} s"

    rows = {x["work_order_id"]: x for x in ob.rows()}
    by_mode = {mode: rows[wid] for wid, mode in modes.items() if mode != "ok"}
    for wid, mode in modes.items():
        row = rows[wid]
        assert row["attempts"] >= 1 and row["lease_owner"] is None and row["lease_until"] is None, (mode, row)
        assert row["status"] == MODES[mode][1], (mode, row["status"], row["last_error"])
        assert all(signed for _, signed in crm.requests[wid]), mode  # every attempt carried a valid signature
        if row["status"] != DELIVERED:
            err = row["last_error"]
            assert err and "\n" not in err and len(err) <= 500, (mode, err)
    # what an operator reads in `outbox status`
    assert "Oops, the gateway fell over" in by_mode["html"]["last_error"] and "<" not in by_mode["html"]["last_error"]
    assert "var x" not in by_mode["html"]["last_error"]
    assert "\ufffd" in by_mode["not_utf8"]["last_error"] and "bad" in by_mode["not_utf8"]["last_error"]
    assert "qapla" in by_mode["unknown_charset"]["last_error"]
    assert "elsewhere.invalid" in by_mode["redirect_301"]["last_error"] and by_mode["redirect_301"]["last_status"] == 301
    assert by_mode["redirect_307"]["last_status"] == 307 and by_mode["forbidden"]["last_status"] == 403
    assert len(crm.requests[next(w for w, m in modes.items() if m == "redirect_301")]) == 1  # parked: not retried
    assert by_mode["huge_body"]["last_status"] == 500 and len(by_mode["huge_body"]["last_error"]) <= 500
    assert "cut off" in by_mode["trickle"]["last_error"]
    assert by_mode["silent"]["last_status"] is None and by_mode["reset"]["last_status"] is None
    # Retry-After: a date is honoured, a huge number is capped at the backoff cap, nonsense is ignored
    def delay(mode):
        wid = next(w for w, m in modes.items() if m == mode)
        return rows[wid]["next_attempt_at"] - crm.requests[wid][-1][0], len(crm.requests[wid])

    d_huge, n_huge = delay("retry_after_huge")
    assert 28 <= d_huge <= 31 and n_huge == 1
    d_date, n_date = delay("retry_after_date")
    assert 1.5 <= d_date <= 30
    wid_date = next(w for w, m in modes.items() if m == "retry_after_date")
    gaps = [b[0] - a[0] for a, b in zip(crm.requests[wid_date], crm.requests[wid_date][1:])]
    assert all(g >= 1.5 for g in gaps), gaps
    for mode in ("retry_after_soon", "retry_after_bad_date"):
        d, n = delay(mode)
        assert d < 28 and n >= 2, (mode, d, n)  # retried on the backoff, not on a misread header

    st = subprocess.run([AUTOPDM, "outbox", "status"], env=env, capture_output=True, text=True, timeout=60)
    assert st.returncode == 0 and "redirect to https://elsewhere.invalid/hook" in st.stderr.replace("\n", "")

    # the CRM is fixed: a retry delivers everything, parked ones included
    crm.modes.clear()
    r = subprocess.run([AUTOPDM, "outbox", "retry", "--max-seconds", "30"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert ob.status()["counts"] == {PENDING: 0, DELIVERED: len(wos), PARKED: 0, "closed": 0}


class _Flaky:
    """A transport (the seam's protocol) that raises for chosen ids, delivers the others."""

    def __init__(self, raise_for: dict[str, BaseException]) -> None:
        self.raise_for, self.sent = raise_for, []

    def send(self, message):
        if message.id in self.raise_for:
            raise self.raise_for[message.id]
        self.sent.append(message.id)
        return Reply(True, 200)

    def close(self) -> None:
        pass


def test_poison_rows_are_parked_with_a_reason_and_never_block_the_rows_behind(home):
    ob = Outbox.open(home)
    wos = fake_work_orders(8)
    ob.enqueue(wos)
    ids = [w["work_order_id"] for w in wos]
    con = sqlite3.connect(ob.path)
    con.execute("UPDATE outbox SET body=? WHERE work_order_id=?", (b"\xff\xfe corrupted", ids[0]))  # stored as a BLOB
    con.execute("UPDATE outbox SET body=? WHERE work_order_id=?", ("[1, 2]", ids[1]))
    con.commit()
    con.close()
    tr = _Flaky({ids[2]: RuntimeError("a bug in a transport"), ids[3]: UnicodeError("who knows")})
    with Dispatcher(ob, transport=tr, backoff_base=0.05) as d:
        st = d.run(until_empty=True, max_seconds=10)
    rows = {r["work_order_id"]: r for r in ob.rows()}
    assert st.parked == 4 and st.delivered == 4 and sorted(tr.sent) == sorted(ids[4:])
    assert "poison row" in rows[ids[0]]["last_error"] and "bytes" in rows[ids[0]]["last_error"]
    assert "not a JSON object" in rows[ids[1]]["last_error"]
    assert "RuntimeError: a bug in a transport" in rows[ids[2]]["last_error"]
    for wid in ids[:4]:
        assert rows[wid]["status"] == PARKED and rows[wid]["attempts"] == 1 and rows[wid]["lease_owner"] is None


def test_an_interrupted_pass_gives_back_every_lease(home):
    ob = Outbox.open(home)
    wos = fake_work_orders(12)
    ob.enqueue(wos)
    ids = [w["work_order_id"] for w in wos]
    order = [r["work_order_id"] for r in ob.claim(100)]
    ob.release(order)
    tr = _Flaky({order[2]: KeyboardInterrupt()})
    d = Dispatcher(ob, transport=tr)
    with pytest.raises(KeyboardInterrupt):
        d.run_once()
    rows = ob.rows()
    assert sum(r["status"] == DELIVERED for r in rows) == 2
    assert all(r["lease_owner"] is None and r["lease_until"] is None for r in rows)
    tr.raise_for.clear()
    assert d.run_once().delivered == 10 and ob.status()["counts"][DELIVERED] == len(ids)


def test_each_attempt_is_bounded_by_the_timeout_whatever_the_crm_does(home, crm):
    """httpx's timeouts are per read: a reply trickling a byte every 0.2 s would never time out."""
    ob = Outbox.open(home)
    wos = fake_work_orders(2)
    ob.enqueue(wos)
    crm.modes.update({w["work_order_id"]: "trickle" for w in wos})
    with Dispatcher(ob, crm.url, SECRET, timeout=1.0, backoff_base=60) as d:
        t0 = time.monotonic()
        st = d.run_once()
        took = time.monotonic() - t0
    assert st.attempts == 2 and st.retried == 2
    assert took < 4, f"two attempts took {took:.1f} s"
    assert all("cut off" in r["last_error"] for r in ob.rows())
    json.dumps(ob.status())  # still readable
