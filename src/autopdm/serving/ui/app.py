"""The service advisor's pages, an ASGI app the BentoML service mounts at /ui.

Pages (relative to the mount): `/` the cars at risk today (filters `component`, `band`, `page`),
`/vehicles/<VIN>` one car (risk history, the part's state and evidence in words, work orders and
their delivery, outcome buttons), `/signin` and `/signout`. Server-rendered Jinja2 templates, no
script. Who may see them is `access`; what they show is `fleet`; recording an outcome is `outcomes`.

The app reads the running service through `get_service()`: an object with `models.current()` (the
snapshot the API answers from) and `paths` (the home).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from autopdm import components, schemas
from autopdm.serving.ui import access, fleet, outcomes
from autopdm.serving.ui.chart import risk_chart

HERE = Path(__file__).parent
PAGE_SIZE = 100
SIGNIN_FAIL_DELAY_S = 0.5   # slows guessing; the comparison itself is constant-time
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                                 b"frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),   # VINs in page addresses never leave in a Referer (and forms keep their Origin)
]


class NotReady(Exception):
    """The service has no snapshot yet (models loading)."""


def pct(x: float | None) -> str:
    if x is None:
        return ""
    return "< 1 %" if 0 < x < 0.01 else f"{100 * x:.0f} %"


def templates() -> Jinja2Templates:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.StrictUndefined)
    env.filters["pct"] = pct
    env.filters["first_upper"] = lambda s: s[:1].upper() + s[1:]
    env.globals.update(chart=risk_chart, outcome_buttons=outcomes.buttons, outcome_label=outcomes.label,
                       bands=fleet.BANDS, components=components.all_components,
                       part_of=lambda name: components.get(name).part if name in components.names() else name)
    return Jinja2Templates(env=env)


def signed_in(handler):
    """Pages for signed-in advisors only: anyone else is sent to the sign-in page (and back after)."""
    @functools.wraps(handler)
    async def wrapper(self: "Pages", request: Request) -> Response:
        session = access.current(request)
        if session is None:
            here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"{base(request)}/signin?next={quote(here)}", status_code=303)
        try:
            return await handler(self, request, session)
        except NotReady as exc:
            return self.message(request, session, 503, "Not ready yet", str(exc))
    return wrapper


def base(request: Request) -> str:
    """Where the app is mounted (/ui)."""
    return request.scope.get("root_path", "").rstrip("/")


def local_next(request: Request, target: str | None) -> str:
    """A page of this app to go to after signing in; anything else (another site, another path) → the list."""
    root = base(request)
    if target and (target == root or target.startswith(root + "/")) and "//" not in target and "\\" not in target:
        return target
    return root + "/"


class Pages:
    def __init__(self, get_service: Callable[[], Any]) -> None:
        self.get_service = get_service
        self.templates = templates()
        self.alerts = fleet.AlertsOfSnapshot()

    # -- helpers ---------------------------------------------------------------------------------
    def snapshot(self):
        try:
            return self.get_service().models.current()
        except Exception as exc:  # no service instance yet, or no models loaded
            raise NotReady(f"The models are not loaded yet ({exc}). Try again in a minute.") from None

    @property
    def paths(self):
        return self.get_service().paths

    def visible(self, session: access.Session, vin: str) -> bool:
        """A dealer-scoped advisor sees the dealer's cars only; another dealer's car is no car."""
        return self.get_service().dealers.visible(session.principal, vin)

    def audit(self, session: access.Session, what: str, vehicles, outcome: str) -> None:
        self.get_service().audit.record(session.principal, what, vehicles, outcome)

    def render(self, request: Request, name: str, session: access.Session | None, status: int = 200, **ctx) -> Response:
        ctx.update(base=base(request), signed_in=session is not None, csrf=session.csrf if session else "")
        resp = self.templates.TemplateResponse(request, name, ctx, status_code=status)
        resp.headers["cache-control"] = "no-store"   # no car data in caches, nor after signing out
        return resp

    def message(self, request: Request, session: access.Session | None, status: int, title: str, text: str) -> Response:
        return self.render(request, "message.html", session, status, title=title, text=text)

    def form_refused(self, request: Request, session: access.Session) -> Response:
        return self.message(request, session, 403, "Form refused", "This form did not come from this page or has "
                            "expired. Go back, reload the page and try again.")

    # -- sign in and out ---------------------------------------------------------------------------
    async def signin_form(self, request: Request) -> Response:
        if access.current(request) is not None:
            return RedirectResponse(local_next(request, request.query_params.get("next")), status_code=303)
        return self._signin(request, 200, "")

    def _signin(self, request: Request, status: int, error: str, nxt: str | None = None) -> Response:
        nonce = access.new_nonce()
        nxt = local_next(request, nxt if nxt is not None else request.query_params.get("next"))
        resp = self.render(request, "signin.html", None, status, signin_csrf=nonce, next=nxt, error=error,
                           signed_out="signed_out" in request.query_params)
        access.bind_signin_token(resp, request, nonce)
        return resp

    async def signin(self, request: Request) -> Response:
        form = await request.form()
        nxt = str(form.get("next") or "")
        if not access.same_origin(request) or not access.signin_token_ok(request, str(form.get("csrf") or "")):
            return self._signin(request, 403, "The sign-in form expired. Please enter the token again.", nxt)
        principal = access.check_token(str(form.get("token") or ""))
        if principal is None:
            await asyncio.sleep(SIGNIN_FAIL_DELAY_S)
            why = "That token is not valid." if access.configured() else \
                "No token is configured on this server (AUTOPDM_API_TOKEN): nobody can sign in."
            return self._signin(request, 401, why, nxt)
        resp = RedirectResponse(local_next(request, nxt), status_code=303)
        access.start(resp, request, principal)
        return resp

    @signed_in
    async def signout(self, request: Request, session: access.Session) -> Response:
        form = await request.form()
        if not access.same_origin(request) or not access.csrf_ok(session, form.get("csrf")):
            return self.form_refused(request, session)
        resp = RedirectResponse(f"{base(request)}/signin?signed_out=1", status_code=303)
        access.end(resp, request)
        return resp

    # -- pages -------------------------------------------------------------------------------------
    @signed_in
    async def at_risk(self, request: Request, session: access.Session) -> Response:
        q = request.query_params
        comp, band = q.get("component", ""), q.get("band", "")
        if comp and comp not in components.names():
            return self.message(request, session, 400, "Unknown component",
                                f"component: {comp!r} is not one of {', '.join(components.names())}.")
        if band and band not in fleet.BANDS:
            return self.message(request, session, 400, "Unknown band", f"band: {band!r} is not one of {', '.join(fleet.BANDS)}.")
        try:
            page = int(q.get("page", "1"))
            if page < 1:
                raise ValueError
        except ValueError:
            return self.message(request, session, 400, "Bad page number", "page: a whole number from 1.")
        snap = self.snapshot()
        alerts = self.alerts(snap)
        if session.principal.dealer is not None:
            hidden = self.get_service().dealers.hidden(session.principal, {a.vehicle_id for a in alerts})
            alerts = [a for a in alerts if a.vehicle_id not in hidden]
        data = await run_in_threadpool(_list_data, alerts, snap, self.paths, comp, band, page)
        self.audit(session, "/ui/", [(v, True) for v in dict.fromkeys(r["a"].vehicle_id for r in data["rows"])], "shown")
        return self.render(request, "list.html", session, component=comp, band=band, page=page, **data)

    @signed_in
    async def vehicle(self, request: Request, session: access.Session) -> Response:
        vin = request.path_params["vin"]
        snap = self.snapshot()
        view = await run_in_threadpool(fleet.vehicle, snap, self.paths, vin) \
            if schemas.is_vin(vin) and self.visible(session, vin) else None
        if schemas.is_vin(vin):
            self.audit(session, "/ui/vehicles", [(vin, view is not None)], "shown" if view is not None else "no such car")
        if view is None:
            return self.message(request, session, 404, "No such car", f"No scored car has the VIN {vin!r}.")
        recorded = request.query_params.get("recorded", "")
        return self.render(request, "vehicle.html", session, v=view, just_recorded=recorded)

    @signed_in
    async def record_outcome(self, request: Request, session: access.Session) -> Response:
        form = await request.form()
        if not access.same_origin(request) or not access.csrf_ok(session, form.get("csrf")):
            return self.form_refused(request, session)
        vin, wid, status = request.path_params["vin"], str(form.get("work_order_id") or ""), str(form.get("status") or "")
        if status not in schemas.OUTCOME_STATUSES:
            return self.message(request, session, 400, "Unknown outcome",
                                f"status: {status!r} is not one of {', '.join(schemas.OUTCOME_STATUSES)}.")
        snap = self.snapshot()
        order = await run_in_threadpool(outcomes.target, snap, self.paths, vin, wid) \
            if schemas.is_vin(vin) and self.visible(session, vin) else None
        if schemas.is_vin(vin):
            self.audit(session, "/ui/vehicles/outcomes", [(vin, order is not None)],
                       f"outcome {status}" if order is not None else "no such work order")
        if order is None:
            return self.message(request, session, 404, "No such work order",
                                f"work_order_id: {wid!r} is not a work order or recommendation of car {vin!r}.")
        res = await run_in_threadpool(outcomes.record, self.paths, order, status)
        if res.quarantined:
            return self.message(request, session, 400, "Outcome not recorded", "; ".join(res.reasons))
        return RedirectResponse(f"{base(request)}/vehicles/{vin}?recorded={quote(wid)}#{quote(wid)}", status_code=303)

    @signed_in
    async def not_found(self, request: Request, session: access.Session) -> Response:
        return self.message(request, session, 404, "Not found", "There is no such page.")


def _list_data(alerts: list[fleet.Alert], snap, paths, comp: str, band: str, page: int) -> dict:
    alerts = [a for a in alerts if not comp or a.component == comp]
    counts = {b: sum(a.band == b for a in alerts) for b in fleet.BANDS}
    alerts = [a for a in alerts if not band or a.band == band]
    pages = max(1, -(-len(alerts) // PAGE_SIZE))
    shown = alerts[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]
    orders = fleet.current_orders(paths, fleet.today(snap))
    ids = [o["work_order_id"] for a in shown if (o := orders.get((a.vehicle_id, a.component)))]
    recorded = fleet.outcomes_by_order(fleet.outcomes_of(paths, ids)) if ids else {}
    rows = []
    for a in shown:
        o = orders.get((a.vehicle_id, a.component))
        rows.append({"a": a, "order": o, "outcomes": recorded.get(o["work_order_id"], []) if o else []})
    return {"rows": rows, "total": len(alerts), "counts": counts, "pages": pages, "today": fleet.today(snap)}


class SecurityHeaders:
    """Adds the security headers to every response of the app."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(msg):
            if msg["type"] == "http.response.start":
                msg = dict(msg, headers=[*msg.get("headers", []), *SECURITY_HEADERS])
            await send(msg)

        return await self.app(scope, receive, send_with_headers)


def create_app(get_service: Callable[[], Any]) -> SecurityHeaders:
    p = Pages(get_service)
    routes = [
        Route("/", p.at_risk, methods=["GET"], name="at_risk"),
        Route("/signin", p.signin_form, methods=["GET"]),
        Route("/signin", p.signin, methods=["POST"]),
        Route("/signout", p.signout, methods=["POST"]),
        Route("/vehicles/{vin}", p.vehicle, methods=["GET"]),
        Route("/vehicles/{vin}/outcomes", p.record_outcome, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        Route("/{rest:path}", p.not_found, methods=["GET", "POST"]),
    ]
    return SecurityHeaders(Starlette(routes=routes))
