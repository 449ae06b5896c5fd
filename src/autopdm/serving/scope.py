"""Dealer scopes: which cars a dealer-scoped caller may see (the vehicles whose `dealer_id` is its dealer).

A car outside the caller's scope is answered exactly as a car nobody knows: the caller cannot tell
another dealer's car from no car at all. The vehicles table is re-read when it changes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import pyarrow.parquet as pq

from autopdm.config import Paths
from autopdm.serving.tokens import Principal


class DealerMap:
    """vehicle_id → dealer_id of the home's vehicles table, reloaded when the file changes."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self._stamp: tuple | None = None
        self._map: dict[str, str] = {}
        self._lock = threading.Lock()

    def current(self) -> dict[str, str]:
        path = self.paths.table("vehicles")
        try:
            st = path.stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            return {}
        with self._lock:
            if stamp != self._stamp:
                names = pq.read_schema(path).names
                if "dealer_id" in names:
                    t = pq.read_table(path, columns=["vehicle_id", "dealer_id"]).to_pydict()
                    self._map = {str(v): str(d) for v, d in zip(t["vehicle_id"], t["dealer_id"]) if d is not None}
                else:
                    self._map = {}
                self._stamp = stamp
            return self._map

    def visible(self, principal: Principal | None, vehicle_id: str) -> bool:
        return not self.hidden(principal, (vehicle_id,))

    def hidden(self, principal: Principal | None, vehicle_ids: Iterable[str]) -> set[str]:
        """The vehicles among `vehicle_ids` that `principal` may not see."""
        if principal is None or principal.dealer is None:
            return set()
        m = self.current()
        return {v for v in vehicle_ids if m.get(v) != principal.dealer}
