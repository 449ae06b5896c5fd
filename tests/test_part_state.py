"""The part's state as features (pipeline.part_state): last readings, use since, the learned estimate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from autopdm import components
from autopdm.pipeline import part_state
from autopdm.pipeline.features import build_features, build_pandas
from autopdm.pipeline.grid import day_number
from autopdm.sim.fleet import simulate_fleet


@pytest.fixture(scope="module")
def sim():
    f = simulate_fleet(150, 730, seed=21)
    feats = build_features(f.trips, f.vehicles, f.service_events, f.dtc_events, inspections=f.inspections)
    return f, feats


def _worst_truth(fleet, comp: str) -> pd.DataFrame:
    t = fleet.true_state[fleet.true_state["component"] == comp]
    w = t.groupby([t["vehicle_id"].astype(str), "date"], observed=True)["value"].min().rename("truth").reset_index()
    return w.assign(date=pd.to_datetime(w["date"]).astype("datetime64[ns]"))


def test_the_estimate_tracks_the_true_state_better_than_the_last_reading(sim):
    fleet, feats = sim
    for comp, positions, bound in (("brake", ("front", "rear"), 0.45), ("tire", ("fl", "fr", "rl", "rr"), 0.35)):
        m = components.get(comp).limit.measurement
        f = feats.assign(age=feats[[f"{m}_{p}_age_days" for p in positions]].min(axis=1),
                         last=feats[[f"{m}_{p}_last" for p in positions]].min(axis=1))
        f = f.merge(_worst_truth(fleet, comp), on=["vehicle_id", "date"])
        est, sd = f[f"{comp}_state_est"], f[f"{comp}_state_sd"]
        for age in (15, 60):
            g = f[(f["age"] == age) & est.notna()]
            assert len(g) > 40, (comp, age)
            err = (g[f"{comp}_state_est"] - g["truth"]).abs()
            assert err.mean() < bound, (comp, age, err.mean())
            if age == 60:
                assert err.mean() < (g["last"] - g["truth"]).abs().mean(), comp
        # the stated uncertainty is about right: ~68 % of the errors within one sd
        g = f[est.notna() & f["age"].between(1, 120)]
        inside = ((g[f"{comp}_state_est"] - g["truth"]).abs() <= g[f"{comp}_state_sd"]).mean()
        assert 0.5 < inside < 0.9, (comp, inside)
    # the parts near their limit are the ones with a high chance of reaching it in the horizon
    p = feats["brake_p_limit_15d"]
    assert feats.loc[p > 0.5, "brake_state_est"].median() < 3.6 < feats.loc[p < 0.01, "brake_state_est"].median()


def test_fleet_rates_are_refitted_point_in_time_and_find_the_true_rate(sim):
    fleet, _ = sim
    pairs = part_state.with_use(part_state.reading_pairs(fleet.service_events, fleet.inspections),
                                part_state.trips_on_days(fleet.trips, fleet.vehicles))
    assert (pairs["day_b"] - pairs["day_a"] >= part_state.MIN_PAIR_DAYS).all()
    rates = part_state.fleet_wear_rates(pairs)
    valid = pairs[(pairs["n_before"] > 0) & (pairs["use"] > 0)]
    for r in rates.sample(40, random_state=0).itertuples():
        done = valid[(valid["component"] == r.component) & (valid["position"] == r.position) & (valid["day_b"] <= r.day)]
        assert r.n_pairs == len(done) >= part_state.MIN_PAIRS
        assert r.rate == pytest.approx(done["loss"].sum() / done["use"].sum())
    # tread per km: the fleet's rate against the true rates of the parts (the telemetry misses some km,
    # so the rate per km seen runs a little above the true one)
    ts = fleet.true_state
    true_km = ts.loc[ts["component"] == "tire", "wear_per_use"].median()
    last = rates[rates["component"] == "tire"].groupby("position").last()["rate"]
    assert ((last / true_km) > 0.8).all() and ((last / true_km) < 1.6).all(), (last / true_km)


def test_a_block_of_vehicles_with_the_fleet_rates_is_the_fleet_table(sim):
    """What the Dask engine does per block: the pandas engine on some vehicles, the fleet's calendar and rates."""
    fleet, feats = sim
    block = sorted(fleet.vehicles["vehicle_id"])[10:30]
    rates = part_state.fleet_rates_from(fleet.trips, fleet.vehicles, fleet.service_events, fleet.inspections)
    end = day_number(fleet.trips["end_ts"])
    pick = lambda df: df[df["vehicle_id"].isin(block)]  # noqa: E731
    labels_until = int(max(end.max(), day_number(fleet.service_events["date"]).max()))
    got = build_pandas(pick(fleet.trips), pick(fleet.vehicles), pick(fleet.service_events), pick(fleet.dtc_events),
                       day0=int(end.min()), day_end=int(end.max()), labels_until=labels_until,
                       inspections=pick(fleet.inspections), wear_rates=rates)
    want = feats[feats["vehicle_id"].isin(block)].reset_index(drop=True)
    assert want["brake_wear_rate"].notna().any()
    pd.testing.assert_frame_equal(got, want)
    # ...and without the fleet's rates the block learns from itself: other numbers
    alone = build_pandas(pick(fleet.trips), pick(fleet.vehicles), pick(fleet.service_events), pick(fleet.dtc_events),
                         day0=int(end.min()), day_end=int(end.max()), labels_until=labels_until,
                         inspections=pick(fleet.inspections))
    assert not np.allclose(alone["tire_wear_rate"].fillna(0), want["tire_wear_rate"].fillna(0))


def test_last_readings_use_since_and_a_replacement(sim):
    fleet, feats = sim
    insp, se = fleet.inspections, fleet.service_events
    rows = feats.set_index(["vehicle_id", "date"])
    # after a replacement the removed pads' readings are gone: the new pads start at the registry's new value
    rep = se[(se["component"] == "brake") & (se["action"] == "replace")].assign(date=lambda d: pd.to_datetime(d["date"]))
    brake_days = insp[insp["component"] == "brake"].assign(date=lambda d: pd.to_datetime(d["date"]))
    checked = 0
    for r in rep.itertuples():
        key = (r.vehicle_id, r.date + pd.Timedelta(days=5))
        seen = brake_days[(brake_days["vehicle_id"] == r.vehicle_id) & (brake_days["date"] > r.date)
                          & (brake_days["date"] <= key[1])]
        if key not in rows.index or len(seen) or np.isnan(rows.loc[key, "brake_state_est"]):
            continue
        after = rows.loc[key]
        assert np.isnan(after["pad_mm_front_last"]) and np.isnan(after["km_since_brake_reading"])
        assert 10.0 < after["brake_state_est"] <= 11.0 and after["brake_state_sd"] >= 0.7
        checked += 1
    assert checked >= 5
    # a reading: its value and age, and the km of the trips that ended since
    tread = insp[(insp["measurement"] == "tread_mm") & (insp["position"] == "fl")].assign(date=lambda d: pd.to_datetime(d["date"]))
    checked = 0
    for r in tread.itertuples():
        key = (r.vehicle_id, r.date + pd.Timedelta(days=9))
        if key not in rows.index or rows.loc[key, "tread_mm_fl_age_days"] != 9:
            continue
        assert rows.loc[key, "tread_mm_fl_last"] == r.value
        tr = fleet.trips[fleet.trips["vehicle_id"] == r.vehicle_id]
        end = pd.to_datetime(tr["end_ts"]).dt.tz_convert(None)
        km = tr.loc[(end >= r.date + pd.Timedelta(days=1)) & (end < key[1] + pd.Timedelta(days=1)), "distance_km"].sum()
        assert rows.loc[key, "km_since_tire_reading"] == pytest.approx(km, rel=1e-4, abs=1e-3)
        checked += 1
        if checked == 10:
            break
    assert checked == 10
