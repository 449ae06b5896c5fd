"""`autopdm ingest csv|obd|can` and `autopdm upload`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .common import clear_errors, console, paths, progress

ingest_app = typer.Typer(help="Record or import telemetry into canonical samples.", no_args_is_help=True)


@ingest_app.command("csv")
def ingest_csv(
    files: List[Path] = typer.Argument(..., exists=True, dir_okay=False, help="logger CSV files"),
    format: str = typer.Option(..., "--format", help="carobd | torque"),
    vehicle_id: Optional[str] = typer.Option(None, "--vehicle-id", help="VIN to record under (17 characters)"),
    start: Optional[str] = typer.Option(None, "--start", help="UTC time of the first row, for logs without timestamps"),
) -> None:
    """Import third-party CSV logs."""
    from ..ingest import csvlogs

    p = paths()
    with clear_errors(csvlogs.CsvFormatError, ValueError), progress() as bar:
        task = bar.add_task(f"importing {format}", total=len(files))
        results = csvlogs.import_files(files, format, vehicle_id, start, p, progress=lambda _: bar.advance(task))
    for r in results:
        extra = f", unknown columns: {', '.join(r.unknown_columns)}" if r.unknown_columns else ""
        console.print(f"{r.path.name}: {r.written} samples, {r.quarantined} quarantined{extra}")


def register(app: typer.Typer) -> None:
    app.add_typer(ingest_app, name="ingest")
