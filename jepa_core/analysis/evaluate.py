"""Evaluate frozen encoders on GLUE: probes, geometry, lexical probes -> tidy tables with CIs.

    evaluate({"hybrid": [dir, ...], "mlm": [dir, ...]}, params, out_dir, wiki_sentences)
    python -m jepa_core.analysis.evaluate --params parameters/smoke.yaml --model hybrid=DIR --model mlm=DIR --out DIR
        [--set eval.poolings=[mean] ...]

Several checkpoint folders under one name are pre-training seeds. For every model x task x
pooling: encode train/dev once (cached, shared by all poolings), pool, fit the linear probe on
train, predict dev; then geometry on a seeded dev subsample, the two lexical probes and the
semantic/lexical balance. A majority-class baseline and a random-init encoder of the same
architecture are evaluated alongside. Label-free metrics and the lexical probes also run on
held-out Wikipedia sentences (task "wiki": half trains the lexical probes, half is reported).

Where (issue 22, backend.py): with a GPU every unit in this process, encoder, probes, geometry and learned
poolings on it; on the CPU units in eval_workers() single-threaded processes, numpy. The same code.

Statistics (all in stats.py; this module only builds the bootstrap arrays): every value gets a
95% percentile bootstrap CI over dev examples. All models and seeds share the same resamples of a
task, so differences (hybrid - mlm, or the first two models when those names are absent) are
paired: per seed, CI and p (bootstrap standard error) from the resampled differences
(stats.paired_difference); over seeds, one seed-level row per comparison whose interval covers
both pre-training seeds and dev examples (stats.seed_level_difference; NaN with one seed). Holm
corrects the seed-level p-values over the whole grid; integer-valued metrics (rank90) get a CI but
no p (geometry.UNTESTED). Geometry metrics use at most GEOMETRY_BOOT resamples (each costs an
eigendecomposition); the shifted plug-ins among them (geometry.RECENTRED) are recentred
(stats.recentred): resamples contain duplicated points, which lowers spectral metrics (effective
rank ~30% lower at n=200, d=384) and shifts centred uniformity, so an uncorrected percentile
interval would often not even contain the measured value.

Output layout (`out_dir/`):
    results/metrics.csv|.parquet      model, objective, seed, task, pooling, metric, value, ci_low,
                                      ci_high, n, chance, note (docs/DESIGN.md); majority rows have
                                      pooling "none"
    results/differences.csv|.parquet  task, pooling, metric, model_a, model_b, level, seed, n_seeds, a, b
                                      (their values; seed means on pooled rows), diff = a - b, ci_low,
                                      ci_high, p, p_holm, se_examples, sd_seeds, n; level "seed": one
                                      row per seed (example-level), "pooled": seed NaN, over all seeds
    results/spectra.csv               model, objective, seed, task, pooling, index, eigenvalue (load_spectra)
    results/predictions.parquet       model, seed, task, pooling, example, y_true, y_pred (dev split)
    results/embeddings/<task>/examples.parquet          example, sentence1, sentence2, label of the
                                                         geometry subsample (row order of the .npy)
    results/embeddings/<task>/<model>-s<seed>/<pooling>.npy   their (n, H) float32 dev embeddings
                                      (the random-init encoder: <task>/random_init/<pooling>.npy)
    results/seeds.csv                 mean, sd, n_seeds of each metric over pre-training seeds
    results/measures.npz              every (model, seed, task, pooling, metric) value with its bootstrap array
                                      and the settings and weights it was measured with (load_measures):
                                      notebook 05 takes the main runs from it instead of evaluating them again
    results/evaluation.json           tasks, skipped_tasks {task: reason}, notes, models, seconds, device
    results/skipped.json              {task: reason}
    cache/encode/                     token-state cache (encode.py), safe to delete
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from jepa_core import cpu, progress
from jepa_core.analysis import geometry, lexical, pooling, probes, stats
from jepa_core.analysis.backend import evaluation_device
from jepa_core.analysis.encode import TokenStates, encode, fingerprint, load_encoder
from jepa_core.analysis.measures import MEASURES, reuse_results, save_measures
from jepa_core.analysis.tables import (
    METRIC_COLUMNS,
    Measure,
    ModelFolder,
    Results,
    _pairs,
    differences,
    versus_random_init,
)
from jepa_core.analysis.units import eval_workers, evaluate_encoders  # noqa: F401  (evaluate.eval_workers)
from jepa_core.config import HEADLINE_METRIC, Params, ParamsError, add_set_option, load_params, parse_overrides
from jepa_core.data import glue

GEOMETRY_BOOT = 200  # resamples for geometry CIs (cost: one d x d eigendecomposition each)
STS_POSITIVE = 4.0  # STS-B pairs scoring >= 4 are positive pairs for alignment
# ---------------------------------------------------------------- data

@dataclass
class Lexical:
    """Labels of one lexical probe: fitted on the train sentences, applied to dev (-1 = dropped)."""
    train: np.ndarray
    dev: np.ndarray
    chance: float
    classes: int


@dataclass
class TaskData:
    task: str
    train: pd.DataFrame  # sentence1, sentence2, label (+ example: row in the GLUE file)
    dev: pd.DataFrame
    extra: dict[str, pd.DataFrame]  # metric suffix -> another dev set (MNLI mismatched)
    geo: np.ndarray  # dev rows of the geometry subsample
    boot: np.ndarray  # (B, n_dev) resamples of dev rows
    geo_boot: np.ndarray  # (B_geo, n_geo) resamples of geometry-subsample rows
    split_note: str = ""  # e.g. MNLI trained on dev_mismatched
    lexical: dict[str, Lexical] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # for evaluation.json

    @property
    def labelled(self) -> bool:
        return self.task != "wiki"

    @property
    def pair(self) -> bool:
        return self.dev["sentence2"].notna().any()


def _task_seed(seed: int, task: str) -> int:
    return seed * 1_000_003 + zlib.crc32(task.encode())  # stable across runs and Python versions


def _cap(df: pd.DataFrame, cap: int | None, rng: np.random.Generator) -> pd.DataFrame:
    df = df.reset_index(drop=True).rename_axis("example").reset_index()
    if cap is not None and len(df) > cap:
        df = df.iloc[np.sort(rng.choice(len(df), cap, replace=False))].reset_index(drop=True)
    return df


def _texts(df: pd.DataFrame) -> list[str]:
    """The text an embedding encodes: the sentence, or both sentences of a pair."""
    return [a if b is None or b != b else f"{a} {b}" for a, b in zip(df["sentence1"], df["sentence2"])]


def _lexical_labels(train_texts: list[str], dev_texts: list[str],
                    min_count: int) -> tuple[dict[str, Lexical], list[str]]:
    """Most-frequent-word and word-content labels; classes with < min_count train examples are dropped
    so that the probe's stratified CV has every class in every fold."""
    out, notes = {}, []
    # word content: skip the function words (Conneau et al.: top 100 of a large corpus; fewer for a
    # small train subset, else no mid-frequency word is left)
    def word_content(texts, classes=None):
        return lexical.word_content_labels(
            texts, skip_top=min(100, len(train_texts) // 20), min_count=min_count, classes=classes)
    for metric, make in (("lexical_mfw", lexical.most_frequent_word_labels), ("lexical_wc", word_content)):
        try:
            y, _, classes = make(train_texts)
        except ValueError as err:
            notes.append(f"{metric} skipped: {err}")
            continue
        counts = np.bincount(y[y >= 0], minlength=len(classes))
        keep = [c for c, k in zip(classes, counts) if k >= min_count]
        if len(keep) < 2:
            notes.append(f"{metric} skipped: fewer than 2 classes with >= {min_count} train sentences")
            continue
        y_train, _, _ = make(train_texts, classes=keep)
        y_dev, _, _ = make(dev_texts, classes=keep)
        if (y_dev >= 0).sum() == 0:
            notes.append(f"{metric} skipped: no dev sentence has one of the {len(keep)} classes")
            continue
        out[metric] = Lexical(y_train, y_dev, lexical.chance_level(y_train[y_train >= 0], y_dev[y_dev >= 0]), len(keep))
    return out, notes


def _task_data(task: str, train: pd.DataFrame, dev: pd.DataFrame, params: Params, extra=None,
               split_note="") -> TaskData:
    """Fix the task's geometry subsample, its resamples and its lexical labels (the same for every model)."""
    e, seed = params.eval, _task_seed(params.seed, task)
    geo = np.sort(np.random.default_rng(seed + 1).choice(len(dev), min(e.geometry_samples, len(dev)), replace=False))
    lexical_labels, notes = _lexical_labels(_texts(train), _texts(dev), e.cv_folds)
    return TaskData(task, train, dev, extra or {}, geo, boot=stats.resamples(len(dev), e.bootstrap, seed + 2),
                    geo_boot=stats.resamples(len(geo), min(e.bootstrap, GEOMETRY_BOOT), seed + 3),
                    split_note=split_note, lexical=lexical_labels,
                    notes=[f"{task}: {n}" for n in ([split_note] if split_note else []) + notes])


def prepare_task(task: str, params: Params) -> TaskData:
    """Load and cap the train/dev splits of a GLUE task (seeded subsets)."""
    e = params.eval
    train_split, dev_split, note = glue.task_splits(task, e.glue_dir)
    rng = np.random.default_rng(_task_seed(params.seed, task))
    train = _cap(glue.load_task(task, train_split, e.glue_dir), e.max_train_examples, rng)
    dev = _cap(glue.load_task(task, dev_split, e.glue_dir), e.max_dev_examples, rng)
    extra = {}
    if task == "mnli" and train_split == "train" and glue.split_available(task, "dev_mismatched", e.glue_dir):
        extra["mismatched"] = _cap(glue.load_task(task, "dev_mismatched", e.glue_dir), e.max_dev_examples, rng)
    return _task_data(task, train, dev, params, extra, note)


def prepare_wiki(sentences: list[str], params: Params) -> TaskData:
    """Held-out Wikipedia sentences: a seeded half trains the lexical probes, the other half is reported."""
    rng = np.random.default_rng(_task_seed(params.seed, "wiki"))
    sentences = [s for s in sentences if s and s.strip()]
    if len(sentences) > params.eval.wiki_sentences:
        sentences = [sentences[i] for i in np.sort(rng.choice(len(sentences), params.eval.wiki_sentences,
                                                              replace=False))]
    order = rng.permutation(len(sentences))
    def frame(rows):
        return pd.DataFrame({"example": rows, "sentence1": [sentences[i] for i in rows],
                             "sentence2": [None] * len(rows), "label": np.zeros(len(rows), int)})
    half = len(sentences) // 2
    return _task_data("wiki", frame(np.sort(order[:half])), frame(np.sort(order[half:])), params)


# ---------------------------------------------------------------- one encoder

def _per_example_mean(values: np.ndarray, idx: np.ndarray) -> Measure:
    """Mean of per-example values (NaN = example not counted) and its bootstrap on resamples idx."""
    ok = np.isfinite(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        sums, counts = np.where(ok, values, 0.0)[idx].sum(1), ok[idx].sum(1)
        boot = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return Measure(float(values[ok].mean()), boot, int(ok.sum()))


def _task_measures(task: str, y_true: np.ndarray, y_pred: np.ndarray, idx: np.ndarray) -> dict[str, Measure]:
    full = probes.task_metrics(task, y_true, y_pred)
    return {name: Measure(v, probes.bootstrap_metric(name, y_true, y_pred, idx), len(y_true)) for name,
            v in full.items()}


def _geometry(X: np.ndarray, labels: np.ndarray | None, idx: np.ndarray) -> dict[str, Measure]:
    """Every geometry metric of the embeddings X with its bootstrap on resamples idx; the shifted
    plug-ins (geometry.RECENTRED) are flagged for recentring."""
    res = geometry.GeometryResampler(X, labels)
    full = res(None)
    boot = res.resamples(idx, workers=cpu.parallel_workers(8))
    return {name: Measure(float(full[k]), boot[:, k], len(X), bool(res.recentre[k])) for k,
            name in enumerate(res.names)}


def _spectrum_rows(enc: ModelFolder, task: str, pool: str, X: np.ndarray) -> pd.DataFrame:
    lam = geometry.spectrum(X)
    return pd.DataFrame({"model": enc.name, "objective": enc.objective, "seed": enc.seed, "task": task,
                         "pooling": pool, "index": np.arange(len(lam)), "eigenvalue": lam})


def _encode_split(model, tokenizer, df: pd.DataFrame, e, fp: str, cache: Path, name: str,
                  siamese: bool = False) -> TokenStates:
    s2 = df["sentence2"].tolist() if df["sentence2"].notna().any() else None
    return encode(model, tokenizer, df["sentence1"].tolist(), s2, max_length=e.max_length, batch_size=e.batch_size,
                  pair_encoding="siamese" if siamese else e.pair_encoding, cache_dir=cache, cache_name=name,
                  model_fingerprint=fp)


def load_for_evaluation(enc: ModelFolder, params: Params) -> tuple[Any, Any, str]:
    """(model on the GPU if there is one, tokenizer, fingerprint) of one encoder."""
    # a random-init encoder is initialised with its own pre-training seed's number (one per seed, _encoders)
    model, tokenizer = load_encoder(enc.path, random_init=enc.random_init,
                                    seed=enc.seed if enc.random_init and enc.seed is not None else params.seed)
    if torch.cuda.is_available():
        model.to("cuda")
    return model, tokenizer, fingerprint(model, tokenizer)


def evaluate_encoder(enc: ModelFolder, datasets: list[TaskData], params: Params, out: Path, results: Results) -> None:
    """Every task of one encoder (evaluate_task), in this process."""
    loaded = load_for_evaluation(enc, params)
    for data in tqdm(datasets, desc=f"evaluate {enc.key}", unit="task"):
        evaluate_task(enc, data, loaded, params, out, results)


def evaluate_task(enc: ModelFolder, data: TaskData, loaded: tuple, params: Params, out: Path, results: Results) -> None:
    """Encode one task once, then pool, probe and measure it for every pooling."""
    e, task = params.eval, data.task
    model, tokenizer, fp = loaded
    cache = out / "cache" / "encode"
    unit = f"{enc.key}/{task}"
    states = {}
    for split, df in (("train", data.train), ("dev", data.dev), *data.extra.items()):
        progress.note(out, unit=unit, phase="encode", split=split, n=len(df))
        states[split] = _encode_split(model, tokenizer, df, e, fp, cache, f"{task}-{split}")
    sts_pairs = None
    if task == "stsb":  # siamese u, v for zero-shot cosine and alignment, whatever the pair encoding
        sts_pairs = _encode_split(model, tokenizer, data.dev, e, fp, cache, f"{task}-dev", siamese=True)
    pools = e.poolings if data.labelled else [p for p in e.poolings if p in pooling.FIXED]
    for i, pool in enumerate(pools, 1):
        progress.note(out, unit=unit, phase="pooling", pooling=pool, i=i, of=len(pools))
        note = ""
        if pool in pooling.LEARNED:
            ttype = probes.task_type(task)
            fitted = pooling.fit_learned_pooling(pool, states["train"], data.train["label"].to_numpy(), ttype,
                                                 max_length=e.max_length, epochs=e.learned_pooling_epochs,
                                                 seed=params.seed)
            transform, note = fitted.transform, f"{pool} pooling trained on train (best epoch {fitted.best_epoch + 1})"
        else:
            def transform(ts, pool=pool):
                return pooling.pool(ts, pool)
        features = {split: transform(ts) for split, ts in states.items()}
        cell = (enc, task, pool)
        semantic = _probe_task(cell, data, features, params, results, note) if data.labelled else None
        _measure_geometry(cell, data, features["dev"], transform, sts_pairs, params, out, results)
        _probe_lexical(cell, data, features, semantic, params, results)
    progress.note(out, unit=unit, phase="done")


def _probe_task(cell, data: TaskData, features: dict, params: Params, results: Results, note: str):
    """Linear probe on train, task metrics on dev (+ extra dev sets); returns the semantic score and its chance."""
    enc, task, pool = cell
    e, ttype = params.eval, probes.task_type(task)
    y_train, y_dev = data.train["label"].to_numpy(), data.dev["label"].to_numpy()
    probe = probes.fit_probe(features["train"], y_train, ttype, e.cv_folds, params.seed)
    y_pred = probe.predict(features["dev"])
    majority = probes.task_metrics(task, y_dev, probes.majority_prediction(y_train, len(y_dev), ttype))
    measures = _task_measures(task, y_dev, y_pred, data.boot)
    note = "; ".join(filter(None, [note, data.split_note,
                                   f"{'alpha' if ttype == 'regression' else 'C'}={probe.param:g}"]))
    for name, m in measures.items():
        results.add(enc, task, pool, name, m, majority[name], note)
    for suffix, df in data.extra.items():
        idx = stats.resamples(len(df), e.bootstrap, _task_seed(params.seed, f"{task}-{suffix}"))
        for name, m in _task_measures(task, df["label"].to_numpy(), probe.predict(features[suffix]), idx).items():
            results.add(enc, task, pool, f"{name}_{suffix}", m, note=f"dev_{suffix}")
    results.predictions.append(pd.DataFrame({"model": enc.name, "seed": enc.seed, "task": task, "pooling": pool,
                                             "example": data.dev["example"], "y_true": y_dev, "y_pred": y_pred}))
    return measures[HEADLINE_METRIC[task]], majority[HEADLINE_METRIC[task]]


def _measure_geometry(cell, data: TaskData, X_dev: np.ndarray, transform, sts_pairs, params: Params, out: Path,
                      results: Results) -> None:
    """Geometry of the seeded dev subsample; STS-B: zero-shot cosine and alignment of its siamese pairs."""
    enc, task, pool = cell
    siamese_pairs = data.pair and params.eval.pair_encoding == "siamese"
    X = X_dev[data.geo][:, :X_dev.shape[1] // 4] if siamese_pairs else X_dev[data.geo]  # [u, v, |u-v|, u*v] -> u
    y_dev = data.dev["label"].to_numpy()
    labels = y_dev[data.geo] if data.labelled and probes.task_type(task) == "classification" else None
    for name, m in _geometry(X, labels, data.geo_boot).items():
        results.add(enc, task, pool, name, m)
    results.spectra.append(_spectrum_rows(enc, task, pool, X))
    folder = out / "results" / "embeddings" / task / enc.key
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{pool}.npy", X.astype(np.float32))
    if sts_pairs is None:
        return
    u, v = transform(pooling.side_a(sts_pairs)), transform(sts_pairs.second)
    cos = probes.cosine_similarity(u, v)
    for name, value in probes.zero_shot_sts(u, v, y_dev).items():
        m = Measure(value, probes.bootstrap_metric(name, y_dev, cos, data.boot), len(y_dev))
        results.add(enc, task, pool, f"zeroshot_{name}", m, 0.0, "cosine of siamese embeddings, no training")
    g = data.geo
    sq = ((geometry.l2_normalise(u[g]) - geometry.l2_normalise(v[g])) ** 2).sum(1)
    per_pair = np.where(y_dev[g] >= STS_POSITIVE, sq, np.nan)
    if np.isfinite(per_pair).any():
        results.add(enc, task, pool, "alignment", _per_example_mean(per_pair, data.geo_boot),
                    note=f"siamese pairs scoring >= {STS_POSITIVE:g}")


def _probe_lexical(cell, data: TaskData, features: dict, semantic, params: Params, results: Results) -> None:
    """Lexical probes (labels from the text: every encoder gets the same targets) and the balance."""
    enc, task, pool = cell
    for metric, lab in data.lexical.items():
        kept, dev_kept = lab.train >= 0, lab.dev >= 0
        probe = probes.fit_probe(features["train"][kept], lab.train[kept], "classification", params.eval.cv_folds,
                                 params.seed)
        correct = np.full(len(lab.dev), np.nan)  # NaN: dev sentence without a label of this probe
        correct[dev_kept] = probe.predict(features["dev"][dev_kept]) == lab.dev[dev_kept]
        lex = _per_example_mean(correct, data.boot)
        results.add(enc, task, pool, metric, lex, lab.chance, f"{lab.classes} classes; chance = train-majority class")
        if metric != "lexical_mfw" or semantic is None:
            continue
        sem, sem_chance = semantic  # same resamples as lex: the balance's bootstrap is paired
        for name, value in lexical.balance(sem.value, sem_chance, lex.value, lab.chance).items():
            boot = np.array([lexical.balance(s, sem_chance, x, lab.chance)[name] for s, x in zip(sem.boot, lex.boot)])
            results.add(enc, task, pool, name, Measure(value, boot, sem.n),
                        note=f"{HEADLINE_METRIC[task]} vs lexical_mfw")


def evaluate_majority(data: TaskData, results: Results) -> None:
    """The constant baseline: the train split's majority class (mean score for STS-B) on dev."""
    ttype = probes.task_type(data.task)
    y_dev = data.dev["label"].to_numpy()
    pred = probes.majority_prediction(data.train["label"].to_numpy(), len(y_dev), ttype)
    note = "train-majority class" if ttype == "classification" else "train-mean score (correlation of a constant is 0)"
    for name, m in _task_measures(data.task, y_dev, pred, data.boot).items():
        results.add(None, data.task, "none", name, m, m.value, "; ".join(filter(None, [note, data.split_note])))


def load_spectra(run_dir: str | Path) -> pd.DataFrame:
    """The covariance eigenvalues written by evaluate (one row per eigenvalue)."""
    return pd.read_csv(Path(run_dir) / "results" / "spectra.csv")


@contextlib.contextmanager
def _one_thread_each():
    """One thread for BLAS and, on CPU, for torch: every call here is small (probe fits, 200-2000 point
    geometry, encoder batches), and on a shared 2-core machine thread barriers made them 5-50x slower
    (a 2-layer encoder: 0.6 s with 1 thread vs 5.4 s with 2). The cores are used by evaluating
    several encoders at once instead (evaluate_encoders). On GPU torch keeps its threads."""
    cpu_only = contextlib.nullcontext() if torch.cuda.is_available() else pooling.single_thread()
    with threadpool_limits(limits=1, user_api="blas"), cpu_only:
        yield


def _encoders(models: dict[str, Any], params: Params, objectives: dict[str, str] | None = None,
              random_init: bool | None = None) -> list[ModelFolder]:
    """models: name -> folder(s), one per seed of params.seeds, or {seed: folder} (seed None: an
    encoder without pre-training seeds, e.g. a reference encoder). objectives: name -> the
    `objective` column (default: the name)."""
    encoders = []
    for name, dirs in models.items():
        if isinstance(dirs, dict):
            seeds, dirs = list(dirs), list(dirs.values())
        else:
            dirs = [dirs] if isinstance(dirs, (str, Path)) else list(dirs)
            seeds = params.seeds if len(params.seeds) == len(dirs) else list(range(len(dirs)))
        for seed, path in zip(seeds, dirs):
            encoders.append(ModelFolder(name, (objectives or {}).get(name, name), seed, Path(path)))
    if (params.eval.random_init_baseline if random_init is None else random_init) and encoders:
        # one random-init encoder per pre-training seed (issue 21): "did pre-training do anything" is then asked
        # of each seed against an initialisation of its own, and the spread between initialisations is visible
        seeds = sorted({e.seed for e in encoders if e.seed is not None}) or [params.seed]
        encoders += [ModelFolder("random_init", "random_init", s, encoders[0].path, random_init=True) for s in seeds]
    return encoders


def _read_wiki(wiki_sentences) -> list[str] | None:
    if wiki_sentences is None or isinstance(wiki_sentences, list):
        return wiki_sentences
    path = Path(wiki_sentences)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return [str(s) for s in json.loads(text)]
    return [line.strip() for line in text.splitlines() if line.strip()]


def evaluate(models: dict[str, Any], params: Params, out_dir: str | Path, wiki_sentences=None, *,
             pairs: list[tuple[str, str]] | None = None, objectives: dict[str, str] | None = None,
             random_init: bool | None = None, reuse: dict[str, tuple[str | Path, str]] | None = None,
             device: str | torch.device | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Evaluate every model (name -> checkpoint folders, one per pre-training seed, or {seed: folder});
    write out_dir/results. pairs: the (a, b) comparisons of differences.csv (default: hybrid − mlm);
    objectives: name -> objective column; random_init: evaluate the random-init encoder (default:
    eval.random_init_baseline). Notebook 05 passes these for its variants (ablation_study.py).
    reuse: name -> (results folder of an earlier evaluation, the model's name there): its seeds are taken
    from that evaluation's measures.npz (`reuse_results`) instead of evaluated again, where it was made with
    the same evaluation settings. device: device-native evaluation (`evaluation_device`; default: the GPU
    where there is one, else the CPU path)."""
    start = time.perf_counter()
    device = evaluation_device(device)
    out = Path(out_dir)
    (out / "results").mkdir(parents=True, exist_ok=True)
    e = params.eval
    tasks, skipped = glue.available_tasks(e.tasks, e.glue_dir)
    results, notes = Results(), []
    with _one_thread_each():
        datasets = []
        for task in tasks:
            try:
                datasets.append(prepare_task(task, params))
            except glue.GlueUnavailable as err:  # no data: skipped, saying why; bad data (GlueDataError) stops here
                skipped[task] = str(err)
        wiki = _read_wiki(wiki_sentences)
        if wiki:
            datasets.append(prepare_wiki(wiki, params))
        notes += [n for d in datasets for n in d.notes]
        for data in datasets:  # which dev examples the embedding files hold, row by row
            folder = out / "results" / "embeddings" / data.task
            folder.mkdir(parents=True, exist_ok=True)
            data.dev.iloc[data.geo].reset_index(drop=True).to_parquet(folder / "examples.parquet")
        encoders = _encoders(models, params, objectives, random_init)
        pairs = _pairs(models) if pairs is None else pairs
        for data in datasets:
            if data.labelled:
                evaluate_majority(data, results)
        reused = reuse_results(reuse or {}, encoders, datasets, params, out)
        notes += [f"{key}: taken from {reuse[enc.name][0]} (evaluated there with the same settings)"
                  for enc in encoders for key in [enc.key] if key in reused]
        evaluate_encoders(encoders, datasets, params, out, results, device, reused)
        metrics_df = pd.DataFrame(results.rows, columns=METRIC_COLUMNS)
        differences_df = differences(results, encoders, pairs)

    res = out / "results"
    save_measures(results, res / MEASURES, params, encoders)
    metrics_df.to_csv(res / "metrics.csv", index=False)
    metrics_df.to_parquet(res / "metrics.parquet", index=False)
    differences_df.to_csv(res / "differences.csv", index=False)
    differences_df.to_parquet(res / "differences.parquet", index=False)
    versus_random_init(results, encoders).to_csv(res / "vs_random_init.csv", index=False)
    if results.spectra:
        pd.concat(results.spectra, ignore_index=True).to_csv(res / "spectra.csv", index=False)
    if results.predictions:
        pd.concat(results.predictions, ignore_index=True).to_parquet(res / "predictions.parquet", index=False)
    trained = metrics_df[metrics_df["model"] != "majority"]
    stats.aggregate_seeds(trained, ["model", "task", "pooling", "metric"]).to_csv(res / "seeds.csv", index=False)
    (res / "skipped.json").write_text(json.dumps(skipped, indent=2))
    (res / "evaluation.json").write_text(json.dumps({
        "tasks": [d.task for d in datasets], "skipped_tasks": skipped, "notes": list(dict.fromkeys(notes)),
        "models": {enc.key: str(enc.path) + (" (random init)" if enc.random_init else "") for enc in encoders},
        "comparisons": [f"{a} - {b}" for a, b in pairs], "seconds": round(time.perf_counter() - start, 1),
        "device": str(device) if device is not None else "cpu (worker processes)",
        "eval": params.to_dict()["eval"]}, indent=2))
    return metrics_df, differences_df


# ---------------------------------------------------------------- CLI

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")


def model_folder_problem(path: Path) -> str | None:
    """Why `path` is not an encoder folder evaluate can load (config.json, weights, tokenizer files), or None.
    Without this check transformers answers a folder that is not a model with advice to install
    sentencepiece or tiktoken."""
    missing = [what for what, names in (("config.json", ("config.json",)), ("weights", WEIGHT_FILES),
                                        ("tokenizer files", TOKENIZER_FILES))
               if not any((path / n).is_file() for n in names)]
    if not missing:
        return None
    hint = ""
    if (path / "encoder" / "config.json").is_file():
        hint = f"; {path / 'encoder'} looks like one"
    elif (path / "state.pt").is_file() or (path / "meta.json").is_file():
        hint = "; this looks like a training checkpoint: evaluate the exported encoder in <run>/models/<name>/"
    return (f"{path} is not a model folder: no {' / '.join(missing)} (expected a Hugging Face encoder folder "
            f"with config.json, weights ({WEIGHT_FILES[0]}) and a tokenizer ({TOKENIZER_FILES[0]}), such as "
            f"outputs/<run>/models/hybrid){hint}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jepa_core.analysis.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--params", required=True, help="parameter profile (YAML)")
    parser.add_argument("--model", action="append", required=True, metavar="NAME=PATH",
                        help="an HF checkpoint folder; repeat a NAME for several seeds")
    parser.add_argument("--out", required=True, help="output folder (results/ is written inside)")
    parser.add_argument("--wiki-sentences", help="held-out Wikipedia sentences (.json list or one per line)")
    add_set_option(parser, "eval.poolings=[mean]")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params, parse_overrides(args.sets))
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    models: dict[str, list[str]] = {}
    for spec in args.model:
        name, sep, path = spec.partition("=")
        if not sep or not name or not Path(path).is_dir():
            parser.error(f"--model {spec!r}: expected NAME=PATH with PATH an existing checkpoint folder")
        problem = model_folder_problem(Path(path))
        if problem:
            parser.error(f"--model {spec!r}: {problem}")
        models.setdefault(name, []).append(path)
    try:
        metrics_df, differences_df = evaluate(models, params, args.out, args.wiki_sentences)
    except glue.GlueDataError as exc:  # bad GLUE data: an error naming the file, never a skip
        print(f"error: GLUE data: {exc}", file=sys.stderr)
        return 1
    summary = json.loads((Path(args.out) / "results" / "evaluation.json").read_text())
    print(f"{len(metrics_df)} metric rows, {len(differences_df)} differences in {summary['seconds']} s -> "
          f"{Path(args.out) / 'results'}")
    for task, why in summary["skipped_tasks"].items():
        print(f"warning: skipped {task} (no data): {why}", file=sys.stderr)
    for note in summary["notes"]:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
