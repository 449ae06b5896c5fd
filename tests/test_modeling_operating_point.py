"""The operating point: a cost model within an alert budget (modeling.operating_point)."""

from __future__ import annotations

import numpy as np
import pytest

from autopdm.modeling.operating_point import choose_threshold, costs, threshold_at_volume


def _risks(seed: int = 0) -> np.ndarray:
    """Calibrated-looking risks: most vehicle-days near zero, a tail of likely needs."""
    rng = np.random.default_rng(seed)
    return np.r_[rng.uniform(0.0, 0.004, 9000), rng.uniform(0.01, 0.4, 1000)]


def test_threshold_at_volume_takes_tied_blocks_whole():
    r = np.r_[np.full(10, 0.5), np.full(10, 0.1), np.zeros(80)]
    assert (r >= threshold_at_volume(r, 12)).sum() == 10
    assert (r >= threshold_at_volume(r, 16)).sum() == 20      # 20 is nearer 16 than 10 is, by ratio
    assert (r >= threshold_at_volume(r, 0.4)).sum() == 0      # less than one alert allowed: none
    assert (_risks() >= threshold_at_volume(_risks(), 137)).sum() == 137


def test_the_budget_caps_what_the_cost_model_would_alert():
    r = _risks()
    thr, info = choose_threshold(r, cost_missed_need=400, cost_alert=25, budget=1.5)
    assert info["rule"] == "alert budget" and info["break_even_risk"] == 0.0625
    assert info["break_even_alert_rate"] > info["max_alert_rate"]            # the costs alone would alert more
    assert (r >= thr).mean() == pytest.approx(1.5 * r.mean(), rel=0.01)       # 1.5 × the (calibrated) prevalence
    assert info["calib_alert_rate"] == pytest.approx((r >= thr).mean())
    assert info["expected_precision"] == pytest.approx(r[r >= thr].mean())
    assert info["expected_value_per_alert"] == pytest.approx(info["expected_precision"] * 400 - 25)


def test_the_break_even_risk_decides_when_fewer_alerts_pay_off():
    r = _risks()
    thr, info = choose_threshold(r, cost_missed_need=400, cost_alert=100, budget=20)
    assert info["rule"] == "break-even risk" and thr == 0.25                 # alert from risk × 400 ≥ 100 up
    assert (r >= thr).sum() < 20 * r.mean() * len(r)
    dearer, _ = choose_threshold(r, cost_missed_need=400, cost_alert=140, budget=20)
    assert dearer == 0.35                                                    # dearer alerts, fewer of them


def test_threshold_moves_smoothly_with_the_model():
    """A slightly different model (risks perturbed by 2 %) moves the alert volume by about as much —
    the old rule (largest volume with counted precision ≥ 0.5, else fill the budget) jumped between
    its branches."""
    r = _risks()
    noise = np.random.default_rng(1).normal(1.0, 0.02, len(r))
    for cost_alert in (25.0, 100.0):
        vols = []
        for risk in (r, np.clip(r * noise, 0, 1)):
            thr, _ = choose_threshold(risk, 400.0, cost_alert, 1.5 if cost_alert == 25.0 else 20.0)
            vols.append((risk >= thr).mean())
        assert max(vols) / min(vols) < 1.1, (cost_alert, vols)


def test_costs_come_from_the_settings_and_bad_ones_are_named(monkeypatch):
    monkeypatch.setenv("AUTOPDM_COST_ALERT", "40")
    monkeypatch.setenv("AUTOPDM_COST_MISSED_NEED", "800")
    monkeypatch.setenv("AUTOPDM_ALERT_BUDGET", "2")
    assert costs() == {"cost_missed_need": 800.0, "cost_alert": 40.0, "alert_budget": 2.0}
    assert costs(cost_alert=10)["cost_alert"] == 10.0
    with pytest.raises(ValueError, match="AUTOPDM_COST_ALERT"):
        costs(cost_alert=900)


# max/min of the held-out alert rate over three split seeds. Retraining on another half of a 400-vehicle
# fleet moves a weak model's tail by more than the rule can hold: measured over six split seeds of this
# fleet, max/min brake 1.46, battery 1.89, tire 2.40 (sd of the log 0.12, 0.21, 0.31); a fixed tire model
# on random halves of the fleet alone gives ≥ 1.5× for 26 % of triples (docs/operating-point.md, "What is
# left"). The bounds sit just above those measurements: a regression towards the old rule (17–56×) fails.
MAX_SPREAD = {"brake": 1.5, "battery": 2.0, "tire": 2.5}


@pytest.mark.heavy
def test_retraining_with_another_split_seed_moves_the_alert_rate_by_little():
    """Three retrains of a small simulated fleet on three split seeds: each component's alert rate on its
    held-out test rows stays within its measured seed spread (`MAX_SPREAD`, max/min). The old rule (largest
    volume with counted precision ≥ 0.5, else fill the budget) gave 56×, 17× and 1.5× (brake, tire,
    battery) on this fleet.

    Fixed rounds, so that the three models are comparable (early stopping on a fleet this small stops
    anywhere between 1 and 80 rounds). What remains of the spread is how differently each model carries
    its risks from the validation months into the test months, and which ~25 vehicles each test half holds
    (docs/operating-point.md)."""
    from autopdm.modeling.split import time_vehicle_split
    from autopdm.modeling.train import assess_candidate, fit_candidate
    from autopdm.pipeline.features import build_features, feature_columns
    from autopdm.sim.fleet import simulate_fleet

    fleet = simulate_fleet(400, 730, seed=3, climate="hot", aggressiveness=1.5)
    df = build_features(fleet.trips, fleet.vehicles, fleet.service_events, fleet.dtc_events)
    feats = feature_columns(df)
    params = {"num_iterations": 80, "learning_rate": 0.05, "num_leaves": 15, "min_data_in_leaf": 200,
              "early_stopping_rounds": 0}
    cost_model = costs(500.0, 40.0, 1.5)
    rates: dict[str, list[float]] = {}
    for seed in (0, 1, 2):
        split = time_vehicle_split(df, seed=seed)
        for comp in ("brake", "tire", "battery"):
            cand = fit_candidate(comp, df, split, feats, seed=seed, params=params, cost_model=cost_model)
            a = assess_candidate(cand, df, split)
            assert cand.threshold_info["rule"] in ("alert budget", "break-even risk")
            rates.setdefault(comp, []).append(a.metrics["alert_rate"])
    for comp, r in rates.items():
        assert min(r) > 0 and max(r) / min(r) < MAX_SPREAD[comp], (comp, r)
