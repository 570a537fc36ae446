"""Probes and task metrics against known answers and sklearn/scipy."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from jepa_core import cpu
from jepa_core.analysis import probes


def blobs(n: int, seed: int, classes: int = 3, dim: int = 10, shuffle: bool = False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    X = rng.normal(size=(n, dim)) + 6.0 * np.eye(classes, dim)[y]  # well separated
    if shuffle:
        y = rng.permutation(y)
    return X, y


def test_probe_separates_separable_data():
    X, y = blobs(300, 0)
    Xd, yd = blobs(200, 1)
    fitted = probes.fit_probe(X, y, "classification", cv_folds=3, seed=0)
    assert probes.METRICS["accuracy"](yd, fitted.predict(Xd)) > 0.98
    assert fitted.param in probes.C_GRID


def test_probe_fitted_in_parallel_processes_is_identical_to_the_serial_fit():
    X, y = blobs(240, 3, classes=6, dim=12)
    X += np.random.default_rng(4).normal(scale=4.0, size=X.shape)  # overlapping classes: C matters
    serial = probes.fit_probe(X, y, "classification", cv_folds=3, seed=0, n_jobs=1)
    parallel = probes.fit_probe(X, y, "classification", cv_folds=3, seed=0, n_jobs=3)
    assert parallel.param == serial.param
    np.testing.assert_array_equal(parallel.pipeline[-1].coef_, serial.pipeline[-1].coef_)
    np.testing.assert_array_equal(parallel.pipeline[-1].scores_, serial.pipeline[-1].scores_)
    assert cpu.parallel_workers(3) in (1, 2, 3) and cpu.parallel_workers(0) == 1


def test_probe_is_at_chance_on_shuffled_labels():
    X, y = blobs(400, 0, classes=2, shuffle=True)
    Xd, yd = blobs(400, 1, classes=2, shuffle=True)
    accuracy = probes.METRICS["accuracy"](yd, probes.fit_probe(X, y, "classification").predict(Xd))
    assert abs(accuracy - 0.5) < 0.08


def test_ridge_probe_recovers_a_linear_score():
    rng = np.random.default_rng(0)
    w = rng.normal(size=8)
    X, Xd = rng.normal(size=(300, 8)), rng.normal(size=(200, 8))
    fitted = probes.fit_probe(X, X @ w + 0.1 * rng.normal(size=300), "regression", cv_folds=3)
    m = probes.task_metrics("stsb", Xd @ w, fitted.predict(Xd))
    assert m["spearman"] > 0.98 and m["pearson"] > 0.98
    assert fitted.param in probes.ALPHA_GRID


def test_probe_rejects_classes_too_small_for_cv():
    with pytest.raises(ValueError, match="at least 2 train examples of every class"):
        probes.fit_probe(np.zeros((3, 2)), np.array([0, 0, 1]), "classification")


def test_task_metrics_agree_with_sklearn_and_scipy():
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 2, 300), rng.integers(0, 2, 300)
    assert probes.task_metrics("sst2", t, p) == {"accuracy": skm.accuracy_score(t, p)}
    assert probes.task_metrics("mrpc", t, p) == {"f1": skm.f1_score(t, p), "accuracy": skm.accuracy_score(t, p)}
    assert probes.task_metrics("cola", t, p) == {"mcc": skm.matthews_corrcoef(t, p)}
    t3, p3 = rng.integers(0, 3, 300), rng.integers(0, 3, 300)
    assert probes.task_metrics("mnli", t3, p3)["accuracy"] == pytest.approx(np.mean(t3 == p3))
    gold, pred = rng.uniform(0, 5, 300), rng.normal(size=300)
    m = probes.task_metrics("stsb", gold, pred)
    assert m["spearman"] == pytest.approx(stats.spearmanr(gold, pred).statistic)
    assert m["pearson"] == pytest.approx(stats.pearsonr(gold, pred).statistic)
    # known answers
    assert probes.task_metrics("cola", [0, 1, 1, 0], [0, 1, 1, 0]) == {"mcc": 1.0}
    assert probes.task_metrics("mrpc", [1, 1, 0, 0], [1, 0, 0, 0]) == {"f1": pytest.approx(2 / 3), "accuracy": 0.75}


def test_majority_baseline_and_constant_correlation():
    assert probes.majority_prediction(np.array([1, 0, 1, 1]), 3, "classification").tolist() == [1, 1, 1]
    np.testing.assert_allclose(probes.majority_prediction(np.array([1.0, 2.0, 6.0]), 2, "regression"), [3.0, 3.0])
    gold = np.array([0.0, 1.0, 4.0])
    assert probes.task_metrics("stsb", gold, np.full(3, 2.0)) == {"spearman": 0.0, "pearson": 0.0}
    # the all-positive MRPC baseline: F1 = 2p/(1+p) with p the share of positives
    y = np.array([1] * 279 + [0] * 129)
    f1 = probes.task_metrics("mrpc", y, probes.majority_prediction(y, len(y), "classification"))["f1"]
    assert f1 == pytest.approx(2 * 279 / 408 / (1 + 279 / 408))


def test_zero_shot_sts():
    rng = np.random.default_rng(0)
    u = rng.normal(size=(50, 16))
    gold = rng.uniform(0, 5, 50)
    # v moves away from u as the gold score drops: cosine is monotone in the score
    v = u + (5 - gold)[:, None] * rng.normal(size=(50, 16)) * 0.3
    cos = probes.cosine_similarity(u, v)
    np.testing.assert_allclose(probes.cosine_similarity(u, u), 1.0)
    result = probes.zero_shot_sts(u, v, gold)
    assert result["spearman"] == pytest.approx(stats.spearmanr(gold, cos).statistic)
    assert result["spearman"] > 0.8


@pytest.mark.filterwarnings("ignore:A single label was found")  # sklearn, on the constant resample
@pytest.mark.parametrize("name,kind", [("accuracy", 3), ("f1", 2), ("mcc", 2), ("mcc", 3), ("spearman", "float"),
                                       ("pearson", "float")])
def test_bootstrap_metric_matches_metric_on_each_resample(name, kind):
    rng = np.random.default_rng(1)
    n = 60
    if kind == "float":
        t, p = rng.uniform(0, 5, n).round(1), rng.normal(size=n).round(1)  # rounded: ties in the ranks
    else:
        t, p = rng.integers(0, kind, n), rng.integers(0, kind, n)
        p[:20] = t[:20]
    idx = rng.integers(0, n, (40, n))
    idx[0] = 0  # a constant resample: correlations and MCC are defined as 0 there
    expected = [probes.METRICS[name](t[i], p[i]) for i in idx]
    np.testing.assert_allclose(probes.bootstrap_metric(name, t, p, idx), expected, atol=1e-12)


def test_no_nested_workers_inside_an_evaluation_worker(monkeypatch):
    monkeypatch.setattr(cpu.os, "sched_getaffinity", lambda _pid: set(range(16)), raising=False)
    assert cpu.parallel_workers(3) == 3
    monkeypatch.setattr(cpu, "NESTED_WORKERS", False)
    assert cpu.parallel_workers(3) == 1


def test_one_table_of_task_metrics_with_the_protocols_headline_metrics():
    from jepa_core.config import HEADLINE_METRIC, TASK_METRICS, TASKS
    assert tuple(TASK_METRICS) == TASKS and probes.TASK_METRICS is TASK_METRICS
    assert HEADLINE_METRIC == {"sst2": "accuracy", "mrpc": "f1", "mnli": "accuracy", "cola": "mcc", "stsb": "spearman"}
