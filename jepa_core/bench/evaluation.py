"""The evaluation-speed benchmark (issue 22): the previous evaluation path next to the current one, one encoder,
every task and pooling, on the same encodings, in one process, interleaved rounds.

"today"  the evaluation as it was before issue 22: probes fitted by scikit-learn (StandardScaler +
         LogisticRegressionCV / RidgeCV, `sklearn_fit_probe`, kept here as the reference and nowhere else),
         everything else as evaluate.py does it
"new"    evaluate.py as it is: torch probes (L-BFGS-B on a torch objective, closed-form ridge) and the
         geometry resampler, on the device evaluate would use here (the GPU where there is one)

Both evaluate the same random-init encoder of the chosen profile's architecture (the cpu profile's by
default) on the same encodings (computed once, from evaluate's cache), with the profile's eval settings;
the ratio of their median wall times is `targets.evaluation_speedup`. Each round also times the parts
(encoding cache reads, task probes, lexical probes, learned poolings, geometry) and the last round's two
tables are compared cell by cell (`tolerance`): probe metrics in points, geometry relative, CI widths.
"""
from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from jepa_core.analysis import backend, geometry, pooling, probes
from jepa_core.analysis import evaluate as ev
from jepa_core.bench.config import BenchConfig
from jepa_core.config import TASK_METRICS, load_params
from jepa_core.data import glue
from jepa_core.data.corpus import validation_sentences
from jepa_core.model import build_encoder

REPO = Path(__file__).resolve().parents[2]
PROBE_METRICS = ({m for ms in TASK_METRICS.values() for m in ms} | {"lexical_mfw", "lexical_wc"}
                 | {"balance_diff", "balance_ratio", "balance_normalised"})
GEOMETRY_METRICS = set(geometry.LABEL_FREE) | {"alignment", "class_distance_ratio"}


# ---------------------------------------------------------------- the previous probes (the reference)

@dataclass
class SklearnProbe:
    pipeline: Any
    task_type: str
    param: float

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.pipeline.predict(X)


def _mean_log_likelihood(estimator, X: np.ndarray, y: np.ndarray) -> float:
    proba = estimator.predict_proba(X)
    column = np.searchsorted(estimator.classes_, y)
    return float(np.log(np.clip(proba[np.arange(len(y)), column], 1e-15, None)).mean())


def sklearn_fit_probe(X_train: np.ndarray, y_train: np.ndarray, task_type: str, cv_folds: int = 3, seed: int = 0,
                      device=None) -> SklearnProbe:
    """fit_probe as it was before issue 22: StandardScaler + LogisticRegressionCV (lbfgs, tol 1e-3, 200
    iterations, C by stratified CV log-likelihood) or RidgeCV (alpha by KFold R²), one BLAS thread."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegressionCV, RidgeCV
    from sklearn.model_selection import KFold, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X_train = np.asarray(X_train, dtype=np.float64)
    if task_type == "classification":
        folds = min(cv_folds, int(np.bincount(np.unique(y_train, return_inverse=True)[1]).min()))
        if folds < 2:
            raise ValueError("probe needs at least 2 train examples of every class")
        model = LogisticRegressionCV(Cs=list(probes.C_GRID), l1_ratios=(0.0,),
                                     cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
                                     scoring=_mean_log_likelihood, max_iter=200, tol=1e-3, random_state=seed,
                                     use_legacy_attributes=False)
    else:
        model = RidgeCV(alphas=probes.ALPHA_GRID, cv=KFold(cv_folds, shuffle=True, random_state=seed))
    pipeline = make_pipeline(StandardScaler(), model)
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipeline.fit(X_train, y_train)
    param = model.C_ if task_type == "classification" else model.alpha_
    return SklearnProbe(pipeline, task_type, float(np.ravel(param)[0]))


@contextlib.contextmanager
def previous_path():
    """evaluate.py with the scikit-learn probes (the path before issue 22) on the CPU path."""
    fit = probes.fit_probe
    probes.fit_probe = sklearn_fit_probe
    try:
        with backend.on_device(None):
            yield
    finally:
        probes.fit_probe = fit


# ---------------------------------------------------------------- timing the parts

PARTS = {"encoding (cache)": (ev, "_encode_split"), "task probes": (ev, "_probe_task"),
         "lexical probes": (ev, "_probe_lexical"), "learned poolings": (pooling, "fit_learned_pooling"),
         "geometry": (ev, "_measure_geometry")}


@contextlib.contextmanager
def _timed_parts(totals: dict[str, float]):
    """Adds each part's wall seconds to `totals` while the block runs (parts do not nest)."""
    saved = {}

    def wrap(name: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[name] = totals.get(name, 0.0) + time.perf_counter() - t0
        return timed

    for name, (module, attr) in PARTS.items():
        saved[name] = getattr(module, attr)
        setattr(module, attr, wrap(name, saved[name]))
    try:
        yield
    finally:
        for name, (module, attr) in PARTS.items():
            setattr(module, attr, saved[name])


# ---------------------------------------------------------------- the benchmark

def eval_params(cfg: BenchConfig):
    """The profile's eval settings (tiny: a few examples of SST-2 and wiki, two poolings)."""
    profile = REPO / "parameters" / f"{'smoke' if cfg.eval_tiny else cfg.eval_profile}.yaml"
    overrides: dict[str, Any] = {"eval.glue_dir": cfg.glue_dir, "eval.workers": 1}
    if cfg.eval_tiny:
        overrides.update({"eval.tasks": ["sst2"], "eval.poolings": ["mean", "weighted"], "eval.max_length": 32,
                          "eval.max_train_examples": 60, "eval.max_dev_examples": 40, "eval.geometry_samples": 30,
                          "eval.bootstrap": 20, "eval.wiki_sentences": 60, "eval.learned_pooling_epochs": 2,
                          "model.layers": 1, "model.hidden": 32, "model.heads": 2, "model.ffn": 64,
                          "model.max_position": 64})
    return load_params(profile, overrides)


def _encoder_folder(params, tokenizer, root: Path) -> ev.ModelFolder:
    """A random-init encoder of the profile's architecture, saved with the bench tokenizer."""
    torch.manual_seed(params.seed)
    model = build_encoder(params.model, len(tokenizer), tokenizer.pad_token_id)
    folder = root / "encoder"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return ev.ModelFolder("encoder", "encoder", 0, folder)


def _datasets(params, corpus) -> list[ev.TaskData]:
    tasks, _ = glue.available_tasks(params.eval.tasks, params.eval.glue_dir)
    datasets = []
    for task in tasks:
        try:
            datasets.append(ev.prepare_task(task, params))
        except glue.GlueUnavailable:
            pass
    everything = dataclasses.replace(corpus, validation=corpus.train + corpus.validation)
    datasets.append(ev.prepare_wiki(validation_sentences(everything, params.eval.wiki_sentences, seed=0), params))
    return datasets


def _encode_all(enc, datasets, loaded, params, root: Path) -> None:
    """Fill evaluate's encoding cache for every split (as evaluate_task encodes them): both paths then read
    the same encodings."""
    model, tokenizer, fp = loaded
    cache = root / "cache" / "encode"
    for data in datasets:
        for split, df in (("train", data.train), ("dev", data.dev), *data.extra.items()):
            ev._encode_split(model, tokenizer, df, params.eval, fp, cache, f"{data.task}-{split}")
        if data.task == "stsb":
            ev._encode_split(model, tokenizer, data.dev, params.eval, fp, cache, f"{data.task}-dev", siamese=True)


def compare_tables(today: pd.DataFrame, new: pd.DataFrame) -> dict[str, Any]:
    """The two metric tables side by side: probe metrics (accuracy, F1, MCC, ρ, lexical probes, balance) in
    points, geometry relative, CI widths as the relative change of the width."""
    key = ["model", "seed", "task", "pooling", "metric"]
    m = today.merge(new, on=key, suffixes=("_today", "_new"))
    probe = m[m["metric"].str.replace("_mismatched", "").isin(PROBE_METRICS)]
    geo = m[m["metric"].isin(GEOMETRY_METRICS)]
    width = lambda s: (m[f"ci_high_{s}"] - m[f"ci_low_{s}"]).to_numpy(float)  # noqa: E731
    w_today, w_new = width("today"), width("new")
    ok = np.isfinite(w_today) & np.isfinite(w_new) & (w_today > 0)
    rel_width = np.abs(w_new[ok] / w_today[ok] - 1.0)
    points = 100 * (probe["value_new"] - probe["value_today"]).abs()
    rel_geo = ((geo["value_new"] - geo["value_today"]).abs() / geo["value_today"].abs().clip(lower=1e-300))
    worst = probe.assign(points=points).sort_values("points", ascending=False).head(5)
    return {"rows_compared": int(len(m)), "rows_today": int(len(today)), "rows_new": int(len(new)),
            "probe_max_abs_points": float(points.max()) if len(points) else 0.0,
            "probe_cells_over_0_5_points": int((points > 0.5).sum()),
            "probe_cells": int(len(points)),
            "worst_probe_cells": [dict(task=r.task, pooling=r.pooling, metric=r.metric, today=r.value_today,
                                       new=r.value_new) for r in worst.itertuples()],
            "geometry_max_rel": float(rel_geo.max()) if len(rel_geo) else 0.0,
            "ci_width_max_rel_change": float(rel_width.max()) if rel_width.size else 0.0,
            "ci_width_cells_over_10pct": int((rel_width > 0.10).sum()),
            "within_tolerance": bool((points <= 0.5).all() and (rel_geo <= 1e-6).all() and (rel_width <= 0.10).all())}


def evaluation_benchmark(cfg: BenchConfig, tokenizer, corpus, progress: bool = True) -> dict[str, Any]:
    """Wall and CPU seconds of evaluating one encoder on every task and pooling, the previous path and the
    current one interleaved (`eval_rounds` rounds, the order alternating), their parts, and the tolerance
    check of their tables (see the module docstring)."""
    params = eval_params(cfg)
    device = ev.evaluation_device(None)
    with tempfile.TemporaryDirectory(prefix="bench_eval_") as tmp:
        root = Path(tmp)
        enc = _encoder_folder(params, tokenizer, root)
        datasets = _datasets(params, corpus)
        with ev._one_thread_each():
            loaded = ev.load_for_evaluation(enc, params)
            _encode_all(enc, datasets, loaded, params, root)
        wall: dict[str, list[float]] = {"today": [], "new": []}
        cpu: dict[str, list[float]] = {"today": [], "new": []}
        parts: dict[str, list[dict]] = {"today": [], "new": []}
        tables: dict[str, pd.DataFrame] = {}
        paths = {"today": previous_path, "new": lambda: backend.on_device(device)}
        order = ["today", "new"]
        with tqdm(total=2 * cfg.eval_rounds, desc="evaluation", disable=not progress) as bar:
            for r in range(cfg.eval_rounds):
                for name in (order if r % 2 == 0 else order[::-1]):
                    results, totals = ev.Results(), {}
                    with ev._one_thread_each(), paths[name](), _timed_parts(totals):
                        t0, c0 = time.perf_counter(), time.process_time()
                        for data in datasets:
                            ev.evaluate_task(enc, data, loaded, params, root, results)
                        if device is not None and device.type == "cuda":
                            torch.cuda.synchronize(device)
                        wall[name].append(time.perf_counter() - t0)
                        cpu[name].append(time.process_time() - c0)
                    parts[name].append(totals)
                    tables[name] = pd.DataFrame(results.rows, columns=ev.METRIC_COLUMNS)
                    bar.update(1)
    med = {k: float(np.median(v)) for k, v in wall.items()}
    part_names = list(PARTS)
    return {
        "profile": "smoke (tiny)" if cfg.eval_tiny else cfg.eval_profile, "device": str(device or "cpu"),
        "tasks": [d.task for d in datasets], "poolings": list(params.eval.poolings),
        "encoder": f"random-init {params.model.architecture} {params.model.layers} x {params.model.hidden}",
        "rounds": cfg.eval_rounds,
        "seconds": {k: {"wall": v, "cpu": cpu[k]} for k, v in wall.items()},
        "parts_seconds": {k: {p: float(np.median([t.get(p, 0.0) for t in parts[k]])) for p in part_names}
                          for k in parts},
        "speedup": med["today"] / med["new"],
        "speedup_cpu_time": float(np.median(cpu["today"]) / np.median(cpu["new"])),
        "per_round": [a / b for a, b in zip(wall["today"], wall["new"])],
        "tolerance": compare_tables(tables["today"], tables["new"]),
    }
