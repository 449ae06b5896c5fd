"""Store compaction: reads unchanged, crash-safe under SIGKILL at every step, locked against writers."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest
from filelock import FileLock
from typer.testing import CliRunner

from autopdm import compact, store
from autopdm.config import Paths

VINS = ["JTDBT923771234567", "WVWZZZ1KZ6W000001", "VF1RFB00X56789012"]


def _batch(vin: str, day: str, n: int = 6, seed: int = 0, source: str = "obd") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"vehicle_id": vin, "ts": pd.date_range(f"{day}T08:00Z", periods=n, freq="17min"),
                         "source": source, "speed_kph": rng.uniform(0, 120, n).round(1),
                         "rpm": rng.uniform(800, 3000, n).round(0)})


@pytest.fixture(scope="session")
def _filled(tmp_path_factory) -> Path:
    src = Paths(tmp_path_factory.mktemp("compact-src") / "var").ensure()
    _build(src)
    return src.home


@pytest.fixture
def filled(home, _filled):
    shutil.copytree(_filled, home.home, dirs_exist_ok=True)
    return home


def _build(home) -> None:
    """Several batches per vehicle and day, a replay under the same key, a regrouped replay under
    another key, a batch with rejected rows (quarantined), and DTC events in several batches."""
    for i, vin in enumerate(VINS):
        for d, day in enumerate(pd.date_range("2026-03-01", periods=5, freq="D").strftime("%Y-%m-%d")):
            for b in range(2):
                df = _batch(vin, day, seed=100 * i + 10 * d + b)
                df["ts"] += pd.Timedelta(hours=6 * b)
                store.append(df, "samples", home, key=f"{vin}-{day}-{b}")
        again = _batch(vin, "2026-03-02", seed=100 * i + 10)
        store.append(again, "samples", home, key=f"{vin}-2026-03-02-0")      # replayed, same key
        store.append(again, "samples", home, key=f"{vin}-replay")            # replayed, another key
        for k in range(3):
            store.append(pd.DataFrame({"vehicle_id": vin, "ts": pd.date_range(f"2026-03-0{k + 1}T09:00Z", periods=2,
                                                                              freq="h"),
                                       "code": ["P0562", "C0035"][k % 2], "status": "stored"}),
                         "dtc_events", home, key=f"dtc-{vin}-{k}")
    bad = _batch(VINS[0], "2026-03-03", n=3, seed=9)
    bad["ts"] += pd.Timedelta(hours=3)
    bad.loc[1, "speed_kph"] = -5.0
    assert store.append(bad, "samples", home, origin="bad.csv", key="bad").quarantined == 1


def _reads(home) -> dict:
    return {"samples": store.read_samples(home), "dtc": store.read_dtc_events(home),
            "one": store.read_samples(home, vehicle_ids=[VINS[1]], start="2026-03-03"),
            "quarantine": store.read_quarantine(home)}


def _assert_same(a: dict, b: dict) -> None:
    for k in a:
        pdt.assert_frame_equal(a[k], b[k], obj=k)


def _digest(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _live(home, table="samples") -> dict:
    root = home.samples if table == "samples" else home.dtc_events
    return {d.name: [f.relative_to(d).as_posix() for f in store.unit_files(d)[0]] for d in store.vehicle_dirs(root)}


def test_reads_are_identical_and_quarantine_untouched(filled):
    home = filled
    before, quarantine = _reads(home), _digest(home.quarantine)
    assert len(before["samples"]) == 3 * 5 * 2 * 6 + 2 and len(before["dtc"]) == 3 * 3 * 2
    n_files = sum(1 for _ in home.samples.rglob("*.parquet"))
    res = compact.compact(home)
    assert res.vehicles == 6 and res.files_before == n_files + 3 * 3  # samples files + dtc files
    _assert_same(before, _reads(home))
    assert _digest(home.quarantine) == quarantine
    assert all(files == ["compact-000001.parquet"] for files in _live(home).values())
    assert sorted(p.name for p in home.samples.rglob("*.parquet")) == ["compact-000001.parquet"] * 3
    assert not any(d.name.startswith("date=") for d in home.samples.rglob("*") if d.is_dir())
    # nothing left to do the second time
    again = compact.compact(home)
    assert again.vehicles == 0 and again.skipped == 6

    # after compaction: a replay under a known key, and new batches, read as they would have
    store.append(_batch(VINS[0], "2026-03-02", seed=10), "samples", home, key=f"{VINS[0]}-2026-03-02-0")
    new = _batch(VINS[2], "2026-03-07", seed=77)
    store.append(new, "samples", home, key="later")
    after = store.read_samples(home)
    expect = pd.concat([before["samples"], store.read_files(
        [f for d in store.vehicle_dirs(home.samples) for f in store.unit_files(d)[0] if "date=2026-03-07" in str(f)],
        "samples")]).sort_values(["vehicle_id", "ts"], kind="stable").reset_index(drop=True)
    pdt.assert_frame_equal(after, expect)
    assert compact.compact(home).vehicles == 2
    pdt.assert_frame_equal(store.read_samples(home), after)
    assert _live(home)[f"vehicle_id={VINS[2]}"] == ["compact-000002.parquet"]


def test_a_reader_at_every_step_sees_the_old_files_or_the_merged_one(filled, monkeypatch):
    home = filled
    before, old_live = _reads(home), _live(home)
    seen = []

    def check(step):
        live = _live(home)
        for vdir, files in live.items():
            assert files in (old_live[vdir], ["compact-000001.parquet"]), (step, vdir, files)
        if step != "file-removed" or len(seen) % 6 == 0:
            _assert_same(before, _reads(home))
        seen.append(step)

    monkeypatch.setattr(compact, "_hook", check)
    compact.compact(home)
    assert {"merged-file-written", "manifest-committed", "file-removed"} <= set(seen)


KILLER = textwrap.dedent("""
    import os, signal, sys
    from autopdm import compact
    from autopdm.config import Paths
    step, nth = sys.argv[1], int(sys.argv[2])
    count = {"n": 0}
    def hook(s):
        if s == step:
            count["n"] += 1
            if count["n"] == nth:
                os.kill(os.getpid(), signal.SIGKILL)
    compact._hook = hook
    compact.compact(Paths.from_env())
    print("finished")
""")


@pytest.mark.parametrize("step,nth", [("merged-file-written", 2), ("manifest-committed", 1), ("file-removed", 7)])
def test_killed_mid_compaction_loses_nothing_and_a_second_run_completes(filled, step, nth):
    home = filled
    before = _reads(home)
    proc = subprocess.run([sys.executable, "-c", KILLER, step, str(nth)], capture_output=True, text=True,
                          env=os.environ.copy(), timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    _assert_same(before, _reads(home))
    res = compact.compact(home)
    assert res.files_removed > 0
    _assert_same(before, _reads(home))
    assert sorted(p.name for p in home.samples.rglob("*.parquet")) == ["compact-000001.parquet"] * 3 \
        or all(len(files) == 1 for files in _live(home).values())
    assert all(len(files) == 1 for files in _live(home).values())
    assert not [p for p in home.telemetry.rglob(".*.tmp")]


def test_two_compactions_do_not_run_at_once_and_a_writer_waits_for_a_vehicle(filled, monkeypatch):
    home = filled
    with FileLock(str(home.home / "locks" / "store-compact.lock")):
        with pytest.raises(compact.CompactionBusy, match="another compaction"):
            compact.compact(home, timeout=0.2)

    done = {}

    def writer():
        store.append(_batch(VINS[0], "2026-03-09", seed=5), "samples", home, key="during")
        done["at"] = time.monotonic()

    state = {}

    def hook(step):
        if step == "merged-file-written" and "thread" not in state:
            state["thread"] = threading.Thread(target=writer)
            state["thread"].start()
            time.sleep(0.5)
            assert "at" not in done  # the writer waits for this vehicle's merge
            state["released_after"] = time.monotonic()

    monkeypatch.setattr(compact, "_hook", hook)
    compact.compact(home)
    state["thread"].join(10)
    assert done["at"] >= state["released_after"]
    got = store.read_samples(home, vehicle_ids=[VINS[0]], start="2026-03-09")
    assert len(got) == 6


def test_after_import_threshold_and_the_cli(filled):
    from autopdm.cli import app

    home = filled
    store._touched.clear()
    for b in range(3):  # an "import" of three files for one vehicle
        df = _batch(VINS[1], "2026-03-08", seed=b)
        df["ts"] += pd.Timedelta(hours=4 * b)
        store.append(df, "samples", home, key=f"import-{b}")
    before = _reads(home)
    assert compact.after_import(home, threshold=4) is None  # below the threshold: nothing
    res = compact.after_import(home, threshold=3)
    assert res is not None and (res.vehicles, res.tables["samples"]) == (1, 1)
    assert _live(home)[f"vehicle_id={VINS[1]}"] == ["compact-000001.parquet"]
    assert len(_live(home)[f"vehicle_id={VINS[0]}"]) > 1  # vehicles the import did not touch wait for the command
    _assert_same(before, _reads(home))
    assert compact.after_import(home, threshold=1) is None  # counted files were compacted already
    out = CliRunner().invoke(app, ["store", "compact"])
    assert out.exit_code == 0, out.output
    assert "of 5 vehicle directories merged" in out.output and "1 already compact" in out.output
    _assert_same(before, _reads(home))
