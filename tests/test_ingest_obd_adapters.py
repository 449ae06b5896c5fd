"""Adapters and ECUs that behave less well than the plain simulator, each against the real
recorder (python-OBD over a pty): first the simulator option is shown to change what goes over
the wire, then the recorder is shown to record through it."""

from __future__ import annotations

import threading

import pytest

obd = pytest.importorskip("obd")
serial = pytest.importorskip("serial")

from autopdm import store  # noqa: E402
from autopdm.ingest.codecs.obdcodec import PIDS  # noqa: E402
from autopdm.ingest.obd import ObdRecorder  # noqa: E402
from autopdm.sim.elm327 import Elm327Simulator  # noqa: E402

VIN = "KMHDH41EXFU123456"
ALL_COLUMNS = {col for col, _, _ in PIDS.values()}


def raw(port: str, *cmds: str, timeout: float = 3.0) -> list[str]:
    """What the adapter sends back, byte for byte, to each command (no python-OBD in between)."""
    out = []
    with serial.Serial(port, timeout=timeout) as s:
        for c in cmds:
            s.write(c.encode() + b"\r")
            buf = b""
            while not buf.endswith(b">"):
                chunk = s.read(1)
                if not chunk:
                    break
                buf += chunk
            out.append(buf.decode("ascii", "replace"))
    return out


def record(home, sim: Elm327Simulator, seconds: float = 4.0, **kw):
    rec = ObdRecorder(sim.port, home, duration=seconds, protocol="6", interval=0.0, **kw)
    stats = rec.run()
    return rec, stats, store.read_samples(home)


def assert_recorded_everything(stats, samples, min_rows: int = 5):
    assert stats.trips_closed == 0, stats.events                 # never mistaken for "ignition off"
    assert stats.vehicle_id == VIN
    assert len(samples) >= min_rows
    for col in ALL_COLUMNS:
        assert samples[col].notna().any(), col


def test_multi_pid_unsupported_ecu_is_polled_one_pid_at_a_time(home):
    with Elm327Simulator(multi_pid="none") as sim:
        single, multi = raw(sim.port, "ATE0", "010C", "010C0D")[1:]
        assert "41 0C" in single and "NO DATA" in multi          # the option does what it says
        rec, stats, samples = record(home, sim)
    assert_recorded_everything(stats, samples, min_rows=10)
    assert not rec.caps.multi and rec.caps.single
    assert all(len(g) == 1 for g in stats.plan) and len(stats.plan) == len(PIDS)
    assert any("one PID per request" in e for e in stats.events)


def test_answers_stopping_mid_trip_reprobe_not_ignition_off(home):
    """The ECU stops answering multi-PID requests while recording (a gateway waking up, a mode
    change): the recorder finds single requests still answered and changes its plan."""
    with Elm327Simulator() as sim:
        rec = ObdRecorder(sim.port, home, duration=6.0, protocol="6", interval=0.0)
        import threading

        flip = threading.Timer(2.0, lambda: setattr(sim, "multi_pid", "none"))
        flip.start()
        try:
            stats = rec.run()
        finally:
            flip.cancel()
    samples = store.read_samples(home)
    assert stats.probes >= 2                                      # at the start, and when answers stopped
    assert stats.trips_closed == 0, stats.events
    assert all(len(g) == 1 for g in stats.plan)                  # now one PID per request …
    late = samples[samples["ts"] > samples["ts"].min() + __import__("pandas").Timedelta(seconds=3)]
    assert len(late) >= 3 and late["rpm"].notna().all()          # … and the trip goes on being recorded


def test_ignition_off_still_detected_when_single_requests_go_unanswered(home):
    with Elm327Simulator(multi_pid="none") as sim:
        rec = ObdRecorder(sim.port, home, duration=4.0, protocol="6", interval=0.0, off_poll=0.5)
        import threading

        threading.Timer(1.5, lambda: setattr(sim, "ignition", False)).start()
        stats = rec.run()
    assert stats.trips_closed == 1 and any("ignition off" in e for e in stats.events)


def test_slow_ecu_gets_the_longest_elm_timeout(home):
    with Elm327Simulator(ecu_delay=0.3) as sim:
        before, _, after = raw(sim.port, "ATE0", "010C", "ATSTFF", "010C")[1:]
        assert "NO DATA" in before and "41 0C" in after          # slower than the default 200 ms timeout
        plain = obd.OBD(sim.port, fast=True, timeout=0.5, protocol="6")
        try:
            assert plain.query(obd.commands.RPM, force=True).is_null()   # what python-OBD alone gets
        finally:
            plain.close()
        rec, stats, samples = record(home, sim, seconds=8.0)
    assert rec.caps.slow and rec.caps.multi
    assert_recorded_everything(stats, samples, min_rows=3)


@pytest.mark.parametrize("quirk", ["echo", "no_spaces", "searching", "bus_init"])
def test_clone_adapter_quirks(home, quirk):
    with Elm327Simulator(quirks=[quirk]) as sim:
        first, second = raw(sim.port, "ATE0", "010C")
        if quirk == "echo":
            assert second.startswith("010C")                     # echo stays on after ATE0 …
            plain = obd.OBD(sim.port, fast=True, timeout=0.5, protocol="6")
            assert plain.status() == obd.OBDStatus.NOT_CONNECTED  # … which python-OBD alone gives up on
            plain.close()
        elif quirk == "no_spaces":
            assert "410C" in second and "41 0C" not in second
        elif quirk == "searching":
            assert raw(sim.port, "010D")[0].count("SEARCHING...") == 1   # before every answer, not only the first
        else:
            assert "BUS INIT: ...ERROR" in second
        rec, stats, samples = record(home, sim)
    assert_recorded_everything(stats, samples)
    assert rec.caps.multi
    if quirk == "echo":
        assert stats.echoes_dropped > 10


def test_recorder_backs_off_while_the_adapter_is_absent(home):
    """Nothing listens on the port (a WiFi dongle switched off): every reconnect waits twice as
    long as the one before, up to max_backoff. The recorder's time is a fake clock here."""
    from autopdm.localproc import free_port

    now = [0.0]
    waits = []

    def wait(seconds):
        waits.append(seconds)
        now[0] += seconds

    rec = ObdRecorder(f"socket://127.0.0.1:{free_port()}", home, duration=120.0, max_backoff=30.0,
                      clock=lambda: now[0], wait=wait)
    # a recorder that retries without waiting never moves the fake clock to its deadline: stop it
    # after a while of real time so that the assertions below fail instead of the test hanging
    guard = threading.Timer(15.0, rec.stop)
    guard.start()
    try:
        stats = rec.run()
    finally:
        guard.cancel()
    assert waits, "the recorder retried an absent adapter without waiting"
    assert waits[:7] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    assert set(waits[7:-1]) == {30.0}                            # capped; the last wait is cut by the deadline
    assert sum(waits) == pytest.approx(120.0)                    # it ran to its deadline on the fake clock
    assert not stats.adapter_seen and stats.samples == 0
