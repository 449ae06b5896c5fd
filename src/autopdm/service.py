"""autopdm HTTP API (BentoML 1.4): `bentoml serve autopdm.service:Autopdm` or `autopdm serve`.

Loads the three `champion` models by name at start-up and delegates: risks and work-order fields
come from `recommend`, auth / limits / feature lookup / telemetry idempotency from `serving`.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import date

import bentoml
import pandas as pd
from bentoml.exceptions import BadInput, ServiceUnavailable
from starlette.responses import JSONResponse

from autopdm import recommend, store
from autopdm.config import Paths, quiet_telemetry
from autopdm.schemas import SchemaError
from autopdm.serving import (AuthLimitMiddleware, BatchId, FeatureIndex, FeatureRows, IsoDate, LRU, MicroBatcher, Records,
                             TelemetryLedger, VehicleIds, bad_input, records_frame, set_model_features)

quiet_telemetry()
log = logging.getLogger("autopdm.service")
REQUIRED = {"samples": ("vehicle_id", "ts", "source"), "dtc_events": ("vehicle_id", "ts", "code")}


@bentoml.service(
    name="autopdm",
    workers=int(os.environ.get("AUTOPDM_SERVICE_WORKERS", "1")),
    traffic={"timeout": 60, "concurrency": 256},
    logging={"access": {"enabled": os.environ.get("AUTOPDM_ACCESS_LOG", "1") != "0"}},
    # spans cost ~0.4 ms a request and nothing exports them unless tracing is configured
    tracing={"excluded_urls": [] if os.environ.get("AUTOPDM_TRACING") == "1" else ["/assess", "/predict"]},
)
class Autopdm:
    def __init__(self) -> None:
        self.paths = Paths.from_env().ensure()
        self.champions: dict = {}
        self.features: FeatureIndex | None = None
        self.ledger = TelemetryLedger(self.paths.telemetry / "batches.sqlite")
        self._last_try = 0.0
        self._assess_batcher = MicroBatcher(self._assess_many)
        self._cache = LRU(int(os.environ.get("AUTOPDM_ASSESS_CACHE", "100000")))
        self._cache_gen = None
        self._load()

    def _load(self) -> bool:
        """Champion models from the MLflow registry (mlflow is imported here, at start-up only)."""
        self._last_try = time.monotonic()
        try:
            from autopdm.champion import load_champions

            champions = load_champions(self.paths)
            if len(champions) != len(recommend.COMPONENTS):
                raise RuntimeError(f"champions for {sorted(champions)} only")
            cols = sorted({f for c in champions.values() for f in c.feature_names})
            self.features = FeatureIndex(self.paths, cols)
            set_model_features(cols)
            self.champions = champions
            log.info("loaded %s", {c: f"{m.name} v{m.version}" for c, m in champions.items()})
            return True
        except Exception as exc:  # not ready until the models exist; /readyz says so
            log.warning("champion models not loaded yet: %s", exc)
            return False

    def __is_ready__(self) -> bool:
        if not self.champions and time.monotonic() - self._last_try > 10:
            self._load()
        return len(self.champions) == len(recommend.COMPONENTS)

    def _require_models(self) -> None:
        if not self.__is_ready__():
            raise ServiceUnavailable("champion models are not loaded yet (see /readyz)")

    @bentoml.api
    async def assess(self, vehicle_ids: VehicleIds, as_of: IsoDate | None = None) -> dict:
        """Risk, band, recommended window, action and evidence per vehicle and component."""
        self._require_models()
        # pre-serialised: skips BentoML building a pydantic serialiser for `dict` on every call
        return JSONResponse(await self._assess_batcher.submit((vehicle_ids, as_of)))

    def _assess_many(self, requests: list[tuple[list[str], str | None]]) -> list[dict]:
        """One model pass for all concurrent /assess requests (serving.MicroBatcher); rows already
        scored (same vehicle and feature day, same models) come from the cache."""
        fx = self.features
        fx.refresh()
        if fx.generation != self._cache_gen:
            self._cache.clear()
            self._cache_gen = fx.generation
        results, plans, todo, got = [], [], {}, {}
        for vehicle_ids, as_of in requests:
            day = date.fromisoformat(as_of) if as_of else (fx.max_date or date.today())
            rows, unknown, no_data = fx.rows(vehicle_ids, day)
            keys = list(zip(rows["vehicle_id"].astype(str), rows["date"]))
            for k, pos in zip(keys, rows.index):
                if k not in got:
                    hit = self._cache.get(k)
                    if hit is None:
                        todo.setdefault(k, pos)
                    else:
                        got[k] = hit
            plans.append((day, keys))
            results.append({"as_of": day.isoformat(), "vehicles": [], "unknown": unknown, "no_data": no_data})
        if todo:
            scored = recommend.score_rows(fx.frame.loc[list(todo.values())], self.champions)
            got.update(zip(todo, scored))
            self._cache.put_many(zip(todo, scored))
        for res, (day, keys) in zip(results, plans):
            for vin, d in keys:
                res["vehicles"].append({"vehicle_id": vin, "feature_date": d.date().isoformat(), **fx.contact(vin),
                                        "components": recommend.finalize(vin, got[(vin, d)], day)})
        return results

    @bentoml.api(batchable=True, max_batch_size=20_000, max_latency_ms=10_000)
    def predict(self, rows: FeatureRows) -> list[dict]:
        """Feature rows → {component: calibrated probability of need within 15 days} per row."""
        self._require_models()
        X = pd.DataFrame.from_records(rows)
        risks = {c: recommend.model_outputs(m, X, None)[0] for c, m in self.champions.items()}
        return [{c: round(float(r[i]), 6) for c, r in risks.items()} for i in range(len(X))]

    @bentoml.api
    def telemetry(self, batch_id: BatchId, samples: Records = [], dtc_events: Records = []) -> dict:  # noqa: B006
        """Canonical samples and DTC events from a workshop uploader; idempotent per batch_id."""

        frames = {t: records_frame(r) for t, r in (("samples", samples), ("dtc_events", dtc_events)) if r}
        for table, df in frames.items():
            missing = [c for c in REQUIRED[table] if c not in df.columns]
            if missing:
                return bad_input(table, f"missing required field(s) {missing}")

        def write() -> tuple[int, int]:
            acc = qua = 0
            for table, df in frames.items():
                try:
                    r = store.append(df, table, self.paths, origin=f"upload:{batch_id}", key=batch_id)
                except SchemaError as exc:
                    raise BadInput(f"{table}: {exc}") from None
                acc, qua = acc + r.written, qua + r.quarantined
            return acc, qua

        return self.ledger.ingest(batch_id, write)


Autopdm.add_asgi_middleware(AuthLimitMiddleware)
