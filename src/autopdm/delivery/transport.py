"""How a signed work order reaches the CRM: the seam between the dispatcher and a transport.

A transport takes one `Message` and answers with a `Reply`; the dispatcher decides from the reply
whether the row is delivered, retried later or parked. A transport reports every failure it can
foresee as a Reply (ok=False) and bounds each send by its `timeout`; should `send` raise all the
same, the dispatcher parks that message with the error and goes on with the others. Transports are chosen by the scheme of the
delivery URL from `TRANSPORTS` (module and class by name, imported when first used), so a new way
of delivering work orders is one new module and one line here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

TRANSPORTS = {
    "http": "autopdm.delivery.webhook:WebhookTransport",
    "https": "autopdm.delivery.webhook:WebhookTransport",
    "file": "autopdm.delivery.filedrop:FileDropTransport",
}


@dataclass(frozen=True)
class Message:
    id: str            # the work order id: also the idempotency key
    body: bytes        # canonical JSON, exactly as stored in the outbox


@dataclass(frozen=True)
class Reply:
    ok: bool                          # the CRM has it
    status: int | None = None         # HTTP status or None when nothing answered
    error: str | None = None
    retry_after: float | None = None  # seconds the CRM asked us to wait
    permanent: bool = False           # retrying the same message cannot succeed (park it)


class Transport(Protocol):
    def send(self, message: Message) -> Reply: ...

    def close(self) -> None: ...


def for_url(url: str, secret: str, timeout: float = 10.0, **kwargs) -> Transport:
    scheme = urlsplit(url).scheme.lower()
    if scheme not in TRANSPORTS:
        what = f"no transport for scheme {scheme!r}" if scheme else "no scheme"
        raise ValueError(f"delivery URL {url!r}: {what} (known: {', '.join(f'{k}://' for k in sorted(TRANSPORTS))})")
    module, cls = TRANSPORTS[scheme].split(":")
    return getattr(importlib.import_module(module), cls)(url, secret, timeout=timeout, **kwargs)
