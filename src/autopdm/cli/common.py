"""Shared CLI helpers: paths, progress bars, errors."""

from __future__ import annotations

import contextlib

import typer
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
