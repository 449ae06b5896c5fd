"""ASGI middleware in front of every endpoint: bearer token and its role, JSON bodies only, body-size limit."""

from __future__ import annotations

import json
from contextvars import ContextVar

from autopdm.config import Settings
from autopdm.serving.tokens import Authenticator, Principal

# health, metrics (request counts and latencies, no vehicle data) and the API documentation (BentoML's
# page, its OpenAPI document and assets, and the client
# schema that bentoml.SyncHTTPClient reads) are open; everything else needs a token
PUBLIC_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics", "/schema.json", "/docs.json", "/docs"})
# the role a token needs per path (serving.tokens); other protected paths (BentoML's "/", unknown
# paths) take any valid token and answer what BentoML answers
ENDPOINT_ROLES = {"/assess": "crm", "/records": "crm", "/telemetry": "crm", "/predict": "data-science",
                  "/model_info": "data-science", "/reload": "operator"}
# the caller of the request being answered (set by the middleware, read by the endpoints with `caller()`);
# a context variable reaches the endpoint's task and its worker threads without a bentoml.Context parameter
_CALLER: ContextVar[Principal | None] = ContextVar("autopdm_caller", default=None)
PUBLIC_PREFIXES = ("/static_content/",)
# the service advisor's pages (serving.ui) check their own sign-in (a session cookie, CSRF tokens on their
# forms) and take HTML forms; the bearer token is never asked for there, and the cookie is valid nowhere else
UI_PATH = "/ui"
DOCS_PAGE = "/"  # where BentoML serves the documentation page; public as /docs
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def is_ui(path: str) -> bool:
    return path == UI_PATH or path.startswith(UI_PATH + "/")


def is_public(path: str) -> bool:
    """Reached without the bearer token: open paths, and the advisor's pages (signed in on their own)."""
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES) or is_ui(path)


def _is_json(content_type: bytes | None) -> bool:
    if content_type is None:  # no header: taken as JSON, as BentoML does
        return True
    media = content_type.split(b";")[0].strip().lower()
    return media in (b"", b"application/json") or (media.startswith(b"application/") and media.endswith(b"+json"))


class AuthLimitMiddleware:
    """Bearer token on everything but health, metrics, the API docs and the advisor's pages (which
    sign in on their own); 415 on bodies that are not JSON outside those pages (the API has no form or
    file inputs, and BentoML would parse them as forms); 413 on big bodies, everywhere.

    Token: AUTOPDM_API_TOKEN (every role) or a scoped token (`autopdm token create`); a valid token
    without the path's role is a 403. Without any token the protected endpoints refuse every
    request (fail closed). Body limit: AUTOPDM_MAX_BODY_BYTES (default 16 MiB), enforced on Content-Length
    and on the bytes actually received (chunked uploads).
    """

    def __init__(self, app, token: str | None = None, max_body: int | None = None) -> None:
        self.app = app
        s = Settings()
        self.auth = Authenticator(api_token=token)
        self.max_body = int(max_body or s.max_body_bytes)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        ui = is_ui(path)
        if path == "/docs":
            scope = dict(scope, path=DOCS_PAGE, raw_path=DOCS_PAGE.encode())
        elif not is_public(path):
            who = self._principal(scope)
            if who is None:
                return await _json(send, 401, {"error": "missing or invalid bearer token (Authorization: Bearer "
                                                        "<token>); the API documentation is open at /docs"},
                                   [(b"www-authenticate", b'Bearer realm="autopdm"')])
            role = ENDPOINT_ROLES.get(path)
            if role is not None and not who.may(role):
                return await _json(send, 403, {"error": f"this token's role ({who.role}) may not call {path}: "
                                                        f"it needs the role {role}"})
            reset = _CALLER.set(who)
            try:
                return await self._limited(scope, receive, send, ui)
            finally:
                _CALLER.reset(reset)
        return await self._limited(scope, receive, send, ui)

    async def _limited(self, scope, receive, send, ui: bool) -> None:
        headers = dict(scope.get("headers") or [])
        if scope.get("method") in BODY_METHODS and not ui and not _is_json(headers.get(b"content-type")):
            ct = headers[b"content-type"].decode("latin-1")[:100]
            return await _json(send, 415, {"error": f"Content-Type: expected application/json, got {ct!r}",
                                           "detail": [{"loc": ["Content-Type"], "msg": "expected application/json"}]})
        cl = headers.get(b"content-length")
        if cl is not None:
            try:
                n = int(cl)
            except ValueError:
                return await _json(send, 400, {"error": "Content-Length: not an integer"})
            if n > self.max_body:
                return await _json(send, 413, {"error": f"body of {n} bytes exceeds the limit of {self.max_body}"})
            return await self.app(scope, receive, send)
        if scope.get("method") in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        return await self._buffered(scope, receive, send)

    async def _buffered(self, scope, receive, send) -> None:
        """No Content-Length (chunked): buffer up to the limit, then replay."""
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body = msg.get("body", b"")
            size += len(body)
            if size > self.max_body:
                return await _json(send, 413, {"error": f"body exceeds the limit of {self.max_body} bytes"})
            chunks.append(body)
            more = msg.get("more_body", False)
        data = b"".join(chunks)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": data, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    def _principal(self, scope) -> Principal | None:
        for k, v in scope.get("headers") or []:
            if k == b"authorization":
                scheme, _, cred = v.partition(b" ")
                return self.auth(cred) if scheme.lower() == b"bearer" else None
        return None


def caller() -> Principal | None:
    """The caller of the API request being answered (None outside one)."""
    return _CALLER.get()


async def _json(send, status: int, obj, extra_headers=()) -> None:
    body = json.dumps(obj).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *extra_headers]})
    await send({"type": "http.response.body", "body": body})
