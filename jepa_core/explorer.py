"""An ipywidgets explorer over finished runs: pick run, task, pooling and metric; see both
encoders' dev embeddings side by side (PCA to 2-D, coloured by label) and the metric table.

    from jepa_core.explorer import Explorer
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

from jepa_core import figures

PROJECTED_POINTS = 1000  # dev examples shown per model (a seeded subsample keeps the plot readable)


def _image(fig):
    """The figure as a PNG display object: shows up with or without matplotlib's inline backend."""
    import io

    from IPython.display import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=figures.DPI, bbox_inches="tight")
    return Image(data=buffer.getvalue(), format="png")


def headless() -> bool:
    return os.environ.get("JEPA_HEADLESS") == "1"


def find_runs(outputs_dir: str | Path) -> list[str]:
    """Run folders under outputs_dir that have results/metrics.csv, newest first."""
    runs = [p for p in Path(outputs_dir).glob("*/results/metrics.csv")]
    return [p.parent.parent.name for p in sorted(runs, key=lambda p: p.stat().st_mtime, reverse=True)]


@lru_cache(maxsize=8)
def _metrics(path: str, mtime: float) -> pd.DataFrame:  # mtime in the key: a re-run is re-read
    return pd.read_csv(path)


def load_metrics(run_dir: Path) -> pd.DataFrame:
    path = run_dir / "results" / "metrics.csv"
    return _metrics(str(path), path.stat().st_mtime)


def load_embeddings(run_dir: Path, model: str, task: str, pooling: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(X, labels) of the dev embeddings evaluate() saved for this selection (first seed), or None.

    Layout (evaluate.py): results/embeddings/<task>/<model>[-s<seed>]/<pooling>.npy, rows in the
    order of results/embeddings/<task>/examples.parquet, which holds the labels."""
    folder = Path(run_dir) / "results" / "embeddings" / task
    for candidate in [folder / model, *sorted(folder.glob(f"{model}-s*"))]:
        path = candidate / f"{pooling}.npy"
        if path.is_file() and (folder / "examples.parquet").is_file():
            labels = pd.read_parquet(folder / "examples.parquet", columns=["label"])["label"].to_numpy()
            return np.load(path), labels
    return None


def project(run_dir: Path, models: list[str], task: str, pooling: str, seed: int = 0) -> pd.DataFrame:
    """PCA to 2-D of each model's dev embeddings (fitted per model): `model, x, y, label`."""
    from sklearn.decomposition import PCA

    frames = []
    for model in models:
        loaded = load_embeddings(run_dir, model, task, pooling)
        if loaded is None:
            continue
        X, labels = loaded
        keep = np.random.default_rng(seed).permutation(len(X))[:PROJECTED_POINTS]
        xy = PCA(n_components=2, random_state=seed).fit_transform(np.asarray(X, dtype=np.float64)[keep])
        frames.append(pd.DataFrame({"model": model, "x": xy[:, 0], "y": xy[:, 1], "label": np.asarray(labels)[keep]}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["model", "x", "y", "label"])


def selection_table(metrics: pd.DataFrame, task: str, pooling: str, metric: str | None = None) -> pd.DataFrame:
    """value [CI] per model for the task × pooling (one metric, or all of them)."""
    sel = metrics[(metrics["task"] == task) & (metrics["pooling"] == pooling)]
    if metric:
        sel = sel[sel["metric"] == metric]
    cell = [f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if pd.notna(lo) and pd.notna(hi) else f"{v:.3f}"
            for v, lo, hi in zip(sel["value"], sel["ci_low"], sel["ci_high"])]
    return sel.assign(cell=cell).pivot_table(index="metric", columns="model", values="cell", aggfunc="first")


class Explorer:
    def __init__(self, outputs_dir: str | Path = "outputs", run: str | None = None):
        self.outputs_dir = Path(outputs_dir)
        self.runs = find_runs(self.outputs_dir)
        if run is not None and run not in self.runs:
            raise FileNotFoundError(f"run {run!r} has no results/metrics.csv under {self.outputs_dir}")
        self.run = run or (self.runs[0] if self.runs else None)

    def options(self, run: str) -> dict[str, list[str]]:
        m = load_metrics(self.outputs_dir / run)
        return {"task": list(dict.fromkeys(m["task"])), "pooling": list(dict.fromkeys(m["pooling"].dropna())),
                "metric": sorted(m["metric"].unique())}

    def render(self, run: str, task: str, pooling: str, metric: str | None):
        """(Figure or None, table) for one selection."""
        run_dir = self.outputs_dir / run
        metrics = load_metrics(run_dir)
        models = [m for m in ("hybrid", "mlm") if m in set(metrics["model"])] or \
            sorted(set(metrics["objective"].dropna()))
        points = project(run_dir, models, task, pooling)
        fig = figures.projection(points, f"{run}: {task} dev embeddings, {pooling} pooling (PCA)") \
            if len(points) else None
        return fig, selection_table(metrics, task, pooling, metric)

    def show(self):
        from IPython.display import display

        if self.run is None:
            print(f"no finished run under {self.outputs_dir} (run the workbook first)")
            return None
        opts = self.options(self.run)
        task = "sst2" if "sst2" in opts["task"] else opts["task"][0]
        pooling = "mean" if "mean" in opts["pooling"] else opts["pooling"][0]
        metric = "uniformity" if "uniformity" in opts["metric"] else opts["metric"][0]
        if headless():
            print(f"headless run: static view of run={self.run} task={task} pooling={pooling} metric={metric}")
            fig, table = self.render(self.run, task, pooling, None)
            if fig is not None:
                display(_image(fig))
            display(table)
            return None
        self.box = self._widgets(task, pooling, metric)  # kept so the notebook can reach it; nothing returned
        return None

    def _widgets(self, task: str, pooling: str, metric: str):
        import ipywidgets as w
        from IPython.display import display

        opts = self.options(self.run)
        run_dd = w.Dropdown(options=self.runs, value=self.run, description="run")
        task_dd = w.Dropdown(options=opts["task"], value=task, description="task")
        pool_dd = w.Dropdown(options=opts["pooling"], value=pooling, description="pooling")
        metric_dd = w.Dropdown(options=["(all)"] + opts["metric"], value=metric, description="metric")
        out = w.Output()

        def update(*_):
            out.clear_output(wait=True)
            with out:
                try:
                    fig, table = self.render(run_dd.value, task_dd.value, pool_dd.value,
                                             None if metric_dd.value == "(all)" else metric_dd.value)
                except Exception as exc:  # show the problem in the widget instead of a silent callback error
                    print(f"cannot render this selection: {exc}")
                    return
                if fig is None:
                    print("no cached dev embeddings for this selection (label-free 'wiki' rows have no labels)")
                else:
                    display(_image(fig))
                display(table)

        def new_run(change):
            o = self.options(change["new"])
            task_dd.options, pool_dd.options, metric_dd.options = o["task"], o["pooling"], ["(all)"] + o["metric"]
            update()

        run_dd.observe(new_run, names="value")
        for dd in (task_dd, pool_dd, metric_dd):
            dd.observe(update, names="value")
        update()
        box = w.VBox([w.HBox([run_dd, task_dd]), w.HBox([pool_dd, metric_dd]), out])
        display(box)
        return box
