"""One modeling job at a time per home: a file lock around training, promotion and the feature build.

Two ``autopdm train`` on one home used to interleave: each gated its candidates against champions the other was
replacing, both printed PROMOTED for every component, and the champion set ended up mixed (brake from one run,
tire and battery from the other). ``train_all`` (training, registration, the gate and the alias move) and
``autopdm features`` (which rewrites the table training reads) hold ``<home>/locks/modeling.lock`` for their
whole length, so a champion set is always the outcome of whole runs taken one after the other.

The lock is an operating-system file lock (``filelock``: ``flock`` on Unix, ``LockFileEx`` on Windows), so it
is released when its holder exits, even when killed. A second job waits up to ``AUTOPDM_LOCK_TIMEOUT_S``,
saying whom it waits for, then refuses with one line naming the lock and its holder (pid, host, command and
since when, from ``modeling.holder.json`` beside the lock). Re-entrant within a thread: ``train_all``'s Dask path
calls itself.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from filelock import FileLock, Timeout

from autopdm.config import Paths, Settings

log = logging.getLogger(__name__)

LOCK_FILE = "modeling.lock"
HOLDER_FILE = "modeling.holder.json"


class LockBusy(RuntimeError):
    """Another training or feature build holds this home's modeling lock."""


def lock_path(paths: Paths) -> Path:
    return paths.home / "locks" / LOCK_FILE


def holder(paths: Paths, patience_s: float = 1.0) -> str:
    """Who holds the lock, in words, from the record its holder writes just after taking it (waited for up to
    `patience_s`: a lock taken a moment ago may not have its record yet)."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            h = json.loads((lock_path(paths).parent / HOLDER_FILE).read_text())
            return f"pid {h['pid']} on {h['host']} ({h['command']}: {h['what']} since {h['since']})"
        except (OSError, ValueError, KeyError, TypeError):
            if time.monotonic() >= deadline:
                return "another process (it left no holder record)"
            time.sleep(0.05)


def _write_holder(paths: Paths, what: str) -> Path:
    record = {"pid": os.getpid(), "host": socket.gethostname(), "what": what,
              "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:2]]) if sys.argv and sys.argv[0] else "python",
              "since": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}
    f = lock_path(paths).parent / HOLDER_FILE
    tmp = f.with_name(f"{HOLDER_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, f)  # a waiter never reads half a record
    return f


def _busy(paths: Paths, waited: float) -> LockBusy:
    return LockBusy(f"the modeling lock {lock_path(paths)} is held by {holder(paths)}; gave up after {waited:g} s "
                    f"(AUTOPDM_LOCK_TIMEOUT_S) — run again when it is done")


@contextlib.contextmanager
def modeling_lock(paths: Paths, what: str, timeout: float | None = None) -> Iterator[None]:
    """Hold the home's modeling lock for the block; wait up to `timeout` s (default AUTOPDM_LOCK_TIMEOUT_S)."""
    timeout = Settings().lock_timeout_s if timeout is None else float(timeout)
    path = lock_path(paths)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), is_singleton=True)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if timeout <= 0:
            raise _busy(paths, 0) from None
        log.warning("waiting up to %g s for the modeling lock %s, held by %s", timeout, path, holder(paths))
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise _busy(paths, timeout) from None
    record = _write_holder(paths, what) if lock.lock_counter == 1 else None
    try:
        yield
    finally:
        if record is not None:
            record.unlink(missing_ok=True)
        lock.release()


def holding_modeling_lock(what: str):
    """Decorator: the function (whose first argument is a `Paths` or None) runs holding the modeling lock."""
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(paths: Paths | None = None, *args, **kwargs):
            with modeling_lock(paths or Paths.from_env(), what):
                return fn(paths, *args, **kwargs)
        return wrapper
    return decorate
