"""Settings and paths: the one place that reads the environment.

Every setting is an ``AUTOPDM_*`` environment variable (or a line of ``.env`` in the working
directory), typed and defaulted here; ``autopdm config`` prints the effective values, where each
came from, and masks secrets. Runtime state lives under ``home`` (default ``./var``).

Settings are read when asked for (``Settings()``), not cached at import: a test or a command that
changes the environment sees its own values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from dotenv import dotenv_values  # installed with pydantic-settings
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "AUTOPDM_"
RECORD_TABLES = ("vehicles", "service_events", "inspections", "outcomes")


class SettingsError(ValueError):
    """A setting that cannot be used; the message names the variable and the value."""


class Settings(BaseSettings):
    """All of autopdm's settings. Field descriptions are the documentation (README table, `autopdm config`)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore")

    home: Path = Field(Path("var"), description="where all runtime state lives (telemetry, tables, MLflow, outbox, reports)")
    api_token: Optional[SecretStr] = Field(None, description="bearer token with every role (the embedded default); "
                                                             "without one the protected endpoints refuse everything")
    crm_webhook_url: Optional[str] = Field(None, description="where work orders are delivered (http(s):// webhook; "
                                                             "file:// appends them to a JSON Lines file)")
    crm_webhook_secret: Optional[SecretStr] = Field(None, description="shared secret of the Standard Webhooks signature: a passphrase (used as the key as-is) or whsec_<base64>")
    outbox_backoff_base_s: float = Field(1.0, gt=0, description="first retry delay of a failed delivery (doubles per attempt)")
    outbox_backoff_cap_s: float = Field(600.0, gt=0, description="longest delay between two delivery attempts")
    # the operating point of each component's model (docs/operating-point.md): alert when
    # risk × cost_missed_need ≥ cost_alert, at most alert_budget × the need prevalence
    cost_missed_need: float = Field(500.0, gt=0, description="cost of a need that got no early warning: a breakdown or "
                                    "tow, worn-through pads that take the discs, a lost customer (any currency; only "
                                    "the ratio to AUTOPDM_COST_ALERT matters)")
    cost_alert: float = Field(40.0, gt=0, description="cost of one alert: the call and, about every other time, a visit "
                              "that finds nothing to do yet (same currency as AUTOPDM_COST_MISSED_NEED)")
    alert_budget: float = Field(1.5, gt=0, description="most alerts per component, as a multiple of the need prevalence "
                                "(a cap: the cost model may alert less)")
    lgb_threads: Optional[int] = Field(None, ge=1, description="LightGBM threads (default: all cores but one)")
    lgb_max_rounds: Optional[int] = Field(None, ge=1, description="most boosting rounds per model (default 2000; early "
                                                                  "stopping usually ends sooner); small values make quick trial runs")
    lock_timeout_s: float = Field(600.0, ge=0, description="how long training or a feature build waits for another one "
                                                           "on the same home before giving up (0: refuse at once)")
    compact_after_files: int = Field(2000, ge=0, description="an import that wrote at least this many telemetry files "
                                     "compacts the vehicles it wrote to (`autopdm store compact`; 0: never)")
    max_body_bytes: int = Field(16 << 20, ge=1024, description="largest request body the service accepts")
    assess_history_days: int = Field(400, ge=0, description="days of feature history /assess keeps in memory (0 = all)")
    assess_cache: int = Field(100_000, ge=0, description="scored vehicle-days /assess keeps (0 disables the cache)")
    service_workers: int = Field(1, ge=1, description="BentoML worker processes")
    # -- serving: hot reload and past days (issue 13) --
    reload_poll_s: float = Field(10.0, ge=0, description="seconds between the service's checks for a moved champion "
                                                         "alias or a rebuilt features table (0: only at start and on POST /reload)")
    assess_past_max_vehicles: int = Field(100, ge=1, description="vehicles one /assess request may ask about at a day "
                                                                 "before their latest features (each costs a model pass)")
    access_log: bool = Field(False, description="log every request (costs ~0.7 ms a call)")
    tracing: bool = Field(False, description="OpenTelemetry spans for /assess and /predict too")
    receiver_log: bool = Field(False, description="the reference CRM receiver logs every request")
    schedules: Optional[Path] = Field(None, description="maintenance schedules the service reminders follow (YAML; "
                                  "default: the shipped autopdm/data/schedules.yaml)")
    cycles: Optional[Path] = Field(None, description="drive-cycle library for the simulator (default: the shipped one)")
    cache: bool = Field(True, description="cache the simulator's drive-cycle variants under ~/.cache/autopdm")
    mlflow_tracking_uri: Optional[str] = Field(None, validation_alias="MLFLOW_TRACKING_URI",
                                               description="MLflow tracking store (default sqlite:///<home>/mlflow.db)")

    def __init__(self, **values) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            problems = []
            for e in exc.errors():
                name = str(e["loc"][0]) if e["loc"] else "?"
                field = type(self).model_fields.get(name)
                var = field.validation_alias if field is not None and isinstance(field.validation_alias, str) \
                    else ENV_PREFIX + name.upper()
                problems.append(f"{var}={e.get('input')!r}: {e['msg']}")
            raise SettingsError("bad setting: " + "; ".join(problems)) from None

    def secret(self, name: str) -> str:
        """A secret's value ('' when unset)."""
        v = getattr(self, name)
        return v.get_secret_value() if v is not None else ""


def effective(settings: Settings | None = None) -> list[dict]:
    """Each setting: name, value (secrets masked), where it came from, description."""
    s = settings or Settings()
    dotenv = {k.upper(): v for k, v in dotenv_values(".env").items()} if Path(".env").exists() else {}
    out = []
    for name, field in Settings.model_fields.items():
        var = field.validation_alias if isinstance(field.validation_alias, str) else ENV_PREFIX + name.upper()
        if var in os.environ:
            source = "environment"
        elif var in dotenv:
            source = ".env"
        else:
            source = "default"
        value = getattr(s, name)
        if isinstance(value, SecretStr):
            value = "********"
        out.append({"variable": var, "value": "" if value is None else str(value), "source": source,
                    "description": field.description or ""})
    return out


@dataclass(frozen=True)
class Paths:
    home: Path
    tracking_override: Optional[str] = None

    @classmethod
    def from_env(cls, home: str | os.PathLike | None = None) -> "Paths":
        s = Settings()
        return cls(Path(home or s.home).resolve(), s.mlflow_tracking_uri)

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

    @property
    def records(self) -> Path:
        """The workshop's records as the CRM handed them over (vehicles, service events, inspections, outcomes)."""
        return self.home / "records"

    def table(self, name: str) -> Path:
        """Single-file tables: the records under records/, derived tables (trips, features, needs, ...) under features/."""
        if name in RECORD_TABLES:
            return self.records / f"{name}.parquet"
        return self.features_dir / f"{name}.parquet"

    @property
    def mlflow_db(self) -> Path:
        return self.home / "mlflow.db"

    @property
    def tracking_uri(self) -> str:
        return self.tracking_override or f"sqlite:///{self.mlflow_db}"

    @property
    def artifacts(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def outbox(self) -> Path:
        return self.home / "outbox.sqlite"

    @property
    def reports(self) -> Path:
        return self.home / "reports"

    @property
    def access(self) -> Path:
        """Who may call the service (tokens.sqlite) and who did (audit.sqlite)."""
        return self.home / "access"

    def ensure(self) -> "Paths":
        for p in (self.telemetry, self.records, self.features_dir, self.artifacts, self.reports, self.spool):
            p.mkdir(parents=True, exist_ok=True)
        return self


def quiet_telemetry() -> None:
    """No network at run time: silence the usage trackers of BentoML, MLflow and Evidently."""
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")
