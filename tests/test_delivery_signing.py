"""Standard Webhooks signatures: the secret's two forms, interoperability with the standardwebhooks
package and a hand-written HMAC, the 5-minute window, malformed fields, and the docs' snippets."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from autopdm.delivery import signing
from autopdm.delivery.outbox import encode_body

from .procs import SECRET, fake_work_orders

DOC = Path(__file__).resolve().parents[1] / "docs" / "crm-integration.md"


def _body_and_id() -> tuple[bytes, str]:
    wo = fake_work_orders(1)[0]
    return encode_body(wo).encode(), wo["work_order_id"]


def test_plain_and_whsec_secrets_name_the_same_key():
    std = signing.standard_secret("change-me")
    assert std == "whsec_" + base64.b64encode(b"change-me").decode()
    assert signing.signing_key("change-me") == signing.signing_key(std) == b"change-me"
    raw = bytes(range(32))
    whsec = "whsec_" + base64.b64encode(raw).decode()
    assert signing.signing_key(whsec) == raw and signing.standard_secret(whsec) == whsec
    assert signing.signing_key(whsec.rstrip("=")) == raw  # unpadded, as some tools print it
    with pytest.raises(ValueError, match="AUTOPDM_CRM_WEBHOOK_SECRET"):
        signing.signing_key("whsec_not*base64!")
    with pytest.raises(ValueError, match="AUTOPDM_CRM_WEBHOOK_SECRET"):
        signing.signing_key("")


def test_signature_verifies_with_the_library_and_with_a_plain_hmac():
    body, wid = _body_and_id()
    h = signing.sign(wid, body, SECRET)
    assert set(h) == {"webhook-id", "webhook-timestamp", "webhook-signature"} and h["webhook-id"] == wid
    assert abs(int(h["webhook-timestamp"]) - datetime.now(timezone.utc).timestamp()) < 5
    # what a CRM using the standardwebhooks package does, given `autopdm outbox secret`
    assert Webhook(signing.standard_secret(SECRET)).verify(body, h)["work_order_id"] == wid
    # the raw recipe of the docs, written out independently
    mac = hmac.new(SECRET.encode(), f"{wid}.{h['webhook-timestamp']}.".encode() + body, hashlib.sha256).digest()
    assert h["webhook-signature"] == "v1," + base64.b64encode(mac).decode()
    assert signing.verify(body, h, SECRET) == wid


def test_verify_rejects_tampering_wrong_keys_and_the_window():
    body, wid = _body_and_id()
    now = datetime.now(timezone.utc)
    good = signing.sign(wid, body, SECRET)
    bad = {
        "tampered body": (body.replace(b'"sms"', b'"email"'), good),
        "other id": (body, {**good, "webhook-id": "wo-other"}),
        "other secret": (body, signing.sign(wid, body, "another-secret")),
        "6 min old": (body, signing.sign(wid, body, SECRET, now - timedelta(minutes=6))),
        "6 min ahead": (body, signing.sign(wid, body, SECRET, now + timedelta(minutes=6))),
        "no signature": (body, {k: v for k, v in good.items() if k != "webhook-signature"}),
        "no comma": (body, {**good, "webhook-signature": "v1" + good["webhook-signature"][3:]}),
        "not base64": (body, {**good, "webhook-signature": "v1,***"}),
        "v2 only": (body, {**good, "webhook-signature": "v2," + good["webhook-signature"][3:]}),
        "timestamp text": (body, {**good, "webhook-timestamp": "yesterday"}),
        "timestamp inf": (body, {**good, "webhook-timestamp": "inf"}),
        "not utf-8": (b"\xff" + body, good),
    }
    for why, (b, h) in bad.items():
        with pytest.raises(signing.SignatureError):
            signing.verify(b, h, SECRET)
            pytest.fail(why)
    assert signing.verify(body, signing.sign(wid, body, SECRET, now - timedelta(minutes=4)), SECRET) == wid
    # several signatures (a secret being rotated): one match is enough
    old_sig = signing.sign(wid, body, "old")["webhook-signature"]
    rotated = {**good, "webhook-signature": old_sig + " " + good["webhook-signature"]}
    assert signing.verify(body, rotated, SECRET) == wid
    # a file drop is checked without the window
    old = signing.sign(wid, body, SECRET, now - timedelta(days=2))
    assert signing.verify(body, old, SECRET, check_time=False) == wid
    with pytest.raises(signing.SignatureError):
        signing.verify(body + b" ", old, SECRET, check_time=False)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature", "WEBHOOK-SIGNATURE"]),
                       st.text(max_size=60)), st.binary(max_size=60))
def test_verify_raises_only_signature_errors_on_any_input(headers, body):
    try:
        signing.verify(body, headers, SECRET)
    except signing.SignatureError:
        pass


# -- the docs' snippets run as written --------------------------------------------------------------

def _doc_block(tag: str) -> str:
    m = re.search(rf"<!-- tested: {tag} -->\s*```python\n(.*?)```", DOC.read_text(), re.S)
    assert m, f"{DOC.name}: no python block tagged {tag}"
    return m.group(1)


def test_doc_snippets_verify_what_autopdm_sends():
    lib, raw = {}, {}
    exec(_doc_block("verify-library"), lib)  # noqa: S102 - our own docs
    exec(_doc_block("verify-raw"), raw)  # noqa: S102
    body, wid = _body_and_id()
    h = signing.sign(wid, body, "change-me")  # the docs' example secret
    assert lib["receive"](body, h)["work_order_id"] == wid
    assert raw["verify"](body, {k.title(): v for k, v in h.items()})  # header names in any case
    stale = signing.sign(wid, body, "change-me", datetime.now(timezone.utc) - timedelta(minutes=10))
    for b, hh in [(body + b" ", h), (body, stale), (body, {**h, "webhook-signature": "v1"})]:
        assert lib["receive"](b, hh) is None
    assert not raw["verify"](body + b" ", h) and not raw["verify"](body, stale)


def test_doc_example_request_carries_a_real_signature():
    text = DOC.read_text()
    block = re.search(r"```http\n(.*?)```", text, re.S).group(1)
    head, _, body = block.partition("\n\n")
    headers = dict(line.split(": ", 1) for line in head.splitlines()[1:])
    raw_body = "".join(line.strip() for line in body.splitlines()).encode()  # wrapped for reading
    assert signing.verify(raw_body, headers, "change-me", check_time=False) == headers["Idempotency-Key"]
    assert signing.standard_secret("change-me") in text
