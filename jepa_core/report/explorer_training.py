"""The explorer's training view: `results/trajectories.csv` (analysis/trajectories.py: each model's metrics on
its encoder snapshots during pre-training; notebook 05's variants in <run>/ablations/results/) as a table and,
for one metric, as curves against optimizer steps, one line per model and seed."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from jepa_core.report.ablation_figures import _palette
from jepa_core.report.explorer_layers import read_keyed
from jepa_core.report.figures import GEOMETRY_LABELS

TRAINING = "training"  # the view's option (the explorer's `layer` dropdown: last | layer-wise | training)
TRAJECTORIES_CSV = Path("results") / "trajectories.csv"
SEED_STYLES = ("-", "--", ":", "-.")


def load_training(study_dir: Path) -> pd.DataFrame | None:
    """A study's trajectories.csv with a `key` column (hybrid-s0 ...), or None when it has none."""
    return read_keyed(Path(study_dir) / TRAJECTORIES_CSV)


def select_training(table: pd.DataFrame, task: str, pooling: str, metric: str | None, seed,
                    all_seeds=None) -> pd.DataFrame:
    """The rows of one task and pooling (and metric, unless None), of the chosen seed's runs."""
    sel = table[(table["task"] == task) & (table["pooling"] == pooling)]
    if metric is not None:
        sel = sel[sel["metric"] == metric]
    return sel if seed == all_seeds else sel[sel["seed"] == seed]


def training_table(selected: pd.DataFrame) -> pd.DataFrame:
    """value [95% CI over the sentences] per (metric, step) × run key."""
    cells = [f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if pd.notna(lo) and pd.notna(hi) else f"{v:.3f}"
             for v, lo, hi in zip(selected["value"], selected["ci_low"], selected["ci_high"])]
    return selected.assign(cell=cells).pivot_table(index=["metric", "step"], columns="key", values="cell",
                                                   aggfunc="first").rename_axis(columns=None)


def training_figure(selected: pd.DataFrame, metric: str | None, available: list[str], task: str,
                    pooling: str) -> Figure | str:
    """`metric` against optimizer steps, a line per run (colour: model, line style: seed), markers at the
    snapshots; or the reason there is no figure (a sentence)."""
    if metric is None:
        return f"choose one metric to draw it over pre-training (trajectory metrics: {', '.join(available)})"
    if selected.empty:
        return (f"no trajectory of {metric} for {task} with {pooling} pooling (trajectories: the wiki geometry "
                f"under mean and max pooling, the SST-2 probe accuracy under mean pooling)")
    fig = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = fig.subplots()
    colours = _palette(list(dict.fromkeys(selected["model"])))
    seeds = sorted(selected["seed"].dropna().unique())
    for (model, seed, key), g in selected.sort_values("step").groupby(["model", "seed", "key"], sort=False):
        style = SEED_STYLES[seeds.index(seed) % len(SEED_STYLES)] if seed in seeds else "-"
        ax.plot(g["step"], g["value"], linestyle=style, marker="o", markersize=3, color=colours[model], label=key)
    ax.set_xlabel("optimizer steps")
    ax.set_ylabel(GEOMETRY_LABELS.get(metric, metric))
    ax.set_title(f"{task} · {pooling} pooling: {metric} over pre-training (one line per model and seed)", fontsize=9)
    ax.legend(fontsize=7)
    return fig
