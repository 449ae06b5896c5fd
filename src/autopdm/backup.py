"""Backups of a home that restore: `autopdm backup --to DIR`, `autopdm restore --from DIR [--home H]`.

A backup is taken while the service, the dispatcher and imports keep running:

1. every SQLite database under the home (the outbox, the telemetry and records ledgers, the tokens,
   the audit trail, MLflow's registry) is copied with SQLite's online backup API — a consistent
   copy of each, whatever writes meanwhile;
2. then every other file (the Parquet store, the records, features, reports, MLflow's artifacts).
   Tables are replaced whole by their writers (a new file renamed over the old), so each copy is
   one version of its table.

Databases go first on purpose: a ledger copied before its table may miss a batch the table holds
(a replay imports it again, which changes nothing), never claim a batch the table lacks; a model
version in the registry copy has its artifacts, which MLflow writes before it registers them.
Lock files, SQLite's -wal/-shm side files and half-written temporary files are left out.

`manifest.json` lists every file with its size and SHA-256 and the rows of every table of every
database; `restore` checks them before it writes anything. Restoring into another home rewrites the
registry's absolute artifact locations (`file:///old/home/...`) to the new home.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from autopdm.config import Paths

MANIFEST = "manifest.json"
FORMAT = 1
SQLITE_MAGIC = b"SQLite format 3\x00"
SKIP_SUFFIXES = (".lock", "-wal", "-shm", "-journal", ".tmp", ".partial")


class BackupError(Exception):
    """A backup or restore that cannot go on; the message names the path and why."""


@dataclass
class Summary:
    databases: int
    files: int
    bytes: int
    seconds: float
    where: Path


def _is_sqlite(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(16) == SQLITE_MAGIC
    except OSError:
        return False


def _skipped(path: Path) -> bool:
    name = path.name
    return name.endswith(SKIP_SUFFIXES) or name.startswith(".tmp") or ".tmp." in name


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _copy_db(src: Path, dst: Path) -> dict[str, int]:
    """SQLite's online backup: a consistent copy while others write. Returns rows per table."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(src, timeout=60)
    target = sqlite3.connect(dst)
    try:
        source.backup(target, pages=-1)  # one step: the copy is of one moment, not pieced together
        target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file in the backup
        return table_rows(target)
    finally:
        target.close()
        source.close()


def tables(con: sqlite3.Connection) -> list[str]:
    """The database's own tables (not SQLite's)."""
    return [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]


def table_rows(con: sqlite3.Connection) -> dict[str, int]:
    names = tables(con)
    return {n: con.execute(f'SELECT COUNT(*) FROM "{n}"').fetchone()[0] for n in sorted(names)}


def _files(home: Path) -> tuple[list[Path], list[Path]]:
    """(SQLite databases, other files) under `home`, relative, sorted."""
    dbs, files = [], []
    for root, dirs, names in os.walk(home):
        dirs.sort()
        for n in sorted(names):
            p = Path(root) / n
            if _skipped(p) or p.is_symlink() or not p.is_file():
                continue
            (dbs if _is_sqlite(p) else files).append(p.relative_to(home))
    return dbs, files


def backup(home: Path, to: Path) -> Summary:
    """Snapshot `home` into the directory `to` (new, or empty)."""
    t0 = time.perf_counter()
    home, to = Path(home).resolve(), Path(to).resolve()
    if not home.is_dir():
        raise BackupError(f"{home}: no such home")
    if to == home or home in to.parents:
        raise BackupError(f"--to {to}: inside the home {home}; back up to another directory (another disk, ideally)")
    if to.exists() and any(to.iterdir()):
        raise BackupError(f"--to {to}: not empty; back up into a new directory (one per day, for instance)")
    work = to.parent / f".{to.name}.partial"
    shutil.rmtree(work, ignore_errors=True)
    data = work / "home"
    dbs, _ = _files(home)
    manifest: dict = {"format": FORMAT, "home": str(home), "started": _now(), "databases": {}, "files": {}}
    for rel in dbs:  # first: see the module's docstring
        manifest["databases"][str(rel)] = {"tables": _copy_db(home / rel, data / rel)}
    _, files = _files(home)
    size = 0
    for rel in files:
        dst = data / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copy2(home / rel, dst)
        except FileNotFoundError:  # removed since the listing (a temporary file renamed away)
            continue
        size += dst.stat().st_size
        manifest["files"][str(rel)] = {"bytes": dst.stat().st_size, "sha256": _sha256(dst)}
    for rel in manifest["databases"]:
        manifest["databases"][rel].update(bytes=(data / rel).stat().st_size, sha256=_sha256(data / rel))
    manifest["finished"] = _now()
    (work / MANIFEST).write_text(json.dumps(manifest, indent=1))
    _fsync_tree(work)
    if to.exists():
        to.rmdir()
    os.replace(work, to)  # a backup directory exists only once it is complete
    return Summary(len(dbs), len(manifest["files"]), size, time.perf_counter() - t0, to)


def verify(frm: Path) -> dict:
    """The backup's manifest, after checking every file's size and hash."""
    frm = Path(frm).resolve()
    try:
        manifest = json.loads((frm / MANIFEST).read_text())
    except FileNotFoundError:
        raise BackupError(f"--from {frm}: no {MANIFEST}: not an autopdm backup (or an unfinished one)") from None
    except json.JSONDecodeError as exc:
        raise BackupError(f"--from {frm / MANIFEST}: not JSON ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"--from {frm}: backup format {manifest.get('format')!r}, this autopdm reads {FORMAT}")
    for rel, info in {**manifest["databases"], **manifest["files"]}.items():
        p = frm / "home" / rel
        if not p.is_file() or p.stat().st_size != info["bytes"] or _sha256(p) != info["sha256"]:
            raise BackupError(f"--from {frm}: {rel} is missing or damaged (size or SHA-256 differs from the manifest)")
    return manifest


def restore(frm: Path, home: Path, force: bool = False) -> Summary:
    """Bring a home back from a backup. A non-empty `home` is refused unless `force` (then it is
    moved aside to `<home>.before-restore-<time>`, not deleted)."""
    t0 = time.perf_counter()
    frm, home = Path(frm).resolve(), Path(home).resolve()
    manifest = verify(frm)
    if home.exists() and any(home.iterdir()):
        if not force:
            raise BackupError(f"--home {home}: not empty; restore into an empty directory, or add --force "
                              "(the current home is then moved aside, not deleted)")
        aside = home.with_name(f"{home.name}.before-restore-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}")
        os.replace(home, aside)
    work = home.with_name(f".{home.name}.restoring")
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(frm / "home", work)
    old = manifest["home"]
    if old != str(home):
        for rel in manifest["databases"]:
            _rehome(work / rel, old, str(home))
    _fsync_tree(work)
    if home.exists():
        home.rmdir()
    os.replace(work, home)
    size = sum(i["bytes"] for i in manifest["files"].values())
    return Summary(len(manifest["databases"]), len(manifest["files"]), size, time.perf_counter() - t0, home)


def _rehome(db: Path, old: str, new: str) -> None:
    """Absolute paths into the old home (MLflow's artifact locations) → the same paths in the new one."""
    con = sqlite3.connect(db)
    try:
        for t in tables(con):
            cols = [r[1] for r in con.execute(f'PRAGMA table_info("{t}")') if "CHAR" in r[2].upper() or "TEXT" in r[2].upper()]
            for c in cols:
                for prefix in ("file://", ""):
                    a, b = prefix + old + "/", prefix + new + "/"
                    con.execute(f'UPDATE "{t}" SET "{c}" = ? || substr("{c}", ?) WHERE substr("{c}", 1, ?) = ?',
                                (b, len(a) + 1, len(a), a))
        con.commit()
    finally:
        con.close()


def _fsync_tree(root: Path) -> None:
    for dirpath, _, names in os.walk(root):
        for n in names:
            fd = os.open(os.path.join(dirpath, n), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
