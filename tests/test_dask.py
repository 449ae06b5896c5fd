"""The Dask engine: same features table as pandas; LightGBM on a LocalCluster vs single machine."""

from __future__ import annotations

import fsspec
import pandas as pd
import pytest

from autopdm import features_dask, store, train_dask
from autopdm.features import build_features
from autopdm.simulate import simulate_fleet, write_fleet

ROUNDS = 60  # both engines, fixed: the comparison is of engines, not of early stopping


@pytest.fixture(scope="module")
def cluster():
    """Two in-process workers on 127.0.0.1 (tcp, so LightGBM's network works), closed after the module."""
    with features_dask.local_client(n_workers=2, processes=False) as client:
        yield client


@pytest.fixture
def fleet_home(home):
    fleet = simulate_fleet(60, 240, seed=3)
    write_fleet(fleet, home)
    return home


def _pandas_features(paths) -> pd.DataFrame:
    df = build_features(store.read_table("trips", paths), store.read_table("vehicles", paths),
                        store.read_table("service_events", paths), store.read_dtc_events(paths))
    return df.sort_values(["vehicle_id", "date"], kind="stable").reset_index(drop=True)


def test_dask_features_equal_pandas(fleet_home, cluster):
    expected = _pandas_features(fleet_home)
    assert len(expected) > 10_000
    # from the store, several vehicle blocks, written as the features table
    got = features_dask.run(fleet_home, client=cluster, vehicles_per_partition=7)
    pd.testing.assert_frame_equal(got, expected)
    pd.testing.assert_frame_equal(store.read_table("features", fleet_home), expected)
    # in-memory variant
    mem = features_dask.build_features_dask(store.read_table("trips", fleet_home), store.read_table("vehicles", fleet_home),
                                            store.read_table("service_events", fleet_home), store.read_dtc_events(fleet_home),
                                            client=cluster, vehicles_per_partition=11)
    pd.testing.assert_frame_equal(mem, expected)


def test_dask_features_from_fsspec_url(fleet_home, cluster):
    """Inputs and output on an fsspec filesystem (memory:// stands in for s3:// here)."""
    fs = fsspec.filesystem("memory")
    base = "memory://autopdm-test/features"
    for name in ("trips", "vehicles", "service_events"):
        fs.pipe(f"{base}/{name}.parquet", fleet_home.table(name).read_bytes())
    for f in fleet_home.dtc_events.rglob("*.parquet"):
        fs.pipe(f"memory://autopdm-test/dtc_events/{f.relative_to(fleet_home.dtc_events).as_posix()}", f.read_bytes())
    src = features_dask.Sources.from_url(base, dtc_events="memory://autopdm-test/dtc_events")
    out = features_dask.run(fleet_home, src=src, out="memory://autopdm-test/out/features", client=cluster,
                            vehicles_per_partition=20)
    got = pd.read_parquet(out)
    got["segment"] = got["segment"].astype("string")
    got = features_dask.finish(got)
    pd.testing.assert_frame_equal(got, _pandas_features(fleet_home), check_dtype=False)
    fs.rm("memory://autopdm-test", recursive=True)


@pytest.fixture(scope="module")
def train_features(tmp_path_factory):
    fleet = simulate_fleet(200, 730, seed=1)
    return build_features(fleet.trips, fleet.vehicles, fleet.service_events, fleet.dtc_events)


def test_dask_training_one_worker_reproduces_single_machine(train_features):
    """Same parameters, rounds, calibration and threshold code: with one worker the model is the same model."""
    with features_dask.local_client(n_workers=1, processes=False) as one:
        r = train_dask.compare_engines(train_features, ["brake", "battery"], client=one, num_boost_round=ROUNDS)
    for comp, v in r.items():
        for k in ("pr_auc", "brier", "roc_auc", "ew_recall", "alert_rate"):
            assert train_dask.relative_gap(v["pandas"][k], v["dask"][k]) < 0.01, (comp, k, v)


def test_dask_training_two_workers_close(train_features, cluster):
    """Data-parallel on two workers. Each worker bins features from its own rows (LightGBM #3835), so trees
    differ: the 1 % target holds only with one worker (test above). Measured here: Brier 2.5 % apart, ROC-AUC
    within a few %; at this size the pandas model's own seed-to-seed spread in PR-AUC is ~10-20 %."""
    r = train_dask.compare_engines(train_features, ["brake"], client=cluster, num_boost_round=ROUNDS)
    v = r["brake"]
    assert v["dask"]["roc_auc"] > 0.7
    assert train_dask.relative_gap(v["pandas"]["brier"], v["dask"]["brier"]) < 0.05, v
    assert train_dask.relative_gap(v["pandas"]["roc_auc"], v["dask"]["roc_auc"]) < 0.05, v
