"""`autopdm ingest crm`: a CRM's file export (CSV or JSON Lines, gzipped or not, with its own column
names, vocabularies and date format given by --map) into the records tables — the example export
shipped in examples/crm/, its deliberately bad rows, files that are not what they claim, and the
same export imported twice."""

from __future__ import annotations

import gzip
import json
import threading
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from autopdm import schemas, store
from autopdm.cli import app
from autopdm.ingest import crm, crm_files, crm_map
from autopdm.ingest.crm import import_records

from .conftest import ROOT

EX = ROOT / "examples" / "crm"
MAP = EX / "map.yaml"
EXPORT = {"--vehicles": EX / "vehicles.csv", "--service-events": EX / "service_history.csv",
          "--inspections": EX / "inspections.jsonl", "--outcomes": EX / "outcomes.csv"}
ETIOS = "9BRBL3HE5E0123456"
TABLES = ("vehicles", "service_events", "inspections", "outcomes")


def run(*args, map_file: Path | None = MAP):
    argv = ["ingest", "crm", *[str(a) for a in args]] + (["--map", str(map_file)] if map_file else [])
    r = CliRunner().invoke(app, argv)
    # no traceback: every way out of the command is an exit status
    assert r.exception is None or isinstance(r.exception, SystemExit), r.output
    return r


def export_args(**override) -> list:
    files = {**EXPORT, **override}
    return [x for k, v in files.items() for x in (k, v)]


def mtimes(home) -> dict:
    return {t: home.table(t).stat().st_mtime_ns for t in TABLES}


def data_lines(path: Path) -> int:
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    return len(lines) - (1 if path.suffix == ".csv" else 0)


def test_the_example_export_imports_and_a_second_import_changes_nothing(home):
    r = run(*export_args())
    assert r.exit_code == 0, r.output
    for opt, path in EXPORT.items():
        table = opt[2:].replace("-", "_")
        assert len(store.read_table(table, home)) == data_lines(path), table
    v = store.read_table("vehicles", home).set_index("vehicle_id")
    # the CRM's "Text" and day-first dates, as ours
    assert v.loc[ETIOS, "preferred_channel"] == "sms" and str(v.loc[ETIOS, "first_registration_date"]) == "2014-03-14"
    assert v.loc[ETIOS, "customer_id"] == "C104233" and v.loc[ETIOS, "model_year"] == 2014
    assert set(v["preferred_channel"]) == {"sms", "email", "phone", "wechat"}
    ins = store.read_table("inspections", home)
    front = ins[(ins["vehicle_id"] == ETIOS) & (ins["measurement"] == "pad_mm") & (ins["position"] == "front")]
    assert sorted(zip(front["date"].astype(str), front["value"])) == [
        ("2024-03-11", 7.5), ("2025-03-27", 5.5), ("2025-11-03", 3.5)]
    assert set(ins["position"]) == {"front", "rear", "fl", "fr", "rl", "rr", "-"}
    assert set(ins["verdict"].dropna()) == {"ok", "advise", "replace"}
    assert (ins["source"] == "crm").all()
    se = store.read_table("service_events", home)
    assert set(se["component"]) == {"brake", "tire", "battery", "other"} and set(se["action"]) == {"replace", "inspect", "repair"}
    out = store.read_table("outcomes", home)
    assert set(out["status"]) == {"booked", "done_replaced", "declined", "no_show"}
    assert "columns not kept: Notes" in r.output and "columns not kept: technician" in r.output
    # nothing of the columns we do not keep is stored anywhere
    stored = "".join(home.table(t).read_bytes().decode("latin-1") for t in TABLES)
    assert "brake noise" not in stored and "T07" not in stored

    before = mtimes(home)
    again = run(*export_args())
    assert again.exit_code == 0, again.output
    assert mtimes(home) == before
    assert "0 new, 0 changed, 16 unchanged" in again.output


def test_a_corrected_row_replaces_the_stored_one(home, tmp_path):
    assert run("--vehicles", EX / "vehicles.csv").exit_code == 0
    fixed = tmp_path / "vehicles.csv"
    fixed.write_text(EXPORT["--vehicles"].read_text().replace("C104871,E-mail", "C104871,Call"))
    r = run("--vehicles", fixed)
    assert r.exit_code == 0 and "0 new, 1 changed, 4 unchanged" in r.output, r.output
    v = store.read_table("vehicles", home).set_index("vehicle_id")
    assert v.loc["WVWZZZAUZKW204117", "preferred_channel"] == "phone" and len(v) == 5


BAD_VEHICLES = {3: "vehicle_id", 4: "preferred_channel", 5: "first_registration_date", 6: "line"}
BAD_INSPECTIONS = {2: "value", 3: "value", 4: "position", 5: "vehicle_id", 6: "line", 7: "date"}


def test_bad_rows_are_quarantined_with_file_line_and_field_and_the_good_ones_imported(home):
    assert run(*export_args()).exit_code == 0
    r = run("--vehicles", EX / "bad" / "vehicles.csv", "--inspections", EX / "bad" / "inspections.jsonl")
    assert r.exit_code == 1, r.output
    assert "KMHDH41EXFU123456" in set(store.read_table("vehicles", home)["vehicle_id"])
    assert "DVI-BAD-1" in set(store.read_table("inspections", home)["inspection_id"])
    for table, path, want in (("vehicles", EX / "bad" / "vehicles.csv", BAD_VEHICLES),
                              ("inspections", EX / "bad" / "inspections.jsonl", BAD_INSPECTIONS)):
        q = store.read_quarantine(home, table)
        assert set(q["origin"]) == {str(path)}
        assert dict(zip(q["row"], q["column"])) == want, q[["row", "column", "reason"]]
        for line, reason in zip(q["row"], q["reason"]):
            assert reason.startswith(f"line {line}: ")
            assert f"quarantined {path.name} {reason}" in r.output.replace("\n", " ") or line not in sorted(want)[:5]
    q = store.read_quarantine(home, "vehicles")
    assert "Pigeon".lower() in q.loc[q["column"] == "preferred_channel", "record"].iat[0]
    # the malformed line of a file with columns we do not keep is not kept either
    assert "Octavia" not in "".join(q["record"]) and "Notes" not in "".join(q["record"])
    # the same bad file again: its quarantine is replaced, not added to
    n = {t: len(store.read_quarantine(home, t)) for t in ("vehicles", "inspections")}
    assert run("--vehicles", EX / "bad" / "vehicles.csv", "--inspections", EX / "bad" / "inspections.jsonl").exit_code == 1
    assert {t: len(store.read_quarantine(home, t)) for t in n} == n


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


NOT_WHAT_THEY_CLAIM = {
    "binary.csv": (bytes(range(256)) * 20, "binary data"),
    "page.csv": (b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>...</body></html>\n", "HTML page"),
    "empty.csv": (b"", "empty file"),
    "blank.jsonl": (b"\n  \n", "empty file"),
    "header.csv": (b"Kennzeichen,Farbe,Kraftstoff\nB-XY 123,rot,Benzin\n", "none of the vehicles columns"),
    "array.jsonl": (b'[{"vehicle_id": "9BRBL3HE5E0123456"}]\n', "JSON array, not JSON Lines"),
    "csv.jsonl": (b"VIN,Make\n9BRBL3HE5E0123456,Toyota\n", "not a JSON Lines export"),
    "notgzip.csv.gz": (b"VIN,Make\n", "not gzip-compressed"),
    "zipped.csv": (_gzip(b"VIN,Make\n"), "gzip-compressed data"),
    "sheet.xlsx": (b"PK\x03\x04", "unknown kind of file"),
    "vehicles.json": (b"{}", "unknown kind of file"),
}


@pytest.mark.parametrize("name", sorted(NOT_WHAT_THEY_CLAIM))
def test_a_file_that_is_not_what_it_claims_is_one_clear_error(home, tmp_path, name):
    data, why = NOT_WHAT_THEY_CLAIM[name]
    f = tmp_path / name
    f.write_bytes(data)
    r = run("--vehicles", f)
    assert r.exit_code == 1, r.output
    errors = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and str(f) in errors[0] and why in errors[0], r.output
    assert not home.table("vehicles").exists()


def test_another_tables_export_is_named_as_such(home):
    r = run("--vehicles", EX / "service_history.csv")
    assert r.exit_code == 1
    assert "a service_events export, not vehicles" in r.output and "--service-events" in r.output
    r = run("--outcomes", EX / "inspections.jsonl")
    assert "an inspections export, not outcomes" in r.output.replace("\n", " ")


def test_a_missing_file_and_a_good_one_the_good_one_is_imported(home, tmp_path):
    r = run("--vehicles", EX / "vehicles.csv", "--outcomes", tmp_path / "nope.csv")
    assert r.exit_code == 1 and "nope.csv: cannot read" in r.output
    assert len(store.read_table("vehicles", home)) == 5


def test_bad_options_exit_2(home, tmp_path):
    r = run(map_file=None)
    assert r.exit_code == 2 and "--vehicles" in r.output
    for text, where in (("vehicles:\n  columns: {VIN: vin}\n", "vehicles.columns.VIN"),
                        ("vehicle:\n  columns: {}\n", "'vehicle'"),
                        ("vehicles:\n  dates: {make: '%d'}\n", "vehicles.dates.make"),
                        ("vehicles:\n  dates: {first_registration_date: 'dd.mm.yyyy'}\n", "first_registration_date"),
                        ("service_events:\n  scale: {odometer_km: -1}\n", "service_events.scale.odometer_km"),
                        ("vehicles: [1, 2\n", "cannot read"), ("decimal: ';'\n", "decimal")):
        m = tmp_path / "m.yaml"
        m.write_text(text)
        r = run("--vehicles", EX / "vehicles.csv", map_file=m)
        assert r.exit_code == 2 and where in r.output and str(m) in r.output, (text, r.output)
    assert not home.table("vehicles").exists()


def _as_jsonl(csv_path: Path) -> str:
    df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    return "".join(json.dumps({k: v for k, v in row.items() if v != ""}) + "\n" for row in df.to_dict("records"))


def test_every_reader_gives_the_same_table(tmp_path, monkeypatch):
    """The same vehicles as CSV, gzipped CSV, semicolon CSV with decimal commas in Windows-1252,
    UTF-16 CSV with a BOM (Excel's "Unicode text"), JSON Lines and gzipped NDJSON."""
    text = EXPORT["--vehicles"].read_text()
    semi = text.replace(",", ";").replace(";1030;", ";1.030,0;").replace("Etios", "Étios")
    semi_map = tmp_path / "semi.yaml"
    semi_map.write_text(MAP.read_text().replace("source: crm", 'source: crm\ndecimal: ","'))
    variants = {
        "plain.csv": (text.encode(), MAP), "gz.csv.gz": (_gzip(text.encode()), MAP),
        "semi.csv": (semi.encode("cp1252"), semi_map), "utf16.csv": (text.encode("utf-16"), MAP),
        "lines.jsonl": (_as_jsonl(EXPORT["--vehicles"]).encode(), MAP),
        "lines.ndjson.gz": (_gzip(_as_jsonl(EXPORT["--vehicles"]).encode()), MAP),
    }
    got = {}
    for name, (data, m) in variants.items():
        home = tmp_path / name.replace(".", "_")
        monkeypatch.setenv("AUTOPDM_HOME", str(home))
        f = tmp_path / name
        f.write_bytes(data)
        r = run("--vehicles", f, map_file=m)
        assert r.exit_code == 0, (name, r.output)
        got[name] = pd.read_parquet(home / "records" / "vehicles.parquet").sort_values("vehicle_id").reset_index(drop=True)
    base = got.pop("plain.csv")
    assert len(base) == 5 and base["curb_mass_kg"].notna().all()
    for name, df in got.items():
        if name == "semi.csv":
            assert df.loc[df["vehicle_id"] == ETIOS, "model"].iat[0] == "Étios"
            df = df.assign(model=base["model"])
        pd.testing.assert_frame_equal(df, base, obj=name)


def test_a_cut_gzip_keeps_the_lines_before_the_cut(home, tmp_path):
    rows = "".join(f"WVWZZZAUZKW{i:06d},Volkswagen,sms,C{i:06d}\n" for i in range(3000))
    full = _gzip(("vehicle_id,make,preferred_channel,customer_id\n" + rows).encode())
    f = tmp_path / "vehicles.csv.gz"
    f.write_bytes(full[: len(full) * 2 // 3])
    r = run("--vehicles", f, map_file=None)
    assert r.exit_code == 1 and "cut short" in r.output, r.output
    n = len(store.read_table("vehicles", home))
    assert 500 < n < 3000
    q = store.read_quarantine(home, "vehicles")
    assert len(q) == 1 and "cut short" in q["reason"].iat[0] and q["row"].iat[0] == n + 2


def test_our_own_column_names_need_no_map_and_dates_must_be_iso(home, tmp_path):
    f = tmp_path / "v.csv"
    f.write_text("Vehicle ID,Preferred Channel,first_registration_date,Customer-ID\n"
                 "9BRBL3HE5E0123456,SMS,2014-03-14,C1\n"
                 "wvwzzzauzkw204117, Email ,03/04/2019,C2\n"
                 "VF1RJA00067412983,phone,2021-09-21T10:00:00+02:00,C3\n")
    r = run("--vehicles", f, map_file=None)
    assert r.exit_code == 1, r.output
    v = store.read_table("vehicles", home)
    assert sorted(v["vehicle_id"]) == ["9BRBL3HE5E0123456", "VF1RJA00067412983"]
    assert set(v["preferred_channel"]) == {"sms", "phone"} and set(v["customer_id"]) == {"C1", "C3"}
    q = store.read_quarantine(home, "vehicles")
    assert list(q["row"]) == [3] and "'03/04/2019' is not an ISO date" in q["reason"].iat[0]


def test_line_numbers_count_quoted_line_breaks_and_binary_lines_are_quarantined(home, tmp_path):
    f = tmp_path / "v.csv"
    f.write_bytes(b'vehicle_id,make,preferred_channel,model\n'
                  b'9BRBL3HE5E0123456,"Toyota\nBrasil",sms,Etios\n'       # a quoted line break: lines 2-3
                  b'WVWZZZAUZKW204117,VW,email\n'                         # line 4: a field missing
                  b'VF1RJA00067412983,Renault,phone,Cap\x00\x01\x02tur\n'  # line 5: binary bytes
                  b'\n'
                  b'JTDKBRFU103152478,Toyota,wechat,Yaris,\n')           # line 7: trailing comma
    r = run("--vehicles", f, map_file=None)
    assert r.exit_code == 1
    v = store.read_table("vehicles", home).set_index("vehicle_id")
    assert sorted(v.index) == ["9BRBL3HE5E0123456", "JTDKBRFU103152478"]
    assert v.loc["9BRBL3HE5E0123456", "make"] == "Toyota\nBrasil"
    q = store.read_quarantine(home, "vehicles").sort_values("row")
    assert list(q["row"]) == [4, 5]
    assert "3 fields, the header has 4" in q["reason"].iat[0] and "binary" in q["reason"].iat[1]


def test_a_quote_never_closed_does_not_swallow_the_lines_after_it_silently(home, tmp_path):
    f = tmp_path / "v.csv"
    f.write_text('vehicle_id,preferred_channel,make\n9BRBL3HE5E0123456,sms,"Toyota\nWVWZZZAUZKW204117,email,VW\n')
    r = run("--vehicles", f, map_file=None)
    assert r.exit_code == 1 and "lines 2-3: a quote opened and not closed?" in r.output, r.output
    assert store.read_table("vehicles", home).empty


def test_required_columns_are_those_without_which_no_row_is_valid():
    """crm.REQUIRED decides whether a file is a table's export at all: it must agree with validation."""
    good = {
        "vehicles": {"vehicle_id": ETIOS, "make": "Toyota", "model": "Etios", "model_year": 2014, "segment": "small",
                     "curb_mass_kg": 1030.0, "first_registration_date": "2014-03-14", "customer_id": "C1",
                     "preferred_channel": "sms", "dealer_id": "D1"},
        "service_events": {"event_id": "E1", "vehicle_id": ETIOS, "date": "2025-01-01", "odometer_km": 1.0,
                           "component": "brake", "action": "replace", "source": "crm", "work_order_id": "wo-1"},
        "inspections": {"inspection_id": "I1", "vehicle_id": ETIOS, "date": "2025-01-01", "odometer_km": 1.0,
                        "component": "brake", "position": "front", "measurement": "pad_mm", "value": 5.0,
                        "verdict": "ok", "source": "crm"},
        "outcomes": {"work_order_id": "wo-1", "vehicle_id": ETIOS, "component": "brake", "date": "2025-01-01",
                     "status": "booked", "source": "crm"},
    }
    for table, row in good.items():
        assert set(row) == set(schemas.TABLES[table].names)
        assert schemas.validate(pd.DataFrame([row]), table).n_valid == 1
        for col in row:
            df = pd.DataFrame([{k: v for k, v in row.items() if k != col}])
            try:
                ok = schemas.validate(df, table).n_valid == 1
            except schemas.SchemaError:
                ok = False
            assert ok == (col not in crm.REQUIRED[table]), (table, col)


def test_concurrent_imports_lose_nothing(home):
    """Imports from several threads at once (the CLI and the service share a home): every row stays."""
    def batch(t: int, k: int) -> pd.DataFrame:
        return pd.DataFrame({"vehicle_id": [f"WVWZZZAUZ{t:02d}{k:03d}{i:03d}" for i in range(5)],
                             "preferred_channel": "sms", "customer_id": "C1"})

    errors = []

    def worker(t: int) -> None:
        try:
            for k in range(8):
                import_records({"vehicles": batch(t, k)}, home, origin=f"t{t}")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert len(store.read_table("vehicles", home)) == 4 * 8 * 5


def test_a_map_resolves_columns_without_regard_to_case(tmp_path):
    m = tmp_path / "m.yaml"
    m.write_text("vehicles:\n  columns: {'Fahrgestellnummer': vehicle_id, Kanal: preferred_channel}\n"
                 "  values: {preferred_channel: {'E-Mail': email}}\n")
    tm = crm_map.load(m).table("vehicles")
    rename, ignored = crm_map.resolve(["FAHRGESTELLNUMMER", "kanal", "Make", "Farbe"], tm, "vehicles")
    assert rename == {"FAHRGESTELLNUMMER": "vehicle_id", "kanal": "preferred_channel", "Make": "make"}
    assert ignored == ["Farbe"]
    with pytest.raises(ValueError, match="both give vehicles.vehicle_id"):
        crm_map.resolve(["Fahrgestellnummer", "vehicle_id"], tm, "vehicles")
    df, why = crm_map.apply(pd.DataFrame({"preferred_channel": [" e-mail ", "SMS", "Fax"]}), tm, "vehicles")
    assert list(df["preferred_channel"]) == ["email", "sms", "fax"] and why.isna().all()
    assert crm_files.suffixes() == [".csv", ".jsonl", ".ndjson", ".csv.gz", ".jsonl.gz", ".ndjson.gz"]
