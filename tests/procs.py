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


def env_for(home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(AUTOPDM_HOME=str(home), AUTOPDM_CRM_WEBHOOK_SECRET=SECRET, BENTOML_DO_NOT_TRACK="true",
               DO_NOT_TRACK="true", MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK="true", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def start_receiver(home: Path, port: int, log: Path, delay: float = 0.0) -> subprocess.Popen:
    p = start([AUTOPDM, "crm-receiver", "--port", str(port), "--delay", str(delay)], env_for(home), log)
    wait_http(f"http://127.0.0.1:{port}/healthz", 20, p, log)
    return p


def receiver_stats(port: int) -> dict:
    return httpx.get(f"http://127.0.0.1:{port}/stats", timeout=5).json()


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
