"""POST /telemetry: canonical samples and DTC events from a workshop uploader, once per batch id."""

from __future__ import annotations

from autopdm import store
from autopdm.config import Paths
from autopdm.schemas import SchemaError
from autopdm.serving.ledger import BatchConflict, TelemetryLedger, content_digest
from autopdm.serving.requests import RequestError, records_frame

REQUIRED = {"samples": ("vehicle_id", "ts", "source"), "dtc_events": ("vehicle_id", "ts", "code")}


def check_scope(hidden: set[str], samples: list, dtc_events: list) -> None:
    """A dealer-scoped uploader sends its dealer's cars only: a row naming any other car (another
    dealer's or one nobody knows, alike) refuses the batch, naming the row."""
    if not hidden:
        return
    for table, rows in (("samples", samples), ("dtc_events", dtc_events)):
        for i, r in enumerate(rows):
            if str(r.get("vehicle_id")) in hidden:
                raise RequestError(f"{table}.{i}.vehicle_id", "not a vehicle of this token's dealer "
                                                               "(send its vehicles record first)", status=403)


def ingest(paths: Paths, ledger: TelemetryLedger, batch_id: str, samples: list, dtc_events: list) -> dict:
    """Validate and store a batch (bad rows quarantined with reasons); the same batch again is a
    no-op answered with `duplicate: true`; the same batch id with other content is a 409."""
    frames = {t: records_frame(r) for t, r in (("samples", samples), ("dtc_events", dtc_events)) if r}
    for table, df in frames.items():
        missing = [c for c in REQUIRED[table] if c not in df.columns]
        if missing:
            raise RequestError(table, f"missing required field(s) {missing}")

    def write() -> tuple[int, int]:
        acc = qua = 0
        for table, df in frames.items():
            try:
                r = store.append(df, table, paths, origin=f"upload:{batch_id}", key=batch_id)
            except SchemaError as exc:
                raise RequestError(table, str(exc)) from None
            acc, qua = acc + r.written, qua + r.quarantined
        return acc, qua

    try:
        return ledger.ingest(batch_id, content_digest([samples, dtc_events]), write)
    except BatchConflict as exc:
        raise RequestError("batch_id", str(exc), status=409) from None
