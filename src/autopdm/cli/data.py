"""Commands for the store and derived tables: trips, store compact (features and simulate register elsewhere)."""

from __future__ import annotations

import pandas as pd
import typer

from autopdm import compact, store
from autopdm.cli.common import clear_errors, console, paths
from autopdm.pipeline import trips


store_app = typer.Typer(help="The telemetry store.", no_args_is_help=True)


@store_app.command("compact")
def compact_cmd(
    timeout: float = typer.Option(None, "--timeout", min=0, help="seconds to wait for another compaction "
                                  "(default AUTOPDM_LOCK_TIMEOUT_S)"),
) -> None:
    """Merge each vehicle's small telemetry files into one (reads are unchanged; safe to kill at any point)."""
    p = paths()
    with clear_errors(compact.CompactionBusy), console.status("compacting the telemetry store"):
        res = compact.compact(p, timeout=timeout)
    console.print(f"{res.files_before:,} files of {res.vehicles:,} vehicle directories merged into one each "
                  f"({res.rows:,} rows; {res.files_removed:,} files removed; {res.skipped:,} already compact)")


def register(app: typer.Typer) -> None:
    app.add_typer(store_app, name="store")
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
