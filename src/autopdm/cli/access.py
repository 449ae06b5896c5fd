"""Who may call the service and who did: `autopdm token create|list|revoke`, `autopdm audit`."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Optional

import typer

from autopdm.cli.common import clear_errors, fail, paths
from autopdm.serving import audit
from autopdm.serving.tokens import ROLES, TokenError, TokenStore, db_path


def _when(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


def register(app: typer.Typer) -> None:
    token = typer.Typer(help="Scoped API tokens: a role (crm, advisor, data-science, operator) and optionally a dealer.",
                        no_args_is_help=True)
    app.add_typer(token, name="token")

    @token.command("create")
    def create_cmd(
        role: str = typer.Option(..., "--role", help=f"one of {', '.join(ROLES)}"),
        dealer: Optional[str] = typer.Option(None, "--dealer", help="only the cars whose dealer_id is this"),
        name: Optional[str] = typer.Option(None, "--name", help="what the token is for (shown by `token list`)"),
    ) -> None:
        """A new token. Its secret is printed once and stored only as a hash: keep it now."""
        with clear_errors(TokenError):
            tid, secret = TokenStore(db_path(paths())).create(role, dealer, name)
        scope = f"dealer {dealer}" if dealer else "every dealer"
        typer.echo(f"token {tid}: role {role}, {scope}; the secret below is shown once "
                   "(send it as Authorization: Bearer <secret>)")
        typer.echo(secret)  # alone on the last line, for scripts

    @token.command("list")
    def list_cmd(as_json: bool = typer.Option(False, "--json", help="print as JSON")) -> None:
        """Every token: id, role, dealer, name, created and revoked (never the secret)."""
        rows = TokenStore(db_path(paths())).list()
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        if not rows:
            typer.echo("no tokens (AUTOPDM_API_TOKEN, if set, has every role)")
        for r in rows:
            state = f"revoked {_when(r['revoked_at'])}" if r["revoked_at"] else "active"
            typer.echo(f"{r['id']}  {r['role']:<12}  {r['dealer'] or '(every dealer)':<16}  {state:<34}  "
                       f"created {_when(r['created_at'])}  {r['name'] or ''}")

    @token.command("revoke")
    def revoke_cmd(token_id: str = typer.Argument(..., help="the token's id (tok_...)")) -> None:
        """Revoke a token: refused from its next request on, its advisor sessions end."""
        if not TokenStore(db_path(paths())).revoke(token_id):
            raise fail(f"TOKEN_ID: no token {token_id!r} (see `autopdm token list`)", code=1)
        typer.echo(f"revoked {token_id}")

    @app.command("audit")
    def audit_cmd(
        vehicle: str = typer.Option(..., "--vehicle", help="the car's VIN"),
        since: Optional[str] = typer.Option(None, "--since", help="from this day (YYYY-MM-DD, UTC) or time on"),
        as_json: bool = typer.Option(False, "--json", help="print as JSON Lines"),
    ) -> None:
        """Who read or changed this car's data: when, token, role, dealer scope, endpoint, outcome."""
        start = None
        if since is not None:
            try:
                start = datetime.fromisoformat(since)
            except ValueError:
                raise fail(f"--since: not a date: {since!r}") from None
            start = start if start.tzinfo else start.replace(tzinfo=timezone.utc)
        rows = audit.query(paths(), vehicle, start)
        for r in rows:
            if as_json:
                typer.echo(json.dumps(r))
            else:
                typer.echo(f"{r['when']}  {r['token_id']:<28}  {r['role']:<12}  {r['dealer'] or '-':<8}  "
                           f"{r['endpoint']:<22}  {'shown' if r['shown'] else 'not shown'}  {r['outcome']}")
        if not rows and not as_json:
            typer.echo(f"nobody looked at {vehicle}" + (f" since {since}" if since else ""))
