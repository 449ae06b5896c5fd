"""Work orders carry the part's state and the evidence in words (serving.recommend + serving.explain)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from autopdm.modeling.champion import Champion
from autopdm.serving import recommend

FEATURES = ["pad_mm_front_last", "pad_mm_front_age_days", "km_since_brake_reading", "brake_state_est",
            "brake_state_sd", "brake_days_to_limit", "distance_km_30d"]


@pytest.fixture(scope="module")
def brake_champion() -> Champion:
    """A small real booster whose risk rises as the estimated pad thickness falls."""
    import lightgbm as lgb

    rng = np.random.default_rng(0)
    n = 4000
    X = pd.DataFrame({"pad_mm_front_last": rng.uniform(3, 11, n), "pad_mm_front_age_days": rng.uniform(0, 300, n),
                      "km_since_brake_reading": rng.uniform(0, 15000, n), "brake_state_est": rng.uniform(2.5, 11, n),
                      "brake_state_sd": rng.uniform(0.2, 0.6, n), "brake_days_to_limit": rng.uniform(0, 900, n),
                      "distance_km_30d": rng.uniform(300, 3000, n)})
    y = (X["brake_state_est"] + rng.normal(0, 0.5, n) < 3.8).astype(int)
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_threads": 1, "min_data_in_leaf": 20},
                        lgb.Dataset(X.to_numpy(np.float32), y, feature_name=FEATURES), num_boost_round=20)
    return Champion("brake", "autopdm-brake", "1", FEATURES, 0.3, booster=booster,
                    calibration={"method": "identity"})


def _rows() -> pd.DataFrame:
    return pd.DataFrame({"vehicle_id": ["WVWZZZ1KZAW000001", "WVWZZZ1KZAW000002"],
                         "date": pd.to_datetime(["2026-09-20", "2026-09-20"]),
                         "pad_mm_front_last": [4.5, 10.0], "pad_mm_front_age_days": [49.0, 30.0],
                         "km_since_brake_reading": [2300.0, 900.0], "brake_state_est": [3.6, 9.8],
                         "brake_state_sd": [0.3, 0.3], "brake_days_to_limit": [12.0, 800.0],
                         "distance_km_30d": [1500.0, 1500.0]})


def test_a_work_order_says_the_parts_state_in_words_without_personal_data(brake_champion):
    a = recommend.assess(_rows(), {"brake": brake_champion}, "2026-09-20", with_evidence="alerts")
    worn, fine = a[0]["components"]["brake"], a[1]["components"]["brake"]
    assert worn["alert"] and not fine["alert"]
    assert "explanation" not in fine                          # words only where a work order goes out
    vehicles = pd.DataFrame({"vehicle_id": ["WVWZZZ1KZAW000001"], "customer_id": ["C000123"],
                             "preferred_channel": ["sms"], "name": ["Jane Doe"], "phone": ["+49 170 1234567"]})
    (wo,) = recommend.work_orders(a, vehicles)
    state = wo["explanation"][0]
    assert state.startswith("Front brake pads about 3.6 mm: 4.5 mm measured on 2026-08-02")
    assert "2,300 km since" in state and "3 mm in about 12 days at this car's use" in state
    assert 1 <= len(wo["explanation"]) <= 5 and all(isinstance(s, str) and s for s in wo["explanation"])
    body = json.dumps(wo)
    assert "Jane" not in body and "1234567" not in body       # no names or phone numbers
    assert wo["customer_id"] == "C000123" and wo["evidence"]  # the structured evidence stays beside the words


def test_work_orders_from_assessments_without_words_still_carry_the_field():
    a = [{"vehicle_id": "V1", "components": {"brake": {
        "alert": True, "work_order_id": "wo-1", "risk": 0.5, "risk_band": "high",
        "recommended_window": {"start": "2026-01-02", "end": "2026-01-09"}, "recommended_action": "x",
        "evidence": [], "model": {"name": "autopdm-brake", "version": "1"}}}}]
    (wo,) = recommend.work_orders(a, pd.DataFrame({"vehicle_id": [], "customer_id": [], "preferred_channel": []}))
    assert wo["explanation"] == []
