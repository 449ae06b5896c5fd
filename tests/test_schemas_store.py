import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from autopdm import schemas, store

VIN = "JTDBT923771234567"


def _samples(**cols):
    base = {"vehicle_id": [VIN] * 4, "ts": pd.date_range("2026-03-01T23:59:58Z", periods=4, freq="s"), "source": "obd",
            "speed_kph": [10.0, 12.0, 14.0, 16.0], "rpm": [900.0, 1000.0, 1100.0, 1200.0]}
    base.update(cols)
    return pd.DataFrame(base)


def test_bad_rows_are_quarantined_with_column_and_row_good_rows_kept(home):
    df = _samples(vehicle_id=[VIN, "SHORTVIN", VIN, VIN], speed_kph=[10.0, 12.0, -4.0, "fast"])
    res = store.append(df, "samples", home, origin="unit.csv")
    assert (res.written, res.quarantined) == (1, 3)
    q = store.read_quarantine(home).sort_values("row")
    assert list(q["row"]) == [1, 2, 3]
    assert list(q["column"]) == ["vehicle_id", "speed_kph", "speed_kph"]
    assert "row 2: speed_kph: outside [0, 320]" in q["reason"].tolist()
    assert "cannot parse 'fast'" in q["reason"].iloc[2]
    # the whole original record survives in quarantine
    assert json.loads(q["record"].iloc[0])["vehicle_id"] == "SHORTVIN"
    assert set(q["origin"]) == {"unit.csv"}
    kept = store.read_samples(home)
    assert len(kept) == 1 and kept["speed_kph"].iloc[0] == 10.0


def test_unknown_is_null_never_zero(home):
    store.append(_samples(), "samples", home)
    s = store.read_samples(home)
    assert s["coolant_temp_c"].isna().all() and s["brake_switch"].isna().all()


def test_partitioned_by_vehicle_and_date_and_filters(home):
    other = "WVWZZZ1KZ6W000001"
    df = pd.concat([_samples(), _samples(vehicle_id=[other] * 4)])
    store.append(df, "samples", home)
    dirs = sorted(p.relative_to(home.samples).parent.as_posix() for p in home.samples.rglob("*.parquet"))
    assert f"vehicle_id={VIN}/date=2026-03-01" in dirs and f"vehicle_id={VIN}/date=2026-03-02" in dirs
    assert len(dirs) == 4
    only = store.read_samples(home, vehicle_ids=[other], start="2026-03-02")
    assert set(only["vehicle_id"]) == {other} and len(only) == 2


def test_missing_required_column_is_a_clear_error():
    with pytest.raises(schemas.SchemaError, match="missing required column"):
        schemas.validate(pd.DataFrame({"vehicle_id": [VIN]}), "samples")


def test_dtc_and_service_event_validation():
    d = schemas.validate(pd.DataFrame({"vehicle_id": [VIN, VIN], "ts": ["2026-01-01", "2026-01-01"],
                                       "code": ["P0562", "XYZ"], "status": ["stored", "pending"]}), "dtc_events")
    assert d.n_valid == 1 and d.quarantine["column"].tolist() == ["code"]
    s = schemas.validate(pd.DataFrame({"event_id": ["e1", "e2"], "vehicle_id": [VIN, VIN], "date": ["2026-01-01", "2026-01-02"],
                                       "component": ["brake", "wipers"], "action": ["replace", "replace"]}), "service_events")
    assert s.n_valid == 1 and "component" in s.quarantine["reason"].iloc[0]


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "t.parquet"
    table = schemas.to_arrow(schemas.conform(_samples(), "samples"), "samples")

    def crash(tbl, path, **kw):
        with open(path, "wb") as fh:
            fh.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", crash)
    with pytest.raises(OSError):
        store.atomic_write_parquet(table, target)
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_write_and_read_table_roundtrip(home):
    v = pd.DataFrame({"vehicle_id": [VIN], "make": ["Toyota"], "model": ["Etios"], "model_year": [2014], "segment": ["small"],
                      "curb_mass_kg": [935.0], "first_registration_date": ["2014-05-01"], "customer_id": ["C000001"],
                      "preferred_channel": ["sms"]})
    store.write_table(v, "vehicles", home)
    back = store.read_table("vehicles", home)
    assert back.loc[0, "customer_id"] == "C000001" and str(back.loc[0, "first_registration_date"]) == "2014-05-01"


def test_replayed_batch_is_stored_once(home):
    df = _samples()
    first = store.append(df, "samples", home, key="batch-42")
    again = store.append(df, "samples", home, key="batch-42")
    assert [f.name for f in first.files] == [f.name for f in again.files]
    assert len(store.read_samples(home)) == 4
    # even under another key (a regrouped replay), one reading instant stays one row
    store.append(df, "samples", home, key="batch-43")
    assert len(store.read_samples(home)) == 4


def test_dtc_events_are_one_file_per_vehicle_not_per_day(home):
    df = pd.DataFrame({"vehicle_id": [VIN] * 30, "ts": pd.date_range("2026-01-01", periods=30, freq="D", tz="UTC"),
                       "code": "P0562", "status": "stored"})
    res = store.append(df, "dtc_events", home)
    assert len(res.files) == 1
    assert len(store.read_dtc_events(home, vehicle_ids=[VIN])) == 30
