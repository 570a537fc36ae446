"""Exploratory (issue 22, item 1): what a different definition of the linear probes would cost and change.

The probes' numbers are defined by an early-stopped L-BFGS (tol 1e-3, 200 iterations; docs/PERFORMANCE.md,
"Evaluation speed"), which is why evaluation cannot be made 5x faster on a CPU within 0.5 points of today's
tables. This script measures, on one run's real encodings, the candidates a protocol decision would choose
between, each against today's probe and against the optimum of the same objective:

  today          fit_probe as the tables use it (3-fold CV over C_GRID, tol 1e-3)
  converged      the same objective and CV, solved to tol 1e-6 (the regularised optimum: optimiser-free)
  ridge          one-vs-rest least squares on the standardised features, alpha by scikit-learn's
                 efficient leave-one-out CV over ALPHA_GRID (RidgeClassifierCV): closed form
  today_f32, converged_f32   the same two on features rounded to float32: how far rounding alone moves
                 each definition (a stand-in for another machine's arithmetic)

Probes: each task's own probe (classification tasks; headline metric) and the two lexical probes, on mean
and max pooling. CPU time per definition, one process, one BLAS thread (as evaluate's workers run).
Nothing here compares hybrid with MLM: the output is per encoder, for choosing a definition, not a verdict.

    python scripts/probe_definitions.py <run_dir> [--models hybrid-s0 mlm-s0] [--poolings mean max] [--out F.json]
    python scripts/probe_definitions.py --merge F.json part1.json part2.json   (parts run side by side, one per core)
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import RidgeClassifierCV
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from jepa_core.analysis import pooling, probes
from jepa_core.analysis.evaluate import _encode_split, load_for_evaluation, prepare_task, prepare_wiki
from jepa_core.analysis.tables import ModelFolder
from jepa_core.config import HEADLINE_METRIC, load_params

DEFINITIONS = ("today", "converged", "ridge", "today_f32", "converged_f32")
CONVERGED = {"tol": 1e-6, "max_iter": 20_000}


def _ridge(X, y):
    scaler = StandardScaler().fit(X)
    fitted = RidgeClassifierCV(alphas=probes.ALPHA_GRID).fit(scaler.transform(X), y)
    return lambda Xd: fitted.predict(scaler.transform(Xd)), float(fitted.alpha_)


def _fit(definition: str, X, y, folds: int, seed: int):
    """(predict, chosen C or alpha) of one probe definition."""
    if definition == "ridge":
        return _ridge(X, y)
    if definition.endswith("_f32"):
        X = X.astype(np.float32).astype(np.float64)
    extra = CONVERGED if definition.startswith("converged") else {}
    fitted = probes.fit_probe(X, y, "classification", folds, seed, **extra)
    return fitted.predict, fitted.param


def _cells(data, features):
    """(probe, metric, X_train, y_train, X_dev, y_dev) of one (task, pooling)."""
    if data.labelled and probes.task_type(data.task) == "classification":
        yield ("task", HEADLINE_METRIC[data.task], features["train"], data.train["label"].to_numpy(),
               features["dev"], data.dev["label"].to_numpy())
    for name, lab in data.lexical.items():
        kept, dev_kept = lab.train >= 0, lab.dev >= 0
        yield (name, "accuracy", features["train"][kept], lab.train[kept], features["dev"][dev_kept], lab.dev[dev_kept])


def measure(run_dir: Path, models: list[str], poolings: list[str]) -> pd.DataFrame:
    params = load_params(run_dir / "params.yaml")
    e = params.eval
    wiki = json.loads((run_dir / "data" / "wiki_sentences.json").read_text())
    datasets = [prepare_task(t, params) for t in e.tasks] + [prepare_wiki(wiki, params)]
    rows, cache = [], run_dir / "cache" / "encode"
    for name in models:
        objective, seed = name.rsplit("-s", 1)
        model, tokenizer, fp = load_for_evaluation(ModelFolder(name, objective, int(seed), run_dir / "models" / name),
                                                   params)
        for data in datasets:
            splits = (("train", data.train), ("dev", data.dev))
            states = {split: _encode_split(model, tokenizer, df, e, fp, cache, f"{data.task}-{split}")
                      for split, df in splits}
            for pool in poolings:
                features = {split: pooling.pool(ts, pool) for split, ts in states.items()}
                for probe, metric, X, y, Xd, yd in _cells(data, features):
                    for definition in DEFINITIONS:
                        start = time.process_time()
                        predict, param = _fit(definition, X, y, e.cv_folds, params.seed)
                        seconds = time.process_time() - start
                        score = probes.METRICS[metric](yd, predict(Xd))
                        rows.append(dict(model=name, task=data.task, pooling=pool, probe=probe, metric=metric,
                                         classes=len(np.unique(y)), n_train=len(y), definition=definition,
                                         param=param, score=score, cpu_seconds=seconds))
                print(f"{name} {data.task} {pool}: {len(rows)} fits", flush=True)
    return pd.DataFrame(rows)


def summarise(df: pd.DataFrame) -> dict:
    """Per definition: CPU time against today's, and |score difference| in points against today and the optimum."""
    wide = df.pivot_table(index=["model", "task", "pooling", "probe"], columns="definition", values="score")
    seconds = df.groupby("definition")["cpu_seconds"].sum()
    lexical = df["probe"] != "task"

    def gap(a, b):
        d = (wide[a] - wide[b]).abs() * 100
        return {"median": round(float(d.median()), 3), "max": round(float(d.max()), 3),
                "over_0.5": int((d > 0.5).sum()), "cells": int(d.size)}

    out = {"cells": int(len(wide)), "cpu_seconds": {k: round(float(v), 1) for k, v in seconds.items()},
           "lexical_cpu_seconds": {k: round(float(v), 1) for k, v in
                                   df[lexical].groupby("definition")["cpu_seconds"].sum().items()},
           "speedup_vs_today": {k: round(float(seconds["today"] / v), 2) for k, v in seconds.items()}}
    for d in ("converged", "ridge"):
        out[f"{d}_vs_today_points"] = gap(d, "today")
    out["ridge_vs_converged_points"] = gap("ridge", "converged")
    out["rounding_moves_today_points"] = gap("today_f32", "today")
    out["rounding_moves_converged_points"] = gap("converged_f32", "converged")
    return out


def _write(out: Path, df: pd.DataFrame, **context) -> None:
    summary = summarise(df)
    out.write_text(json.dumps({**context, "converged": CONVERGED, "summary": summary,
                               "fits": df.to_dict(orient="records")}, indent=1))
    print(json.dumps(summary, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, nargs="?")
    parser.add_argument("--merge", nargs="+", type=Path, metavar="OUT PART", help="merge parts' fits into OUT")
    parser.add_argument("--models", nargs="+", default=["hybrid-s0", "mlm-s0"])
    parser.add_argument("--poolings", nargs="+", default=["mean", "max"])
    parser.add_argument("--out", type=Path, default=Path("probe_definitions.json"))
    args = parser.parse_args()
    if args.merge:
        parts = [json.loads(p.read_text()) for p in args.merge[1:]]
        _write(args.merge[0], pd.DataFrame([f for part in parts for f in part["fits"]]), run_dir=parts[0]["run_dir"],
               models=[m for part in parts for m in part["models"]], poolings=parts[0]["poolings"])
        return
    if args.run_dir is None:
        parser.error("run_dir is required unless --merge")
    with threadpool_limits(limits=1):
        df = measure(args.run_dir, args.models, args.poolings)
    _write(args.out, df, run_dir=str(args.run_dir), models=args.models, poolings=args.poolings)


if __name__ == "__main__":
    main()
