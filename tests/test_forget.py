"""`autopdm forget --vehicle VIN`: nothing of the car is left in any file of the home (every Parquet
file read, every file's bytes searched), other cars are untouched, the audit trail records it."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from autopdm import store
from autopdm.cli import app
from autopdm.delivery.outbox import Outbox
from autopdm.ingest import crm
from autopdm.serving import audit
from autopdm.serving.records import RecordsLedger, ingest as records_ingest

from .procs import fake_work_orders
from .service_fleet import fleet_copy, home_paths

pytestmark = pytest.mark.slow


def files_mentioning(home, vin: str) -> list[str]:
    """Files whose bytes hold the VIN, or Parquet files with a row that does (compressed pages hide bytes)."""
    hits = []
    for p in sorted(home.rglob("*")):
        if not p.is_file() or p.name.startswith("audit.sqlite"):
            continue
        raw = p.read_bytes()
        if vin.encode() in raw:
            hits.append(str(p.relative_to(home)))
        elif raw[:4] == b"PAR1" and _parquet_mentions(p, vin):
            hits.append(str(p.relative_to(home)))
    return hits


def _parquet_mentions(path, vin: str) -> bool:
    t = pq.ParquetFile(path).read()
    for col in t.columns:
        if pa.types.is_dictionary(col.type):
            col = col.cast(pa.string())
        if (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)) and \
                pc.any(pc.match_substring(col, vin)).as_py():
            return True
    return False


@pytest.fixture(scope="module")
def fleet_home(tmp_path_factory):
    return fleet_copy(tmp_path_factory, "forget")


def test_forget_leaves_nothing_of_the_car(fleet_home):
    home = fleet_home
    paths = home_paths(home)
    vehicles = store.read_table("vehicles", paths)
    vin, other = vehicles["vehicle_id"].iloc[0], vehicles["vehicle_id"].iloc[1]
    # the car everywhere a running workshop puts it: telemetry, quarantine, records via /records, outbox, a file drop
    samples = pd.DataFrame({"vehicle_id": [vin, other, vin], "ts": ["2026-01-05T08:00:00Z"] * 2 + ["garbage"],
                            "source": "obd", "speed_kph": [10.0, 12.0, 1.0]})
    store.append(samples, "samples", paths, origin="upload:x", key="x")
    records_ingest(paths, RecordsLedger(paths.records / "batches.sqlite"), "crm-1", {"inspections": [
        {"inspection_id": "f-1", "vehicle_id": vin, "date": "2026-01-05", "component": "battery", "position": "-",
         "measurement": "battery_soh_pct", "value": 80},
        {"inspection_id": "f-2", "vehicle_id": vin, "date": "2026-01-05", "component": "battery", "position": "x",
         "measurement": "battery_soh_pct", "value": 80}]})
    wos = fake_work_orders(3)
    wos[0]["vehicle_id"], wos[1]["vehicle_id"] = vin, other
    Outbox.open(paths).enqueue(wos)
    (paths.home / "drop").mkdir()
    (paths.home / "drop" / "work_orders.jsonl").write_text("".join(json.dumps(w) + "\n" for w in wos))
    (paths.reports / "note.html").write_text(f"<p>{vin} and {other}</p>")
    audit.record_now(paths, "tok_x", "crm", "/assess", [(vin, True)], "answered")
    assert len(files_mentioning(home, vin)) >= 8
    before_other = files_mentioning(home, other)

    res = CliRunner().invoke(app, ["forget", "--vehicle", vin], env={"AUTOPDM_HOME": str(home)})
    assert res.exit_code == 0, res.output
    assert files_mentioning(home, vin) == []
    # other cars stay, in every file they were in
    assert files_mentioning(home, other) == before_other
    assert other in set(store.read_table("features", paths, columns=["vehicle_id"])["vehicle_id"])
    assert [r["vehicle_id"] for r in Outbox.open(paths).rows()] == [other, wos[2]["vehicle_id"]] or \
        sorted(r["vehicle_id"] for r in Outbox.open(paths).rows()) == sorted([other, wos[2]["vehicle_id"]])
    # the audit trail keeps who looked at it, and that it was forgotten
    trail = audit.query(paths, vin)
    assert [e["endpoint"] for e in trail] == ["/assess", "autopdm forget"]
    # the records import still works on the rewritten tables; forgetting again finds nothing
    crm.import_records({"vehicles": vehicles.iloc[[1]]}, paths)
    again = CliRunner().invoke(app, ["forget", "--vehicle", vin], env={"AUTOPDM_HOME": str(home)})
    assert again.exit_code == 0 and "0 rows in 0 files" in again.output
    bad = CliRunner().invoke(app, ["forget", "--vehicle", "nope"], env={"AUTOPDM_HOME": str(home)})
    assert bad.exit_code == 2 and "--vehicle" in bad.output
