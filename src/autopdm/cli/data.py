"""Commands for derived tables: trips (features and simulate register elsewhere)."""

from __future__ import annotations

import pandas as pd
import typer

from autopdm import store
from autopdm.cli.common import console, paths
from autopdm.pipeline import trips


def register(app: typer.Typer) -> None:
    @app.command("trips")
    def trips_cmd() -> None:
        """Cut recorded samples into trips and upsert them into the trips table."""
        p = paths()
        samples = store.read_samples(p)
        if samples.empty:
            console.print("no samples under", p.samples)
            raise typer.Exit(0)
        with console.status(f"summarising {len(samples):,} samples"):
            new = trips.summarise(samples)
        old = store.read_table("trips", p)
        # recorded vehicles replace their own rows; others (e.g. simulated) are kept
        keep = old[~old["vehicle_id"].isin(samples["vehicle_id"].unique())]
        out = pd.concat([keep, new], ignore_index=True) if len(keep) else new
        store.write_table(out, "trips", p)
        console.print(f"{len(new):,} trips from {samples['vehicle_id'].nunique()} vehicle(s); trips table now {len(out):,} rows")
