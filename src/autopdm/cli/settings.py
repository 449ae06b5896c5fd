"""`autopdm config`: the effective settings, where each came from, secrets masked."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from autopdm.cli.common import console
from autopdm.config import effective


def register(app: typer.Typer) -> None:
    @app.command("config")
    def config_cmd(as_json: bool = typer.Option(False, "--json", help="print as JSON on stdout")) -> None:
        """Every AUTOPDM_* setting: its effective value (secrets masked), its source and what it does."""
        rows = effective()
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        t = Table("variable", "value", "source", "what it does", title="autopdm settings")
        for r in rows:
            t.add_row(r["variable"], r["value"] or "[dim]unset[/dim]", r["source"], r["description"])
        console.print(t)
