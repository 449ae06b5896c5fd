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
