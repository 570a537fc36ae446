"""Beyond the paper's end points: how the geometry of each encoder evolves during pre-training, and
whether the hybrid − MLM difference grows, shrinks, reverses or stays flat (issue 25).

    runs = main_runs(params, run_dir)                       # every pre-trained model's snapshot folder
    table, diffs, trends = trajectory_study(params, run_dir, runs, [("hybrid", "mlm")])
    # -> results/trajectories.csv, trajectory_differences.csv, trajectory_trends.csv, trajectories.json

What is measured, with the evaluation's own code (nothing re-implemented): every encoder snapshot the
trainer kept (train.snapshots: step 0, the last step and points evenly spaced between, each the weights AT
that step, pretrain/snapshots.py) is loaded like a finished model (`evaluate.load_for_evaluation`) and
encodes the held-out Wikipedia sentences of 03 (`evaluate.prepare_wiki`: the same dev half and geometry
subsample, encoded by `evaluate._encode_split`, so the end point IS 03's number for the model); mean and
max pooling; the label-free geometry of the claims (`geometry.LABEL_FREE` less the integer rank90:
uniformity raw and centred, anisotropy, mean direction, effective / stable rank, spectral entropy) with
their bootstrap on 03's resamples (`evaluate._geometry`). Where SST-2 is evaluated, the mean-pooling probe
accuracy (`probes.fit_probe`, 03's splits and resamples) at three points: start, middle, end.

Tables (`<out>/results/`):
    trajectories.csv             model, seed, step, tokens, flops, task, pooling, metric, value, ci_low,
                                 ci_high (95% bootstrap over the sentences), objective, point, points, n
    trajectory_differences.csv   a − b at each point: the seed-level difference and interval
                                 (stats.seed_level_difference, as differences.csv's pooled rows)
    trajectory_trends.csv        one trend per (a, b, task, pooling, metric), by `classify_trend`
    trajectories.json            notes (models without snapshots ...), seconds, the runs measured

Points. A run's snapshots carry their index on its grid (`point` of `points`); two runs are compared point
by point, i.e. at equal shares of their planned steps: equal steps for hybrid and MLM, equal FLOPs for the
hybrid and MLM given its FLOPs (mlm-flops, notebook 05). Step 0 of both objectives is the same encoder
(Engine.build seeds the initial weights alike), so its difference is 0 by construction.

Cost (measured, docs in the report of issue 25): per snapshot one encoding of the wiki sentences, 2 × 200
bootstrap resamples of the geometry and, at 3 points, an SST-2 encoding and probe. Per-snapshot results are
cached under `<run>/cache/trajectories/` by the weights' fingerprint, so notebook 05 re-reads the main runs'.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from jepa_core import cpu, progress
from jepa_core.analysis import geometry, pooling, probes, stats
from jepa_core.analysis.evaluate import (
    TaskData,
    _encode_split,
    _geometry,
    _one_thread_each,
    _task_measures,
    eval_workers,
    load_for_evaluation,
    prepare_task,
    prepare_wiki,
)
from jepa_core.analysis.tables import Measure, ModelFolder
from jepa_core.config import Params
from jepa_core.data import glue
from jepa_core.runs import SNAPSHOTS, Snapshot, folder_name, list_snapshots, model_name

# the label-free geometry of the claims; rank90 (integer-valued, untested in differences.csv) left out
METRICS = tuple(m for m in geometry.LABEL_FREE if m not in geometry.UNTESTED)
POOLINGS = ("mean", "max")
WIKI = "wiki"
PROBE = ("sst2", "mean", "accuracy")  # (task, pooling, metric) of the probe measured at start, middle, end
COLUMNS = ["model", "seed", "step", "tokens", "flops", "task", "pooling", "metric", "value", "ci_low", "ci_high",
           "objective", "point", "points", "n"]
DIFF_COLUMNS = ["task", "pooling", "metric", "model_a", "model_b", "point", "points", "step_a", "step_b",
                "tokens_a", "tokens_b", "flops_a", "flops_b", "n_seeds", "a", "b", "diff", "ci_low", "ci_high", "p",
                "se_examples", "sd_seeds"]
TREND_COLUMNS = ["task", "pooling", "metric", "model_a", "model_b", "trend", "n_seeds", "middle", "end", "step_middle",
                 "step_end", "diff_middle", "ci_low_middle", "ci_high_middle", "diff_end", "ci_low_end", "ci_high_end",
                 "change", "change_ci_low", "change_ci_high", "reason"]
GROWING, SHRINKING, REVERSING, FLAT, UNDETERMINED = "growing", "shrinking", "reversing", "flat", "undetermined"
CACHE_VERSION = 1
RESULTS = ("trajectories.csv", "trajectory_differences.csv", "trajectory_trends.csv", "trajectories.json")


@dataclass(frozen=True)
class TrajectoryRun:
    """One pre-training run whose snapshots are measured: the name its rows get and its snapshot folder."""
    name: str  # model column: hybrid, mlm, or a variant's name (05)
    objective: str
    seed: int | None
    snapshot_dir: Path

    @property
    def key(self) -> str:
        return folder_name(self.name, self.seed)


def main_runs(params: Params, run_dir: str | Path) -> list[TrajectoryRun]:
    """Every (objective, seed) of the profile, named as in metrics.csv."""
    return [TrajectoryRun(o, o, s, Path(run_dir) / SNAPSHOTS / model_name(params, o, s))
            for o in params.objectives for s in params.seeds]


def middle_point(points: int) -> int:
    """The first grid point at or past the middle of the run (6 points over 1,500 steps: point 3, step 900)."""
    return points // 2


def probe_points(points: int) -> set[int]:
    """The grid points that get the SST-2 probe: start, middle, end."""
    return {0, middle_point(points), points - 1}


# ---------------------------------------------------------------- one run, every snapshot

@dataclass
class PointMeasures:
    """Everything measured on one snapshot: (task, pooling, metric) -> Measure (value + bootstrap)."""
    snapshot: Snapshot
    measures: dict[tuple[str, str, str], Measure]


def _cache_key(fp: str, wiki: TaskData, sst2: TaskData | None, params: Params) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([CACHE_VERSION, fp, params.seed, params.to_dict()["eval"], METRICS, POOLINGS]).encode())
    for data in (wiki, sst2):
        if data is not None:
            for text in [*data.train["sentence1"], "\x1d", *data.dev["sentence1"]]:
                h.update(str(text).encode() + b"\x1f")
            h.update(np.ascontiguousarray(data.geo).tobytes() + b"\x1e")
    return h.hexdigest()[:20]


def _save_cached(path: Path, measures: dict[tuple[str, str, str], Measure]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(measures)
    arrays = {f"boot{i}": measures[k].boot for i, k in enumerate(keys)}
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, names=np.array(["|".join(k) for k in keys]), values=np.array([measures[k].value for k in keys]),
             n=np.array([measures[k].n for k in keys]), recentre=np.array([measures[k].recentre for k in keys]),
             **arrays)
    tmp.replace(path)


def _load_cached(path: Path) -> dict[tuple[str, str, str], Measure] | None:
    if not path.is_file():
        return None
    with np.load(path) as z:
        return {tuple(str(name).split("|")): Measure(float(z["values"][i]), z[f"boot{i}"], int(z["n"][i]),
                                                     bool(z["recentre"][i]))
                for i, name in enumerate(z["names"])}


def measure_encoder(loaded: tuple, wiki: TaskData, sst2: TaskData | None, params: Params,
                    cache: Path) -> dict[tuple[str, str, str], Measure]:
    """The trajectory metrics of one loaded encoder ((model, tokenizer, fingerprint) as
    evaluate.load_for_evaluation gives it): wiki geometry for each of POOLINGS; with `sst2`, the probe."""
    model, tokenizer, fp = loaded
    e, out = params.eval, {}
    states = _encode_split(model, tokenizer, wiki.dev, e, fp, cache, f"{WIKI}-dev")
    for pool in POOLINGS:
        X = pooling.pool(states, pool)[wiki.geo]
        for name, m in _geometry(X, None, wiki.geo_boot).items():
            if name in METRICS:
                out[WIKI, pool, name] = m
    if sst2 is not None:
        task, pool, metric = PROBE
        train, dev = (pooling.pool(_encode_split(model, tokenizer, df, e, fp, cache, f"{task}-{split}"), pool)
                      for split, df in (("train", sst2.train), ("dev", sst2.dev)))
        probe = probes.fit_probe(train, sst2.train["label"].to_numpy(), probes.task_type(task), e.cv_folds,
                                 params.seed)
        y_dev = sst2.dev["label"].to_numpy()
        out[task, pool, metric] = _task_measures(task, y_dev, probe.predict(dev), sst2.boot)[metric]
    return out


def measure_run(run: TrajectoryRun, wiki: TaskData, sst2: TaskData | None, params: Params, run_dir: Path,
                progress_dir: Path | None = None) -> list[PointMeasures]:
    """Every snapshot of one run (cached per snapshot under <run_dir>/cache/trajectories/)."""
    snapshots = list_snapshots(run.snapshot_dir)
    out = []
    for i, snap in enumerate(snapshots, 1):
        if progress_dir is not None:
            progress.note(progress_dir, unit=f"{run.key}/trajectory",
                          phase=f"snapshot at step {snap.step:,} ({i}/{len(snapshots)})")
        loaded = load_for_evaluation(ModelFolder(run.name, run.objective, run.seed, snap.path), params)
        probe = sst2 if snap.point in probe_points(snap.points) else None
        path = run_dir / "cache" / "trajectories" / f"{_cache_key(loaded[2], wiki, probe, params)}.npz"
        measures = _load_cached(path)
        if measures is None:
            measures = measure_encoder(loaded, wiki, probe, params, run_dir / "cache" / "encode")
            _save_cached(path, measures)
        out.append(PointMeasures(snap, measures))
    if progress_dir is not None:
        progress.note(progress_dir, unit=f"{run.key}/trajectory", phase="done")
    return out


def _measure_run_in_worker(run: TrajectoryRun, wiki: TaskData, sst2: TaskData | None, params: Params,
                           run_dir: Path, progress_dir: Path | None) -> list[PointMeasures]:
    cpu.no_nested_workers()  # one of eval_workers() processes: no pools inside it
    with _one_thread_each():
        return measure_run(run, wiki, sst2, params, run_dir, progress_dir)


def measure_runs(runs: Sequence[TrajectoryRun], wiki: TaskData, sst2: TaskData | None, params: Params,
                 run_dir: Path, progress_dir: Path | None = None) -> dict[str, list[PointMeasures]]:
    """measure_run for every run, eval_workers() processes at once (spawned, as evaluate_encoders: the
    numbers do not depend on it); {run key: its points}."""
    runs = [r for r in runs if list_snapshots(r.snapshot_dir)]
    workers = eval_workers(params.eval.workers, len(runs))
    if progress_dir is not None:
        progress.note(progress_dir, phase="start", units=len(runs), workers=workers)
    if workers <= 1:
        with _one_thread_each():
            return {r.key: measure_run(r, wiki, sst2, params, run_dir, progress_dir) for r in runs}
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {r.key: pool.submit(_measure_run_in_worker, r, wiki, sst2, params, run_dir, progress_dir)
                   for r in runs}
        return {key: f.result() for key, f in futures.items()}


def trajectory_table(runs: Sequence[TrajectoryRun], measured: dict[str, list[PointMeasures]]) -> pd.DataFrame:
    """trajectories.csv: one row per run × snapshot × (task, pooling, metric)."""
    rows = []
    for run in runs:
        for pm in measured.get(run.key, []):
            s = pm.snapshot
            for (task, pool, metric), m in pm.measures.items():
                lo, hi = m.ci()
                rows.append(dict(model=run.name, seed=run.seed, step=s.step, tokens=s.tokens, flops=s.flops, task=task,
                                 pooling=pool, metric=metric, value=m.value, ci_low=lo, ci_high=hi,
                                 objective=run.objective, point=s.point, points=s.points, n=m.n))
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["seed"] = table["seed"].astype("Int64")
    return table


# ---------------------------------------------------------------- a − b at each point, and its trend

def _sign(lo: float, hi: float) -> int:
    """+1 when the interval lies above 0, −1 below, 0 when it contains 0 (or is undefined)."""
    return 1 if lo > 0 else -1 if hi < 0 else 0


@dataclass(frozen=True)
class Trend:
    label: str  # growing | shrinking | reversing | flat | undetermined
    reason: str
    points: tuple[stats.Difference, ...]  # the seed-level difference at each point given
    change: stats.Difference | None  # end − middle, seed-level (None when undetermined before it)


def classify_trend(points: Sequence[int], per_seed, boot, middle: int) -> Trend:
    """The trend of a difference a − b over pre-training, decided from seed-level intervals, never by eye.

    points: the grid points (sorted; point 0 = the shared initial encoder may be included, it is ignored);
    per_seed (P, S): the difference d_{k,s} of seed s at point k; boot (P, B, S): its paired bootstrap
    differences, resample b the same for every point and seed (03's resamples of the sentences); the
    interval at each point is stats.seed_level_difference's (the one differences.csv's pooled rows use).
    `middle`: the reference point (`middle_point`: the first at or past the middle of the run).

    The rule, in this order, on the points after step 0:
      - undetermined: fewer than 2 seeds (no seed-level interval), or the middle is not before the end;
      - reversing: the interval lies above 0 at one point and below 0 at a later one, or vice versa: the
        sign of the difference changed and both signs are established;
      - otherwise the change end − middle, per seed d_{E,s} − d_{m,s}, gets its own seed-level interval
        (paired: the same seeds and resamples at both points):
          growing    its interval excludes 0 and |mean at the end| > |mean at the middle|;
          shrinking  its interval excludes 0 and |mean at the end| < |mean at the middle|;
          flat       its interval contains 0: no established change over the second half of the run
                     (whatever the size of the difference itself; the sentence says it).
    """
    points = list(points)
    d = np.asarray(per_seed, dtype=np.float64)
    b = np.asarray(boot, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != len(points) or b.shape[0] != len(points) or b.shape[2] != d.shape[1]:
        raise ValueError(f"per_seed must be (points, seeds) and boot (points, resamples, seeds); got {d.shape}, "
                         f"{b.shape} for {len(points)} points")
    diffs = tuple(stats.seed_level_difference(d[k], b[k]) for k in range(len(points)))
    later = [k for k, p in enumerate(points) if p > 0]
    if middle not in points or max(points) <= middle:
        return Trend(UNDETERMINED, "fewer than two points after step 0 (middle and end)", diffs, None)
    m, e = points.index(middle), points.index(max(points))
    if d.shape[1] < 2:
        return Trend(UNDETERMINED, "one seed: no seed-level interval", diffs, None)
    signs = [(points[k], _sign(diffs[k].ci_low, diffs[k].ci_high)) for k in later]
    for i, (p, s) in enumerate(signs):
        opposite = next((q for q, t in signs[i + 1:] if s and t == -s), None)
        if opposite is not None:
            return Trend(REVERSING, f"the interval lies {'above' if s > 0 else 'below'} 0 at point {p} and "
                         f"{'below' if s > 0 else 'above'} 0 at point {opposite}", diffs, None)
    change = stats.seed_level_difference(d[e] - d[m], b[e] - b[m])
    if _sign(change.ci_low, change.ci_high) == 0:
        return Trend(FLAT, "the change from the middle to the end has an interval containing 0", diffs, change)
    grew = abs(diffs[e].diff) > abs(diffs[m].diff)
    return Trend(GROWING if grew else SHRINKING, f"the change from the middle to the end excludes 0 and the "
                 f"difference is {'larger' if grew else 'smaller'} in size at the end", diffs, change)


def _cell_order(cell: tuple[str, str, str]) -> tuple:
    """The wiki geometry first (mean, then max pooling; metrics in geometry.LABEL_FREE's order), then the probe."""
    task, pool, metric = cell
    return (task != WIKI, POOLINGS.index(pool) if pool in POOLINGS else len(POOLINGS),
            METRICS.index(metric) if metric in METRICS else len(METRICS), cell)


def _seed_pairs(measured: dict[str, list[PointMeasures]], runs: Sequence[TrajectoryRun], a: str, b: str):
    """(run of a, run of b) for each seed both have (seed k against seed k, as tables.differences)."""
    by = {(r.name, r.seed): r for r in runs if r.key in measured}
    return [(by[a, s], by[b, s]) for (name, s) in by if name == a and (b, s) in by]


def _mean(snapshots: list[Snapshot], field: str) -> float:
    return float(np.mean([getattr(s, field) for s in snapshots]))


def _difference_row(cell: tuple[str, str, str], a: str, b: str, point: tuple[int, int],
                    pms: list[tuple[PointMeasures, PointMeasures]], d: stats.Difference) -> dict:
    """A row of trajectory_differences.csv: a − b at one grid point (steps, tokens, FLOPs: means over seeds)."""
    task, pool, metric = cell
    sa, sb = [p.snapshot for p, _ in pms], [q.snapshot for _, q in pms]
    return dict(task=task, pooling=pool, metric=metric, model_a=a, model_b=b, point=point[0], points=point[1],
                **{f"{f}_{side}": _mean(snaps, f) for f in ("step", "tokens", "flops")
                   for side, snaps in (("a", sa), ("b", sb))},
                n_seeds=d.n_seeds, a=float(np.mean([p.measures[cell].value for p, _ in pms])),
                b=float(np.mean([q.measures[cell].value for _, q in pms])), diff=d.diff, ci_low=d.ci_low,
                ci_high=d.ci_high, p=d.p, se_examples=d.se_examples, sd_seeds=d.sd_seeds)


def _trend_row(cell: tuple[str, str, str], a: str, b: str, trend: Trend, idx: list[int], n_points: int,
               steps: dict[int, float], n_seeds: int) -> dict:
    task, pool, metric = cell
    at = dict(zip(idx, trend.points))
    mid, end = middle_point(n_points), max(idx)
    nan = stats.Difference(np.nan, np.nan, np.nan, np.nan, np.nan)
    dm, de, ch = at.get(mid, nan), at[end], trend.change or nan
    return dict(task=task, pooling=pool, metric=metric, model_a=a, model_b=b, trend=trend.label, n_seeds=n_seeds,
                middle=mid, end=end, step_middle=steps.get(mid, np.nan), step_end=steps[end], diff_middle=dm.diff,
                ci_low_middle=dm.ci_low, ci_high_middle=dm.ci_high, diff_end=de.diff, ci_low_end=de.ci_low,
                ci_high_end=de.ci_high, change=ch.diff, change_ci_low=ch.ci_low, change_ci_high=ch.ci_high,
                reason=trend.reason)


def trajectory_differences(runs: Sequence[TrajectoryRun], measured: dict[str, list[PointMeasures]],
                           pairs: Sequence[tuple[str, str]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trajectory_differences.csv, trajectory_trends.csv) for the given (a, b) model pairs: a − b at each
    grid point that every seed pair has, with the seed-level interval; and its `classify_trend`."""
    rows, trends = [], []
    for a, b in pairs:
        seed_pairs = _seed_pairs(measured, runs, a, b)
        if not seed_pairs:
            continue
        at = {r.key: {(pm.snapshot.point, pm.snapshot.points): pm for pm in measured[r.key]}
              for pair in seed_pairs for r in pair}
        grid = set.intersection(*(set(points) for points in at.values()))
        cells = sorted({cell for points in at.values() for k, pm in points.items() if k in grid
                        for cell in pm.measures}, key=_cell_order)
        for cell in cells:
            have = sorted(k for k in grid if all(cell in at[r.key][k].measures for pair in seed_pairs for r in pair))
            per_seed, boots, steps = [], [], {}
            for k in have:
                pms = [(at[ra.key][k], at[rb.key][k]) for ra, rb in seed_pairs]
                per_seed.append([p.measures[cell].value - q.measures[cell].value for p, q in pms])
                boots.append(np.column_stack([p.measures[cell].boot - q.measures[cell].boot for p, q in pms]))
                rows.append(_difference_row(cell, a, b, k, pms, stats.seed_level_difference(per_seed[-1], boots[-1])))
                steps[k[0]] = rows[-1]["step_a"]
            grids = {n for _, n in have}
            if len(grids) != 1:  # none, or runs snapshotted on different grids: no common middle
                continue
            n_points, idx = grids.pop(), [p for p, _ in have]
            trend = classify_trend(idx, per_seed, boots, middle_point(n_points))
            trends.append(_trend_row(cell, a, b, trend, idx, n_points, steps, len(seed_pairs)))
    return pd.DataFrame(rows, columns=DIFF_COLUMNS), pd.DataFrame(trends, columns=TREND_COLUMNS)


# ---------------------------------------------------------------- the study

def _sst2(params: Params) -> tuple[TaskData | None, str | None]:
    """SST-2's data for the probe points, where the evaluation evaluates SST-2 and its data is at hand."""
    task = PROBE[0]
    if task not in params.eval.tasks:
        return None, f"{task} is not in eval.tasks: no probe points"
    available, skipped = glue.available_tasks([task], params.eval.glue_dir)
    if not available:
        return None, f"{task} skipped: {skipped.get(task, 'no data')}"
    try:
        return prepare_task(task, params), None
    except glue.GlueUnavailable as err:
        return None, f"{task} skipped: {err}"


def trajectory_study(params: Params, run_dir: str | Path, runs: Sequence[TrajectoryRun] | None = None,
                     pairs: Sequence[tuple[str, str]] | None = None, wiki_sentences: list[str] | None = None,
                     out_dir: str | Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Measure every run's snapshots and write the tables (module docstring) to <out_dir>/results/.

    runs: default `main_runs`; pairs: default hybrid − mlm where both are there; wiki_sentences: default
    <run_dir>/data/wiki_sentences.json (01's); out_dir: default run_dir (notebook 05: <run>/ablations)."""
    start = time.perf_counter()
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir
    runs = list(main_runs(params, run_dir) if runs is None else runs)
    names = list(dict.fromkeys(r.name for r in runs))
    pairs = list(pairs) if pairs is not None else ([("hybrid", "mlm")] if {"hybrid", "mlm"} <= set(names) else [])
    if wiki_sentences is None:
        wiki_sentences = json.loads((run_dir / "data" / "wiki_sentences.json").read_text())
    notes = [f"{r.key}: no encoder snapshots in {r.snapshot_dir} (pre-trained with train.snapshots: 0, or "
             "before snapshots existed): no trajectory" for r in runs if not list_snapshots(r.snapshot_dir)]
    with _one_thread_each():
        wiki = prepare_wiki(wiki_sentences, params)
        sst2, why = _sst2(params)
    notes += [why] if why else []
    measured = measure_runs(runs, wiki, sst2, params, run_dir, out)
    table = trajectory_table(runs, measured)
    diffs, trends = trajectory_differences(runs, measured, pairs)
    res = out / "results"
    res.mkdir(parents=True, exist_ok=True)
    table.to_csv(res / RESULTS[0], index=False)
    diffs.to_csv(res / RESULTS[1], index=False)
    trends.to_csv(res / RESULTS[2], index=False)
    (res / RESULTS[3]).write_text(json.dumps({
        "runs": {r.key: str(r.snapshot_dir) for r in runs}, "pairs": [f"{a} - {b}" for a, b in pairs],
        "points": {k: [pm.snapshot.step for pm in v] for k, v in measured.items()}, "notes": notes,
        "seconds": round(time.perf_counter() - start, 1)}, indent=2))
    return table, diffs, trends

