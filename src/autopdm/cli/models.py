"""`autopdm features`, `autopdm train`, `autopdm evaluate` (mlflow and lightgbm imported lazily)."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Optional

import typer

from autopdm import components
from autopdm.cli.common import console, fail, paths
from autopdm.modeling.champion import ChampionError
from autopdm.modeling.lock import LockBusy, modeling_lock
from autopdm.modeling.reports import evaluate_champions, export_metadata
from autopdm.modeling.tracking import ensure_store
from autopdm.modeling.train import train_all
from autopdm.pipeline import features_chunked, features_dask


@contextlib.contextmanager
def _one_line_when_busy():
    """Another training or feature build holds the home: one unwrapped line (scripts and logs grep it), exit 2."""
    try:
        yield
    except LockBusy as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _fmt(v) -> str:
    try:
        return f"{float(v):.3f}"
    except (TypeError, ValueError):
        return str(v)


QUALITY_NAMES = {"model": "model", "fixed_interval": "fixed-interval rule", "advisor": "careful advisor",
                 "ceiling": "physical ceiling"}


def quality_line(comp: str, q: dict | None) -> str:
    """The headline of a component's quality: recall/precision of the model, the fixed-interval rule, the careful
    advisor and the physical ceiling at the model's alert volume, then the work-order yields."""
    if not q:
        return ""
    parts = [f"{QUALITY_NAMES[w]} {_fmt(q[w].get('ew_recall'))}/{_fmt(q[w].get('precision'))}"
             for w in QUALITY_NAMES if isinstance(q.get(w), dict)]
    m = q.get("model", {})
    yields = f"work-order yield {_fmt(m.get('work_order_yield'))}"
    if "advise_yield" in m:
        yields += f", at the advise line {_fmt(m.get('advise_yield'))}"
    return (f"{comp:8s} quality ({q['needs'].replace('_', ' ')}; early-warning recall/precision at alert rate "
            f"{_fmt(q.get('alert_rate'))}): " + " | ".join(parts) + f"; {yields}")


def register(app: typer.Typer) -> None:
    @app.command("features")
    def features_cmd(
        as_of: Optional[str] = typer.Option(None, "--as-of", help="use only data up to this date (YYYY-MM-DD); rows end there"),
        engine: str = typer.Option("pandas", "--engine", help="pandas | dask"),
    ) -> None:
        """Daily features and labels per vehicle → var/features/features.parquet (and the needs → needs.parquet)."""
        p = paths()
        if engine not in ("pandas", "dask"):
            raise fail(f"--engine must be pandas or dask, not {engine!r}")
        t0 = time.perf_counter()
        with _one_line_when_busy(), modeling_lock(p, "feature build"):  # never while a training reads the table
            if engine == "dask":
                with console.status("building features on dask"):
                    df = features_dask.run(p, as_of=as_of)
            else:
                with console.status("building features"):
                    try:  # a block of vehicles at a time: bounded memory, the whole-fleet table
                        res = features_chunked.build_chunked(p, as_of=as_of)
                    except (FileNotFoundError, ValueError) as exc:
                        raise fail(str(exc)) from None
        # the next step is usually `mlflow run . -e train`: have the tracking store ready under var/
        ensure_store(p)
        if engine == "dask":
            res = features_chunked.FeaturesWritten(len(df), list(df.columns), df["vehicle_id"].nunique(),
                                                   df["date"].min(), df["date"].max())
        console.print(f"{res.rows:,} rows × {res.n_features} features for {res.vehicles:,} vehicles "
                      f"({res.first:%Y-%m-%d}..{res.last:%Y-%m-%d}) in {time.perf_counter() - t0:.1f} s "
                      f"→ {p.table('features')}")

    @app.command("train")
    def train_cmd(
        component: Optional[str] = typer.Option(None, "--component", help="one registered component (brake, tire, battery) or all (default)"),
        engine: str = typer.Option("pandas", "--engine", help="pandas | dask"),
        seed: int = typer.Option(0, "--seed"),
        no_promote: bool = typer.Option(False, "--no-promote", help="register but never move the champion alias"),
        as_json: bool = typer.Option(False, "--json", help="print the results as JSON on stdout"),
    ) -> None:
        """Train, evaluate, register and gate the models in MLflow (alias `champion`)."""
        p = paths()
        try:
            comps = components.names() if component in (None, "all") else tuple(components.check([component]))
        except components.UnknownComponent as exc:
            raise fail(f"--component: {exc}") from None
        try:
            with _one_line_when_busy():
                res = train_all(p, components=comps, engine=engine, seed=seed, promote=not no_promote)
        except (ValueError, FileNotFoundError) as exc:
            raise fail(str(exc)) from None
        _print_results(res)
        if as_json:
            typer.echo(json.dumps({k: v for k, v in res.items()}, indent=2, default=str))

    @app.command("evaluate")
    def evaluate_cmd(
        export: Optional[str] = typer.Option(None, "--export", help="also write champion metadata JSON to this directory (e.g. models/)"),
        seed: int = typer.Option(0, "--seed", help="split seed (the one used for training)"),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Score the current champions on the held-out split; baselines beside; report to var/reports."""
        p = paths()
        try:
            rep = evaluate_champions(p, seed=seed)
        except (ChampionError, FileNotFoundError, ValueError) as exc:
            raise fail(str(exc)) from None
        for comp, r in rep["components"].items():
            m, b = r["test"], r["baseline_same_volume"]
            console.print(f"{comp:8s} v{r['version']}: early-warning recall {_fmt(m['ew_recall'])} at precision "
                          f"{_fmt(m['precision'])} (alert rate {_fmt(m['alert_rate'])}, {m['n_events']} events); "
                          f"PR-AUC {_fmt(m['pr_auc'])}, Brier {_fmt(m.get('brier'))} | baseline same volume: "
                          f"recall {_fmt(b['ew_recall'])}, precision {_fmt(b['precision'])}")
            console.print(quality_line(comp, r.get("quality")))
        console.print(f"report: {rep['report']}")
        if export:
            for f in export_metadata(p, export):
                console.print(f"exported {f}")
        if as_json:
            typer.echo(json.dumps(rep, indent=2, default=str))


def _print_results(res: dict) -> None:
    for comp, r in res.items():
        if comp.startswith("_"):
            continue
        m, b = r["metrics"], r["baseline"]
        console.print(
            f"{comp:8s} v{r['version']} {'PROMOTED' if r['promoted'] else 'kept champion'} ({r['reason']})\n"
            f"         early-warning recall {_fmt(m['ew_recall'])} at precision {_fmt(m['precision'])}, alert rate "
            f"{_fmt(m['alert_rate'])}, {m['n_events']} held-out events; PR-AUC {_fmt(m['pr_auc'])}, Brier {_fmt(m.get('brier'))}; "
            f"threshold {_fmt(r['threshold'])}\n"
            f"         baseline at the same volume: recall {_fmt(b['ew_recall'])}, precision {_fmt(b['precision'])}; "
            f"literal rule: recall {_fmt(r['baseline_rule']['ew_recall'])}, precision {_fmt(r['baseline_rule']['precision'])}, "
            f"alert rate {_fmt(r['baseline_rule']['alert_rate'])}")
        console.print(quality_line(comp, r.get("quality")))
    if "_run_id" in res:
        console.print(f"mlflow run {res['_run_id']}")
