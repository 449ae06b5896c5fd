"""Commands for serving and delivery: serve, score, outbox status|retry|dispatch, crm-receiver."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import sqlite3
import sys
from typing import Optional

import pandas as pd
import typer

from autopdm.cli.common import console, fail, paths
from autopdm.config import Paths, Settings
from autopdm.delivery import signing
from autopdm.delivery.dispatcher import Dispatcher
from autopdm.delivery.outbox import Outbox
from autopdm.schedules import ScheduleError
from autopdm.serving.score import score_fleet
from autopdm.sim import receiver

SERVICE = "autopdm.serving.service:Autopdm"


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_cmd(
        port: int = typer.Option(3000, "--port", "-p", help="HTTP port"),
        host: str = typer.Option("127.0.0.1", help="interface to bind (0.0.0.0 for all)"),
    ) -> None:
        """Start the BentoML service (/assess, /predict, /telemetry, /model_info, /reload, /livez, /readyz,
        /metrics, /docs). It answers from the `champion` models and picks up a moved alias or a rebuilt
        features table by itself (AUTOPDM_RELOAD_POLL_S)."""
        p = paths()
        env = dict(os.environ, AUTOPDM_HOME=str(p.home))
        if Settings().api_token is None:
            env["AUTOPDM_API_TOKEN"] = secrets.token_urlsafe(24)
            console.print(f"AUTOPDM_API_TOKEN not set; generated one for this run: [bold]{env['AUTOPDM_API_TOKEN']}[/bold]")
        cmd = [sys.executable, "-m", "bentoml", "serve", SERVICE, "--host", host, "--port", str(port)]
        console.print(f"serving {SERVICE} on http://{host}:{port} (models from {p.tracking_uri}); "
                      f"API documentation, open to all: http://{host}:{port}/docs")
        os.execvpe(cmd[0], cmd, env)

    @app.command("score")
    def score_cmd(
        as_of: str = typer.Option(..., "--as-of", help="scoring date YYYY-MM-DD (features up to this day)"),
        emit: bool = typer.Option(False, "--emit", help="enqueue work orders in the outbox and deliver them"),
        deliver: bool = typer.Option(True, "--deliver/--no-deliver", help="with --emit: one delivery pass now"),
        as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
    ) -> None:
        """Score the whole fleet at a date; with --emit, queue and deliver the work orders."""
        try:
            day = pd.Timestamp(as_of).date()
        except (ValueError, TypeError):
            raise fail(f"--as-of: not a date: {as_of!r}") from None
        p = paths()
        with console.status(f"scoring the fleet at {day}"):
            try:
                res = score_fleet(day, p, emit=emit, deliver=deliver)
            except (FileNotFoundError, ScheduleError) as exc:
                raise fail(str(exc)) from None
        s = res.summary()
        if as_json:
            print(json.dumps(s, indent=2, default=str))
            return
        console.print(f"as of {s['as_of']}: {s['scored']} of {s['vehicles']} vehicles scored "
                      f"({s['stale']} stale, {s['no_features']} without features)")
        for comp, bands in s["alerts"].items():
            console.print(f"  {comp:8s} high {bands.get('high', 0):4d}  medium {bands.get('medium', 0):4d}  low {bands.get('low', 0):4d}")
        console.print(f"work orders: {s['n_work_orders']}, service reminders due within 7 days: {s['n_reminders']}")
        if emit:
            console.print(f"outbox: {s['enqueued']} enqueued, {s['suppressed']} suppressed (still open), {s['closed']} closed by service")
            if s["delivery"] is not None:
                console.print(f"delivery pass: {s['delivery']}")
            elif deliver:
                console.print("AUTOPDM_CRM_WEBHOOK_URL not set: work orders wait in the outbox")

    outbox_app = typer.Typer(help="Work-order outbox: delivery status, retries, dispatcher.", no_args_is_help=True)
    app.add_typer(outbox_app, name="outbox")

    @outbox_app.command("status")
    def outbox_status(as_json: bool = typer.Option(False, "--json")) -> None:
        """Counts by state, oldest pending, and rows that failed or are parked (with reasons)."""
        with _outbox_errors():
            st = Outbox.open(paths()).status()
        if as_json:
            print(json.dumps(st, indent=2))
            return
        c = st["counts"]
        console.print(f"{st['path']}")
        console.print(f"pending {c['pending']}  delivered {c['delivered']}  parked {c['parked']}  closed {c['closed']}")
        if st["oldest_pending_created_at"]:
            console.print(f"oldest pending since {st['oldest_pending_created_at']}, next attempt {st['next_attempt_at']}")
        for r in st["problems"]:
            when = f" next {r['next_attempt_at']}" if r["next_attempt_at"] else ""
            console.print(f"  {r['status']:8s} {r['work_order_id']} {r['component']:8s} attempts {r['attempts']}{when}: "
                          f"{r['last_error']}", markup=False)
        if c["parked"]:
            console.print("fix the cause, then: autopdm outbox retry")

    @outbox_app.command("retry")
    def outbox_retry(
        ids: Optional[list[str]] = typer.Argument(None, help="work order ids (default: all parked and pending)"),
        deliver: bool = typer.Option(True, "--deliver/--no-deliver", help="deliver right away"),
        max_seconds: float = typer.Option(60.0, help="stop delivering after this long"),
    ) -> None:
        """Put parked work orders back in the queue, make pending ones due now, and deliver."""
        with _outbox_errors():
            ob = Outbox.open(paths())
            n = ob.retry(ids or None)
            console.print(f"{n} work order(s) queued for delivery")
            if deliver and n:
                st = _deliver(ob, dict(until_empty=True, max_seconds=max_seconds))
                console.print(f"delivery: {st.as_dict()}; pending now {ob.status()['counts']['pending']}")

    @outbox_app.command("dispatch")
    def outbox_dispatch(
        forever: bool = typer.Option(False, "--forever", help="keep running and poll for new work orders"),
        max_seconds: Optional[float] = typer.Option(None, help="stop after this long"),
        poll: float = typer.Option(1.0, help="poll interval in seconds"),
        timeout: float = typer.Option(10.0, help="longest time one delivery attempt may take, in seconds"),
    ) -> None:
        """Run the dispatcher: deliver pending work orders (waiting out backoffs) until none is pending.

        Whatever the CRM answers, the exit status is 0: failures are retried or parked (see
        `autopdm outbox status`). SIGTERM and Ctrl-C give back the claimed work orders first."""
        with _outbox_errors():
            ob = Outbox.open(paths())
            st = _deliver(ob, dict(until_empty=not forever, max_seconds=max_seconds, poll=poll), timeout=timeout)
            c = ob.status()["counts"]
        console.print(f"delivery: {st.as_dict()}; pending {c['pending']}, parked {c['parked']}")

    @outbox_app.command("secret")
    def outbox_secret() -> None:
        """Print AUTOPDM_CRM_WEBHOOK_SECRET in the whsec_ form Standard Webhooks libraries take."""
        with _outbox_errors():
            print(signing.standard_secret(Settings().secret("crm_webhook_secret")))

    @app.command("crm-receiver")
    def crm_receiver_cmd(
        port: int = typer.Option(8700, "--port", "-p"),
        host: str = typer.Option("127.0.0.1"),
        db: Optional[str] = typer.Option(None, help="SQLite file (default $AUTOPDM_HOME/crm_receiver.sqlite)"),
        secret: Optional[str] = typer.Option(None, help="webhook secret (default $AUTOPDM_CRM_WEBHOOK_SECRET)"),
        delay: float = typer.Option(0.0, help="seconds to wait before answering each POST (testing)"),
        timeout: float = typer.Option(10.0, help="socket timeout: a connection silent this long is closed"),
    ) -> None:
        """Reference CRM webhook: verifies Standard Webhooks signatures, stores each work order once in SQLite.

        GET /work-orders and /stats need Authorization: Bearer $AUTOPDM_API_TOKEN."""
        p = paths()

        def ready(srv) -> None:
            console.print(f"crm-receiver on http://{host}:{srv.server_address[1]}/work-orders, "
                          f"storing into {srv.store.path}")
            if not srv.has_token:
                console.print("AUTOPDM_API_TOKEN not set: GET /work-orders and /stats refuse every request")

        try:
            receiver.serve(host, port, db or p.home / "crm_receiver.sqlite", secret, delay, ready=ready, timeout=timeout)
        except (ValueError, OSError, sqlite3.Error) as exc:
            raise fail(str(exc)) from None


@contextlib.contextmanager
def _outbox_errors():
    """One line instead of a traceback for a bad setting or an unusable outbox file (read-only, full)."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        raise fail(f"outbox {Paths.from_env().outbox}: {exc}", code=1) from None
    except ValueError as exc:  # settings: no URL, unknown scheme, bad secret
        raise fail(str(exc)) from None


def _deliver(ob: Outbox, run: dict, timeout: float = 10.0):
    """Run a dispatcher; SIGTERM stops it like Ctrl-C, after giving back its claimed rows."""
    d = Dispatcher(ob, timeout=timeout)  # ValueError (settings) before anything is claimed
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        with d:
            return d.run(**run)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
