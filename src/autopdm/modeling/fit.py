"""Fitting one LightGBM booster: parameters, threads, bins, negative subsampling, early stopping.

lightgbm is imported inside the functions (~2 s): the CLI loads this module for every command.

Shared by both engines: the Dask engine (`train_dask`) fits with the same parameters and bins on the
same sample of rows.
"""

from __future__ import annotations

import os

import numpy as np

from autopdm.config import Settings
from autopdm.pipeline.features import CATEGORICAL

NUM_BOOST_ROUND = 2000
EARLY_STOPPING_ROUNDS = 50
MAX_SCALE_POS_WEIGHT = 10.0
BIN_SAMPLE_ROWS = 200_000           # LightGBM's bin_construct_sample_cnt: bin boundaries come from at most this many rows
BAGGING_BLOCK = 1024               # LightGBM draws bagging per block of this many rows (bagging_rand_block_)
MAX_TRAIN_NEGATIVES = 150_000       # negatives beyond this are subsampled (positives all kept); the
                                    # calibration set is not subsampled, so Platt scaling restores the prior
DEFAULT_PARAMS = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 100,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "metric": "average_precision",
    "verbose": -1,
    "deterministic": True,
    "force_col_wise": True,
}


def pip_requirements() -> list[str]:
    """What a logged model needs (listing them saves MLflow ~4 s of inferring them)."""
    import lightgbm as lgb

    return [f"lightgbm=={lgb.__version__}", "pandas<3", "numpy"]


def lgb_threads() -> int:
    """LightGBM threads: AUTOPDM_LGB_THREADS, else all cores but one.

    OpenMP threads spin while they wait: on a busy 2-core machine, 2 threads measured 5-40x slower
    than 1 (26 s vs 0.6 s for 30 rounds on 57k rows), so one core is left for everything else.
    """
    n = Settings().lgb_threads
    return n if n else max(1, (os.cpu_count() or 2) - 1)


def subsample_negatives(mask: np.ndarray, y: np.ndarray, seed: int, cap: int = MAX_TRAIN_NEGATIVES) -> np.ndarray:
    neg = np.flatnonzero(mask & (y == 0))
    if len(neg) <= cap:
        return mask
    rng = np.random.default_rng(seed)
    out = mask.copy()
    out[rng.choice(neg, len(neg) - cap, replace=False)] = False
    return out


def bin_sample(X, seed: int, max_rows: int = BIN_SAMPLE_ROWS) -> np.ndarray:
    """The rows LightGBM finds feature bin boundaries on, as float32: all of them up to `max_rows`, else a
    seeded sample. Both engines bin from these rows, so a model trained on a Dask cluster splits on the
    same thresholds as the single-machine one (see train_dask)."""
    if hasattr(X, "dask"):  # a Dask DataFrame: sample on the cluster, collect only the sample
        n = len(X)
        X = (X.sample(frac=max_rows / n, random_state=seed) if n > max_rows else X).compute()
    if len(X) > max_rows:
        X = X.iloc[np.sort(np.random.default_rng(seed).choice(len(X), max_rows, replace=False))]
    return X.to_numpy(np.float32)


def lgb_params(ytr, params: dict | None, seed: int) -> tuple[dict, float]:
    """LightGBM parameters of a fit on labels `ytr` → (params, scale_pos_weight). Shared by both engines."""
    ytr = np.asarray(ytr)
    pos = float(ytr.sum())
    neg = float(len(ytr) - pos)
    spw = float(min(neg / pos, MAX_SCALE_POS_WEIGHT)) if pos > 0 else 1.0
    # bagging_seed explicit: the Dask engine offsets it per worker to draw the same rows as one machine
    p = {**DEFAULT_PARAMS, "seed": seed, "bagging_seed": seed, "num_threads": lgb_threads(), "scale_pos_weight": spw}
    p.update(params or {})
    if p.get("is_unbalance"):
        p.pop("scale_pos_weight", None)
    return p, spw


def fit_booster(Xtr, ytr, Xes, yes, params: dict, seed: int):
    """Early-stopped LightGBM on (Xtr, ytr), stopping on (Xes, yes) → (booster trimmed to its best
    iteration, the parameters used, scale_pos_weight). `early_stopping_rounds` <= 0 in `params`: no early
    stopping, all `num_iterations` rounds (comparable models across seeds, e.g. in tests)."""
    import lightgbm as lgb

    p, spw = lgb_params(ytr, params, seed)
    rounds = int(p.pop("num_iterations", p.pop("num_boost_round", NUM_BOOST_ROUND)))
    es_rounds = int(p.pop("early_stopping_rounds", EARLY_STOPPING_ROUNDS))
    names = list(Xtr.columns)
    cats = [c for c in CATEGORICAL if c in names]
    reference = None  # up to BIN_SAMPLE_ROWS rows LightGBM bins on all of them itself
    if len(Xtr) > BIN_SAMPLE_ROWS:
        reference = lgb.Dataset(bin_sample(Xtr, seed), feature_name=names, categorical_feature=cats, params=dict(p))
    # numpy in, names alongside: the pandas path of lightgbm costs seconds per Dataset
    dtrain = lgb.Dataset(Xtr.to_numpy(np.float32), ytr, feature_name=names, categorical_feature=cats,
                         reference=reference, free_raw_data=True, params={"verbose": -1})
    valid_sets, callbacks, early = [], [], False
    if es_rounds > 0 and len(yes) and yes.min() != yes.max():
        valid_sets = [lgb.Dataset(Xes.to_numpy(np.float32), yes, reference=dtrain, feature_name=names,
                                  categorical_feature=cats, params={"verbose": -1})]
        callbacks = [lgb.early_stopping(es_rounds, verbose=False)]
        early = True
    elif es_rounds > 0:  # nothing to stop on
        rounds = min(rounds, 200)
    booster = lgb.train(p, dtrain, num_boost_round=rounds, valid_sets=valid_sets, callbacks=callbacks)
    best = booster.best_iteration if early and booster.best_iteration > 0 else booster.current_iteration()
    booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))  # what gets logged is what we evaluate
    p.update({"num_boost_round": rounds, "best_iteration": best, "early_stopping": early,
              "early_stopping_rounds": es_rounds if early else 0})
    return booster, p, spw
