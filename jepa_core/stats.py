"""Statistics over dev examples: bootstrap CIs, paired bootstrap tests, Holm, seed aggregation.

A statistic is a function `stat(idx) -> float` (or a 1-D array of floats, to get several
metrics from one set of resamples) evaluated on the examples `idx`, a resample with
replacement of range(n). `stat(np.arange(n))` is the full-sample value. For metrics that are
not per-example means (uniformity, spectra), `geometry.GeometryResampler` is such a function
and documents how duplicated examples are handled.

CIs are percentile intervals of the bootstrap distribution. The paired test uses the SAME
resamples for both models, so example-level difficulty cancels out of the difference; its
p-value comes from the bootstrap standard error (`difference_p_value`).
Resamples on which a statistic is undefined (NaN, e.g. a correlation on a constant resample)
are left out, with a warning.

Recentring. Plug-in statistics that estimate a centre or a covariance (centred uniformity,
spectral metrics) shift when a resample duplicates examples: a resample has only ~63% distinct
points, and e.g. the effective rank of 1000 embeddings in 256-d drops by ~20 bootstrap sds.
A percentile interval would then not even contain the estimate. For such statistics
(`recentre=True`) the bootstrap is used for the spread only: the bootstrap distribution is
shifted so that its median equals the full-sample value before taking percentiles (and the
p-value). The estimand is then the metric of n dev embeddings, the quantity that is reported.
`geometry.GeometryResampler` says which of its metrics need it (its `recentre` attribute,
picked up automatically when recentre=None).
"""
from __future__ import annotations

import warnings
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

Stat = Callable[[np.ndarray], "float | np.ndarray"]


def resamples(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """n_boot seeded resamples (with replacement) of range(n); same seed → same resamples."""
    if n < 1 or n_boot < 1:
        raise ValueError(f"need n ≥ 1 and n_boot ≥ 1, got n={n}, n_boot={n_boot}")
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        yield rng.integers(0, n, size=n)


def _evaluate(stats: Sequence[Stat], n: int, n_boot: int, seed: int, progress: bool):
    """Full-sample values (1-D) and an (n_boot, k) array of bootstrap values, per statistic,
    and whether the statistics return plain scalars."""
    raw = [s(np.arange(n)) for s in stats]
    scalar = all(np.ndim(r) == 0 for r in raw)
    full = [np.atleast_1d(np.asarray(r, dtype=np.float64)) for r in raw]
    boot = [np.empty((n_boot, f.size)) for f in full]
    draws = resamples(n, n_boot, seed)
    # one BLAS thread: a resample does many small products, which threads only slow down
    # (measured: 40× slower on a busy 2-core machine with the default thread pool)
    with threadpool_limits(limits=1, user_api="blas"):
        for b, idx in enumerate(tqdm(draws, total=n_boot, desc="bootstrap", disable=not progress)):
            for s, out in zip(stats, boot):
                out[b] = s(idx)
    return full, boot, scalar


def _finite(boot: np.ndarray) -> np.ndarray:
    """Mask of usable resamples per column; warns when some were undefined."""
    ok = np.isfinite(boot)
    n_bad = int((~ok).sum(axis=0).max())
    if n_bad:
        warnings.warn(f"{n_bad} of {len(boot)} bootstrap resamples gave a non-finite statistic; "
                      "they are left out of the interval", RuntimeWarning, stacklevel=3)
    return ok


def _recentred(boot: np.ndarray, full: np.ndarray, recentre: np.ndarray) -> np.ndarray:
    """Shift the columns flagged in `recentre` so that their bootstrap median is the full value."""
    if not recentre.any():
        return boot
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
        shift = np.where(recentre, full - np.nanmedian(boot, axis=0), 0.0)
    return boot + shift


def _recentre_mask(recentre, stat: Stat, k: int) -> np.ndarray:
    if recentre is None:
        recentre = getattr(stat, "recentre", False)
    return np.broadcast_to(np.asarray(recentre, dtype=bool), (k,))


def _percentiles(boot: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    ok = _finite(boot)
    lo = np.full(boot.shape[1], np.nan)
    hi = np.full(boot.shape[1], np.nan)
    for k in range(boot.shape[1]):
        if ok[:, k].any():
            lo[k], hi[k] = np.quantile(boot[ok[:, k], k], [alpha / 2, 1 - alpha / 2])
    return lo, hi


def _unwrap(scalar: bool, *arrays):
    """Floats for a scalar statistic, arrays for a vector one."""
    return tuple(float(a[0]) for a in arrays) if scalar else arrays


def bootstrap_ci(stat: Stat, n: int, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                 recentre=None, progress: bool = False):
    """(value on the full sample, ci_low, ci_high): percentile bootstrap CI at level 1 − alpha.

    recentre: bool or one bool per output of stat (module docstring); None: `stat.recentre`
    if the statistic defines it, else False.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    (full,), (boot,), scalar = _evaluate([stat], n, n_boot, seed, progress)
    boot = _recentred(boot, full, _recentre_mask(recentre, stat, full.size))
    return _unwrap(scalar, full, *_percentiles(boot, alpha))


def paired_bootstrap(stat_a: Stat, stat_b: Stat, n: int, n_boot: int = 1000, seed: int = 0,
                     alpha: float = 0.05, recentre=None, progress: bool = False):
    """(diff, ci_low, ci_high, p) for diff = stat_a − stat_b on the same examples.

    Both statistics see the SAME resamples. The CI is the percentile interval of the bootstrap
    differences d*; the p-value is `difference_p_value` (bootstrap standard error, normal
    reference). recentre (None: from stat_a.recentre) shifts the differences so that their
    median is the observed difference.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    (fa, fb), (ba, bb), scalar = _evaluate([stat_a, stat_b], n, n_boot, seed, progress)
    if fa.shape != fb.shape:
        raise ValueError(f"stat_a and stat_b return different shapes: {fa.shape} vs {fb.shape}")
    d = _recentred(ba - bb, fa - fb, _recentre_mask(recentre, stat_a, fa.size))
    lo, hi = _percentiles(d, alpha)
    return _unwrap(scalar, fa - fb, lo, hi, difference_p_value(fa - fb, d))


def difference_p_value(observed, boot) -> np.ndarray:
    """Two-sided p-value of H0: difference = 0, from the bootstrap standard error of the
    difference with a normal reference, p = 2·Φ(−|observed| / sd(d*)) (Efron & Tibshirani 1993,
    §16). `observed` (k,) or scalar; `boot` (B,) or (B, k) paired bootstrap differences.

    Why not the percentile p-value 2·min(#{d* ≤ 0}, #{d* ≥ 0})/B: it cannot go below ~2/(B+1),
    so with Holm over a grid of hundreds of comparisons no difference could ever be significant
    at any affordable B. The normal reference is continuous; where a percentile CI excludes 0
    by a wide margin both agree that p is small. Resamples that gave NaN are left out.
    """
    d = np.asarray(boot, dtype=np.float64)
    d = d.reshape(len(d), -1)
    obs = np.broadcast_to(np.asarray(observed, dtype=np.float64).ravel(), (d.shape[1],))
    ok = np.isfinite(d)
    n_ok = ok.sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        se = np.nanstd(np.where(ok, d, np.nan), axis=0, ddof=1)
        z = np.abs(obs) / se
    p = 2.0 * scipy_stats.norm.sf(z)
    p = np.where(se > 0, p, np.where(obs == 0, 1.0, 0.0))  # a degenerate (constant) bootstrap
    p = np.where((n_ok > 1) & np.isfinite(obs), p, np.nan)
    return p if np.ndim(observed) else p[0] if p.size == 1 else p


def holm(pvalues) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values, in the input order; NaNs stay NaN and don't count.

    Sorted ascending p_(1) ≤ … ≤ p_(m): p̃_(k) = max_{j ≤ k} min(1, (m − j + 1) p_(j))
    (statsmodels `multipletests(method="holm")`).
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"pvalues must be 1-D, got shape {p.shape}")
    if ((p < 0) | (p > 1)).any():
        raise ValueError(f"p-values must lie in [0, 1], got {p[(p < 0) | (p > 1)][:5]}")
    out = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    order = valid[np.argsort(p[valid], kind="stable")]
    steps = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(steps)
    return out


def aggregate_seeds(df: pd.DataFrame, by: Sequence[str], value: str = "value") -> pd.DataFrame:
    """Mean, sd (ddof=1; NaN for one seed) and n_seeds of `value` per group of the `by` columns.

    When df has a `seed` column, each group must hold one row per seed; a repeated seed means
    `by` is missing a key (e.g. pooling) and would silently average different things.
    """
    by = list(by)
    missing = [c for c in by + [value] if c not in df.columns]
    if missing:
        raise KeyError(f"aggregate_seeds: columns {missing} not in the table (has {list(df.columns)})")
    groups = df.groupby(by, dropna=False, sort=True)
    if "seed" in df.columns and "seed" not in by:
        repeated = groups["seed"].agg(lambda s: s.duplicated().any())
        if repeated.any():
            first = repeated[repeated].index[0]
            raise ValueError(f"aggregate_seeds: group {first} has several rows for one seed; "
                             f"add the distinguishing column to by={by}")
    return groups[value].agg(mean="mean", sd="std", n_seeds="count").reset_index()
