"""The transport seam: file:// delivers through the same dispatcher (and a failing path is retried,
not lost); an unknown scheme is a clear error, in Python and on the command line."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timezone

import pytest
from standardwebhooks.webhooks import Webhook

from autopdm.delivery import signing, transport
from autopdm.delivery.filedrop import FileDropTransport
from autopdm.delivery.outbox import DELIVERED, PENDING, Outbox
from autopdm.delivery.webhook import WebhookTransport

from .procs import AUTOPDM, SECRET, env_for, fake_work_orders


def _dispatch(env, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([AUTOPDM, "outbox", "dispatch", "--poll", "0.1", *extra], env=env, capture_output=True,
                          text=True, timeout=120)


def _lines(path) -> list[dict]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            out.append(None)
    return out


def test_transports_are_chosen_by_scheme():
    assert isinstance(transport.for_url("http://127.0.0.1:9/x", SECRET), WebhookTransport)
    assert isinstance(transport.for_url("HTTPS://crm.invalid/x", SECRET), WebhookTransport)
    assert isinstance(transport.for_url("file:///tmp/x.jsonl", SECRET), FileDropTransport)
    with pytest.raises(ValueError, match=r"'ftp'.*file://, http://, https://"):
        transport.for_url("ftp://crm.invalid/inbox", SECRET)
    with pytest.raises(ValueError, match="no scheme"):
        transport.for_url("crm.invalid/hook", SECRET)
    with pytest.raises(ValueError, match="AUTOPDM_CRM_WEBHOOK_SECRET"):
        transport.for_url("file:///tmp/x.jsonl", "")


@pytest.mark.parametrize("url", ["ftp://crm.invalid/inbox", "crm.invalid/hook"])
def test_unknown_scheme_on_the_command_line_is_one_clear_line(home, url):
    Outbox.open(home).enqueue(fake_work_orders(2))
    r = _dispatch(env_for(home.home, AUTOPDM_CRM_WEBHOOK_URL=url), "--max-seconds", "5")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert url in r.stderr and "known: file://, http://, https://" in r.stderr.replace("\n", "")
    assert Outbox.open(home).status()["counts"][PENDING] == 2  # nothing claimed, nothing lost
    assert all(row["lease_owner"] is None and row["attempts"] == 0 for row in Outbox.open(home).rows())


def test_file_drop_delivers_signed_lines_through_the_dispatcher(home, tmp_path):
    wos = fake_work_orders(9)
    Outbox.open(home).enqueue(wos)
    drop = tmp_path / "crm inbox" / "autopdm.jsonl"  # a space: the URL is percent-encoded
    drop.parent.mkdir()
    drop.write_bytes(b'{"webhook-id":"wo-cut-short-by-a-crash","bo')  # a previous writer died mid-line
    env = env_for(home.home, AUTOPDM_CRM_WEBHOOK_URL=drop.as_uri())
    r = _dispatch(env, "--max-seconds", "30")
    assert r.returncode == 0, r.stderr
    assert Outbox.open(home).status()["counts"][DELIVERED] == 9
    lines = _lines(drop)
    assert lines[0] is None and len(lines) == 10  # the torn line stays alone; every work order is whole
    wh = Webhook(signing.standard_secret(SECRET))
    got = {}
    for rec in lines[1:]:
        assert set(rec) == {"webhook-id", "webhook-timestamp", "webhook-signature", "body"}
        body = rec["body"].encode("utf-8")
        assert signing.verify(body, rec, SECRET, check_time=False) == rec["webhook-id"]
        ts = datetime.fromtimestamp(int(rec["webhook-timestamp"]), timezone.utc)
        assert wh.sign(rec["webhook-id"], ts, rec["body"]) == rec["webhook-signature"]  # the library agrees
        got[rec["webhook-id"]] = json.loads(body)
    assert got == {w["work_order_id"]: w for w in wos}
    # nothing left: a second run appends nothing
    assert _dispatch(env, "--max-seconds", "5").returncode == 0 and len(_lines(drop)) == 10


def test_a_failing_file_path_is_retried_not_lost(home, tmp_path):
    wos = fake_work_orders(5)
    ob = Outbox.open(home)
    ob.enqueue(wos)
    blocker = tmp_path / "mnt"
    blocker.write_text("not a directory: the share is not mounted")
    drop = blocker / "inbox" / "autopdm.jsonl"
    env = env_for(home.home, AUTOPDM_CRM_WEBHOOK_URL=drop.as_uri(), AUTOPDM_OUTBOX_BACKOFF_BASE_S="0.1",
                  AUTOPDM_OUTBOX_BACKOFF_CAP_S="0.5")
    r = _dispatch(env, "--max-seconds", "2")
    assert r.returncode == 0, r.stderr
    rows = ob.rows()
    assert all(x["status"] == PENDING and x["attempts"] >= 1 and x["lease_owner"] is None for x in rows)
    assert str(blocker) in rows[0]["last_error"]
    blocker.unlink()  # the share comes back
    blocker.mkdir()
    r = subprocess.run([AUTOPDM, "outbox", "retry"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert ob.status()["counts"][DELIVERED] == 5
    assert sorted(x["webhook-id"] for x in _lines(drop)) == sorted(w["work_order_id"] for w in wos)
