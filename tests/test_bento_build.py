"""`bentoml build` succeeds from the repository and the bento carries the service source."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bentoml_build(tmp_path):
    env = dict(os.environ, BENTOML_HOME=str(tmp_path / "bentoml"), BENTOML_DO_NOT_TRACK="true")
    r = subprocess.run([sys.executable, "-m", "bentoml", "build", str(ROOT)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    bentos = list((tmp_path / "bentoml" / "bentos" / "autopdm").glob("*/bento.yaml"))
    assert len(bentos) == 1
    src = bentos[0].parent / "src"
    assert (src / "src" / "autopdm" / "serving" / "service.py").exists() or (src / "autopdm" / "serving" / "service.py").exists()
    assert not list(src.rglob("*.parquet")) and not list(src.rglob("mlflow.db"))  # no runtime state or data
