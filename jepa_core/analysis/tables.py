"""The evaluation's tables: every measured value with its bootstrap distribution (`Measure`), the rows
of metrics.csv (`Results`), and the paired comparisons built from them: differences.csv
(`differences`: per seed and seed-level, Holm families) and vs_random_init.csv (`versus_random_init`: every
task's headline metric, each trained encoder against the random-init encoder of its seed).
The arithmetic of each interval and test is in `stats`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from jepa_core.analysis import geometry, stats
from jepa_core.config import HEADLINE_METRIC
from jepa_core.runs import folder_name

ALPHA = stats.ALPHA
METRIC_COLUMNS = ["model", "objective", "seed", "task", "pooling", "metric", "value", "ci_low", "ci_high", "n",
                  "chance", "note"]
DIFF_COLUMNS = ["task", "pooling", "metric", "model_a", "model_b", "level", "seed", "n_seeds", "a", "b", "diff",
                "ci_low", "ci_high", "p", "p_holm", "se", "se_examples", "sd_seeds", "n"]



@dataclass
class Measure:
    """A value with its bootstrap distribution on the task's shared resamples (for CIs and pairing)."""
    value: float
    boot: np.ndarray  # (B,) the statistic on resample b; NaN where undefined
    n: int
    recentre: bool = False  # a shifted plug-in statistic (geometry.RECENTRED): stats.recentred

    def ci(self) -> tuple[float, float]:
        return stats.bootstrap_ci(self.value, self.boot, ALPHA, self.recentre)

    def minus(self, other: "Measure") -> stats.Difference:
        """self - other on the same resamples (stats.paired_difference)."""
        return stats.paired_difference(self.value, self.boot, other.value, other.boot, ALPHA, self.recentre)


@dataclass
class ModelFolder:
    """A model folder to evaluate and the names its rows get (the folder, not the loaded encoder)."""
    name: str  # model column: hybrid, mlm, random_init, or any name given
    objective: str
    seed: int | None
    path: Path
    random_init: bool = False

    @property
    def key(self) -> str:
        return folder_name(self.name, self.seed)  # random_init too: one per pre-training seed


class Results:
    """Accumulates table rows and the bootstrap distributions needed for paired differences."""

    def __init__(self):
        self.rows: list[dict] = []
        self.measures: dict[tuple, Measure] = {}  # (model, seed, task, pooling, metric) -> Measure
        self.spectra: list[pd.DataFrame] = []
        self.predictions: list[pd.DataFrame] = []

    def merge(self, other: "Results") -> None:
        """Append another Results (an encoder evaluated in a worker process)."""
        self.rows += other.rows
        self.measures.update(other.measures)
        self.spectra += other.spectra
        self.predictions += other.predictions

    def add(self, enc: ModelFolder | None, task: str, pool: str, metric: str, m: Measure, chance=np.nan, note=""):
        lo, hi = m.ci()
        model, objective, seed = (enc.name, enc.objective, enc.seed) if enc else ("majority", "majority", None)
        self.rows.append(dict(model=model, objective=objective, seed=seed, task=task, pooling=pool, metric=metric,
                              value=m.value, ci_low=lo, ci_high=hi, n=m.n, chance=chance, note=note))
        self.measures[model, seed, task, pool, metric] = m


# ---------------------------------------------------------------- differences and tables

def _pairs(models: dict[str, list]) -> list[tuple[str, str]]:
    """The documented comparison: hybrid - mlm when both exist, else the first two models given."""
    if "hybrid" in models and "mlm" in models:
        return [("hybrid", "mlm")]
    names = list(models)
    return [(names[0], names[1])] if len(names) >= 2 else []


def differences(results: Results, encoders: list[ModelFolder], pairs: list[tuple[str, str]]) -> pd.DataFrame:
    """a - b for every (task, pooling, metric) both models have: one row per seed (`level` "seed":
    seed i of a against seed i of b, example-level paired bootstrap) and one seed-level row
    (`level` "pooled", seed NaN: stats.seed_level_difference over all seeds, the row the claims
    use). Holm runs over the pooled rows of the whole grid, and separately over each seed's rows
    (what a one-seed run would report). Integer-valued metrics (geometry.UNTESTED) get a CI, no p,
    and are not counted by Holm."""
    rows = []
    for a, b in pairs:
        seeds_a = [enc.seed for enc in encoders if enc.name == a]
        seeds_b = [enc.seed for enc in encoders if enc.name == b]
        # seed k of a against seed k of b; models without common seed numbers: in the order given
        seed_pairs = [(s, s) for s in seeds_a] if set(seeds_a) == set(seeds_b) else list(zip(seeds_a, seeds_b))
        cells = dict.fromkeys((task, pool, metric) for (model, _, task, pool, metric) in results.measures if model == a)
        for task, pool, metric in cells:
            get = results.measures.get
            per_seed = [(sa, get((a, sa, task, pool, metric)), get((b, sb, task, pool, metric)))
                        for sa, sb in seed_pairs]
            per_seed = [(seed, m_a, m_b) for seed, m_a, m_b in per_seed if m_a is not None and m_b is not None]
            if not per_seed:
                continue
            tested = metric not in geometry.UNTESTED  # else: CI only; no p, and not counted by Holm
            key = dict(task=task, pooling=pool, metric=metric, model_a=a, model_b=b)
            for seed, m_a, m_b in per_seed:
                d = m_a.minus(m_b)
                rows.append(dict(key, level=stats.PER_SEED, seed=seed, n_seeds=1, a=m_a.value, b=m_b.value, diff=d.diff,
                                 ci_low=d.ci_low, ci_high=d.ci_high, p=d.p if tested else np.nan, se=d.se,
                                 se_examples=d.se_examples, sd_seeds=np.nan, n=m_a.n))
            diffs = np.array([m_a.value - m_b.value for _, m_a, m_b in per_seed])
            boot = np.column_stack([m_a.boot - m_b.boot for _, m_a, m_b in per_seed])
            d = stats.seed_level_difference(diffs, boot)
            rows.append(dict(key, level=stats.POOLED, seed=None, n_seeds=d.n_seeds,
                             a=float(np.mean([m_a.value for _, m_a, _ in per_seed])),
                             b=float(np.mean([m_b.value for _, _, m_b in per_seed])), diff=d.diff, ci_low=d.ci_low,
                             ci_high=d.ci_high, p=d.p if tested else np.nan, se=d.se, se_examples=d.se_examples,
                             sd_seeds=d.sd_seeds, n=per_seed[0][1].n))
    df = pd.DataFrame(rows, columns=[c for c in DIFF_COLUMNS if c != "p_holm"])
    df["seed"] = df["seed"].astype("Int64")  # integers, <NA> on the pooled rows
    p_holm = np.full(len(df), np.nan)
    for _, family in df.groupby([df["level"], df["seed"].fillna(-1)], sort=False):
        p_holm[family.index] = stats.holm(family["p"].to_numpy(dtype=float))
    df.insert(df.columns.get_loc("p") + 1, "p_holm", p_holm)
    return df


VS_RANDOM_POOLINGS = ("mean", "max")  # the poolings the claims read (C1, C3–C5 mean; C2 max)
VS_RANDOM_COLUMNS = ["model", "seed", "task", "pooling", "metric", "value", "random_init", "random_init_seed", "diff",
                     "ci_low", "ci_high", "beats_random_init"]


def versus_random_init(results: Results, encoders: list[ModelFolder], poolings=VS_RANDOM_POOLINGS) -> pd.DataFrame:
    """Each pre-trained encoder (every seed) minus the random-init encoder of the same seed (the first one where
    there is none of that seed) on every evaluated task's headline metric under each of `poolings`,
    example-level paired bootstrap CI: did pre-training teach the encoder anything a linear probe can use on
    this task? Kept apart from differences(): a check of the run, not a claim, so not in any Holm family.
    Empty without a random-init encoder."""
    bases = [e for e in encoders if e.random_init]
    if not bases:
        return pd.DataFrame(columns=VS_RANDOM_COLUMNS)
    cells = [(task, pool, metric) for (_, _, task, pool, metric) in dict.fromkeys(results.measures)
             if pool in poolings and HEADLINE_METRIC.get(task) == metric]
    rows = []
    for enc in encoders:
        base = next((b for b in bases if b.seed == enc.seed), bases[0])
        for task, pool, metric in dict.fromkeys(cells):
            m, b = results.measures.get((enc.name, enc.seed, task, pool, metric)), \
                results.measures.get((base.name, base.seed, task, pool, metric))
            if enc.random_init or m is None or b is None:
                continue
            d = m.minus(b)
            rows.append(dict(model=enc.name, seed=enc.seed, task=task, pooling=pool, metric=metric, value=m.value,
                             random_init=b.value, random_init_seed=base.seed, diff=d.diff, ci_low=d.ci_low,
                             ci_high=d.ci_high, beats_random_init=bool(d.ci_low > 0)))
    return pd.DataFrame(rows, columns=VS_RANDOM_COLUMNS)
