"""autopdm HTTP API (BentoML 1.4): `bentoml serve autopdm.serving.service:Autopdm` or `autopdm serve`.

Loads the three `champion` models by name at start-up and delegates: risks and work-order fields
come from `recommend`, auth / limits / feature lookup / telemetry idempotency from `serving`.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import date

import bentoml
import numpy as np
import pandas as pd
from bentoml.exceptions import BadInput, ServiceUnavailable
from starlette.responses import JSONResponse

from autopdm.serving import recommend
from autopdm import components, store
from autopdm.config import Paths, Settings, quiet_telemetry
from autopdm.modeling.champion import load_champions
from autopdm.schemas import SchemaError
from autopdm.serving.auth import AuthLimitMiddleware, bad_input
from autopdm.serving.batching import MicroBatcher
from autopdm.serving.feature_index import LRU, FeatureIndex
from autopdm.serving.ledger import TelemetryLedger
from autopdm.serving.requests import BatchId, FeatureRows, IsoDate, Records, VehicleIds, records_frame, set_model_features

quiet_telemetry()
SETTINGS = Settings()  # the decorator below needs them when the module is imported
log = logging.getLogger("autopdm.serving.service")
REQUIRED = {"samples": ("vehicle_id", "ts", "source"), "dtc_events": ("vehicle_id", "ts", "code")}


@bentoml.service(
    name="autopdm",
    workers=SETTINGS.service_workers,
    traffic={"timeout": 60, "concurrency": 256},
    # the per-request access log costs ~0.7 ms a call (more than a cached /assess); /metrics has
    # per-endpoint counts and latencies. AUTOPDM_ACCESS_LOG=1 turns it on.
    logging={"access": {"enabled": SETTINGS.access_log}},
    # spans cost ~0.4 ms a request and nothing exports them unless tracing is configured
    tracing={"excluded_urls": [] if SETTINGS.tracing else ["/assess", "/predict"]},
)
class Autopdm:
    def __init__(self) -> None:
        self.paths = Paths.from_env().ensure()
        self.champions: dict = {}
        self.features: FeatureIndex | None = None
        self.ledger = TelemetryLedger(self.paths.telemetry / "batches.sqlite")
        self._last_try = 0.0
        self._assess_batcher = MicroBatcher(self._assess_many)
        self._cache = LRU(Settings().assess_cache)
        self._cache_gen = None
        self._load()

    def _load(self) -> bool:
        """Champion models from the MLflow registry (mlflow is imported here, at start-up only)."""
        self._last_try = time.monotonic()
        try:
            champions = load_champions(self.paths)
            if set(champions) != set(components.names()):
                raise RuntimeError(f"champions for {sorted(champions)} only")
            cols = sorted({f for c in champions.values() for f in c.feature_names})
            self.features = FeatureIndex(self.paths, cols)
            set_model_features(cols)
            self._feature_order = cols
            self._feature_idx = {c: np.array([cols.index(f) for f in m.feature_names]) for c, m in champions.items()}
            self.champions = champions
            self._cache.clear()
            self._cache_gen = self.features.generation
            threading.Thread(target=self._prewarm, name="autopdm-prewarm", daemon=True).start()
            log.info("loaded %s", {c: f"{m.name} v{m.version}" for c, m in champions.items()})
            return True
        except Exception as exc:  # not ready until the models exist; /readyz says so
            log.warning("champion models not loaded yet: %s", exc)
            return False

    def __is_ready__(self) -> bool:
        if not self.champions and time.monotonic() - self._last_try > 10:
            self._load()
        return bool(self.champions) and set(self.champions) == set(components.names())

    def _require_models(self) -> None:
        if not self.__is_ready__():
            raise ServiceUnavailable("champion models are not loaded yet (see /readyz)")

    @bentoml.api
    async def assess(self, vehicle_ids: VehicleIds, as_of: IsoDate | None = None) -> dict:
        """Risk, band, recommended window, action and evidence per vehicle and component."""
        self._require_models()
        res = self._assess_cached(vehicle_ids, as_of)  # all vehicle-days scored before: no thread hop
        if res is None:
            res = await self._assess_batcher.submit((vehicle_ids, as_of))
        # pre-serialised: skips BentoML building a pydantic serialiser for `dict` on every call
        return JSONResponse(res)

    def _assess_cached(self, vehicle_ids: list[str], as_of: str | None) -> dict | None:
        fx = self.features
        if fx.refresh_due() or fx.generation != self._cache_gen:
            return None
        day = date.fromisoformat(as_of) if as_of else (fx.max_date or date.today())
        if not fx.in_memory(day):
            return None
        rows, unknown, no_data = fx.rows(vehicle_ids, day, refresh=False)
        out = []
        for vin, d in zip(rows["vehicle_id"].astype(str), rows["date"]):
            hit = self._cache.get((vin, d))
            if hit is None:
                return None
            out.append({"vehicle_id": vin, "feature_date": d.date().isoformat(), **fx.contact(vin),
                        "components": recommend.finalize(vin, hit, day)})
        return {"as_of": day.isoformat(), "vehicles": out, "unknown": unknown, "no_data": no_data}

    def _prewarm(self) -> None:
        """Score every vehicle's latest feature row in the background, so that the usual call
        (latest day) is answered from the cache from the start."""
        try:
            fx = self.features
            gen = fx.generation
            last = fx.frame.groupby("vehicle_id", sort=False).tail(1)
            for i in range(0, len(last), 256):
                part = last.iloc[i:i + 256]
                if fx.generation != gen:
                    return
                scored = recommend.score_rows(part, self.champions)
                self._cache.put_many(zip(zip(part["vehicle_id"].astype(str), part["date"]), scored))
            log.info("pre-scored %d vehicles", len(last))
        except Exception:  # best effort: requests compute what is missing
            log.exception("pre-scoring failed")

    def _assess_many(self, requests: list[tuple[list[str], str | None]]) -> list[dict]:
        """One model pass for all concurrent /assess requests (serving.MicroBatcher); rows already
        scored (same vehicle and feature day, same models) come from the cache."""
        fx = self.features
        fx.refresh()
        if fx.generation != self._cache_gen:
            self._cache.clear()
            self._cache_gen = fx.generation
        results, plans, todo, got = [], [], [], {}
        for vehicle_ids, as_of in requests:
            day = date.fromisoformat(as_of) if as_of else (fx.max_date or date.today())
            rows, unknown, no_data = fx.rows(vehicle_ids, day, refresh=False)
            keys = list(zip(rows["vehicle_id"].astype(str), rows["date"]))
            miss = []
            for i, k in enumerate(keys):
                if k not in got:
                    hit = self._cache.get(k)
                    if hit is None:
                        got[k] = None
                        miss.append(i)
                    else:
                        got[k] = hit
            if miss:
                todo.append(rows.iloc[miss])
            plans.append((day, keys))
            results.append({"as_of": day.isoformat(), "vehicles": [], "unknown": unknown, "no_data": no_data})
        if todo:
            need = pd.concat(todo) if len(todo) > 1 else todo[0]
            scored = recommend.score_rows(need, self.champions)
            new = list(zip(zip(need["vehicle_id"].astype(str), need["date"]), scored))
            got.update(new)
            self._cache.put_many(new)
        for res, (day, keys) in zip(results, plans):
            for vin, d in keys:
                res["vehicles"].append({"vehicle_id": vin, "feature_date": d.date().isoformat(), **fx.contact(vin),
                                        "components": recommend.finalize(vin, got[(vin, d)], day)})
        return results

    @bentoml.api(batchable=True, max_batch_size=20_000, max_latency_ms=2_000)
    def predict(self, rows: FeatureRows) -> list[dict]:
        """Feature rows → {component: calibrated probability of need within 15 days} per row.
        A row is an object {feature: value} (extra keys ignored, missing → null), or — compact and
        faster — an array of values in the order of /model_info `feature_order`."""
        self._require_models()
        order = self._feature_order
        M = np.full((len(rows), len(order)), np.nan)
        arr = [i for i, r in enumerate(rows) if isinstance(r, list)]
        obj = [i for i, r in enumerate(rows) if not isinstance(r, list)]
        if arr:
            M[arr] = np.array([rows[i] for i in arr], dtype=np.float64)
        if obj:
            X = pd.DataFrame.from_records([rows[i] for i in obj]).reindex(columns=order)
            M[obj] = X.apply(pd.to_numeric, errors="coerce").to_numpy(np.float64) if (X.dtypes == object).any() \
                else X.to_numpy(np.float64)
        risks = {c: m.predict_matrix(M[:, self._feature_idx[c]]) for c, m in self.champions.items()}
        return [{c: round(float(r[i]), 6) for c, r in risks.items()} for i in range(len(M))]

    @bentoml.api
    def model_info(self) -> dict:
        """The loaded champion models: name, version, threshold, features; and `feature_order`,
        the column order of compact /predict rows."""
        self._require_models()
        return {"components": {c: {"name": m.name, "version": str(m.version), "threshold": float(m.threshold),
                                   "feature_names": list(m.feature_names)} for c, m in self.champions.items()},
                "feature_order": list(self._feature_order)}

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
