"""Spool durability and `autopdm upload` against a real HTTP server implementing /telemetry."""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from autopdm import schemas, store
from autopdm.ingest import spool, upload

from .conftest import free_port

VIN = "KMHDH41EXFU123456"


class TelemetryServer:
    """The service's POST /telemetry contract: bearer auth, validation, idempotent per batch id.

    `fail_first` answers the first N requests with 503; `drop_first` closes the connection on the
    first N without an answer (a network error, after the server may have processed the batch).
    """

    def __init__(self, token: str | None = None, fail_first: int = 0, drop_first: int = 0, reject_status: int | None = None,
                 retry_after: str | None = None, fail_status: int = 503):
        self.batches: dict[str, list] = {}
        self.auth: list[str] = []
        self.requests = 0
        self.token = token
        self.fail_first, self.drop_first, self.reject_status = fail_first, drop_first, reject_status
        self.retry_after, self.fail_status = retry_after, fail_status
        self.lock = threading.Lock()
        srv = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _reply(self, code, body, headers=()):
                data = json.dumps(body).encode()
                self.send_response(code)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with srv.lock:
                    srv.requests += 1
                    n = srv.requests
                    srv.auth.append(self.headers.get("Authorization", ""))
                if self.path != "/telemetry":
                    return self._reply(404, {"detail": f"no route {self.path}"})
                if srv.token and self.headers.get("Authorization") != f"Bearer {srv.token}":
                    return self._reply(401, {"detail": "bad or missing bearer token"})
                if srv.reject_status:
                    return self._reply(srv.reject_status, {"detail": "samples: field required"})
                if n <= srv.fail_first:
                    extra = [("Retry-After", srv.retry_after)] if srv.retry_after is not None else []
                    return self._reply(srv.fail_status, {"detail": "warming up"}, extra)
                req = json.loads(body)
                import pandas as pd

                # counted as the service counts them: accepted samples and DTC events together
                v = [schemas.validate(pd.DataFrame(req[t]), t) for t in ("samples", "dtc_events") if req.get(t)]
                with srv.lock:
                    dup = req["batch_id"] in srv.batches
                    srv.batches.setdefault(req["batch_id"], req["samples"])
                if n <= srv.fail_first + srv.drop_first:
                    self.connection.shutdown(2)  # processed, but the answer is lost
                    return
                self._reply(200, {"batch_id": req["batch_id"], "accepted": sum(x.n_valid for x in v),
                                  "quarantined": sum(x.n_quarantined for x in v), "duplicate": dup})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def _rows(n, t0=1_767_254_400.0, speed=50.0):
    return [{"vehicle_id": VIN, "ts": spool.iso(t0 + i), "source": "obd", "speed_kph": speed, "rpm": 2000.0}
            for i in range(n)]


def test_commit_is_durable_and_torn_tail_is_skipped(home):
    w = spool.SpoolWriter(home, "obd", segment_batches=2)
    ids = [w.commit(_rows(3, t0=1_767_254_400.0 + 10 * k)) for k in range(5)]
    # simulate a crash in the middle of writing the next batch: half a line, no newline
    with open(w.segment_path, "ab") as fh:
        fh.write(b'{"batch_id": "half-writ')
    # (the writer "dies" here: its file and its OS lock go with the process)
    w._fh.close()
    w._fh = None
    w._lock.release()
    segs = spool.segments(home)
    assert len(segs) == 3 and segs[-1].suffix == ".open"
    assert spool.read_segment(segs[-1]).torn_tail
    # rotation stored the first two segments; the crashed one still had a batch the store lacked
    assert spool.sync_store(home) == 1                    # seals the orphan, stores what the store missed
    assert [s.suffix for s in spool.segments(home)] == [".seg"] * 3
    got = [b.batch_id for s in spool.segments(home) for b in spool.read_segment(s).batches]
    assert got == ids                                     # every committed batch, in order, nothing else
    assert len(store.read_samples(home)) == 15
    assert spool.sync_store(home) == 0                    # idempotent


def test_live_writer_segment_is_not_sealed_by_others(home):
    w = spool.SpoolWriter(home, "obd")
    w.commit(_rows(2))
    assert spool.seal_orphans(home) == []                 # flock held: a live writer, leave it
    w.close()
    assert [s.suffix for s in spool.segments(home)] == [".seg"]


def test_upload_retries_and_deletes_only_acknowledged(home, monkeypatch):
    monkeypatch.setenv("AUTOPDM_API_TOKEN", "s3cret")
    with spool.SpoolWriter(home, "obd", segment_batches=3) as w:
        ids = [w.commit(_rows(4, t0=1_767_254_400.0 + 10 * k)) for k in range(7)]
        w.commit([], [{"vehicle_id": VIN, "ts": spool.iso(1_767_254_400.0), "code": "P0562", "status": "stored"}])
    with TelemetryServer(token="s3cret", fail_first=2, drop_first=1) as srv:
        rep = upload.upload(home, srv.url, backoff=0.01)
    assert rep.batches_sent == 8 and rep.retries == 3
    assert set(ids) <= set(srv.batches)
    assert rep.accepted == 28 + 1                           # 28 samples and the DTC event
    assert spool.segments(home) == []
    body_keys = set(srv.batches[ids[0]][0])
    assert body_keys == {f.name for f in schemas.SAMPLES}   # every canonical column, null where unknown
    assert srv.batches[ids[0]][0]["ts"].endswith("Z") and srv.batches[ids[0]][0]["brake_pressure_bar"] is None


def test_upload_stops_on_4xx_and_keeps_the_spool(home):
    with spool.SpoolWriter(home, "obd") as w:
        w.commit(_rows(2))
    with TelemetryServer(token="right") as srv:
        with pytest.raises(upload.UploadError, match="HTTP 401"):
            upload.upload(home, srv.url, token="wrong", backoff=0.01)
    assert len(spool.segments(home)) == 1 and spool.status(home)["unacked"] == 1


def test_upload_gives_up_when_server_is_down_and_resumes_later(home):
    with spool.SpoolWriter(home, "obd", segment_batches=1) as w:
        first = w.commit(_rows(2))
        w.commit(_rows(2, t0=1_767_254_500.0))
    port = free_port()  # nothing listens here
    with pytest.raises(upload.UploadError, match="not acknowledged after 3 attempts"):
        upload.upload(home, f"http://127.0.0.1:{port}", max_attempts=3, backoff=0.01)
    assert spool.status(home)["unacked"] == 2
    with TelemetryServer() as srv:
        # a resend of an already-delivered batch is answered as a duplicate, not stored twice
        srv.batches[first] = []
        rep = upload.upload(home, srv.url, backoff=0.01)
    assert rep.batches_sent == 2 and rep.duplicates == 1
    assert spool.segments(home) == []


def test_corrupt_spool_line_is_kept_aside_not_lost(home):
    with spool.SpoolWriter(home, "obd") as w:
        w.commit(_rows(2))
        w.commit(_rows(2, t0=1_767_254_500.0))
    seg = spool.segments(home)[0]
    lines = seg.read_bytes().split(b"\n")
    seg.write_bytes(lines[0] + b"\n" + b"{not json\n" + lines[1] + b"\n")
    with TelemetryServer() as srv:
        rep = upload.upload(home, srv.url, backoff=0.01)
    assert rep.batches_sent == 2 and rep.corrupt and "line 2" in rep.corrupt[0]
    assert (home.spool / "corrupt" / seg.name).exists()


@pytest.mark.parametrize("status", [429, 503])
def test_upload_waits_as_long_as_retry_after_says(home, status):
    with spool.SpoolWriter(home, "obd") as w:
        w.commit(_rows(2))
    waits = []
    with TelemetryServer(fail_first=2, retry_after="7", fail_status=status) as srv:
        rep = upload.upload(home, srv.url, backoff=0.01, sleep=waits.append)
    assert rep.batches_sent == 1 and waits == [7.0, 7.0]    # not the 0.01 s backoff


def test_retry_after_http_date_and_garbage():
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert upload.retry_after("Sun, 01 Mar 2026 12:00:42 GMT", now) == 42.0
    assert upload.retry_after("Sun, 01 Mar 2026 11:00:00 GMT", now) == 0.0          # in the past: now
    assert upload.retry_after("86400", now) == upload.MAX_RETRY_AFTER               # capped
    assert upload.retry_after("soon", now) is None and upload.retry_after("", now) is None


def test_upload_uses_http_date_retry_after(home):
    with spool.SpoolWriter(home, "obd") as w:
        w.commit(_rows(2))
    waits = []
    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=60), usegmt=True)
    with TelemetryServer(fail_first=1, retry_after=when) as srv:
        upload.upload(home, srv.url, backoff=0.01, sleep=waits.append)
    assert len(waits) == 1 and 55 <= waits[0] <= 60


def test_every_commit_is_fsynced_before_it_returns(home, monkeypatch):
    """`commit` returns a batch id only once the line is on disk: fsync of the segment's file
    descriptor, one per batch, after the write (a kill -9 test cannot see this: the page cache
    survives a killed process)."""
    events = []
    real_fsync = os.fsync

    def fsync(fd):
        # the path and the size the file has when it is synced: the batch's line must already be in it
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"), os.fstat(fd).st_size))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    w = spool.SpoolWriter(home, "obd", segment_batches=1000)
    for k in range(3):
        before = len(events)
        size_before = w.segment_path.stat().st_size if w.segment_path.exists() else 0
        w.commit(_rows(2, t0=1_767_254_400.0 + 10 * k))
        size_after = w.segment_path.stat().st_size
        synced = [(p, size) for kind, p, size in events[before:] if kind == "fsync"]
        assert synced == [(str(w.segment_path), size_after)]  # exactly the segment, once per commit, after the write
        assert size_after > size_before
    w.close()


def test_upload_against_a_real_autopdm_serve(home, tmp_path):
    """`autopdm upload` (the CLI) to `autopdm serve` (the real BentoML service, no models needed
    for /telemetry): what the service stores and counts is what the spool held."""
    import subprocess
    import sys

    from autopdm.localproc import running

    with spool.SpoolWriter(home, "obd") as w:
        w.commit(_rows(5), [{"vehicle_id": VIN, "ts": spool.iso(1_767_254_400.0), "code": "P0562", "status": "stored"}])
        w.commit(_rows(3, t0=1_767_254_500.0) + [dict(_rows(1)[0], speed_kph=999.0)])   # one out of range
    server_home = tmp_path / "server"
    port = free_port()
    env = dict(os.environ, AUTOPDM_HOME=str(server_home), AUTOPDM_API_TOKEN="t0ken", BENTOML_DO_NOT_TRACK="true")
    autopdm = [sys.executable, "-c", "from autopdm.cli import main; main()"]
    with running([*autopdm, "serve", "--port", str(port)], env, tmp_path / "serve.log",
                 ready_url=f"http://127.0.0.1:{port}/livez", timeout=90):
        cli_env = dict(os.environ, AUTOPDM_HOME=str(home.home), AUTOPDM_API_TOKEN="t0ken", COLUMNS="200")
        r = subprocess.run([*autopdm, "upload", "--url", f"http://127.0.0.1:{port}"], capture_output=True, text=True,
                           env=cli_env, timeout=120)
        assert r.returncode == 0, r.stderr
        # the service counted 8 samples and 1 DTC event accepted, 1 sample quarantined
        assert "2 batches acknowledged: 9 accepted, 1 quarantined" in r.stderr, r.stderr
        assert spool.segments(home) == []
        with spool.SpoolWriter(home, "obd") as w:
            w.commit(_rows(2, t0=1_767_254_900.0))
        wrong = subprocess.run([*autopdm, "upload", "--url", f"http://127.0.0.1:{port}"], capture_output=True,
                               text=True, env=dict(cli_env, AUTOPDM_API_TOKEN="nope"), timeout=60)
        assert wrong.returncode == 2 and "HTTP 401" in wrong.stderr and "Traceback" not in wrong.stderr
        assert spool.status(home)["unacked"] == 1                 # refused: kept for the next upload
    from autopdm.config import Paths

    served = Paths.from_env(server_home)
    assert len(store.read_samples(served)) == 8 and list(store.read_dtc_events(served)["code"]) == ["P0562"]
    assert "speed_kph: outside" in store.read_quarantine(served)["reason"].iloc[0]


def test_lock_of_a_live_writer_in_another_process_then_its_crash(home):
    """The spool's writer lock (filelock) is what tells a live writer's segment from a crashed
    one: held while the writer process lives, gone with it after kill -9."""
    import signal
    import subprocess
    import sys

    code = ("import sys, time\nfrom autopdm.config import Paths\nfrom autopdm.ingest import spool\n"
            f"w = spool.SpoolWriter(Paths.from_env({str(home.home)!r}), 'obd')\n"
            f"w.commit([{{'vehicle_id': {VIN!r}, 'ts': '2026-01-01T00:00:00.000Z', 'source': 'obd', 'rpm': 900.0}}])\n"
            "print('committed', flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "committed"
        assert spool.seal_orphans(home) == []                 # alive: its segment is left alone
        assert [s.suffix for s in spool.segments(home)] == [".open"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    sealed = spool.seal_orphans(home)                         # crashed: sealed, its batch kept
    assert [s.suffix for s in sealed] == [".seg"] and len(spool.read_segment(sealed[0]).batches) == 1
    assert not list(home.spool.glob("*.lock"))
