"""Bounded memory at fleet scale: the chunked paths give exactly what the whole-fleet paths give."""

from __future__ import annotations

import pandas as pd
import pandas.testing as pdt
import pytest

from autopdm import store
from autopdm.config import Paths
from autopdm.sim import fleet as sim

TABLES = ("trips", "vehicles", "service_events", "inspections", "true_needs", "true_lives", "true_state")


@pytest.fixture(scope="module")
def small_fleet():
    return sim.simulate_fleet(23, 120, seed=2)


def test_trips_tabled_in_vehicle_blocks_are_the_whole_table(small_fleet, monkeypatch):
    monkeypatch.setattr(sim, "TRIP_CHUNK_VEHICLES", 5)
    chunked = sim.simulate_fleet(23, 120, seed=2)
    pdt.assert_frame_equal(chunked.trips, small_fleet.trips)
    assert str(chunked.trips["trip_id"].dtype) == "string"


def test_in_blocks_the_fleet_is_what_main_recorded(monkeypatch):
    """The frozen fingerprints of test_simulate (recorded before the simulator worked in blocks), with
    blocks of 7 vehicles: trips tabled in 6 blocks, the lean true-state table."""
    from tests.test_simulate import RECORDED, fingerprint

    monkeypatch.setattr(sim, "TRIP_CHUNK_VEHICLES", 7)
    kwargs, want = RECORDED[0]
    assert fingerprint(sim.simulate_fleet(**kwargs)) == want


def test_simulate_to_store_writes_what_write_fleet_writes(small_fleet, tmp_path, monkeypatch):
    a, b = Paths(tmp_path / "a").ensure(), Paths(tmp_path / "b").ensure()
    # a recorded vehicle's trips are kept by both (and come first)
    rec = small_fleet.trips.head(3).assign(vehicle_id="JTDBT923771234567", source="obd")
    for p in (a, b):
        store.write_table(rec, "trips", p)
    sim.write_fleet(small_fleet, a)
    monkeypatch.setattr(sim, "TRIP_CHUNK_VEHICLES", 4)
    fleet, written = sim.simulate_to_store(b, 23, 120, seed=2)
    assert fleet.trips.empty and written.rows == len(small_fleet.trips)
    assert written.km == pytest.approx(small_fleet.trips["distance_km"].sum())
    for t in TABLES:
        pdt.assert_frame_equal(store.read_table(t, b), store.read_table(t, a), obj=t)
    pdt.assert_frame_equal(store.read_dtc_events(b), store.read_dtc_events(a))
    assert len(store.read_table("trips", b)) == len(small_fleet.trips) + 3
    assert not list((b.features_dir).glob(".*.tmp"))


@pytest.fixture(scope="module")
def stored_fleet(small_fleet, tmp_path_factory):
    home = Paths(tmp_path_factory.mktemp("scale") / "var").ensure()
    sim.write_fleet(small_fleet, home)
    return home


@pytest.mark.parametrize("as_of,per_block", [(None, 8), ("2025-03-20", 12)])
def test_features_in_vehicle_blocks_are_the_whole_fleet_table(stored_fleet, tmp_path, as_of, per_block):
    from autopdm.pipeline import features_chunked
    from autopdm.pipeline.features import build_from_store

    whole, whole_needs = build_from_store(stored_fleet, as_of=as_of, write=False)
    out = tmp_path / "features.parquet"
    res = features_chunked.build_chunked(stored_fleet, as_of=as_of, vehicles_per_block=per_block, write=False, out=out)
    assert res.rows == len(whole) and res.vehicles == whole["vehicle_id"].nunique() == 23
    assert res.columns == list(whole.columns)
    # through Parquet both ways, as `autopdm features` stores them
    ref = tmp_path / "ref.parquet"
    store.atomic_write_parquet(__import__("pyarrow").Table.from_pandas(whole, preserve_index=False), ref)
    pdt.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(ref))
    assert not list(tmp_path.glob(".*"))
