"""Statistics of the tables: bootstrap CIs over dev examples, paired differences, seed-level
differences over pre-training seeds, Holm, seed aggregation.

Everything here works on ARRAYS: a value measured on the n dev examples and its bootstrap
distribution `boot[b]`, the same statistic on resample b of the dev examples (`resamples`).
`evaluate` computes those arrays (per-example means, task metrics, `geometry.GeometryResampler`)
with the SAME resamples for every model and seed of a task, so two arrays of one task are paired
row by row; this module turns them into the numbers of metrics.csv and differences.csv. There is
no second implementation: the coverage tests run through these functions via `evaluate`.

CIs are percentile intervals of the bootstrap distribution. The p-value of a paired difference
comes from the bootstrap standard error (`difference_p_value`). Resamples on which a statistic is
undefined (NaN, e.g. a correlation on a constant resample) are left out.

Recentring (ONE rule, `recentred`). Plug-in statistics that estimate a centre or a covariance
(centred uniformity, spectral metrics; `geometry.RECENTRED`) shift when a resample duplicates
examples: a resample has only ~63% distinct points, and e.g. the effective rank of 1000
embeddings in 256-d drops by ~20 bootstrap sds. A percentile interval would then not even
contain the estimate. For such statistics the bootstrap is used for the spread only: the
distribution is shifted so that its MEDIAN equals the full-sample value, then percentiles are
taken. Why the median and not the mean: the median of the shifted distribution IS the estimate,
so the equal-tailed interval always contains it (with the mean, a skewed distribution, e.g. of an
integer-valued rank, can leave the estimate outside), and a few extreme resamples do not move it.
The estimand is then the metric of n dev embeddings, the quantity that is reported (its
expectation at this n, not the population value of the metric, which a plug-in spectrum
statistic misses by its small-sample bias). The p-value depends on the spread only, so recentring
does not change it.

Seed-level differences (`seed_level_difference`): see its docstring.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

ALPHA = 0.05  # every interval in the tables is a 95% interval
# differences.csv `level`: one pre-training seed (example-level uncertainty only) / all seeds
# (seed-level: `seed_level_difference`, the rows the verdicts rest on)
PER_SEED, POOLED = "seed", "pooled"


def resamples(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) seeded resamples (with replacement) of range(n); same seed → same resamples."""
    if n < 1 or n_boot < 1:
        raise ValueError(f"need n ≥ 1 and n_boot ≥ 1, got n={n}, n_boot={n_boot}")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def _as_boot(boot) -> np.ndarray:
    boot = np.asarray(boot, dtype=np.float64)
    if boot.ndim != 1:
        raise ValueError(f"a bootstrap distribution is 1-D (one value per resample), got shape {boot.shape}")
    return boot


def recentred(boot, value: float) -> np.ndarray:
    """`boot` shifted so that its median (over finite resamples) is `value`: the recentring rule
    (module docstring). All-NaN stays all-NaN."""
    boot = _as_boot(boot)
    ok = np.isfinite(boot)
    if not ok.any() or not np.isfinite(value):
        return boot
    return boot + (value - np.median(boot[ok]))


def percentile_ci(boot, alpha: float = ALPHA) -> tuple[float, float]:
    """Equal-tailed percentile interval (alpha/2, 1 − alpha/2) of the finite resamples; NaN if none."""
    _check_alpha(alpha)
    boot = _as_boot(boot)
    ok = np.isfinite(boot)
    if not ok.any():
        return np.nan, np.nan
    lo, hi = np.quantile(boot[ok], [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_ci(value: float, boot, alpha: float = ALPHA, recentre: bool = False) -> tuple[float, float]:
    """(ci_low, ci_high) of a value measured on the dev examples, from its bootstrap distribution;
    recentre: the statistic is a shifted plug-in (module docstring)."""
    boot = recentred(boot, value) if recentre else _as_boot(boot)
    return percentile_ci(boot, alpha)


def bootstrap_se(boot) -> float:
    """Standard deviation (ddof=1) of the finite resamples: the bootstrap standard error; NaN if < 2."""
    boot = _as_boot(boot)
    ok = boot[np.isfinite(boot)]
    return float(ok.std(ddof=1)) if ok.size > 1 else np.nan


def difference_p_value(observed: float, boot) -> float:
    """Two-sided p-value of H0: difference = 0, from the bootstrap standard error of the
    difference with a normal reference, p = 2·Φ(−|observed| / sd(d*)) (Efron & Tibshirani 1993,
    §16). `boot`: paired bootstrap differences d* (NaN resamples left out).

    Why not the percentile p-value 2·min(#{d* ≤ 0}, #{d* ≥ 0})/B: it cannot go below ~2/(B+1),
    so with Holm over a grid of hundreds of comparisons no difference could ever be significant
    at any affordable B. The normal reference is continuous; where a percentile CI excludes 0
    by a wide margin both agree that p is small.
    """
    se = bootstrap_se(boot)
    if not (np.isfinite(se) and np.isfinite(observed)):
        return np.nan
    if se == 0:  # a degenerate (constant) bootstrap
        return 1.0 if observed == 0 else 0.0
    return float(2.0 * scipy_stats.norm.sf(abs(observed) / se))


@dataclass(frozen=True)
class Difference:
    """a − b with a 95% interval and a two-sided p-value (see `paired_difference`,
    `seed_level_difference`)."""
    diff: float
    ci_low: float
    ci_high: float
    p: float
    se_examples: float  # bootstrap SE over dev examples (of the seed mean, for a seed-level difference)
    sd_seeds: float = np.nan  # sd (ddof=1) of the per-seed differences; NaN for one seed
    n_seeds: int = 1
    se: float = np.nan  # the SE the interval and p use: sqrt(s²/S + SE_ex²) at seed level, SE_ex per seed


def paired_difference(value_a: float, boot_a, value_b: float, boot_b, alpha: float = ALPHA,
                      recentre: bool = False) -> Difference:
    """a − b on the same dev examples: boot_a[k] and boot_b[k] come from the SAME resample k, so
    example-level difficulty cancels out of the bootstrap differences d* = boot_a − boot_b.
    CI: percentile interval of d* (recentred on the observed difference if `recentre`); p:
    `difference_p_value`."""
    boot_a, boot_b = _as_boot(boot_a), _as_boot(boot_b)
    if boot_a.shape != boot_b.shape:
        raise ValueError(f"paired bootstrap distributions must come from the same resamples, got "
                         f"{boot_a.size} and {boot_b.size} resamples")
    diff = value_a - value_b
    d = boot_a - boot_b
    lo, hi = bootstrap_ci(diff, d, alpha, recentre)
    se = bootstrap_se(d)
    return Difference(diff, lo, hi, difference_p_value(diff, d), se, se=se)


def seed_level_difference(diffs, boot_diffs, alpha: float = ALPHA) -> Difference:
    """The difference a − b over pre-training seeds AND dev examples, from per-seed paired differences.

    diffs: (S,) the observed difference d_s of seed s (seed s of a against seed s of b: within a
    seed both objectives start from the same encoder and see the same MLM masks); boot_diffs:
    (B, S) their paired bootstrap differences, row k from the same resample k of the dev examples
    for every seed (evaluate shares the resamples of a task across models and seeds).

    Estimate: d̄ = mean_s d_s. Interval: d̄ ± t_{S−1, 1−α/2} · sqrt(s²/S + SE_ex²), p = 2·P(T_{S−1} >
    |d̄| / that SE), where s is the sd (ddof=1) of the d_s and SE_ex the bootstrap SE of the seed mean
    Σ_s d*_s / S over the joint resamples.

    Why this design. The claim is about the objectives, not about one pre-training run, so both
    sources of variation count: which seed was drawn and which dev examples were drawn. s²/S
    measures the first (it also contains the part of the example noise that differs between
    seeds); SE_ex² adds the example noise that all seeds SHARE (the dev set is the same for every
    seed, so it does not show up in s); counting the seed-specific example noise twice makes the
    interval slightly conservative, never liberal. The t quantile with S − 1 degrees of freedom
    accounts for s being estimated from S values (t_{2, 0.975} = 4.30 for 3 seeds).
    Measured coverage of the nominal 95% with 3 seeds (simulated per-example differences with a
    known seed sd, tests/test_stats.py): 0.96–0.98 when the seed variance dominates, up to 1.000
    when the example noise dominates (conservative: the t quantile then overstates a part that the
    bootstrap knows well). Rejected alternatives, same simulations: Welch–Satterthwaite degrees of
    freedom (narrower when the examples dominate) covered only 0.91–0.92 when the seeds dominate,
    because a small s by chance also raises the degrees of freedom; a two-level bootstrap (resample
    seeds, then examples) covered 0.44–0.69: 3 seeds give a resampled mean only 10 distinct values.
    Recentring plays no role here: the estimate is the mean of the full-sample differences and the
    SEs do not depend on shifts.

    With S = 1 there is no seed-level interval (s is undefined): ci and p are NaN; the single
    seed's example-level result is not seed-level evidence. Resamples on which any seed's
    difference is undefined are left out of SE_ex.
    """
    _check_alpha(alpha)
    d = np.asarray(diffs, dtype=np.float64).ravel()
    boot = np.asarray(boot_diffs, dtype=np.float64)
    if boot.ndim != 2 or boot.shape[1] != d.size:
        raise ValueError(f"boot_diffs must be (n_boot, {d.size}) for {d.size} seeds, got shape {boot.shape}")
    n_seeds = d.size
    if n_seeds == 0 or not np.isfinite(d).all():
        return Difference(np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, n_seeds)
    mean = float(d.mean())
    se_examples = bootstrap_se(np.where(np.isfinite(boot).all(axis=1), boot.mean(axis=1), np.nan))
    if n_seeds < 2:
        return Difference(mean, np.nan, np.nan, np.nan, se_examples, np.nan, n_seeds)
    sd_seeds = float(d.std(ddof=1))
    se = float(np.sqrt(sd_seeds ** 2 / n_seeds + (se_examples if np.isfinite(se_examples) else 0.0) ** 2))
    df = n_seeds - 1
    if se == 0:  # identical differences on every seed and resample
        return Difference(mean, mean, mean, 1.0 if mean == 0 else 0.0, se_examples, sd_seeds, n_seeds, se)
    half = float(scipy_stats.t.ppf(1 - alpha / 2, df)) * se
    p = float(2.0 * scipy_stats.t.sf(abs(mean) / se, df))
    return Difference(mean, mean - half, mean + half, p, se_examples, sd_seeds, n_seeds, se)


def seed_level_se(ci_low: float, ci_high: float, n_seeds: int, alpha: float = ALPHA) -> float:
    """The SE behind a seed-level interval of `seed_level_difference`, read back from its half-width
    (half = t_{S−1, 1−α/2}·SE): for differences tables written before the `se` column existed."""
    _check_alpha(alpha)
    if n_seeds < 2 or not (np.isfinite(ci_low) and np.isfinite(ci_high)):
        return np.nan
    return float((ci_high - ci_low) / 2.0 / scipy_stats.t.ppf(1 - alpha / 2, n_seeds - 1))


def equivalence_p_value(diff: float, se: float, df: int, margin: float) -> float:
    """The one p-value of an equivalence cell (docs/PROTOCOL.md §2a, C5), with the same SE and df as the
    seed-level interval (`seed_level_difference`: SE = sqrt(s²/S + SE_ex²), df = S − 1).

    Inside the margin (|diff| ≤ margin): the TOST p (Schuirmann 1987), the larger of the one-sided p of
    H0 diff ≤ −margin, P(T > (diff + margin)/SE), and of H0 diff ≥ +margin, P(T > (margin − diff)/SE);
    small p: equivalent. Outside: twice the one-sided p of H0 "diff lies within the margin on that side",
    2·P(T > (|diff| − margin)/SE), capped at 1; small p: not equivalent. A cell decided by this p is
    equivalent or not equivalent according to the side of the margin its estimate lies on.
    NaN when diff or SE is undefined (one seed). SE = 0 (every seed and resample gave the same value, e.g.
    two encoders whose probes predict one class: MCC 0 throughout) is no evidence of anything: p = 1, as
    `seed_level_difference` gives for identical values, so such a cell counts in the family and is never
    decided."""
    if not (np.isfinite(diff) and np.isfinite(se)) or df < 1 or margin < 0:
        return np.nan
    if se == 0:
        return 1.0
    t = scipy_stats.t
    if abs(diff) <= margin:
        return float(max(t.sf((diff + margin) / se, df), t.sf((margin - diff) / se, df)))
    return float(min(1.0, 2.0 * t.sf((abs(diff) - margin) / se, df)))


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
