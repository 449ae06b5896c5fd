"""The webhook transport: a Standard Webhooks–signed HTTP POST of the work order to the CRM.

Headers: ``webhook-id``, ``webhook-timestamp``, ``webhook-signature`` (see `signing`) and
``Idempotency-Key: <work_order_id>``. How a reply is read (the CRM may answer anything):

* 2xx — delivered; the body is not read.
* 3xx — parked: a redirect is not followed (a signed work order goes only where the operator
  pointed it, and a 301/302 would turn the POST into a GET); fix AUTOPDM_CRM_WEBHOOK_URL, then
  ``autopdm outbox retry``.
* 408, 425, 429, 5xx and any other code — retried; a ``Retry-After`` in seconds or as an
  HTTP-date is passed on, anything unparsable is ignored (the backoff applies).
* any other 4xx — parked: the same request cannot succeed.
* no reply (refused, reset, timeout, a broken or undecodable reply) — retried.

Each attempt takes at most `timeout` seconds in all, whatever the CRM does: httpx's timeouts bound
each read, so `_Deadline` cuts off a reply that trickles in. Error texts are one line: at most 300
characters of the body, HTML tags stripped, undecodable bytes replaced.
"""

from __future__ import annotations

import contextlib
import email.utils
import re
import socket
import threading
import time
from datetime import timezone

import httpx

from autopdm.delivery import signing
from autopdm.delivery.transport import Message, Reply

RETRYABLE_4XX = {408, 425, 429}
EXCERPT_BYTES = 2048
_SECONDS = re.compile(r"[0-9]{1,15}(\.[0-9]{1,6})?")
_TAGS = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]*>", re.S | re.I)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After value (delay-seconds or HTTP-date); None when absent or
    unparsable. Huge values come back huge; the dispatcher caps them at its backoff cap."""
    v = (value or "").strip()
    if not v:
        return None
    if v.isdigit() and v.isascii() and len(v) > 15:
        return 1e15
    if _SECONDS.fullmatch(v):
        return float(v)
    try:
        when = email.utils.parsedate_to_datetime(v)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def classify(code: int, headers: httpx.Headers, excerpt: str = "") -> Reply:
    """A Reply from an HTTP status and headers (see the module doc)."""
    if 200 <= code < 300:
        return Reply(True, code)
    if 300 <= code < 400:
        where = headers.get("location", "?")[:200]
        return Reply(False, code, f"HTTP {code}: redirect to {where} not followed; point the webhook URL there",
                     permanent=True)
    err = f"HTTP {code}: {excerpt}" if excerpt else f"HTTP {code}"
    permanent = 400 <= code < 500 and code not in RETRYABLE_4XX
    return Reply(False, code, err, None if permanent else parse_retry_after(headers.get("retry-after")), permanent)


def excerpt(resp: httpx.Response, limit: int = EXCERPT_BYTES) -> str:
    """The start of a reply body as one readable line."""
    buf = b""
    note = ""
    try:
        for chunk in resp.iter_bytes():
            buf += chunk
            if len(buf) >= limit:
                break
    except httpx.HTTPError as exc:  # undecodable content-encoding, a reset, the deadline
        note = f" [body unreadable: {type(exc).__name__}]"
    text = buf[:limit].decode("utf-8", errors="replace")
    if "html" in resp.headers.get("content-type", "").lower() or text.lstrip().startswith("<"):
        text = _TAGS.sub(" ", text)
    return (" ".join(text.split())[:300] + note).strip()


class _Deadline:
    """Shuts the connection's socket down when an attempt has taken `seconds` in all.

    The socket is learnt from httpcore's public `trace` extension when a connection is opened;
    the client keeps one connection, so the last one opened is the one in use."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.sock: socket.socket | None = None
        self.expired = False

    def trace(self, event: str, info: dict) -> None:
        if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            self.sock = info["return_value"].get_extra_info("socket")

    def _cut(self) -> None:
        self.expired = True
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)

    @contextlib.contextmanager
    def running(self):
        self.expired = False
        timer = threading.Timer(self.seconds, self._cut)
        timer.daemon = True
        timer.start()
        try:
            yield self
        finally:
            timer.cancel()


class WebhookTransport:
    def __init__(self, url: str, secret: str, timeout: float = 10.0, client: httpx.Client | None = None) -> None:
        self.url = url
        self.webhook = signing.webhook(secret)  # fails here, with a clear message, on a bad secret
        self.timeout = timeout
        self.deadline = _Deadline(timeout)
        self.client = client or httpx.Client(timeout=timeout, follow_redirects=False,
                                             limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                                             headers={"User-Agent": "autopdm-outbox/2"})

    def send(self, message: Message) -> Reply:
        headers = {"Content-Type": "application/json", "Idempotency-Key": message.id,
                   **signing.sign(message.id, message.body, self.webhook)}
        with self.deadline.running() as dl:
            try:
                with self.client.stream("POST", self.url, content=message.body, headers=headers,
                                        extensions={"trace": dl.trace}) as resp:
                    ok = 200 <= resp.status_code < 300
                    return classify(resp.status_code, resp.headers, "" if ok else excerpt(resp))
            except httpx.HTTPError as exc:  # refused, reset, timeouts, malformed replies
                if dl.expired:
                    return Reply(False, None, f"no complete reply within {self.timeout:g} s (cut off)")
                return Reply(False, None, f"{type(exc).__name__}: {exc}"[:500])

    def close(self) -> None:
        self.client.close()
