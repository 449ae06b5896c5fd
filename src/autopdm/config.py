"""Where runtime state lives. Everything is under $AUTOPDM_HOME (default ./var)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    home: Path

    @classmethod
    def from_env(cls, home: str | os.PathLike | None = None) -> "Paths":
        return cls(Path(home or os.environ.get("AUTOPDM_HOME", "var")).resolve())

    @property
    def telemetry(self) -> Path:
        return self.home / "telemetry"

    @property
    def samples(self) -> Path:
        return self.telemetry / "samples"

    @property
    def dtc_events(self) -> Path:
        return self.telemetry / "dtc_events"

    @property
    def quarantine(self) -> Path:
        return self.telemetry / "quarantine"

    @property
    def spool(self) -> Path:
        return self.home / "spool"

    @property
    def features_dir(self) -> Path:
        return self.home / "features"

    def table(self, name: str) -> Path:
        """Single-file tables: trips, vehicles, service_events, features, true_needs."""
        return self.features_dir / f"{name}.parquet"

    @property
    def mlflow_db(self) -> Path:
        return self.home / "mlflow.db"

    @property
    def tracking_uri(self) -> str:
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.mlflow_db}"

    @property
    def artifacts(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def outbox(self) -> Path:
        return self.home / "outbox.sqlite"

    @property
    def reports(self) -> Path:
        return self.home / "reports"

    def ensure(self) -> "Paths":
        for p in (self.telemetry, self.features_dir, self.artifacts, self.reports, self.spool):
            p.mkdir(parents=True, exist_ok=True)
        return self


def quiet_telemetry() -> None:
    """No network at run time: silence the usage trackers of BentoML, MLflow and Evidently."""
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")
