"""LightGBM on a Dask cluster (``lightgbm.dask.DaskLGBMClassifier``): the Dask engine of ``autopdm train``.

:func:`fit_booster_dask` has the contract of ``train._fit_booster`` — same inputs, returns
``(booster, params, scale_pos_weight)`` with a plain ``lightgbm.Booster`` — so everything after the fit
(Platt calibration, operating threshold, evaluation, baselines, MLflow logging, registry, gate) is the
single-machine code path, unchanged.

Differences from the pandas engine, by necessity:

* ``lightgbm.dask`` has no early stopping. The number of rounds is, in this order: the ``num_boost_round``
  argument; the ``lgb.best_iteration`` param of the current champion's run for the component (the pandas
  engine's early-stopped count); else an early-stopped pandas fit on a sample of at most
  ``ROUNDS_SAMPLE_ROWS`` training rows. Logged as ``rounds_from``.
* Data-parallel training (``tree_learner=data``): every worker builds histograms on its own partitions
  and they are summed, so trees are the same in kind but feature bin boundaries come from each worker's
  share of the data; metrics land within 1 % of the single-machine model (tests/test_dask.py,
  benchmarks/bench_scale.py).

Inputs may be pandas (split into ``npartitions`` partitions, one or more per worker) or Dask DataFrames
(e.g. ``dd.read_parquet("s3://…/features/")`` filtered to the training rows) — the latter is how it runs
when the features table no longer fits one machine.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from .config import Paths

ROUNDS_SAMPLE_ROWS = 200_000
FALLBACK_ROUNDS = 200


def scale_pos_weight(y) -> float:
    from .train import MAX_SCALE_POS_WEIGHT

    y = np.asarray(y)
    pos = float(y.sum())
    neg = float(len(y) - pos)
    return float(min(neg / pos, MAX_SCALE_POS_WEIGHT)) if pos > 0 else 1.0


def champion_rounds(paths: Paths | None, component: str | None) -> int | None:
    """best_iteration logged by the run of the current champion of `component` (None when unknown)."""
    if paths is None or component is None:
        return None
    try:
        from .champion import _client, get_champion

        client = _client(paths)
        ch = get_champion(client, component)
        if ch is None or not ch.run_id:
            return None
        v = client.get_run(ch.run_id).data.params.get("lgb.best_iteration")
        return int(v) if v else None
    except Exception:
        return None


def sample_rounds(Xtr, ytr, Xes, yes, params: dict | None, seed: int, max_rows: int = ROUNDS_SAMPLE_ROWS) -> int:
    """Early-stopped single-machine fit on a sample of the training rows → its best iteration."""
    from .train import _fit_booster

    Xtr, ytr = _to_pandas(Xtr), np.asarray(_to_pandas(ytr))
    Xes, yes = _to_pandas(Xes), np.asarray(_to_pandas(yes))
    if len(Xtr) > max_rows:
        idx = np.sort(np.random.default_rng(seed).choice(len(Xtr), max_rows, replace=False))
        Xtr, ytr = Xtr.iloc[idx], ytr[idx]
    _, p, _ = _fit_booster(Xtr, ytr, Xes, yes, params, seed)
    return int(p["best_iteration"]) if p.get("early_stopping") else FALLBACK_ROUNDS


def _to_pandas(x):
    return x.compute() if hasattr(x, "dask") else x


def _workers(client) -> int:
    return max(1, len(client.scheduler_info().get("workers", {})))


def fit_booster_dask(Xtr, ytr, Xes=None, yes=None, params: dict | None = None, seed: int = 0, *, client=None,
                     num_boost_round: int | None = None, paths: Paths | None = None, component: str | None = None,
                     npartitions: int | None = None):
    """Train on the cluster behind ``client`` (default: the current ``distributed`` client).

    Same return value as ``train._fit_booster``: ``(lightgbm.Booster, params_logged, scale_pos_weight)``.
    ``Xes``/``yes`` are used only when the round count has to be found by a sample fit.
    """
    import dask.dataframe as dd
    import lightgbm as lgb

    from .features import CATEGORICAL
    from .train import DEFAULT_PARAMS, NUM_BOOST_ROUND

    if client is None:
        from distributed import default_client

        client = default_client()
    t0 = time.perf_counter()
    rounds_from = "argument"
    rounds = num_boost_round
    if rounds is None and params and ("num_iterations" in params or "num_boost_round" in params):
        rounds, rounds_from = int(params.get("num_iterations", params.get("num_boost_round"))), "params"
    if rounds is None:
        rounds, rounds_from = champion_rounds(paths, component), "champion"
    if rounds is None:
        rounds, rounds_from = sample_rounds(Xtr, ytr, Xes, yes, params, seed), "sample_early_stopping"
    rounds = int(min(max(rounds, 1), NUM_BOOST_ROUND))

    y_local = _to_pandas(ytr)
    spw = scale_pos_weight(y_local)
    p = dict(DEFAULT_PARAMS)
    p.update({"seed": seed, "scale_pos_weight": spw})
    p.update({k: v for k, v in (params or {}).items()
              if k not in ("num_iterations", "num_boost_round", "early_stopping_rounds")})
    if p.get("is_unbalance"):
        p.pop("scale_pos_weight", None)
    if "num_threads" not in (params or {}):
        p.pop("num_threads", None)  # lightgbm.dask uses each worker's thread count
    # (bagging draws per thread block: the thread count changes the model, so parity runs pass it explicitly)
    p.pop("metric", None)       # no validation set on the cluster
    p.setdefault("tree_learner", "data")

    # one partition per worker: with several, their order on a worker (and so the bagging draw) is not fixed
    n = npartitions or _workers(client)
    X = Xtr if hasattr(Xtr, "dask") else dd.from_pandas(Xtr.reset_index(drop=True), npartitions=n, sort=False)
    y = ytr if hasattr(ytr, "dask") else dd.from_pandas(pd.Series(np.asarray(ytr), name="y"), npartitions=n, sort=False)
    if not hasattr(Xtr, "dask"):
        X, y = client.persist([X, y])
    cats = [c for c in CATEGORICAL if c in X.columns]
    model = lgb.DaskLGBMClassifier(client=client, n_estimators=rounds, **p)
    model.fit(X, y, categorical_feature=cats or "auto")
    booster = model.to_local().booster_
    booster = lgb.Booster(model_str=booster.model_to_string())
    p.update({"num_boost_round": rounds, "best_iteration": rounds, "early_stopping": False, "early_stopping_rounds": 0,
              "engine": "dask", "rounds_from": rounds_from, "n_workers": _workers(client), "npartitions": n,
              "dask_fit_seconds": round(time.perf_counter() - t0, 3)})
    return booster, p, spw


# ----------------------------------------------------------------------------------- engine comparison


def compare_engines(df: pd.DataFrame, components=None, seed: int = 0, *, client=None, params: dict | None = None,
                    num_boost_round: dict | int | None = None) -> dict:
    """Train each component with both engines on the same split and score both on the same test rows.

    The pandas model is early-stopped and the Dask model gets its best iteration; with ``num_boost_round``
    both train that many rounds. Calibration, threshold and metrics are the training code path's functions.
    Returns {component: {"pandas": metrics, "dask": metrics, "rounds": n, "seconds": {...}}}.
    """
    from .champion import Champion
    from .evaluate import evaluate, threshold_for_budget
    from .features import COMPONENTS, feature_columns
    from .split import time_vehicle_split
    from .train import _fit_booster, _platt

    components = list(components or COMPONENTS)
    try:
        from .train import lgb_threads
    except ImportError:  # older train.py
        import os

        def lgb_threads():
            return os.cpu_count() or 1
    params = {"num_threads": lgb_threads(), **(params or {})}  # same thread count on both sides (bagging)
    split = time_vehicle_split(df, seed=seed)
    feats = feature_columns(df)
    X = df[feats]
    out = {}
    for comp in components:
        y = df[f"label_{comp}"].to_numpy(dtype=np.int8)
        res, secs = {}, {}
        rounds = num_boost_round.get(comp) if isinstance(num_boost_round, dict) else num_boost_round
        t = time.perf_counter()
        if rounds:  # both engines with the same fixed number of rounds
            b_pd, p_pd, spw = _fit_booster(X[split.train], y[split.train], X.iloc[:0], y[:0],
                                           {**params, "num_iterations": int(rounds)}, seed)
        else:       # pandas early-stopped, Dask with its best iteration (what `train --engine dask` does)
            b_pd, p_pd, spw = _fit_booster(X[split.train], y[split.train], X[split.early_stop], y[split.early_stop],
                                           params, seed)
            rounds = int(p_pd["best_iteration"])
        secs["pandas"] = time.perf_counter() - t
        t = time.perf_counter()
        b_dk, p_dk, _ = fit_booster_dask(X[split.train], y[split.train], params={k: v for k, v in params.items()
                                         if k not in ("num_iterations", "early_stopping_rounds")}, seed=seed, client=client,
                                         num_boost_round=rounds)
        secs["dask"] = time.perf_counter() - t
        for engine, booster in (("pandas", b_pd), ("dask", b_dk)):
            ch = Champion(comp, f"autopdm-{comp}", "", list(feats), 0.5, booster=booster)
            ch.calibration = _platt(ch.margin(df.loc[split.calib, feats]), y[split.calib], spw)
            cal_rows = df.loc[split.calib]
            ch.threshold, _ = threshold_for_budget(cal_rows, ch.predict(cal_rows), comp)
            test = df.loc[split.test]
            m = evaluate(test, ch.predict(test), ch.threshold, comp)
            res[engine] = {k: float(v) for k, v in m.items() if not k.startswith("_") and isinstance(v, (int, float, np.number))}
        out[comp] = {**res, "rounds": rounds, "seconds": secs}
    return out


def relative_gap(a: float, b: float) -> float:
    """|a − b| relative to a (0 when both are 0)."""
    if a == b:
        return 0.0
    return abs(a - b) / max(abs(a), 1e-12)
