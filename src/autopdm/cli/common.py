"""Shared CLI helpers: paths, progress bars, errors."""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3

import click
import typer
from typer.core import TyperGroup
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from autopdm.config import Paths

console = Console(stderr=True)


def paths() -> Paths:
    return Paths.from_env().ensure()


def progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


def fail(msg: str, code: int = 2) -> "typer.Exit":
    console.print(f"[red]error:[/red] {msg}")
    return typer.Exit(code)


@contextlib.contextmanager
def clear_errors(*types):
    """Turn expected errors (bad input) into one clear line and exit 2, not a traceback."""
    try:
        yield
    except types as exc:
        raise fail(str(exc)) from None


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
            return f"cannot write the database under {_home()}: {e}"
        text = str(e).lower()
        if type(e).__module__.startswith(("pyarrow", "mlflow", "sqlalchemy")) and any(
                k in text for k in ("read-only file system", "no space left", "permission denied", "readonly database")):
            return f"cannot write under {_home()}: {str(e).splitlines()[0][:200]}"
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
            console.print(f"[red]error:[/red] {msg}")
            raise typer.Exit(1) from None
