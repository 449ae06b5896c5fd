"""Simulated OBD-II ECUs on a python-can bus, and synthetic OBD traffic for log files.

`EcuResponder` answers functional (0x7DF / 0x18DB33F1) and physical requests like a car's
engine (0x7E8) and transmission (0x7E9) controllers, through can-isotp: single-frame answers,
multi-frame answers (VIN, multi-PID) that wait for the tester's flow control before the
consecutive frames (and are abandoned after N_Bs without one), and negative responses (7F) for
requests configured to be refused.

`obd_traffic` yields the frames a tester session leaves on the bus (requests, answers, flow
control, a VIN, a refused request, unrelated traffic, error frames) for writing log files in
every python-can format (tests, benchmark).
"""

from __future__ import annotations

import math
import queue
import threading
import time
from typing import Iterator

import can

from autopdm.sim.elm327 import DEFAULT_VIN
from autopdm.ingest.codecs.obdcodec import encode_dtc, encode_mode01, supported_bitmap

ENGINE_PIDS = {0x04, 0x05, 0x0C, 0x0D, 0x0F, 0x11, 0x2F, 0x31, 0x42, 0x46, 0xA6}


def car_values(t: float) -> dict[int, float]:
    v = max(0.0, 50 + 40 * math.sin(t / 30.0))
    return {0x04: 20 + v * 0.4, 0x05: min(90.0, 20 + t), 0x0C: 800 + v * 30, 0x0D: v, 0x0F: 25.0, 0x11: 10 + v * 0.3,
            0x2F: 55.0, 0x31: 2000 + t * v / 3600, 0x42: 14.2, 0x46: 15.0, 0xA6: 60_000 + t * v / 3600}


def answer(ecu: int, req: bytes, t: float, vin: str | None, negative: dict[bytes, int]) -> bytes | None:
    """Payload an ECU (0 engine, 1 transmission) sends for request `req`, or None (silent)."""
    if not req:
        return None
    if ecu == 0 and req in negative:
        return bytes([0x7F, req[0], negative[req]])
    mode = req[0]
    pids_here = ENGINE_PIDS if ecu == 0 else {0x0D}
    if mode == 0x01:
        vals = car_values(t)
        body = bytearray([0x41])
        for pid in req[1:7]:
            if pid % 0x20 == 0:
                body += bytes([pid]) + supported_bitmap(pids_here, pid)
            elif pid in pids_here:
                body += bytes([pid]) + encode_mode01(pid, vals[pid])
        return bytes(body) if len(body) > 1 else None
    if ecu != 0:
        return None
    if mode == 0x09 and req[1:2] == b"\x02" and vin:
        return bytes([0x49, 0x02, 0x01]) + vin.encode()
    if mode == 0x03:
        return bytes([0x43, 1]) + encode_dtc("P0562")
    if mode == 0x07:
        return bytes([0x47, 0])
    return bytes([0x7F, mode, 0x11])


def segment(payload: bytes) -> list[bytes]:
    """ISO-TP frames (8 bytes, 0x00 padded) for a payload."""
    if len(payload) <= 7:
        return [(bytes([len(payload)]) + payload).ljust(8, b"\x00")]
    n = len(payload)
    frames = [bytes([0x10 | (n >> 8), n & 0xFF]) + payload[:6]]
    rest, seq = payload[6:], 1
    while rest:
        frames.append((bytes([0x20 | (seq & 0x0F)]) + rest[:7]).ljust(8, b"\x00"))
        rest, seq = rest[7:], seq + 1
    return frames


def resp_id(ecu: int, extended: bool) -> int:
    return (0x18DAF100 | (0x10 + ecu)) if extended else 0x7E8 + ecu


def req_id(ecu: int, extended: bool) -> int:
    """Physical request id of ECU `ecu` (where the tester's flow control arrives too)."""
    return (0x18DA00F1 | ((0x10 + ecu) << 8)) if extended else 0x7E0 + ecu


class EcuResponder(threading.Thread):
    """ECUs on a python-can bus. Each answers through its own can-isotp stack (physical ids), so
    a multi-frame answer waits for the tester's flow control and is abandoned when none comes
    within N_Bs (`n_bs_ms`), as a real ECU does. `break_multiframe` makes the ECUs stop after
    the first frame of a multi-frame answer (an ECU reset mid-answer): the tester's N_Cr."""

    def __init__(self, channel: str, vin: str | None = DEFAULT_VIN, ecus=(0, 1), negative: dict[bytes, int] | None = None,
                 extended: bool = False, n_bs_ms: int = 1000, break_multiframe: bool = False):
        super().__init__(name="ecu-responder", daemon=True)
        self.bus = can.Bus(interface="virtual", channel=channel, receive_own_messages=False)
        self.vin, self.ecus, self.extended = vin, tuple(ecus), extended
        self.negative = dict(negative or {})
        self.n_bs_ms = n_bs_ms
        self.break_multiframe = break_multiframe
        self._halt = threading.Event()
        self._functional: "queue.Queue[bytes]" = queue.Queue()
        self.requests = 0
        self.flow_controls = 0
        self.fc_timeouts = 0          # answers abandoned because the tester sent no flow control (N_Bs)
        self.t0 = time.monotonic()
        self._notifier = can.Notifier(self.bus, [self._on_frame], timeout=0.01)
        self.stacks = {e: self._stack(e) for e in self.ecus}

    def _address(self, ecu: int):
        import isotp

        mode = isotp.AddressingMode.Normal_29bits if self.extended else isotp.AddressingMode.Normal_11bits
        txid, rxid = resp_id(ecu, self.extended), req_id(ecu, self.extended)
        return isotp.Address(mode, txid=txid, rxid=rxid)

    def _stack(self, ecu: int):
        import isotp

        def on_error(exc):
            if isinstance(exc, isotp.FlowControlTimeoutError):
                self.fc_timeouts += 1

        stack = isotp.NotifierBasedCanStack(self.bus, self._notifier, address=self._address(ecu), error_handler=on_error,
                                            params={"rx_flowcontrol_timeout": self.n_bs_ms, "tx_padding": 0x00,
                                                    "tx_data_min_length": 8, "blocksize": 0, "stmin": 0})
        stack.start()
        return stack

    def _on_frame(self, m: can.Message) -> None:
        """Functional requests (always single frames) and a count of the tester's flow controls."""
        if not m.data or m.is_extended_id != self.extended:
            return
        functional = 0x18DB33F1 if self.extended else 0x7DF
        if m.arbitration_id == functional and m.data[0] & 0xF0 == 0x00:
            n = m.data[0] & 0x0F
            self._functional.put(bytes(m.data[1:1 + n]))
        elif m.data[0] & 0xF0 == 0x30 and m.arbitration_id in {req_id(e, self.extended) for e in self.ecus}:
            self.flow_controls += 1

    def _answer(self, ecu: int, req: bytes) -> None:
        p = answer(ecu, req, time.monotonic() - self.t0, self.vin, self.negative)
        if p is None:
            return
        if self.break_multiframe and len(p) > 7:  # first frame, then silence
            self.bus.send(can.Message(arbitration_id=resp_id(ecu, self.extended), is_extended_id=self.extended,
                                      data=segment(p)[0]))
            return
        self.stacks[ecu].send(p)

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                req = self._functional.get(timeout=0.005)
                targets = self.ecus
            except queue.Empty:
                req, targets = None, ()
                for ecu, stack in self.stacks.items():
                    got = stack.recv()
                    if got is not None:
                        req, targets = bytes(got), (ecu,)
                        break
            if req is None:
                continue
            self.requests += 1
            for ecu in targets:
                self._answer(ecu, req)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=2)
        for stack in self.stacks.values():
            stack.stop()
        self._notifier.stop()
        self.bus.shutdown()


def obd_traffic(n_frames: int, start: float = 1_767_254_400.0, vin: str | None = DEFAULT_VIN, rate_hz: float = 200.0,
                extended: bool = False, negative_every: int = 50, other_every: int = 10,
                error_every: int = 0) -> Iterator[can.Message]:
    """Frames of a tester session: VIN first, then polling cycles (a few PIDs per request)."""
    req_id = 0x18DB33F1 if extended else 0x7DF
    dt = 1.0 / rate_hz
    i = 0
    t = start
    cycle = 0
    groups = [bytes([0x01, 0x0C, 0x0D]), bytes([0x01, 0x04, 0x05, 0x11]), bytes([0x01, 0x0F, 0x2F, 0x42, 0x46]),
              bytes([0x01, 0x31, 0xA6])]

    def msg(aid, data, ext=extended):
        nonlocal i, t
        i += 1
        t += dt
        return can.Message(timestamp=t, arbitration_id=aid, is_extended_id=ext, data=data, channel=0)

    def exchange(req: bytes):
        yield msg(req_id, (bytes([len(req)]) + req).ljust(8, b"\x00"))
        for ecu in (0, 1):
            refuse = {req: 0x12} if (negative_every and cycle % negative_every == 1 and req[:2] == b"\x01\x31") else {}
            p = answer(ecu, req, t - start, vin, refuse)
            if p is None:
                continue
            frames = segment(p)
            aid = resp_id(ecu, extended)
            yield msg(aid, frames[0])
            if len(frames) > 1:
                fc = (0x18DA00F1 | ((0x10 + ecu) << 8)) if extended else 0x7E0 + ecu
                yield msg(fc, bytes([0x30, 0, 0, 0, 0, 0, 0, 0]))
                for f in frames[1:]:
                    yield msg(aid, f)

    while i < n_frames:
        reqs = [bytes([0x09, 0x02])] if cycle % 500 == 0 else []
        if cycle % 100 == 0:
            reqs += [bytes([0x03]), bytes([0x07])]
        reqs += groups
        for r in reqs:
            for m in exchange(r):
                if i > n_frames:
                    return
                yield m
        if other_every and cycle % other_every == 0:
            yield msg(0x316, bytes([5, 0x20, 0x5C, 0x12, 0x20, 0, 0, 0x7F]), ext=False)  # engine data, not OBD
        if error_every and cycle % error_every == 0:
            i += 1
            t += dt
            yield can.Message(timestamp=t, is_error_frame=True, channel=0)
        cycle += 1
