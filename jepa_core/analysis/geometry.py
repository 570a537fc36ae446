"""Geometry of an embedding cloud: uniformity, alignment, anisotropy, covariance spectrum.

Every function takes X of shape (n, d) (one embedding per row) and works in float64.
Pairwise quantities are computed from one (n, n) matrix product, which is cheap for the
n ≤ 2000 dev subsamples the evaluation uses.

Conventions (docs/PROTOCOL.md §5.5):
- uniformity, alignment, anisotropy and the class-distance ratio are measured on
  L2-normalised vectors, so two encoders whose embeddings differ only in scale compare equal;
- the spectrum is that of the covariance of the centred, UNnormalised embeddings;
- a "pair" is two distinct examples (i ≠ j); means over pairs never include an example paired
  with itself.

Bootstrap: `GeometryResampler(X, labels)(idx)` evaluates the metrics on the resample
X[idx] without recomputing the pairwise matrices: a resample is a vector of counts w
(how often each example was drawn) and a pair mean becomes
    Σ_{i≠j} w_i w_j M_ij / Σ_{i≠j} w_i w_j.
Pairs made of two copies of the same example are excluded, exactly like the pair (i, i) in
the full-sample statistic. Without that rule every duplicate adds a zero-distance pair and
drags the resampled uniformity towards 0 (about 1/n of all pairs); with it the bootstrap
distribution is centred on the full-sample value, so percentile CIs stay honest.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np

from jepa_core.analysis.backend import Backend

_EPS = np.finfo(np.float64).eps


def _as_matrix(X, name: str = "X", min_rows: int = 2) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, d), got shape {X.shape}")
    if X.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows, got {X.shape[0]}")
    if not np.isfinite(X).all():
        bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
        raise ValueError(f"{name} has non-finite values in rows {bad[:10].tolist()}")
    return X


def _as_labels(labels, n: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match X, got {labels.shape}")
    return labels


def l2_normalise(X) -> np.ndarray:
    """Rows scaled to unit Euclidean norm. A zero row has no direction: it is an error."""
    X = _as_matrix(X, min_rows=1)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    zero = np.flatnonzero(norms[:, 0] <= _EPS)
    if zero.size:
        raise ValueError(f"cannot L2-normalise zero vectors (rows {zero[:10].tolist()})")
    return X / norms


# ---------------------------------------------------------------- pair means under resampling

def _counts(idx, n: int) -> np.ndarray:
    """How often each of the n examples occurs in the (re)sample idx (None: each once)."""
    if idx is None:
        return np.ones(n)
    idx = np.asarray(idx)
    if idx.ndim != 1 or idx.size == 0 or idx.min() < 0 or idx.max() >= n:
        raise ValueError(f"idx must be a non-empty 1-D array of indices in [0, {n}), got {idx!r:.80}")
    return np.bincount(idx, minlength=n).astype(np.float64)


def _pair_sum(M: np.ndarray, w: np.ndarray) -> float:
    """Σ_{i≠j} w_i w_j M_ij: pairs of distinct examples, weighted by resample counts."""
    return float(w @ M @ w - (w * w) @ np.diag(M))


def pair_mean(M, idx=None) -> float:
    """Mean of the symmetric matrix M over pairs of distinct examples of the (re)sample idx."""
    M = np.asarray(M, dtype=np.float64)
    w = _counts(idx, M.shape[0])
    n_pairs = w.sum() ** 2 - (w * w).sum()
    if n_pairs <= 0:
        raise ValueError("the sample has fewer than two distinct examples: no pairs")
    return _pair_sum(M, w) / n_pairs


# ---------------------------------------------------------------- uniformity, alignment, anisotropy

def sqdist_normalised(X, centre: bool = False) -> np.ndarray:
    """(n, n) squared distances between the L2-normalised rows (after centring if asked)."""
    X = _as_matrix(X)
    if centre:
        X = X - X.mean(axis=0)
    Z = l2_normalise(X)
    return np.clip(2.0 - 2.0 * (Z @ Z.T), 0.0, 4.0)  # ‖a−b‖² = 2 − 2 a·b for unit vectors


def uniformity_from_sqdist(D, idx=None, t: float = 2.0) -> float:
    """log mean_{pairs} exp(−t·D_ij), D a squared-distance matrix; idx: a resample of rows."""
    return float(np.log(pair_mean(np.exp(-t * np.asarray(D, dtype=np.float64)), idx)))


def uniformity(X, t: float = 2.0, centre: bool = False) -> float:
    """Wang & Isola (2020) uniformity: log E_{i<j} exp(−t‖x̂_i − x̂_j‖²), x̂ unit vectors.

    Lower is more uniform (bounded below by about −4 for t=2 in high dimension); 0 means all
    points coincide. centre=True subtracts the mean embedding before normalising, which removes
    the common direction that makes raw transformer embeddings look non-uniform (docs/PROTOCOL.md, defect 7:
    the paper only reported the uncentred version).
    """
    return uniformity_from_sqdist(sqdist_normalised(X, centre), t=t)


def alignment(X, Y, alpha: float = 2.0) -> float:
    """Wang & Isola alignment: mean ‖x̂_i − ŷ_i‖^alpha over positive pairs (row i of X with row i of Y).

    alpha = 2 as in Wang & Isola 2020; the paper's public code used ‖x − y‖⁴ (docs/PROTOCOL.md, defect 7).
    """
    X, Y = _as_matrix(X, "X", 1), _as_matrix(Y, "Y", 1)
    if X.shape != Y.shape:
        raise ValueError(f"X and Y must be paired row by row, got shapes {X.shape} and {Y.shape}")
    sq = ((l2_normalise(X) - l2_normalise(Y)) ** 2).sum(axis=1)
    return float(np.mean(sq ** (alpha / 2.0)))


def positive_pairs_from_labels(labels, max_pairs: int = 10_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded uniform sample (without replacement) of same-label pairs (i, j), i < j.

    All pairs are drawn from when there are at most max_pairs. The pair list is never
    materialised: a pair number p inside a class of size k is decoded to its (a, b) position
    in the class's upper triangle, so this stays cheap for large n.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    members = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    members = [m for m in members if m.size >= 2]
    if not members:
        raise ValueError("no label occurs twice: there are no same-label pairs")
    sizes = np.array([m.size for m in members], dtype=np.int64)
    per_class = sizes * (sizes - 1) // 2
    offsets = np.concatenate([[0], np.cumsum(per_class)])
    total = int(offsets[-1])
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(total, size=min(max_pairs, total), replace=False))
    cls = np.searchsorted(offsets, chosen, side="right") - 1
    p, k = chosen - offsets[cls], sizes[cls]
    # row a of the strict upper triangle of a k×k matrix starts at a·k − a(a+1)/2
    a = (k - 2 - np.floor(np.sqrt(-8 * p + 4 * k * (k - 1) - 7) / 2 - 0.5)).astype(np.int64)
    b = p + a + 1 - k * (k - 1) // 2 + (k - a) * (k - a - 1) // 2
    i = np.array([members[c][x] for c, x in zip(cls, a)], dtype=np.int64)
    j = np.array([members[c][x] for c, x in zip(cls, b)], dtype=np.int64)
    return i, j


def anisotropy(X) -> float:
    """Mean cosine similarity over pairs i ≠ j (Ethayarajh 2019): 0 isotropic, 1 all one direction."""
    Z = l2_normalise(_as_matrix(X))
    return pair_mean(Z @ Z.T)


def mean_direction(X) -> float:
    """Squared norm of the mean of the L2-normalised embeddings, ‖mean_i x_i/‖x_i‖‖² in [0, 1]: 0 when the
    directions cancel, 1 when all point one way. The mean-direction term of the uncentred uniformity:
    shifting a cloud along one direction raises it and lowers `uniformity` while `uniformity_centred`
    (mean removed first) stays; ‖mean‖² = 1/n + (1 − 1/n)·anisotropy, with the self-pairs included."""
    Z = l2_normalise(_as_matrix(X))
    return float(np.sum(Z.mean(axis=0) ** 2))


# ---------------------------------------------------------------- covariance spectrum

def _weighted_spectrum(X: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Eigenvalues (descending) of the covariance of the sample where row i occurs w_i times."""
    keep = w > 0
    X, w = X[keep], w[keep]
    m = w.sum()
    A = (X - (w @ X) / m) * np.sqrt(w)[:, None]  # A^T A = scatter of the resample
    # eigenvalues of the smaller Gram matrix: same non-zero spectrum, faster than an SVD
    G = A.T @ A if A.shape[1] <= A.shape[0] else A @ A.T
    lam = np.linalg.eigvalsh(G)[::-1] / max(m - 1, 1)
    # eigvalsh noise is ~eps·λ_max: treat anything below that scale as an exact zero
    lam[lam < lam[0] * max(A.shape) * _EPS] = 0.0
    return lam


def spectrum(X) -> np.ndarray:
    """Eigenvalues of the covariance of X (rows centred), descending, length min(n, d)."""
    X = _as_matrix(X)
    return _weighted_spectrum(X, np.ones(X.shape[0]))


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def _metrics_from_spectrum(lam: np.ndarray, n: int, d: int) -> dict[str, float]:
    total = lam.sum()
    if total <= 0:
        raise ValueError("all embeddings are identical: the covariance spectrum is zero")
    max_rank = min(n - 1, d)  # the most non-zero eigenvalues centred data can have
    sigma = np.sqrt(lam)  # singular values of the centred matrix, up to a common factor
    frac = np.cumsum(lam) / total
    return {
        # normalised by the largest achievable entropy, so isotropic data gives 1 for any n, d
        "spectral_entropy": float(_entropy(lam / total) / np.log(max_rank)) if max_rank > 1 else 0.0,
        # RankMe (Garrido et al. 2023): exp entropy of the normalised singular values
        "effective_rank": float(np.exp(_entropy(sigma / sigma.sum()))),
        "stable_rank": float(total / lam[0]),  # ‖A‖_F² / ‖A‖_2²
        "rank90": int(np.searchsorted(frac, 0.9 - 1e-9) + 1),  # components for 90% of the variance
    }


def spectrum_metrics(X) -> dict[str, float]:
    """spectral_entropy ∈ [0, 1], effective_rank (RankMe), stable_rank, rank90 of centred X."""
    X = _as_matrix(X)
    return _metrics_from_spectrum(spectrum(X), *X.shape)


# ---------------------------------------------------------------- classes

def _masked_pair_mean(M: np.ndarray, mask: np.ndarray, w: np.ndarray) -> float:
    """Mean of M over the pairs of distinct examples where mask is 1 (NaN when there are none)."""
    n_pairs = _pair_sum(mask, w)
    return _pair_sum(M * mask, w) / n_pairs if n_pairs > 0 else float("nan")


def _same_label(labels: np.ndarray) -> np.ndarray:
    return (labels[:, None] == labels[None, :]).astype(np.float64)


def class_distance_ratio(X, labels) -> float:
    """Mean intra-class / mean inter-class Euclidean distance between L2-normalised embeddings.

    < 1: classes form clusters; ≈ 1: labels unrelated to the geometry. Normalised vectors, as for
    uniformity and alignment, so the ratio ignores the embedding scale.
    """
    X = _as_matrix(X)
    labels = _as_labels(labels, X.shape[0])
    same, w = _same_label(labels), np.ones(X.shape[0])
    dist = np.sqrt(sqdist_normalised(X))
    ratio = _masked_pair_mean(dist, same, w) / _masked_pair_mean(dist, 1.0 - same, w)
    if np.isnan(ratio):
        raise ValueError("class_distance_ratio needs at least two classes and a class with two members")
    return ratio


# ---------------------------------------------------------------- all metrics at once

LABEL_FREE = ("uniformity", "uniformity_centred", "anisotropy", "mean_direction",
              "spectral_entropy", "effective_rank", "stable_rank", "rank90")


# metrics computed one resample at a time (they depend on the resample's own mean)
PER_RESAMPLE = ("uniformity_centred", "spectral_entropy", "effective_rank", "stable_rank", "rank90")

# plug-in metrics whose bootstrap distribution is shifted by duplicated examples (see stats.py); the
# squared norm of a resampled mean is biased up by tr(Cov)/n, so mean_direction is recentred too
RECENTRED = ("mean_direction", "uniformity_centred", "spectral_entropy", "effective_rank", "stable_rank", "rank90")

# Integer-valued metrics: reported with a CI but not tested. Their paired bootstrap differences take
# a handful of integer values, often a single one; a normal-reference p from such a distribution is
# meaningless (a constant non-zero bootstrap even gives p = 0). The continuous spectral metrics
# (effective_rank, stable_rank, spectral_entropy) carry the test instead.
UNTESTED = ("rank90",)


def label_free_metrics(X, t: float = 2.0) -> dict[str, float]:
    """The metrics that need no labels (also used on held-out Wikipedia sentences)."""
    X = _as_matrix(X)
    return {
        "uniformity": uniformity(X, t),
        "uniformity_centred": uniformity(X, t, centre=True),
        "anisotropy": anisotropy(X),
        "mean_direction": mean_direction(X),
        **spectrum_metrics(X),
    }


def geometry_metrics(X, labels=None, pairs: tuple[Sequence[int], Sequence[int]] | None = None,
                     t: float = 2.0, alpha: float = 2.0) -> dict[str, float]:
    """label_free_metrics plus alignment and class_distance_ratio where labels/pairs allow.

    alignment: over the given positive pairs (i, j) of rows of X (e.g. STS-B sentence pairs
    scoring ≥ 4, with both sentences stacked in X); else over ALL same-label pairs — exact, the
    expectation of alignment on `positive_pairs_from_labels` samples. Needs ≥ 2 classes for the
    class-distance ratio (regression labels: pass labels=None).
    """
    X = _as_matrix(X)
    out = label_free_metrics(X, t)
    if pairs is not None:
        i, j = (np.asarray(p, dtype=np.int64) for p in pairs)
        out["alignment"] = alignment(X[i], X[j], alpha)
    if labels is not None:
        labels = _as_labels(labels, X.shape[0])
        if pairs is None:
            sq = sqdist_normalised(X) ** (alpha / 2)
            out["alignment"] = _masked_pair_mean(sq, _same_label(labels), np.ones(len(X)))
        out["class_distance_ratio"] = class_distance_ratio(X, labels)
    return out


class GeometryResampler:
    """The geometry metrics of X[idx] for many bootstrap resamples idx, reusing pairwise matrices.

        res = GeometryResampler(X, labels)      # labels and metrics optional
        res.names                               # metric names, in output order
        res(idx) -> np.ndarray                  # values on X[idx]; res(None) = full sample
        res.resamples(idx_matrix, workers=1)    # (B, len(names)): all resamples of a (B, m) matrix

    Matches `geometry_metrics(X, labels)` on the full sample (pairs=None). How duplicates are
    handled: pair metrics skip pairs of two copies of one example (module docstring); the
    centred uniformity re-centres on each resample's own mean (the mean's variability is part of
    the statistic's); the spectrum is that of the resample's covariance. Duplicates shrink the
    number of distinct points (≈ 63% of n), which shifts these plug-in metrics by many
    bootstrap sds (n=1000, d=256: effective rank −20 sd, centred uniformity −14 sd; the pair
    metrics < 0.2 sd). `recentre` flags them, and `stats` then uses their bootstrap
    distribution for the spread only (see jepa_core/analysis/stats.py).
    Cost per resample with `resamples` at n=872, d=128 (one BLAS thread, CPU time): all pair
    metrics together ~0.5 ms, centred uniformity ~2.8 ms, spectrum ~1.9 ms (docs/PERFORMANCE.md,
    "Evaluation cost"); pass `metrics` to compute only some.
    Memory: a few (n, n) float64 matrices (8 MB each at n=1000).
    """

    def __init__(self, X, labels=None, t: float = 2.0, alpha: float = 2.0,
                 metrics: Sequence[str] | None = None, device=None):
        self.X = _as_matrix(X)
        self.t = t
        self.be = Backend(device)
        n = self.X.shape[0]
        available = list(LABEL_FREE) + (["alignment", "class_distance_ratio"] if labels is not None else [])
        self.names = tuple(metrics) if metrics is not None else tuple(available)
        self.recentre = np.array([m in RECENTRED for m in self.names])
        unknown = [m for m in self.names if m not in available]
        if unknown:
            raise ValueError(f"unknown metrics {unknown} (available with these inputs: {available})")
        be, xp = self.be, self.be.xp
        Z = be.asarray(l2_normalise(self.X))
        self.Z = Z  # mean_direction: ‖w·Z / Σw‖² per resample, one (B, n) x (n, d) product
        cos = Z @ Z.T
        sqdist = xp.clip(2.0 - 2.0 * cos, 0.0, 4.0)
        # each pair metric is Σ_{i≠j} w_i w_j M_ij over one precomputed (n, n) matrix M,
        # divided by a pair count that the class sizes give without another matrix
        pair = {}
        if "uniformity" in self.names:
            pair["uniformity"] = xp.exp(-t * sqdist)
        if "anisotropy" in self.names:
            pair["anisotropy"] = cos
        if any(m in self.names for m in PER_RESAMPLE):
            # centred once on the full-sample mean: a resample's own centre is then a small shift
            self.X0 = be.asarray(self.X - self.X.mean(axis=0))
        if "uniformity_centred" in self.names:
            self.gram = self.X0 @ self.X0.T  # re-centring a resample needs nothing else
        if labels is not None:
            labels = _as_labels(labels, n)
            self.codes = np.unique(labels, return_inverse=True)[1].ravel()
            same = be.asarray(_same_label(labels))
            if "alignment" in self.names:
                pair["alignment"] = sqdist ** (alpha / 2) * same
            if "class_distance_ratio" in self.names:
                dist = xp.sqrt(sqdist)
                pair["distance"] = dist
                pair["intra_distance"] = dist * same
            self._onehot = be.asarray(np.eye(self.codes.max() + 1)[self.codes])  # (n, classes)
        self._pair_names = tuple(pair)
        if pair:  # one (n, n * n_matrices) block, so that all pair sums come from one matrix product
            self._stacked = xp.concatenate(list(pair.values()), axis=1)
            self._diagonals = xp.stack([xp.diagonal(M) for M in pair.values()], axis=1)

    def _uniformity_centred(self, W, keep, rows: int = 64):
        """Centred uniformity of each resample: W (B, n) counts, `keep` the examples any of them drew; from
        the Gram of the (full-sample centred) embeddings alone.

        cos_ij = (G_ij − u_i − u_j)·r_i·r_j with c the resample mean, u_i = x_i·c − c·c/2 and
        r_i = 1/‖x_i − c‖. Only pairs i < j are exponentiated (the matrix is symmetric), in
        blocks of `rows` rows small enough to stay in cache: half the exp calls of the full matrix.
        """
        xp = self.be.xp
        m = W.sum(1)
        proj = ((W @ self.gram) / m[:, None])[:, keep]  # x_i · c
        Wk = W[:, keep]
        u = proj - 0.5 * ((Wk * proj).sum(1) / m)[:, None]
        sq_norm = xp.diagonal(self.gram)[keep][None, :] - 2.0 * u  # ‖x_i − c‖² = G_ii − 2u_i
        # exp(−t‖a−b‖²) = exp(−2t)·exp(2t·cos) for unit vectors; √(2t) folded into both norms
        scale = xp.sqrt(2.0 * self.t / xp.clip(sq_norm, _EPS, None))
        total = 0.0  # Σ_{i≠j} w_i w_j exp(2t·cos_ij) = Σ over row blocks of 2·Σ_{i in block, j > i}
        k = len(keep)
        for r0 in range(0, k, rows):
            r1 = min(r0 + rows, k)
            E = self.be.take2(self.gram, keep[r0:r1], keep[r0:])[None] - u[:, r0:r1, None]
            E -= u[:, None, r0:]
            E *= scale[:, r0:r1, None]
            E *= scale[:, None, r0:]
            E = xp.exp(E)
            E[:, :, :r1 - r0] = xp.triu(E[:, :, :r1 - r0], 1)  # the square block: pairs j > i only
            total = total + 2.0 * (Wk[:, None, r0:r1] @ E @ Wk[:, r0:, None])[:, 0, 0]
        return xp.log(total / (m * m - (W * W).sum(1))) - 2.0 * self.t

    def _spectra(self, W, keep):
        """Covariance eigenvalues (descending) of each resample: (B, min(k, d)); eigvalsh of the d x d scatter
        or, with fewer examples than dimensions, of the k x k Gram of the centred, count-weighted rows."""
        xp = self.be.xp
        A = self.X0[keep]
        m = W.sum(1)
        c = (W @ A) / m[:, None]  # the resample mean (of the centred embeddings)
        k, d = A.shape
        if d <= k and len(W) == 1:  # the CPU path: one resample, one 2-D product
            S = ((A.T * W[0]) @ A - m[0] * (c[0][:, None] * c[0][None, :]))[None]
        elif d <= k:
            S = (A.T[None] * W[:, None, :]) @ A[None] - m[:, None, None] * (c[:, :, None] * c[:, None, :])
        else:
            B = (A[None] - c[:, None, :]) * xp.sqrt(W)[:, :, None]
            S = B @ xp.swapaxes(B, 1, 2)
        lam = self.be.flip(xp.linalg.eigvalsh(S)) / xp.clip(m - 1, 1.0, None)[:, None]
        # eigvalsh noise is ~eps·λ_max: treat anything below that scale as an exact zero
        size = xp.clip((W > 0).sum(1) * 1.0, float(d), None)  # max(drawn examples, d), as for one resample
        return xp.where(lam < lam[:, :1] * size[:, None] * _EPS, 0.0 * lam, lam)

    def _per_resample(self, W) -> dict:
        """The metrics that need each resample's own centring (centred uniformity, the spectrum), for the
        counts W (B, n): (B,) arrays."""
        be = self.be
        keep = be.nonzero((W > 0).sum(0) > 0)  # the examples drawn by any of these resamples
        values = {}
        if "uniformity_centred" in self.names:
            values["uniformity_centred"] = self._uniformity_centred(W, keep)
        if any(m in self.names for m in PER_RESAMPLE[1:]):
            values.update(_batched_spectrum_metrics(be.xp, self._spectra(W[:, keep], keep), W.sum(1),
                                                    self.X.shape[1]))
        return values

    def __call__(self, idx=None) -> np.ndarray:
        """Metric values (in `names` order) on the resample X[idx]; idx=None: the full sample."""
        w = _counts(idx, self.X.shape[0])
        return self._evaluate(w[None, :])[0]

    def resamples(self, idx, workers: int = 1) -> np.ndarray:
        """(B, len(names)) metric values, row b on the resample X[idx[b]]; idx is (B, m) row indices.

        Same values as stacking self(idx[b]) (tests/test_geometry.py). The pair sums of a block of
        resamples are one (B, n) x (n, n·matrices) product instead of B matrix-vector products each;
        centred uniformity and the spectrum depend on each resample's own mean: on the CPU (numpy) one
        resample at a time, on `workers` threads (numpy releases the GIL inside BLAS, LAPACK and ufunc
        loops, so threads run them in parallel; each does the same arithmetic as workers=1); on a GPU
        (torch) `Backend.per_block` resamples at once (batched products and eigvalsh). device: as
        analysis/backend.py (None: the device-native evaluation's, else numpy on the CPU).
        """
        idx = np.asarray(idx)
        n = self.X.shape[0]
        if idx.ndim != 2 or idx.shape[1] == 0 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"idx must be a (B, m) integer array of row indices, got {idx.dtype} {idx.shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"idx has row indices outside [0, {n})")
        offsets = np.arange(idx.shape[0])[:, None] * n  # counts of every resample from one bincount
        W = np.bincount((idx + offsets).ravel(), minlength=idx.shape[0] * n).reshape(-1, n).astype(np.float64)
        block = 256  # bounds the (block, n * n_matrices) product to ~50 MB at n = 1000
        return np.concatenate([self._evaluate(W[b:b + block], workers) for b in range(0, len(W), block)]) \
            if len(W) else np.empty((0, len(self.names)))

    def _evaluate(self, W: np.ndarray, workers: int = 1) -> np.ndarray:
        """Metric values for each row w of the count matrix W (B, n)."""
        be, xp = self.be, self.be.xp
        W = be.asarray(W)
        self_pairs = (W * W).sum(1)  # copies of one example paired with each other
        n_pairs = W.sum(1) ** 2 - self_pairs
        values: dict = {}
        sums: dict = {}
        if self._pair_names:
            # Σ_{i≠j} w_i w_j M_ij for every pair matrix M at once: (W M) ⊙ W summed, minus the diagonal
            WM = (W @ self._stacked).reshape(len(W), len(self._pair_names), -1)
            sums = dict(zip(self._pair_names, xp.einsum("bmn,bn->mb", WM, W) - ((W * W) @ self._diagonals).T))
        with np.errstate(divide="ignore", invalid="ignore"):  # resamples without pairs: NaN, set below
            if "uniformity" in sums:
                values["uniformity"] = xp.log(sums["uniformity"] / n_pairs)
            if "anisotropy" in sums:
                values["anisotropy"] = sums["anisotropy"] / n_pairs
            if "mean_direction" in self.names:
                values["mean_direction"] = ((W @ self.Z) ** 2).sum(1) / W.sum(1) ** 2
            if hasattr(self, "codes"):  # no same/different-label pair: NaN
                n_same = ((W @ self._onehot) ** 2).sum(1) - self_pairs
                if "alignment" in sums:
                    values["alignment"] = sums["alignment"] / n_same
                if "distance" in sums:
                    intra = sums["intra_distance"]
                    inter = (sums["distance"] - intra) / (n_pairs - n_same)
                    values["class_distance_ratio"] = (intra / n_same) / inter
            n_pairs = be.numpy(n_pairs)
            out = np.full((len(W), len(self.names)), np.nan)
            for k, name in enumerate(self.names):
                if name in values:
                    out[:, k] = be.numpy(values[name])
            columns = [k for k, name in enumerate(self.names) if name in PER_RESAMPLE]
            rows = np.flatnonzero(n_pairs > 0)
            if columns and rows.size:
                size = be.per_block
                blocks = [W[be.index(rows[b:b + size])] for b in range(0, len(rows), size)]
                if workers > 1 and not be.torch:
                    with ThreadPoolExecutor(workers) as pool:
                        per = list(pool.map(self._per_resample, blocks))
                else:
                    per = [self._per_resample(block) for block in blocks]
                for k in columns:
                    out[rows, k] = np.concatenate([be.numpy(v[self.names[k]]) for v in per])
        out[n_pairs <= 0] = np.nan
        return out


def _batched_spectrum_metrics(xp, lam, m, d: int) -> dict:
    """_metrics_from_spectrum for a (B, r) stack of descending spectra of resamples of m[b] examples."""
    total = lam.sum(1)
    total = xp.where(total > 0, total, total * np.nan)  # an all-zero spectrum: NaN (identical embeddings)
    max_rank = xp.clip(xp.minimum(m - 1, 0 * m + d), 1.0, None)

    def entropy(p):
        return -(p * xp.log(xp.where(p > 0, p, 1.0 + 0 * p))).sum(1)

    sigma = xp.sqrt(lam)
    frac = xp.cumsum(lam, 1) / total[:, None]
    return {
        "spectral_entropy": xp.where(max_rank > 1, entropy(lam / total[:, None]) / xp.log(max_rank), 0 * total),
        "effective_rank": xp.exp(entropy(sigma / sigma.sum(1)[:, None])),
        "stable_rank": total / lam[:, 0],
        "rank90": (frac < 0.9 - 1e-9).sum(1) + 1.0 + 0 * total,
    }
