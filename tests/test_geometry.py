"""Geometry metrics against closed-form answers and brute-force loops."""
import itertools

import numpy as np
import pytest
from scipy.special import i0

from jepa_core.analysis import geometry as g


def circle(n_points: int, dim: int = 2, seed: int = 0) -> np.ndarray:
    """n points at angles 2πk/N on a unit circle, rotated into `dim` dimensions."""
    theta = 2 * np.pi * np.arange(n_points) / n_points
    pts = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    basis, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, 2)))
    return pts @ basis.T


def with_spectrum(singular_values, n: int = 200, d: int | None = None, seed: int = 0) -> np.ndarray:
    """X whose centred matrix has exactly these singular values (plus an arbitrary offset)."""
    s = np.asarray(singular_values, dtype=float)
    d = d or s.size
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, s.size))
    Q, _ = np.linalg.qr(A - A.mean(axis=0))  # orthonormal columns, each with zero mean
    V, _ = np.linalg.qr(rng.normal(size=(d, s.size)))
    return (Q * s) @ V.T + rng.normal(size=d)


def brute_pairs(X, idx=None):
    """Pairs of positions (a, b), a < b, of two distinct examples of the sample X[idx]."""
    idx = np.arange(len(X)) if idx is None else np.asarray(idx)
    return [(a, b) for a, b in itertools.combinations(range(len(idx)), 2) if idx[a] != idx[b]]


# ---------------------------------------------------------------- uniformity

@pytest.mark.parametrize("n_points", [5, 12, 101])
@pytest.mark.parametrize("t", [1.0, 2.0])
def test_uniformity_of_evenly_spread_circle_points_is_the_exact_finite_mean(n_points, t):
    theta = 2 * np.pi * np.arange(1, n_points) / n_points  # lags k = 1..N−1, each N times
    exact = np.log(np.mean(np.exp(-t * (2 - 2 * np.cos(theta)))))
    assert g.uniformity(circle(n_points, dim=7), t=t) == pytest.approx(exact, abs=1e-12)
    # the circle is already centred, so centring changes nothing
    assert g.uniformity(circle(n_points), t=t, centre=True) == pytest.approx(exact, abs=1e-9)


def test_uniformity_of_a_dense_circle_reaches_the_bessel_limit():
    t, n_points = 2.0, 2000
    limit = np.exp(-2 * t) * i0(2 * t)  # (1/2π)∫exp(−t(2 − 2cos θ))dθ
    value = g.uniformity(circle(n_points), t=t)
    # the equispaced sum of a periodic analytic function is exact; only the k=0 term is missing
    assert value == pytest.approx(np.log((n_points * limit - 1) / (n_points - 1)), abs=1e-9)
    assert value == pytest.approx(np.log(limit), abs=3e-3)


def test_uniformity_of_identical_points_is_zero_and_scale_free():
    X = np.tile([[1.0, 2.0, 3.0]], (10, 1)) * np.arange(1, 11)[:, None]  # one direction, many norms
    assert g.uniformity(X) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="zero vectors"):
        g.uniformity(np.ones((5, 3)), centre=True)  # centred identical points have no direction


def test_uniformity_centre_removes_a_common_offset():
    X = circle(64, dim=5)
    shifted = X + 10 * np.ones(5)
    assert g.uniformity(shifted) > -0.1  # nearly collapsed: all point along the offset
    assert g.uniformity(shifted, centre=True) == pytest.approx(g.uniformity(X), abs=1e-9)


def test_a_shift_along_one_direction_moves_uniformity_through_the_mean_direction_only():
    """The decomposition's known answer: shifting a cloud along one direction makes the uncentred
    uniformity less negative (less uniform), leaves the centred uniformity unchanged, and raises the
    mean-direction term from 0 (directions cancel) towards 1 (all one way)."""
    X = circle(64, dim=5)
    assert g.mean_direction(X) == pytest.approx(0.0, abs=1e-12)
    assert g.mean_direction(np.outer(np.arange(1, 5), [1.0, 2.0, -1.0])) == pytest.approx(1.0)
    assert g.mean_direction(X + 0.3) == pytest.approx(1 / 64 + (1 - 1 / 64) * g.anisotropy(X + 0.3), abs=1e-12)
    e = np.random.default_rng(5).normal(size=5)
    clouds = [X + k * e / np.linalg.norm(e) for k in (0.0, 0.5, 2.0)]
    uniform = [g.uniformity(c) for c in clouds]
    centred = [g.uniformity(c, centre=True) for c in clouds]
    direction = [g.mean_direction(c) for c in clouds]
    assert uniform[0] < uniform[1] < uniform[2]
    assert centred == pytest.approx([centred[0]] * 3, abs=1e-9)
    assert direction[0] < direction[1] < direction[2] < 1.0


# ---------------------------------------------------------------- alignment, anisotropy, pairs

def test_alignment_known_values():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(20, 6))
    assert g.alignment(X, X) == pytest.approx(0.0, abs=1e-12)
    assert g.alignment(X, 3 * X) == pytest.approx(0.0, abs=1e-12)  # on normalised vectors
    assert g.alignment(X, -X) == pytest.approx(4.0)  # antipodes: ‖x̂ − (−x̂)‖² = 4
    assert g.alignment(X, -X, alpha=4.0) == pytest.approx(16.0)  # the paper's exponent
    E = np.eye(6)
    assert g.alignment(E, np.roll(E, 1, axis=0)) == pytest.approx(2.0)  # orthogonal pairs
    with pytest.raises(ValueError, match="paired row by row"):
        g.alignment(X, X[:5])


def test_anisotropy_of_orthogonal_and_identical_vectors():
    assert g.anisotropy(5 * np.eye(8)) == pytest.approx(0.0, abs=1e-12)
    same = np.outer(np.arange(1, 6), [1.0, -2.0, 0.5])  # one direction, different norms
    assert g.anisotropy(same) == pytest.approx(1.0)
    X = np.random.default_rng(2).normal(size=(30, 4))
    Z = X / np.linalg.norm(X, axis=1, keepdims=True)
    brute = np.mean([Z[a] @ Z[b] for a, b in brute_pairs(X)])
    assert g.anisotropy(X) == pytest.approx(brute, abs=1e-12)


def test_positive_pairs_enumerate_all_same_label_pairs_when_few():
    labels = np.array([0, 1, 0, 2, 1, 0, 3])
    i, j = g.positive_pairs_from_labels(labels, max_pairs=100, seed=0)
    expected = {(a, b) for a, b in itertools.combinations(range(7), 2) if labels[a] == labels[b]}
    assert set(zip(i.tolist(), j.tolist())) == expected and len(i) == len(expected) == 4


def test_positive_pairs_are_a_seeded_uniform_sample_without_repeats():
    labels = np.random.default_rng(3).integers(0, 4, size=400)
    i, j = g.positive_pairs_from_labels(labels, max_pairs=5000, seed=7)
    assert len(i) == 5000 and (labels[i] == labels[j]).all() and (i < j).all()
    assert len(set(zip(i.tolist(), j.tolist()))) == 5000
    i2, j2 = g.positive_pairs_from_labels(labels, max_pairs=5000, seed=7)
    assert (i == i2).all() and (j == j2).all()
    # each class gets pairs in proportion to its number of pairs
    sizes = np.bincount(labels)
    share = sizes * (sizes - 1) / (sizes * (sizes - 1)).sum()
    assert np.bincount(labels[i], minlength=4) / 5000 == pytest.approx(share, abs=0.03)
    with pytest.raises(ValueError, match="no label occurs twice"):
        g.positive_pairs_from_labels([0, 1, 2], 10, 0)


# ---------------------------------------------------------------- spectrum

def test_effective_rank_of_k_equal_singular_values_is_k():
    for k in (1, 3, 10):
        X = with_spectrum([2.0] * k + [0.0] * (12 - k), d=12)
        assert g.spectrum_metrics(X)["effective_rank"] == pytest.approx(k, rel=1e-9)


def test_spectrum_metrics_of_a_known_spectrum():
    n = 200
    m = g.spectrum_metrics(with_spectrum([3.0, 2.0, 1.0], n=n, d=5))
    np.testing.assert_allclose(g.spectrum(with_spectrum([3.0, 2.0, 1.0], n=n, d=5)),
                               np.array([9.0, 4.0, 1.0, 0.0, 0.0]) / (n - 1), atol=1e-12)
    p = np.array([3.0, 2.0, 1.0]) / 6  # normalised singular values
    assert m["effective_rank"] == pytest.approx(np.exp(-(p * np.log(p)).sum()))  # ≈ 2.7495
    assert m["effective_rank"] == pytest.approx(2.749459, abs=1e-6)
    assert m["stable_rank"] == pytest.approx(14 / 9)
    assert m["rank90"] == 2  # variance shares 9/14, 13/14
    q = np.array([9.0, 4.0, 1.0]) / 14
    assert m["spectral_entropy"] == pytest.approx(-(q * np.log(q)).sum() / np.log(5))


def test_stable_rank_and_rank90_of_diagonal_spectra():
    m = g.spectrum_metrics(with_spectrum(np.ones(10), d=10))
    assert m["stable_rank"] == pytest.approx(10) and m["rank90"] == 9  # 9/10 of the variance exactly
    m = g.spectrum_metrics(with_spectrum([10.0, 1.0, 1.0, 1.0], d=4))
    assert m["stable_rank"] == pytest.approx(103 / 100) and m["rank90"] == 1  # 100/103 > 0.9


def test_spectral_entropy_isotropic_is_one_and_rank_one_is_zero():
    assert g.spectrum_metrics(with_spectrum(np.ones(16), d=16))["spectral_entropy"] == pytest.approx(1.0)
    # fewer points than dimensions: n − 1 equal eigenvalues is the most isotropic possible
    assert g.spectrum_metrics(with_spectrum(np.ones(9), n=10, d=32))["spectral_entropy"] == pytest.approx(1.0)
    rank_one = np.outer(np.arange(50.0), np.random.default_rng(4).normal(size=16))
    m = g.spectrum_metrics(rank_one)
    assert m["spectral_entropy"] == pytest.approx(0.0, abs=1e-12)
    assert m["effective_rank"] == pytest.approx(1.0) and m["stable_rank"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="identical"):
        g.spectrum_metrics(np.ones((5, 3)))


# ---------------------------------------------------------------- classes and the full set

def test_class_distance_ratio_separated_clusters_and_random_labels():
    rng = np.random.default_rng(5)
    labels = np.repeat([0, 1, 2], 100)
    centres = 5 * np.eye(8)[:3]
    X = centres[labels] + 0.3 * rng.normal(size=(300, 8))
    assert g.class_distance_ratio(X, labels) < 0.2
    assert g.class_distance_ratio(X, rng.permutation(labels)) == pytest.approx(1.0, abs=0.03)
    small, lab = X[::30], labels[::30]
    Z = small / np.linalg.norm(small, axis=1, keepdims=True)
    dist = {(a, b): np.linalg.norm(Z[a] - Z[b]) for a, b in brute_pairs(small)}
    intra = np.mean([v for (a, b), v in dist.items() if lab[a] == lab[b]])
    inter = np.mean([v for (a, b), v in dist.items() if lab[a] != lab[b]])
    assert g.class_distance_ratio(small, lab) == pytest.approx(intra / inter, abs=1e-12)
    with pytest.raises(ValueError, match="two classes"):
        g.class_distance_ratio(X, np.zeros(300))


def test_geometry_metrics_alignment_from_labels_and_from_pairs():
    rng = np.random.default_rng(6)
    X, labels = rng.normal(size=(40, 5)), rng.integers(0, 3, size=40)
    m = g.geometry_metrics(X, labels)
    assert set(m) == set(g.LABEL_FREE) | {"alignment", "class_distance_ratio"}
    i, j = g.positive_pairs_from_labels(labels, max_pairs=10**6, seed=0)  # all of them
    assert m["alignment"] == pytest.approx(g.alignment(X[i], X[j]), abs=1e-12)
    assert g.geometry_metrics(X, pairs=(i[:7], j[:7]))["alignment"] == pytest.approx(g.alignment(X[i[:7]], X[j[:7]]))
    assert set(g.label_free_metrics(X)) == set(g.LABEL_FREE)


def test_resampler_matches_brute_force_on_a_resample_with_duplicates():
    rng = np.random.default_rng(7)
    X, labels = rng.normal(size=(25, 6)) + 1.0, rng.integers(0, 2, size=25)
    res = g.GeometryResampler(X, labels)
    full = dict(zip(res.names, res(None)))
    for name, value in g.geometry_metrics(X, labels).items():
        assert full[name] == pytest.approx(value, abs=1e-10), name

    idx = rng.integers(0, 25, size=25)
    got = dict(zip(res.names, res(idx)))
    S, lab = X[idx], labels[idx]
    pairs = brute_pairs(X, idx)  # copies of one example never pair up

    def unit(A):
        return A / np.linalg.norm(A, axis=1, keepdims=True)

    Z, Zc = unit(S), unit(S - S.mean(axis=0))
    assert got["uniformity"] == pytest.approx(np.log(np.mean([np.exp(-2 * ((Z[a] - Z[b]) ** 2).sum())
                                                     for a, b in pairs])))
    assert got["uniformity_centred"] == pytest.approx(np.log(np.mean([np.exp(-2 * ((Zc[a] - Zc[b]) ** 2).sum())
                                                              for a, b in pairs])))
    assert got["anisotropy"] == pytest.approx(np.mean([Z[a] @ Z[b] for a, b in pairs]))
    same = [(a, b) for a, b in pairs if lab[a] == lab[b]]
    diff = [(a, b) for a, b in pairs if lab[a] != lab[b]]
    assert got["alignment"] == pytest.approx(np.mean([((Z[a] - Z[b]) ** 2).sum() for a, b in same]))
    dist = lambda ps: np.mean([np.linalg.norm(Z[a] - Z[b]) for a, b in ps])  # noqa: E731
    assert got["class_distance_ratio"] == pytest.approx(dist(same) / dist(diff))
    for name, value in g.spectrum_metrics(S).items():
        assert got[name] == pytest.approx(value, rel=1e-9), name
    assert res.recentre.tolist() == [n in g.RECENTRED for n in res.names]


def _brute_force_metrics(X, labels, idx):
    """Every resampler metric of the resample X[idx], by loops over its pairs of distinct examples."""
    S, lab = X[idx], labels[idx]
    pairs = brute_pairs(X, idx)
    unit = lambda A: A / np.linalg.norm(A, axis=1, keepdims=True)  # noqa: E731
    Z, Zc = unit(S), unit(S - S.mean(axis=0))
    sq = lambda A, a, b: ((A[a] - A[b]) ** 2).sum()  # noqa: E731
    same = [(a, b) for a, b in pairs if lab[a] == lab[b]]
    diff = [(a, b) for a, b in pairs if lab[a] != lab[b]]
    dist = lambda ps: np.mean([np.sqrt(sq(Z, a, b)) for a, b in ps])  # noqa: E731
    return {"uniformity": np.log(np.mean([np.exp(-2 * sq(Z, a, b)) for a, b in pairs])),
            "uniformity_centred": np.log(np.mean([np.exp(-2 * sq(Zc, a, b)) for a, b in pairs])),
            "anisotropy": np.mean([Z[a] @ Z[b] for a, b in pairs]),
            "mean_direction": np.sum(Z.mean(axis=0) ** 2),  # duplicates count as often as drawn
            "alignment": np.mean([sq(Z, a, b) for a, b in same]),
            "class_distance_ratio": dist(same) / dist(diff),
            **g.spectrum_metrics(S)}


@pytest.mark.parametrize("n, d", [(30, 6), (14, 40)])  # spectrum from the d x d and from the n x n Gram
def test_batched_resamples_match_brute_force_for_every_metric(n, d):
    """resamples(idx) (one matrix product for all pair sums, threads for the rest) == loops, to 1e-10."""
    rng = np.random.default_rng(11)
    X = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + 3.0 * rng.normal(size=d)  # offset: centring matters
    labels = rng.integers(0, 3, size=n)
    res = g.GeometryResampler(X, labels)
    idx = rng.integers(0, n, size=(6, n))
    got = res.resamples(idx)
    assert got.shape == (6, len(res.names))
    for b in range(6):
        want = _brute_force_metrics(X, labels, idx[b])
        for k, name in enumerate(res.names):
            assert got[b, k] == pytest.approx(want[name], rel=1e-10, abs=1e-10), (b, name)
        np.testing.assert_allclose(res(idx[b]), got[b], rtol=1e-13)  # one at a time: same up to summation order
    assert np.array_equal(res.resamples(idx, workers=3), got)  # threads change nothing


def test_batched_resamples_handle_a_resample_without_pairs_and_bad_input():
    X = np.random.default_rng(3).normal(size=(8, 4))
    res = g.GeometryResampler(X, metrics=["uniformity", "effective_rank"])
    got = res.resamples(np.array([[2, 2, 2], [0, 1, 5]]))  # the first has one distinct example: no pair
    assert np.isnan(got[0]).all() and np.isfinite(got[1]).all()
    assert res.resamples(np.empty((0, 3), dtype=int)).shape == (0, 2)
    with pytest.raises(ValueError, match="outside"):
        res.resamples(np.array([[0, 8]]))
    with pytest.raises(ValueError, match=r"\(B, m\) integer array"):
        res.resamples(np.array([0, 1]))


def test_resample_without_a_same_label_pair_gives_nan_alignment():
    X, labels = np.random.default_rng(9).normal(size=(6, 3)), np.array([0, 0, 1, 1, 2, 2])
    res = g.GeometryResampler(X, labels)
    got = dict(zip(res.names, res([0, 2, 4, 4])))  # one example per class, one duplicated
    assert np.isnan(got["alignment"]) and np.isnan(got["class_distance_ratio"])
    assert np.isfinite(got["uniformity"])


def test_resampled_pair_metrics_are_centred_on_the_full_value_but_naive_ones_are_not():
    """Why self-pairs of duplicates are dropped: keeping them drags uniformity towards 0."""
    rng = np.random.default_rng(8)
    n = 150
    X = rng.normal(size=(n, 32))
    res = g.GeometryResampler(X, metrics=["uniformity"])
    D = g.sqdist_normalised(X)
    draws = [rng.integers(0, n, size=n) for _ in range(200)]
    ours = np.array([res(idx)[0] for idx in draws])
    naive = np.array([np.log(np.exp(-2 * D[np.ix_(idx, idx)])[np.triu_indices(n, 1)].mean()) for idx in draws])
    full = g.uniformity(X)
    assert abs(ours.mean() - full) < 0.25 * ours.std()
    assert naive.mean() - full > 3 * naive.std()
    assert g.uniformity_from_sqdist(D, draws[0]) == pytest.approx(ours[0])


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="2-D"):
        g.uniformity(np.ones(5))
    with pytest.raises(ValueError, match="non-finite values in rows \\[1\\]"):
        g.anisotropy(np.array([[1.0, 0.0], [np.nan, 1.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="labels must have shape"):
        g.class_distance_ratio(np.eye(4), [0, 1])
    with pytest.raises(ValueError, match="unknown metrics"):
        g.GeometryResampler(np.eye(4), metrics=["alignment"])  # needs labels


@pytest.mark.parametrize("n, d, per_block", [(30, 6, 1), (30, 6, 4), (14, 40, 1), (14, 40, 4)])
def test_the_torch_backend_gives_the_numpy_numbers(n, d, per_block):
    """Device-native evaluation runs the resampler as torch on its device; on the CPU here, one resample at a
    time and `per_block` at once (how a GPU takes them): the same values as the numpy path, to 1e-12."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(13)
    X = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + 3.0 * rng.normal(size=d)
    labels = rng.integers(0, 3, size=n)
    idx = rng.integers(0, n, size=(7, n))
    idx[0] = 2  # a resample without pairs: NaN on both
    numpy_res = g.GeometryResampler(X, labels)
    torch_res = g.GeometryResampler(X, labels, device=torch.device("cpu"))
    torch_res.be.per_block = per_block
    assert torch_res.be.torch and not numpy_res.be.torch
    np.testing.assert_allclose(torch_res(None), numpy_res(None), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(torch_res.resamples(idx), numpy_res.resamples(idx), rtol=1e-12, atol=1e-12)
