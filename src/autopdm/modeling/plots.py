"""Plots of a model's held-out behaviour (matplotlib figures; the caller saves or logs them)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from autopdm.modeling.metrics import LEAD_MAX_DAYS
from autopdm.pipeline.features import EARLY_WARNING


def _fig():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_calibration(y, p, title: str):
    plt = _fig()
    fig, ax = plt.subplots(figsize=(5, 5))
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    # risks are mostly tiny: bins by quantile, denser in the upper tail where alerts live
    levels = np.r_[0, 0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 1.0]
    qs = np.unique(np.quantile(p, levels)) if len(p) else np.array([0, 1])
    b = np.clip(np.searchsorted(qs, p, side="right") - 1, 0, max(len(qs) - 2, 0))
    df = pd.DataFrame({"b": b, "p": p, "y": y}).groupby("b").agg(p=("p", "mean"), y=("y", "mean"), n=("y", "size"))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect")
    ax.plot(df["p"], df["y"], "o-", label="model (quantile bins)")
    top = max(float(df["p"].max()) if len(df) else 0.1, float(df["y"].max()) if len(df) else 0.1, 0.05) * 1.1
    ax.set_xlim(0, min(1, top))
    ax.set_ylim(0, min(1, top))
    ax.set_xlabel("predicted risk")
    ax.set_ylabel("observed need rate within 15 days")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_pr(y, p, title: str, points: dict | None = None):
    from sklearn.metrics import precision_recall_curve

    plt = _fig()
    fig, ax = plt.subplots(figsize=(5, 5))
    if len(np.unique(y)) > 1:
        prec, rec, _ = precision_recall_curve(y, p)
        ax.plot(rec, prec, label="model (row level)")
    for name, (r, pr) in (points or {}).items():
        if np.isfinite(r) and np.isfinite(pr):
            ax.plot([r], [pr], "o", label=name)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_importance(names, gain, title: str, top: int = 25):
    plt = _fig()
    s = pd.Series(np.asarray(gain, dtype=float), index=list(names)).sort_values(ascending=True).tail(top)
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(s) + 1.2))
    ax.barh(s.index, s.to_numpy() / max(float(s.max()), 1e-12))
    ax.set_xlabel("total gain (relative to the top feature)")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_lead_times(leads: dict[str, np.ndarray], title: str):
    plt = _fig()
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.arange(-0.5, LEAD_MAX_DAYS + 1.5, 1)
    for name, arr in leads.items():
        ax.hist(np.asarray(arr), bins=bins, alpha=0.6, label=name)
    lo, hi = EARLY_WARNING
    ax.axvspan(lo - 0.5, hi + 0.5, color="green", alpha=0.1, label=f"early window {lo}-{hi} d")
    ax.set_xlabel(f"days between first alert (within {LEAD_MAX_DAYS} d) and the need; 0 = no alert")
    ax.set_ylabel("need events")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
