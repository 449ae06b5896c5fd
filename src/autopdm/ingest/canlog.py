"""CAN log files → frames, for every format python-can reads, counted the way python-can counts.

Vector ASC and candump ``.log`` (plain or ``.gz``) have a fast path here that parses each line
straight into (timestamp, id, data) without building a ``can.Message``; it reads every frame
kind python-can reads in those formats (classic, CAN FD, remote and error frames, hex or decimal
ASC) and yields the same frames. Every other format (.blf .trc .csv .mf4 .db) goes through
python-can's own reader, and so does an ASC or candump file whenever the fast path fails for a
reason of its own: it never refuses a file python-can reads.

Frames go to a sink: ``feed(ts, arbitration_id, is_extended, data)`` for data and remote frames
(a remote frame has no data), ``error_frame()``, and ``bad_frame()`` for a frame python-can would
yield whose timestamp is unusable (NaN, infinite, before 1970 or after 2100). Lines that are
not frames at all but cannot be read either (garbage, a cut-off last line, a timestamp such as
``nan`` that python-can skips) are returned as bad lines with their position and reason, never
fed. A file that cannot be read to its end keeps what was read before the damage and returns a
``CanLogError`` naming the line or frame.
"""

from __future__ import annotations

import contextlib
import gc
import gzip
import io
import logging
import re
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

TS_MAX = 4_102_444_800.0          # 2100-01-01: later (or NaN, inf) is a broken clock, not data
READ_ERRORS = (OSError, EOFError, UnicodeError, zlib.error)


class CanLogError(RuntimeError):
    """The log could not be read to its end; what was read before `position` was kept."""

    def __init__(self, path, position: str, cause: str):
        self.path, self.position, self.cause = str(path), position, cause
        super().__init__(f"{path}: unreadable at {position}: {cause} (everything before it was imported)")


@dataclass
class ReadOutcome:
    reader: str = ""
    bad: list[tuple[int, str, str, str]] = field(default_factory=list)  # (position, unit, reason, text)
    error: CanLogError | None = None
    remote: int = 0
    fd: int = 0

    def bad_line(self, n: int, reason: str, line: str, unit: str = "line") -> None:
        self.bad.append((n, unit, reason, line.strip()[:200]))


class FastPathGaveUp(Exception):
    """The fast path met something it does not read; python-can reads the file instead."""


def suffixes(path: Path) -> tuple[str, bool]:
    """('.asc', True) for drive.asc.gz."""
    sfx = [s.lower() for s in path.suffixes]
    gz = bool(sfx) and sfx[-1] == ".gz"
    if gz:
        sfx = sfx[:-1]
    return (sfx[-1] if sfx else ""), gz


def open_text(path: Path, gz: bool):
    if gz:
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace", newline=None)
    return open(path, encoding="utf-8", errors="replace", newline=None)


def _ts_ok(ts: float) -> bool:
    return 0.0 <= ts < TS_MAX  # False for NaN too


# -- candump -L -----------------------------------------------------------------------------------
CAN_ERR_FLAG, CAN_ERR_BUSERROR = 0x20000000, 0x00000080


def _candump_frame(parts: list[str]):
    """(ts, arb, ext, data, remote, fd, error) of a candump line, as python-can's reader sees it;
    ValueError where python-can's reader would fail."""
    if len(parts) == 4 and parts[3].lower() in ("r", "t"):
        parts = parts[:3]
    if len(parts) != 3 or parts[0][:1] != "(" or parts[0][-1:] != ")":
        raise ValueError("not 'timestamp) interface id#data'")
    ts = float(parts[0][1:-1])
    ident, sep, data = parts[2].partition("#")
    if not sep:
        raise ValueError("no '#' between id and data")
    arb = int(ident, 16)
    fd = data[:1] == "#"
    if fd:
        int(data[1], 16)  # the flags digit
        data = data[2:]
    remote = data[:1] in ("R", "r")
    if remote:
        if len(data) > 1:
            int(data[1:])
        payload = b""
    else:
        payload = bytes(int(data[i:i + 2], 16) for i in range(0, len(data), 2))
    error = bool(arb & CAN_ERR_FLAG and arb & CAN_ERR_BUSERROR)
    return ts, arb & 0x1FFFFFFF, len(ident) > 3, payload, remote, fd, error


def read_candump(path: Path, gz: bool, sink) -> ReadOutcome:
    out = ReadOutcome(reader="fast candump")
    feed, fromhex, ts_max = sink.feed, bytes.fromhex, TS_MAX
    n = 0
    try:
        with open_text(path, gz) as fh:
            for n, line in enumerate(fh, start=1):
                # "(1700000000.123456) can0 7E8#04410C1AF8AAAAAA R" — split is ~3x faster than a regex
                if line[-1:] != "\n":  # the file ends mid-line: a cut-off frame would decode wrong
                    out.bad_line(n, "the file ends in the middle of this line (cut short?)", line)
                    out.error = CanLogError(path, f"line {n}", f"file ends in the middle of a line ({line.strip()[:40]!r})")
                    break
                parts = line.split()
                if not parts:
                    continue
                # the common case: a data frame, python-can's reading of it in three calls
                ident, sep, data = parts[2].partition("#") if len(parts) > 2 else ("", "", "")
                try:
                    ts = float(parts[0][1:-1])
                    arb = int(ident, 16)
                    payload = fromhex(data)
                except ValueError:
                    pass
                else:
                    if sep and arb < 0x20000000 and 0.0 <= ts < ts_max and parts[0][:1] == "(" and len(parts) <= 4:
                        feed(ts, arb, len(ident) > 3, payload)
                        continue
                _candump_slow(parts, n, line, sink, out)
    except READ_ERRORS as exc:
        out.error = CanLogError(path, f"line {n + 1}", f"{type(exc).__name__}: {exc}")
    return out


def _candump_slow(parts, n, line, sink, out) -> None:
    try:
        ts, arb, ext, payload, remote, fd, error = _candump_frame(parts)
    except (ValueError, IndexError) as exc:
        out.bad_line(n, f"not a candump frame ({exc})", line)
        return
    if error:
        sink.error_frame()
        return
    if not _ts_ok(ts):
        sink.bad_frame()
        out.bad_line(n, f"timestamp {ts!r} is not a time between 1970 and 2100", line)
        return
    out.remote += remote
    out.fd += fd
    sink.feed(ts, arb, ext, payload)


# -- Vector ASC -----------------------------------------------------------------------------------
_ASC_TS = re.compile(r"\d+\.\d+$")
_ASC_EVENT = re.compile(r"\d+\.\d+\s+(\d+\s+(\w+\s+(Tx|Rx)|ErrorFrame)|CANFD)", re.ASCII | re.IGNORECASE)
_ASC_DATE = re.compile(r"date\s+\w+\s+(?P<datetime_string>.+)", re.IGNORECASE)
_ASC_BASE = re.compile(r"base\s+(?P<base>hex|dec)", re.IGNORECASE)
_CAN_FD_DLC = (0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64)


def _dlc2len(dlc: int) -> int:
    return _CAN_FD_DLC[dlc] if dlc <= 15 else 64


def _asc_id(s: str, base: int) -> tuple[int, bool]:
    return (int(s[:-1], base), True) if s[-1:].lower() == "x" else (int(s, base), False)


def _asc_frame(line: str, base: int):
    """(rel_ts, arb, ext, data, remote, fd, error) of an ASC event line as python-can's ASCReader
    reads it, None for a line it skips; ValueError/IndexError where python-can would fail."""
    text = line.strip()
    if not _ASC_EVENT.match(text):
        return None
    ts_s, channel, rest = text.split(None, 2)
    ts = float(ts_s)
    if channel.upper() == "CANFD":
        _chan, _direction, rest = rest.split(None, 2)
        if rest.strip()[:10].lower() == "errorframe":
            return ts, 0, False, b"", False, True, True
        can_id, brs_or_name, rest = rest.split(None, 2)
        if brs_or_name.isdigit():
            _esi, _dlc, length_s, data = rest.split(None, 3)
        else:
            _brs, _esi, _dlc, length_s, data = rest.split(None, 4)
        int(_dlc, base)
        arb, ext = _asc_id(can_id, base)
        length = int(length_s)
        payload = bytes(int(b, base) for b in data.split()[:length])
        return ts, arb, ext, payload, length == 0, True, False
    if not channel.isdigit():
        return None
    if rest.strip()[:10].lower() == "errorframe":
        return ts, 0, False, b"", False, False, True
    can_id, _direction, rest = rest.split(None, 2)
    arb, ext = _asc_id(can_id, base)
    if rest[0].lower() == "r":
        bits = rest.split()
        if len(bits) > 1 and bits[1].isdigit():
            int(bits[1], base)
        return ts, arb, ext, b"", True, False, False
    try:
        _, dlc_s, data = rest.split(None, 2)
    except ValueError:
        _, dlc_s = rest.split(None, 1)
        data = ""
    dlc = _dlc2len(int(dlc_s, base))
    payload = bytes(int(b, base) for b in data.split()[:min(8, dlc)])
    return ts, arb, ext, payload, False, False, False


def _asc_header(line: str, state: dict) -> None:
    """Date, base and trigger-block lines (what python-can's ASCReader takes from the header)."""
    from can.io.asc import ASC_TRIGGER_REGEX, ASCReader

    text = line.strip()
    if (m := ASC_TRIGGER_REGEX.match(text)):
        state["start"] = ASCReader._datetime_to_timestamp(m.group("datetime_string"))
        state["begun"] = True
    elif not state["events"] and (m := _ASC_DATE.match(text)):
        state["start"] = ASCReader._datetime_to_timestamp(m.group("datetime_string"))
    elif not state["events"] and (m := _ASC_BASE.match(text)):
        state["base"] = 10 if m.group("base").lower() == "dec" else 16
    elif text.lower().startswith("end triggerblock"):
        state["ended"] = True


def read_asc(path: Path, gz: bool, sink) -> ReadOutcome:
    """Vector ASC with absolute timestamps (the date in the header plus each line's offset)."""
    out = ReadOutcome(reader="fast asc")
    feed, fromhex, ts_match, ts_max = sink.feed, bytes.fromhex, _ASC_TS.match, TS_MAX
    state = {"start": 0.0, "base": 16, "begun": False, "ended": False, "events": False}
    n = 0
    try:
        with open_text(path, gz) as fh:
            for n, line in enumerate(fh, start=1):
                if line[-1:] != "\n":
                    out.bad_line(n, "the file ends in the middle of this line (cut short?)", line)
                    out.error = CanLogError(path, f"line {n}", f"file ends in the middle of a line ({line.strip()[:40]!r})")
                    break
                parts = line.split()
                if not parts:
                    continue
                if not parts[0][:1].isdigit():
                    if _looks_like_bad_timestamp(line):
                        out.bad_line(n, f"timestamp {parts[0]!r} is not a number of seconds", line)
                    else:
                        _asc_header(line, state)
                    continue
                state["events"] = True
                # the common case: "0.123456 1  7E8   Rx   d 8 04 41 0C 1A F8 AA AA AA"
                if (len(parts) >= 6 and parts[4] == "d" and state["base"] == 16 and parts[1].isdigit()
                        and parts[3] in ("Rx", "Tx") and ts_match(parts[0])):
                    try:
                        ident = parts[2]
                        ext = ident[-1] in "xX"
                        arb = int(ident[:-1] if ext else ident, 16)
                        dlc = int(parts[5], 16)
                        payload = fromhex(" ".join(parts[6:6 + (dlc if dlc < 8 else 8)]))
                    except ValueError:
                        pass
                    else:
                        ts = float(parts[0]) + state["start"]
                        if 0.0 <= ts < ts_max:
                            feed(ts, arb, ext, payload)
                            continue
                _asc_slow(line, n, state, sink, out)
            if state["begun"] and not state["ended"] and out.error is None:
                out.error = CanLogError(path, f"line {n}", "no 'End TriggerBlock': the file was cut short")
    except READ_ERRORS as exc:
        out.error = CanLogError(path, f"line {n + 1}", f"{type(exc).__name__}: {exc}")
    return out


def _asc_slow(line: str, n: int, state: dict, sink, out: ReadOutcome) -> None:
    try:
        frame = _asc_frame(line, state["base"])
    except (ValueError, IndexError) as exc:
        out.bad_line(n, f"not an ASC frame ({exc})", line)
        return
    if frame is None:
        if _looks_like_bad_timestamp(line):
            out.bad_line(n, f"timestamp {line.split()[0]!r} is not a number of seconds", line)
        return  # events, statistics, comments: not frames (python-can skips them too)
    rel, arb, ext, payload, remote, fd, error = frame
    if error:
        sink.error_frame()
        return
    ts = rel + state["start"]
    if not _ts_ok(ts):
        sink.bad_frame()
        out.bad_line(n, f"timestamp {ts!r} is not a time between 1970 and 2100", line)
        return
    out.remote += remote
    out.fd += fd
    sink.feed(ts, arb, ext, payload)


def _looks_like_bad_timestamp(line: str) -> bool:
    """'nan 1 7E8 Rx d 8 …' or '1e300 1 …': a frame line whose time python-can cannot read."""
    parts = line.split()
    if len(parts) < 4 or _ASC_TS.match(parts[0]) or not (parts[1].isdigit() or parts[1].upper() == "CANFD"):
        return False
    try:
        float(parts[0])  # nan, inf, 1e300: numbers, but not what python-can reads as a time
    except ValueError:
        return False
    return True


# -- python-can ------------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet_finalizers():
    """asammdf's MDF objects raise in ``__del__`` when their file was unreadable, and Python prints
    that as "Exception ignored in …" with a traceback; here it goes to the debug log instead."""
    old = sys.unraisablehook
    sys.unraisablehook = lambda u: log.debug("ignored in %r: %s", u.object, u.exc_value)
    try:
        yield
    finally:
        gc.collect()
        sys.unraisablehook = old


def read_python_can(path: Path, ext: str, gz: bool, sink) -> ReadOutcome:
    with _quiet_finalizers():
        return _read_python_can(path, ext, gz, sink)


def _read_python_can(path: Path, ext: str, gz: bool, sink) -> ReadOutcome:
    import can

    out = ReadOutcome(reader="python-can")
    feed, error_frame = sink.feed, sink.error_frame
    n = 0
    reader = None
    cut = not gz and ext in (".trc", ".csv") and _ends_mid_line(path)
    try:
        if ext == ".asc":  # absolute timestamps: LogReader's default would start at 1970
            reader = can.ASCReader(open_text(path, gz), relative_timestamp=False)
        elif cut:  # a cut-off last line would be read as a frame with half its data: leave it out
            text = path.read_text(encoding="utf-8", errors="replace")
            reader = {".trc": can.TRCReader, ".csv": can.CSVReader}[ext](io.StringIO(text[:text.rfind("\n") + 1]))
        else:
            reader = can.LogReader(path)
        out.reader = f"python-can {type(reader).__name__}"
        for msg in reader:
            n += 1
            if msg.is_error_frame:
                error_frame()
                continue
            ts = msg.timestamp
            if not _ts_ok(ts):
                sink.bad_frame()
                out.bad.append((n, "frame", f"timestamp {ts!r} is not a time between 1970 and 2100",
                                f"{msg.arbitration_id:X}#{bytes(msg.data).hex().upper()}"))
                continue
            out.remote += msg.is_remote_frame
            out.fd += msg.is_fd
            feed(ts, msg.arbitration_id, msg.is_extended_id, b"" if msg.is_remote_frame else bytes(msg.data))
        out.error = _cut_short(path, ext, gz, reader, n) if not cut else \
            CanLogError(path, f"frame {n + 1} (end of file)", "file ends in the middle of a line")
    except Exception as exc:  # struct.error, EOFError, zlib.error, ValueError … from any reader
        out.error = CanLogError(path, _frame_position(reader, n), f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    finally:
        if reader is not None:
            try:
                reader.stop()
            except Exception:  # a reader of a damaged file may fail to close too
                pass
    return out


def _frame_position(reader, n: int) -> str:
    pos = f"frame {n + 1}"
    fh = getattr(reader, "file", None)
    try:
        if fh is not None and not fh.closed:
            pos += f" (byte offset {fh.tell():,})"
    except (OSError, ValueError, AttributeError):
        pass
    return pos


def _cut_short(path: Path, ext: str, gz: bool, reader, n: int) -> CanLogError | None:
    """Readers that stop quietly at a cut: check what the file promised."""
    if type(reader).__name__ == "BLFReader":
        size = path.stat().st_size
        if size < reader.file_size:
            return CanLogError(path, f"frame {n + 1} (byte {size:,} of {reader.file_size:,})",
                               f"the BLF header announces {reader.file_size:,} bytes, the file holds {size:,}")
    elif not gz and ext in (".trc", ".csv", ".log", ".asc") and _ends_mid_line(path):
        return CanLogError(path, f"frame {n + 1} (end of file)", "file ends in the middle of a line")
    return None


def _ends_mid_line(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        if fh.tell() == 0:
            return False
        fh.seek(-1, 2)
        return fh.read(1) not in (b"\n", b"\r")


FAST = {".log": read_candump, ".asc": read_asc}


def read_log(path: Path, new_sink, fast: bool = True):
    """Read `path` into a sink made by `new_sink()`. Returns (sink, outcome)."""
    ext, gz = suffixes(path)
    reader = FAST.get(ext) if fast else None
    if reader is not None:
        sink = new_sink()
        try:
            return sink, reader(path, gz, sink)
        except Exception as exc:  # a fault of the fast path, not of the file: python-can reads it
            log.warning("%s: fast path failed (%s: %s); reading with python-can", path, type(exc).__name__, exc)
    sink = new_sink()
    return sink, read_python_can(path, ext, gz, sink)
