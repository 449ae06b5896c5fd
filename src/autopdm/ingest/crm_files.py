"""A CRM's file export → the records tables, through `crm.import_records`: `autopdm ingest crm`.

One reader per format, from a registry keyed by the file's suffix (`.csv`, `.jsonl`, `.ndjson`;
`.gz` of either), as python-can picks its log readers. A reader gives the file's rows with the
line each starts on, and the lines it could not read (wrong number of fields, not JSON, binary
bytes) — those are quarantined with their line and reason; every other row goes on. A file that
is not what it claims to be (binary, a web page, empty, another table's export, a header with
none of the table's columns) is one `ExportError` naming the file, and nothing of it is imported.

A malformed line's raw text is kept in quarantine only when every column of the file is one of
the table's: a CRM export with extra columns (names, phone numbers, notes) leaves nothing of
them in autopdm.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from autopdm import schemas, store
from autopdm.config import Paths
from autopdm.ingest import crm, crm_map


class ExportError(ValueError):
    """A file that cannot be imported as the export it claims to be."""


@dataclass
class Rows:
    """What a reader gives: the file's rows under its own column names, and its unreadable lines."""

    frame: pd.DataFrame
    lines: list[int]                                               # the line each row starts on
    bad: list[tuple[int, str, str]] = field(default_factory=list)  # (line, reason, the line's text)


READERS: dict[str, Callable[[str, str], Rows]] = {}


def register(*suffixes: str):
    def deco(fn):
        for s in suffixes:
            READERS[s] = fn
        return fn
    return deco


def suffixes() -> list[str]:
    return sorted(READERS) + [f"{s}.gz" for s in sorted(READERS)]


# ----------------------------------------------------------------------------------------- bytes → text

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]")
GZIP_MAGIC = b"\x1f\x8b"


def _gunzip(data: bytes, name: str) -> tuple[bytes, bool]:
    """The decompressed bytes (every member) and whether the stream was cut short."""
    out, rest = [], data
    while rest:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out.append(d.decompress(rest))
        except zlib.error:
            if out:  # garbage after a complete member: what came before stands
                return b"".join(out), True
            raise ExportError(f"{name}: not gzip-compressed data, though its name ends in .gz") from None
        if not d.eof:
            return b"".join(out), True
        rest = d.unused_data
    return b"".join(out), False


def _decode(data: bytes, name: str) -> str:
    """Text from UTF-8 (with or without BOM), UTF-16 with a BOM (Excel's "Unicode text"), or
    Windows-1252 (older CRMs). Binary data is refused here; a stray binary line later is a bad line."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise ExportError(f"{name}: binary data (not text)") from None
    head = data[:4096]
    if data[:2] == GZIP_MAGIC:
        raise ExportError(f"{name}: gzip-compressed data: name the file {name}.gz")
    if sum(b < 9 or 13 < b < 32 for b in head) > len(head) // 100 + 2:  # a stray binary line is a bad line, not this
        raise ExportError(f"{name}: binary data (not text), not a {_kind(name)} export")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def _kind(name: str) -> str:
    s = name.lower().removesuffix(".gz")
    return "CSV" if s.endswith(".csv") else "JSON Lines"


def read_text(path: Path) -> tuple[str, Callable[[str, str], Rows], list[tuple[int, str, str]]]:
    """The file's text, the reader for its suffix, and a bad line when a compressed file was cut short."""
    name = str(path)
    low = path.name.lower()
    gz = low.endswith(".gz")
    inner = Path(low[:-3] if gz else low).suffix
    if inner not in READERS:
        raise ExportError(f"{name}: unknown kind of file; expected a name ending in {', '.join(suffixes())}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ExportError(f"{name}: cannot read: {exc.strerror or exc}") from None
    cut = False
    if gz:
        data, cut = _gunzip(data, name)
    text = _decode(data, name)
    if not text.strip():
        raise ExportError(f"{name}: empty file (no header line or record)" if not cut else f"{name}: compressed stream cut short before any data")
    start = text.lstrip()[:200].lower()
    if start.startswith("<"):
        what = "an HTML page (a web page saved instead of the export?)" if "html" in start else "an HTML or XML document"
        raise ExportError(f"{name}: {what}, not a {_kind(name)} export")
    bad = []
    if cut:  # the last line may be a fragment: it goes with the rest that was lost
        keep = text.rfind("\n") + 1
        n = text.count("\n", 0, keep) + 1
        bad.append((n, "the compressed stream is cut short here: the rest of the file is lost", ""))
        text = text[:keep]
    return text, READERS[inner], bad


# ---------------------------------------------------------------------------------------------- readers


def _delimiter(header: str) -> str:
    """`,` or what the header uses instead (`;` in European spreadsheets, tab, `|`)."""
    counts = {d: header.count(d) for d in ",;\t|"}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


@register(".csv")
def read_csv(text: str, name: str) -> Rows:
    """CSV with a header line. Quoted fields may hold the delimiter and line breaks."""
    first = text.lstrip()[:1]
    if first in ("{", "["):
        raise ExportError(f"{name}: JSON, not CSV: name a JSON Lines export .jsonl")
    binary = _CONTROL.search(text) is not None
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")  # the csv module refuses NUL; the line is quarantined instead
    lines_in = io.StringIO(text, newline="")
    header_line = next(line for line in lines_in if line.strip())
    lines_in.seek(0)
    # strict: a quote opened and never closed is an error at the end of the file, not a field that
    # silently swallows every line after it
    reader = csv.reader(lines_in, delimiter=_delimiter(header_line), strict=True)
    header, rows, where, bad = None, [], [], []
    prev = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            why = f"not CSV: {exc}"
            if reader.line_num > prev + 1:
                why += f" (lines {prev + 1}-{reader.line_num}: a quote opened and not closed?)"
            bad.append((prev + 1, why, ""))
            prev = reader.line_num
            continue
        line, prev = prev + 1, reader.line_num
        if not any(f.strip() for f in row):
            continue
        if header is None:
            header = _header(row, name)
            continue
        if len(row) == len(header) + 1 and not row[-1].strip():  # a trailing delimiter
            row = row[:-1]
        if len(row) != len(header):
            bad.append((line, f"{len(row)} fields, the header has {len(header)}", ",".join(row)))
        elif binary and _CONTROL.search("".join(row)):
            bad.append((line, "binary data (not text)", ""))
        else:
            rows.append(row)
            where.append(line)
    frame = pd.DataFrame(rows, columns=header, dtype=object) if rows else pd.DataFrame(columns=header, dtype=object)
    return Rows(frame, where, bad)


def _header(row: list[str], name: str) -> list[str]:
    header = [h.strip() for h in row]
    if header and header[-1] == "":
        header = header[:-1]
    seen = set()
    for h in header:
        if h in seen:
            raise ExportError(f"{name}: line 1: the column {h!r} appears twice in the header")
        seen.add(h)
    return header


@register(".jsonl", ".ndjson")
def read_jsonl(text: str, name: str) -> Rows:
    """JSON Lines: one object per line, values that are numbers, strings or null."""
    records, where, bad = [], [], []
    for n, line in enumerate(text.split("\n"), start=1):
        s = line.strip()
        if not s:
            continue
        if not records and not bad and not s.startswith("{"):
            what = "a JSON array, not JSON Lines (one object per line)" if s.startswith("[") else \
                "line {n} is not a JSON object: not a JSON Lines export".format(n=n)
            raise ExportError(f"{name}: {what}")
        try:
            obj = json.loads(s)
        except ValueError as exc:
            bad.append((n, f"not JSON: {getattr(exc, 'msg', exc)} (column {getattr(exc, 'colno', '?')})", s))
            continue
        if not isinstance(obj, dict):
            bad.append((n, f"a JSON {type(obj).__name__}, not an object", s))
            continue
        # a nested value needs a second { or [: most lines have none and skip the look
        nested = next((k for k, v in obj.items() if isinstance(v, (dict, list))), None) \
            if "{" in s[1:] or "[" in s else None
        if nested is not None:
            bad.append((n, f"{nested}: an object or array, expected a single value", s))
            continue
        records.append(obj)
        where.append(n)
    if not records and bad:
        raise ExportError(f"{name}: no line is a JSON object (line {bad[0][0]}: {bad[0][1]})")
    return Rows(pd.DataFrame(records, dtype=object) if records else pd.DataFrame(), where, bad)


# --------------------------------------------------------------------------------------- one table file


@dataclass
class Prepared:
    """A file's rows as the table's columns, ready for `crm.import_records`."""

    frame: pd.DataFrame
    lines: list[int]
    quarantine: pd.DataFrame       # lines and rows refused before validation
    ignored: list[str]             # the file's columns that are not the table's


def prepare(path: Path, table: str, cmap: crm_map.CrmMap) -> Prepared:
    """Read, check and map one table's export; raises ExportError for a file that is not that export."""
    text, reader, cut = read_text(path)
    rows = reader(text, str(path))
    rows.bad.extend(cut)
    tm = cmap.table(table)
    try:
        rename, ignored = crm_map.resolve(rows.frame.columns, tm, table)
    except ValueError as exc:
        raise ExportError(f"{path}: {exc}") from None
    _check_columns(path, table, set(rename.values()), list(rows.frame.columns), cmap)
    frame, why = crm_map.apply(rows.frame[list(rename)].rename(columns=rename), tm, table, cmap.decimal)
    refused = why.notna().to_numpy()
    keep_text = not ignored
    items = [(n, "line", r, json.dumps({"line": t[:500]} if keep_text else {"line": "(not kept: the file has other columns)"}))
             for n, r, t in rows.bad]
    lines = pd.Series(rows.lines, dtype="int64")
    items += [(int(n), w.split(":", 1)[0], w, json.dumps(rec, default=str))
              for n, w, rec in zip(lines[refused], why[refused], frame[refused].to_dict("records"))]
    q = schemas.quarantine_frame(table, str(path), sorted(items), unit="line")
    return Prepared(frame[~refused].reset_index(drop=True), lines[~refused].tolist(), q, ignored)


def _check_columns(path: Path, table: str, ours: set[str], theirs: list[str], cmap: crm_map.CrmMap) -> None:
    missing = crm.missing_required(table, ours)
    if not missing:
        return
    shown = ", ".join(theirs[:12]) + (" ..." if len(theirs) > 12 else "") if theirs else "none"
    if not ours:
        raise ExportError(f"{path}: none of the {table} columns in the file (its columns: {shown}); "
                          f"expected {', '.join(crm.REQUIRED[table])}; rename the CRM's columns with --map")
    for other in crm.ORDER:
        if other == table:
            continue
        try:
            as_other = set(crm_map.resolve(theirs, cmap.table(other), other)[0].values())
        except ValueError:
            continue
        if not crm.missing_required(other, as_other):
            article = "an" if other[0] in "aeiou" else "a"
            raise ExportError(f"{path}: {article} {other} export, not {table} (it has {', '.join(crm.REQUIRED[other])}; "
                              f"no {', '.join(missing)}): pass it as --{other.replace('_', '-')}")
    raise ExportError(f"{path}: not a {table} export: no {', '.join(missing)} column (its columns: {shown}); "
                      "rename the CRM's columns with --map")


# ------------------------------------------------------------------------------------------------ import


@dataclass
class FileReport:
    table: str
    path: Path
    rows: int = 0                  # data lines read: imported, unchanged and quarantined
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    quarantined: int = 0
    reasons: list[str] = field(default_factory=list)       # the first few: "line N: field: why"
    ignored_columns: list[str] = field(default_factory=list)
    error: str | None = None       # the file could not be imported at all


def import_exports(files: dict[str, Path], paths: Paths | None = None, cmap: crm_map.CrmMap | None = None) -> list[FileReport]:
    """Import each table's export ({table: file}); a file that cannot be read is reported in its
    report's `error` and the others are imported."""
    paths = paths or Paths.from_env()
    cmap = cmap or crm_map.CrmMap()
    unknown = set(files) - set(crm.ORDER)
    if unknown:
        raise ValueError(f"unknown records table(s) {sorted(unknown)}")
    reports, ready = {}, {}
    for table in (t for t in crm.ORDER if t in files):
        path = Path(files[table])
        try:
            ready[table] = prepare(path, table, cmap)
        except ExportError as exc:
            reports[table] = FileReport(table, path, error=str(exc))
    for table, p in ready.items():
        _write_refused(p.quarantine, paths, table)
    res = crm.import_records({t: p.frame for t, p in ready.items()}, paths, source=cmap.source,
                             origin={t: str(files[t]) for t in ready}, lines={t: p.lines for t, p in ready.items()})
    for table, p in ready.items():
        r = res[table]
        early = list(p.quarantine["reason"])
        reports[table] = FileReport(table, Path(files[table]), r.rows + len(p.quarantine), r.new, r.changed, r.unchanged,
                                    r.quarantined + len(p.quarantine), sorted(early + r.reasons, key=_line_of)[:20],
                                    p.ignored)
    return [reports[t] for t in crm.ORDER if t in reports]


def _line_of(reason: str) -> int:
    m = re.match(r"line (\d+)", reason)
    return int(m.group(1)) if m else 0


def _write_refused(q: pd.DataFrame, paths: Paths, table: str) -> None:
    """Keyed by content, like the import's own quarantine: the same file again replaces its file."""
    if len(q):
        key = hashlib.sha256(("\n".join(q["reason"]) + "\n".join(q["record"]) + q["origin"].iat[0]).encode()).hexdigest()
        store.write_quarantine(q, paths, table, key="refused:" + key)
