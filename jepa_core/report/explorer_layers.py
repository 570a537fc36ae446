"""The explorer's layer-wise view: notebook 05's `results/layerwise.csv` (per model, seed, layer and
sentence set: uniformity, anisotropy, effective rank under mean pooling) as a table and, for one metric,
as ablation_figures.layerwise's curves across layers."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pandas as pd

from jepa_core.report.ablation_figures import layerwise

LAST_LAYER = "last"  # the layer-view options: the last layer (the metrics table and the projection) ...
LAYER_WISE = "layer-wise"  # ... or every layer, from layerwise.csv
LAYERWISE_CSV = Path("results") / "layerwise.csv"


def with_keys(table: pd.DataFrame, baselines=()) -> pd.DataFrame:
    """`key` = the folder name evaluate.py gives each encoder (tables.ModelFolder.key): <model>-s<seed>; baselines
    and seedless encoders (references) by their model name."""
    seeded = table["seed"].notna() & ~table["model"].isin(baselines)
    model = table["model"].astype(str)
    return table.assign(key=model.where(~seeded, model + "-s" + table["seed"].astype("Int64").astype(str)))


@lru_cache(maxsize=8)
def _read(path: str, mtime: float) -> pd.DataFrame:  # mtime in the key: a re-run is re-read
    return with_keys(pd.read_csv(path))


def read_keyed(path: Path) -> pd.DataFrame | None:
    """A results CSV with a `key` column (`with_keys`), cached until the file changes; None when absent."""
    return _read(str(path), path.stat().st_mtime) if path.is_file() else None


def load_layerwise(run_dir: Path) -> pd.DataFrame | None:
    """The run's layerwise.csv with a `key` column, or None when notebook 05 did not write one."""
    return read_keyed(Path(run_dir) / LAYERWISE_CSV)


def select_layers(layers: pd.DataFrame, task: str, metric: str | None, seed, models: list[str] | None = None,
           all_seeds=None) -> pd.DataFrame:
    """The rows of one task (and metric, unless None), the chosen seed's encoders (reference encoders,
    which have no pre-training seed, always) and, if given, only `models`."""
    sel = layers[layers["task"] == task]
    if metric is not None:
        sel = sel[sel["metric"] == metric]
    if seed != all_seeds:
        sel = sel[(sel["seed"] == seed) | sel["seed"].isna()]
    return sel if models is None else sel[sel["model"].isin(models)]


def layer_table(selected: pd.DataFrame) -> pd.DataFrame:
    """value per (metric, layer) × encoder key, layer 0 = the embeddings."""
    cells = selected.assign(cell=selected["value"].map("{:.3f}".format))
    return cells.pivot_table(index=["metric", "layer"], columns="key", values="cell", aggfunc="first") \
        .rename_axis(columns=None)


def layer_figure(selected: pd.DataFrame, metric: str | None, available: list[str], task: str):
    """ablation_figures.layerwise of the selection, or the reason there is none (a sentence)."""
    if metric is None:
        return f"choose one metric to draw it across layers (layer-wise metrics: {', '.join(available)})"
    if selected.empty:
        return f"no layer-wise {metric} for {task} (layer-wise metrics: {', '.join(available)})"
    return layerwise(selected, metric)
