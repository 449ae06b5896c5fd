"""One training at a time per home: two real `autopdm train` started together never mix their champions."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autopdm import components, store
from autopdm.modeling import lock
from autopdm.modeling.tracking import client as tracking_client
from autopdm.modeling.tracking import ensure_store
from autopdm.pipeline.features import build_features
from autopdm.sim.fleet import simulate_fleet, write_fleet

from .procs import AUTOPDM, env_for

ROUNDS = "10"  # the model is not under test: a few boosting rounds keep each run at a few seconds


@pytest.fixture
def fleet_home(home):
    f = simulate_fleet(60, 300, seed=0)
    write_fleet(f, home)
    store.write_table(build_features(f.trips, f.vehicles, f.service_events, f.dtc_events), "features", home)
    ensure_store(home)  # an existing home: the two runs race for the champions, not to create the database
    return home


def _train_together(home, tmp: Path, n: int = 2, **env) -> list[tuple[subprocess.Popen, str]]:
    """Start n `autopdm train` at once; wait for all; (process, its output) each."""
    e = env_for(home.home, AUTOPDM_LGB_MAX_ROUNDS=ROUNDS, AUTOPDM_LGB_THREADS="1", **env)
    logs = [tmp / f"train-{i}-{time.monotonic_ns()}.log" for i in range(n)]
    procs = [subprocess.Popen([AUTOPDM, "train"], env=e, stdout=f.open("w"), stderr=subprocess.STDOUT) for f in logs]
    for p in procs:
        p.wait(timeout=600)
    return [(p, f.read_text()) for p, f in zip(procs, logs)]


def _training_run(output: str) -> str:
    return re.search(r"mlflow run ([0-9a-f]{32})", output).group(1)


def _champion_trainings(home) -> dict[str, str]:
    """component → the training run (parent run) its champion version came from."""
    client = tracking_client(home)
    out = {}
    for c in components.names():
        mv = client.get_model_version_by_alias(components.get(c).model_name, components.CHAMPION_ALIAS)
        out[c] = client.get_run(mv.run_id).data.tags["mlflow.parentRunId"]
    return out


@pytest.mark.heavy
def test_two_trainings_wait_for_each_other(fleet_home, tmp_path):
    (a, out_a), (b, out_b) = _train_together(fleet_home, tmp_path)
    assert a.returncode == 0 and b.returncode == 0, out_a + out_b
    for out in (out_a, out_b):  # as in the report that found it: both promote all three ...
        assert out.count("PROMOTED") == len(components.names()), out
    runs = {_training_run(out_a): a.pid, _training_run(out_b): b.pid}
    client = tracking_client(fleet_home)
    first, second = sorted(runs, key=lambda r: client.get_run(r).info.start_time)
    # ... but one after the other: the second training began after the first had registered and promoted
    assert client.get_run(second).info.start_time >= client.get_run(first).info.end_time
    waiter = out_a if runs[second] == a.pid else out_b
    assert f"held by pid {runs[first]}" in waiter and "waiting up to" in waiter, waiter
    # so the champion set is whole: every champion from the run that promoted last
    assert set(_champion_trainings(fleet_home).values()) == {second}
    assert not (fleet_home.home / "locks" / lock.HOLDER_FILE).exists()


def test_second_training_refuses_with_one_line(fleet_home, tmp_path):
    (a, out_a), (b, out_b) = _train_together(fleet_home, tmp_path, AUTOPDM_LOCK_TIMEOUT_S="0")
    assert sorted([a.returncode, b.returncode]) == [0, 2], out_a + out_b
    (winner, won), (_, lost) = sorted([(a, out_a), (b, out_b)], key=lambda po: po[0].returncode)
    lines = [ln for ln in lost.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: the modeling lock "), lost
    assert str(lock.lock_path(fleet_home)) in lines[0] and f"held by pid {winner.pid} " in lines[0], lost
    assert "train" in lines[0] and "Traceback" not in lost
    assert set(_champion_trainings(fleet_home).values()) == {_training_run(won)}


def test_lock_is_reentrant_and_names_its_holder(home):
    with lock.modeling_lock(home, "training"):
        with lock.modeling_lock(home, "training", timeout=0):  # the Dask path calls train_all from train_all
            assert "training since" in lock.holder(home, patience_s=0)
        assert (home.home / "locks" / lock.HOLDER_FILE).exists()
    assert not (home.home / "locks" / lock.HOLDER_FILE).exists()
    assert lock.holder(home, patience_s=0).startswith("another process")


def test_features_command_waits_for_training_lock(fleet_home, tmp_path):
    holder_log = tmp_path / "holder.log"
    e = env_for(fleet_home.home)
    # a real process holds the lock (as a training would) while `autopdm features` is asked to run
    script = ("import time\nfrom autopdm.config import Paths\nfrom autopdm.modeling.lock import modeling_lock\n"
              "with modeling_lock(Paths.from_env(), 'training'):\n    print('held', flush=True)\n    time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", script], env=e, stdout=holder_log.open("w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "held" not in holder_log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        res = subprocess.run([AUTOPDM, "features"], env={**e, "AUTOPDM_LOCK_TIMEOUT_S": "1"}, capture_output=True,
                             text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert res.returncode == 2, res.stdout + res.stderr
    waiting, refused = res.stderr.strip().splitlines()
    assert waiting.startswith("waiting up to 1 s for the modeling lock") and f"held by pid {holder.pid} " in waiting
    assert refused.startswith("error: the modeling lock") and f"held by pid {holder.pid} " in refused
    assert "gave up after 1 s" in refused
    # once the holder is gone (killed: the OS released its lock), the build runs
    res = subprocess.run([AUTOPDM, "features"], env={**e, "AUTOPDM_LOCK_TIMEOUT_S": "0"}, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
