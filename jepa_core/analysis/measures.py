"""Every value an evaluation measured, with its bootstrap array, kept in results/measures.npz (issue 22), and
taken from there by a later evaluation instead of evaluating the same encoder again (notebook 05 takes the
main hybrid and MLM from 03's): the same code, settings, data subsets and resamples give the same numbers,
so an encoder is taken only where the settings (`_reuse_key`) and its weights (`_weights_stamp`) match.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from jepa_core.analysis import pooling
from jepa_core.analysis.tables import Measure, ModelFolder, Results
from jepa_core.config import Params

if TYPE_CHECKING:
    from jepa_core.analysis.evaluate import TaskData

MEASURES = "measures.npz"  # results/measures.npz: every Measure of an evaluation (notebook 05 reuses 03's)


def _reuse_key(params: Params) -> str:
    """What must match for an earlier evaluation's numbers to be this one's: the seed of the data subsets and
    resamples and every eval setting that changes a number (not which poolings, models or workers)."""
    e = params.to_dict()["eval"]
    for key in ("poolings", "tasks", "workers", "reference_models", "random_init_baseline"):
        e.pop(key, None)
    return json.dumps({"seed": params.seed, "eval": e}, sort_keys=True, default=str)


def _weights_stamp(enc: ModelFolder) -> str:
    """Which weights an encoder's numbers were measured on: its folder and its weight files' sizes and times."""
    files = [f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in sorted(enc.path.glob("*"))
             if f.suffix in (".safetensors", ".bin") and f.is_file()]
    return f"{enc.path.resolve()}|{'|'.join(files)}|{'random init' if enc.random_init else ''}"


def save_measures(results: Results, path: Path, params: Params, encoders: list[ModelFolder]) -> None:
    """Every (model, seed, task, pooling, metric) Measure: value, n, recentre and its bootstrap array (float64,
    NaN-padded to the longest; `n_boot` says how long each is), with the settings they were made with and the
    weights each encoder's came from."""
    keys = list(results.measures)
    measures = [results.measures[k] for k in keys]
    width = max((len(m.boot) for m in measures), default=0)
    boot = np.full((len(measures), width), np.nan)
    for i, m in enumerate(measures):
        boot[i, :len(m.boot)] = m.boot
    column = lambda j: np.array([str(k[j]) for k in keys], dtype=str)  # noqa: E731
    np.savez(path, model=column(0), seed=np.array([np.nan if k[1] is None else float(k[1]) for k in keys]),
             task=column(2), pooling=column(3), metric=column(4), value=np.array([m.value for m in measures]),
             n=np.array([m.n for m in measures]), recentre=np.array([m.recentre for m in measures]),
             n_boot=np.array([len(m.boot) for m in measures]), boot=boot, key=np.array(_reuse_key(params)),
             encoders=np.array([f"{e.name}\x1f{e.seed}\x1f{_weights_stamp(e)}" for e in encoders], dtype=str))


def load_measures(path: str | Path) -> tuple[dict[tuple, Measure], str, dict[tuple, str]]:
    """(model, seed, task, pooling, metric) -> Measure from a measures.npz, the settings key it was made with and
    (model, seed) -> the weights stamp of each encoder."""
    with np.load(path) as z:
        seeds = [None if np.isnan(s) else int(s) for s in z["seed"]]
        columns = zip(z["model"], seeds, z["task"], z["pooling"], z["metric"], z["value"], z["n"], z["recentre"],
                      z["n_boot"], z["boot"])
        out = {(str(mo), se, str(t), str(po), str(me)): Measure(float(v), b[:nb].copy(), int(n), bool(rc))
               for mo, se, t, po, me, v, n, rc, nb, b in columns}
        stamps = {}
        for entry in z["encoders"] if "encoders" in z.files else []:
            name, seed, stamp = str(entry).split("\x1f")
            stamps[name, None if seed == "None" else int(seed)] = stamp
        return out, str(z["key"]), stamps


def _of(frame: pd.DataFrame, name: str, seed: int | None, cells: set) -> pd.DataFrame:
    """The rows of one model and seed in these (task, pooling) cells."""
    seeds = frame["seed"].astype("Float64")
    mask = (frame["model"] == name) & ((seeds == seed).fillna(False) if seed is not None else seeds.isna())
    mask &= np.array([(t, p) in cells for t, p in zip(frame["task"], frame["pooling"])], dtype=bool)
    return frame[mask.to_numpy(dtype=bool)]


def _cells(datasets: list[TaskData], params: Params) -> set[tuple[str, str]]:
    """(task, pooling) of every cell an evaluation measures (label-free wiki: the fixed poolings only)."""
    return {(d.task, pool) for d in datasets for pool in params.eval.poolings
            if d.labelled or pool in pooling.FIXED}


def reuse_results(reuse: dict[str, tuple[str | Path, str]], encoders: list[ModelFolder], datasets: list[TaskData],
                  params: Params, out: Path) -> dict[str, Results]:
    """encoder key -> Results taken from an earlier evaluation (reuse: name -> (its results folder, the name
    there)): the metric rows, Measures, spectra and predictions of this evaluation's tasks and poolings, the
    model renamed, and its dev embeddings copied under out/results/embeddings. An encoder is taken only when
    that evaluation has every one of its cells and was made with the same settings (`_reuse_key`); else it
    is evaluated as usual."""
    taken: dict[str, Results] = {}
    cells = _cells(datasets, params)
    for enc in encoders:
        if enc.name not in reuse:
            continue
        folder, name = Path(reuse[enc.name][0]), reuse[enc.name][1]
        if not all((folder / f).is_file() for f in (MEASURES, "metrics.parquet")):
            continue
        measures, key, stamps = load_measures(folder / MEASURES)
        mine = {k: m for k, m in measures.items() if k[0] == name and k[1] == enc.seed and (k[2], k[3]) in cells}
        if key != _reuse_key(params) or {(k[2], k[3]) for k in mine} != cells \
                or stamps.get((name, enc.seed)) != _weights_stamp(enc):
            continue  # other settings or weights, or a task or pooling that evaluation did not measure
        r = Results()
        for row in _of(pd.read_parquet(folder / "metrics.parquet"), name, enc.seed, cells).to_dict("records"):
            r.rows.append({**row, "model": enc.name, "objective": enc.objective, "seed": enc.seed})
            r.measures[enc.name, enc.seed, row["task"], row["pooling"], row["metric"]] = \
                mine[name, enc.seed, row["task"], row["pooling"], row["metric"]]
        if (folder / "spectra.csv").is_file():
            r.spectra.append(_of(pd.read_csv(folder / "spectra.csv"), name, enc.seed, cells)
                             .assign(model=enc.name, objective=enc.objective))
        if (folder / "predictions.parquet").is_file():
            r.predictions.append(_of(pd.read_parquet(folder / "predictions.parquet"), name, enc.seed, cells)
                                 .assign(model=enc.name))
        source = ModelFolder(name, name, enc.seed, enc.path).key
        for task, pool in sorted(cells):
            src = folder / "embeddings" / task / source / f"{pool}.npy"
            if src.is_file():
                dst = out / "results" / "embeddings" / task / enc.key / f"{pool}.npy"
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
        taken[enc.key] = r
    return taken
