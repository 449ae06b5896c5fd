"""`autopdm backup --to DIR`, `autopdm restore --from DIR [--home H] [--force]`, `autopdm forget --vehicle VIN`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from autopdm.backup import BackupError, backup, restore
from autopdm.cli.common import clear_errors, console, paths
from autopdm.config import Paths
from autopdm.forget import ForgetError, forget
from autopdm.schemas import is_vin


def register(app: typer.Typer) -> None:
    @app.command("backup")
    def backup_cmd(to: Path = typer.Option(..., "--to", help="a new (or empty) directory, ideally on another disk")) -> None:
        """A consistent snapshot of the home while the service runs: SQLite online backups of the outbox,
        ledgers, tokens, audit trail and MLflow registry, then the Parquet store, records, reports and
        model artifacts, with a manifest of sizes and hashes."""
        with clear_errors(BackupError, code=1):
            s = backup(paths().home, to)
        typer.echo(f"backed up {s.databases} databases and {s.files} files ({s.bytes / 2**20:.1f} MiB) "
                   f"to {s.where} in {s.seconds:.1f} s")

    @app.command("restore")
    def restore_cmd(
        frm: Path = typer.Option(..., "--from", help="a directory made by `autopdm backup`"),
        home: Optional[Path] = typer.Option(None, "--home", help="the home to bring back (default AUTOPDM_HOME)"),
        force: bool = typer.Option(False, "--force", help="restore over a non-empty home (moved aside first)"),
    ) -> None:
        """Bring a home back from a backup (stop the service first). The backup's hashes are checked
        before anything is written; a non-empty home is refused unless --force."""
        target = home if home is not None else Paths.from_env().home
        with clear_errors(BackupError, code=1):
            s = restore(frm, target, force=force)
        typer.echo(f"restored {s.databases} databases and {s.files} files into {s.where} in {s.seconds:.1f} s")
        console.print("start the service on it with AUTOPDM_HOME=" + str(s.where))

    @app.command("forget")
    def forget_cmd(vehicle: str = typer.Option(..., "--vehicle", help="the car's VIN")) -> None:
        """Remove a car from the home on its owner's request: records, features, telemetry, outbox,
        ledgers, reports and the spool. The audit trail keeps who looked at it and that it was forgotten."""
        with clear_errors(ForgetError, code=2 if not is_vin(vehicle) else 1):  # a bad VIN is bad input
            res = forget(paths(), vehicle)
        typer.echo(f"forgot {vehicle}: {res.rows} rows in {len(res.changed)} files, "
                   f"{len(res.removed)} telemetry partitions removed")
        for f in res.changed + res.removed:
            typer.echo(f"  {f}")
