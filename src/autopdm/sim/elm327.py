"""A simulated ELM327 adapter plugged into a simulated car, on a pseudo-terminal.

python-OBD (or any serial OBD tool) talks to it exactly as to a USB/Bluetooth dongle: open the
slave path it prints, send AT commands and OBD requests, read ``>``-terminated answers. Used by
the tests and for demos::

    python -m autopdm.sim.elm327 --link /tmp/elm     # then: autopdm ingest obd --port /tmp/elm

What it speaks (ELM327 v1.5 data sheet subset): ATZ ATI AT@1 ATE0/1 ATL0/1 ATS0/1 ATH0/1 ATSP/ATTP
ATDP ATDPN ATRV ATSH ATST ATAT ATCAF ATM0 ATD ATLP; mode 01 PIDs with supported-PID bitmaps
(0100, 0120, …), several PIDs per request (up to 6, as J1979 allows on CAN), the trailing
response-count digit python-OBD's fast mode appends, the bare CR that repeats the last command;
mode 03 stored DTCs, 07 pending DTCs, 09 00/02 VIN as a multi-frame ISO-TP answer; a second ECU
(transmission, 7E9) answering some requests; negative responses (7F) for chosen requests.

The car has an ignition (``sim.ignition = False`` → "NO DATA" and resting battery voltage on ATRV)
and the dongle can be pulled out of the socket (``sim.unplug()`` closes the pty, so the reader
gets an I/O error) and plugged back in (``sim.plug()``: a new pty, the same ``link`` path).

Adapters and ECUs that behave less well, as options:

* ``multi_pid``: ``True`` (up to six PIDs answered per request), ``"first"`` (or ``False``: only
  the first PID of a request is answered) or ``"none"`` (``NO DATA`` to any request for several
  PIDs, while single-PID requests are answered: many older or cheaper ECUs);
* ``ecu_delay``: the ECU answers after this many seconds; when that is longer than the ELM's
  timeout (``ATST``, 200 ms by default, at most 1,020 ms with ``ATST FF``) the adapter says
  ``NO DATA`` after its timeout (a slow ECU);
* ``quirks`` of clone adapters: ``"echo"`` (echo stays on whatever ``ATE0`` says),
  ``"no_spaces"`` (bytes never separated by spaces), ``"searching"`` (``SEARCHING...`` before
  every answer), ``"bus_init"`` (``BUS INIT: ...ERROR`` to the first requests after a reset or
  a protocol change, as a clone trying K-line first does).
"""

from __future__ import annotations

import argparse
import math
import os
import select
import threading
import time
import tty
from pathlib import Path

from autopdm.ingest.codecs.obdcodec import PIDS, encode_dtc, encode_mode01, supported_bitmap

DEFAULT_VIN = "KMHDH41EXFU123456"  # a syntactically valid 2015 Hyundai VIN (made up for tests)
DEFAULT_PIDS = frozenset(PIDS)  # everything we poll, odometer 0xA6 included
QUIRKS = frozenset({"echo", "no_spaces", "searching", "bus_init"})
PROTOCOLS = {"6": "ISO 15765-4 (CAN 11/500)", "7": "ISO 15765-4 (CAN 29/500)",
             "8": "ISO 15765-4 (CAN 11/250)", "9": "ISO 15765-4 (CAN 29/250)"}


class Car:
    """Engine values as a function of time since the ignition came on (a repeating drive cycle)."""

    def __init__(self, odometer_km: float = 48_211.3, fuel_pct: float = 62.0):
        self.odometer_km = odometer_km
        self.fuel_pct = fuel_pct
        self.on_since: float | None = None
        self._last = time.monotonic()

    def tick(self, now: float) -> None:
        dt, self._last = now - self._last, now
        if self.on_since is not None:
            self.odometer_km += self.speed(now) / 3600.0 * max(dt, 0.0)

    def speed(self, now: float) -> float:
        if self.on_since is None:
            return 0.0
        t = now - self.on_since
        return max(0.0, 55 + 45 * math.sin(t / 6.0 - 1.2)) if t > 2 else 0.0

    def values(self, now: float) -> dict[int, float]:
        self.tick(now)
        t = now - (self.on_since or now)
        v = self.speed(now)
        return {
            0x04: min(100.0, 18 + v * 0.5),
            0x05: min(90.0, 20 + t * 2.0),
            0x0C: 780 + v * 28,
            0x0D: v,
            0x0F: 24.0,
            0x11: min(100.0, 12 + v * 0.4),
            0x2F: self.fuel_pct,
            0x31: 1234.0 + (self.odometer_km - 48_211.3),
            0x42: 10.4 if t < 1.0 else 14.1,  # crank dip, then charging
            0x46: 17.0,
            0xA6: self.odometer_km,
        }


class Elm327Simulator:
    def __init__(self, vin: str | None = DEFAULT_VIN, pids=DEFAULT_PIDS, dtcs=("P0562",), pending=("P0420",),
                 *, link: str | os.PathLike | None = None, multi_pid: bool = True, second_ecu: bool = True,
                 protocol: str = "6", negative: dict[bytes, int] | None = None, latency: float = 0.0,
                 elm_timeout: float = 0.0, rest_voltage: float = 12.55, ignition: bool = True,
                 ecu_delay: float = 0.0, quirks=(), bus_init_errors: int = 2):
        self.vin = vin
        self.pids = set(pids)
        self.dtcs, self.pending = list(dtcs), list(pending)
        self.link = Path(link) if link else None
        self.multi_pid = {True: "all", False: "first"}.get(multi_pid, multi_pid)
        if self.multi_pid not in ("all", "first", "none"):
            raise ValueError(f"multi_pid: True, 'first' or 'none', not {multi_pid!r}")
        self.ecu_delay = ecu_delay
        self.quirks = frozenset(quirks)
        unknown = self.quirks - QUIRKS
        if unknown:
            raise ValueError(f"unknown quirks {sorted(unknown)}; known: {sorted(QUIRKS)}")
        self.bus_init_errors = bus_init_errors
        self.second_ecu = second_ecu
        self.protocol = protocol
        self.negative = dict(negative or {})  # request hex (b"0131") → NRC
        self.latency = latency                 # bus round trip per OBD request (s)
        self.elm_timeout = elm_timeout         # extra wait when no response count is given (s)
        self.rest_voltage = rest_voltage
        self.car = Car()
        self._ignition = False
        self.ignition = ignition
        self.requests = 0                      # OBD requests answered (not AT commands)
        self.log: list[str] = []
        self._master: int | None = None
        self._slave: int | None = None
        self.port: str | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._reset()

    # -- car state ----------------------------------------------------------------------------
    @property
    def ignition(self) -> bool:
        return self._ignition

    @ignition.setter
    def ignition(self, on: bool) -> None:
        if on and not self._ignition:
            self.car.on_since = time.monotonic()
        if not on:
            self.car.on_since = None
        self._ignition = bool(on)

    # -- pty lifecycle --------------------------------------------------------------------------
    def start(self) -> "Elm327Simulator":
        self.plug()
        return self

    def plug(self) -> str:
        """Plug the dongle in: a fresh pty (and the link path pointed at it)."""
        self.unplug()
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        if self.link:
            tmp = self.link.with_name(self.link.name + ".new")
            tmp.unlink(missing_ok=True)
            os.symlink(self.port, tmp)
            os.replace(tmp, self.link)
        self._reset()
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name="elm327-sim", daemon=True)
        self._thread.start()
        return str(self.link or self.port)

    def unplug(self) -> None:
        """Pull the dongle out: the pty goes away; the other side gets an I/O error."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        for fd in (self._master, self._slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = None

    stop = unplug

    def __enter__(self) -> "Elm327Simulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.unplug()

    @property
    def path(self) -> str:
        return str(self.link or self.port)

    # -- protocol ----------------------------------------------------------------------------------
    def _reset(self) -> None:
        self.echo, self.linefeeds, self.spaces, self.headers = True, False, True, False
        self.connected = False  # protocol established with the car
        self.last = ""
        self.timeout_ms = 200   # ATST (4 ms units; 0x32 by default)
        self._init_errors_left = self.bus_init_errors if "bus_init" in self.quirks else 0

    def _serve(self) -> None:
        buf = b""
        master = self._master
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([master], [], [], 0.05)
            except (OSError, ValueError):
                return
            if not r:
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while b"\r" in buf:
                raw, buf = buf.split(b"\r", 1)
                cmd = raw.decode("ascii", "ignore").replace(" ", "").replace("\n", "").upper()
                cmd = "".join(c for c in cmd if c.isprintable() and c != "\x7f")
                out = self._answer(raw.decode("ascii", "ignore"), cmd)
                try:
                    os.write(master, out)
                except OSError:
                    return

    def _eol(self) -> str:
        return "\r\n" if self.linefeeds else "\r"

    def _answer(self, raw: str, cmd: str) -> bytes:
        if cmd == "" and self.last:
            cmd = self.last
        elif cmd:
            self.last = cmd
        lines = self._handle(cmd) if cmd else ["?"]
        eol = self._eol()
        echo = raw + eol if self.echo or "echo" in self.quirks else ""
        body = eol.join(lines)
        return (echo + body + eol + eol + ">").encode("ascii")

    def _handle(self, cmd: str) -> list[str]:
        self.log.append(cmd)
        if cmd.startswith("AT"):
            return self._at(cmd[2:])
        if not all(c in "0123456789ABCDEF" for c in cmd) or len(cmd) < 2:
            return ["?"]
        return self._obd(cmd)

    def _at(self, a: str) -> list[str]:
        if a == "Z":
            self._reset()
            time.sleep(0.01)
            return ["", "ELM327 v1.5"]
        if a == "I":
            return ["ELM327 v1.5"]
        if a == "@1":
            return ["OBDII to RS232 Interpreter"]
        if a == "D":
            self._reset()
            return ["OK"]
        flags = {"E0": ("echo", False), "E1": ("echo", True), "L0": ("linefeeds", False), "L1": ("linefeeds", True),
                 "S0": ("spaces", False), "S1": ("spaces", True), "H0": ("headers", False), "H1": ("headers", True)}
        if a in flags:
            setattr(self, *flags[a])
            return ["OK"]
        if a.startswith(("SP", "TP")):
            p = a[2:].lstrip("A") or "0"
            if p not in ("0", *PROTOCOLS):
                return ["?"]
            if p != "0":
                self.protocol = p
            self.connected = False
            return ["OK"]
        if a == "DPN":
            return [("A" if not self.connected else "A") + self.protocol]
        if a == "DP":
            return ["AUTO, " + PROTOCOLS[self.protocol]]
        if a == "RV":
            v = self.car.values(time.monotonic())[0x42] if self._ignition else self.rest_voltage
            return [f"{v:.1f}V"]
        if a.startswith("ST") and len(a) == 4:
            try:
                self.timeout_ms = max(1, int(a[2:], 16)) * 4
            except ValueError:
                return ["?"]
            return ["OK"]
        if a.startswith(("SH", "AT", "CAF", "M", "AL", "CRA", "FC")):
            return ["OK"]
        if a == "LP":
            return ["OK"]
        return ["?"]

    # -- OBD requests -------------------------------------------------------------------------------
    def _obd(self, cmd: str) -> list[str]:
        count_given = len(cmd) % 2 == 1  # python-OBD fast mode: trailing response-count digit
        if count_given:
            cmd = cmd[:-1]
        try:
            req = bytes.fromhex(cmd)
        except ValueError:
            return ["?"]
        searching = not self.connected or "searching" in self.quirks
        if self._init_errors_left:
            self._init_errors_left -= 1
            return ["BUS INIT: ...ERROR"]
        if not self._ignition:
            time.sleep(self.latency)
            return ["SEARCHING...", "UNABLE TO CONNECT"] if not self.connected else ["NO DATA"]
        self.connected = True
        self.requests += 1
        if self.latency:
            time.sleep(self.latency)
        if self.ecu_delay:
            if self.ecu_delay * 1000 > self.timeout_ms:  # the ELM gives up before the ECU answers
                time.sleep(self.timeout_ms / 1000)
                return ["NO DATA"]
            time.sleep(self.ecu_delay)
        if self.elm_timeout and not count_given:
            time.sleep(self.elm_timeout)  # the ELM waits for more answers until its timeout
        answers = self._ecu_answers(req)
        if not answers:
            return ["NO DATA"]
        lines = []
        for tx, payload in answers:
            lines += self._frames(tx, payload)
        return (["SEARCHING..."] if searching else []) + lines

    def _ecu_answers(self, req: bytes) -> list[tuple[int, bytes]]:
        """(ECU number 0=engine 1=transmission, response payload) pairs."""
        mode = req[0]
        key = req.hex().upper().encode()
        if key in self.negative:
            return [(0, bytes([0x7F, mode, self.negative[key]]))]
        now = time.monotonic()
        if mode == 0x01 and len(req) >= 2:
            pids = list(req[1:7])
            if len(pids) > 1 and self.multi_pid == "none":
                return []
            if self.multi_pid == "first":
                pids = pids[:1]
            vals = self.car.values(now)
            body = bytearray([0x41])
            for pid in pids:
                if pid % 0x20 == 0:
                    body += bytes([pid]) + supported_bitmap(self.pids, pid)
                elif pid in self.pids and pid in vals:
                    body += bytes([pid]) + encode_mode01(pid, vals[pid])
            out = [(0, bytes(body))] if len(body) > 1 else []
            if self.second_ecu:
                tcm = bytearray([0x41])
                for pid in pids:
                    if pid == 0x00:
                        tcm += bytes([0x00]) + supported_bitmap({0x0D}, 0x00)
                    elif pid == 0x0D:
                        tcm += bytes([0x0D]) + encode_mode01(0x0D, vals[0x0D])
                if len(tcm) > 1:
                    out.append((1, bytes(tcm)))
            return out
        if mode in (0x03, 0x07):
            codes = self.dtcs if mode == 0x03 else self.pending
            return [(0, bytes([mode + 0x40, len(codes)]) + b"".join(encode_dtc(c) for c in codes))]
        if mode == 0x09 and len(req) >= 2:
            if req[1] == 0x00:
                return [(0, bytes([0x49, 0x00]) + supported_bitmap({0x02} if self.vin else set(), 0x00))]
            if req[1] == 0x02 and self.vin:
                return [(0, bytes([0x49, 0x02, 0x01]) + self.vin.encode("ascii"))]
            return []
        return [(0, bytes([0x7F, mode, 0x11]))]  # serviceNotSupported

    def _frames(self, ecu: int, payload: bytes) -> list[str]:
        if len(payload) <= 7:
            frames = [bytes([len(payload)]) + payload]
        else:
            n = len(payload)
            frames = [bytes([0x10 | (n >> 8), n & 0xFF]) + payload[:6]]
            rest, seq = payload[6:], 1
            while rest:
                chunk, rest = rest[:7], rest[7:]
                frames.append(bytes([0x20 | (seq & 0x0F)]) + chunk.ljust(7, b"\x00"))
                seq += 1
        if self.protocol in ("7", "9"):
            header = f"18DAF1{0x10 + ecu:02X}"
        else:
            header = f"7E{8 + ecu:X}"
        sep = " " if self.spaces and "no_spaces" not in self.quirks else ""
        out = []
        for f in frames:
            data = sep.join(f"{b:02X}" for b in f)
            if self.headers:
                h = sep.join(header[i:i + 2] for i in range(0, len(header), 2)) if len(header) == 8 else header
                out.append(h + sep + data)
            else:
                out.append(data)
        return out


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - manual demo
    ap = argparse.ArgumentParser(description="Simulated ELM327 on a pty")
    ap.add_argument("--link", help="symlink path to point at the pty (stable across re-plugs)")
    ap.add_argument("--vin", default=DEFAULT_VIN)
    ap.add_argument("--latency", type=float, default=0.0, help="simulated bus round trip per request (s)")
    ap.add_argument("--multi-pid", choices=["all", "first", "none"], default="all",
                    help="how the ECU answers requests for several PIDs")
    ap.add_argument("--ecu-delay", type=float, default=0.0, help="seconds the ECU takes to answer (slow ECU)")
    ap.add_argument("--quirk", action="append", default=[], choices=sorted(QUIRKS), help="clone adapter quirk (repeatable)")
    args = ap.parse_args(argv)
    sim = Elm327Simulator(vin=args.vin or None, link=args.link, latency=args.latency, multi_pid=args.multi_pid,
                          ecu_delay=args.ecu_delay, quirks=args.quirk).start()
    print(f"ELM327 simulator on {sim.path} (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        sim.unplug()


if __name__ == "__main__":  # pragma: no cover
    main()
