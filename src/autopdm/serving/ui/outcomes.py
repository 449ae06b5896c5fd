"""Recording what became of a work order from the advisor's page.

An outcome is stored exactly as a CRM's outcome record is: an `outcomes` row (source "advisor")
through `ingest.crm.import_records`, validated and upserted by its natural key (work order, status).
So recording the same outcome twice — a double click, a resent form — leaves one record.

The form names only the work order and the status; the vehicle and the component come from the
server's own view of that work order (one of the car's work orders in the outbox, or today's
recommendation for one of its parts), so a forged form cannot write records about other cars.
"""

from __future__ import annotations

from datetime import date, datetime, timezone

import pandas as pd
from filelock import FileLock

from autopdm.config import Paths
from autopdm.ingest.crm import TableResult, import_records
from autopdm.schemas import OUTCOME_STATUSES
from autopdm.serving import recommend
from autopdm.serving.snapshot import Snapshot
from autopdm.serving.ui import fleet

SOURCE = "advisor"
_LABELS = {"booked": "Booked", "declined": "Declined", "no_show": "No show", "done_replaced": "Done: replaced",
           "done_ok": "Done: OK"}


def buttons() -> list[tuple[str, str]]:
    """(status, label) of every outcome a work order can have, in the schema's order."""
    return [(s, _LABELS.get(s, s.replace("_", " ").capitalize())) for s in OUTCOME_STATUSES]


def label(status: str) -> str:
    return dict(buttons()).get(status, status)


def target(snap: Snapshot, paths: Paths, vehicle_id: str, work_order_id: str) -> dict | None:
    """The work order an outcome may be recorded against, as {work_order_id, vehicle_id, component}."""
    for r in fleet.work_orders(paths, vehicle_id):
        if r["work_order_id"] == work_order_id:
            return {"work_order_id": work_order_id, "vehicle_id": vehicle_id, "component": r["component"]}
    latest = snap.latest.get(vehicle_id)
    if latest is not None:
        for comp, c in recommend.finalize(vehicle_id, latest.scored, fleet.today(snap)).items():
            if c["alert"] and c["work_order_id"] == work_order_id:
                return {"work_order_id": work_order_id, "vehicle_id": vehicle_id, "component": comp}
    return None


def record(paths: Paths, order: dict, status: str, day: date | None = None) -> TableResult:
    """Store one outcome through the CRM import path; dated today (UTC) unless `day` is given."""
    if status not in OUTCOME_STATUSES:
        raise ValueError(f"status: {status!r} is not one of {', '.join(OUTCOME_STATUSES)}")
    day = day or datetime.now(timezone.utc).date()
    frame = pd.DataFrame([{**order, "date": day.isoformat(), "status": status, "source": SOURCE}])
    paths.records.mkdir(parents=True, exist_ok=True)
    # the import reads, merges and rewrites the table: one advisor's write at a time across workers
    with FileLock(str(paths.records / ".advisor-outcomes.lock"), timeout=30):
        res = import_records({"outcomes": frame}, paths, origin=SOURCE, source=SOURCE)
    return res["outcomes"]
