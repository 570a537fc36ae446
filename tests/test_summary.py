"""Verdict rules of summary.py on synthetic tables with known answers."""
import json

import numpy as np
import pandas as pd
import pytest

from jepa_core import summary as S
from jepa_core.summary import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED

GLUE = ["sst2", "mrpc", "mnli", "cola", "stsb"]


def test_side():
    assert S.side(0.1, 0.3) == 1 and S.side(-0.3, -0.1) == -1 and S.side(-0.1, 0.1) == 0
    assert S.side(0.0, 0.2) == 0  # touching 0 is not "entirely above"
    assert S.side(np.nan, 0.2) == 0


@pytest.mark.parametrize("sides, direction, need, expected", [
    ([1, 1, 1, 1, 0], +1, 4, REPRODUCED),        # 4 of 5 significantly up
    ([1, 1, 1, 0, 0], +1, 4, INCONCLUSIVE),      # could still reach 4
    ([1, 1, 1, -1, 0], +1, 4, INCONCLUSIVE),     # one against: 4 still possible
    ([1, 1, 0, -1, -1], +1, 4, NOT_REPRODUCED),  # two against: at most 3 of 5 can support
    ([-1], -1, 1, REPRODUCED),
    ([1], -1, 1, NOT_REPRODUCED),
    ([0], -1, 1, INCONCLUSIVE),
    ([], -1, 1, INCONCLUSIVE),                   # nothing measured
    ([1, 1], +1, 4, INCONCLUSIVE),               # fewer tasks than the claim needs
])
def test_count_rule(sides, direction, need, expected):
    assert S.count_rule(sides, direction, need) == expected


@pytest.mark.parametrize("lo, hi, expected", [
    (-0.01, 0.02, REPRODUCED), (0.04, 0.08, NOT_REPRODUCED), (-0.09, -0.05, NOT_REPRODUCED),
    (-0.05, 0.01, INCONCLUSIVE), (np.nan, 0.0, INCONCLUSIVE)])
def test_equivalence_rule(lo, hi, expected):
    assert S.equivalence_rule(lo, hi, 0.03) == expected


def _tables(diff_fn):
    """metrics + differences where diff_fn(task, pooling, metric) -> (diff, ci_low, ci_high)."""
    metrics, diffs = [], []
    metric_names = ["uniformity", "uniformity_centred", *S.SPECTRAL_METRICS, S.LEXICAL_METRIC, S.BALANCE_METRIC,
                    "accuracy", "f1", "mcc", "spearman"]
    for task in GLUE + ["wiki"]:
        for pooling in ("mean", "max"):
            for metric in metric_names:
                d, lo, hi = diff_fn(task, pooling, metric)
                diffs.append(dict(task=task, pooling=pooling, metric=metric, a=0.5 + d, b=0.5, diff=d, ci_low=lo,
                                  ci_high=hi, p=0.01, p_holm=0.02, n=100))
                for obj, v in (("hybrid", 0.5 + d), ("mlm", 0.5)):
                    metrics.append(dict(model=obj, objective=obj, seed=0, task=task, pooling=pooling, metric=metric,
                                        value=v, ci_low=v - 0.01, ci_high=v + 0.01, n=100,
                                        chance=0.3 if metric in S.TASK_METRIC.values() else np.nan, note=""))
    return pd.DataFrame(metrics), pd.DataFrame(diffs)


def _paper_like(task, pooling, metric):
    """Every claim holds: hybrid more uniform, richer spectra, less lexical, better balance, same accuracy."""
    if metric in ("uniformity", "uniformity_centred", S.LEXICAL_METRIC):
        return -0.1, -0.15, -0.05
    if metric in S.SPECTRAL_METRICS or metric == S.BALANCE_METRIC:
        return 0.1, 0.05, 0.15
    return 0.0, -0.01, 0.01  # task metrics: equivalent


def _opposite(task, pooling, metric):
    d, lo, hi = _paper_like(task, pooling, metric)
    if metric in S.TASK_METRIC.values():
        return 0.1, 0.07, 0.13  # hybrid clearly better: not "similar"
    return -d, -hi, -lo


def _null(task, pooling, metric):
    return 0.0, -0.2, 0.2


@pytest.mark.parametrize("fn, expected", [(_paper_like, REPRODUCED), (_opposite, NOT_REPRODUCED),
                                          (_null, INCONCLUSIVE)])
def test_all_claims(fn, expected):
    metrics, diffs = _tables(fn)
    verdicts = S.verdicts(metrics, diffs)
    assert [v.claim for v in verdicts] == ["C1", "C2", "C3", "C4", "C5"]
    assert {v.claim: v.verdict for v in verdicts} == {c: expected for c in ("C1", "C2", "C3", "C4", "C5")}


def test_c1_uses_sst2_mean_pooling_only():
    def fn(task, pooling, metric):
        if (task, pooling, metric) == ("sst2", "mean", "uniformity"):
            return -0.1, -0.2, -0.01
        return 0.3, 0.2, 0.4  # everything else points the other way
    metrics, diffs = _tables(fn)
    v = S.claim_c1(metrics, diffs)
    assert v.verdict == REPRODUCED
    assert "sst2" in v.rule and "mean" in v.rule


def test_c1_falls_back_to_wiki_without_sst2():
    metrics, diffs = _tables(_paper_like)
    keep = diffs["task"] != "sst2"
    v = S.claim_c1(metrics[metrics["task"] != "sst2"], diffs[keep])
    assert v.verdict == REPRODUCED and any("Wikipedia" in n for n in v.notes)


def test_c2_four_of_five_tasks():
    def fn(task, pooling, metric):
        if metric in S.SPECTRAL_METRICS and pooling == "max":
            return (-0.1, -0.2, -0.05) if task == "cola" else (0.1, 0.05, 0.2)  # one task against
        return 0.0, -0.1, 0.1
    metrics, diffs = _tables(fn)
    assert S.claim_c2(metrics, diffs).verdict == REPRODUCED


def test_c5_one_task_clearly_different_is_not_reproduced():
    def fn(task, pooling, metric):
        if metric in S.TASK_METRIC.values():
            return (-0.06, -0.09, -0.04) if task == "mnli" else (0.0, -0.01, 0.01)
        return 0.0, -0.1, 0.1
    metrics, diffs = _tables(fn)
    v = S.claim_c5(metrics, diffs)
    assert v.verdict == NOT_REPRODUCED
    assert v.table.set_index("task").loc["mnli", "verdict"] == NOT_REPRODUCED


def test_without_seed_values_the_rows_still_count():
    metrics, diffs = _tables(_paper_like)
    assert S.claim_c1(metrics, diffs.assign(seed=np.nan)).verdict == REPRODUCED


def test_seeds_must_agree():
    metrics, diffs = _tables(_paper_like)
    _, opposite = _tables(_opposite)
    both = pd.concat([diffs.assign(seed=0), opposite.assign(seed=1)], ignore_index=True)
    assert S.claim_c1(metrics, both).verdict == INCONCLUSIVE  # seed 0 reproduces, seed 1 contradicts


def test_write_summary_names_claims_and_context(tmp_path):
    metrics, diffs = _tables(_paper_like)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "corpus.json").write_text(json.dumps(
        {"source": "wikiextractor", "path": "/x/wikipedia", "notice": "auto: $WIKI_DIR is set",
         "splits": {"train": {"documents": 90, "words": 9000}, "validation": {"documents": 10, "words": 1000}}}))
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "hybrid.jsonl").write_text(
        json.dumps({"step": 1, "loss": 1.0}) + "\n" +
        json.dumps({"step": 2, "loss": 1.0, "warning": "possible representation collapse: target_std=1e-05"}) + "\n")
    (tmp_path / "models" / "hybrid").mkdir(parents=True)
    (tmp_path / "models" / "hybrid" / "train_summary.json").write_text(json.dumps(
        {"steps": 400, "flops_per_step": 5.2e10, "wall_time_s": 600, "final": {"mlm_loss": 6.5, "lambda": 0.61}}))
    text = S.write_summary(metrics, diffs, tmp_path,
                           context={**S.run_context(tmp_path), "skipped_tasks": {"qnli": "not configured"}})
    assert (tmp_path / "summary.md").read_text() == text
    for claim in ("C1", "C2", "C3", "C4", "C5"):
        assert f"## {claim}:" in text
    assert text.count("**reproduced**") >= 5
    assert "wikiextractor" in text and "qnli (not configured)" in text
    assert "MNLI" in text  # the train-on-mismatched note
    assert "hybrid: 1 logged step(s) flagged, first at step 2" in text
    assert "Rule:" in text and "[" in text  # numbers come with CIs
    assert "`hybrid`: 400 steps, 52.0 GFLOPs/step, 10.0 min; final MLM loss 6.500, final λ 0.610" in text


def test_probe_table_rows_columns_and_majority():
    rows = []
    for task, metric in (("sst2", "accuracy"), ("stsb", "spearman")):
        rows.append(dict(model="majority", objective="majority", seed=np.nan, task=task, pooling="none",
                         metric=metric, value=0.5, ci_low=0.4, ci_high=0.6))
        for pooling in ("max", "mean"):  # given out of order on purpose
            for model in ("mlm", "hybrid"):
                rows.append(dict(model=model, objective=model, seed=0, task=task, pooling=pooling, metric=metric,
                                 value=0.7, ci_low=0.65, ci_high=0.75))
                rows.append(dict(model=model, objective=model, seed=0, task=task, pooling=pooling, metric="f1",
                                 value=0.1, ci_low=0.0, ci_high=0.2))  # not sst2's headline metric
    table = S.probe_table(pd.DataFrame(rows))
    assert list(table.columns) == ["hybrid", "mlm", "majority"]
    assert list(table.index) == [("sst2", "accuracy", "mean"), ("sst2", "accuracy", "max"),
                                 ("stsb", "spearman", "mean"), ("stsb", "spearman", "max")]
    assert table.loc[("sst2", "accuracy", "max"), "hybrid"] == "0.700 [0.650, 0.750]"
    assert table.loc[("stsb", "spearman", "mean"), "majority"] == "0.500 [0.400, 0.600]"


def test_c5_models_at_chance_are_not_evidence_of_similarity():
    metrics, diffs = _tables(_paper_like)
    at_chance = metrics["metric"].isin(S.TASK_METRIC.values()) & (metrics["task"] == "cola")
    metrics.loc[at_chance, "chance"] = 0.6  # above both models' CIs
    v = S.claim_c5(metrics, diffs)
    assert v.verdict == INCONCLUSIVE
    verdicts = v.table.set_index("task")["verdict"]
    assert verdicts["cola"] == "inconclusive (at chance)" and verdicts["sst2"] == REPRODUCED
