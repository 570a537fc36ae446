"""Linear probes on frozen sentence vectors, GLUE task metrics and their baselines.

`fit_probe` = standardise (the train split's mean and sd), then L2 logistic regression (C chosen by
stratified CV on the TRAIN split, held-out log-likelihood) or, for STS-B, ridge regression (alpha
chosen by CV R² on the train split). The dev split is only ever predicted (docs/PROTOCOL.md, defect
8: the paper's code chose epochs and ran CV on the dev split it reported). `task_metrics` uses
sklearn/scipy; the per-example predictions are kept by the caller so that `stats.py` can bootstrap
CIs and paired differences with `METRICS`.

One implementation on every device (issue 22). The objective and its gradient are written once against an
array namespace (analysis/backend.py): numpy on the CPU, torch on `device` where evaluate runs device-native
(a GPU); predictions are numpy. The optimiser is scipy's L-BFGS-B with
scikit-learn's lbfgs settings (LogisticRegressionCV: tol 1e-3, 200 iterations, 50 line-search
steps; binary tasks one logit, multiclass one per class; mean log-loss + ||coef||²/(2·C·n), the
intercept unpenalised; the C path warm-started fold by fold, the refit started from the mean of the
folds' coefficients at the chosen C). So the fit follows scikit-learn's own iterates up to float
rounding, and the numbers stay those of the previous scikit-learn pipeline (tests/test_probes.py
checks it against LogisticRegressionCV / RidgeCV on fixed features). Ridge is closed form: one
Cholesky solve per (fold, alpha) of the centred normal equations, as scikit-learn's Ridge does.

Note on the stopping rule (docs/PERFORMANCE.md, "Evaluation speed"): tol 1e-3 stops short of the
optimum on weakly regularised many-class probes (the word-content probe moves by ~1 point of
accuracy when fitted to convergence); it is kept because the tables are defined by it.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from jepa_core.analysis.backend import Backend
from jepa_core.config import TASK_METRICS

C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)  # inverse L2 strength, for standardised features
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
    """A fitted probe: standardisation, then one linear map (intercept in the last row of `coef`)."""
    mean: np.ndarray  # (d,) of the train split
    scale: np.ndarray  # (d,) its sd (1 where constant: scikit-learn's StandardScaler rule)
    coef: np.ndarray  # (d + 1, k): k = classes (multiclass), 1 (binary: the logit of classes[1]) or 1 (ridge)
    task_type: str
    param: float  # the chosen C (logistic) or alpha (ridge)
    classes: np.ndarray | None = None

    def decision(self, X: np.ndarray) -> np.ndarray:
        Z = (np.asarray(X, dtype=np.float64) - self.mean) / self.scale
        return Z @ self.coef[:-1] + self.coef[-1]

    def predict(self, X: np.ndarray) -> np.ndarray:
        out = self.decision(X)
        if self.task_type == "regression":
            return out[:, 0]
        return self.classes[(out[:, 0] > 0).astype(int) if out.shape[1] == 1 else out.argmax(1)]


TOL, MAX_ITER = 1e-3, 200  # scikit-learn's lbfgs stopping as the previous pipeline set it (see the docstring)
_LBFGS = {"maxiter": MAX_ITER, "maxls": 50, "gtol": TOL, "ftol": 64 * np.finfo(float).eps}


class _Logistic:
    """Mean log-loss + ||coef||²/(2·C·n) of standardised X (n, d) with classes coded 0..K-1, as a
    function of the flat parameters w = (d + 1, k) for scipy: k = 1 logit (class 1 against class 0)
    for two classes, else one per class (scikit-learn's binomial / multinomial lbfgs objectives)."""

    def __init__(self, be: Backend, X, y, n_classes: int, C: float):
        xp = be.xp
        self.be, self.n, self.y = be, len(X), y
        self.X1 = xp.concatenate([X, be.asarray(np.ones((len(X), 1)))], axis=1)
        self.X1T = self.X1.T.copy() if not be.torch else self.X1.T.contiguous()
        self.rows = be.index(np.arange(len(X)))
        self.binary = n_classes == 2
        self.k = 1 if self.binary else n_classes
        self.set_C(C)

    def set_C(self, C: float) -> None:
        self.lam = 1.0 / (C * self.n)

    def _sigmoid(self, z):
        return 0.5 * (1.0 + self.be.xp.tanh(0.5 * z))  # no overflow for large |z|

    def __call__(self, w: np.ndarray) -> tuple[float, np.ndarray]:
        be, xp = self.be, self.be.xp
        W = be.asarray(w).reshape(-1, self.k)
        Z = self.X1 @ W
        coef = W[:-1]
        penalty = 0.5 * self.lam * float((coef * coef).sum())
        if self.binary:
            z, yf = Z[:, 0], self.y * 1.0
            softplus = xp.clip(z, 0.0, None) + xp.log1p(xp.exp(-xp.abs(z)))  # log(1 + e^z), stable
            loss = float((softplus - yf * z).sum()) / self.n
            R = (self._sigmoid(z) - yf)[:, None]
        else:
            top = be.amax(Z, 1)
            E = xp.exp(Z - top)
            total = E.sum(1)
            loss = float((top[:, 0] + xp.log(total)).sum() - Z[self.rows, self.y].sum()) / self.n
            R = E / total[:, None]
            R[self.rows, self.y] -= 1.0
        G = (self.X1T @ R) / self.n
        G[:-1] += self.lam * coef
        return loss + penalty, np.ascontiguousarray(be.numpy(G), dtype=np.float64).reshape(-1)

    def log_likelihood(self, w: np.ndarray, X, y) -> float:
        """Mean log-probability of the true class on (X, y), clipped at 1e-15 (the CV score)."""
        be, xp = self.be, self.be.xp
        W = be.asarray(w).reshape(-1, self.k)
        Z = X @ W[:-1] + W[-1]
        if self.binary:
            p1 = self._sigmoid(Z[:, 0])
            p = xp.where(y == 1, p1, 1.0 - p1)
        else:
            E = xp.exp(Z - be.amax(Z, 1))
            p = E[be.index(np.arange(len(X))), y] / E.sum(1)
        return float(xp.log(xp.clip(p, 1e-15, None)).mean())


def _minimise(objective: _Logistic, w0: np.ndarray, options: dict) -> np.ndarray:
    with warnings.catch_warnings(), np.errstate(over="ignore", under="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return optimize.minimize(objective, w0, method="L-BFGS-B", jac=True, options=options).x


def _fit_logistic(be: Backend, Z, y: np.ndarray, cv_folds: int, seed: int,
                  options: dict = _LBFGS) -> tuple[np.ndarray, np.ndarray, float]:
    """(classes, coef (d + 1, k), C): the C path on every stratified fold, C by summed held-out log-likelihood
    (the first of ties), then the refit on all of train from the folds' mean coefficients at that C."""
    classes, codes = np.unique(y, return_inverse=True)
    counts = np.bincount(codes)
    folds = min(cv_folds, int(counts.min()))
    if folds < 2:
        raise ValueError(f"probe needs at least 2 train examples of every class, got counts "
                         f"{dict(zip(classes.tolist(), counts.tolist()))}")
    y_all = be.index(codes)
    k = 1 if len(classes) == 2 else len(classes)
    scores = np.zeros(len(C_GRID))
    paths = []
    for train, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(codes)), codes):
        tr, te = be.index(train), be.index(held)
        objective = _Logistic(be, Z[tr], y_all[tr], len(classes), C_GRID[0])
        w = np.zeros((Z.shape[1] + 1) * k)
        path = []
        for i, C in enumerate(C_GRID):  # warm start along the path, strongest penalty first
            objective.set_C(C)
            w = _minimise(objective, w, options)
            path.append(w)
            scores[i] += objective.log_likelihood(w, Z[te], y_all[te])
        paths.append(path)
    best = int(np.argmax(scores))
    objective = _Logistic(be, Z, y_all, len(classes), C_GRID[best])
    w = _minimise(objective, np.mean([path[best] for path in paths], axis=0), options)
    return classes, w.reshape(-1, k), C_GRID[best]


def _ridge_solve(be: Backend, Z, y, alpha: float):
    """(d + 1,) ridge coefficients and intercept: centred normal equations (scikit-learn's Ridge, cholesky)."""
    xp = be.xp
    mu, y_mu = Z.mean(0), y.mean()
    Zc = Z - mu
    coef = xp.linalg.solve(Zc.T @ Zc + alpha * be.asarray(np.eye(Z.shape[1])), Zc.T @ (y - y_mu))
    return xp.concatenate([coef, (y_mu - mu @ coef).reshape(1)])


def _fit_ridge(be: Backend, Z, y: np.ndarray, cv_folds: int, seed: int) -> tuple[np.ndarray, float]:
    """(coef (d + 1, 1), alpha): alpha by mean held-out R² over KFold (the first of ties), refit on all."""
    y_all = be.asarray(np.array(y, dtype=np.float64))
    scores = np.zeros(len(ALPHA_GRID))
    for train, held in KFold(cv_folds, shuffle=True, random_state=seed).split(np.zeros(len(y))):
        tr, te = be.index(train), be.index(held)
        y_te = y_all[te]
        ss_tot = float(((y_te - y_te.mean()) ** 2).sum())
        for i, alpha in enumerate(ALPHA_GRID):
            w = _ridge_solve(be, Z[tr], y_all[tr], alpha)
            ss_res = float(((y_te - Z[te] @ w[:-1] - w[-1]) ** 2).sum())
            scores[i] += (1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0)) / cv_folds
    best = int(np.argmax(scores))
    return be.numpy(_ridge_solve(be, Z, y_all, ALPHA_GRID[best]))[:, None], ALPHA_GRID[best]


@contextlib.contextmanager
def _small_work(be: Backend):
    """One CPU thread for BLAS (and torch on the CPU): a probe's products are small, and on a shared 2-core
    machine thread barriers made them many times slower (docs/PERFORMANCE.md, "Evaluation cost")."""
    if be.torch and be.device.type != "cpu":
        yield
        return
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(before)


def fit_probe(X_train: np.ndarray, y_train: np.ndarray, task_type: str, cv_folds: int = 3, seed: int = 0,
              device=None, tol: float = TOL, max_iter: int = MAX_ITER) -> FittedProbe:
    """Standardise, then logistic regression (C by CV) or ridge (alpha by CV), on the train split only.

    device: a torch device: the objective, its gradient and the ridge solves as torch on it; None: the
    device-native evaluation's (backend.on_device), else numpy on the CPU. float64 either way, the same numbers
    (tests/test_probes.py).
    tol, max_iter: the logistic fit's L-BFGS stopping rule. The defaults are the protocol's (they define the
    tables' numbers); others serve measurements such as fitting to convergence (scripts/probe_definitions.py).
    """
    if task_type not in ("classification", "regression"):
        raise ValueError(f"task_type={task_type!r}: expected classification or regression")
    X_train = np.asarray(X_train, dtype=np.float64)
    scaler = StandardScaler().fit(X_train)
    be = Backend(device)
    Z = be.asarray(scaler.transform(X_train))
    with _small_work(be):
        if task_type == "classification":
            options = {**_LBFGS, "gtol": tol, "maxiter": max_iter}
            classes, coef, param = _fit_logistic(be, Z, np.asarray(y_train), cv_folds, seed, options)
        else:
            (coef, param), classes = _fit_ridge(be, Z, y_train, cv_folds, seed), None
    return FittedProbe(scaler.mean_.copy(), scaler.scale_.copy(), coef, task_type, float(param), classes)


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
