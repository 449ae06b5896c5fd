"""autopdm HTTP API (BentoML 1.4): `bentoml serve autopdm.serving.service:Autopdm` or `autopdm serve`.

Loads the `champion` models by name and delegates: the snapshot it answers from and its hot reload
(`serving.models`), /assess (`serving.assess`), /predict rows (`serving.requests`), /telemetry
(`serving.telemetry`), /records (`serving.records`), auth, roles and limits (`serving.auth`), dealer
scopes (`serving.scope`), the audit trail (`serving.audit`), per-request isolation (`serving.batching`),
the service advisor's pages at /ui (`serving.ui`).
"""

from __future__ import annotations

import anyio
import bentoml
from starlette.responses import JSONResponse

from autopdm.config import Paths, Settings, quiet_telemetry
from autopdm.serving import assess as assessing
from autopdm.serving import metrics_dir, telemetry, ui
from autopdm.serving import records as records_in
from autopdm.serving.audit import AuditLog
from autopdm.serving.auth import AuthLimitMiddleware, caller
from autopdm.serving.batching import MicroBatcher
from autopdm.serving.ledger import TelemetryLedger
from autopdm.serving.models import ModelState
from autopdm.serving.records import RecordRows
from autopdm.serving.requests import BatchId, FeatureRows, IsoDate, Records, RequestError, VehicleIds, rows_matrix
from autopdm.serving.scope import DealerMap
from autopdm.serving.snapshot import predict_many

quiet_telemetry()
metrics_dir.use_own_dir()
SETTINGS = Settings()  # the decorator below needs them when the module is imported


@bentoml.service(
    name="autopdm",
    workers=SETTINGS.service_workers,
    traffic={"timeout": 60, "concurrency": 256},
    # the per-request access log costs ~0.7 ms a call; /metrics has per-endpoint counts and latencies
    logging={"access": {"enabled": SETTINGS.access_log}},
    # spans cost ~0.4 ms a request and nothing exports them unless tracing is configured
    tracing={"excluded_urls": [] if SETTINGS.tracing else ["/assess", "/predict"]},
)
class Autopdm:
    def __init__(self) -> None:
        self.settings = Settings()
        self.paths = Paths.from_env().ensure()
        self.models = ModelState(self.paths, self.settings)
        self.ledger = TelemetryLedger(self.paths.telemetry / "batches.sqlite")
        self.records_ledger = records_in.RecordsLedger(self.paths.records / "batches.sqlite")
        self.dealers = DealerMap(self.paths)
        self.audit = AuditLog(self.paths)
        self._assess = MicroBatcher(assessing.answer_many)
        self._predict = MicroBatcher(predict_many, max_batch=64)

    def __is_ready__(self) -> bool:
        return self.models.ready()

    @bentoml.api
    async def assess(self, vehicle_ids: VehicleIds, as_of: IsoDate | None = None) -> dict:
        """Risk, band, recommended window, action and evidence per vehicle and component."""
        who = caller()
        hidden = self.dealers.hidden(who, vehicle_ids)  # another dealer's cars: answered as unknown cars
        try:
            plan = assessing.plan(self.models.current(), [v for v in vehicle_ids if v not in hidden], as_of,
                                  self.settings.assess_past_max_vehicles)
            res = assessing.answer(plan) if plan.complete or not plan.vehicles else await self._assess.submit(plan)
        except RequestError as exc:
            self.audit.record(who, "/assess", [(v, False) for v in dict.fromkeys(vehicle_ids)], f"refused: {exc.field}")
            return exc.response()
        if hidden:
            unknown = set(res["unknown"]) | hidden
            res["unknown"] = [v for v in dict.fromkeys(vehicle_ids) if v in unknown]
        unknown = set(res["unknown"])
        self.audit.record(who, "/assess", [(v, v not in unknown) for v in dict.fromkeys(vehicle_ids)], "answered")
        return JSONResponse(res)  # pre-serialised: BentoML would build a serialiser for `dict` on every call

    @bentoml.api
    async def predict(self, rows: FeatureRows) -> list[dict]:
        """Feature rows → {component: calibrated probability of need within 15 days} per row.
        A row is an object {feature: value} (extra keys ignored, missing → null), or — compact and
        faster — an array of values in the order of /model_info `feature_order`. Concurrent
        requests are scored together."""
        snap = self.models.current()
        try:
            M = rows_matrix(rows, snap.feature_order) if len(rows) <= 64 else \
                await anyio.to_thread.run_sync(rows_matrix, rows, snap.feature_order)
        except RequestError as exc:
            return exc.response()
        return JSONResponse(await self._predict.submit((snap, M)))

    @bentoml.api
    def model_info(self) -> dict:
        """The champion models answering now: name, version, threshold, features; `feature_order`,
        the column order of compact /predict rows; the features table's latest day."""
        return self.models.current().info()

    @bentoml.api
    def reload(self) -> dict:
        """Check the registry's `champion` aliases and the features table now, and answer from new
        ones if they moved (the service also checks every AUTOPDM_RELOAD_POLL_S seconds)."""
        res = self.models.refresh()
        return JSONResponse(res, status_code=503 if res["error"] else 200)

    @bentoml.api
    def telemetry(self, batch_id: BatchId, samples: Records = [], dtc_events: Records = []) -> dict:  # noqa: B006
        """Canonical samples and DTC events from a workshop uploader; idempotent per batch_id."""
        who = caller()
        vins = list(dict.fromkeys(str(r["vehicle_id"]) for rows in (samples, dtc_events) for r in rows
                                  if r.get("vehicle_id") is not None))
        try:
            if who is not None and who.dealer is not None:  # a dealer's uploader sends its own cars only
                telemetry.check_scope(self.dealers.hidden(who, vins), samples, dtc_events)
            res = telemetry.ingest(self.paths, self.ledger, batch_id, samples, dtc_events)
        except RequestError as exc:
            self.audit.record(who, "/telemetry", [(v, False) for v in vins], f"refused: {exc.field}")
            return exc.response()
        self.audit.record(who, "/telemetry", [(v, True) for v in vins], "stored")
        return res

    @bentoml.api
    def records(self, batch_id: BatchId, vehicles: RecordRows = [], service_events: RecordRows = [],  # noqa: B006
                inspections: RecordRows = [], outcomes: RecordRows = []) -> dict:  # noqa: B006
        """The CRM's vehicles, service events, inspections and outcomes; idempotent per batch_id.
        A dealer's token writes its own cars only: a car of another dealer counts as an unknown car."""
        who = caller()
        tables = {"vehicles": vehicles, "service_events": service_events, "inspections": inspections, "outcomes": outcomes}
        vins = list(dict.fromkeys(str(r["vehicle_id"]) for rows in tables.values() for r in rows
                                  if r.get("vehicle_id") is not None))
        try:
            res = records_in.ingest(self.paths, self.records_ledger, batch_id, tables,
                                    dealer=who.dealer if who is not None else None)
        except RequestError as exc:
            self.audit.record(who, "/records", [(v, False) for v in vins], f"refused: {exc.field}")
            return exc.response()
        hidden = self.dealers.hidden(who, vins)
        self.audit.record(who, "/records", [(v, v not in hidden) for v in vins], "stored")
        return res


Autopdm.add_asgi_middleware(AuthLimitMiddleware)
# the advisor's pages read the running service instance (its snapshot and home) and sign in with a cookie
Autopdm.mount_asgi_app(ui.create_app(bentoml.get_current_service), path=ui.MOUNT)
