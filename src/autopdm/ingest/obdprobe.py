"""What an ELM327 adapter and the car behind it actually answer, asked through python-OBD.

Adapters and ECUs differ in ways python-OBD does not look at: many ECUs answer one PID per
request but say ``NO DATA`` to a request for several; some answer only the first PID of such a
request; slow ECUs answer after the ELM's default 200 ms timeout; clone adapters answer the first
requests after a reset with ``BUS INIT: ...ERROR``, or lose the CAN headers python-OBD needs.
`probe` finds out with a handful of requests: single-PID requests (retried, then with headers
switched on again, adaptive timing and the longest ELM timeout), then a two-PID request. The
recorder polls in the form this car answers and tells "the ECU does not do that" from "the
ignition is off".

The probe's own requests are never byte-identical to the polling plan's (python-OBD's fast mode
remembers, per request, how many answer lines the first answer had, and would carry an error
answer's count over to the plan): support bitmaps (``0100``) for single requests, and two data
PIDs in descending order (the plan asks in ascending order) for the multi-PID test.

python-OBD is GPL-2.0-only, hence imported only here and in the recorder (``autopdm[obd]``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from obd import OBDCommand
from obd.protocols import ECU

from autopdm.ingest.codecs.obdcodec import PIDS, decode_mode01, is_negative, mode01_items, parse_bitmap

log = logging.getLogger(__name__)

SINGLE_TRIES = 3            # a clone's BUS INIT errors and a first SEARCHING... come in the first requests
SLOW_TIMEOUT = b"ATSTFF"    # the longest the ELM waits for an answer: 255 × 4 ms = 1,020 ms
DEFAULT_TIMEOUT = b"ATST32" # 50 × 4 ms = 200 ms, the ELM's default

negatives = {"count": 0}    # 7F answers seen by the decoders (python-OBD decodes them as garbage)


def _payload(m) -> bytes:
    return bytes(m.data) if getattr(m, "data", None) else b""


def _mode01_decoder(messages):
    for m in messages:
        p = _payload(m)
        if is_negative(p):
            negatives["count"] += 1
            continue
        d = decode_mode01(p)
        if d is not None:
            return d
    return None


def _answered_pids(messages):
    """Every PID of a positive mode 01 answer (support bitmaps too) → its data bytes."""
    out = {}
    for m in messages:
        p = _payload(m)
        if p[:1] == b"\x41":
            out.update(dict(mode01_items(p)))
    return out or None


def mode01_command(pids: list[int], *, fast: bool = True, decoder=_mode01_decoder) -> OBDCommand:
    """One request for several mode 01 PIDs (one PID is just the 1-element case)."""
    hexpids = "".join(f"{p:02X}" for p in pids)
    return OBDCommand(f"AUTOPDM_01_{hexpids}", f"mode 01 PIDs {hexpids}", b"01" + hexpids.encode(), 0,
                      decoder, ECU.ENGINE, fast)


def probe_command(pids: list[int]) -> OBDCommand:
    """A probe request: no fast-mode answer count, answered PIDs (bitmaps included) as value."""
    return mode01_command(pids, fast=False, decoder=_answered_pids)


def supported_pids(value: Callable[[OBDCommand], object]) -> set[int]:
    """Mode 01 PIDs the car supports, from its bitmaps (0100, 0120, … following the "next range" bit;
    python-OBD's table ends before 0x60, so it would never learn of the odometer, PID A6)."""
    sup: set[int] = set()
    base = 0x00
    while base <= 0xE0 and (base == 0 or base in sup):
        got = value(probe_command([base])) or {}
        if base not in got:
            break
        sup |= parse_bitmap(got[base], base)
        base += 0x20
    return sup


@dataclass
class Capabilities:
    single: bool = False        # single-PID requests are answered
    multi: bool = False         # a request for two PIDs gets both answered
    slow: bool = False          # answers come only with the ELM's longest timeout
    tries: int = 0              # probe requests sent
    supported: frozenset = frozenset()

    def describe(self) -> str:
        if not self.single:
            return "no answer to single-PID requests"
        parts = ["several PIDs per request" if self.multi else "one PID per request (multi-PID requests unanswered)"]
        if self.slow:
            parts.append("slow ECU: ELM timeout raised to 1 s")
        return "; ".join(parts)


def _single(value, at, caps: Capabilities) -> bool:
    cmd = probe_command([0x00])
    for _ in range(SINGLE_TRIES):
        caps.tries += 1
        if value(cmd):
            return True
    at(b"ATH1")            # a clone that forgot the headers python-OBD needs after a reset
    at(b"ATAT1")           # adaptive timing on: the ELM learns how long this ECU takes …
    at(SLOW_TIMEOUT)       # … up to the longest timeout it has, for an ECU slower than the default
    caps.tries += 1
    if value(cmd):
        caps.slow = True
        return True
    at(DEFAULT_TIMEOUT)    # nobody answers at all: no point waiting a second per request
    return False


def _multi(value, wanted: list[int], caps: Capabilities) -> bool:
    if len(wanted) < 2:
        return False
    caps.tries += 1
    got = value(probe_command([wanted[1], wanted[0]])) or {}
    return wanted[0] in got and wanted[1] in got


def probe(value: Callable[[OBDCommand], object], at: Callable[[bytes], object], *, can_bus: bool,
          known: set[int] | None = None) -> Capabilities:
    """Ask the car what it answers. `value(cmd)` queries (None when unanswered), `at(b"ATxx")` sends an
    AT command; `known`: the supported PIDs when already read (a re-probe needs not read them again)."""
    caps = Capabilities()
    caps.single = _single(value, at, caps)
    if not caps.single:
        return caps
    sup = known if known else supported_pids(value)
    caps.supported = frozenset(sup)
    wanted = [p for p in PIDS if p in sup]
    caps.multi = can_bus and _multi(value, wanted, caps)  # J1979 allows several PIDs per request on CAN only
    log.debug("probe: %s after %d requests", caps.describe(), caps.tries)
    return caps
