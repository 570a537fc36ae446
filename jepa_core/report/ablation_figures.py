"""Notebook 05's figures: forest plots of the ablation effects, layer-wise geometry, and where the
reference encoders sit. Same conventions as figures.py (plain `Figure`, `figures.save`, fixed colours)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from jepa_core.report import figures
from jepa_core.report.figures import GEOMETRY_LABELS, MODEL_COLOURS, _empty, _figure, _ordered, _require

REFERENCE = "reference"  # ablation_study.REFERENCE (not imported: figures stay free of the study's imports)
BASELINE_NAME = "mlm"  # ablation_study.BASELINE_NAME, likewise
# one colour per variant in every figure of 05 (figures._palette's default colours others by position)
VARIANT_COLOURS = {"hybrid-learned": MODEL_COLOURS["hybrid"], "mlm-steps": MODEL_COLOURS["mlm"],
                   "hybrid-uncertainty": "#2ca02c", "hybrid-shared": "#9467bd", "mlm-flops": "#8c564b"}
FIXED_LAMBDA_COLOUR = "#ff7f0e"  # hybrid-fixed<λ>
OTHER_COLOURS = ("#e377c2", "#17becf", "#000000")  # tab10's colours not taken above, then black


def _palette(names) -> dict[str, str]:
    fixed_lambda = {n: FIXED_LAMBDA_COLOUR for n in names if str(n).startswith("hybrid-fixed")}
    return figures._palette(names, {**MODEL_COLOURS, **VARIANT_COLOURS, **fixed_lambda}, OTHER_COLOURS)


def forest(effects: pd.DataFrame, claim: str) -> Figure:
    """One panel per (task, metric) row of `claim`: variant − MLM with its seed-level 95% interval, one
    line per variant (the first listed, hybrid-learned, on top); a variant without an interval (one
    seed) is drawn as a hollow point."""
    _require(effects, ["claim", "variant", "task", "metric", "pooling", "diff", "ci_low", "ci_high"], "forest")
    df = effects[effects["claim"] == claim]
    if "baseline" in df:  # the equal-FLOPs comparison (hybrid-learned − mlm-flops) is not a variant − MLM line
        df = df[df["baseline"] == BASELINE_NAME]
    cells = list(dict.fromkeys(zip(df["task"], df["metric"], df["pooling"])))
    fig, axes = _figure(max(len(cells), 1), ncols=min(5, max(len(cells), 1)), panel=(3.4, 0.5 + 0.45 * max(
        df["variant"].nunique(), 1)))
    if not cells:
        _empty(axes[0], f"no rows for {claim}")
        return fig
    variants = list(dict.fromkeys(df["variant"]))
    colours = _palette(variants)
    for ax, (task, metric, pool) in zip(axes, cells):
        sub = df[(df["task"] == task) & (df["metric"] == metric) & (df["pooling"] == pool)].set_index("variant")
        for y, v in enumerate(variants):
            if v not in sub.index:
                continue
            r = sub.loc[v]
            has_ci = np.isfinite(r["ci_low"]) and np.isfinite(r["ci_high"])
            if has_ci:
                ax.errorbar(r["diff"], y, xerr=[[max(r["diff"] - r["ci_low"], 0)], [max(r["ci_high"] - r["diff"], 0)]],
                            fmt="o", color=colours[v], capsize=3)
            else:
                ax.plot(r["diff"], y, "o", mfc="none", color=colours[v])
        ax.axvline(0, color="black", linewidth=0.8, linestyle="--")
        ax.set_yticks(range(len(variants)), variants)
        ax.set_ylim(len(variants) - 0.5, -0.5)  # first variant on top
        ax.set_title(f"{task} · {metric} ({pool})", fontsize=9)
        ax.set_xlabel("variant − MLM")
    fig.suptitle(f"{claim}: effect of each variant vs the MLM baseline (95% CI over seeds; hollow: one seed, no CI)")
    return fig


def _seed_band(g: pd.DataFrame, x: str):
    """Mean over seeds and the min–max band of one model's curve."""
    agg = g.groupby(x)["value"].agg(["mean", "min", "max"])
    return agg.index.to_numpy(), agg["mean"].to_numpy(), agg["min"].to_numpy(), agg["max"].to_numpy()


def layerwise(table: pd.DataFrame, metric: str) -> Figure:
    """One panel per sentence set: `metric` per layer (0 = embeddings), a line per model (mean over seeds,
    band = min–max over seeds), reference encoders as dashed grey-toned lines."""
    _require(table, ["model", "objective", "seed", "task", "layer", "metric", "value"], "layerwise")
    df = table[table["metric"] == metric]
    tasks = _ordered(df["task"]) or ["(none)"]
    fig, axes = _figure(len(tasks), ncols=len(tasks), panel=(5.0, 3.6))
    models = list(dict.fromkeys(df["model"]))
    colours = _palette(models)
    for ax, task in zip(axes, tasks):
        sub = df[df["task"] == task]
        if sub.empty:
            _empty(ax, f"no {metric} rows")
            continue
        for model, g in sub.groupby("model", sort=False):
            x, mean, lo, hi = _seed_band(g, "layer")
            reference = (g["objective"] == REFERENCE).all()
            ax.plot(x, mean, linestyle="--" if reference else "-", marker="o", markersize=3, color=colours[model],
                    label=f"{model} (reference)" if reference else model)
            if g["seed"].nunique() > 1:
                ax.fill_between(x, lo, hi, color=colours[model], alpha=0.2, linewidth=0)
        ax.set_title(task)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_ylabel(GEOMETRY_LABELS.get(metric, metric))
        ax.legend(fontsize=7)
    fig.suptitle(f"{metric.replace('_', ' ')} per layer (mean pooling; bands: min–max over pre-training seeds)")
    return fig


def model_points(metrics: pd.DataFrame, cells: Sequence[tuple[str, str, str]], title: str) -> Figure:
    """One panel per (task, metric, pooling) cell: each of our models as a point (mean over seeds, whiskers
    = the mean of the bootstrap CIs), each reference encoder as a dashed horizontal line, the majority
    baseline (where there is one) as a dotted line."""
    _require(metrics, ["model", "objective", "task", "pooling", "metric", "value", "ci_low", "ci_high"],
             "model_points")
    fig, axes = _figure(max(len(cells), 1), ncols=min(3, max(len(cells), 1)), panel=(4.6, 3.2))
    for ax, (task, metric, pool) in zip(axes, cells):
        sub = metrics[(metrics["task"] == task) & (metrics["metric"] == metric)]
        ours = sub[(sub["pooling"] == pool) & ~sub["objective"].isin([REFERENCE, "majority", "random_init"])]
        if ours.empty:
            _empty(ax, f"no {metric} for {task}")
            continue
        agg = ours.groupby("model", sort=False)[["value", "ci_low", "ci_high"]].mean()
        colours = _palette(list(agg.index))
        for x, (model, r) in enumerate(agg.iterrows()):
            ax.errorbar(x, r["value"], yerr=[[max(r["value"] - r["ci_low"], 0)], [max(r["ci_high"] - r["value"], 0)]],
                        fmt="o", color=colours[model], capsize=3)
        for i, (model, r) in enumerate(sub[(sub["pooling"] == pool) & (sub["objective"] == REFERENCE)]
                                       .groupby("model")["value"].mean().items()):
            ax.axhline(r, color="0.35", linestyle=("--", "-.", ":")[i % 3], linewidth=1, label=f"{model} (reference)")
        majority = sub[sub["model"] == "majority"]["value"]
        if len(majority):
            ax.axhline(majority.mean(), color="black", linestyle=":", linewidth=1, label="majority baseline")
        ax.set_xticks(range(len(agg)), agg.index, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{task} · {metric} ({pool})", fontsize=9)
        ax.set_ylabel(GEOMETRY_LABELS.get(metric, metric))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    return fig
