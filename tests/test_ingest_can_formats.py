"""Differential test: every CAN log python-can writes is read by autopdm frame for frame as
python-can's own `LogReader` reads it (counts, kinds, ids and payloads), whichever path reads it
(the fast ASC / candump parsers or python-can itself)."""

from __future__ import annotations

import math
import random
from pathlib import Path

import can
import pytest

from autopdm.ingest import can as can_ingest
from autopdm.ingest.canlog import read_log

FD_SIZES = (0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64)
TEXT = [".asc", ".log", ".trc", ".csv", ".asc.gz", ".log.gz", ".trc.gz", ".csv.gz"]
BINARY = [".blf", ".mf4"]


class Recorder:
    """A sink that keeps every frame it is given."""

    def __init__(self):
        self.frames, self.errors, self.bad = [], 0, 0

    def feed(self, ts, arb, ext, data):
        self.frames.append((ts, arb, ext, bytes(data)))

    def error_frame(self):
        self.errors += 1

    def bad_frame(self):
        self.bad += 1


def random_frames(seed: int, n: int = 300, fd: bool = True) -> list[can.Message]:
    rng = random.Random(seed)
    t = 1_767_254_400.0 + rng.random()
    out = []
    for _ in range(n):
        t += rng.choice([0.0001, 0.001, 0.0137, 0.5])
        kind = rng.choices(["classic", "fd", "remote", "error"], weights=[6, 2 if fd else 0, 1, 1])[0]
        ext = rng.random() < 0.3
        arb = rng.randrange(1 << 29) if ext else rng.randrange(1 << 11)
        if kind == "error":
            out.append(can.Message(timestamp=t, is_error_frame=True, channel=0))
        elif kind == "remote":
            out.append(can.Message(timestamp=t, arbitration_id=arb, is_extended_id=ext, is_remote_frame=True,
                                   dlc=rng.randrange(9), channel=0))
        elif kind == "fd":
            size = rng.choice(FD_SIZES)
            out.append(can.Message(timestamp=t, arbitration_id=arb, is_extended_id=ext, is_fd=True,
                                   bitrate_switch=rng.random() < 0.5, data=rng.randbytes(size), channel=0))
        else:
            out.append(can.Message(timestamp=t, arbitration_id=arb, is_extended_id=ext,
                                   data=rng.randbytes(rng.randrange(9)), channel=0))
    return out


def write(path: Path, msgs) -> None:
    with can.Logger(str(path)) as lg:
        for m in msgs:
            lg.on_message_received(m)


def python_can_view(path: Path):
    msgs = list(can.LogReader(path))
    frames = [(m.timestamp, m.arbitration_id, m.is_extended_id, b"" if m.is_remote_frame else bytes(m.data))
              for m in msgs if not m.is_error_frame]
    return msgs, frames


def assert_same(ours: list, theirs: list) -> None:
    assert len(ours) == len(theirs)
    if not ours:
        return
    t0, u0 = ours[0][0], theirs[0][0]  # ASC: LogReader counts from 0, we from the header's date
    for k, (a, b) in enumerate(zip(ours, theirs)):
        assert a[1:] == b[1:], f"frame {k}: {a[1:]} != {b[1:]}"
        assert math.isclose(a[0] - t0, b[0] - u0, abs_tol=2e-6), f"frame {k}: time {a[0] - t0} != {b[0] - u0}"


def _check(path: Path, fast: bool = True):
    msgs, theirs = python_can_view(path)
    sink, outcome = read_log(path, Recorder, fast=fast)
    assert outcome.error is None, outcome.error
    assert outcome.bad == []
    assert_same(sink.frames, theirs)
    assert sink.errors == sum(m.is_error_frame for m in msgs)
    assert outcome.remote == sum(m.is_remote_frame for m in msgs)
    assert outcome.fd == sum(1 for m in msgs if m.is_fd and not m.is_error_frame)
    return msgs, outcome


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("suffix", TEXT + BINARY)
def test_every_frame_kind_reads_as_python_can_reads_it(tmp_path, suffix, seed):
    if suffix == ".mf4":
        pytest.importorskip("asammdf")
    path = tmp_path / f"random{suffix}"
    write(path, random_frames(seed))
    msgs, outcome = _check(path)
    assert len(msgs) > 150                                   # the writer kept the frames (TRC: classic only) …
    if suffix.startswith((".asc", ".log")):
        assert outcome.reader.startswith("fast")             # … and the fast path read them itself
    kinds = {"remote": sum(m.is_remote_frame for m in msgs), "error": sum(m.is_error_frame for m in msgs)}
    if not suffix.startswith((".trc", ".csv")):              # python-can's TRC and CSV writers drop some kinds
        assert kinds["remote"] > 0 and kinds["error"] > 0


@pytest.mark.parametrize("suffix", [".asc", ".log"])
def test_fast_path_and_python_can_path_agree(tmp_path, suffix):
    path = tmp_path / f"both{suffix}"
    write(path, random_frames(7))
    fast, o_fast = read_log(path, Recorder, fast=True)
    slow, o_slow = read_log(path, Recorder, fast=False)
    assert o_fast.reader.startswith("fast") and o_slow.reader.startswith("python-can")
    assert_same(fast.frames, slow.frames)
    assert (fast.errors, o_fast.remote, o_fast.fd) == (slow.errors, o_slow.remote, o_slow.fd)


def test_sqlite_log_reads_what_python_can_reads(tmp_path):
    """python-can's SqliteWriter writes from a thread; once stopped, what it wrote reads back the same."""
    path = tmp_path / "random.db"
    frames = [m for m in random_frames(4, n=200, fd=False) if not m.is_error_frame]
    write(path, frames)
    msgs, _ = _check(path)
    assert len(msgs) == len(frames)


def test_mixed_classic_and_fd_asc_by_hand(home, tmp_path):
    """The reported file: classic frames, then CAN FD, remote and error frames, CANalyzer's extra fields."""
    path = tmp_path / "mixed.asc"
    path.write_text(
        "date Thu Jan 1 08:00:00.000 am 2026\nbase hex  timestamps absolute\nno internal events logged\n"
        "Begin Triggerblock Thu Jan 1 08:00:00.000 am 2026\n"
        "   0.000000 Start of measurement\n"
        "   0.010000 1  7E8             Rx   d 8 03 41 0D 32 00 00 00 00  Length = 227910 BitCount = 118 ID = 2024\n"
        "   0.020000 CANFD   1 Rx        7E9                                   1 0 d 12 03 41 0D 33 00 00 00 00 00 00 00 00"
        "        0    0   1000 0 0 0 0 0\n"
        "   0.030000 1  123             Rx   r 8\n"
        "   0.040000 1  1ABCDEFx        Rx   r\n"
        "   0.050000 CANFD   1 Rx        456                                   1 0 8 0        0    0   1000 0 0 0 0 0\n"
        "   0.060000 1  ErrorFrame\n"
        "   0.070000 CANFD   1 Rx   ErrorFrame\n"
        "   0.080000 1  Statistic: D 0 R 0 XD 0 XR 0 E 0 O 0 B 0.00%\n"
        "End TriggerBlock\n")
    msgs, outcome = _check(path)
    assert len(msgs) == 7 and outcome.remote == 3 and outcome.fd == 2
    rep = can_ingest.import_log(path, home, vehicle_id="KMHDH41EXFU123456")
    assert rep.error is None and rep.frames == 7 and rep.error_frames == 2 and rep.remote_frames == 3
    assert rep.values == 2                                   # speed from the engine and, over CAN FD, the gearbox


def test_decimal_base_asc(tmp_path):
    path = tmp_path / "dec.asc"
    path.write_text("date Thu Jan 1 08:00:00.000 am 2026\nbase dec  timestamps absolute\n"
                    "Begin Triggerblock Thu Jan 1 08:00:00.000 am 2026\n"
                    "   0.010000 1  2024            Rx   d 8 3 65 13 50 0 0 0 0\n"
                    "   0.020000 1  2024            Rx   d 2 1 2\n"
                    "End TriggerBlock\n")
    _check(path)


def test_candump_error_class_without_bus_error_is_a_frame_as_in_python_can(tmp_path):
    """candump error frames carry CAN_ERR_FLAG; python-can calls one an error frame only with the
    bus-error class bit too, and reads the rest as ordinary frames. So do we."""
    path = tmp_path / "err.log"
    path.write_text("(1767254400.000000) can0 20000080#0000000000000000\n"
                    "(1767254400.100000) can0 20000004#0004000000000000\n"
                    "(1767254400.200000) can0 7E8#03410D32\n"
                    "(1767254400.300000) can0 123#R\n"
                    "(1767254400.400000) can0 7E9##103410D330000000000000000 R\n")
    msgs, outcome = _check(path)
    assert len(msgs) == 5 and sum(m.is_error_frame for m in msgs) == 1 and outcome.remote == 1
