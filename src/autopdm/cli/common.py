"""Shared CLI helpers: paths, progress bars, errors."""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
from pathlib import Path

import click
import typer
from typer.core import TyperGroup
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from autopdm.config import Paths

console = Console(stderr=True, emoji=False)  # ":x:" in "can0:x:" is a channel, not an emoji


def paths() -> Paths:
    """The home every command works in; one clear line (exit 1) when it cannot be written."""
    p = Paths.from_env()
    problem = home_problem(p.home)
    if problem:
        raise fail(problem, code=1)
    return p.ensure()


def home_problem(home: Path) -> str | None:
    """Why `home` cannot be written (read-only file system, no permission, no space), or None."""
    where = Path(home)
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        st = os.statvfs(where)
    except OSError:
        return None
    why = _why_not_writable(where, st)
    return f"cannot use {home}: {why}" if why else None


def _why_not_writable(where: Path, st) -> str | None:
    if st.f_flag & os.ST_RDONLY:
        return "read-only file system"
    if not os.access(where, os.W_OK):
        return "permission denied"
    if st.f_bavail == 0:
        return "no space left on the device"
    return None


def progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


def fail(msg: str, code: int = 2) -> "typer.Exit":
    console.print(f"[red]error:[/red] {escape(msg)}", soft_wrap=True)  # one line, a path never cut in two
    return typer.Exit(code)


@contextlib.contextmanager
def clear_errors(*types, code: int = 2):
    """Turn expected errors into one clear line and exit `code` (2: bad input), not a traceback."""
    try:
        yield
    except types as exc:
        raise fail(str(exc), code) from None


# errors of the disk or its permissions, not of the program: one line, never a traceback
_STORAGE_ERRNO = {errno.EROFS: "read-only file system", errno.ENOSPC: "no space left on the device",
                  errno.EDQUOT: "disk quota exceeded", errno.EACCES: "permission denied",
                  errno.EPERM: "operation not permitted", errno.EIO: "input/output error"}
_SQLITE_STORAGE = ("readonly database", "disk is full", "unable to open database file", "disk i/o error",
                   "database or disk is full")


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def storage_error(exc: BaseException) -> str | None:
    """'cannot write <path>: read-only file system' when `exc` (or what caused it) is a disk or
    permission problem; None for anything else."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in _STORAGE_ERRNO:
            where = e.filename or _home()
            return f"cannot use {where}: {_STORAGE_ERRNO[e.errno]}"
        if isinstance(e, sqlite3.OperationalError) and any(k in str(e).lower() for k in _SQLITE_STORAGE):
            return home_problem(Paths.from_env().home) or f"cannot write the database under {_home()}: {e}"
        text = str(e).lower()  # pyarrow, MLflow and SQLAlchemy say it in words, without an errno
        if any(k in text for k in ("read-only file system", "no space left", "readonly database", "disk quota")):
            return home_problem(Paths.from_env().home) or f"cannot write under {_home()}: {str(e).splitlines()[0][:200]}"
    return None


def _home() -> str:
    return str(Paths.from_env().home) if "AUTOPDM_HOME" in os.environ else f"{Paths.from_env().home} ($AUTOPDM_HOME)"


class ErrorHandlingGroup(TyperGroup):
    """The `autopdm` group: a full or read-only disk (anywhere under any command) ends in one line
    naming the path and why, exit status 1; Ctrl-C in exit status 130, no traceback either."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            console.print("interrupted")
            raise typer.Exit(130) from None
        except Exception as exc:
            msg = storage_error(exc)
            if msg is None:
                raise
            console.print(f"[red]error:[/red] {escape(msg)}", soft_wrap=True)  # one line, a path never cut in two
            raise typer.Exit(1) from None
