"""`autopdm demo` end to end on a small fleet: real bentoml serve and CRM receiver processes."""

import io

from rich.console import Console

from autopdm import components, demo


def test_demo_end_to_end(home):
    paths = demo.fresh_home(home)
    out = io.StringIO()
    r = demo.run(demo.DemoConfig(vehicles=80, days=400, seed=3), paths, Console(file=out, width=120))
    # raw 1 Hz samples re-summarised give back the simulated trips; nothing quarantined
    n_same, n_sim, err = r["trips_reproduced"]
    assert n_sim > 0 and n_same == n_sim and err < 1e-6 and r["quarantined"] == 0
    assert all(r["train"][c]["version"] for c in components.names())
    # the CRM's call: every asked vehicle answered or listed as unknown; no token → 401
    assert r["assess"]["unknown"] == ["WVWZZZ1KZ6W999999"] and len(r["assess"]["vehicles"]) == 5
    assert all(set(v["components"]) == set(components.names()) for v in r["assess"]["vehicles"])
    assert r["unauthorized_status"] == 401
    # every enqueued work order reached the receiver exactly once; re-scoring sends nothing again
    assert r["score"]["enqueued"] > 0
    assert r["received"] == {"work_orders": r["score"]["enqueued"], "deliveries": r["score"]["enqueued"],
                             "duplicates": 0, "rejected": 0}
    assert r["rescore"]["enqueued"] == 0
    assert "where to look" in out.getvalue() and (paths.home / "crm_receiver.sqlite").exists()
