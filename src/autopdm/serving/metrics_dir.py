"""A Prometheus multiprocess directory of its own for each server.

`bentoml serve` keeps its workers' metric files in $BENTOML_HOME/prometheus_multiproc_dir and
empties that directory when a server starts, so a second server on the machine wiped the first
one's /metrics and both then reported the same files. BentoML reads the directory from its
dependency container (`BentoMLContainer.prometheus_multiproc_dir`, as its own pytest plugin sets
it) after importing the service module and before starting workers; the module calls `use_own_dir`
at import, so the server process gets a fresh temporary directory, removed when it exits, and its
workers inherit it through PROMETHEUS_MULTIPROC_DIR.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile


def use_own_dir() -> str:
    """Point BentoML at this process's metrics directory; returns it. A worker (or an operator
    who set PROMETHEUS_MULTIPROC_DIR) keeps the directory it was given."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        path = tempfile.mkdtemp(prefix=f"autopdm-metrics-{os.getpid()}-")
        atexit.register(shutil.rmtree, path, ignore_errors=True)
    BentoMLContainer.prometheus_multiproc_dir.set(path)
    return path
