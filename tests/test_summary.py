"""Verdict rules of summary.py on synthetic tables with known answers."""
import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import t as t_dist

from jepa_core.analysis import stats, tables
from jepa_core.analysis.stats import PER_SEED, POOLED
from jepa_core.config import HEADLINE_METRIC
from jepa_core.report import claims
from jepa_core.report import summary as S
from jepa_core.report.claims import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED

GLUE = ["sst2", "mrpc", "mnli", "cola", "stsb"]


def test_side():
    assert claims.side(0.1, 0.3) == 1 and claims.side(-0.3, -0.1) == -1 and claims.side(-0.1, 0.1) == 0
    assert claims.side(0.0, 0.2) == 0  # touching 0 is not "entirely above"
    assert claims.side(np.nan, 0.2) == 0


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
    assert claims.count_rule(sides, direction, need) == expected


@pytest.mark.parametrize("lo, hi, expected", [
    (-0.01, 0.02, REPRODUCED), (0.04, 0.08, NOT_REPRODUCED), (-0.09, -0.05, NOT_REPRODUCED),
    (-0.05, 0.01, INCONCLUSIVE), (np.nan, 0.0, INCONCLUSIVE)])
def test_equivalence_rule(lo, hi, expected):
    assert claims.equivalence_rule(lo, hi, 0.03) == expected


def _seed_p(d, lo, hi, n_seeds):
    """The seed-level two-sided p that goes with an interval of stats.seed_level_difference, and its SE."""
    se = stats.seed_level_se(lo, hi, n_seeds)
    return (2 * t_dist.sf(abs(d) / se, n_seeds - 1) if se > 0 else float(d == 0)), se


def _tables(diff_fn, seeds=(0, 1, 2, 3, 4)):
    """metrics + differences (per-seed and seed-level rows, as tables.differences writes them) where
    diff_fn(task, pooling, metric) -> (diff, ci_low, ci_high) is the seed-level row (its p and SE those of a
    seed-level t interval with S − 1 df); every seed's own difference equals it."""
    metrics, diffs = [], []
    metric_names = ["uniformity", "uniformity_centred", "mean_direction", *claims.SPECTRAL_METRICS,
                    claims.LEXICAL_METRIC, claims.BALANCE_METRIC, "accuracy", "f1", "mcc", "spearman"]
    for task in GLUE + ["wiki"]:
        for pooling in ("mean", "max"):
            for metric in metric_names:
                d, lo, hi = diff_fn(task, pooling, metric)
                key = dict(task=task, pooling=pooling, metric=metric, model_a="hybrid", model_b="mlm", a=0.5 + d, b=0.5,
                           diff=d, ci_low=lo, ci_high=hi, p=0.01, p_holm=0.02, n=100)
                diffs += [dict(key, level=PER_SEED, seed=seed, n_seeds=1) for seed in seeds]
                several = len(seeds) > 1  # one seed: no seed-level interval
                p, se = _seed_p(d, lo, hi, len(seeds)) if several else (np.nan, np.nan)
                diffs.append(dict(key, level=POOLED, seed=pd.NA, n_seeds=len(seeds), ci_low=lo if several else np.nan,
                                  ci_high=hi if several else np.nan, p=p, p_holm=np.nan, se=se, sd_seeds=0.01))
                for obj, v in (("hybrid", 0.5 + d), ("mlm", 0.5)):
                    for seed in seeds:
                        metrics.append(dict(model=obj, objective=obj, seed=seed, task=task, pooling=pooling,
                                            metric=metric, value=v, ci_low=v - 0.01, ci_high=v + 0.01, n=100,
                                            chance=0.3 if metric in HEADLINE_METRIC.values() else np.nan, note=""))
    return pd.DataFrame(metrics), pd.DataFrame(diffs)


def _paper_like(task, pooling, metric):
    """Every claim holds: hybrid more uniform, richer spectra, less lexical, better balance, same accuracy."""
    if metric in ("uniformity", "uniformity_centred", claims.LEXICAL_METRIC):
        return -0.1, -0.12, -0.08
    if metric in claims.SPECTRAL_METRICS or metric == claims.BALANCE_METRIC or metric == "mean_direction":
        return 0.1, 0.08, 0.12
    return 0.0, -0.01, 0.01  # task metrics: equivalent


def _opposite(task, pooling, metric):
    d, lo, hi = _paper_like(task, pooling, metric)
    if metric in HEADLINE_METRIC.values():
        return 0.1, 0.07, 0.13  # hybrid clearly better: not "similar"
    return -d, -hi, -lo


def _null(task, pooling, metric):
    return 0.0, -0.2, 0.2


@pytest.mark.parametrize("fn, expected", [(_paper_like, REPRODUCED), (_opposite, NOT_REPRODUCED),
                                          (_null, INCONCLUSIVE)])
def test_all_claims(fn, expected):
    metrics, diffs = _tables(fn)
    verdicts = claims.verdicts(metrics, diffs)
    assert [v.claim for v in verdicts] == ["C1", "C2", "C3", "C4", "C5"]
    assert {v.claim: v.verdict for v in verdicts} == {c: expected for c in ("C1", "C2", "C3", "C4", "C5")}


def test_c1_uses_sst2_mean_pooling_only():
    def fn(task, pooling, metric):
        if (task, pooling, metric) == ("sst2", "mean", "uniformity"):
            return -0.1, -0.2, -0.01
        return 0.3, 0.2, 0.4  # everything else points the other way
    metrics, diffs = _tables(fn)
    v = claims.claim_c1(metrics, diffs)
    assert v.verdict == REPRODUCED
    assert "sst2" in v.rule and "mean" in v.rule


def test_c1_falls_back_to_wiki_without_sst2():
    metrics, diffs = _tables(_paper_like)
    keep = diffs["task"] != "sst2"
    v = claims.claim_c1(metrics[metrics["task"] != "sst2"], diffs[keep])
    assert v.verdict == REPRODUCED and any("Wikipedia" in n for n in v.notes)


def test_c2_four_of_five_tasks():
    def fn(task, pooling, metric):
        if metric in claims.SPECTRAL_METRICS and pooling == "max":
            return (-0.1, -0.2, -0.05) if task == "cola" else (0.1, 0.05, 0.2)  # one task against
        return 0.0, -0.1, 0.1
    metrics, diffs = _tables(fn)
    assert claims.claim_c2(metrics, diffs).verdict == REPRODUCED


def test_c5_one_task_clearly_different_is_not_reproduced():
    def fn(task, pooling, metric):
        if metric in HEADLINE_METRIC.values():
            return (-0.06, -0.09, -0.04) if task == "mnli" else (0.0, -0.01, 0.01)
        return 0.0, -0.1, 0.1
    metrics, diffs = _tables(fn)
    v = claims.claim_c5(metrics, diffs)
    assert v.verdict == NOT_REPRODUCED
    assert v.table.set_index("task").loc["mnli", "verdict"] == NOT_REPRODUCED


def test_a_table_without_seed_level_rows_is_refused():
    _, diffs = _tables(_paper_like)
    with pytest.raises(ValueError, match="re-run the evaluation"):
        claims.claim_c1(*_tables(_paper_like)[:1], diffs.drop(columns="level"))


def _evaluated(per_seed_diffs: dict[int, float], cells, noise: float = 1e-4, n: int = 300, null_cells=()):
    """metrics + differences from tables.differences: hybrid − mlm on seed s is per_seed_diffs[s] on
    every cell (0 on every null cell), with tiny example noise (each seed's example-level CI is tight)."""
    from pathlib import Path

    from jepa_core.analysis import evaluate as ev
    from jepa_core.analysis import stats
    rng, results, metrics = np.random.default_rng(0), ev.Results(), []
    idx = stats.resamples(n, 200, seed=0)
    for s, effect in per_seed_diffs.items():
        for cell, d in [(c, effect) for c in cells] + [(c, 0.0) for c in null_cells]:
            b = rng.normal(0.5, 0.1, n)
            for model, x in (("mlm", b), ("hybrid", b + d + noise * rng.normal(size=n))):
                m = results.measures[(model, s, *cell)] = ev._per_example_mean(x, idx)
                metrics.append(dict(model=model, objective=model, seed=s, task=cell[0], pooling=cell[1], metric=cell[2],
                                    value=m.value, ci_low=m.ci()[0], ci_high=m.ci()[1], n=n, chance=np.nan))
    encoders = [ev.ModelFolder(m, m, s, Path(".")) for m in ("hybrid", "mlm") for s in per_seed_diffs]
    return pd.DataFrame(metrics), tables.differences(results, encoders, [("hybrid", "mlm")])


@pytest.mark.parametrize("per_seed", [{0: 0.05, 1: -0.04, 2: 0.06},  # the seeds disagree in sign
                                      {0: 0.05, 1: 0.01, 2: 0.06}])  # same sign, but spread as wide as the mean
def test_tight_example_cis_are_not_enough_when_the_seeds_disagree(per_seed):
    cells = [(t, "mean", claims.BALANCE_METRIC) for t in GLUE]
    metrics, diffs = _evaluated(per_seed, cells)
    seed_rows = diffs[diffs["level"] == PER_SEED]
    # each seed: tight
    assert all(claims.side(lo, hi) != 0 for lo, hi in zip(seed_rows["ci_low"], seed_rows["ci_high"]))
    v = claims.claim_c4(metrics, diffs)
    assert v.verdict == INCONCLUSIVE and (v.table["side"] == 0).all()
    # every seed's difference is printed next to the pooled one
    row = v.table.iloc[0]
    assert row["per_seed"] == ", ".join(f"s{s} {d:+.3f}".replace("-", "−") for s, d in per_seed.items())
    assert "per seed" in S._markdown(v.table) and row["hybrid"].endswith("(3 seeds)")


def test_seeds_that_agree_reproduce_the_claim():
    cells = [(t, "mean", claims.BALANCE_METRIC) for t in GLUE]
    metrics, diffs = _evaluated({0: 0.05, 1: 0.052, 2: 0.048}, cells)
    assert claims.claim_c4(metrics, diffs).verdict == REPRODUCED


C1_CELL = [("sst2", "mean", "uniformity")]
NULL_GRID = [(t, p, "anisotropy") for t in GLUE for p in ("mean", "max", "cls", "weighted")]  # 20 more tests


def test_the_confirmatory_family_is_exactly_the_cells_the_rules_read():
    metrics, diffs = _tables(_paper_like)
    family = claims.confirmatory_family(diffs)
    assert len(family) == 32  # 1 + 15 + 6 + 5 + 5 with five GLUE tasks (PROTOCOL §2a)
    read = [(v.claim, r["task"], r["pooling"], r["metric"]) for v in claims.verdicts(metrics, diffs)
            for _, r in v.table.iterrows() if r["metric"] not in claims.C1_CONTEXT]
    assert sorted(read) == sorted(zip(family["claim"], family["task"], family["pooling"], family["metric"]))
    np.testing.assert_allclose(family["p_holm"], stats.holm(family["p"].to_numpy(float)))
    # two tasks fewer: 1 + 9 + 4 + 3 + 3 cells, and the claims say which planned cells are missing
    keep = ~diffs["task"].isin(["mrpc", "cola"])
    small = claims.confirmatory_family(diffs[keep])
    assert len(small) == 20 and set(small["task"]) == {"sst2", "mnli", "stsb", "wiki"}
    c2 = claims.verdicts(metrics, diffs[keep])[1]
    assert any("(mrpc, max, effective_rank)" in n for n in c2.notes)


def test_c5_cells_enter_the_family_with_their_tost_p():
    metrics, diffs = _tables(_paper_like)
    c5 = claims.confirmatory_family(diffs).set_index("claim").loc["C5"]
    se = stats.seed_level_se(-0.01, 0.01, 5)
    assert c5["p"].to_numpy() == pytest.approx([t_dist.sf(0.03 / se, 4)] * 5)


def _one_cell_family(effect_se: float, rng, n_cells: int = 32, seeds: int = 5):
    """metrics + differences of a full family where every cell is a seed-level t estimate of a zero effect,
    except the C1 cell, whose true effect is `effect_se` standard errors (negative: hybrid more uniform)."""
    half = t_dist.ppf(0.975, seeds - 1)

    def fn(task, pooling, metric):
        se = 0.01 * np.sqrt(rng.chisquare(seeds - 1) / (seeds - 1))  # an estimated SE, as from S seeds
        d = 0.01 * (rng.standard_normal() - (effect_se if (task, pooling, metric) == ("sst2", "mean", "uniformity")
                                              else 0.0))
        if metric in HEADLINE_METRIC.values():
            d += 0.3  # C5 cells far outside the margin: a null of "≠ 0" is not the question there
        return d, d - half * se, d + half * se
    return _tables(fn, seeds=tuple(range(seeds)))


def test_a_true_effect_of_many_standard_errors_is_decided_and_a_null_family_rarely_rejects():
    rng = np.random.default_rng(0)
    metrics, diffs = _one_cell_family(30.0, rng)
    c1 = claims.verdicts(metrics, diffs)[0]
    assert c1.verdict == REPRODUCED and bool(c1.family["decided"].iloc[0])
    # null families (C1–C4 cells at 0): Holm keeps the chance of any rejection at or below ~5%
    any_rejected = []
    for _ in range(200):
        _, d = _one_cell_family(0.0, rng)
        fam = claims.confirmatory_family(d)
        any_rejected.append(bool(fam[fam["claim"] != "C5"]["decided"].any()))
    assert np.mean(any_rejected) <= 0.08


def test_a_planned_difference_that_holm_does_not_decide_is_unadjusted_only(tmp_path):
    # five seeds agree on the sign: the unadjusted 95% interval excludes 0, but not after Holm over the family
    metrics, diffs = _tables(lambda t, p, m: (-0.1, -0.19, -0.01) if (t, p, m) == ("sst2", "mean", "uniformity")
                             else _null(t, p, m))
    c1 = claims.verdicts(metrics, diffs)[0]
    assert (c1.verdict, c1.unadjusted) == (INCONCLUSIVE, REPRODUCED)
    assert not c1.family["decided"].iloc[0] and c1.family["p"].iloc[0] < 0.05 <= c1.family["p_holm"].iloc[0]
    text = S.write_summary(metrics, diffs, tmp_path, context={})
    assert text.index("## Confirmatory") < text.index("## Exploratory")
    assert "| C1 hybrid embeddings are more uniform (Wang & Isola, t=2) |" in text and "| 0 of 1 |" in text
    assert "| C1 | reproduced | inconclusive |" in text  # the unadjusted reading, labelled exploratory
    (tmp_path / "results").mkdir()
    metrics.to_csv(tmp_path / "results" / "metrics.csv", index=False)
    diffs.to_csv(tmp_path / "results" / "differences.csv", index=False)
    assert ": inconclusive (confirmatory: 0 of 1 cells decided, Holm over 32) | " in S.console_verdicts(tmp_path)[0]


def test_c1_taken_apart_on_a_shifted_cloud_names_the_mean_direction():
    # the known answer of a cloud shifted along one direction: uniformity and mean-direction term move, the
    # centred uniformity does not
    def fn(task, pooling, metric):
        return {"uniformity": (-0.1, -0.12, -0.08), "mean_direction": (-0.05, -0.06, -0.04)}.get(
            metric, (0.0, -0.02, 0.02))
    _, diffs = _tables(fn)
    table, sentence = claims.decomposition(diffs, "sst2", "mean")
    assert list(table.index) == list(claims.DECOMPOSITION)
    assert "the mean direction carries the difference" in sentence
    assert claims.uniformity_carrier({"uniformity": -1, "uniformity_centred": -1, "mean_direction": 0}) == "spread"
    assert claims.uniformity_carrier({"uniformity": -1, "uniformity_centred": -1, "mean_direction": -1}) == "both"
    assert claims.uniformity_carrier({"uniformity": -1, "uniformity_centred": 1, "mean_direction": 0}) == \
        "undetermined"
    assert claims.uniformity_carrier({"uniformity": 0, "mean_direction": -1}) == "none"


def test_one_seed_is_not_seed_level_evidence(tmp_path):
    metrics, diffs = _tables(_paper_like, seeds=(0,))
    verdicts = claims.verdicts(metrics, diffs)
    assert all(v.verdict == INCONCLUSIVE for v in verdicts)
    assert all(claims.ONE_SEED in v.notes[0] and v.notes[0].endswith(f"would give: {REPRODUCED}.") for v in verdicts)
    text = S.write_summary(metrics, diffs, tmp_path, context={})
    # in the verdict table and in each claim's heading
    assert text.count(f"**{INCONCLUSIVE} ({claims.ONE_SEED})**") == 10 and "**reproduced**" not in text


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
        {"steps": 400, "flops_per_step": 5.2e10, "wall_time_s": 600, "final": {"mlm_loss": 6.5, "lambda": 0.61},
         "numerics": {"train_precision": "no", "target_precision": "bf16", "torch": "2.9.0", "transformers": "4.57",
                      "numpy": "2.3", "cpu_capability": "AVX512", "torch_threads": 2,
                      "cpu": {"model": "Test CPU", "flags": {"avx2": True, "avx512_bf16": True, "amx_bf16": False}},
                      "weights_fingerprint": {"step": 10, "sha256": "0123456789abcdef"}}}))
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
    assert "| hybrid | no / bf16 | 2.9.0 / 4.57 / 2.3 | AVX512 | 2 | Test CPU (avx2, avx512_bf16) | 10: " \
           "`0123456789abcdef` |" in text
    # a summary without the `learning` section (an older run): said, not a crash
    assert text.startswith("> Learning check unavailable for `hybrid`")
    assert S.learning_warning(tmp_path).startswith("Learning check unavailable for `hybrid`")


def _learning_run(tmp_path, gaps: dict[str, float | None]):
    for name, gap in gaps.items():
        folder = tmp_path / "models" / name
        folder.mkdir(parents=True)
        summary = {"steps": 10}
        if gap is not None:
            summary["learning"] = {"validation_mlm_loss": 6.0 - gap, "unigram_entropy": 6.0, "gap": gap}
        (folder / "train_summary.json").write_text(json.dumps(summary))
    return tmp_path


def test_learning_check_passes_when_every_model_learned(tmp_path):
    run = _learning_run(tmp_path, {"hybrid-s0": 1.2, "mlm-s0": 0.9})
    assert S.learning_warning(run) is None
    table = S.learning_table(run)
    assert table["model"].tolist() == ["hybrid-s0", "mlm-s0"]
    assert table["validation_mlm_loss"].tolist() == pytest.approx([4.8, 5.1]) and (table["unigram_entropy"] == 6).all()
    metrics, diffs = _tables(_paper_like)
    text = S.write_summary(metrics, diffs, run)
    assert text.startswith("# Summary of run")
    # a run older than the context-free baseline: the gap from the entropy decides, and says so
    assert "## Learning check" in text and "| mlm-s0 | 5.100 | 6.000 | – | – | 0.900 | – (–) | – | yes |" in text


def test_the_learning_check_reads_the_gap_from_the_context_free_baseline(tmp_path):
    folder = tmp_path / "models" / "mlm-s0"
    folder.mkdir(parents=True)
    # 0.9 nats below the entropy, but only 0.3 below what copying the visible token already achieves
    (folder / "train_summary.json").write_text(json.dumps({"learning": {
        "validation_mlm_loss": 5.1, "unigram_entropy": 6.0, "gap": 0.9, "context_free_loss": 5.4,
        "gap_vs_context_free": 0.3, "mask_loss": 5.6, "mask_unigram_loss": 6.1, "loss_tokens": 1000,
        "entropy_tokens": 1000}}))
    warning = S.learning_warning(tmp_path)
    assert "`mlm-s0` (0.30 nats)" in warning and "context-free baseline on the same tokens" in warning
    text = S.write_summary(*_tables(_paper_like), tmp_path)
    assert "| mlm-s0 | 5.100 | 6.000 | 5.400 | 0.300 | 0.900 | 5.600 (6.100) | 1000 | **no** |" in text


def test_a_model_at_the_unigram_plateau_makes_the_run_no_evidence(tmp_path):
    run = _learning_run(tmp_path, {"hybrid-s0": 1.2, "mlm-s0": 0.3, "mlm-s1": None})
    warning = S.learning_warning(run)
    assert "not evidence about the claims" in warning and "`mlm-s0` (0.30 nats)" in warning
    assert "hybrid-s0" not in warning
    metrics, diffs = _tables(_paper_like)
    text = S.write_summary(metrics, diffs, run)
    assert text.splitlines()[0] == f"> {warning}"  # the first line, before any verdict
    assert "| mlm-s0 | 5.700 | 6.000 | – | – | 0.300 | – (–) | – | **no** |" in text
    assert "| mlm-s1 | – | – | – | – | – | – (–) | – | unavailable |" in text
    assert S.learning_warning(tmp_path / "empty").startswith("Learning check unavailable")


def test_05_variants_in_models_never_enter_the_main_check_and_their_own_precondition_is_said(tmp_path):
    """05 trains its variants into the same models/ folder: the main study's learning check, numerics and training
    lines read only the models its evaluation read; a variant that misses the precondition makes its comparisons
    (not the main study) no evidence, said in 05's section."""
    from jepa_core.study import ablations

    run = _learning_run(tmp_path, {"hybrid-s0": 1.2, "mlm-s0": 0.9, "hybrid-shared-s0": 0.3, "mlm-flops-s0": 1.8})
    main = {"hybrid-s0": "x", "mlm-s0": "x"}
    for results, models in (("results", main), ("ablations/results", {**main, "hybrid-shared-s0": "x",
                                                                      "mlm-flops-s0": "x", "all-MiniLM-L6-v2": "x"})):
        (run / results).mkdir(parents=True)
        (run / results / "evaluation.json").write_text(json.dumps({"models": models}))
    assert S.learning_table(run)["model"].tolist() == ["hybrid-s0", "mlm-s0"]
    assert S.learning_warning(run) is None  # before: "This run is not evidence", naming hybrid-shared-s0
    assert set(S.run_context(run)["training"]) == {"hybrid-s0", "mlm-s0"}
    assert S.variants_not_learned(run) == [("hybrid-shared-s0", pytest.approx(0.3))]
    empty = pd.DataFrame(columns=["variant", "baseline", "claim_unadjusted", "verdict", "note"])
    section = ablations.summary_section(empty, S.variants_not_learned(run))
    assert "> **Not evidence: the comparisons with hybrid-shared.** The validation MLM loss of `hybrid-shared-s0` " \
           "(0.30 nats)" in section
    assert S.precondition_sentence([]) is None


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
    at_chance = metrics["metric"].isin(HEADLINE_METRIC.values()) & (metrics["task"] == "cola")
    metrics.loc[at_chance, "chance"] = 0.6  # above both models' CIs
    v = claims.claim_c5(metrics, diffs)
    assert v.verdict == INCONCLUSIVE
    verdicts = v.table.set_index("task")["verdict"]
    assert verdicts["cola"] == "inconclusive (at chance)" and verdicts["sst2"] == REPRODUCED


def test_summary_counts_per_task_the_encoders_that_beat_random_init(tmp_path):
    run = _learning_run(tmp_path, {"hybrid-s0": 1.2, "mlm-s0": 0.9})
    (run / "results").mkdir(exist_ok=True)
    rows = []
    for task, metric, beats in (("sst2", "accuracy", (True, False, True, True)), ("stsb", "spearman", (False,) * 4)):
        for (model, seed), b in zip([("hybrid", 0), ("hybrid", 1), ("mlm", 0), ("mlm", 1)], beats):
            rows.append(dict(model=model, seed=seed, task=task, pooling="mean", metric=metric, value=0.7,
                             random_init=0.6 + 0.01 * seed, random_init_seed=seed, diff=0.1, ci_low=0.05 if b else -0.1,
                             ci_high=0.2, beats_random_init=b))
    pd.DataFrame(rows).to_csv(run / "results" / "vs_random_init.csv", index=False)
    metrics, diffs = _tables(_paper_like)
    text = S.write_summary(metrics, diffs, run)
    assert "against the random-init encoder of its own seed" in text
    assert "| sst2 | mean | accuracy | 3 of 4 | hybrid 1/2, mlm 2/2 | 0.600, 0.610 |" in text
    assert "| stsb | mean | spearman | 0 of 4 | hybrid 0/2, mlm 0/2 | 0.600, 0.610 |" in text


@pytest.mark.parametrize("seeds", [(0, 1, 2, 3, 4), (0,)])
def test_console_verdicts_repeat_the_summary_verdicts_with_the_headline_interval(tmp_path, seeds):
    metrics, diffs = _tables(_paper_like, seeds=seeds)
    (tmp_path / "results").mkdir()
    metrics.to_csv(tmp_path / "results" / "metrics.csv", index=False)
    diffs.to_csv(tmp_path / "results" / "differences.csv", index=False)
    lines = S.console_verdicts(tmp_path)
    assert [line.split()[0] for line in lines] == ["C1", "C2", "C3", "C4", "C5"]
    if len(seeds) == 1:
        assert all(f": {INCONCLUSIVE} ({claims.ONE_SEED}) | " in line and "CIs above" not in line for line in lines)
        assert lines[0].endswith("sst2 uniformity (mean): -0.100 [–, –]")
    else:
        counts = [1, 15, 6, 5, 5]
        assert all(f": {REPRODUCED} (confirmatory: {k} of {k} cells decided, Holm over 32) | " in line
                   for k, line in zip(counts, lines))
        assert " | hybrid − MLM sst2 uniformity (mean): -0.100 [-0.120, -0.080], Holm p 0.00" in lines[0]
        assert "hybrid − MLM sst2 effective_rank (max): 0.100 [0.080, 0.120], Holm p" in lines[1]
