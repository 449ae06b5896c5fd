"""The main job end to end on the embedded default (what `make demo` runs).

simulate a fleet → trips from raw samples → features → train and gate three models in MLflow →
start the BentoML service and the reference CRM receiver (real processes on 127.0.0.1) →
the CRM asks /assess → batch scoring emits work orders → the outbox delivers them, signed →
drift report → summary. The servers are stopped whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
import time
from dataclasses import dataclass

import httpx
import pandas as pd
from rich.console import Console
from rich.table import Table

from autopdm import components, monitor, store
from autopdm.config import Paths, Settings
from autopdm.delivery.dispatcher import Dispatcher
from autopdm.delivery.outbox import Outbox
from autopdm.localproc import free_port, running
from autopdm.modeling.train import train_all
from autopdm.pipeline import trips
from autopdm.pipeline.features import build_from_store
from autopdm.serving.score import score_fleet
from autopdm.sim.fleet import simulate_fleet, write_fleet


@dataclass
class DemoConfig:
    vehicles: int = 400
    days: int = 730
    seed: int = 7
    raw_vehicles: int = 1
    start: str = "2025-01-01"


class _Steps:
    """Times each step of the demo and prints what it did."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.timings: dict[str, float] = {}
        self._t0 = time.perf_counter()

    @contextlib.contextmanager
    def step(self, key: str, title: str):
        self.console.rule(title)
        t = time.perf_counter()
        yield
        self.timings[key] = time.perf_counter() - t
        self.console.print(f"  [dim]{self.timings[key]:.1f} s[/dim]")


def _simulate(cfg: DemoConfig, paths: Paths, console: Console):
    with console.status("simulating"):
        fleet = simulate_fleet(cfg.vehicles, cfg.days, cfg.seed, raw_vehicles=cfg.raw_vehicles, start=cfg.start)
        write_fleet(fleet, paths)
    ev = fleet.service_events
    fixes = ev[ev["action"] != "inspect"]["component"].value_counts()
    console.print(f"{len(fleet.trips):,} trips, {len(ev):,} service events "
                  f"({', '.join(f'{c}: {n}' for c, n in fixes.items())}), "
                  f"{len(fleet.samples):,} raw 1 Hz samples for {cfg.raw_vehicles} vehicles")
    return fleet


def _resummarise(fleet, paths: Paths, console: Console) -> dict:
    """The raw samples of the rendered vehicles, cut into trips by the same summariser as recorded data."""
    raw = store.read_samples(paths)
    again = trips.summarise(raw)
    sim = fleet.trips[fleet.trips["vehicle_id"].isin(raw["vehicle_id"].unique())]
    same = sim.merge(again, on="trip_id", suffixes=("_sim", "_raw"))
    err = (same["distance_km_sim"] - same["distance_km_raw"]).abs().max() if len(same) else float("nan")
    quarantined = len(store.read_quarantine(paths))
    console.print(f"{len(again):,} trips re-summarised from {len(raw):,} samples; {len(same):,} of {len(sim):,} "
                  f"simulated trip ids reproduced, max distance difference {err:.4f} km; {quarantined} readings quarantined")
    return {"trips_reproduced": (len(same), len(sim), float(err)), "quarantined": quarantined}


def _features(fleet, paths: Paths, console: Console) -> pd.DataFrame:
    with console.status("building features"):
        feats, _ = build_from_store(paths)
    console.print(f"{len(feats):,} vehicle-days × {feats.shape[1]} columns")
    return feats


@dataclass
class _Servers:
    token: str
    secret: str
    service_url: str
    crm_url: str
    crm_base: str


@contextlib.contextmanager
def _servers(paths: Paths):
    """The BentoML service and the reference CRM receiver as real processes on 127.0.0.1, stopped on exit."""
    settings = Settings()
    token = settings.secret("api_token") or secrets.token_urlsafe(24)
    secret = settings.secret("crm_webhook_secret") or secrets.token_hex(16)
    svc_port, crm_port = free_port(), free_port()
    env = dict(os.environ, AUTOPDM_HOME=str(paths.home), AUTOPDM_API_TOKEN=token,
               AUTOPDM_CRM_WEBHOOK_SECRET=secret, BENTOML_DO_NOT_TRACK="true", DO_NOT_TRACK="true")
    crm = f"http://127.0.0.1:{crm_port}"
    svc = f"http://127.0.0.1:{svc_port}"
    with running([sys.executable, "-m", "autopdm.cli", "crm-receiver", "--port", str(crm_port)], env,
                 paths.home / "crm-receiver.log", f"{crm}/healthz", 30), \
         running([sys.executable, "-m", "bentoml", "serve", "autopdm.serving.service:Autopdm", "--host", "127.0.0.1",
                  "--port", str(svc_port)], env, paths.home / "service.log", f"{svc}/readyz", 120):
        yield _Servers(token, secret, svc, f"{crm}/work-orders", crm)


def _assess(srv: _Servers, vehicle_ids: list[str], as_of: str, console: Console) -> dict:
    """What a CRM does: POST /assess with the bearer token (and once without, to see it refused)."""
    sample = vehicle_ids[:5] + ["WVWZZZ1KZ6W999999"]
    r = httpx.post(f"{srv.service_url}/assess", json={"vehicle_ids": sample, "as_of": as_of},
                   headers={"Authorization": f"Bearer {srv.token}"}, timeout=30)
    r.raise_for_status()
    body = r.json()
    for a in body.get("vehicles", [])[:5]:
        bands = ", ".join(f"{c} {v['risk']:.2f} ({v['risk_band']})" for c, v in a["components"].items())
        console.print(f"{a['vehicle_id']}: {bands}")
    console.print(f"unknown: {body.get('unknown')}")
    unauth = httpx.post(f"{srv.service_url}/assess", json={"vehicle_ids": sample}, timeout=10).status_code
    console.print(f"without the bearer token: HTTP {unauth}")
    return {"assess": body, "unauthorized_status": unauth}


def _score_and_deliver(srv: _Servers, paths: Paths, as_of: str, console: Console) -> dict:
    sc = score_fleet(as_of, paths, emit=True, deliver=False)
    ob = Outbox.open(paths)
    with Dispatcher(ob, srv.crm_url, srv.secret, timeout=5.0) as d:
        d.run(until_empty=True, max_seconds=60)
    again = score_fleet(as_of, paths, emit=True, deliver=False)  # an equivalent open order is not sent twice
    received = httpx.get(f"{srv.crm_base}/stats", headers={"Authorization": f"Bearer {srv.token}"}, timeout=5).json()
    console.print(f"{sc.scored} vehicles scored, {len(sc.work_orders)} work orders, {sc.enqueued} enqueued; "
                  f"re-scoring enqueued {again.enqueued} (suppressed {again.suppressed}); "
                  f"outbox {ob.status()['counts']}; receiver {received}")
    return {"score_result": sc, "score": sc.summary(), "rescore": again.summary(), "received": received}


def _drift(paths: Paths, feats: pd.DataFrame, console: Console) -> dict:
    with console.status("drift report"):
        report = monitor.run_monitor(paths, features=feats)
    console.print(f"drift: {report.drift} ({len(report.drifted_columns)} of {report.n_columns} columns, "
                  f"share {report.drift_share:.2f}); report {report.report_path}")
    return {"drift": report.drift}


def run(cfg: DemoConfig, paths: Paths, console: Console) -> dict:
    """Every step on the embedded default; returns what each step measured (the demo test checks it)."""
    st = _Steps(console)
    out: dict = {}
    with st.step("simulate", f"1. simulate {cfg.vehicles} vehicles × {cfg.days} days (seed {cfg.seed})"):
        fleet = _simulate(cfg, paths, console)
    with st.step("trips", "2. trips from the raw samples (the same summariser as recorded data)"):
        out.update(_resummarise(fleet, paths, console))
    with st.step("features", "3. daily point-in-time features and labels"):
        feats = _features(fleet, paths, console)
    with st.step("train", "4. train, evaluate and gate one model per component in MLflow"):
        with console.status("training"):
            out["train"] = train_all(paths, features=feats, seed=cfg.seed)
    as_of = str(pd.to_datetime(feats["date"]).max().date())
    stack = contextlib.ExitStack()  # the servers stop whatever happens below
    with st.step("start servers", "5. the BentoML service and the reference CRM receiver on 127.0.0.1"):
        srv = stack.enter_context(_servers(paths))
    with stack:
        with st.step("assess", f"6. the CRM asks POST /assess (as of {as_of})"):
            out.update(_assess(srv, list(fleet.vehicles["vehicle_id"]), as_of, console))
        with st.step("score and deliver", "7. score the fleet, emit work orders, deliver them through the outbox"):
            out.update(_score_and_deliver(srv, paths, as_of, console))
    with st.step("monitor", "8. drift report (Evidently)"):
        out.update(_drift(paths, feats, console))
    _summary(console, out["train"], out.pop("score_result"), paths, st.timings)
    out["timings"] = st.timings
    return out


def _summary(console: Console, res: dict, sc, paths: Paths, timings: dict) -> None:
    console.rule("summary")
    # narrow enough for an 80-column log: the full metrics are in MLflow
    t = Table("component", "model", "champion", "EW recall", "precision", "PR-AUC", "baseline", "orders")
    by_comp = pd.Series([wo["component"] for wo in sc.work_orders], dtype=object).value_counts()
    for c in components.names():
        r = res.get(c, {})
        m, b = r.get("metrics", {}), r.get("baseline", {})

        def f(d, k):
            return f"{d[k]:.2f}" if isinstance(d.get(k), (int, float)) else "–"

        t.add_row(c, f"v{r.get('version', '')}", "yes" if r.get("promoted") else "no", f(m, "ew_recall"),
                  f(m, "precision"), f(m, "pr_auc"), f(b, "ew_recall"), str(int(by_comp.get(c, 0))))
    console.print(t)
    console.print("EW recall: share of held-out needs alerted 7–15 days ahead; baseline: the workshop's "
                  "interval rule at the same alert volume")
    console.print(f"total {sum(timings.values()):.0f} s  ({', '.join(f'{k} {v:.0f} s' for k, v in timings.items())})")
    console.print("where to look:")
    console.print(f"  MLflow UI:        mlflow ui --backend-store-uri {paths.tracking_uri}")
    console.print(f"  CRM receiver db:  {paths.home / 'crm_receiver.sqlite'}  (sqlite3 … 'select * from work_orders')")
    console.print(f"  outbox:           AUTOPDM_HOME={paths.home} autopdm outbox status")
    console.print(f"  reports:          {paths.reports}")


def fresh_home(base: Paths) -> Paths:
    home = base.home / "demo"
    shutil.rmtree(home, ignore_errors=True)
    return Paths.from_env(home).ensure()
