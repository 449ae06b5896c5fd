"""Standard Webhooks signatures for work orders (https://www.standardwebhooks.com).

Every delivery carries three fields, as HTTP headers (webhook) or in the line (file drop):

    webhook-id         the work order id (also the Idempotency-Key)
    webhook-timestamp  Unix seconds when this attempt was signed
    webhook-signature  v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">

The secret (AUTOPDM_CRM_WEBHOOK_SECRET) is taken in either form:

* ``whsec_<base64>`` — the form Standard Webhooks libraries take: the key is the decoded bytes;
* anything else — a plain passphrase: the key is its UTF-8 bytes. For a library in another
  language, the same key as a standard secret is ``"whsec_" + base64(passphrase)``
  (`standard_secret`; ``autopdm outbox secret`` prints it).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from datetime import datetime, timezone

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

PREFIX = "whsec_"
TOLERANCE_S = 300  # receivers reject timestamps further off than this (replays)
HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


class SignatureError(ValueError):
    """A delivery whose signature fields are missing, malformed, stale or do not match."""


def signing_key(secret: str | bytes) -> bytes:
    """The HMAC key for a configured secret (see the module doc for the two forms)."""
    if isinstance(secret, bytes):
        key = secret
    elif secret.startswith(PREFIX):
        b64 = secret[len(PREFIX):]
        try:
            key = base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("AUTOPDM_CRM_WEBHOOK_SECRET: starts with whsec_ but the rest is not base64") from None
    else:
        key = secret.encode("utf-8")
    if not key:
        raise ValueError("no webhook secret: set AUTOPDM_CRM_WEBHOOK_SECRET")
    return key


def standard_secret(secret: str | bytes) -> str:
    """The same key in the ``whsec_<base64>`` form other Standard Webhooks libraries take."""
    return PREFIX + base64.b64encode(signing_key(secret)).decode("ascii")


def webhook(secret: str | bytes) -> Webhook:
    return Webhook(signing_key(secret))


def sign(msg_id: str, body: bytes, secret: str | bytes | Webhook, now: datetime | None = None) -> dict[str, str]:
    """The three signature fields for one attempt at delivering `body` (UTF-8 JSON)."""
    wh = secret if isinstance(secret, Webhook) else webhook(secret)
    ts = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(ts.timestamp())),
            "webhook-signature": wh.sign(msg_id, ts, body.decode("utf-8"))}


def verify(body: bytes, headers: Mapping[str, str], secret: str | bytes | Webhook, *, check_time: bool = True) -> str:
    """Check a delivery's signature; returns its webhook-id, raises `SignatureError` with the reason.

    `check_time=False` skips the ±5 minute window: for a file drop imported hours later (the
    importer de-duplicates by id instead)."""
    wh = secret if isinstance(secret, Webhook) else webhook(secret)
    h = {k.lower(): v for k, v in headers.items()}
    missing = [k for k in HEADERS if not h.get(k)]
    if missing:
        raise SignatureError(f"missing {', '.join(missing)}")
    try:
        if check_time:
            wh.verify(body, h, json_parse=False)
        else:
            ts = datetime.fromtimestamp(int(h["webhook-timestamp"]), timezone.utc)
            expected = wh.sign(h["webhook-id"], ts, body.decode("utf-8"))
            if not any(hmac.compare_digest(expected, s) for s in h["webhook-signature"].split()):
                raise WebhookVerificationError("No matching signature found")
    except WebhookVerificationError as exc:
        raise SignatureError(f"webhook-signature: {str(exc).lower()}") from None
    except UnicodeDecodeError:
        raise SignatureError("body: not UTF-8") from None
    except (ValueError, OverflowError):  # the library trips over malformed fields
        raise SignatureError("webhook-signature or webhook-timestamp: malformed") from None
    return h["webhook-id"]
