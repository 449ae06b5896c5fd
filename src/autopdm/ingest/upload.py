"""Spool → service ``POST {url}/telemetry``.

Each spooled batch is sent once with its stable ``batch_id`` (the server is idempotent per batch
id, so a resend after a lost answer is harmless). Network errors, 408, 429 and 5xx are retried
with exponential backoff, or after the wait the server asks for in ``Retry-After`` (seconds or
an HTTP date; at most ``MAX_RETRY_AFTER`` seconds); any other 4xx stops the upload with the
server's message (auth or a contract mismatch: retrying would not help). A segment is deleted
only when it is sealed and every batch in it was acknowledged and stored locally.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Callable

import httpx

from autopdm.config import Paths, Settings
from autopdm.ingest import spool

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 425, 429}
MAX_RETRY_AFTER = 600.0   # a server asking for longer is asking the uploader to give up for now


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header ("120" or an HTTP date); None when absent or
    unreadable (the caller's own backoff applies then)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    wait = (when - (now or datetime.now(timezone.utc))).total_seconds()
    return min(max(wait, 0.0), MAX_RETRY_AFTER)


class UploadError(RuntimeError):
    pass


@dataclass
class UploadReport:
    batches_sent: int = 0
    accepted: int = 0
    quarantined: int = 0
    duplicates: int = 0
    retries: int = 0
    segments_deleted: int = 0
    segments_kept: int = 0
    corrupt: list[str] = field(default_factory=list)


def payload(batch: spool.Batch) -> dict:
    """Every canonical column present (null where unknown), ts as ISO-8601 UTC."""
    samples = [{c: r.get(c) for c in spool.SAMPLE_COLUMNS} for r in batch.samples]
    dtcs = [{c: r.get(c) for c in spool.DTC_COLUMNS} for r in batch.dtc_events]
    return {"batch_id": batch.batch_id, "samples": samples, "dtc_events": dtcs}


def _post(client: httpx.Client, url: str, body: dict, report: UploadReport, max_attempts: int,
          backoff: float, max_backoff: float, sleep: Callable[[float], None]) -> dict:
    delay = backoff
    last = ""
    for attempt in range(1, max_attempts + 1):
        asked = None
        try:
            r = client.post(url, json=body)
        except httpx.TransportError as exc:  # connect refused, reset, timeout
            last = f"{type(exc).__name__}: {exc}"
        else:
            if r.status_code in (429, 503):
                asked = retry_after(r.headers.get("Retry-After"))
            if r.status_code == 200:
                try:
                    ack = r.json()
                except ValueError:
                    raise UploadError(f"{url}: 200 without a JSON acknowledgement: {r.text[:200]!r}") from None
                if ack.get("batch_id") != body["batch_id"]:
                    raise UploadError(f"{url}: acknowledgement names batch {ack.get('batch_id')!r}, "
                                      f"sent {body['batch_id']!r}")
                return ack
            if r.status_code >= 500 or r.status_code in RETRY_STATUS:
                last = f"HTTP {r.status_code}: {r.text[:200]}"
            else:
                raise UploadError(f"{url} refused batch {body['batch_id']}: HTTP {r.status_code}: {r.text[:300]}")
        if attempt == max_attempts:
            break
        report.retries += 1
        wait = asked if asked is not None else delay * (0.8 + 0.4 * random.random())
        log.warning("batch %s attempt %d failed (%s); retrying in %.1fs", body["batch_id"], attempt, last, wait)
        sleep(wait)
        delay = min(delay * 2, max_backoff)
    raise UploadError(f"{url}: batch {body['batch_id']} not acknowledged after {max_attempts} attempts ({last}); "
                      "it stays in the spool for the next upload")


def upload(paths: Paths, url: str, token: str | None = None, *, max_attempts: int = 8, backoff: float = 0.5,
           max_backoff: float = 30.0, timeout: float = 30.0, sleep: Callable[[float], None] = time.sleep,
           progress: Callable[[int], None] | None = None) -> UploadReport:
    token = token if token is not None else Settings().secret("api_token")
    endpoint = url.rstrip("/") + "/telemetry"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    report = UploadReport()
    spool.sync_store(paths)  # seals segments of crashed writers; the store gets them before deletion
    with httpx.Client(headers=headers, timeout=timeout) as client:
        for seg, read, acked in spool.iter_unacked(paths):
            report.corrupt += read.corrupt
            for batch in read.batches:
                if batch.batch_id in acked:
                    continue
                ack = _post(client, endpoint, payload(batch), report, max_attempts, backoff, max_backoff, sleep)
                spool.mark_acked(seg, [batch.batch_id])
                report.batches_sent += 1
                report.accepted += int(ack.get("accepted", 0))
                report.quarantined += int(ack.get("quarantined", 0))
                report.duplicates += bool(ack.get("duplicate", False))
                if progress:
                    progress(1)
            outcome = spool.retire(seg, read)
            if outcome == "kept":
                report.segments_kept += 1
            else:
                report.segments_deleted += 1
    return report


def count_pending(paths: Paths) -> int:
    spool.seal_orphans(paths)
    return spool.status(paths)["unacked"]
