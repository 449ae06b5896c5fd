"""What a model is read against: the careful advisor, the physical ceiling, work orders and their yield.

Hand-made feature rows and true states, so that each figure can be checked by hand.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from autopdm.modeling import baselines, evaluation, truth
from autopdm.modeling.metrics import alert_metrics, work_order_starts

DAY0 = pd.Timestamp("2026-01-01")


def _pad_rows(**cols) -> pd.DataFrame:
    """Brake feature rows on 2026-03-01: pads read at a visit, the use since, the car's recent km."""
    n = len(next(iter(cols.values())))
    base = {"vehicle_id": [f"V{i}" for i in range(n)], "date": [DAY0 + pd.Timedelta(days=59)] * n,
            "distance_km_30d": [1500.0] * n}
    return pd.DataFrame({**base, **cols})


def test_the_careful_advisor_extrapolates_the_measured_wear_to_the_limit():
    # car 0: 11 mm new → 5 mm front after 20,000 km: 0.3 mm per 1,000 km; 1,000 km since the reading, 50 km a day
    # → 4.7 mm now, 1.7 mm to go: 5,667 km, 113 days. Car 1 read 5 mm after 10,000 km: 0.6 mm per 1,000 km,
    # 4.4 mm now, 47 days. Car 2 was never read: a new part 10,000 km ago at the median of the measured rates.
    rows = _pad_rows(pad_mm_front_last=[5.0, 5.0, np.nan], pad_mm_front_age_days=[20.0, 20.0, np.nan],
                     pad_mm_rear_last=[8.0, 9.0, np.nan], pad_mm_rear_age_days=[20.0, 20.0, np.nan],
                     km_since_brake_reading=[1000.0, 1000.0, np.nan], km_since_brake_service=[21000.0, 11000.0, 10000.0])
    d = baselines.advisor_days_to_limit(rows, "brake")
    assert d[0] == pytest.approx(1.7 / 0.0003 / 50, rel=1e-6)
    assert d[1] == pytest.approx(1.4 / 0.0006 / 50, rel=1e-6)
    # rates measured: front 0.3 and 0.6, rear 0.15 and 0.2 per 1,000 km → median 0.25
    assert d[2] == pytest.approx((11.0 - 3.0 - 0.00025 * 10000) / 0.00025 / 50, rel=1e-6)
    s = baselines.advisor_score(rows, "brake")
    assert s[1] > s[0] and s[1] > s[2]                          # the car due soonest first
    # a part estimated past its limit ranks as one due just beyond the horizon; unknown state last
    past = _pad_rows(pad_mm_front_last=[3.2], pad_mm_front_age_days=[60.0], km_since_brake_reading=[3000.0],
                     km_since_brake_service=[30000.0])
    assert -15.0 > baselines.advisor_score(past, "brake")[0] > -1e9
    assert baselines.advisor_score(_pad_rows(km_since_brake_service=[np.nan]), "brake")[0] == -1e9


def _truth(values: dict[str, np.ndarray], rate_km: float) -> truth.TrueState:
    """A true state for brake pads of len(values[pos]) vehicles × 120 days; rate per km constant."""
    first = next(iter(values.values()))
    vids = pd.Index([f"V{i}" for i in range(first.shape[0])])
    rate = {p: np.full(first.shape, rate_km, dtype=np.float32) for p in values}
    return truth.TrueState("brake", vids, np.datetime64(DAY0.date(), "D"), values, rate, rate)


def test_the_ceiling_ranks_by_the_chance_of_reaching_the_limit_within_the_horizon():
    # three cars read 20 days ago at 4.0, 3.4 and 2.6 mm front; true wear 0.3 mm per 1,000 km, 50 km a day
    # (1,000 km since the reading: 0.3 mm; 750 km in the next 15 days: 0.225 mm)
    rows = _pad_rows(pad_mm_front_last=[4.0, 3.4, 2.6], pad_mm_front_age_days=[20.0] * 3,
                     pad_mm_rear_last=[9.0] * 3, pad_mm_rear_age_days=[20.0] * 3,
                     km_since_brake_reading=[1000.0] * 3, km_since_brake_service=[20000.0] * 3)
    vals = {"front": np.full((3, 120), 5.0, np.float32), "rear": np.full((3, 120), 9.0, np.float32)}
    p = truth.ceiling_score(rows, "brake", _truth(vals, 0.0003))
    # car 1: 3.4 − 0.3 = 3.1 mm now, 2.875 mm in 15 days: likely to cross; car 0 (3.7 → 3.475) and car 2
    # (already at 2.3 mm: its need was before today) much less
    assert p[1] > 0.2 and p[1] > 2 * p[0] and p[1] > 2 * p[2]     # 0.22, 0.08, 0.03 with a 0.4 mm reading error
    assert np.all((p >= 0) & (p <= 1))
    # a car with no reading starts from a new part (11 mm ± 0.7) at its fitting: 20,000 km at 0.3 → 5 mm
    unread = _pad_rows(km_since_brake_service=[20000.0, 26000.0])
    q = truth.ceiling_score(unread, "brake", _truth({k: v[:2] for k, v in vals.items()}, 0.0003))
    assert q[0] < 0.01 < q[1]                                 # 26,000 km: 3.2 mm now, 2.975 in 15 days


def test_work_orders_open_once_per_window_and_their_yield_counts_needs_within_the_horizon():
    days = pd.date_range(DAY0, periods=60, freq="D")
    rows = pd.DataFrame({"vehicle_id": ["A"] * 60 + ["B"] * 60, "date": list(days) * 2})
    alert = np.zeros(120, bool)
    alert[[10, 11, 12, 20, 26, 27, 50]] = True                # A: opens on days 10, 26 (> 15 after 10), 50
    alert[60 + 5] = True                                      # B: day 5
    starts = work_order_starts(rows, alert)
    assert np.flatnonzero(starts).tolist() == [10, 26, 50, 65]
    needs = pd.DataFrame({"vehicle_id": ["A", "B"], "component": "brake",
                          "need_date": [days[30], days[40]]})   # A's need 4 days after its 2nd work order
    m = alert_metrics(rows, alert, "brake", needs)
    assert m["n_work_orders"] == 4 and m["work_order_yield"] == pytest.approx(1 / 4)
    assert m["precision"] == pytest.approx(3 / 8)             # alert days 20, 26 and 27 are within 15 days of day 30


def test_advise_yield_reads_the_true_state_in_the_recommended_window():
    rows = pd.DataFrame({"vehicle_id": ["V0", "V1", "V2"], "date": [DAY0 + pd.Timedelta(days=10)] * 3})
    front = np.full((3, 120), 6.0, np.float32)
    front[0, 10 + 7:] = 3.9                                   # at the advise line (4 mm) from day 7 of the window
    front[1, 10 + 16:] = 3.5                                  # only after the window ends
    front[2, 10 + 12: 10 + 14] = 2.9                          # below, then replaced within the window
    front[2, 10 + 14:] = 11.0
    ts = _truth({"front": front, "rear": np.full((3, 120), 8.0, np.float32)}, 0.0003)
    y = truth.advise_yield(rows, np.ones(3, bool), "brake", ts)
    assert y == {"advise_yield": pytest.approx(2 / 3), "n_work_orders_known": 3}


def test_quality_puts_model_rule_advisor_and_ceiling_side_by_side():
    days = pd.date_range(DAY0, periods=90, freq="D")
    rng = np.random.default_rng(0)
    n_v = 20
    rows = pd.DataFrame({"vehicle_id": np.repeat([f"V{i}" for i in range(n_v)], 90), "date": list(days) * n_v})
    rows["km_since_brake_service"] = rng.uniform(0, 60000, len(rows))
    rows["distance_km_30d"] = 1500.0
    rows["pad_mm_front_last"], rows["pad_mm_front_age_days"] = 5.0, 30.0
    rows["km_since_brake_reading"] = 1500.0
    needs = pd.DataFrame({"vehicle_id": [f"V{i}" for i in range(0, n_v, 4)], "component": "brake",
                          "need_date": days[60]})
    risk = rng.uniform(0, 0.2, len(rows))
    ts = _truth({"front": np.full((n_v, 120), 5.0, np.float32), "rear": np.full((n_v, 120), 8.0, np.float32)}, 0.0003)
    blocks = {evaluation.TRUE: evaluation.assess_alerts(rows, risk, 0.18, "brake", needs, ts)}
    q = evaluation.quality(blocks)
    assert q["needs"] == evaluation.TRUE and set(q) >= {"model", "fixed_interval", "advisor", "ceiling"}
    b = blocks[evaluation.TRUE]
    for who in ("baseline_same_volume", "advisor_same_volume", "ceiling_same_volume"):
        assert b[who]["n_alerts"] == b["model"]["n_alerts"]  # all at the model's alert volume
        assert "advise_yield" in b[who] and "work_order_yield" in b[who]
    assert q["model"]["advise_yield"] == 0.0                 # the true pads never come near 4 mm
    without = evaluation.quality({evaluation.OBSERVED: evaluation.assess_alerts(rows, risk, 0.18, "brake", needs)})
    assert "ceiling" not in without and "advise_yield" not in without["model"]
