"""Helpers for tests that run real processes on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from autopdm import components
from autopdm.serving import recommend
from autopdm.localproc import start, stop, wait_http  # noqa: F401  (re-exported for the tests)

AUTOPDM = str(Path(sys.executable).parent / "autopdm")
SECRET = "test-webhook-secret"
RECEIVER_TOKEN = "test-receiver-token"  # what start_receiver's GET /work-orders and /stats want


def env_for(home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(AUTOPDM_HOME=str(home), AUTOPDM_CRM_WEBHOOK_SECRET=SECRET, BENTOML_DO_NOT_TRACK="true",
               DO_NOT_TRACK="true", MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK="true", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def start_receiver(home: Path, port: int, log: Path, delay: float = 0.0, token: str | None = RECEIVER_TOKEN,
                   timeout: float | None = None) -> subprocess.Popen:
    """A real `autopdm crm-receiver`; `token` = its AUTOPDM_API_TOKEN (None: no token configured)."""
    env = env_for(home)
    env.pop("AUTOPDM_API_TOKEN", None)
    if token is not None:
        env["AUTOPDM_API_TOKEN"] = token
    cmd = [AUTOPDM, "crm-receiver", "--port", str(port), "--delay", str(delay)]
    if timeout is not None:
        cmd += ["--timeout", str(timeout)]
    p = start(cmd, env, log)
    wait_http(f"http://127.0.0.1:{port}/healthz", 20, p, log)
    return p


def receiver_auth(token: str = RECEIVER_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def receiver_stats(port: int) -> dict:
    r = httpx.get(f"http://127.0.0.1:{port}/stats", headers=receiver_auth(), timeout=5)
    r.raise_for_status()
    return r.json()


def receiver_work_orders(port: int, limit: int = 10_000) -> list[dict]:
    r = httpx.get(f"http://127.0.0.1:{port}/work-orders?limit={limit}", headers=receiver_auth(), timeout=10)
    r.raise_for_status()
    return r.json()


def fake_work_orders(n: int, as_of: str = "2026-06-01") -> list[dict]:
    """n distinct, valid work-order payloads (no models needed)."""
    out = []
    for i in range(n):
        vin = f"WVWZZZ1KZ{i:08d}"
        comp = components.names()[i % 3]
        risk = 0.3 + 0.6 * (i % 7) / 7
        win = recommend.recommended_window(as_of, risk)
        out.append({
            "work_order_id": recommend.work_order_id(vin, comp, win),
            "vehicle_id": vin, "customer_id": f"C{i:05d}", "channel": "sms", "component": comp,
            "risk": round(risk, 4), "risk_band": recommend.risk_band(risk, 0.3),
            "recommended_window": win, "recommended_action": components.get(comp).action,
            "evidence": [{"feature": "x_7d", "value": 1.0, "contribution": 0.2}],
            "model": {"name": f"autopdm-{comp}", "version": "1"}, "created_at": "2026-06-01T00:00:00+00:00",
        })
    return out
