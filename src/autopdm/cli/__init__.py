"""`autopdm` command line. Each area registers its commands from its own module.

Heavy libraries (mlflow, evidently, bentoml, lightgbm) are imported inside the functions that need
them, never at module level, so `autopdm --help` and the ingest commands start fast. A full or
read-only home ends any command with one line naming the path (`ErrorHandlingGroup`).
"""

from __future__ import annotations

import typer

from autopdm.cli import access, backup, data, demo, ingest, models, monitor, service, settings, simulate
from autopdm.cli.common import ErrorHandlingGroup
from autopdm.config import quiet_telemetry

app = typer.Typer(help="autopdm: predictive maintenance for car workshops.", no_args_is_help=True, add_completion=False,
                  cls=ErrorHandlingGroup)

quiet_telemetry()

for _area in (data, ingest, simulate, models, service, monitor, demo, settings, access, backup):
    _area.register(app)


def main() -> None:  # pragma: no cover
    app()
