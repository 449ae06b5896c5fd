"""Model quality on held-out simulated fleets: the model beside the fixed-interval rule, the careful advisor
and the physical ceiling, with work-order yields, mean and spread over fleet seeds.

    python benchmarks/bench_model_quality.py [--vehicles 400] [--days 730] [--seeds 101,102,103]
                                             [--json out.json] [--plots docs/img]

Per fleet seed: simulate a fleet the project never trained on (the workshop's records with
inspections, as `autopdm simulate` writes them), build its features the production way (readings
included), split it (split seed 0), and per component fit the model with the production parameters
(early stopping), choose its operating point with the default cost model, and assess it on the held-out
test rows against the true needs (`modeling.evaluation`, `modeling.truth`). Prints per component:
early-warning recall and alert precision at the operating point, PR-AUC, alert rate; the fixed-interval
rule, the careful advisor and the physical ceiling at the same alert volume; work-order yield (a need
within 15 days) and advise-line yield (the part at or below the advise line in the recommended window);
mean ± sd over the seeds. With --plots, two small PNGs (recall by who, yields by who).
No MLflow, no registry: only what the figures need. The defaults (400 vehicles × 730 days × 3 seeds) took
8.3 min on 2 shared cores at load 8–11, 1.9 GB peak.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("DO_NOT_TRACK", "true")

WHO = ("model", "fixed_interval", "advisor", "ceiling")
LABEL = {"model": "model", "fixed_interval": "fixed-interval rule", "advisor": "careful advisor",
         "ceiling": "physical ceiling"}
METRICS = ("ew_recall", "precision", "pr_auc", "work_order_yield", "advise_yield")


def one_fleet(vehicles: int, days: int, seed: int) -> dict:
    import numpy as np

    from autopdm import components
    from autopdm.modeling import truth
    from autopdm.modeling.operating_point import costs
    from autopdm.modeling.split import time_vehicle_split
    from autopdm.modeling.train import assess_candidate, fit_candidate
    from autopdm.pipeline.features import build_features, feature_columns
    from autopdm.sim.fleet import simulate_fleet

    t0 = time.perf_counter()
    fleet = simulate_fleet(vehicles, days, seed)
    df = build_features(fleet.trips, fleet.vehicles, fleet.service_events, fleet.dtc_events,
                        inspections=fleet.inspections)
    t_feat = time.perf_counter() - t0
    split = time_vehicle_split(df, seed=0)
    feats = feature_columns(df)
    out = {"seed": seed, "features_s": t_feat, "components": {}}
    for comp in components.names():
        t1 = time.perf_counter()
        cand = fit_candidate(comp, df, split, feats, seed=0, params=None, cost_model=costs())
        a = assess_candidate(cand, df, split, fleet.true_needs, truth.TrueState.from_table(fleet.true_state, comp))
        q = a.quality
        q["n_work_orders"] = a.metrics["n_work_orders"]
        q["threshold"] = cand.model.threshold
        q["best_iteration"] = cand.fit_params["best_iteration"]
        q["seconds"] = time.perf_counter() - t1
        out["components"][comp] = json.loads(json.dumps(q, default=float))
        print(f"  seed {seed} {comp:8s} " + " | ".join(
            f"{LABEL[w]} {q[w]['ew_recall']:.3f}/{q[w]['precision']:.3f}" for w in WHO if w in q)
            + f"; yield {q['model'].get('work_order_yield', np.nan):.3f}, advise {q['model'].get('advise_yield', np.nan):.3f}"
            f" ({q['n_events']} needs, {q['seconds']:.0f} s)", flush=True)
    out["seconds"] = time.perf_counter() - t0
    return out


def summarize(runs: list[dict]) -> dict:
    """{component: {who: {metric: (mean, sd, n)}}, plus alert_rate and needs} over the fleets."""
    import numpy as np

    out: dict = {}
    for comp in runs[0]["components"]:
        c = out.setdefault(comp, {})
        for key in ("alert_rate", "n_events", "n_work_orders"):
            v = np.array([r["components"][comp][key] for r in runs], dtype=float)
            c[key] = (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v))
        for who in WHO:
            for m in METRICS:
                v = np.array([r["components"][comp].get(who, {}).get(m, np.nan) for r in runs], dtype=float)
                v = v[np.isfinite(v)]
                if len(v):
                    c.setdefault(who, {})[m] = (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v))
    return out


def _ms(t) -> str:
    return f"{t[0]:.3f} ± {t[1]:.3f}" if t else "n/a"


def print_table(summary: dict) -> None:
    print("\ncomponent | who | early-warning recall | precision | PR-AUC | work-order yield | advise-line yield")
    print("---|---|---|---|---|---|---")
    for comp, c in summary.items():
        for who in WHO:
            if who not in c:
                continue
            d = c[who]
            print(f"{comp} | {LABEL[who]} | {_ms(d.get('ew_recall'))} | {_ms(d.get('precision'))} | {_ms(d.get('pr_auc'))} | "
                  f"{_ms(d.get('work_order_yield'))} | {_ms(d.get('advise_yield'))}")
        print(f"{comp} | (alert rate {_ms(c['alert_rate'])}, true needs evaluable {c['n_events'][0]:.0f}, "
              f"work orders {c['n_work_orders'][0]:.0f} per fleet) | | | | |")


def plot(summary: dict, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out_dir.mkdir(parents=True, exist_ok=True)
    comps = list(summary)
    files = []
    for metric, title, fname in (("ew_recall", "early-warning recall (7–15 days) at the model's alert volume",
                                  "model-quality-recall.png"),
                                 ("advise_yield", "work orders whose part is at the advise line in the window",
                                  "model-quality-yield.png")):
        fig, ax = plt.subplots(figsize=(6.4, 3.2))
        width = 0.2
        for i, who in enumerate(WHO):
            vals = [summary[c].get(who, {}).get(metric) for c in comps]
            mean = [v[0] if v else np.nan for v in vals]
            sd = [v[1] if v else 0.0 for v in vals]
            ax.bar(np.arange(len(comps)) + (i - 1.5) * width, mean, width, yerr=sd, capsize=2, label=LABEL[who])
        ax.set_xticks(np.arange(len(comps)), comps)
        ax.set_ylim(0, 1)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7, ncol=2)
        ax.tick_params(labelsize=8)
        fig.tight_layout()
        f = out_dir / fname
        fig.savefig(f, dpi=80)
        plt.close(fig)
        files.append(f)
    return files


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vehicles", type=int, default=400)
    ap.add_argument("--days", type=int, default=730)
    ap.add_argument("--seeds", default="101,102,103", help="fleet seeds (fleets the project never trained on)")
    ap.add_argument("--json", help="write the runs and the summary here")
    ap.add_argument("--plots", help="write the two PNGs into this directory")
    a = ap.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",")]
    t0 = time.perf_counter()
    runs = []
    for s in seeds:
        print(f"fleet seed {s}: {a.vehicles} vehicles × {a.days} days", flush=True)
        runs.append(one_fleet(a.vehicles, a.days, s))
    summary = summarize(runs)
    print_table(summary)
    print(f"\n{len(seeds)} fleets in {time.perf_counter() - t0:.0f} s")
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "runs": runs, "summary": summary}, indent=1))
    if a.plots:
        for f in plot(summary, Path(a.plots)):
            print(f"plot: {f} ({f.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
