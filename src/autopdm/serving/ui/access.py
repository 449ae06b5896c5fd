"""Who may use the advisor's pages: the token check, the session cookie and the CSRF token.

* **The token check** is `check_token` (a sign-in) with `session_principal` (a signed-in request):
  the one place that decides who a caller is. A token needs the `advisor` role (AUTOPDM_API_TOKEN
  has every role); a dealer-scoped token sees its dealer's cars only (`serving.scope`). A revoked
  token's sessions end at their next request.
* **The session** is a cookie signed with a key derived from a random key kept with the tokens and
  the API token
  (itsdangerous, timestamped, `SESSION_S` long): it holds the principal's id (a fingerprint,
  never the token) and the session's CSRF token. HttpOnly (no script reads it), SameSite=Strict,
  its path the pages' mount (/ui: no API endpoint ever receives it), Secure over https. Changing the token signs every
  session out. Signing out clears the cookie.
* **CSRF**: every form that POSTs carries the session's CSRF token and the server compares it
  (SameSite alone does not cover older browsers or same-site attackers); POSTs whose Origin is
  another site's are refused too. The sign-in form carries a token of its own, bound to a
  short-lived cookie set with the form (no signing someone in to another account).
"""

from __future__ import annotations

import functools
import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from autopdm.config import Paths, Settings
from autopdm.serving.tokens import ALL_ROLES, Authenticator, Principal

__all__ = ["ALL_ROLES", "Principal"]

COOKIE = "autopdm_ui"
SIGNIN_COOKIE = "autopdm_ui_signin"
SESSION_S = 12 * 3600   # a working day; then sign in again
SIGNIN_S = 3600         # how long a sign-in form stays usable
ROLE = "advisor"


@functools.lru_cache(maxsize=8)
def _authenticator(home: str, api_token: str) -> Authenticator:
    return Authenticator(Paths.from_env(home), api_token)


def _auth() -> Authenticator:
    s = Settings()  # read per call: a test or a command that changes the environment sees its own values
    return _authenticator(str(s.home), s.secret("api_token"))


def configured() -> bool:
    """Whether the server has a token at all (without one nobody signs in)."""
    return _auth().configured()


def check_token(token: str) -> Principal | None:
    """The caller presenting `token` at sign-in, or None (no such token, revoked, or not an advisor's)."""
    p = _auth()(token)
    return p if p is not None and p.may(ROLE) else None


def session_principal(principal_id: str) -> Principal | None:
    """The principal of a validly signed session, if it may still act (token not revoked nor changed)."""
    p = _auth().by_id(principal_id)
    return p if p is not None and p.may(ROLE) else None


def _serializer(salt: str) -> URLSafeTimedSerializer:
    # the key is kept with the tokens: every worker and replica of a home agrees without more state
    return URLSafeTimedSerializer(_auth().session_key(), salt=salt)


@dataclass(frozen=True)
class Session:
    principal: Principal
    csrf: str


def current(request: Request) -> Session | None:
    """The request's session, when its cookie is validly signed, recent and its principal still valid."""
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    try:
        data = _serializer("session").loads(raw, max_age=SESSION_S)
        principal = session_principal(str(data["p"]))
    except (BadSignature, KeyError, TypeError):
        return None
    return Session(principal, str(data["c"])) if principal is not None else None


def _path(request: Request) -> str:
    """The cookies' path: where the pages are mounted."""
    return request.scope.get("root_path", "").rstrip("/") or "/"


def _cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path=_path(request), httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


def start(response: Response, request: Request, principal: Principal) -> None:
    """Sign in: a new session (and CSRF token) in the cookie; the sign-in cookie is spent."""
    value = _serializer("session").dumps({"p": principal.id, "c": new_nonce()})
    _cookie(response, request, COOKIE, value, SESSION_S)
    response.delete_cookie(SIGNIN_COOKIE, path=_path(request))


def end(response: Response, request: Request) -> None:
    """Sign out: the session cookie is cleared."""
    response.delete_cookie(COOKIE, path=_path(request), httponly=True, samesite="strict")


def new_nonce() -> str:
    return secrets.token_urlsafe(24)


def bind_signin_token(response: Response, request: Request, nonce: str) -> None:
    """Bind the sign-in form's CSRF token (`nonce`) to a short-lived cookie set on `response`."""
    _cookie(response, request, SIGNIN_COOKIE, _serializer("signin").dumps(nonce), SIGNIN_S)


def signin_token_ok(request: Request, submitted: str) -> bool:
    raw = request.cookies.get(SIGNIN_COOKIE)
    if not raw or not submitted:
        return False
    try:
        nonce = _serializer("signin").loads(raw, max_age=SIGNIN_S)
    except BadSignature:
        return False
    return hmac.compare_digest(str(nonce).encode(), submitted.encode())


def csrf_ok(session: Session, submitted: str | None) -> bool:
    return bool(submitted) and hmac.compare_digest(session.csrf.encode(), str(submitted).encode())


def same_origin(request: Request) -> bool:
    """False when the browser says the POST comes from another site: by Sec-Fetch-Site where the browser
    sends it, else by Origin (host and port only: a TLS-terminating proxy in front changes the scheme the
    service sees). Neither header (not a browser): the CSRF token decides, as it does in every case."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return origin != "null" and urlsplit(origin).netloc == request.headers.get("host", "")
