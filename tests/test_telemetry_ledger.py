"""The ledger behind POST /telemetry's idempotency, in process on a real SQLite file (the same
promise against a real `autopdm serve`: test_service_api.py::test_telemetry_batch_id_reused_for_other_content_is_409)."""

from __future__ import annotations

import threading

import pytest

from autopdm.serving.ledger import BatchConflict, TelemetryLedger, content_digest


def test_a_batch_is_written_once_and_its_id_never_takes_other_content(tmp_path):
    ledger = TelemetryLedger(tmp_path / "batches.sqlite")
    writes = []

    def write(n):
        def w():
            writes.append(n)
            return n, 0
        return w

    body = {"batch_id": "shop-1:0001", "samples": [{"ts": "2031-01-01T00:00:00Z", "rpm": 900.0}]}
    first = ledger.ingest("shop-1:0001", content_digest(body), write(1))
    assert first == {"batch_id": "shop-1:0001", "accepted": 1, "quarantined": 0, "duplicate": False}
    # the same content again (a retry after a lost answer): the first answer, nothing written
    assert ledger.ingest("shop-1:0001", content_digest(dict(reversed(body.items()))), write(2)) == {**first, "duplicate": True}
    # the same id with other content: refused, nothing written
    other = {**body, "samples": [{"ts": "2031-01-01T00:00:00Z", "rpm": 950.0}]}
    with pytest.raises(BatchConflict, match="shop-1:0001"):
        ledger.ingest("shop-1:0001", content_digest(other), write(3))
    assert writes == [1]
    # a second ledger on the same file (another worker, or after a restart) knows it too
    again = TelemetryLedger(tmp_path / "batches.sqlite")
    with pytest.raises(BatchConflict):
        again.ingest("shop-1:0001", content_digest(other), write(4))
    assert writes == [1]


def test_the_same_batch_sent_at_once_is_written_once(tmp_path):
    path = tmp_path / "batches.sqlite"
    writes, answers = [], []
    go = threading.Barrier(6)

    def send():
        ledger = TelemetryLedger(path)
        go.wait()
        answers.append(ledger.ingest("shop-2:0001", "d", lambda: writes.append(1) or (5, 0)))

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(writes) == 1
    assert sorted(a["duplicate"] for a in answers) == [False] + [True] * 5
