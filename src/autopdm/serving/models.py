"""The snapshot the service answers from, and noticing when it is out of date.

A background thread checks every `AUTOPDM_RELOAD_POLL_S` seconds whether a `champion` alias moved
or the features table was rebuilt; `POST /reload` checks at once. Either builds a new snapshot
(models loaded, fleet scored) while the old one keeps answering, then swaps the reference: no
request waits for the swap and none fails because of it.
"""

from __future__ import annotations

import logging
import threading
import time

from bentoml.exceptions import ServiceUnavailable

from autopdm import components
from autopdm.config import Paths, Settings
from autopdm.modeling.champion import load_champions
from autopdm.modeling.tracking import client as tracking_client
from autopdm.serving import snapshot, upcoming
from autopdm.serving.feature_index import FeatureIndex, table_stamp

log = logging.getLogger("autopdm.serving.models")
RETRY_S = 10.0  # how soon a service without models tries again, whatever the poll interval


def champion_versions(client) -> dict[str, str | None]:
    """component → the version its `champion` alias points at (None: no alias)."""
    from mlflow.exceptions import MlflowException

    out = {}
    for comp in components.names():
        try:
            mv = client.get_model_version_by_alias(components.get(comp).model_name, components.CHAMPION_ALIAS)
            out[comp] = str(mv.version)
        except MlflowException:
            out[comp] = None
    return out


class ModelState:
    """The current `Snapshot`, rebuilt when the registry or the features table changes."""

    def __init__(self, paths: Paths, settings: Settings | None = None) -> None:
        s = settings or Settings()
        self.paths = paths
        self.poll_s = s.reload_poll_s
        self.history_days = s.assess_history_days
        self.cache_size = s.assess_cache
        self.last_error: str | None = None
        self.reloads = 0
        self._snap: snapshot.Snapshot | None = None
        self._lock = threading.Lock()  # one check or build at a time
        self._client = None
        self._last_try = 0.0
        self.refresh()
        if self.poll_s > 0:
            threading.Thread(target=self._poll, name="autopdm-reload", daemon=True).start()

    def current(self) -> snapshot.Snapshot:
        snap = self._snap
        if snap is None:
            raise ServiceUnavailable(f"champion models are not loaded yet (see /readyz): {self.last_error}")
        return snap

    def ready(self) -> bool:
        if self._snap is None and not self._lock.locked() and time.monotonic() - self._last_try > RETRY_S:
            threading.Thread(target=self.refresh, name="autopdm-load", daemon=True).start()
        return self._snap is not None

    def refresh(self) -> dict:
        """Check now; swap in a new snapshot if a champion or the features moved. On failure the
        current snapshot keeps answering and `error` says why."""
        with self._lock:
            self._last_try = time.monotonic()
            try:
                changed = self._refresh()
                self.last_error = None
            except Exception as exc:  # a broken registry or table must not take the service down
                error, changed = f"{type(exc).__name__}: {exc}", False
                if error != self.last_error:  # once per cause, not at every poll
                    log.warning("models or features not (re)loaded: %s", error)
                self.last_error = error
            snap = self._snap
            return {"changed": changed, "error": self.last_error, "reloads": self.reloads,
                    "models": snap.versions if snap else None,
                    "features_latest_day": snap.info()["features"]["latest_day"] if snap else None}

    def _refresh(self) -> bool:
        if self._client is None:
            self._client = tracking_client(self.paths)
        versions, stamp, old = champion_versions(self._client), table_stamp(self.paths), self._snap
        if old is not None and versions == old.versions and stamp == old.features.stamp:
            return False
        champions = old.champions if old is not None and versions == old.versions else load_champions(self.paths)
        cols = snapshot.feature_order(champions)
        if old is not None and stamp == old.features.stamp and old.features.covers(cols):
            features = old.features
        else:
            features = FeatureIndex(self.paths, cols, self.history_days)
        new = snapshot.build(champions, features, self.cache_size)
        self._snap = new
        # the records upcoming reminders need, read now rather than by the first /assess that asks
        threading.Thread(target=upcoming.warm, args=(new,), name="autopdm-upcoming", daemon=True).start()
        self.reloads += old is not None
        log.info("answering from %s, features to %s; %d vehicles scored in %.2f s",
                 {c: f"{m.name} v{m.version}" for c, m in champions.items()}, features.max_date, len(new.latest), new.built_s)
        return True

    def _poll(self) -> None:
        while True:
            time.sleep(self.poll_s if self._snap is not None else min(self.poll_s, RETRY_S))
            self.refresh()
