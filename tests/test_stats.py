"""Bootstrap CIs, paired bootstrap tests, Holm and seed aggregation against known answers."""
import numpy as np
from scipy.stats import norm
import pandas as pd
import pytest

from jepa_core import stats


def test_resamples_are_seeded_and_in_range():
    a = list(stats.resamples(30, 5, seed=3))
    b = list(stats.resamples(30, 5, seed=3))
    assert all((x == y).all() for x, y in zip(a, b))
    assert not (a[0] == list(stats.resamples(30, 1, seed=4))[0]).all()
    assert all(x.shape == (30,) and x.min() >= 0 and x.max() < 30 for x in a)


def test_bootstrap_ci_of_a_mean_covers_at_about_the_nominal_rate():
    rng = np.random.default_rng(0)
    reps, n, hits = 200, 50, 0
    for r in range(reps):
        x = rng.normal(loc=1.0, size=n)
        value, lo, hi = stats.bootstrap_ci(lambda idx: x[idx].mean(), n, n_boot=200, seed=r)
        assert value == pytest.approx(x.mean()) and lo < value < hi
        hits += lo <= 1.0 <= hi
    assert 0.88 <= hits / reps <= 0.99


def test_bootstrap_ci_width_matches_the_standard_error():
    x = np.random.default_rng(1).normal(size=400)
    _, lo, hi = stats.bootstrap_ci(lambda idx: x[idx].mean(), 400, n_boot=2000, seed=0)
    assert (hi - lo) / (2 * 1.96 * x.std() / 20) == pytest.approx(1.0, abs=0.1)


def test_vector_statistics_give_vectors_and_recentre_per_component():
    x = np.random.default_rng(2).normal(size=100)

    def two(idx):
        # the second output is deliberately biased under resampling: +1 on every resample
        return np.array([x[idx].mean(), x[idx].mean() + (0.0 if len(np.unique(idx)) == 100 else 1.0)])

    value, lo, hi = stats.bootstrap_ci(two, 100, n_boot=300, seed=0, recentre=[False, True])
    assert value.shape == lo.shape == hi.shape == (2,)
    assert lo[1] < value[1] < hi[1]  # recentred: the interval is around the estimate again
    assert hi[1] - lo[1] == pytest.approx(hi[0] - lo[0], rel=0.05)
    _, lo_plain, _ = stats.bootstrap_ci(two, 100, n_boot=300, seed=0, recentre=False)
    assert lo_plain[1] > value[1]  # without it the interval misses the estimate
    one = stats.bootstrap_ci(lambda idx: np.array([x[idx].mean()]), 100, n_boot=50, seed=0)
    assert all(isinstance(v, np.ndarray) and v.shape == (1,) for v in one)  # a vector stays a vector


def test_recentre_is_picked_up_from_the_statistic():
    x = np.arange(20.0)

    def shifted(idx):
        return x[idx].mean() + (0.0 if len(np.unique(idx)) == 20 else 100.0)

    _, lo, hi = stats.bootstrap_ci(shifted, 20, n_boot=200, seed=0)
    assert lo > 100
    shifted.recentre = True
    _, lo, hi = stats.bootstrap_ci(shifted, 20, n_boot=200, seed=0)
    assert lo < x.mean() < hi


def test_paired_bootstrap_detects_a_real_shift():
    rng = np.random.default_rng(3)
    base = rng.normal(size=200)  # per-example difficulty, shared by both models
    a, b = base + 0.3 + 0.2 * rng.normal(size=200), base + 0.2 * rng.normal(size=200)
    diff, lo, hi, p = stats.paired_bootstrap(lambda i: a[i].mean(), lambda i: b[i].mean(), 200, 500, seed=0)
    assert diff == pytest.approx(a.mean() - b.mean()) and lo < diff < hi and lo > 0
    # bootstrap-SE z-test: far below 2/501, the floor of a percentile p-value with 500 resamples
    se = np.std(a - b, ddof=1) / np.sqrt(200)
    assert 0 < p < 1e-6 and p == pytest.approx(2 * norm.sf(abs(diff) / se), rel=0.5)
    # the pairing matters: unpaired, the shared difficulty would swamp the shift
    assert hi - lo < 0.5 * 2 * 1.96 * base.std() / np.sqrt(200)


def test_paired_bootstrap_p_values_are_roughly_uniform_without_a_shift():
    rng = np.random.default_rng(4)
    ps = []
    for r in range(150):
        base = rng.normal(size=60)
        a, b = base + rng.normal(size=60), base + rng.normal(size=60)
        ps.append(stats.paired_bootstrap(lambda i: a[i].mean(), lambda i: b[i].mean(), 60, 200, seed=r)[3])
    ps = np.array(ps)
    assert 0.4 <= ps.mean() <= 0.6
    assert np.mean(ps < 0.05) <= 0.12
    assert np.mean(ps < 0.5) == pytest.approx(0.5, abs=0.12)


def test_paired_bootstrap_identical_models_give_p_one():
    x = np.random.default_rng(5).normal(size=50)
    diff, lo, hi, p = stats.paired_bootstrap(lambda i: x[i].mean(), lambda i: x[i].mean(), 50, 100, seed=0)
    assert (diff, lo, hi, p) == (0.0, 0.0, 0.0, 1.0)


def test_undefined_resamples_are_dropped_with_a_warning():
    x = np.arange(10.0)

    def sometimes_nan(idx):
        return np.nan if idx[0] == 0 else x[idx].mean()

    with pytest.warns(RuntimeWarning, match="non-finite"):
        value, lo, hi = stats.bootstrap_ci(sometimes_nan, 10, n_boot=200, seed=0)
    assert np.isfinite([lo, hi]).all() and lo < hi


@pytest.mark.parametrize("p, expected", [
    # sorted 0.01 0.02 0.03 0.04 → ×4 ×3 ×2 ×1 = 0.04 0.06 0.06 0.04 → running max
    ([0.01, 0.04, 0.03, 0.02], [0.04, 0.06, 0.06, 0.06]),
    ([0.005, 0.5, 0.02], [0.015, 0.5, 0.04]),  # 0.015, 0.04, 0.5
    ([0.3, 0.6, 0.9], [0.9, 1.0, 1.0]),  # 0.9, 1.2 → capped at 1, 0.9 → running max 1
    ([0.04], [0.04]),
    ([0.02, np.nan, 0.02], [0.04, np.nan, 0.04]),  # NaN is not a test: m = 2
])
def test_holm_against_hand_computed_values(p, expected):
    np.testing.assert_allclose(stats.holm(p), expected, atol=1e-12)


def test_holm_is_monotone_and_never_below_raw():
    p = np.random.default_rng(6).uniform(size=40) ** 3
    adj = stats.holm(p)
    order = np.argsort(p)
    assert (np.diff(adj[order]) >= 0).all() and (adj >= p).all() and (adj <= 1).all()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stats.holm([0.5, 1.5])


def test_aggregate_seeds_mean_sd_and_count():
    df = pd.DataFrame({
        "task": ["sst2"] * 3 + ["cola"] * 2 + ["mrpc"],
        "seed": [0, 1, 2, 0, 1, 0],
        "value": [1.0, 2.0, 3.0, 5.0, 7.0, 4.0],
    })
    out = stats.aggregate_seeds(df, ["task"]).set_index("task")
    assert out.loc["sst2", "mean"] == 2.0 and out.loc["sst2", "sd"] == pytest.approx(1.0)
    assert out.loc["cola", "sd"] == pytest.approx(np.sqrt(2.0)) and out.loc["cola", "n_seeds"] == 2
    assert np.isnan(out.loc["mrpc", "sd"]) and out.loc["mrpc", "n_seeds"] == 1


def test_aggregate_seeds_refuses_a_group_with_a_repeated_seed():
    df = pd.DataFrame({"task": ["sst2"] * 2, "pooling": ["mean", "max"], "seed": [0, 0], "value": [1.0, 2.0]})
    with pytest.raises(ValueError, match="several rows for one seed"):
        stats.aggregate_seeds(df, ["task"])
    assert len(stats.aggregate_seeds(df, ["task", "pooling"])) == 2
    with pytest.raises(KeyError, match="metric"):
        stats.aggregate_seeds(df, ["metric"])


def test_paired_bootstrap_of_geometry_uses_the_resamplers_recentring():
    from jepa_core.geometry import GeometryResampler

    rng = np.random.default_rng(7)
    Z = rng.normal(size=(150, 8))
    iso, squashed = GeometryResampler(Z), GeometryResampler(Z * [3, 1, 1, 1, 1, 1, 1, 0.3])
    diff, lo, hi, p = stats.paired_bootstrap(iso, squashed, 150, n_boot=100, seed=0)
    k = {name: i for i, name in enumerate(iso.names)}
    assert diff.shape == (len(iso.names),) and ((lo <= diff) & (diff <= hi)).all()
    for name in ("effective_rank", "spectral_entropy", "stable_rank"):
        assert diff[k[name]] > 0 and p[k[name]] < 0.05, name  # the isotropic cloud has the richer spectrum
    # without recentring the spectral intervals drift off the estimate
    _, lo_plain, hi_plain, _ = stats.paired_bootstrap(iso, squashed, 150, n_boot=100, seed=0, recentre=False)
    assert not np.allclose(lo_plain[iso.recentre], lo[iso.recentre])


def test_difference_p_value_matches_the_normal_reference():
    rng = np.random.default_rng(8)
    d = rng.normal(loc=0.0, scale=0.5, size=(4000, 2))
    p = stats.difference_p_value(np.array([1.0, 0.0]), d)
    np.testing.assert_allclose(p, [2 * norm.sf(1.0 / d[:, 0].std(ddof=1)), 1.0], rtol=1e-9)
    assert stats.difference_p_value(0.3, np.full(50, 0.3)) == 0.0  # constant non-zero bootstrap
    assert np.isnan(stats.difference_p_value(0.3, np.full(50, np.nan)))
