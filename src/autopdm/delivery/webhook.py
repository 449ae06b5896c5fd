"""The webhook transport: a signed HTTP POST of the work order to the CRM.

Headers: ``Idempotency-Key: <work_order_id>`` and ``X-Autopdm-Signature: sha256=<hex>``, the
HMAC-SHA256 of the exact body bytes with the shared secret. 2xx is delivered; network errors,
timeouts, 5xx, 408, 425 and 429 are worth retrying (``Retry-After`` is passed on); any other 4xx
is permanent.
"""

from __future__ import annotations

import hashlib
import hmac

import httpx

from autopdm.delivery.transport import Message, Reply

RETRYABLE_4XX = {408, 425, 429}


def sign(body: bytes, secret: str | bytes) -> str:
    """`sha256=<hex>` HMAC-SHA256 of the exact request body bytes."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: str | bytes, header: str | None) -> bool:
    return bool(header) and hmac.compare_digest(sign(body, secret), header.strip())


def _retry_after(value: str) -> float | None:
    return float(value) if value.replace(".", "", 1).isdigit() else None


class WebhookTransport:
    def __init__(self, url: str, secret: str, timeout: float = 10.0, client: httpx.Client | None = None) -> None:
        if not secret:
            raise ValueError("no webhook secret: set AUTOPDM_CRM_WEBHOOK_SECRET")
        self.url, self.secret = url, secret
        self.client = client or httpx.Client(timeout=timeout, follow_redirects=False,
                                             headers={"User-Agent": "autopdm-outbox/1"})

    def send(self, message: Message) -> Reply:
        headers = {"Content-Type": "application/json", "Idempotency-Key": message.id,
                   "X-Autopdm-Signature": sign(message.body, self.secret)}
        try:
            resp = self.client.post(self.url, content=message.body, headers=headers)
        except httpx.HTTPError as exc:  # connect errors, timeouts, protocol errors
            return Reply(False, None, f"{type(exc).__name__}: {exc}"[:500])
        code = resp.status_code
        if 200 <= code < 300:
            return Reply(True, code)
        return Reply(False, code, f"HTTP {code}: {resp.text[:300]}", _retry_after(resp.headers.get("Retry-After", "")),
                     permanent=400 <= code < 500 and code not in RETRYABLE_4XX)

    def close(self) -> None:
        self.client.close()
