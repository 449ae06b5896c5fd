"""Needs from the workshop's records (pipeline.needs) and the labels built from them.

The first test is the worked example of docs/labels.md, record by record.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from autopdm import schemas
from autopdm.pipeline import needs
from autopdm.pipeline.features import HORIZON_DAYS, build_features
from autopdm.sim.fleet import simulate_fleet

VIN = "WVWZZZ1KZ6W000001"
D0 = pd.Timestamp("2025-01-01")


def _events(rows) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["day", "odometer_km", "component", "action"])
    return schemas.conform(df.assign(event_id=[f"E{i}" for i in range(len(df))], vehicle_id=VIN, source="crm",
                                     date=[(D0 + pd.Timedelta(days=d)).date() for d in df["day"]]), "service_events")


def _readings(rows) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["day", "odometer_km", "component", "position", "measurement", "value"])
    return schemas.conform(df.assign(inspection_id=[f"I{i:03d}" for i in range(len(df))], vehicle_id=VIN, source="crm",
                                     date=[(D0 + pd.Timedelta(days=d)).date() for d in df["day"]]), "inspections")


def _day(n: pd.DataFrame, i: int = 0) -> int:
    return int((pd.Timestamp(n["need_date"].iloc[i]) - D0).days)


def test_worked_example_of_the_docs():
    """Front pads 7.0 mm at 10,000 km, 5.0 at 15,000, a routine visit at 16,000 km, then 2.5 mm at 20,000 km."""
    se = _events([(0, 10_000, "other", "replace"), (100, 15_000, "other", "replace"), (150, 16_000, "other", "repair"),
                  (200, 20_000, "other", "replace")])
    insp = _readings([(0, 10_000, "brake", "front", "pad_mm", 7.0), (100, 15_000, "brake", "front", "pad_mm", 5.0),
                      (200, 20_000, "brake", "front", "pad_mm", 2.5), (200, 20_000, "brake", "rear", "pad_mm", 6.0)])
    n = needs.needs_table(se, insp)
    assert len(n) == 1
    r = n.iloc[0]
    # 3 mm lies 80 % of the way from 5.0 to 2.5 mm: at 19,000 km; the car did 16,000 km on day 150 and
    # 20,000 on day 200, so 19,000 km fell on day 187.5 → 188 (linear in time it would be day 180)
    assert (r["component"], r["evidence"], r["position"], r["bracket_days"]) == ("brake", "measured", "front", 100.0)
    assert _day(n) == 188
    assert list(n.columns) == [f.name for f in schemas.NEEDS]
    # without the odometer readings, linear in time between the two readings
    assert _day(needs.needs_table(se.assign(odometer_km=np.nan), insp.assign(odometer_km=np.nan))) == 180


def test_each_kind_of_evidence():
    # a life ends in a worn replacement; the next part is replaced above the limit (no need); the third one's
    # records hold no readings (the replacement stands in); the battery breaks down before any reading shows it
    # (the removed battery's reading the day after confirms it but does not move it)
    se = _events([(120, 20_000, "brake", "replace"), (300, 40_000, "brake", "replace"), (500, 60_000, "brake", "replace"),
                  (400, 50_000, "battery", "repair"), (401, 50_050, "battery", "replace")])
    insp = _readings([(20, 12_000, "brake", "front", "pad_mm", 4.0), (120, 20_000, "brake", "front", "pad_mm", 2.0),
                      (300, 40_000, "brake", "front", "pad_mm", 4.5),
                      (100, 18_000, "battery", "-", "battery_soh_pct", 72.0),
                      (401, 50_050, "battery", "-", "battery_soh_pct", 50.0)])
    n = needs.needs_table(se, insp)
    got = [(c, e, _day(n, i)) for i, (c, e) in enumerate(zip(n["component"], n["evidence"]))]
    # pads: 4.0 → 2.0 mm between 12,000 and 20,000 km: 3 mm at 16,000 km; the battery test read 18,000 km on
    # day 100, so 16,000 km fell on day 20 + 80 × 4/6 = 73 (linear in time: day 70)
    assert got == [("battery", "breakdown", 400), ("brake", "replaced_worn", 73), ("brake", "replaced", 500)]
    assert n.loc[n["evidence"] == "breakdown", "bracket_days"].tolist() == [0.0]
    assert n.loc[n["evidence"] == "replaced", "bracket_days"].isna().all()


def test_positions_combine_as_the_registry_says_and_a_fitted_part_starts_new():
    # pads fitted on day 0 (on record): front reads 2.0 mm on day 200 with no reading before it; the rear 3.0
    # on day 150. The registry's new pad (11 mm) anchors the front: 3 mm at 8/9 of the way, day 178; the
    # rear from 11 mm: exactly at 3 mm on day 150 → the first position decides (need_when="any")
    se = _events([(0, 0, "brake", "replace")])
    insp = _readings([(150, 15_000, "brake", "rear", "pad_mm", 3.0), (200, 20_000, "brake", "front", "pad_mm", 2.0)])
    n = needs.needs_table(se, insp)
    # (the replacement on day 0 ends a part's life without readings: it stands in for that part's need)
    assert n["evidence"].tolist() == ["replaced", "measured"] and _day(n) == 0
    assert n["position"].iloc[1] == "rear" and _day(n, 1) == 150 and n["bracket_days"].iloc[1] == 150.0
    front_only = needs.needs_table(se, insp[insp["position"] == "front"]).iloc[1:]
    assert _day(front_only) == 178 and front_only["bracket_days"].iloc[0] == 200.0
    # with no fitting on record and no earlier reading, the need sits on the reading's day, bracket unknown
    n = needs.needs_table(None, insp[insp["position"] == "front"])
    assert _day(n) == 200 and np.isnan(n["bracket_days"].iloc[0])


def test_a_retest_replaces_the_first_printout_of_the_day():
    insp = _readings([(10, 1_000, "battery", "-", "battery_soh_pct", 80.0),
                      (300, 9_000, "battery", "-", "battery_soh_pct", 52.0),    # discharged: reads low
                      (300, 9_000, "battery", "-", "battery_soh_pct", 63.0)])   # after charging
    assert needs.needs_table(None, insp).empty
    assert len(needs.needs_table(None, insp.iloc[:2])) == 1


def test_records_without_readings_give_the_service_events():
    se = _events([(50, 5_000, "tire", "replace"), (80, 8_000, "tire", "repair"), (90, 9_000, "tire", "inspect"),
                  (95, 9_500, "other", "replace")])
    n = needs.needs_table(se, None)
    assert [(e, _day(n, i)) for i, e in enumerate(n["evidence"])] == [("replaced", 50), ("breakdown", 80)]


def test_labels_come_from_the_needs():
    f = simulate_fleet(40, 300, seed=4)
    feats = build_features(f.trips, f.vehicles, f.service_events, f.dtc_events, inspections=f.inspections)
    n = needs.needs_table(f.service_events, f.inspections)
    assert set(n["evidence"]) >= {"replaced_worn", "measured"}
    for comp in ("brake", "tire", "battery"):
        nd = n[n["component"] == comp].assign(need_date=lambda d: pd.to_datetime(d["need_date"]))
        for _, row in feats.sample(400, random_state=1).iterrows():
            later = nd.loc[(nd["vehicle_id"] == row["vehicle_id"]) & (nd["need_date"] > row["date"]), "need_date"]
            dtn = (later.min() - row["date"]).days if len(later) else np.nan
            assert row[f"label_{comp}"] == int(1 <= dtn <= HORIZON_DAYS)
            assert (np.isnan(dtn) and np.isnan(row[f"days_to_need_{comp}"])) or row[f"days_to_need_{comp}"] == dtn
    # a replacement found still above the limit is no need: its day carries no label from it
    rep = f.service_events[(f.service_events["action"] == "replace") & (f.service_events["component"] == "brake")]
    found_ok = rep.merge(f.inspections, on=["vehicle_id", "date", "component"])
    found_ok = found_ok.groupby(["vehicle_id", "date"])["value"].min()
    found_ok = found_ok[found_ok > 3.0]
    assert len(found_ok) > 0
    for (vin, day), _ in found_ok.items():
        assert not ((n["vehicle_id"] == vin) & (n["component"] == "brake") & (n["need_date"] == day)).any()


def test_needs_match_the_true_needs_of_a_simulated_fleet():
    """Observed needs land near the physical ones: most within their bracket of a true need."""
    f = simulate_fleet(120, 730, seed=6)
    n = needs.needs_table(f.service_events, f.inspections)
    tn = f.true_needs
    matched = 0
    measured = n[n["evidence"].isin(["measured", "replaced_worn"]) & n["bracket_days"].notna()]
    for r in measured.itertuples():
        t = tn[(tn["vehicle_id"] == r.vehicle_id) & (tn["component"] == r.component)]
        gap = (pd.to_datetime(t["need_date"]) - pd.Timestamp(r.need_date)).dt.days.abs()
        matched += bool(len(gap) and gap.min() <= max(r.bracket_days, 30))
    assert len(measured) > 50 and matched / len(measured) > 0.75
    # a no-start is a breakdown on its day
    ns = tn.dropna(subset=["no_start_date"])
    brk = n[n["evidence"] == "breakdown"]
    hit = ns.assign(need_date=pd.to_datetime(ns["no_start_date"]).dt.date).merge(brk, on=["vehicle_id", "need_date"])
    assert len(ns) > 3 and len(hit) >= 0.8 * len(ns)


@pytest.mark.parametrize("bad", [{"need_when": "most"}, {"rate_use": "boil"}])
def test_registry_mistakes_are_clear_errors(bad):
    import dataclasses

    from autopdm import components

    from .test_features import COOLANT, hand_fleet

    trips, veh, se, dtc = hand_fleet(n=3, days=30)
    with components.registered(dataclasses.replace(COOLANT, families=("part_state",), **bad)):
        with pytest.raises(ValueError, match="component 'coolant'"):
            build_features(trips, veh, se, dtc)


def test_cli_features_writes_the_needs_beside_the_features(home):
    from typer.testing import CliRunner

    from autopdm import store
    from autopdm.cli import app
    from autopdm.sim.fleet import write_fleet

    fleet = simulate_fleet(30, 400, seed=9)
    write_fleet(fleet, home)
    r = CliRunner().invoke(app, ["features"])
    assert r.exit_code == 0, r.output
    got = store.read_table("needs", home)
    want = needs.needs_table(store.read_table("service_events", home), store.read_table("inspections", home))
    assert len(got) > 10 and set(got["evidence"]) >= {"measured", "replaced_worn"}
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True), check_dtype=False)
    feats = store.read_table("features", home)
    assert feats["brake_state_est"].notna().any() and feats["label_brake"].sum() > 0
    # as of a day: only the records known then
    r = CliRunner().invoke(app, ["features", "--as-of", "2025-06-30"])
    assert r.exit_code == 0, r.output
    early = store.read_table("needs", home)
    assert len(early) < len(got) and (pd.to_datetime(early["need_date"]) <= "2025-06-30").all()
