"""Linear probes on frozen sentence vectors, GLUE task metrics and their baselines.

`fit_probe` = StandardScaler + logistic regression (multinomial, L2; C chosen by stratified CV on
the TRAIN split, log-loss) or, for STS-B, ridge regression (alpha chosen by CV on the train split).
The dev split is only ever predicted (docs/PROTOCOL.md, defect 8: the paper's code chose epochs and ran CV on
the dev split it reported). `task_metrics` uses sklearn/scipy; the per-example predictions are
kept by the caller so that `stats.py` can bootstrap CIs and paired differences with `METRICS`.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from joblib import parallel_config
from scipy import stats
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegressionCV, RidgeCV
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from jepa_core.config import TASK_METRICS
from jepa_core.cpu import parallel_workers

C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)  # inverse L2 strength, for standardised features
# lbfgs stopping: tol 1e-3 / 200 iterations. A 73-class lexical probe (1,181 x 256) takes 2.3 s
# instead of 6 s at 1e-4 / 500, with the same chosen C and train accuracy within 0.002.
ALPHA_GRID = (1e-1, 1.0, 10.0, 100.0, 1000.0)


def task_type(task: str) -> str:
    return "regression" if task == "stsb" else "classification"


def _correlation(fn):
    """A correlation that is 0 (chance) for a constant input instead of NaN: the mean-prediction
    baseline and a collapsed encoder then still get a finite value."""
    def corr(y_true: np.ndarray, y_pred: np.ndarray) -> float:
        if np.ptp(y_true) == 0 or np.ptp(y_pred) == 0:
            return 0.0
        return float(fn(y_true, y_pred)[0])
    return corr


METRICS = {  # name -> fn(y_true, y_pred) -> float; also what stats.py bootstraps
    "accuracy": lambda t, p: float(accuracy_score(t, p)),
    "f1": lambda t, p: float(f1_score(t, p, pos_label=1, zero_division=0.0)),
    "mcc": lambda t, p: float(matthews_corrcoef(t, p)),
    "spearman": _correlation(stats.spearmanr),
    "pearson": _correlation(stats.pearsonr),
}


# ---------------------------------------------------------------- the same metrics on many resamples at once
# Hand-written in numpy because the bootstrap evaluates each metric on ~1000 resamples per
# (model, task, pooling): one vectorised call over a (B, n) matrix instead of B sklearn calls
# (~1 ms each). tests/test_probes.py checks them against METRICS.

def _batch_binary_counts(t: np.ndarray, p: np.ndarray):
    tp = ((t == 1) & (p == 1)).sum(1)
    return tp, ((t != 1) & (p == 1)).sum(1), ((t == 1) & (p != 1)).sum(1)


def _batch_f1(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    tp, fp, fn = _batch_binary_counts(t, p)
    den = 2 * tp + fp + fn
    return np.where(den > 0, 2 * tp / np.maximum(den, 1), 0.0)


def _batch_mcc(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Multiclass MCC (Gorodkin 2004, sklearn's formula) from per-class counts; 0 when undefined."""
    s = t.shape[1]
    c = (t == p).sum(1).astype(np.float64)
    classes = np.union1d(np.unique(t), np.unique(p))
    t_k = np.stack([(t == k).sum(1) for k in classes], 1).astype(np.float64)
    p_k = np.stack([(p == k).sum(1) for k in classes], 1).astype(np.float64)
    den = np.sqrt((s * s - (p_k ** 2).sum(1)) * (s * s - (t_k ** 2).sum(1)))
    return np.where(den > 0, (c * s - (t_k * p_k).sum(1)) / np.where(den > 0, den, 1.0), 0.0)


def _batch_pearson(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    t = t - t.mean(1, keepdims=True)
    p = p - p.mean(1, keepdims=True)
    den = np.sqrt((t * t).sum(1) * (p * p).sum(1))
    return np.where(den > 1e-12, (t * p).sum(1) / np.where(den > 1e-12, den, 1.0), 0.0)


def _batch_spearman(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    return _batch_pearson(stats.rankdata(t, axis=1), stats.rankdata(p, axis=1))  # average ranks for ties


BATCH_METRICS = {
    "accuracy": lambda t, p: (t == p).mean(1),
    "f1": _batch_f1,
    "mcc": _batch_mcc,
    "spearman": _batch_spearman,
    "pearson": _batch_pearson,
}


def bootstrap_metric(name: str, y_true: np.ndarray, y_pred: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """METRICS[name] on each resample: idx is (B, n) indices into the examples; returns (B,)."""
    return BATCH_METRICS[name](np.asarray(y_true)[idx], np.asarray(y_pred)[idx])


@dataclass
class FittedProbe:
    pipeline: Pipeline
    task_type: str
    param: float  # the chosen C (logistic) or alpha (ridge)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.pipeline.predict(X)


def _mean_log_likelihood(estimator, X: np.ndarray, y: np.ndarray) -> float:
    """CV score = -log-loss. Same value as scoring="neg_log_loss", without the input validation that
    made scoring half the cost of a small probe."""
    proba = estimator.predict_proba(X)
    column = np.searchsorted(estimator.classes_, y)
    return float(np.log(np.clip(proba[np.arange(len(y)), column], 1e-15, None)).mean())


def fit_probe(X_train: np.ndarray, y_train: np.ndarray, task_type: str, cv_folds: int = 3, seed: int = 0,
              n_jobs: int | None = None) -> FittedProbe:
    """Standardise, then logistic regression (C by CV) or ridge (alpha by CV), on the train split only.

    n_jobs: worker processes for the logistic CV folds (None: `parallel_workers`); the fit does not depend on it.
    """
    X_train = np.asarray(X_train, dtype=np.float64)
    n_jobs = parallel_workers(cv_folds) if n_jobs is None else n_jobs
    if task_type == "classification":
        folds = min(cv_folds, int(np.bincount(np.unique(y_train, return_inverse=True)[1]).min()))
        if folds < 2:
            raise ValueError(f"probe needs at least 2 train examples of every class, got counts "
                             f"{dict(zip(*np.unique(y_train, return_counts=True)))}")
        cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
        model = LogisticRegressionCV(Cs=list(C_GRID), l1_ratios=(0.0,), cv=cv,
                                     scoring=_mean_log_likelihood, max_iter=200, tol=1e-3, random_state=seed,
                                     use_legacy_attributes=False, n_jobs=n_jobs)
    elif task_type == "regression":
        model = RidgeCV(alphas=ALPHA_GRID, cv=KFold(cv_folds, shuffle=True, random_state=seed))
    else:
        raise ValueError(f"task_type={task_type!r}: expected classification or regression")
    pipeline = make_pipeline(StandardScaler(), model)
    # one BLAS thread: these fits are small, and on a shared 2-core machine multi-threaded BLAS
    # was measured 5-50x slower (2000 x 512 logistic CV: 36 s with 2 threads vs 0.6 s with 1)
    # (the same single BLAS thread inside each worker process of the parallel CV)
    with warnings.catch_warnings(), threadpool_limits(limits=1), parallel_config("loky", inner_max_num_threads=1):
        warnings.simplefilter("ignore", ConvergenceWarning)  # lbfgs may stop at max_iter on the weakest C
        pipeline.fit(X_train, y_train)
    param = model.C_ if task_type == "classification" else model.alpha_
    return FittedProbe(pipeline, task_type, float(np.ravel(param)[0]))


def task_metrics(task: str, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """The GLUE metrics of `task`: sst2 accuracy; mrpc f1, accuracy; mnli accuracy; cola mcc; stsb spearman, pearson."""
    if task not in TASK_METRICS:
        raise ValueError(f"unknown task {task!r}: expected one of {', '.join(TASK_METRICS)}")
    return {name: METRICS[name](np.asarray(y_true), np.asarray(y_pred)) for name in TASK_METRICS[task]}


def majority_prediction(y_train: np.ndarray, n: int, task_type: str) -> np.ndarray:
    """The constant baseline on n dev examples: the train split's majority class, or its mean score."""
    y_train = np.asarray(y_train)
    if task_type == "regression":
        return np.full(n, y_train.mean(), dtype=np.float64)
    values, counts = np.unique(y_train, return_counts=True)
    return np.full(n, values[np.argmax(counts)])


def cosine_similarity(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (N, H) arrays."""
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    norms = np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1)
    return (u * v).sum(1) / np.maximum(norms, 1e-12)


def zero_shot_sts(u: np.ndarray, v: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """STS-B without training (SimCSE convention): Spearman/Pearson of cos(u, v) against the gold scores."""
    cos = cosine_similarity(u, v)
    return {"spearman": METRICS["spearman"](gold, cos), "pearson": METRICS["pearson"](gold, cos)}
