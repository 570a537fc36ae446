"""Notebook 05's logic (jepa_core/study/ablations.py, ablation_figures.py) on synthetic tables with known
answers; the chain test (test_chain.py) runs it for real on the smoke profile."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from jepa_core.analysis import evaluate, stats, tables
from jepa_core.config import load_params, params_from_dict
from jepa_core.report import ablation_figures, claims
from jepa_core.report.figures import GEOMETRY_LABELS
from jepa_core.study import ablations as study

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "parameters" / "smoke.yaml"


@pytest.fixture
def smoke():
    return load_params(SMOKE)


# ---------------------------------------------------------------- pairing by seed

def _measure(value: float, n_boot: int = 20) -> evaluate.Measure:
    return evaluate.Measure(value, np.full(n_boot, value), 100)  # no example noise: the seeds alone vary


def test_variant_is_paired_with_mlm_by_seed_and_gets_the_seed_level_interval():
    """seed k of the variant − seed k of MLM (the MLM encoders listed in another order), pooled by
    stats.seed_level_difference: mean of the per-seed differences, t interval over 3 seeds."""
    variant = {0: 1.0, 1: 2.0, 2: 4.0}
    mlm = {0: 0.5, 1: 1.0, 2: 1.0}  # per-seed differences 0.5, 1.0, 3.0
    results, encoders = evaluate.Results(), []
    for name, values, order in (("hybrid-fixed0.5", variant, [0, 1, 2]), ("mlm", mlm, [2, 0, 1])):
        for seed in order:
            encoders.append(evaluate.ModelFolder(name, name, seed, Path("unused")))
            results.measures[name, seed, "sst2", "mean", "uniformity"] = _measure(values[seed])
    table = tables.differences(results, encoders, [("hybrid-fixed0.5", "mlm")])
    per_seed = table[table["level"] == "seed"].set_index("seed")
    assert per_seed["diff"].to_dict() == pytest.approx({0: 0.5, 1: 1.0, 2: 3.0})
    pooled = table[table["level"] == "pooled"].iloc[0]
    d = np.array([0.5, 1.0, 3.0])
    half = scipy_stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    assert pooled["diff"] == pytest.approx(1.5) and pooled["n_seeds"] == 3
    assert (pooled["ci_low"], pooled["ci_high"]) == pytest.approx((1.5 - half, 1.5 + half))
    assert (pooled["model_a"], pooled["model_b"]) == ("hybrid-fixed0.5", "mlm")


# ---------------------------------------------------------------- effects and verdicts

def _claim_rows(variant: str, ci: tuple[float, float, float], n_seeds: int = 3, baseline: str = "mlm") -> list[dict]:
    """Pooled difference rows of every cell C1–C4 read (SST-2 only), all with effect `ci` (diff, lo, hi)
    in the claimed direction's units: C1 and C3 claim a negative difference, C2 and C4 a positive one. p: the
    seed-level t test that goes with the interval (S − 1 df)."""
    diff, lo, hi = ci
    cells = [("uniformity", "mean", -1), ("lexical_mfw", "mean", -1), ("balance_diff", "mean", +1)]
    cells += [(m, "max", +1) for m in claims.SPECTRAL_METRICS]
    se = (hi - lo) / 2 / scipy_stats.t.ppf(0.975, n_seeds - 1) if n_seeds > 1 else np.nan
    p = 2 * scipy_stats.t.sf(abs(diff) / se, n_seeds - 1) if n_seeds > 1 else np.nan
    rows = []
    for metric, pool, sign in cells:
        bounds = sorted((sign * lo, sign * hi)) if n_seeds > 1 else (np.nan, np.nan)
        rows.append(dict(task="sst2", pooling=pool, metric=metric, model_a=variant, model_b=baseline, level="pooled",
                         seed=None, n_seeds=n_seeds, a=np.nan, b=np.nan, diff=sign * diff, ci_low=bounds[0],
                         ci_high=bounds[1], p=p, p_holm=np.nan, se=se, se_examples=np.nan, sd_seeds=np.nan, n=100))
        if n_seeds == 1:
            rows.append({**rows[-1], "level": "seed", "seed": 0, "ci_low": sign * lo, "ci_high": sign * hi})
    return rows


def _metrics(models) -> pd.DataFrame:
    return pd.DataFrame([dict(model=m, objective=m, seed=0, task="sst2", pooling="mean", metric="accuracy", value=0.6,
                              ci_low=0.5, ci_high=0.7, n=100, chance=0.5, note="") for m in models])


def test_effect_table_decides_only_the_declared_comparisons_over_05s_family():
    differences = pd.DataFrame(_claim_rows("mlm-flops", (-0.1, -0.11, -0.09))  # opposite side everywhere
                               + _claim_rows("hybrid-fixed0.5", (0.05, -0.02, 0.12))  # covers 0
                               + _claim_rows("hybrid-learned", (0.1, 0.09, 0.11)))  # claimed side, not declared
    effects = study.effect_table(_metrics(["hybrid-learned", "hybrid-fixed0.5", "mlm-flops", "mlm"]), differences)
    assert list(dict.fromkeys(effects["variant"])) == ["hybrid-learned", "mlm-flops", "hybrid-fixed0.5"]
    family = study.study_family(differences)
    assert len(family) == 2 * 4  # two declared comparisons present x (C1 cell + 3 spectral cells of SST-2)
    np.testing.assert_allclose(family["p_holm"], stats.holm(family["p"].to_numpy(float)))
    first = effects.groupby(["variant", "claim"])["verdict"].first().unstack()
    assert (first.loc["mlm-flops", ["C1", "C2"]] == claims.NOT_REPRODUCED).all()
    assert (first.loc["hybrid-fixed0.5", ["C1", "C2"]] == claims.INCONCLUSIVE).all()
    # rows that decide no claim: C3 / C4, the undeclared main hybrid − MLM, C1's context rows
    assert (effects.loc[effects["claim"].isin(["C3", "C4"]), "verdict"] == claims.EXPLORATORY).all()
    main = effects[effects["variant"] == "hybrid-learned"]
    assert (main["verdict"] == claims.EXPLORATORY).all() and (main["claim_unadjusted"] == claims.REPRODUCED).all()
    assert list(first.columns) == ["C1", "C2", "C3", "C4"]  # C5 (parity) is not an effect to explain
    c1 = effects[(effects["claim"] == "C1") & (effects["metric"] == "uniformity")].set_index("variant")
    assert c1.loc["hybrid-learned", ["diff", "ci_low", "ci_high"]].tolist() == pytest.approx([-0.1, -0.11, -0.09])
    assert len(effects[(effects["claim"] == "C2") & (effects["variant"] == "mlm-flops")]) == 3  # 3 spectral metrics
    sentences = study.effect_sentences(effects)
    assert sentences[0].startswith("**hybrid-learned** (the main hybrid (λ learned)) − MLM: C1 exploratory: "
                                   "reproduced on the unadjusted intervals (sst2 uniformity -0.100 [-0.110, -0.090])")
    assert "**mlm-flops** (MLM at the hybrid's FLOPs) − MLM: C1 not reproduced (confirmatory, Holm over 05's family;" \
        in sentences[1]


def test_the_equal_flops_comparison_is_in_05s_family():
    differences = pd.DataFrame(_claim_rows("hybrid-learned", (0.1, 0.09, 0.11), baseline="mlm-flops")
                               + _claim_rows("hybrid-learned", (0.1, 0.09, 0.11)))
    family = study.study_family(differences)
    assert set(zip(family["variant"], family["baseline"])) == {("hybrid-learned", "mlm-flops")}
    effects = study.effect_table(_metrics(["hybrid-learned", "mlm-flops", "mlm"]), differences)
    flops = effects[(effects["baseline"] == "mlm-flops") & effects["claim"].isin(["C1", "C2"])]
    assert (flops.loc[flops["metric"] != "uniformity_centred", "verdict"] == claims.REPRODUCED).all()


def test_the_main_hybrid_is_also_compared_with_mlm_at_its_flops():
    assert study.study_pairs(["hybrid-learned", "hybrid-fixed0.5", "mlm-flops"]) == [
        ("hybrid-learned", "mlm"), ("hybrid-fixed0.5", "mlm"), ("mlm-flops", "mlm"), ("hybrid-learned", "mlm-flops")]
    assert ("hybrid-learned", "mlm-flops") not in study.study_pairs(["hybrid-fixed0.5", "mlm-flops"])


def test_equal_flops_rows_come_last_and_stay_out_of_the_forest(tmp_path):
    equal = [dict(r, model_b="mlm-flops") for r in _claim_rows("hybrid-learned", (0.01, -0.02, 0.04))]
    differences = pd.DataFrame(equal + _claim_rows("mlm-flops", (0.1, 0.05, 0.15))
                               + _claim_rows("hybrid-learned", (0.1, 0.05, 0.15)))
    effects = study.effect_table(_metrics(["hybrid-learned", "mlm-flops", "mlm"]), differences)
    pairs = list(dict.fromkeys(zip(effects["variant"], effects["baseline"])))
    assert pairs == [("hybrid-learned", "mlm"), ("mlm-flops", "mlm"), ("hybrid-learned", "mlm-flops")]
    last = effects[effects["baseline"] == "mlm-flops"]
    assert (last.loc[last["claim"].isin(["C1", "C2"]) & (last["metric"] != "uniformity_centred"), "verdict"]
            == claims.INCONCLUSIVE).all()
    assert last[last["metric"] == "uniformity"]["diff"].tolist() == pytest.approx([-0.01])  # C1's sign: −diff
    sentences = study.effect_sentences(effects)
    assert sentences[-1].startswith("**hybrid-learned** (the main hybrid (λ learned)) − **mlm-flops** (MLM at the "
                                    "hybrid's FLOPs: equal FLOPs): C1 inconclusive (confirmatory")
    ax = [a for a in ablation_figures.forest(effects, "C1").axes if a.get_visible()][0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["hybrid-learned", "mlm-flops"]  # variant − MLM only
    # an effects.csv written before the equal-FLOPs comparison has no baseline column: still one sentence a variant
    older = effects[effects["baseline"] == "mlm"].drop(columns="baseline")
    assert [s.split(" (")[0] for s in study.effect_sentences(older)] == ["**hybrid-learned**", "**mlm-flops**"]
    # read back from effects.csv (empty notes become NaN): still seed-level, never "one seed"
    path = tmp_path / "effects.csv"
    effects.to_csv(path, index=False)
    assert not any("one seed" in s for s in study.effect_sentences(pd.read_csv(path)))


def test_one_seed_effects_are_inconclusive_and_say_why():
    effects = study.effect_table(_metrics(["hybrid-shared", "mlm"]),
                                 pd.DataFrame(_claim_rows("hybrid-shared", (0.1, 0.05, 0.15), n_seeds=1)))
    assert (effects["claim_unadjusted"] == claims.INCONCLUSIVE).all() and effects["ci_low"].isna().all()
    assert set(effects["verdict"]) == {claims.INCONCLUSIVE, claims.EXPLORATORY}
    assert effects["note"].str.contains(claims.ONE_SEED).all()
    assert "(one seed: not seed-level evidence)" in study.effect_sentences(effects)[0]


def test_summary_section_is_replaced_not_repeated(tmp_path):
    (tmp_path / "summary.md").write_text("# Summary\n\n## C1: x\ntext\n\n## What drives the effect\nstale line\n\n"
                                         "## Later\nkept\n")
    effects = study.effect_table(_metrics(["hybrid-learned", "mlm"]),
                                 pd.DataFrame(_claim_rows("hybrid-learned", (0.1, 0.05, 0.15))))
    for _ in range(2):
        study.write_summary_section(tmp_path, effects)
    text = (tmp_path / "summary.md").read_text()
    assert text.count(study.SECTION) == 1 and "stale line" not in text
    assert "## C1: x\ntext" in text and "## Later\nkept" in text and "- **hybrid-learned**" in text


# ---------------------------------------------------------------- runs, models, reference encoders

def test_study_models_reuse_main_runs_and_add_reference_encoders(smoke, tmp_path):
    models, objectives = study.study_models(smoke, tmp_path)
    assert models["mlm"] == {0: tmp_path / "models" / "mlm"}  # the main MLM run is the baseline, reused
    assert models["hybrid-fixed0.5"] == {0: tmp_path / "models" / "hybrid-fixed0.5-s0"}
    assert models["mlm-flops"] == {0: tmp_path / "models" / "mlm-flops-s0"}
    assert "all-MiniLM-L6-v2" not in models  # smoke lists no reference encoder (chain cost)
    smoke = load_params(SMOKE, {"eval.reference_models": ["all-MiniLM-L6-v2"]})
    models, objectives = study.study_models(smoke, tmp_path)
    (ref,) = models["all-MiniLM-L6-v2"].items()
    assert ref[0] is None and (ref[1] / "config.json").is_file()
    assert objectives == {"mlm": "mlm", "hybrid-fixed0.5": "hybrid", "mlm-flops": "mlm",
                          "all-MiniLM-L6-v2": study.REFERENCE}
    encoders = evaluate._encoders(models, smoke, objectives, random_init=False)
    assert [(e.key, e.objective, e.seed) for e in encoders] == [
        ("mlm-s0", "mlm", 0), ("hybrid-fixed0.5-s0", "hybrid", 0), ("mlm-flops-s0", "mlm", 0),
        ("all-MiniLM-L6-v2", study.REFERENCE, None)]  # a reference encoder has no pre-training seed
    assert study.trained_names(smoke) == ["hybrid-fixed0.5-s0", "mlm-flops-s0"]
    layer_models = study.layerwise_models(smoke, tmp_path)
    assert [m[:3] for m in layer_models] == [("hybrid", "hybrid", 0), ("mlm", "mlm", 0),
                                              ("hybrid-fixed0.5", "hybrid", 0), ("mlm-flops", "mlm", 0),
                                              ("all-MiniLM-L6-v2", study.REFERENCE, None)]


def test_off_when_nothing_is_listed(smoke):
    off = load_params(SMOKE, {"ablations.variants": [], "eval.reference_models": []})
    assert study.enabled(smoke) and not study.enabled(off) and study.trained_names(off) == []
    assert study.enabled(load_params(SMOKE, {"ablations.variants": [], "eval.reference_models": ["x"]}))


def test_reference_models_key_is_a_list_of_names(tmp_path):
    from jepa_core.config import ParamsError

    with pytest.raises(ParamsError, match="eval.reference_models"):
        load_params(SMOKE, {"eval.reference_models": "all-MiniLM-L6-v2"})
    with pytest.raises(FileNotFoundError, match="no config.json"):  # named when 05 resolves it, before any work
        study.reference_models(load_params(SMOKE, {"eval.reference_models": [str(tmp_path)]}))


def test_evaluate_study_uses_the_protocol_with_the_claims_poolings(smoke, tmp_path, monkeypatch):
    calls = {}
    monkeypatch.setattr(study, "evaluate", lambda models, params, out, wiki, **kw: calls.update(
        models=models, params=params, out=out, wiki=wiki, **kw) or ("m", "d"))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "wiki_sentences.json").write_text(json.dumps(["A sentence."]))
    assert study.evaluate_study(smoke, tmp_path) == ("m", "d")
    assert calls["pairs"] == study.study_pairs(smoke.ablations.variants) == [("hybrid-fixed0.5", "mlm"),
                                                                             ("mlm-flops", "mlm")]
    assert calls["params"].eval.poolings == ["mean", "max"] and calls["random_init"] is False
    assert calls["params"].eval.tasks == smoke.eval.tasks and calls["params"].seeds == smoke.seeds  # same resamples
    assert calls["out"] == tmp_path / "ablations" and calls["wiki"] == ["A sentence."]


def test_pretrain_variants_starts_the_longest_runs_first(smoke, tmp_path, monkeypatch):
    """Longest first: the two variants at the hybrid's FLOPs (in their order), then the cheaper runs."""

    params = params_from_dict({**smoke.to_dict(), "ablations": {
        "variants": ["hybrid-shared", "hybrid-fixed0.5", "mlm-flops"], "seeds": [0, 1]}})
    (tmp_path / "models" / "mlm").mkdir(parents=True)
    (tmp_path / "models" / "mlm" / "config.json").write_text("{}")
    jobs = []
    monkeypatch.setattr(study, "pretrain_runs", lambda j, *a, **k: jobs.extend(j) or {n: {} for n, *_ in j})
    study.pretrain_variants(params, tmp_path)
    # seed 1 is not a main run of the smoke profile (seeds [0]): its MLM baseline (0.57 of a hybrid's FLOPs
    # here) is trained too, before hybrid-shared (0.49)
    assert [name for name, *_ in jobs] == ["hybrid-fixed0.5-s0", "hybrid-fixed0.5-s1", "mlm-flops-s0",
                                           "mlm-flops-s1", "mlm-steps-s1", "hybrid-shared-s0", "hybrid-shared-s1"]


def test_pretrain_variants_trains_only_what_is_not_a_main_run(smoke, tmp_path, monkeypatch):

    with pytest.raises(FileNotFoundError, match="02_pretrain"):
        study.pretrain_variants(smoke, tmp_path)
    (tmp_path / "models" / "mlm").mkdir(parents=True)
    (tmp_path / "models" / "mlm" / "config.json").write_text("{}")
    jobs = []
    monkeypatch.setattr(study, "pretrain_runs", lambda j, *a, **k: jobs.extend(j) or {n: {} for n, *_ in j})
    assert list(study.pretrain_variants(smoke, tmp_path)) == ["hybrid-fixed0.5-s0", "mlm-flops-s0"]
    (fixed, flops) = jobs
    assert fixed[1].jepa.lambda_mode == "fixed" and fixed[2:] == ("hybrid", 0)
    assert flops[1].train.budget == "flops" and flops[2:] == ("mlm", 0)


# ---------------------------------------------------------------- figures

def test_forest_draws_one_panel_per_claim_row_and_hollow_points_without_interval():
    rows = _claim_rows("hybrid-learned", (0.1, 0.05, 0.15)) + _claim_rows("hybrid-fixed0.5", (0.1, 0.05, 0.15))
    effects = study.effect_table(_metrics(["hybrid-learned", "hybrid-fixed0.5", "mlm"]), pd.DataFrame(rows))
    effects.loc[effects["variant"] == "hybrid-fixed0.5", ["ci_low", "ci_high"]] = np.nan
    fig = ablation_figures.forest(effects, "C2")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 3  # effective rank, stable rank, spectral entropy on SST-2
    ax = axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["hybrid-learned", "hybrid-fixed0.5"]
    hollow = [line for line in ax.lines if line.get_markerfacecolor() == "none"]
    assert len(hollow) == 1 and hollow[0].get_ydata()[0] == 1  # the variant without an interval
    assert len(ax.containers) == 1  # one error bar: hybrid-learned's interval



def test_a_variant_keeps_its_colour_across_figures_and_never_takes_mlms():
    from jepa_core.report.figures import MODEL_COLOURS

    alone = ablation_figures._palette(["hybrid-fixed0.5", "mlm-flops", "all-MiniLM-L6-v2"])  # a forest plot
    beside_mlm = ablation_figures._palette(["mlm", "all-MiniLM-L6-v2", "mlm-flops", "hybrid-fixed0.5"])  # points
    assert all(alone[n] == beside_mlm[n] for n in alone)
    assert MODEL_COLOURS["mlm"] not in alone.values() and len(set(beside_mlm.values())) == 4


def test_reference_encoders_are_lines_in_the_point_figures():
    metrics = _metrics(["mlm", "hybrid-fixed0.5"])
    ref = metrics.iloc[[0]].assign(model="all-MiniLM-L6-v2", objective=study.REFERENCE, value=0.8)
    fig = ablation_figures.model_points(pd.concat([metrics, ref]), [("sst2", "accuracy", "mean")], "t")
    ax = fig.axes[0]
    (line,) = [h for h in ax.lines if h.get_label() == "all-MiniLM-L6-v2 (reference)"]
    assert line.get_ydata()[0] == pytest.approx(0.8)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["mlm", "hybrid-fixed0.5"]  # references are not points


def test_layerwise_figure_bands_seeds_and_dashes_references():
    rows = [dict(model=m, objective=o, seed=s, task="wiki", layer=layer, metric="anisotropy", value=v + layer, n=10)
            for m, o, seeds in (("hybrid", "hybrid", (0, 1)), ("all-MiniLM-L6-v2", study.REFERENCE, (None,)))
            for s, v in zip(seeds, (0.1, 0.3)) for layer in range(3)]
    ax = ablation_figures.layerwise(pd.DataFrame(rows), "anisotropy").axes[0]
    hybrid, ref = ax.lines[:2]
    assert hybrid.get_ydata().tolist() == pytest.approx([0.2, 1.2, 2.2])  # mean over the two seeds
    assert ref.get_linestyle() == "--" and len(ax.collections) == 1  # one band: the model with seeds


@pytest.mark.parametrize("metric", sorted(GEOMETRY_LABELS))
def test_layerwise_y_labels_fit_below_the_title(metric):
    # a one-line label for uniformity was taller than the panel: it ran off the figure and into the suptitle
    rows = [dict(model="mlm", objective="mlm", seed=0, task=t, layer=layer, metric=metric, value=layer, n=10)
            for t in ("sst2", "wiki") for layer in range(5)]
    fig = ablation_figures.layerwise(pd.DataFrame(rows), metric)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)  # constrained layout places the labels at draw time
    title = fig._suptitle.get_window_extent(renderer)
    for ax in fig.axes:
        label = ax.yaxis.label.get_window_extent(renderer)
        assert label.y0 >= 0 and label.y1 <= title.y0, (metric, label, title)


# ---------------------------------------------------------------- a real (tiny) study with a reference encoder

@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """A run folder as 01-03 leave it (two tiny encoders, wiki sentences, geometry examples) and a tiny
    reference encoder: what 05 reads, at unit-test cost."""
    import torch
    from test_evaluate import MINILM, WIKI, make_glue, small_params
    from transformers import AutoTokenizer, BertConfig, BertModel

    root = tmp_path_factory.mktemp("study")
    tokenizer = AutoTokenizer.from_pretrained(MINILM)
    for seed, folder in enumerate((root / "models" / "hybrid", root / "models" / "mlm", root / "ref_encoder")):
        torch.manual_seed(seed)
        BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
                  ).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    params = small_params(make_glue(root / "glue"), ["sst2"])
    params.ablations.variants, params.eval.reference_models = [], [str(root / "ref_encoder")]
    (root / "data").mkdir()
    (root / "data" / "wiki_sentences.json").write_text(json.dumps(WIKI))
    for task, texts in (("sst2", WIKI[:30]), ("wiki", WIKI[30:60])):  # 03's geometry examples
        (root / "results" / "embeddings" / task).mkdir(parents=True)
        pd.DataFrame({"sentence1": texts}).to_parquet(root / "results" / "embeddings" / task / "examples.parquet")
    return root, params


def test_reference_encoder_gets_its_own_rows_with_the_protocol(tiny_study):
    root, params = tiny_study
    assert study.enabled(params) and study.pretrain_variants(params, root) == {}  # nothing to train
    metrics, differences = study.evaluate_study(params, root)
    ref = metrics[metrics["model"] == "ref_encoder"]
    assert set(metrics["model"]) == {"ref_encoder", "majority"} and differences.empty  # nothing to pair
    assert (ref["objective"] == study.REFERENCE).all() and ref["seed"].isna().all()
    assert set(ref["task"]) == {"sst2", "wiki"} and set(ref["pooling"]) == {"mean", "max"}
    assert {"accuracy", "uniformity", "effective_rank", "lexical_mfw"} <= set(ref["metric"])
    assert ((ref["ci_low"] <= ref["value"] + 1e-9) & (ref["value"] <= ref["ci_high"] + 1e-9)).all()
    saved = pd.read_csv(root / "ablations" / "results" / "metrics.csv")
    assert len(saved) == len(metrics) and (root / "ablations" / "results" / "embeddings" / "sst2" / "ref_encoder"
                                            / "mean.npy").is_file()
    effects = study.write_effects(root, metrics, differences)
    assert effects.empty and "no variant was compared" in study.summary_section(effects)


def test_layerwise_table_covers_main_models_and_the_reference(tiny_study):
    root, params = tiny_study
    table = study.layerwise_study(params, root)
    assert table.equals(pd.read_csv(root / "results" / "layerwise.csv", dtype={"seed": "Int64"}))
    assert set(table["model"]) == {"hybrid", "mlm", "ref_encoder"} and set(table["task"]) == {"sst2", "wiki"}
    for _, g in table.groupby(["model", "task"]):
        assert sorted(g["layer"].unique()) == [0, 1, 2] and len(g) == 9  # 3 metrics x (embeddings + 2 layers)
    ref = table[table["model"] == "ref_encoder"]
    assert (ref["objective"] == study.REFERENCE).all() and ref["seed"].isna().all()
    assert (table.loc[table["model"] == "hybrid", "seed"] == 0).all() and (table["n"] == 30).all()


def test_05_takes_the_main_runs_from_03_and_gets_the_same_tables(tmp_path):
    """Issue 22, item 3: 05 evaluates only its variants; the main hybrid (hybrid-learned) and MLM come from 03's
    results/measures.npz, and every table is identical to evaluating them again (smoke profile, tiny encoders)."""
    import shutil

    import torch
    from test_evaluate import MINILM, WIKI, make_glue, small_params
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(MINILM)
    for seed, name in enumerate(("hybrid", "mlm", "hybrid-fixed0.5-s0")):
        torch.manual_seed(seed)
        BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
                  ).save_pretrained(tmp_path / "models" / name)
        tokenizer.save_pretrained(tmp_path / "models" / name)
    params = small_params(make_glue(tmp_path / "glue"), ["sst2"])
    params.ablations.variants, params.eval.reference_models = ["hybrid-learned", "hybrid-fixed0.5"], []
    params.eval.poolings = ["mean", "max", "weighted"]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "wiki_sentences.json").write_text(json.dumps(WIKI))
    evaluate.evaluate({o: {0: tmp_path / "models" / o} for o in ("hybrid", "mlm")}, params, tmp_path, WIKI)  # 03
    assert study.reused_models(params, tmp_path) == {"mlm": (tmp_path / "results", "mlm"),
                                                     "hybrid-learned": (tmp_path / "results", "hybrid")}
    again = study.evaluate_study(params, tmp_path, reuse=False)
    shutil.move(tmp_path / "ablations", tmp_path / "evaluated_again")
    reused = study.evaluate_study(params, tmp_path)
    notes = json.loads((tmp_path / "ablations" / "results" / "evaluation.json").read_text())["notes"]
    assert sorted(n.split(":")[0] for n in notes if "taken from" in n) == ["hybrid-learned-s0", "mlm-s0"]
    for a, b in zip(again, reused):
        assert len(a) > 10
        pd.testing.assert_frame_equal(a, b)
    assert set(reused[1]["model_a"]) == {"hybrid-learned", "hybrid-fixed0.5"}
    for name in ("spectra.csv", "vs_random_init.csv", "seeds.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "evaluated_again" / "results" / name),
                                      pd.read_csv(tmp_path / "ablations" / "results" / name))
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "evaluated_again" / "results" / "predictions.parquet"),
                                  pd.read_parquet(tmp_path / "ablations" / "results" / "predictions.parquet"))
    for pool in ("mean", "max"):
        np.testing.assert_array_equal(
            np.load(tmp_path / "evaluated_again" / "results" / "embeddings" / "sst2" / "mlm-s0" / f"{pool}.npy"),
            np.load(tmp_path / "ablations" / "results" / "embeddings" / "sst2" / "mlm-s0" / f"{pool}.npy"))
