"""LightGBM on a Dask cluster (``lightgbm.dask``): the Dask engine of ``autopdm train``.

:func:`fit_booster_dask` has the contract of ``fit.fit_booster`` — same inputs, returns
``(booster, params, scale_pos_weight)`` with a plain ``lightgbm.Booster`` — so everything after the fit
(Platt calibration, operating threshold, evaluation, baselines, MLflow logging, registry, gate) is the
single-machine code path, unchanged.

Data-parallel LightGBM (``tree_learner=data``) sums every worker's gradient histograms, so it would grow
one machine's trees if it had the same bins, the same bagged rows and the same leaf sizes. Out of the box
it has none of them; the first two are fixed here:

* **Bins.** Each worker finds the boundaries of its share of the features on its own rows, and
  LightGBM 4.7 hands ``forcedbins_filename`` entries to the wrong features on every worker but the
  first (``forced_bin_bounds[i]`` for feature ``start[rank] + i`` in ``DatasetLoader::ConstructFromSampleData``;
  lightgbm-org/LightGBM PR #7436). So every worker here builds its training Dataset with
  ``reference=`` a Dataset made from :func:`fit.bin_sample` — the rows the single-machine engine bins
  on — broadcast once: identical bin mappers everywhere.
* **Bagging.** LightGBM draws the bag per block of 1,024 rows, from ``Random(bagging_seed + block)``.
  Each worker gets a contiguous, 1,024-aligned run of the training rows and starts its
  ``bagging_seed`` at its first block's number, so it draws for its rows what one machine would.

What cannot be matched from outside LightGBM: after a split the data-parallel learner knows a child's
size only as estimated from its hessians (``DataParallelTreeLearner::Split``), where one machine counts
rows, so ``min_data_in_leaf`` acts on other numbers and the trees drift from the first leaf where that
matters. With depth-1 trees the models are identical (tests/test_dask.py); full models at 2,000 vehicles
are as far apart as two seeds of one engine (benchmarks/bench_dask_parity.py, docs/scaling.md).

``lightgbm.dask`` has no early stopping. The number of rounds is, in this order: the ``num_boost_round``
argument; the ``lgb.best_iteration`` param of the current champion's run for the component (the pandas
engine's early-stopped count); else an early-stopped pandas fit on a sample of at most
``ROUNDS_SAMPLE_ROWS`` training rows. Logged as ``rounds_from``.

Inputs may be pandas (cut into one aligned partition per worker) or Dask DataFrames (e.g.
``dd.read_parquet("s3://…/features/")`` filtered to the training rows) — the latter is how it runs when
the features table no longer fits one machine; then bagging matches one machine only where partitions
happen to be 1,024-aligned and each worker's are contiguous (a warning says when not).
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd

from autopdm import components as registry
from autopdm.config import Paths
from autopdm.modeling.champion import Champion, get_champion
from autopdm.modeling.fit import BAGGING_BLOCK, NUM_BOOST_ROUND, bin_sample, fit_booster, lgb_params, lgb_threads
from autopdm.modeling.metrics import evaluate
from autopdm.modeling.operating_point import set_operating_point
from autopdm.modeling.split import time_vehicle_split
from autopdm.modeling.tracking import client as tracking_client
from autopdm.pipeline.features import CATEGORICAL, feature_columns

ROUNDS_SAMPLE_ROWS = 200_000
FALLBACK_ROUNDS = 200


def champion_rounds(paths: Paths | None, component: str | None) -> int | None:
    """best_iteration logged by the run of the current champion of `component` (None when unknown)."""
    if paths is None or component is None:
        return None
    try:
        client = tracking_client(paths)
        ch = get_champion(client, component)
        if ch is None or not ch.run_id:
            return None
        v = client.get_run(ch.run_id).data.params.get("lgb.best_iteration")
        return int(v) if v else None
    except Exception:
        return None


def sample_rounds(Xtr, ytr, Xes, yes, params: dict | None, seed: int, max_rows: int = ROUNDS_SAMPLE_ROWS) -> int:
    """Early-stopped single-machine fit on a sample of the training rows → its best iteration."""
    Xtr, ytr = _to_pandas(Xtr), np.asarray(_to_pandas(ytr))
    Xes, yes = _to_pandas(Xes), np.asarray(_to_pandas(yes))
    if len(Xtr) > max_rows:
        idx = np.sort(np.random.default_rng(seed).choice(len(Xtr), max_rows, replace=False))
        Xtr, ytr = Xtr.iloc[idx], ytr[idx]
    _, p, _ = fit_booster(Xtr, ytr, Xes, yes, params, seed)
    return int(p["best_iteration"]) if p.get("early_stopping") else FALLBACK_ROUNDS


def _to_pandas(x):
    return x.compute() if hasattr(x, "dask") else x


class SharedBinsFit:
    """What each Dask worker fits: ``lightgbm.dask``'s ``model_factory`` (duck-typed like its
    ``LGBMClassifier``: ``fit``, ``fitted_``, ``booster_``, ``_other_params``), training on the worker's rows
    with the bin mappers of the shared sample and the bagging seed of its first row block."""

    def __init__(self, **params):
        self.params = params
        self._other_params: dict = {}   # lightgbm.dask._train strips network params from it
        self.fitted_ = False

    def fit(self, X, y, *, bin_sample: np.ndarray, num_boost_round: int, feature_names: list[str],
            categorical: list[str], **_unused):
        import lightgbm as lgb

        # parts can arrive in any order: back to the rows' global order (the index)
        order = np.argsort(X.index.to_numpy(), kind="stable")
        X, y = X.iloc[order], np.asarray(y)[order]
        p = dict(self.params)
        if p.get("bagging_fraction", 1.0) < 1.0 and p.get("bagging_freq", 0) > 0:
            idx = X.index.to_numpy()
            start = int(idx[0]) if len(idx) else 0
            if start % BAGGING_BLOCK == 0 and np.array_equal(idx, np.arange(start, start + len(idx))):
                p["bagging_seed"] = int(p.get("bagging_seed", 0)) + start // BAGGING_BLOCK
            else:
                warnings.warn("this worker's training rows are not one 1,024-aligned run: its bagging draws differ "
                              "from the single-machine model's", stacklevel=1)
        net = {k: p[k] for k in ("machines", "local_listen_port", "num_machines", "time_out") if k in p}
        local = {k: v for k, v in p.items() if k not in net}
        # built before lgb.train sets up the network, so LightGBM bins it as one machine would
        ref = lgb.Dataset(bin_sample, feature_name=feature_names, categorical_feature=categorical,
                          params=dict(local)).construct()
        dtrain = lgb.Dataset(X.to_numpy(np.float32), y, reference=ref, feature_name=feature_names,
                             categorical_feature=categorical, params=dict(local))
        self.booster_ = lgb.train(p, dtrain, num_boost_round=num_boost_round)
        self.fitted_ = True
        return self


def _aligned_parts(client, X: pd.DataFrame, y, workers: list[str]):
    """One contiguous, BAGGING_BLOCK-aligned run of training rows per worker, placed there
    → (Dask DataFrame, Dask Series) with one partition per worker."""
    import dask.dataframe as dd

    X = X.reset_index(drop=True)
    y = pd.Series(np.asarray(y), name="y")
    per = -(-len(X) // len(workers))
    per = -(-per // BAGGING_BLOCK) * BAGGING_BLOCK
    runs = [(w, a, a + per) for w, a in zip(workers, range(0, len(X), per))]
    xs = [client.scatter(X.iloc[a:b], workers=[w], hash=False) for w, a, b in runs]
    ys = [client.scatter(y.iloc[a:b], workers=[w], hash=False) for w, a, b in runs]
    return dd.from_delayed(xs, meta=X.iloc[:0]), dd.from_delayed(ys, meta=y.iloc[:0])


def fit_booster_dask(Xtr, ytr, Xes=None, yes=None, params: dict | None = None, seed: int = 0, *, client=None,
                     num_boost_round: int | None = None, paths: Paths | None = None, component: str | None = None):
    """Train on the cluster behind ``client`` (default: the current ``distributed`` client).

    Same return value as ``fit.fit_booster``: ``(lightgbm.Booster, params_logged, scale_pos_weight)``.
    ``Xes``/``yes`` are used only when the round count has to be found by a sample fit.
    """
    from lightgbm.dask import _train

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

    p, spw = lgb_params(_to_pandas(ytr), {k: v for k, v in (params or {}).items()
                                          if k not in ("num_iterations", "num_boost_round", "early_stopping_rounds")}, seed)
    p.pop("num_threads", None)  # lightgbm.dask sets each worker's thread count
    p.pop("metric", None)       # no validation set on the cluster
    p.setdefault("tree_learner", "data")

    workers = sorted(client.scheduler_info()["workers"])
    if hasattr(Xtr, "dask"):
        X, y = Xtr, ytr
    else:
        X, y = _aligned_parts(client, Xtr, ytr, workers)
    names = list(X.columns)
    sample = client.scatter(bin_sample(Xtr, seed), broadcast=True)
    model = _train(client=client, data=X, label=y, params=p, model_factory=SharedBinsFit, bin_sample=sample,
                   num_boost_round=rounds, feature_names=names, categorical=[c for c in CATEGORICAL if c in names])
    booster = lgb_booster(model.booster_)
    p.update({"num_boost_round": rounds, "best_iteration": rounds, "early_stopping": False, "early_stopping_rounds": 0,
              "engine": "dask", "rounds_from": rounds_from, "n_workers": len(workers), "npartitions": X.npartitions,
              "dask_fit_seconds": round(time.perf_counter() - t0, 3)})
    return booster, p, spw


def lgb_booster(b):
    """A standalone copy (the worker's booster holds network state)."""
    import lightgbm as lgb

    return lgb.Booster(model_str=b.model_to_string())


# ----------------------------------------------------------------------------------- engine comparison


def compare_engines(df: pd.DataFrame, components=None, seed: int = 0, *, client=None, params: dict | None = None,
                    num_boost_round: dict | int | None = None) -> dict:
    """Train each component with both engines on the same split and score both on the same test rows.

    The pandas model is early-stopped and the Dask model gets its best iteration; with ``num_boost_round``
    both train that many rounds. Calibration, threshold and metrics are ``autopdm train``'s
    (``operating_point.set_operating_point``, ``metrics.evaluate``); training rows are all of the split's (no
    negative subsampling), so the two engines see exactly the same rows.
    Returns {component: {"pandas": metrics, "dask": metrics, "rounds": n, "seconds": {...}}}.
    """
    components = registry.check(list(components or registry.names()))
    params = {"num_threads": lgb_threads(), **(params or {})}
    split = time_vehicle_split(df, seed=seed)
    feats = feature_columns(df)
    X = df[feats]
    test = df.loc[split.test]
    out = {}
    for comp in components:
        y = df[registry.get(comp).label].to_numpy(dtype=np.int8)
        res, secs = {}, {}
        rounds = num_boost_round.get(comp) if isinstance(num_boost_round, dict) else num_boost_round
        t = time.perf_counter()
        if rounds:  # both engines with the same fixed number of rounds
            b_pd, p_pd, spw = fit_booster(X[split.train], y[split.train], X.iloc[:0], y[:0],
                                           {**params, "num_iterations": int(rounds)}, seed)
        else:       # pandas early-stopped, Dask with its best iteration (what `train --engine dask` does)
            b_pd, p_pd, spw = fit_booster(X[split.train], y[split.train], X[split.early_stop], y[split.early_stop],
                                           params, seed)
            rounds = int(p_pd["best_iteration"])
        secs["pandas"] = time.perf_counter() - t
        t = time.perf_counter()
        b_dk, _, _ = fit_booster_dask(X[split.train], y[split.train], params=params, seed=seed, client=client,
                                      num_boost_round=rounds)
        secs["dask"] = time.perf_counter() - t
        for engine, booster in (("pandas", b_pd), ("dask", b_dk)):
            ch = Champion(comp, registry.get(comp).model_name, "", list(feats), 0.5, booster=booster)
            set_operating_point(ch, df, split, spw)
            m = evaluate(test, ch.predict(test), ch.threshold, comp)
            res[engine] = {k: float(v) for k, v in m.items() if not k.startswith("_") and isinstance(v, (int, float, np.number))}
        # 0 when both engines grew the same trees (up to float rounding of the histogram sums)
        res["max_margin_gap"] = float(np.abs(Champion(comp, "", "", list(feats), 0.5, booster=b_pd).margin(test[feats])
                                             - Champion(comp, "", "", list(feats), 0.5, booster=b_dk).margin(test[feats])).max())
        out[comp] = {**res, "rounds": rounds, "seconds": secs}
    return out


def relative_gap(a: float, b: float) -> float:
    """|a − b| relative to a (0 when both are 0)."""
    if a == b:
        return 0.0
    return abs(a - b) / max(abs(a), 1e-12)
