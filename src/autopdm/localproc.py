"""Real server processes on 127.0.0.1: start, wait until they answer, stop.

One place for what the demo, the tests and the benchmarks all do with `bentoml serve` and the
CRM receiver.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    """Own session, so stopping it stops its workers too; output appended to `log`."""
    with open(log, "ab") as fh:
        return subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen, sig_kill: bool = False, timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.kill() if sig_kill else proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    """Until GET `url` answers 200; fails early, with the log's tail, if the process exits."""
    def tail() -> str:
        return Path(log).read_text(errors="replace")[-3000:] if log else ""

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:4]} exited with {proc.returncode} before {url} answered: {tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout:.0f} s: {tail()}")


@contextlib.contextmanager
def running(cmd: list[str], env: dict, log: Path, ready_url: str | None = None, timeout: float = 60.0):
    proc = start(cmd, env, log)
    try:
        if ready_url:
            wait_http(ready_url, timeout, proc, log)
        yield proc
    finally:
        stop(proc, timeout=15.0)
