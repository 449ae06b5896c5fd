"""`autopdm monitor`: Evidently drift report; exit 0 no drift, 1 drift, 2 cannot run."""

from __future__ import annotations

import json
from typing import Optional

import typer

from autopdm import monitor
from autopdm.cli.common import console, fail, paths


def register(app: typer.Typer) -> None:
    @app.command("monitor")
    def monitor_cmd(
        reference: Optional[str] = typer.Option(None, "--reference", help="MLflow run id of the reference (default: the champions' training run)"),
        current_days: int = typer.Option(30, "--current-days", min=1, help="size of the current feature window in days"),
        as_of: Optional[str] = typer.Option(None, "--as-of", help="last day of the current window (default: last feature date)"),
        drift_share: Optional[float] = typer.Option(None, "--drift-share", min=0.0, max=1.0, help="share of drifted columns that counts as data drift"),
        prediction_gates: bool = typer.Option(False, "--prediction-gates", help="prediction drift alone also exits 1"),
        no_mlflow: bool = typer.Option(False, "--no-mlflow", help="do not log the summary to MLflow"),
        no_report: bool = typer.Option(False, "--no-report", help="decide and write the JSON summary only, no HTML report (faster)"),
        as_json: bool = typer.Option(False, "--json", help="print the summary as JSON on stdout"),
    ) -> None:
        """Drift of the current feature window and of the champions' risk against the training reference."""
        p = paths()
        kw = {} if drift_share is None else {"drift_share": drift_share}
        try:
            with console.status("computing drift report"):
                r = monitor.run_monitor(p, reference=reference, current_days=current_days, as_of=as_of,
                                        log_to_mlflow=not no_mlflow, write_report=not no_report,
                                        prediction_gates=prediction_gates, **kw)
        except (monitor.MonitorError, FileNotFoundError) as exc:
            raise fail(str(exc)) from None
        if as_json:
            typer.echo(json.dumps(r.to_dict(), indent=2, default=str))
        console.print(f"current {r.current_start}..{r.current_end} ({r.current_rows:,} rows) vs reference "
                      f"{r.reference_source} of run {r.reference_run} ({r.reference_rows:,} rows)")
        _print_season(r)
        console.print(f"data drift: {len(r.drifted_columns)}/{r.n_columns} columns = {r.drift_share:.0%} "
                      f"(threshold {r.drift_share_threshold:.0%}), {len(r.severe_columns)} shifted by >= "
                      f"{monitor.SEVERE_COLUMN_THRESHOLD:g} SD → {'DRIFT' if r.data_drift else 'ok'}")
        if r.drifted_columns:
            top = sorted(r.drifted_columns, key=lambda c: -r.column_scores[c])[:10]
            console.print("  drifted: " + ", ".join(f"{c} ({r.column_scores[c]:.2f})" for c in top))
        for comp, score in r.prediction_scores.items():
            console.print(f"prediction drift {comp}: PSI {score:.3f} → {'DRIFT' if r.prediction_drift[comp] else 'ok'}"
                          + ("" if r.prediction_gates else " (reported; not gating)"))
        for note in r.notes:
            console.print(f"note: {note}")
        console.print(f"report: {r.report_path or '(not written)'}; summary: {r.summary_path}")
        if r.mlflow_run_id:
            console.print(f"mlflow run: {r.mlflow_run_id}")
        raise typer.Exit(1 if r.drift else 0)


def _print_season(r: monitor.MonitorResult) -> None:
    s = r.season
    moved, matched = s.get("moved_to_season", []), s.get("matched_on_temperature", [])
    console.print(f"season: {len(moved)} ambient-temperature columns against the reference moved to this season "
                  f"(annual cycle over {s.get('season_fit_days', 0)} days); {len(matched)} weather-driven columns "
                  f"against {s.get('matched_rows', 0):,} reference rows matched on {', '.join(s.get('matched_on', [])) or '-'}; "
                  f"predictions against {s.get('prediction_reference', '-')}")
    if r.skipped:
        console.print(f"skipped {len(r.skipped)} columns (window not yet full or too few values; listed in the summary)")
