"""`autopdm ingest can`: every python-can log format, truncated files, a live virtual bus with
ECU responders (ISO-TP flow control, two ECUs, a negative answer), 29-bit ids, a real DBC."""

from __future__ import annotations

import gzip
import math
import os
import re
import sys
import subprocess
import time
from pathlib import Path

import can
import pandas as pd
import pytest

from autopdm import store
from autopdm.config import Paths
from autopdm.ingest import can as can_ingest
from autopdm.ingest import canlive
from autopdm.sim import ecu as ecu_sim
from autopdm.sim.elm327 import DEFAULT_VIN
from autopdm.ingest.codecs.isotp import ObdDecoder

CLI = [sys.executable, "-c", "from autopdm.cli import main; main()"]
FORMATS = [".asc", ".blf", ".trc", ".log", ".csv", ".asc.gz", ".log.gz", ".trc.gz", ".csv.gz"]
N = 3000


def _write(path: Path, msgs) -> None:
    with can.Logger(str(path)) as lg:
        for m in msgs:
            lg.on_message_received(m)


@pytest.fixture(scope="module")
def traffic():
    return list(ecu_sim.obd_traffic(N, error_every=25, negative_every=10))


def _run(home, *args):
    env = dict(os.environ, AUTOPDM_HOME=str(home.home), COLUMNS="250")
    return subprocess.run([*CLI, "ingest", "can", *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("suffix", FORMATS)
def test_every_format_imports_the_same(home, tmp_path, traffic, suffix):
    path = tmp_path / f"drive{suffix}"
    _write(path, traffic)
    plain = list(can.LogReader(path))
    rep = can_ingest.import_log(path, home)
    assert rep.error is None, rep.error
    assert rep.frames == len(plain)
    assert rep.vehicle_id == DEFAULT_VIN                  # multi-frame VIN reassembled from the log
    assert rep.negative_responses > 0                     # 7F answers counted …
    assert rep.ecus == ["00", "01"]                       # engine and transmission answered
    if not suffix.startswith(".trc"):                     # python-can's TRC writer drops error frames
        assert rep.error_frames == sum(m.is_error_frame for m in plain) > 0
    assert rep.decoded + rep.skipped + rep.error_frames == rep.frames
    s = store.read_samples(home)
    assert len(s) == rep.samples > 10 and set(s["source"]) == {"can"}
    # … and never decoded as values: every distance reading is the ECU's real value
    assert s["distance_since_dtc_clear_km"].dropna().between(1999, 2100).all()
    # timestamps are absolute (the traffic starts 2026-01-01), not seconds since 1970
    assert s["ts"].min() >= __import__("pandas").Timestamp("2026-01-01", tz="UTC")
    assert s["odometer_km"].notna().any() and s["rpm"].notna().any()
    d = store.read_dtc_events(home)
    assert "P0562" in set(d["code"])


@pytest.mark.parametrize("suffix", [".asc", ".log", ".blf", ".trc", ".csv", ".log.gz", ".asc.gz"])
def test_truncated_file_keeps_what_was_read_and_names_the_position(home, tmp_path, traffic, suffix):
    whole = tmp_path / f"whole{suffix}"
    _write(whole, traffic)
    cut = tmp_path / f"cut{suffix}"
    data = whole.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6) + 3])
    r = _run(home, "--log", str(cut))
    assert r.returncode == 1, r.stderr
    # the error names the file and where it stopped …
    m = re.search(re.escape(str(cut)) + r": unreadable at (line|frame) (\d+)", " ".join(r.stderr.split()))
    assert m, r.stderr
    kept = store.read_samples(home)
    assert 0 < len(kept) < N  # the part before the cut is in the store
    assert "frames read" in r.stderr
    # … and what was kept is exactly an import of the file up to that line or frame
    unit, pos = m.group(1), int(m.group(2))
    before = tmp_path / f"before{suffix}"
    if unit == "line":
        opener = gzip.open if suffix.endswith(".gz") else open
        with opener(whole, "rt") as fh:
            lines = fh.readlines()
        head = lines[:pos - 1] + (["End TriggerBlock\n"] if ".asc" in suffix else [])
        with opener(before, "wt") as fh:
            fh.writelines(head)
    else:
        _write(before, list(can.LogReader(whole))[:pos - 1])
    ref = Paths.from_env(tmp_path / "reference").ensure()
    rep = can_ingest.import_log(before, ref)
    assert rep.error is None, rep.error
    pd.testing.assert_frame_equal(kept, store.read_samples(ref))


def test_corrupt_container_mid_blf_names_the_frame_and_keeps_what_came_before(home, tmp_path, traffic):
    """A reader that fails in the middle (a BLF container that no longer decompresses): the error
    names the first frame not read, and what was kept is exactly an import of the frames before it."""
    whole = tmp_path / "whole.blf"
    with can.BLFWriter(str(whole), max_container_size=8192) as w:   # small containers: many of them
        for m in traffic:
            w.on_message_received(m)
    data = bytearray(whole.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 64):
        data[i] ^= 0xFF
    bad = tmp_path / "bad.blf"
    bad.write_bytes(bytes(data))
    rep = can_ingest.import_log(bad, home)
    m = re.search(re.escape(str(bad)) + r": unreadable at frame (\d+)", rep.error or "")
    assert m, rep.error
    pos = int(m.group(1))
    assert 1 < pos < N and rep.frames == pos - 1
    before = tmp_path / "before.blf"
    _write(before, list(can.LogReader(whole))[:pos - 1])
    ref = Paths.from_env(tmp_path / "reference").ensure()
    assert can_ingest.import_log(before, ref).error is None
    kept = store.read_samples(home)
    assert len(kept) > 0
    pd.testing.assert_frame_equal(kept, store.read_samples(ref))


def test_bad_line_in_the_middle_is_skipped_not_fatal(home, tmp_path, traffic):
    path = tmp_path / "mid.log"
    _write(path, traffic)
    lines = path.read_text().splitlines(keepends=True)
    lines[100] = "(garbage line\n"
    lines[200] = lines[200].replace("#", "#Z")
    path.write_text("".join(lines))
    rep = can_ingest.import_log(path, home)
    assert rep.error and "2 unreadable line(s)" in rep.error and "line 101" in rep.error and "line 201" in rep.error
    assert rep.frames == N - 2 + 1 or rep.frames >= N - 3   # every other line read
    assert rep.samples > 10


def test_29bit_ids_decode_like_11bit(home, tmp_path):
    path = tmp_path / "ext.log"
    _write(path, ecu_sim.obd_traffic(1500, extended=True))
    rep = can_ingest.import_log(path, home)
    assert rep.error is None and rep.vehicle_id == DEFAULT_VIN
    assert rep.ecus == ["10", "11"] and rep.values > 500


def test_no_vin_in_log_needs_vehicle_id(home, tmp_path):
    path = tmp_path / "novin.log"
    _write(path, ecu_sim.obd_traffic(500, vin=None))
    r = _run(home, "--log", str(path))
    assert r.returncode == 2 and "no VIN in the traffic" in r.stderr and "--vehicle-id" in r.stderr
    assert store.read_samples(home).empty
    r = _run(home, "--log", str(path), "--vehicle-id", "1HGCM82633A004352")
    assert r.returncode == 0, r.stderr
    assert set(store.read_samples(home)["vehicle_id"]) == {"1HGCM82633A004352"}


def test_isotp_out_of_order_consecutive_frame_is_an_error_not_a_value():
    vals = []
    d = ObdDecoder(lambda ts, c, v: vals.append((c, v)))
    ff, *cfs = ecu_sim.segment(bytes([0x49, 0x02, 0x01]) + DEFAULT_VIN.encode())
    d.feed(0.0, 0x7E8, False, ff)
    d.feed(0.1, 0x7E8, False, cfs[1])   # sequence 2 before 1
    assert d.stats.isotp_errors == 1 and d.stats.messages == 0
    d.feed(0.2, 0x7E8, False, bytes([0x03, 0x7F, 0x01, 0x31, 0, 0, 0, 0]))
    assert d.stats.negative == 1 and d.stats.nrc == {0x31: 1} and vals == []


def test_live_virtual_bus_with_ecu_responders(home):
    """Our tester on a virtual bus: VIN over multi-frame ISO-TP (we send the flow control),
    multi-PID answers from the engine, the transmission answering too, a refused request."""
    channel = f"autopdm-test-{os.getpid()}"
    ecus = ecu_sim.EcuResponder(channel, negative={bytes([0x01, 0x2F, 0x31, 0x42, 0x46, 0xA6]): 0x31})
    ecus.start()
    try:
        rep = canlive.record_bus("virtual", channel, home, duration=2.5, period=0.05)
    finally:
        ecus.stop()
    assert rep.vehicle_id == DEFAULT_VIN
    assert ecus.flow_controls >= 2                 # VIN and the 6-PID answer are multi-frame
    assert rep.ecus == ["00", "01"]
    assert rep.negative_responses > 0
    s = store.read_samples(home)
    assert len(s) >= 2 and s["rpm"].notna().all() and s["speed_kph"].notna().all()
    assert s["distance_since_dtc_clear_km"].isna().all() and s["odometer_km"].isna().all()  # refused → null
    assert "P0562" in set(store.read_dtc_events(home)["code"])


def test_live_bus_cli(home):
    """The CLI in-process (python-can's virtual bus does not cross processes)."""
    from typer.testing import CliRunner

    from autopdm.cli import app

    channel = f"autopdm-cli-{os.getpid()}"
    ecus = ecu_sim.EcuResponder(channel)
    ecus.start()
    try:
        r = CliRunner().invoke(app, ["ingest", "can", "--interface", "virtual", "--channel", channel, "--duration", "1.5"])
    finally:
        ecus.stop()
    assert r.exit_code == 0, r.output
    assert len(store.read_samples(home)) >= 1
    assert set(store.read_samples(home)["vehicle_id"]) == {DEFAULT_VIN}


def _hyundai_frames(db, t0=1_767_254_400.0, seconds=6, hz=10):
    msgs = []
    for i in range(seconds * hz):
        t = t0 + i / hz
        v = 60 + 20 * math.sin(i / 20)
        braking = i % 30 > 20
        def enc(name, **sig):
            m = db.get_message_by_name(name)
            full = {s.name: 0 for s in m.signals}
            full.update(sig)
            return can.Message(timestamp=t, arbitration_id=m.frame_id, is_extended_id=False,
                               data=m.encode(full, strict=False))
        msgs.append(enc("WHL_SPD11", WHL_SPD_FL=v, WHL_SPD_FR=v + 0.5, WHL_SPD_RL=v - 0.5, WHL_SPD_RR=v))
        msgs.append(enc("ESP12", CYL_PRES=35.0 if braking else 0.0))
        msgs.append(enc("TCS13", DriverBraking=int(braking)))
        if i % hz == 0:
            msgs.append(enc("TPMS11", UNIT=0, PRESSURE_FL=33, PRESSURE_FR=34, PRESSURE_RL=32, PRESSURE_RR=31))
            msgs.append(enc("BAT11", BAT_SNSR_V=12.42))
        msgs.append(can.Message(timestamp=t, arbitration_id=0x999, data=b"\x01\x02"))  # not in the map
    return msgs


def test_dbc_decode_hyundai_ccan(home, tmp_path):
    pytest.importorskip("opendbc")
    import cantools

    from autopdm.ingest.codecs.dbc import resolve_dbc

    example = Path(__file__).parents[1] / "examples" / "hyundai_2015_ccan_signals.yaml"
    db = cantools.database.load_file(str(resolve_dbc("opendbc:hyundai_2015_ccan.dbc")))
    path = tmp_path / "hyundai.blf"
    _write(path, _hyundai_frames(db))
    r = _run(home, "--log", str(path), "--signals", str(example), "--vehicle-id", "KMHDH41EXFU123456")
    assert r.returncode == 0, r.stderr
    s = store.read_samples(home)
    assert len(s) == 6
    assert s["speed_kph"].between(39, 81).all()
    assert s["brake_pressure_bar"].max() == pytest.approx(35.0, abs=0.1) and s["brake_pressure_bar"].min() == 0
    assert s["brake_switch"].any() and not s["brake_switch"].all()
    assert s["tire_pressure_kpa_fl"].iloc[0] == pytest.approx(33 * 6.894757, rel=1e-6)   # psi → kPa
    assert s["control_module_voltage_v"].iloc[0] == pytest.approx(12.42, abs=0.002)
    assert "skipped" in r.stderr

    bad = tmp_path / "bad.yaml"
    bad.write_text("dbc: opendbc:hyundai_2015_ccan.dbc\ncolumns:\n  brake_pressure_bar: {message: ESP12, signal: NOPE}\n")
    r = _run(home, "--log", str(path), "--signals", str(bad), "--vehicle-id", "KMHDH41EXFU123456")
    assert r.returncode == 2 and "signal 'NOPE' is not in ESP12" in r.stderr


def test_tester_gives_up_on_a_half_answer_after_n_cr(home):
    """The ECUs stop after the first frame of every multi-frame answer (the VIN, 6-PID answers).
    The tester's ISO-TP stack waits N_Cr for the next consecutive frame, drops the half answer
    (never decoded) and goes on polling; without N_Cr it would wait forever on the first one."""
    channel = f"autopdm-ncr-{os.getpid()}"
    ecus = ecu_sim.EcuResponder(channel, break_multiframe=True)
    ecus.start()
    try:
        rep = canlive.record_bus("virtual", channel, home, vehicle_id=DEFAULT_VIN, duration=2.5, period=0.0,
                                 timing=canlive.IsoTpTiming(n_cr_ms=150))
    finally:
        ecus.stop()
    assert ecus.flow_controls >= 5                  # the tester's stack answered each first frame …
    assert rep.isotp_timeouts >= 5                  # … and timed each stalled answer out
    assert ecus.requests >= 8                       # and went on asking
    s = store.read_samples(home)
    # the engine's answers were all multi-frame: none decoded; the gearbox's single frames were
    assert s["rpm"].isna().all() and s["odometer_km"].isna().all() and s["speed_kph"].notna().any()


def test_ecu_abandons_an_answer_after_n_bs_when_nobody_sends_flow_control(home):
    """A listen-only recorder never transmits, not even flow control. An ECU asked for its VIN by
    a tester that then goes quiet waits N_Bs for the flow control, abandons the answer, and still
    answers the next request; the listener decodes the single-frame answers it hears."""
    import threading

    channel = f"autopdm-nbs-{os.getpid()}"
    ecus = ecu_sim.EcuResponder(channel, n_bs_ms=300)
    ecus.start()
    tester = can.Bus(interface="virtual", channel=channel)
    reports = []
    listener = threading.Thread(target=lambda: reports.append(canlive.record_bus(
        "virtual", channel, home, vehicle_id=DEFAULT_VIN, duration=2.0, query=False)))
    listener.start()
    try:
        time.sleep(0.3)
        tester.send(can.Message(arbitration_id=0x7DF, is_extended_id=False, data=b"\x02\x09\x02\x00\x00\x00\x00\x00"))
        time.sleep(0.15)
        assert ecus.fc_timeouts == 0                 # still within N_Bs
        time.sleep(0.4)
        assert ecus.fc_timeouts == 1                 # N_Bs expired: the VIN answer was abandoned
        tester.send(can.Message(arbitration_id=0x7DF, is_extended_id=False, data=b"\x02\x01\x0d\x00\x00\x00\x00\x00"))
        listener.join(timeout=10)
    finally:
        tester.shutdown()
        ecus.stop()
    rep = reports[0]
    assert ecus.flow_controls == 0                  # the listener sent none
    assert rep.values >= 1 and rep.vehicle_id == DEFAULT_VIN   # the speed answer, heard passively
    assert store.read_samples(home)["speed_kph"].notna().any()
