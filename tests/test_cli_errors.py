"""Bad input never ends in a traceback: every `autopdm ingest` command on empty, binary, truncated,
corrupt and wrong-format files (and the OBD recorder on ports with no adapter), and every
command on a read-only home. Each gets a clear line naming the file (with the line or frame) or
the path, and a non-zero exit status; the good records of a damaged file are kept."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import can
import pytest
from typer.testing import CliRunner

from autopdm import store
from autopdm.cli import app
from autopdm.sim import ecu as ecu_sim

from .conftest import CAROBD
from .test_ingest_upload import TelemetryServer

VIN = "KMHDH41EXFU123456"
CLI = [sys.executable, "-c", "from autopdm.cli import main; main()"]
CAN_SUFFIXES = [".asc", ".log", ".blf", ".trc", ".csv", ".mf4", ".db", ".asc.gz", ".log.gz"]
TORQUE = ("GPS Time, Device Time,Speed (OBD)(km/h),Engine RPM(rpm)\n"
          + "".join(f"Sat Jun 18 10:05:{s:02d} GMT+01:00 2016,18-Jun-2016 10:05:{s:02d}.500,{s},{900 + s}\n"
                    for s in range(40)))


def _carobd() -> bytes:
    return sorted(CAROBD.glob("*.csv"))[0].read_bytes()


def _bad_texts(good: bytes, wrong: bytes) -> dict[str, bytes]:
    rng = random.Random(0)
    lines = good.splitlines(keepends=True)
    corrupt = lines[:]
    corrupt[20] = corrupt[20].rstrip(b"\r\n") + b" 1, 2, 3, 4, 5,\r\n"   # five extra fields
    corrupt.insert(30, rng.randbytes(4096))                              # 4 KB of binary mid-file
    return {"empty": b"", "binary": rng.randbytes(3000), "truncated": good[: len(good) // 2 + 7],
            "corrupt": b"".join(corrupt), "wrong": wrong}


def _bad_logs(tmp: Path) -> dict[str, Path]:
    rng = random.Random(1)
    out = {}
    for sfx in CAN_SUFFIXES:
        if sfx == ".mf4":
            pytest.importorskip("asammdf")
        good = tmp / f"good{sfx}"
        with can.Logger(str(good)) as lg:
            for m in ecu_sim.obd_traffic(800):
                lg.on_message_received(m)
        data = good.read_bytes()
        stem = sfx.replace(".", "_")
        files = {"empty": b"", "binary": rng.randbytes(2000), "truncated": data[: len(data) // 2 + 3],
                 "wrong": TORQUE.encode()}
        flipped = bytearray(data)
        for i in rng.sample(range(len(data) // 4, len(data)), 12):
            flipped[i] ^= 0xFF
        files["corrupt"] = bytes(flipped)
        for kind, blob in files.items():
            p = tmp / f"{kind}{stem}{sfx}"
            p.write_bytes(blob)
            out[f"{kind}{sfx}"] = p
    return out


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    files = {}
    for fmt, good, wrong in (("carobd", _carobd(), TORQUE.encode()), ("torque", TORQUE.encode(), _carobd())):
        for kind, blob in _bad_texts(good, wrong).items():
            p = tmp / f"{fmt}_{kind}.csv"
            p.write_bytes(blob)
            files[f"{fmt}:{kind}"] = p
    logs = _bad_logs(tmp)
    return files, logs


def _no_traceback(result) -> str:
    """The command's output with rich's line wrapping undone."""
    out = result.output if hasattr(result, "output") else result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)[:500]
    assert "Traceback" not in out
    return " ".join(out.split())


@pytest.mark.parametrize("fmt", ["carobd", "torque"])
@pytest.mark.parametrize("kind", ["empty", "binary", "truncated", "corrupt", "wrong"])
def test_ingest_csv_bad_files(home, bad_files, fmt, kind):
    path = bad_files[0][f"{fmt}:{kind}"]
    r = CliRunner().invoke(app, ["ingest", "csv", "--format", fmt, "--vehicle-id", VIN, str(path)])
    out = _no_traceback(r)
    assert r.exit_code == 1, out
    assert path.name in out
    if kind in ("corrupt", "truncated"):
        assert "line " in out                                    # where in the file
        assert len(store.read_samples(home)) > 10                # and the rest of it kept
    if kind == "corrupt" and fmt == "carobd":
        assert "fields, the header has" in out and "binary data" in out


@pytest.mark.parametrize("suffix", CAN_SUFFIXES)
@pytest.mark.parametrize("kind", ["empty", "binary", "truncated", "corrupt", "wrong"])
def test_ingest_can_bad_logs(home, bad_files, suffix, kind):
    path = bad_files[1][f"{kind}{suffix}"]
    r = CliRunner().invoke(app, ["ingest", "can", "--log", str(path), "--vehicle-id", VIN])
    out = _no_traceback(r)
    assert str(path) in out
    if kind == "truncated":
        # the error itself names the position (the summary line's "frames read" must not pass for it)
        assert r.exit_code == 1 and re.search(re.escape(str(path)) + r": unreadable at (line|frame) \d+", out), out
    if kind in ("empty", "wrong"):
        assert r.exit_code == 1 and "0 samples" in out           # nothing made up from a file with no frames


def test_many_files_one_summary_each_in_a_real_process(home, bad_files):
    """The real CLI with every bad file of a kind at once: the good ones are stored, each file
    gets its line, and the exit status says something was quarantined."""
    csvs, logs = bad_files
    good = sorted(CAROBD.glob("*.csv"))[0]
    env = dict(os.environ, AUTOPDM_HOME=str(home.home), COLUMNS="400")
    files = [str(good)] + [str(p) for k, p in csvs.items() if k.startswith("carobd:")]
    r = subprocess.run([*CLI, "ingest", "csv", "--format", "carobd", "--vehicle-id", VIN, *files],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    for f in files:
        assert Path(f).name in r.stderr
    assert f"{good}: {sum(1 for ln in open(good) if ln.strip()) - 1} samples, 0 quarantined" in r.stderr
    args = [a for p in logs.values() for a in ("--log", str(p))]
    r = subprocess.run([*CLI, "ingest", "can", "--vehicle-id", VIN, *args], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert f"{len(logs)} file(s)" in r.stderr


@pytest.mark.parametrize("port,code", [("/dev/ttyNOPE0", 2), ("socket://127.0.0.1:{free}", 1), ("{regular}", 1)])
def test_ingest_obd_bad_port(home, tmp_path, port, code):
    pytest.importorskip("obd")
    from autopdm.localproc import free_port

    regular = tmp_path / "not-a-port.txt"
    regular.write_text("hello\n")
    port = port.format(free=free_port(), regular=regular)
    env = dict(os.environ, AUTOPDM_HOME=str(home.home), COLUMNS="300")
    r = subprocess.run([*CLI, "ingest", "obd", "--port", port, "--duration", "2"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == code and "Traceback" not in r.stderr, r.stderr
    assert port in r.stderr and "error:" in r.stderr


@pytest.mark.parametrize("interface,channel", [("socketcan", "nocan0"), ("nosuchbus", "x")])
def test_ingest_can_bus_that_cannot_be_opened(home, interface, channel):
    r = CliRunner().invoke(app, ["ingest", "can", "--interface", interface, "--channel", channel, "--duration", "1"])
    out = _no_traceback(r)
    assert r.exit_code == 2 and f"{interface}:{channel}: cannot open the bus" in out


# -- a read-only home ------------------------------------------------------------------------------
COMMANDS = [
    ["ingest", "csv", "--format", "carobd", "--vehicle-id", VIN, "{carobd}"],
    ["ingest", "can", "--log", "{canlog}", "--vehicle-id", VIN],
    ["upload", "--url", "{server}"],
    ["trips"],
    ["features"],
    ["simulate", "--vehicles", "3", "--days", "20", "--seed", "1"],
    ["outbox", "status"],
    ["score", "--as-of", "2026-01-10", "--emit"],
    ["train"],
    ["monitor"],
]


def _can_mount() -> bool:
    """Root in a mount namespace of its own: a real read-only bind mount, a real full tmpfs."""
    if not shutil.which("unshare") or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return False
    r = subprocess.run(["unshare", "--mount", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True)
    return r.returncode == 0


MOUNTS = {
    # the home, bind-mounted read-only onto itself (EROFS, as on a write-protected card)
    "read-only": 'mount --bind "$H" "$H" && mount -o remount,bind,ro "$H" "$H"',
    # a copy of the home on a small tmpfs filled to the last byte (ENOSPC)
    "full": 'cp -a "$H" "$H.src" && mount -t tmpfs -o size=48m tmpfs "$H" && cp -a "$H.src/." "$H/" '
            '&& (dd if=/dev/zero of="$H/.filler" bs=64k 2>/dev/null; true)',
    # the same with 48 KB left: the command starts, the disk fills while it writes
    "filling": 'cp -a "$H" "$H.src" && mount -t tmpfs -o size=48m tmpfs "$H" && cp -a "$H.src/." "$H/" '
               '&& (dd if=/dev/zero of="$H/.filler" bs=64k 2>/dev/null; true) '
               '&& truncate -s -48K "$H/.filler"',
}


def _run_on(mode: str, home: Path, cmd: list[str], env: dict) -> subprocess.CompletedProcess:
    script = f'H="{home}"; {MOUNTS[mode]} && exec "$@"'
    return subprocess.run(["unshare", "--mount", "sh", "-c", script, "sh", *cmd], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.fixture(scope="module")
def populated(tmp_path_factory):
    """A home with samples, a spool batch, trips and a simulated fleet (what the commands read)."""
    root = tmp_path_factory.mktemp("pop")
    home = root / "var"
    env = dict(os.environ, AUTOPDM_HOME=str(home))
    good = sorted(CAROBD.glob("*.csv"))[0]
    for args in (["simulate", "--vehicles", "4", "--days", "30", "--seed", "2"],
                 ["ingest", "csv", "--format", "carobd", "--vehicle-id", VIN, str(good)]):
        subprocess.run([*CLI, *args], env=env, check=True, capture_output=True, timeout=300)
    from autopdm.config import Paths
    from autopdm.ingest import spool

    with spool.SpoolWriter(Paths.from_env(home), "obd") as w:
        w.commit([{"vehicle_id": VIN, "ts": "2026-01-01T00:00:00.000Z", "source": "obd", "rpm": 900.0}])
    canlog = root / "drive.log"
    with can.Logger(str(canlog)) as lg:
        for m in ecu_sim.obd_traffic(500):
            lg.on_message_received(m)
    return home, {"carobd": str(good), "canlog": str(canlog)}


@pytest.mark.skipif(not _can_mount(), reason="needs root and mount namespaces (unshare)")
@pytest.mark.parametrize("mode,args", [("read-only", a) for a in COMMANDS] + [("full", a) for a in COMMANDS[:5]],
                         ids=lambda v: v if isinstance(v, str) else " ".join(v[:2]))
def test_read_only_or_full_home_one_line_no_traceback(populated, tmp_path, mode, args):
    src, files = populated
    home = tmp_path / "var"
    shutil.copytree(src, home)
    env = dict(os.environ, AUTOPDM_HOME=str(home), COLUMNS="300")
    env.pop("MLFLOW_TRACKING_URI", None)
    with TelemetryServer() as srv:  # upload: the server acknowledges, the spool cannot record it
        r = _run_on(mode, home, [*CLI, *[a.format(server=srv.url, **files) for a in args]], env)
    assert "Traceback" not in r.stderr, r.stderr[-4000:]
    assert r.returncode != 0, r.stderr[-2000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    why = "read-only file system" if mode == "read-only" else "no space left"
    assert errors and str(home) in errors[-1] and why in errors[-1], r.stderr[-2000:]


@pytest.mark.skipif(not _can_mount(), reason="needs root and mount namespaces (unshare)")
@pytest.mark.parametrize("args", [["simulate", "--vehicles", "40", "--days", "120", "--seed", "3", "--raw-vehicles", "2"],
                                  ["ingest", "can", "--log", "{biglog}", "--vehicle-id", VIN]],
                         ids=["simulate", "ingest can"])
def test_disk_filling_up_during_a_command(populated, tmp_path, args):
    """Enough space to start, not to finish: the error comes from deep inside (pyarrow, the spool)
    and still ends in one line naming the home and why."""
    src, files = populated
    home = tmp_path / "var"
    shutil.copytree(src, home)
    biglog = tmp_path / "big.log"
    with can.Logger(str(biglog)) as lg:
        for m in ecu_sim.obd_traffic(60_000):
            lg.on_message_received(m)
    env = dict(os.environ, AUTOPDM_HOME=str(home), COLUMNS="300")
    r = _run_on("filling", home, [*CLI, *[a.format(biglog=biglog, **files) for a in args]], env)
    assert "Traceback" not in r.stderr, r.stderr[-4000:]
    assert r.returncode == 1, r.stderr[-2000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert errors and str(home) in errors[-1] and "no space left" in errors[-1], r.stderr[-2000:]
