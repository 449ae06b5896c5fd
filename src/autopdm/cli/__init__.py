"""`autopdm` command line. Each area registers its commands from its own module.

Heavy libraries (mlflow, evidently, bentoml) are imported inside commands, never here,
so `autopdm --help` and the ingest commands start fast.
"""

from __future__ import annotations

import typer

from ..config import quiet_telemetry

app = typer.Typer(help="autopdm: predictive maintenance for car workshops.", no_args_is_help=True, add_completion=False)

quiet_telemetry()

from . import data as _data  # noqa: E402
from . import ingest as _ingest  # noqa: E402

_data.register(app)
_ingest.register(app)

for _name in ("simulate", "models", "service", "monitor", "demo"):
    try:
        _mod = __import__(f"autopdm.cli.{_name}", fromlist=["register"])
    except ModuleNotFoundError as exc:  # an area not built yet
        if exc.name != f"autopdm.cli.{_name}":
            raise
        continue
    _mod.register(app)


def main() -> None:  # pragma: no cover
    app()
