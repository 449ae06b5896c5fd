"""`autopdm evaluate`: the current champions on held-out rows, a JSON report and a model card each."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from autopdm import components, store
from autopdm.config import Paths
from autopdm.modeling import baselines
from autopdm.modeling.champion import load_champions
from autopdm.modeling.metrics import alert_metrics, evaluate
from autopdm.modeling.split import time_vehicle_split
from autopdm.modeling.tracking import setup_mlflow


def evaluate_champions(paths=None, seed: int = 0, names=None, log_to_mlflow: bool = True) -> dict:
    """`autopdm evaluate`: the current champions on the held-out split of the current features table.

    Baselines at the same alert volume beside each; writes var/reports/evaluation.json and a model
    card per component (var/reports/model_card_<component>.md); logs a run `evaluate` to MLflow.
    """
    paths = paths or Paths.from_env()
    champs = load_champions(paths, names or components.names())
    df = store.read_table("features", paths)
    split = time_vehicle_split(df, seed=seed)
    test = df.loc[split.test]
    rep = {"split": split.params(), "components": {}}
    for comp, ch in champs.items():
        risk = ch.predict(test)
        m = evaluate(test, risk, ch.threshold, comp)
        b = alert_metrics(test, baselines.at_volume(baselines.score(test, comp), m["n_alerts"]), comp)
        r = alert_metrics(test, baselines.rule(test, comp), comp)
        rep["components"][comp] = {
            "name": ch.name, "version": ch.version, "threshold": ch.threshold, "run_id": ch.run_id,
            "test": {k: v for k, v in m.items() if not k.startswith("_")},
            "baseline_same_volume": {k: v for k, v in b.items() if not k.startswith("_")},
            "baseline_rule": {k: v for k, v in r.items() if not k.startswith("_")},
            "baseline_description": baselines.description(comp),
        }
        paths.reports.mkdir(parents=True, exist_ok=True)
        (paths.reports / f"model_card_{comp}.md").write_text(model_card(ch, rep["components"][comp], rep["split"]))
    out = paths.reports / "evaluation.json"
    out.write_text(json.dumps(rep, indent=2, default=float))
    rep["report"] = str(out)
    if log_to_mlflow:
        import mlflow

        setup_mlflow(paths)
        with mlflow.start_run(run_name="evaluate", nested=mlflow.active_run() is not None):
            for comp, r in rep["components"].items():
                mlflow.log_metrics({f"{comp}_{k}": float(v) for k, v in r["test"].items()
                                    if isinstance(v, (int, float)) and np.isfinite(v)})
                mlflow.log_metrics({f"{comp}_baseline_{k}": float(v) for k, v in r["baseline_same_volume"].items()
                                    if isinstance(v, (int, float)) and np.isfinite(v)})
                mlflow.set_tag(f"{comp}_version", r["version"])
            mlflow.log_artifact(str(out))
    return rep


def model_card(ch, r: dict, split: dict) -> str:
    """Model card (markdown) filled from a champion and its evaluation (template: models/README.md)."""
    m, b, rule = r["test"], r["baseline_same_volume"], r["baseline_rule"]

    def f(v):
        return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else (f"{v:.3f}" if isinstance(v, float) else str(v))

    return f"""# Model card: {ch.name} v{ch.version}

- **Predicts**: calibrated probability that a {ch.component} replace/repair is needed within 15 days.
- **Model**: LightGBM binary classifier, {len(ch.feature_names)} features, Platt-calibrated log-odds
  (`{ch.calibration}`); MLflow run `{ch.run_id}`.
- **Operating threshold**: {ch.threshold:.4f} (alert budget {ch.tags.get('alert_budget', 'n/a')} of vehicle-days,
  precision floor {ch.tags.get('min_precision', 'n/a')}, chosen on the calibration set).
- **Training data**: {split.get('train_start')}..{split.get('train_end')} (train vehicles only); held out
  {split.get('test_start')}..{split.get('test_end')} on other vehicles.

## Held-out performance

| | model | baseline, same alert volume | literal rule |
|---|---|---|---|
| early-warning recall (7–15 d) | {f(m['ew_recall'])} | {f(b['ew_recall'])} | {f(rule['ew_recall'])} |
| alert precision | {f(m['precision'])} | {f(b['precision'])} | {f(rule['precision'])} |
| alert rate (per vehicle-day) | {f(m['alert_rate'])} | {f(b['alert_rate'])} | {f(rule['alert_rate'])} |
| need events | {m['n_events']} | | |
| PR-AUC | {f(m['pr_auc'])} | | |
| Brier | {f(m.get('brier'))} | | |

Baseline: {r.get('baseline_description', '')}.

## Limits

Trained and evaluated on the data in this installation (simulated unless real service history was
imported). Need events are workshop replace/repair records: a part replaced early at an inspection
counts as a need on its replacement day.
"""


def export_metadata(paths: Paths | None = None, out_dir: str | Path = "models", names=None) -> list[Path]:
    """Write `<name>.json` (champion metadata, no binaries) for each component into out_dir."""
    champs = load_champions(paths, names)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for ch in champs.values():
        f = out / f"{ch.name}.json"
        f.write_text(json.dumps(ch.to_dict(), indent=2, sort_keys=True, default=str) + "\n")
        files.append(f)
    return files
