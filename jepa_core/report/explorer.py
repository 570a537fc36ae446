"""An ipywidgets explorer over finished runs: pick run, task, pooling, metric and seed (one or all, to
see the spread between pre-training seeds); see the encoders' dev embeddings side by side (PCA to 2-D,
coloured by label where the task has labels) and the metric table, optionally next to a second run's.
Where notebook 05 ran, two more dropdowns: `models` (the main study, or 05's ablation variants from
<run>/ablations/results/, same protocol and layout) and `view` (the last layer; the metric across layers
from results/layerwise.csv: explorer_layers.py). Where the encoders' snapshots were measured
(analysis/trajectories.py), `view` also offers `training`: the metric against optimizer steps, one line per
model and seed (results/trajectories.csv: explorer_training.py). A run without any of these shows neither.

    from jepa_core.report.explorer import Explorer
    Explorer("outputs").show()          # in JupyterLab: dropdowns + live plot

Headless (papermill, nbconvert) there is nobody to move a dropdown: `show()` then renders the
default selection once as a static figure and table, so the exported HTML still shows it.
Headless is detected from JEPA_HEADLESS=1, which the workbook sets in the kernels it starts.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from jepa_core.report import figures
from jepa_core.report.explorer_layers import (
    LAST_LAYER,
    LAYER_WISE,
    LAYERWISE_CSV,
    layer_figure,
    layer_table,
    load_layerwise,
    select_layers,
    with_keys,
)
from jepa_core.report.explorer_training import (
    TRAINING,
    TRAJECTORIES_CSV,
    load_training,
    select_training,
    training_figure,
    training_table,
)

PROJECTED_POINTS = 1000  # dev examples shown per model (a seeded subsample keeps the plot readable)
ALL_SEEDS = "all"
NO_COMPARISON = "(none)"
# no encoder, no seed; the random-init encoder has one per pre-training seed (random_init-s<seed>)
BASELINES = ("majority",)
MAIN_STUDY = "main study"  # the `models` options: <run>/results/ ...
ABLATIONS = "ablations"  # ... or <run>/ablations/results/ (ablation_study.STUDY_DIR, not imported: it imports torch)
NO_EMBEDDINGS = "no cached dev embeddings for this selection"


def _image(fig):
    """The figure as a PNG display object: shows up with or without matplotlib's inline backend."""
    import io

    from IPython.display import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=figures.DPI, bbox_inches="tight")
    return Image(data=buffer.getvalue(), format="png")


def _show(fig, table) -> None:
    """A render's result: the figure (or the sentence saying why there is none), then the table."""
    from IPython.display import display

    if isinstance(fig, str):
        print(fig)
    else:
        display(_image(fig))
    display(table)


def headless() -> bool:
    return os.environ.get("JEPA_HEADLESS") == "1"


def find_runs(outputs_dir: str | Path) -> list[str]:
    """Run folders under outputs_dir that have results/metrics.csv, newest first."""
    runs = [p for p in Path(outputs_dir).glob("*/results/metrics.csv")]
    return [p.parent.parent.name for p in sorted(runs, key=lambda p: p.stat().st_mtime, reverse=True)]


@lru_cache(maxsize=8)
def _metrics(path: str, mtime: float) -> pd.DataFrame:  # mtime in the key: a re-run is re-read
    return with_keys(pd.read_csv(path), BASELINES)


def study_dir(run_dir: Path, models: str = MAIN_STUDY) -> Path:
    """Where a study's results/ lie: the run itself, or its ablations/ folder (05: same layout)."""
    return Path(run_dir) / ABLATIONS if models == ABLATIONS else Path(run_dir)


def load_metrics(run_dir: Path) -> pd.DataFrame:
    path = Path(run_dir) / "results" / "metrics.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (is {run_dir} a finished run?)")
    return _metrics(str(path), path.stat().st_mtime)


def seeds(metrics: pd.DataFrame) -> list[int]:
    """The pre-training seeds of the run's trained encoders."""
    trained = metrics[~metrics["model"].isin(BASELINES)]
    return sorted(int(s) for s in trained["seed"].dropna().unique())


def encoder_keys(metrics: pd.DataFrame, seed: int | str = ALL_SEEDS) -> list[str]:
    """The trained encoders' keys (hybrid-s0, mlm-s0, ...) for one seed or all, grouped by model; 05's
    reference encoders (no pre-training seed) with every seed."""
    trained = metrics[~metrics["model"].isin(BASELINES)]
    if seed != ALL_SEEDS:
        trained = trained[(trained["seed"] == seed) | trained["seed"].isna()]
    return list(trained.sort_values(["model", "seed"])["key"].drop_duplicates())


def load_embeddings(run_dir: Path, key: str, task: str, pooling: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(X, labels) of the dev embeddings evaluate() saved for one encoder key, or None.

    Layout (evaluate.py): results/embeddings/<task>/<key>/<pooling>.npy, rows in the order of
    results/embeddings/<task>/examples.parquet, which holds the labels."""
    folder = Path(run_dir) / "results" / "embeddings" / task
    path = folder / key / f"{pooling}.npy"
    if not (path.is_file() and (folder / "examples.parquet").is_file()):
        return None
    labels = pd.read_parquet(folder / "examples.parquet", columns=["label"])["label"].to_numpy()
    return np.load(path), labels


def project(run_dir: Path, keys: list[str], task: str, pooling: str, seed: int = 0) -> pd.DataFrame:
    """PCA to 2-D of each encoder's dev embeddings (fitted per encoder): `model, x, y, label`."""
    from sklearn.decomposition import PCA

    frames = []
    for key in keys:
        loaded = load_embeddings(run_dir, key, task, pooling)
        if loaded is None:
            continue
        X, labels = loaded
        keep = np.random.default_rng(seed).permutation(len(X))[:PROJECTED_POINTS]
        xy = PCA(n_components=2, random_state=seed).fit_transform(np.asarray(X, dtype=np.float64)[keep])
        frames.append(pd.DataFrame({"model": key, "x": xy[:, 0], "y": xy[:, 1], "label": np.asarray(labels)[keep]}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["model", "x", "y", "label"])


def selection_table(metrics: pd.DataFrame, task: str, pooling: str, metric: str | None = None,
                    seed: int | str = ALL_SEEDS) -> pd.DataFrame:
    """value [CI] per encoder (metric × key) for the task × pooling, one metric or all; the chosen seed's
    encoders and the baselines (majority whatever the pooling: it has none). With all of several seeds,
    a `<model> mean ± sd` column per model."""
    sel = metrics[(metrics["task"] == task) & ((metrics["pooling"] == pooling) | (metrics["model"] == "majority"))]
    if metric:
        sel = sel[sel["metric"] == metric]
    sel = sel[sel["key"].isin(encoder_keys(metrics, seed)) | sel["model"].isin(BASELINES)]
    cell = [f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if pd.notna(lo) and pd.notna(hi) else f"{v:.3f}"
            for v, lo, hi in zip(sel["value"], sel["ci_low"], sel["ci_high"])]
    table = sel.assign(cell=cell).pivot_table(index="metric", columns="key", values="cell", aggfunc="first")
    trained = sel[~sel["model"].isin(BASELINES)]
    if seed == ALL_SEEDS and trained["seed"].nunique() > 1:
        spread = trained.groupby(["metric", "model"])["value"].agg(["mean", "std"])
        cells = (spread["mean"].map("{:.3f}".format) + " ± " + spread["std"].map("{:.3f}".format)).unstack("model")
        table = table.join(cells.rename(columns=lambda m: f"{m} mean ± sd"))
    return table.rename_axis(columns=None)


def side_by_side(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Several runs' selection tables in one, columns (run, encoder), rows the union of metrics."""
    return pd.concat(tables, axis=1, names=["run", None])


class Explorer:
    def __init__(self, outputs_dir: str | Path = "outputs", run: str | None = None):
        self.outputs_dir = Path(outputs_dir)
        self.runs = find_runs(self.outputs_dir)
        if run is not None and run not in self.runs:
            raise FileNotFoundError(f"run {run!r} has no results/metrics.csv under {self.outputs_dir}")
        self.run = run or (self.runs[0] if self.runs else None)

    def options(self, run: str, models: str = MAIN_STUDY) -> dict[str, list]:
        run_dir = self.outputs_dir / run
        has_ablations = (study_dir(run_dir, ABLATIONS) / "results" / "metrics.csv").is_file()
        study = study_dir(run_dir, models if has_ablations else MAIN_STUDY)
        m = load_metrics(study)
        encoders = m[m["model"] != "majority"]  # the majority baseline's pooling "none" has no embeddings
        return {"task": list(dict.fromkeys(m["task"])), "pooling": list(dict.fromkeys(encoders["pooling"].dropna())),
                "metric": sorted(m["metric"].unique()),
                "seed": [("all seeds", ALL_SEEDS)] + [(f"s{s}", s) for s in seeds(m)],
                "compare": [NO_COMPARISON] + [r for r in self.runs if r != run],
                "models": [MAIN_STUDY] + [ABLATIONS] * has_ablations,
                "layer": [LAST_LAYER] + [LAYER_WISE] * (run_dir / LAYERWISE_CSV).is_file()
                + [TRAINING] * (study / TRAJECTORIES_CSV).is_file()}

    def _data(self, run: str, models: str, layer: str) -> pd.DataFrame | None:
        """What a selection reads: the study's metrics.csv or trajectories.csv, or the run's layerwise.csv;
        None if absent."""
        if layer == LAYER_WISE:
            return load_layerwise(self.outputs_dir / run)
        if layer == TRAINING:
            return load_training(study_dir(self.outputs_dir / run, models))
        folder = study_dir(self.outputs_dir / run, models)
        return load_metrics(folder) if (folder / "results" / "metrics.csv").is_file() else None

    @staticmethod
    def _layers(layers: pd.DataFrame, task: str, metric: str | None, seed, models: str) -> pd.DataFrame:
        # main study: the main encoders, whose model name is their objective (variants and references are not)
        main = list(layers.loc[layers["model"] == layers["objective"], "model"].unique())
        return select_layers(layers, task, metric, seed, main if models == MAIN_STUDY else None, ALL_SEEDS)

    def _table(self, data: pd.DataFrame, task, pooling, metric, seed, models, layer) -> pd.DataFrame:
        if layer == LAYER_WISE:
            return layer_table(self._layers(data, task, metric, seed, models))
        if layer == TRAINING:
            return training_table(select_training(data, task, pooling, metric, seed, ALL_SEEDS))
        return selection_table(data, task, pooling, metric, seed)

    def _figure(self, run: str, data: pd.DataFrame, task, pooling, metric, seed, models, layer):
        if layer == LAYER_WISE:
            available = sorted(data["metric"].unique())
            return layer_figure(self._layers(data, task, metric, seed, models), metric, available, task)
        if layer == TRAINING:
            available = list(dict.fromkeys(data["metric"]))
            return training_figure(select_training(data, task, pooling, metric, seed, ALL_SEEDS), metric, available,
                                   task, pooling)
        points = project(study_dir(self.outputs_dir / run, models), encoder_keys(data, seed), task, pooling)
        ncols = data.loc[~data["model"].isin(BASELINES), "model"].nunique()
        where = f"{run} ({ABLATIONS})" if models == ABLATIONS else run
        return figures.projection(points, f"{where}: {task} dev embeddings, {pooling} pooling (PCA)", ncols=ncols) \
            if len(points) else NO_EMBEDDINGS

    def render(self, run: str, task: str, pooling: str, metric: str | None, seed: int | str = ALL_SEEDS,
               compare: str | None = None, models: str = MAIN_STUDY, layer: str = LAST_LAYER):
        """(Figure, or a sentence saying why there is none; table) for one selection; with `compare`,
        that run's table (same models and layer view) beside this one's. The layer-wise view reads
        results/layerwise.csv (mean pooling only: `pooling` does not apply); the training view the study's
        results/trajectories.csv (metric against optimizer steps per model and seed)."""
        data = self._data(run, models, layer)
        if data is None:
            raise FileNotFoundError(f"run {run!r} has no {models} results for the {layer} view")
        fig = self._figure(run, data, task, pooling, metric, seed, models, layer)
        table = self._table(data, task, pooling, metric, seed, models, layer)
        if compare and compare != NO_COMPARISON:
            other = self._data(compare, models, layer)
            if other is None:  # say so rather than drop the column silently
                what = {LAYER_WISE: "layer-wise results", TRAINING: "trajectories"}.get(layer, "ablation results")
                tables = {run: table, f"{compare} (no {what})": pd.DataFrame(index=table.index, columns=["-"])}
            else:
                if seed != ALL_SEEDS and seed not in seeds(other):  # say so rather than show baselines only
                    seed, compare = ALL_SEEDS, f"{compare} (no seed {seed}: all seeds)"
                tables = {run: table, compare: self._table(other, task, pooling, metric, seed, models, layer)}
            table = side_by_side(tables)
        return fig, table

    def show(self):
        if self.run is None:
            print(f"no finished run under {self.outputs_dir} (run the workbook first)")
            return None
        opts = self.options(self.run)
        task = "sst2" if "sst2" in opts["task"] else opts["task"][0]
        pooling = "mean" if "mean" in opts["pooling"] else opts["pooling"][0]
        metric = "uniformity" if "uniformity" in opts["metric"] else opts["metric"][0]
        if headless():
            print(f"headless run: static view of run={self.run} task={task} pooling={pooling} metric={metric}")
            _show(*self.render(self.run, task, pooling, None))
            return None
        self.box = self._widgets(task, pooling, metric)  # kept so the notebook can reach it; nothing returned
        return None

    def _widgets(self, task: str, pooling: str, metric: str):
        import ipywidgets as w
        from IPython.display import display

        opts = self.options(self.run)
        dd = {"run": w.Dropdown(options=self.runs, value=self.run, description="run"),
              "task": w.Dropdown(options=opts["task"], value=task, description="task"),
              "pooling": w.Dropdown(options=opts["pooling"], value=pooling, description="pooling"),
              "metric": w.Dropdown(options=["(all)"] + opts["metric"], value=metric, description="metric"),
              "seed": w.Dropdown(options=opts["seed"], value=ALL_SEEDS, description="seed"),
              "compare": w.Dropdown(options=opts["compare"], value=NO_COMPARISON, description="compare"),
              "models": w.Dropdown(options=opts["models"], value=MAIN_STUDY, description="models"),
              "layer": w.Dropdown(options=opts["layer"], value=LAST_LAYER, description="view")}
        out = w.Output()
        self.dropdowns = dd

        def hide_single_choices(o):  # a run without notebook 05's outputs shows the dropdowns it had before
            for name in ("models", "layer"):
                dd[name].layout.display = None if len(o[name]) > 1 else "none"

        hide_single_choices(opts)
        refilling = []  # non-empty while refill swaps the options: one redraw after, not one per dropdown

        def update(*_):
            if refilling:
                return
            out.clear_output(wait=True)
            with out:
                try:
                    fig, table = self.render(dd["run"].value, dd["task"].value, dd["pooling"].value,
                                             None if dd["metric"].value == "(all)" else dd["metric"].value,
                                             dd["seed"].value, dd["compare"].value, dd["models"].value,
                                             dd["layer"].value)
                except Exception as exc:  # show the problem in the widget instead of a silent callback error
                    print(f"cannot render this selection: {exc}")
                    return
                _show(fig, table)

        def set_options(name: str, options: list) -> None:
            """New options, keeping the value where it still is one (ipywidgets picks the first option)."""
            kept = dd[name].value
            dd[name].options = options
            if kept in [o[1] if isinstance(o, tuple) else o for o in options]:
                dd[name].value = kept

        def refill(*_):
            """New run or models: each dropdown gets that run's (and study's) options."""
            if refilling:  # setting models' options below may change its value: no second refill
                return
            refilling.append(True)
            try:
                set_options("models", self.options(dd["run"].value)["models"])
                o = self.options(dd["run"].value, dd["models"].value)
                for name in ("task", "pooling", "seed", "compare", "layer"):
                    set_options(name, o[name])
                set_options("metric", ["(all)"] + o["metric"])
                hide_single_choices(o)
            finally:
                refilling.clear()
            update()

        dd["run"].observe(refill, names="value")
        dd["models"].observe(refill, names="value")
        for name in ("task", "pooling", "metric", "seed", "compare", "layer"):
            dd[name].observe(update, names="value")
        update()
        box = w.VBox([w.HBox([dd["run"], dd["task"], dd["seed"], dd["models"]]),
                      w.HBox([dd["pooling"], dd["metric"], dd["compare"], dd["layer"]]), out])
        display(box)
        return box
