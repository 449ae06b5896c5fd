"""Who a caller is: bearer tokens with a role and an optional dealer scope.

* `AUTOPDM_API_TOKEN` (the embedded default) has every role and every dealer.
* Scoped tokens are created with `autopdm token create --role R [--dealer D]`. Only the SHA-256 of
  a token's secret is stored (`<home>/access/tokens.sqlite`): the secrets are 256 random bits, so a
  plain hash cannot be reversed, and the database leaks no usable token. The secret is shown once.
* A revoked token stops working at its next request (every request looks the token up).

Roles and what they open (the service's map of endpoints to roles is `serving.auth.ENDPOINT_ROLES`):

| role | may call |
|---|---|
| `crm` | POST /assess, /records, /telemetry |
| `advisor` | the advisor's pages (/ui) and the outcomes recorded there |
| `data-science` | POST /predict, /model_info |
| `operator` | POST /reload; the outbox and backups are the operator's commands on the host (/metrics is open) |
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from autopdm.config import Paths, Settings

ROLES = ("crm", "advisor", "data-science", "operator")
ALL_ROLES = frozenset(ROLES)
SECRET_PREFIX = "apdm_"
DEALER_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")


class TokenError(ValueError):
    """A bad role, dealer, name or token id; the message names the option."""


@dataclass(frozen=True)
class Principal:
    id: str                           # stable, not secret: a token id, or a fingerprint of the API token
    roles: frozenset[str]
    dealer: str | None = None         # a dealer scope (None: every dealer)

    @property
    def role(self) -> str:
        """One word for the audit trail."""
        return "all" if self.roles == ALL_ROLES else ",".join(sorted(self.roles))

    def may(self, role: str) -> bool:
        return role in self.roles


def _digest(secret: str | bytes) -> str:
    return hashlib.sha256(secret.encode() if isinstance(secret, str) else secret).hexdigest()


def api_token_principal(api_token: bytes) -> Principal:
    return Principal("api-token:" + hashlib.sha256(b"autopdm-principal\0" + api_token).hexdigest()[:16], ALL_ROLES)


def db_path(paths: Paths) -> Path:
    return paths.access / "tokens.sqlite"


class TokenStore:
    """The scoped tokens of a home, in SQLite (WAL: the CLI revokes while the service reads)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._con: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._session_key: bytes | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._con is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("CREATE TABLE IF NOT EXISTS tokens (id TEXT PRIMARY KEY, digest TEXT NOT NULL UNIQUE, "
                        "role TEXT NOT NULL, dealer TEXT, name TEXT, created_at REAL NOT NULL, revoked_at REAL)")
            con.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
            self._con = con
        return self._con

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    def create(self, role: str, dealer: str | None = None, name: str | None = None) -> tuple[str, str]:
        """A new token → (its id, its secret). The secret is not stored and cannot be shown again."""
        if role not in ROLES:
            raise TokenError(f"--role: {role!r} is not one of {', '.join(ROLES)}")
        if dealer is not None and not DEALER_RE.match(dealer):
            raise TokenError(f"--dealer: {dealer!r} is not a dealer id (1-64 of A-Z a-z 0-9 . _ : -)")
        if name is not None and len(name) > 100:
            raise TokenError("--name: at most 100 characters")
        tid, secret = "tok_" + secrets.token_hex(6), SECRET_PREFIX + secrets.token_urlsafe(32)
        with self._lock:
            self._connect().execute("INSERT INTO tokens (id, digest, role, dealer, name, created_at) VALUES (?,?,?,?,?,?)",
                                    (tid, _digest(secret), role, dealer, name, time.time()))
        return tid, secret

    def list(self) -> list[dict]:
        with self._lock:
            rows = self._connect().execute("SELECT id, role, dealer, name, created_at, revoked_at FROM tokens "
                                           "ORDER BY created_at").fetchall()
        return [dict(zip(("id", "role", "dealer", "name", "created_at", "revoked_at"), r)) for r in rows]

    def revoke(self, tid: str) -> bool:
        """False when there is no such token (revoking twice is fine)."""
        with self._lock:
            con = self._connect()
            con.execute("UPDATE tokens SET revoked_at=? WHERE id=? AND revoked_at IS NULL", (time.time(), tid))
            return con.execute("SELECT 1 FROM tokens WHERE id=?", (tid,)).fetchone() is not None

    def lookup(self, secret: str) -> Principal | None:
        """The principal of a token secret that exists and is not revoked."""
        return self._active("digest", _digest(secret)) if secret.startswith(SECRET_PREFIX) else None

    def by_id(self, tid: str) -> Principal | None:
        return self._active("id", tid) if tid.startswith("tok_") else None

    def _active(self, column: str, value: str) -> Principal | None:
        if not self.path.exists():
            return None
        with self._lock:
            row = self._connect().execute(f"SELECT id, role, dealer FROM tokens WHERE {column}=? AND revoked_at IS NULL",
                                          (value,)).fetchone()
        return Principal(row[0], frozenset({row[1]}), row[2]) if row else None

    def active(self) -> bool:
        if not self.path.exists():
            return False
        with self._lock:
            return self._connect().execute("SELECT 1 FROM tokens WHERE revoked_at IS NULL LIMIT 1").fetchone() is not None

    def session_key(self) -> bytes:
        """A random key kept with the tokens (made once): it signs the advisor's session cookies."""
        if self._session_key is not None:
            return self._session_key
        with self._lock:
            con = self._connect()
            con.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('session_key', ?)", (secrets.token_bytes(32),))
            self._session_key = bytes(con.execute("SELECT value FROM meta WHERE key='session_key'").fetchone()[0])
            return self._session_key


class Authenticator:
    """Bearer secret → Principal: the API token (every role), or a scoped token of the home's store."""

    def __init__(self, paths: Paths | None = None, api_token: str | None = None) -> None:
        s = Settings()
        self.api_token = (api_token if api_token is not None else s.secret("api_token")).encode()
        self.api_principal = api_token_principal(self.api_token) if self.api_token else None
        self.store = TokenStore(db_path(paths or Paths.from_env()))

    def __call__(self, secret: bytes | str) -> Principal | None:
        raw = secret.encode() if isinstance(secret, str) else secret
        raw = raw.strip()
        if not raw:
            return None
        if self.api_token and hmac.compare_digest(raw, self.api_token):
            return self.api_principal
        try:
            return self.store.lookup(raw.decode("ascii"))
        except UnicodeDecodeError:
            return None

    def by_id(self, principal_id: str) -> Principal | None:
        """The principal behind a session's id, if it may still act (token not revoked, API token unchanged)."""
        if self.api_principal is not None and hmac.compare_digest(principal_id.encode(), self.api_principal.id.encode()):
            return self.api_principal
        return self.store.by_id(principal_id)

    def configured(self) -> bool:
        return bool(self.api_token) or self.store.active()

    def session_key(self) -> bytes:
        """Signs the advisor's cookies: changing the API token signs every session out."""
        return hmac.new(self.store.session_key(), b"autopdm-ui-cookie-key\0" + self.api_token, hashlib.sha256).digest()
