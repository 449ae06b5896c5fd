"""`autopdm evaluate`: the current champions on held-out rows, a JSON report and a model card each."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from autopdm import components, store
from autopdm.config import Paths
from autopdm.modeling import baselines, evaluation, truth
from autopdm.modeling.champion import load_champions
from autopdm.modeling.evaluation import public
from autopdm.modeling.split import time_vehicle_split
from autopdm.modeling.tracking import setup_mlflow


def component_report(ch, test, true_needs, true_state=None) -> dict:
    """One champion on the test rows: a block per set of needs (headline first), the quality headline
    (model, fixed-interval rule, careful advisor, ceiling, yields) and, for the readers of earlier
    reports, the headline block's figures under `test`, `baseline_same_volume`, `baseline_rule`."""
    comp = ch.component
    sets = evaluation.need_sets(test, comp, true_needs)
    blocks = evaluation.assess_all(test, ch.predict(test), ch.threshold, comp, sets, true_state)
    head = evaluation.headline(sets)
    return {
        "name": ch.name, "version": ch.version, "threshold": ch.threshold, "run_id": ch.run_id,
        "headline_needs": head, "quality": evaluation.quality(blocks), "test": public(blocks[head]["model"]),
        "baseline_same_volume": public(blocks[head]["baseline_same_volume"]),
        "baseline_rule": public(blocks[head]["baseline_rule"]), "baseline_description": baselines.description(comp),
        "advisor_description": baselines.ADVISOR_DESCRIPTION,
        "against": {name: public(b) for name, b in blocks.items()},
    }


def evaluate_champions(paths=None, seed: int = 0, names=None, log_to_mlflow: bool = True) -> dict:
    """`autopdm evaluate`: the current champions on the held-out split of the current features table.

    Against the true needs (simulated fleets; the headline) and the observed needs, with the baselines
    beside; writes var/reports/evaluation.json and a model card per component
    (var/reports/model_card_<component>.md); logs a run `evaluate` to MLflow.
    """
    paths = paths or Paths.from_env()
    champs = load_champions(paths, names or components.names())
    df = store.read_table("features", paths)
    split = time_vehicle_split(df, seed=seed)
    test = df.loc[split.test]
    true_needs = evaluation.read_true_needs(paths)
    rep = {"split": split.params(), "components": {}}
    paths.reports.mkdir(parents=True, exist_ok=True)
    for comp, ch in champs.items():
        rep["components"][comp] = component_report(ch, test, true_needs, truth.read_true_state(paths, comp))
        (paths.reports / f"model_card_{comp}.md").write_text(model_card(ch, rep["components"][comp], rep["split"]))
    out = paths.reports / "evaluation.json"
    out.write_text(json.dumps(rep, indent=2, default=float))
    rep["report"] = str(out)
    if log_to_mlflow:
        _log_evaluation(paths, rep, out)
    return rep


def _log_evaluation(paths: Paths, rep: dict, out: Path) -> None:
    import mlflow

    def numeric(d: dict, prefix: str) -> dict:
        return {f"{prefix}{k}": float(v) for k, v in d.items() if isinstance(v, (int, float)) and np.isfinite(v)}

    setup_mlflow(paths)
    with mlflow.start_run(run_name="evaluate", nested=mlflow.active_run() is not None):
        for comp, r in rep["components"].items():
            mlflow.log_metrics({**numeric(r["test"], f"{comp}_"), **numeric(r["baseline_same_volume"], f"{comp}_baseline_")})
            for who, d in r["quality"].items():
                if isinstance(d, dict):
                    mlflow.log_metrics(numeric(d, f"{comp}/quality/{who}_"))
            for name, b in r["against"].items():
                mlflow.log_metrics({**numeric(b["model"], f"{comp}/{name}/"),
                                    **numeric(b["baseline_same_volume"], f"{comp}/{name}/baseline_")})
            mlflow.set_tag(f"{comp}_version", r["version"])
        mlflow.log_artifact(str(out))


def _f(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else (f"{v:.3f}" if isinstance(v, float) else str(v))


def _performance_table(name: str, b: dict) -> str:
    m, base, rule = b["model"], b["baseline_same_volume"], b["baseline_rule"]
    adv, ceil = b.get("advisor_same_volume", {}), b.get("ceiling_same_volume", {})
    ci = b.get("interval_90", {})

    def interval(who: str, k: str) -> str:
        lo, hi = (ci.get(who) or {}).get(k, [None, None])
        return f" ({_f(lo)}–{_f(hi)})" if lo is not None and np.isfinite(lo) else ""

    return f"""### Against {name.replace('_', ' ')}

| | model | baseline, same alert volume | literal rule | careful advisor, same volume | physical ceiling, same volume |
|---|---|---|---|---|---|
| early-warning recall (7–15 d) | {_f(m['ew_recall'])}{interval('model', 'ew_recall')} | {_f(base['ew_recall'])}{interval('baseline_same_volume', 'ew_recall')} | {_f(rule['ew_recall'])} | {_f(adv.get('ew_recall'))} | {_f(ceil.get('ew_recall'))} |
| alert precision | {_f(m['precision'])}{interval('model', 'precision')} | {_f(base['precision'])}{interval('baseline_same_volume', 'precision')} | {_f(rule['precision'])} | {_f(adv.get('precision'))} | {_f(ceil.get('precision'))} |
| alert rate (per vehicle-day) | {_f(m['alert_rate'])} | {_f(base['alert_rate'])} | {_f(rule['alert_rate'])} | {_f(adv.get('alert_rate'))} | {_f(ceil.get('alert_rate'))} |
| work orders | {m.get('n_work_orders', 'n/a')} | {base.get('n_work_orders', 'n/a')} | {rule.get('n_work_orders', 'n/a')} | {adv.get('n_work_orders', 'n/a')} | {ceil.get('n_work_orders', 'n/a')} |
| work-order yield (need within 15 d) | {_f(m.get('work_order_yield'))} | {_f(base.get('work_order_yield'))} | {_f(rule.get('work_order_yield'))} | {_f(adv.get('work_order_yield'))} | {_f(ceil.get('work_order_yield'))} |
| advise-line yield (true state in the window) | {_f(m.get('advise_yield'))} | {_f(base.get('advise_yield'))} | | {_f(adv.get('advise_yield'))} | {_f(ceil.get('advise_yield'))} |
| needs (evaluable) | {m['n_events']} | | | | |
| PR-AUC | {_f(m['pr_auc'])} | {_f(base.get('pr_auc'))} | | {_f(adv.get('pr_auc'))} | {_f(ceil.get('pr_auc'))} |
| Brier | {_f(m.get('brier'))} | | | | |
"""


def model_card(ch, r: dict, split: dict) -> str:
    """Model card (markdown) filled from a champion and its evaluation (template: models/README.md)."""
    t = ch.tags
    tables = "\n".join(_performance_table(name, b) for name, b in r["against"].items())
    return f"""# Model card: {ch.name} v{ch.version}

- **Predicts**: calibrated probability of a {ch.component} service need within 15 days, as the training labels
  define it (the needs the workshop's records show).
- **Model**: LightGBM binary classifier, {len(ch.feature_names)} features, Platt-calibrated log-odds
  (`{ch.calibration}`); MLflow run `{ch.run_id}`. Registered as an MLflow pyfunc model that includes the
  calibration: `mlflow.pyfunc.load_model("models:/{ch.name}/{ch.version}")` returns this risk.
- **Operating threshold**: {ch.threshold:.4f}, decided by the {t.get('threshold_rule', 'n/a')} (an alert costs
  {t.get('cost_alert', 'n/a')}, a missed need {t.get('cost_missed_need', 'n/a')}; alert budget
  {t.get('alert_budget', 'n/a')} × the need prevalence), chosen on the validation vehicles.
- **Training data**: {split.get('train_start')}..{split.get('train_end')} (train vehicles only); held out
  {split.get('test_start')}..{split.get('test_end')} on other vehicles.

## Held-out performance

Headline: against {r['headline_needs'].replace('_', ' ')}. Bracketed: 90 % bootstrap interval over vehicles.

{tables}
Baseline: {r.get('baseline_description', '')}. Careful advisor: {r.get('advisor_description', '')}.
Physical ceiling (simulated fleets only): knows each part's true wear rate, sees only the workshop's
noisy readings (docs/model-quality.md).

## Limits

Trained and evaluated on the data in this installation (simulated unless real service history was
imported). Observed needs are what the workshop's records show (a part replaced early at an inspection
counts as a need on its replacement day); true needs exist only for simulated fleets.
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
