"""Spool durability and `autopdm upload` against a real HTTP server implementing /telemetry."""

from __future__ import annotations

import json
import os
import threading
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

    def __init__(self, token: str | None = None, fail_first: int = 0, drop_first: int = 0, reject_status: int | None = None):
        self.batches: dict[str, list] = {}
        self.auth: list[str] = []
        self.requests = 0
        self.token = token
        self.fail_first, self.drop_first, self.reject_status = fail_first, drop_first, reject_status
        self.lock = threading.Lock()
        srv = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _reply(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
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
                    return self._reply(503, {"detail": "warming up"})
                req = json.loads(body)
                import pandas as pd

                samples = pd.DataFrame(req["samples"])
                v = schemas.validate(samples, "samples") if len(samples) else None
                with srv.lock:
                    dup = req["batch_id"] in srv.batches
                    srv.batches.setdefault(req["batch_id"], req["samples"])
                if n <= srv.fail_first + srv.drop_first:
                    self.connection.shutdown(2)  # processed, but the answer is lost
                    return
                self._reply(200, {"batch_id": req["batch_id"], "accepted": v.n_valid if v else 0,
                                  "quarantined": v.n_quarantined if v else 0, "duplicate": dup})

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
    # (the writer "dies" here: its flock goes with the file handle)
    w._fh.close()
    w._fh = None
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
    assert rep.accepted == 28
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
