"""`autopdm simulate`: a synthetic fleet built on real drive cycles."""

from __future__ import annotations

import pandas as pd
import typer

from autopdm.cli.common import clear_errors, console, paths, progress
from autopdm.sim.fleet import simulate_to_store


def register(app: typer.Typer) -> None:
    @app.command("simulate")
    def simulate_cmd(
        vehicles: int = typer.Option(200, "--vehicles", min=1, help="number of vehicles"),
        days: int = typer.Option(365, "--days", min=1, help="days to simulate"),
        seed: int = typer.Option(0, "--seed", help="random seed (same seed → identical output)"),
        climate: str = typer.Option("mixed", "--climate", help="temperate | hot | cold | mixed"),
        aggressiveness: float = typer.Option(1.0, "--aggressiveness", min=0.05, help="multiplies driving harshness"),
        raw_vehicles: int = typer.Option(0, "--raw-vehicles", min=0, help="render 1 Hz samples for the first K vehicles"),
        start: str = typer.Option("2025-01-01", "--start", help="first simulated day (YYYY-MM-DD)"),
    ) -> None:
        """Simulate a fleet: vehicles, trips, service events, DTCs (and raw samples for K vehicles)."""
        p = paths()
        with clear_errors(ValueError), progress() as bar:
            task = bar.add_task("simulating", total=1)

            def on_progress(stage: str, done: int, total: int) -> None:
                bar.update(task, description=stage, completed=done, total=total)

            try:
                pd.Timestamp(start)
            except ValueError:
                raise ValueError(f"--start: not a date: {start!r}") from None
            # trips are written a block of vehicles at a time as they are made (bounded memory)
            fleet, trips = simulate_to_store(p, vehicles, days, seed, climate=climate, aggressiveness=aggressiveness,
                                             raw_vehicles=raw_vehicles, start=start, progress=on_progress)
            bar.update(task, description="written")

        se = fleet.service_events
        by = se.groupby(["component", "action"]).size().unstack(fill_value=0)
        console.print(f"[bold]{len(fleet.vehicles):,}[/bold] vehicles, [bold]{trips.rows:,}[/bold] trips "
                      f"({trips.km:,.0f} km), {len(fleet.dtc_events):,} DTC events, "
                      f"{len(fleet.samples):,} raw samples → {p.home}")
        for comp in ("brake", "tire", "battery", "other"):
            if comp in by.index:
                row = by.loc[comp]
                console.print(f"  service {comp:8s} " + ", ".join(f"{a} {int(row[a])}" for a in row.index if row[a]))
        needs = fleet.true_needs.groupby("component").size()
        console.print("  true needs (hidden, evaluation only): "
                      + ", ".join(f"{c} {int(n)}" for c, n in needs.items()) if len(needs) else "  no true needs in the horizon")
