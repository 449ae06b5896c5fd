"""What the service tests share: a tiny trained fleet (built once per test session, copied per
module so that no module sees another's writes) and real `bentoml serve` processes on 127.0.0.1."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from pathlib import Path

import filelock
import httpx

from autopdm.localproc import free_port, start, stop, wait_http

from autopdm.config import Paths

from .procs import env_for

TOKEN = "test-token-123"
SERVICE = "autopdm.serving.service:Autopdm"
BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def home_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a child working on `home`. MLflow leaves MLFLOW_TRACKING_URI in
    os.environ after any in-process call; inherited, it would point a child at another home's registry."""
    env = env_for(home, **extra)
    if "MLFLOW_TRACKING_URI" not in extra:
        env.pop("MLFLOW_TRACKING_URI", None)
    return env


def home_paths(home: Path) -> Paths:
    """`home`'s paths and registry, whatever MLFLOW_TRACKING_URI an earlier in-process call left behind."""
    return Paths(Path(home).resolve())


def _build(home: Path, vehicles: int, days: int, seed: int) -> None:
    code = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]);"
            "from bench_service import build_small_home; build_small_home(Path(sys.argv[2]), *map(int, sys.argv[3:]))")
    r = subprocess.run([sys.executable, "-c", code, str(BENCH), str(home), str(vehicles), str(days), str(seed)],
                       env=home_env(home), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


def fleet_copy(tmp_path_factory, name: str, vehicles: int = 80, days: int = 200, seed: int = 7) -> Path:
    """A fresh copy of the session's fleet home (simulated, features, three trained champions).
    The copy's registry points at the original's model files, which nobody changes."""
    base = tmp_path_factory.getbasetemp()
    pristine = base / f"service-fleet-{vehicles}x{days}s{seed}" / "var"
    with filelock.FileLock(str(pristine.parent) + ".lock"):
        if not (pristine.parent / "done").exists():
            shutil.rmtree(pristine.parent, ignore_errors=True)
            _build(pristine, vehicles, days, seed)
            (pristine.parent / "done").touch()
    home = tmp_path_factory.mktemp(name) / "var"
    shutil.copytree(pristine, home)
    return home


def headers(token: str = TOKEN) -> dict:
    return {"Authorization": f"Bearer {token}"}


@contextlib.contextmanager
def serving(home: Path, log: Path, timeout: float = 120, **env: str):
    """A real `bentoml serve` of the service on a free port; yields its base URL."""
    port = free_port()
    proc = start([sys.executable, "-m", "bentoml", "serve", SERVICE, "--host", "127.0.0.1", "--port", str(port)],
                 home_env(home, AUTOPDM_API_TOKEN=TOKEN, **env), log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/readyz", timeout, proc, log)
        yield url
    finally:
        stop(proc, timeout=15.0)


def post(url: str, path: str, body, token: str | None = TOKEN, timeout: float = 30) -> httpx.Response:
    return httpx.post(url + path, json=body, headers=headers(token) if token else {}, timeout=timeout)
