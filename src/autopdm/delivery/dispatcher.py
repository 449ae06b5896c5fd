"""The dispatcher: delivers due outbox rows through a transport, with retries and backoff.

* A row is marked delivered only after the transport says the CRM has it. A dispatcher killed
  between sending and that mark resends the *same* body with the *same* id after restart, so a
  receiver that de-duplicates by id stores each work order exactly once (at-least-once delivery).
* Failures the CRM may recover from (network errors, timeouts, 5xx, 408, 425, 429) are retried
  with exponential backoff and jitter, honouring ``Retry-After``; permanent refusals are *parked*
  with the reason until an operator runs ``autopdm outbox retry``.
* Circuit breaker: after `BREAKER` consecutive sends that reached nobody, the pass stops and the
  other due rows are postponed instead of being tried one by one.
* Whatever happens, an attempt is recorded and the lease released: a row that cannot be turned
  into a message (a corrupted body) and a send that raises something unforeseen are parked with
  the reason, and the pass goes on with the rows behind them. Leases of rows not attempted are
  given back even when the pass is interrupted (Ctrl-C, SIGTERM, a database error).
* Rows are claimed `batch` at a time with a lease long enough for each of them to be attempted
  (every attempt is bounded by `timeout`), so another live dispatcher never sends them too.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from dataclasses import dataclass

from autopdm.config import Settings
from autopdm.delivery import transport as transports
from autopdm.delivery.outbox import DELIVERED, PARKED, PENDING, Outbox
from autopdm.delivery.transport import Message, Reply, Transport


@dataclass
class DispatchStats:
    delivered: int = 0
    retried: int = 0
    parked: int = 0
    attempts: int = 0

    def as_dict(self) -> dict:
        return dict(delivered=self.delivered, retried=self.retried, parked=self.parked, attempts=self.attempts)


def backoff_delay(attempts: int, base: float = 1.0, cap: float = 600.0, rng: random.Random | None = None) -> float:
    """Exponential backoff with 'equal jitter': half the delay fixed, half random."""
    d = min(cap, base * (2 ** max(0, attempts - 1)))
    return d / 2 + (rng or random).uniform(0, d / 2)


class Dispatcher:
    """Deliver due outbox rows. The transport comes from `transport=`, or from the delivery URL and
    secret (default: the settings AUTOPDM_CRM_WEBHOOK_URL and AUTOPDM_CRM_WEBHOOK_SECRET)."""

    BREAKER = 5

    def __init__(self, outbox: Outbox, url: str | None = None, secret: str | None = None, *,
                 transport: Transport | None = None, timeout: float = 10.0, backoff_base: float | None = None,
                 backoff_cap: float | None = None, batch: int = 10, client=None) -> None:
        s = Settings()
        self.outbox = outbox
        self.timeout = timeout
        self.backoff_base = backoff_base if backoff_base is not None else s.outbox_backoff_base_s
        self.backoff_cap = backoff_cap if backoff_cap is not None else s.outbox_backoff_cap_s
        self.batch = batch
        self.lease_s = batch * (timeout + 5) + 30
        if transport is None:
            url = url or s.crm_webhook_url
            secret = secret if secret is not None else s.secret("crm_webhook_secret")
            if not url:
                raise ValueError("no delivery URL: set AUTOPDM_CRM_WEBHOOK_URL")
            kw = {"client": client} if client is not None else {}
            transport = transports.for_url(url, secret, timeout=timeout, **kw)
        self.transport = transport

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> "Dispatcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def message(row) -> Message:
        """The message for an outbox row; ValueError when the stored body is not a JSON object."""
        body = row["body"]
        if not isinstance(body, str):
            raise ValueError(f"stored body is {type(body).__name__}, not text")
        if not isinstance(json.loads(body), dict):
            raise ValueError("stored body is not a JSON object")
        return Message(row["work_order_id"], body.encode("utf-8"))

    def attempt(self, row) -> Reply:
        """Send one row; never raises for anything the row or the CRM does."""
        try:
            message = self.message(row)
        except Exception as exc:  # JSON, Unicode, absurd nesting: the row itself is bad
            return Reply(False, None, f"poison row: {exc}"[:500], permanent=True)
        try:
            return self.transport.send(message)
        except Exception as exc:  # a reply (or a bug) nobody foresaw: park it, keep going
            return Reply(False, None, f"unexpected {type(exc).__name__}: {exc}"[:500], permanent=True)

    def deliver_one(self, row) -> str:
        wid = row["work_order_id"]
        attempts = row["attempts"] + 1
        reply = self.attempt(row)
        if reply.ok:
            self.outbox.finish(wid, status=DELIVERED, attempts=attempts, last_status=reply.status,
                               last_error=None, delivered_at=time.time())
            return DELIVERED
        if reply.permanent:
            self.outbox.finish(wid, status=PARKED, attempts=attempts, last_status=reply.status, last_error=reply.error)
            return PARKED
        delay = backoff_delay(attempts, self.backoff_base, self.backoff_cap)
        if reply.retry_after is not None:
            delay = max(delay, min(reply.retry_after, self.backoff_cap))
        self.outbox.finish(wid, attempts=attempts, last_status=reply.status, last_error=reply.error,
                           next_attempt_at=time.time() + delay)
        return "unreachable" if reply.status is None else "retry"

    def run_once(self, deadline: float | None = None) -> DispatchStats:
        """One pass over the rows that are due now (until `deadline`, a time.monotonic() value)."""
        st = DispatchStats()
        down = 0
        while True:
            rows = self.outbox.claim(self.batch, lease_s=self.lease_s)
            if not rows:
                return st
            ids = [r["work_order_id"] for r in rows]
            done = 0
            try:
                for row in rows:
                    if (deadline is not None and time.monotonic() >= deadline) or down >= self.BREAKER:
                        self.outbox.release(ids[done:])
                        if down >= self.BREAKER:
                            self.outbox.postpone_due(backoff_delay(row["attempts"] + 1, self.backoff_base, self.backoff_cap))
                        return st
                    r = self.deliver_one(row)
                    done += 1
                    st.attempts += 1
                    if r == DELIVERED:
                        st.delivered += 1
                    elif r == PARKED:
                        st.parked += 1
                    else:
                        st.retried += 1
                    down = down + 1 if r == "unreachable" else 0
            except BaseException:  # interrupted: give back what was not attempted, then let it through
                with contextlib.suppress(Exception):
                    self.outbox.release(ids[done:])
                raise

    def run(self, until_empty: bool = True, max_seconds: float | None = None, poll: float = 1.0,
            stop=None) -> DispatchStats:
        """Deliver until nothing is pending (`until_empty`) or forever; waits for backoffs."""
        total = DispatchStats()
        deadline = time.monotonic() + max_seconds if max_seconds else None
        while True:
            st = self.run_once(deadline)
            for k, v in st.as_dict().items():
                setattr(total, k, getattr(total, k) + v)
            if stop is not None and stop():
                return total
            if until_empty and self.outbox.status()["counts"][PENDING] == 0:
                return total
            if deadline is not None and time.monotonic() >= deadline:
                return total
            wait = poll
            nxt = self.outbox.next_due_at()
            if nxt is not None:
                wait = min(poll, max(0.05, nxt - time.time()))
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - time.monotonic()))
            time.sleep(wait)
