"""Figures of the trajectories (analysis/trajectories.py): each metric over pre-training, and the
difference a − b at each snapshot point with its seed-level interval. Same conventions as figures.py
(plain `Figure`, `figures.save`, one fixed colour per model, shared with notebook 05's figures)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from jepa_core.report.ablation_figures import _palette
from jepa_core.report.figures import GEOMETRY_LABELS, _empty, _figure, _require

X_AXES = {"tokens": "tokens seen", "flops": "training FLOPs", "step": "optimizer steps"}
TRAJECTORY_COLUMNS = ["model", "seed", "step", "tokens", "flops", "task", "pooling", "metric", "value", "point"]
POOLING_ORDER = ("mean", "max")


def _x_axis(ax, label: str) -> None:
    """Few ticks, large counts in powers of ten (tokens and FLOPs run to millions and beyond)."""
    ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 3))
    ax.set_xlabel(label, fontsize=8)
    ax.tick_params(labelsize=7)


def _panels(table: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(task, pooling, metric) panels: the wiki geometry, mean pooling first, then the probe cells."""
    order = list(dict.fromkeys(table["metric"]))
    cells = list(dict.fromkeys(zip(table["task"], table["pooling"], table["metric"])))
    rank = {p: i for i, p in enumerate(POOLING_ORDER)}
    return sorted(cells, key=lambda c: (c[0] != "wiki", rank.get(c[1], len(rank)), order.index(c[2])))


def _curve(g: pd.DataFrame, x: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One model's curve: per grid point, x and the value averaged over seeds, and the min–max band.
    Grouped by point, not by x: FLOPs per step differ slightly between seeds (token counts are measured)."""
    agg = g.groupby("point").agg(x=(x, "mean"), mean=("value", "mean"), lo=("value", "min"), hi=("value", "max"))
    return agg["x"].to_numpy(), agg["mean"].to_numpy(), agg["lo"].to_numpy(), agg["hi"].to_numpy()


def trajectories(table: pd.DataFrame, x: str = "tokens", title: str | None = None, ncols: int = 4) -> Figure:
    """One panel per (task, pooling, metric) of trajectories.csv: the metric against `x` (tokens, flops or
    step), one line per model (mean over seeds, markers at the snapshot points), its band min–max over
    seeds. x="flops" lines up runs of different lengths at equal compute (hybrid and mlm-flops)."""
    _require(table, TRAJECTORY_COLUMNS, "trajectories")
    if x not in X_AXES:
        raise ValueError(f"x must be one of {', '.join(X_AXES)}, got {x!r}")
    panels = _panels(table)
    fig, axes = _figure(max(len(panels), 1), ncols=ncols, panel=(3.6, 2.7))
    if not panels:
        _empty(axes[0], "no trajectories (no encoder snapshots: train.snapshots)")
        return fig
    models = list(dict.fromkeys(table["model"]))
    colours = _palette(models)
    for ax, (task, pool, metric) in zip(axes, panels):
        sub = table[(table["task"] == task) & (table["pooling"] == pool) & (table["metric"] == metric)]
        for model, g in sub.groupby("model", sort=False):
            xs, mean, lo, hi = _curve(g, x)
            ax.plot(xs, mean, marker="o", markersize=3, color=colours[model], label=model)
            if g["seed"].nunique() > 1:
                ax.fill_between(xs, lo, hi, color=colours[model], alpha=0.2, linewidth=0)
        ax.set_title(f"{task} · {pool} · {metric}", fontsize=9)
        _x_axis(ax, X_AXES[x])
        ax.set_ylabel(GEOMETRY_LABELS.get(metric, metric).split("\n")[0], fontsize=7)
    axes[0].legend(fontsize=7)
    fig.suptitle(title or f"Over pre-training, against {X_AXES[x]} (held-out Wikipedia sentences; SST-2: probe "
                 "accuracy; line: mean over seeds, band: min–max over seeds)")
    return fig


def difference_trajectories(differences: pd.DataFrame, trends: pd.DataFrame | None = None, x: str = "tokens",
                            model_a: str = "hybrid", model_b: str = "mlm", ncols: int = 4) -> Figure:
    """One panel per (task, pooling, metric): a − b at each snapshot point against `x` (of a), with its
    seed-level 95% interval (hollow points where there is none: one seed), the trend label in the title."""
    _require(differences, ["task", "pooling", "metric", "model_a", "model_b", "point", f"{x}_a", "diff", "ci_low",
                           "ci_high"], "difference_trajectories")
    d = differences[(differences["model_a"] == model_a) & (differences["model_b"] == model_b)]
    panels = _panels(d)
    fig, axes = _figure(max(len(panels), 1), ncols=ncols, panel=(3.6, 2.7))
    if not panels:
        _empty(axes[0], f"no {model_a} − {model_b} trajectories")
        return fig
    label = {}
    if trends is not None and len(trends):
        t = trends[(trends["model_a"] == model_a) & (trends["model_b"] == model_b)]
        label = {(r.task, r.pooling, r.metric): r.trend for r in t.itertuples()}
    colour = _palette([model_a])[model_a]
    for ax, cell in zip(axes, panels):
        task, pool, metric = cell
        sub = d[(d["task"] == task) & (d["pooling"] == pool) & (d["metric"] == metric)].sort_values("point")
        xs, diff = sub[f"{x}_a"].to_numpy(float), sub["diff"].to_numpy(float)
        lo, hi = sub["ci_low"].to_numpy(float), sub["ci_high"].to_numpy(float)
        has = np.isfinite(lo) & np.isfinite(hi)
        ax.plot(xs, diff, color=colour, linewidth=1)
        ax.errorbar(xs[has], diff[has], yerr=[np.maximum(diff[has] - lo[has], 0), np.maximum(hi[has] - diff[has], 0)],
                    fmt="o", markersize=3, color=colour, capsize=2)
        ax.plot(xs[~has], diff[~has], "o", mfc="none", markersize=4, color=colour)
        ax.axhline(0, color="black", linewidth=0.8, linestyle="--")
        trend = f" — {label[cell]}" if cell in label else ""
        ax.set_title(f"{task} · {pool} · {metric}{trend}", fontsize=9)
        _x_axis(ax, f"{X_AXES[x]} ({model_a})")
        ax.set_ylabel(f"{model_a} − {model_b}", fontsize=8)
    fig.suptitle(f"{model_a} − {model_b} over pre-training (95% interval over seeds and examples; hollow: one seed, "
                 "no interval; title: the trend, trajectories.classify_trend)")
    return fig
