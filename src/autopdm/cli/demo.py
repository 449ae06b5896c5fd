"""`autopdm demo`: the main job end to end on the embedded default."""

from __future__ import annotations

import typer

from autopdm import demo
from autopdm.cli.common import console
from autopdm.config import Paths


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_cmd(
        vehicles: int = typer.Option(400, help="fleet size"),
        days: int = typer.Option(730, help="days of history"),
        seed: int = typer.Option(7),
    ) -> None:
        """Simulate a fleet, train, serve, score and deliver work orders to a local CRM receiver."""
        paths = demo.fresh_home(Paths.from_env())
        console.print(f"demo home: {paths.home} (started empty)")
        demo.run(demo.DemoConfig(vehicles=vehicles, days=days, seed=seed), paths, console)
