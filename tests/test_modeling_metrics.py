"""Metrics against explicit need events (modeling.metrics, modeling.evaluation)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from autopdm import components
from autopdm.modeling import evaluation
from autopdm.modeling.metrics import (alert_metrics, by_vehicle_interval, component_needs, evaluable_needs, evaluate,
                                      labels_from_needs, lead_time_histogram, needs_from_labels)

D0 = pd.Timestamp("2026-03-01")


def _rows(spans: dict[str, tuple[int, int]]) -> pd.DataFrame:
    """Daily rows per vehicle over [first, last] day numbers from D0."""
    parts = [pd.DataFrame({"vehicle_id": v, "date": D0 + pd.to_timedelta(np.arange(a, b + 1), unit="D")})
             for v, (a, b) in spans.items()]
    return pd.concat(parts, ignore_index=True)


def _needs(*pairs) -> pd.DataFrame:
    return pd.DataFrame({"vehicle_id": [v for v, _ in pairs], "component": "brake",
                         "need_date": [D0 + pd.Timedelta(days=d) for _, d in pairs]})


def _alerts(rows: pd.DataFrame, *pairs) -> np.ndarray:
    day = (rows["date"] - D0).dt.days.to_numpy()
    return np.array([any(v == rv and d == rd for v, d in pairs) for rv, rd in zip(rows["vehicle_id"], day)])


def test_labels_from_needs_look_15_days_ahead():
    rows = _rows({"V1": (0, 59), "V2": (0, 59)})
    y, dtn = labels_from_needs(rows, _needs(("V1", 40), ("V1", 55)))
    day = (rows["date"] - D0).dt.days.to_numpy()
    v1 = rows["vehicle_id"].to_numpy() == "V1"
    # label 1 exactly when a need falls in (date, date + 15]: days 25..39 for the need on day 40, then 40..54
    assert set(day[v1 & (y == 1)]) == set(range(25, 55))
    assert dtn[v1 & (day == 40)][0] == 15 and dtn[v1 & (day == 10)][0] == 30
    assert not y[~v1].any() and np.isnan(dtn[~v1]).all()  # V2 has no need; V1's needs are not V2's


def test_early_warning_recall_precision_and_lead_times():
    rows = _rows({"V1": (0, 59), "V2": (0, 59), "V3": (20, 59)})
    # V1 day 40: evaluable; V2 day 10: window before its first row; V2 day 70: window past its last
    # row; V3 day 30: its rows start on day 20, after the window opens (day 15) -> not evaluable
    needs = _needs(("V1", 40), ("V2", 10), ("V2", 70), ("V3", 30))
    ev = evaluable_needs(rows, needs)
    assert list(zip(ev["vehicle_id"], (ev["need_date"] - D0).dt.days)) == [("V1", 40)]

    m = alert_metrics(rows, _alerts(rows, ("V1", 30), ("V2", 20)), "brake", needs)
    assert m["ew_recall"] == 1.0 and m["n_events"] == 1 and m["n_events_warned"] == 1
    assert m["precision"] == 0.5 and m["n_alerts"] == 2 and m["alert_rate"] == pytest.approx(2 / len(rows))
    assert list(m["_lead_days"]) == [10]

    late = alert_metrics(rows, _alerts(rows, ("V1", 35)), "brake", needs)       # 5 days ahead: too late
    assert late["ew_recall"] == 0.0 and late["precision"] == 1.0 and list(late["_lead_days"]) == [5]
    early = alert_metrics(rows, _alerts(rows, ("V1", 24)), "brake", needs)      # 16 days ahead: too early
    assert early["ew_recall"] == 0.0 and early["precision"] == 0.0 and list(early["_lead_days"]) == [16]
    assert lead_time_histogram(np.array([0, 10, 10, 3])) == {"0": 1, "3": 1, "10": 2}


def test_needs_of_other_components_are_ignored_and_bad_frames_named():
    rows = _rows({"V1": (0, 59)})
    needs = pd.concat([_needs(("V1", 40)), _needs(("V1", 30)).assign(component="tire")])
    assert (component_needs(needs, rows, "brake")["need_date"] == D0 + pd.Timedelta(days=40)).all()
    alert = _alerts(rows, ("V1", 20))  # 10 days before the tire need, 20 before the brake need
    assert alert_metrics(rows, alert, "brake", needs)["precision"] == 0.0
    assert alert_metrics(rows, alert, "tire", needs)["precision"] == 1.0
    with pytest.raises(ValueError, match="need_date"):
        component_needs(needs.drop(columns="need_date"), rows, "brake")


@pytest.fixture(scope="module")
def sim_features():
    from autopdm.pipeline.features import build_features
    from autopdm.sim.fleet import simulate_fleet

    fleet = simulate_fleet(60, 400, seed=3)
    df = build_features(fleet.trips, fleet.vehicles, fleet.service_events, fleet.dtc_events)
    return df[df["label_complete"]].reset_index(drop=True), fleet.true_needs


def test_observed_needs_rebuild_the_labels_and_differ_from_the_truth(sim_features):
    df, true_needs = sim_features
    for comp in components.names():
        c = components.get(comp)
        y, dtn = labels_from_needs(df, needs_from_labels(df, comp))
        np.testing.assert_array_equal(y, df[c.label].to_numpy())
        known = np.isfinite(df[c.days_to_need].to_numpy(dtype=float))
        np.testing.assert_array_equal(dtn[known], df[c.days_to_need].to_numpy(dtype=float)[known])
        # default needs = the labels' own: same figures as passing them explicitly
        risk = np.random.default_rng(0).random(len(df))
        a, b = evaluate(df, risk, 0.9, comp), evaluate(df, risk, 0.9, comp, needs_from_labels(df, comp))
        assert {k: v for k, v in a.items() if not k.startswith("_")} == {k: v for k, v in b.items() if not k.startswith("_")}

    # the physical need comes before the workshop's replacement: the truth's labels are not the observed ones
    sets = evaluation.need_sets(df, "brake", true_needs)
    assert list(sets) == ["true_needs", "observed_needs"] and evaluation.headline(sets) == "true_needs"
    # a component the simulator does not simulate has no truth: the observed needs are the headline
    assert list(evaluation.need_sets(df, "brake", true_needs[true_needs["component"] != "brake"])) == ["observed_needs"]
    y_true = labels_from_needs(df, sets["true_needs"])[0]
    assert y_true.sum() > 0 and not np.array_equal(y_true, df["label_brake"].to_numpy())


def test_blocks_against_each_set_of_needs_with_baselines_and_intervals(sim_features):
    df, true_needs = sim_features
    comp = "battery"
    sets = evaluation.need_sets(df, comp, true_needs)
    risk = np.where(labels_from_needs(df, sets["true_needs"])[0] == 1, 0.8, 0.01)   # an oracle of the true needs
    blocks = evaluation.assess_all(df, risk, 0.5, comp, sets)
    t, o = blocks["true_needs"], blocks["observed_needs"]
    assert t["model"]["ew_recall"] == 1.0 and t["model"]["precision"] == 1.0
    assert o["model"]["precision"] < 1.0                       # judged against the records, the oracle errs
    for b in (t, o):
        assert b["baseline_same_volume"]["n_alerts"] == b["model"]["n_alerts"]   # the rule at the same volume
        assert "ew_recall" in b["baseline_rule"] and sum(b["lead_time_histogram"].values()) == b["model"]["n_events"]
        lo, hi = b["interval_90"]["model"]["precision"]
        assert lo <= b["model"]["precision"] <= hi
    lo, hi = o["interval_90"]["model"]["precision"]
    assert lo < hi                                             # resampling vehicles moves an imperfect figure
    assert "_baseline_alerts" not in evaluation.public(t) and "_lead_days" not in evaluation.public(t)["model"]


def test_by_vehicle_interval_of_a_single_vehicle_is_its_figure():
    rows = _rows({"V1": (0, 59)})
    alert = _alerts(rows, ("V1", 30), ("V1", 50))
    m = alert_metrics(rows, alert, "brake", _needs(("V1", 40)))
    ci = by_vehicle_interval(rows, alert, m)
    assert ci["precision"] == [0.5, 0.5] and ci["ew_recall"] == [1.0, 1.0] and ci["n_vehicles"] == 1
