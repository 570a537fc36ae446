"""The workbook's figures: each function takes tidy DataFrames and returns a matplotlib Figure.

Figures are built on `matplotlib.figure.Figure` directly (no pyplot state), so they are cheap to
test, never pop up windows, and a notebook shows one with `display(fig)`. `save(fig, run_dir,
name)` writes `figures/<name>.png`. Colours are fixed per model so that "hybrid" has the same
colour in every figure.

Input tables (docs/DESIGN.md):
- logs: one row per logged training step, columns `objective, seed, step` + the logged fields
  (`loss, mlm_loss, jepa_loss, lambda, lr, ema_momentum, grad_norm, target_std,
  batch_effective_rank`, validation records with `val_mlm_loss, val_jepa_loss`), see `read_logs`;
- metrics: results/metrics.csv (`model, objective, seed, task, pooling, metric, value, ci_low,
  ci_high, n, chance, note`);
- differences: results/differences.csv (`task, pooling, metric, diff, ci_low, ci_high, p, p_holm`);
- spectra: `objective, task, pooling, index, eigenvalue` (eigenvalues of the covariance of the
  dev embeddings, one row per eigenvalue).
"""
from __future__ import annotations

import itertools
import json
import math
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from jepa_core.analysis.stats import PER_SEED, POOLED
from jepa_core.config import POOLINGS, TASKS

DPI = 120
MODEL_COLOURS = {"hybrid": "#1f77b4", "mlm": "#d62728", "random_init": "#7f7f7f", "majority": "#bcbd22"}
MODEL_ORDER = ["hybrid", "mlm", "random_init"]

# (metric, axis label with its unit / direction) for the geometry grid
# Two lines where long: a one-line label is taller than a 3.6-inch panel and runs into the suptitle.
GEOMETRY_LABELS = {
    "uniformity": "uniformity  log E exp(−2‖x−y‖²)\n(lower = more uniform)",
    "uniformity_centred": "uniformity, centred\n(lower = more uniform)",
    "alignment": "alignment  E‖x−y‖² over positive pairs\n(lower = closer)",
    "anisotropy": "anisotropy  mean pairwise cosine",
    "mean_direction": "mean direction  ‖mean of x/‖x‖‖²",
    "spectral_entropy": "normalised spectral entropy  (0–1)",
    "effective_rank": "effective rank (RankMe, dimensions)",
    "stable_rank": "stable rank (dimensions)",
    "rank90": "components for 90% of variance",
    "class_distance_ratio": "intra / inter-class distance\n(lower = clustered)",
}


def save(fig: Figure, run_dir: str | Path, name: str) -> Path:
    """Write figures/<name>.png under run_dir and return its path."""
    path = Path(run_dir) / "figures" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def _figure(n_panels: int, ncols: int = 3, panel: tuple[float, float] = (4.2, 3.2)):
    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _ordered(values, reference: Sequence[str] = (*TASKS, "wiki", *POOLINGS)) -> list:
    """Distinct values, known names in the project's order (tasks as in docs/PROTOCOL.md §5.1, then wiki; poolings)."""
    values = list(dict.fromkeys(v for v in values if pd.notna(v)))
    rank = {name: i for i, name in enumerate(reference)}
    return sorted(values, key=lambda v: (rank.get(v, len(rank)), str(v)))


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise KeyError(f"{what}: the table lacks columns {missing} (it has {list(df.columns)})")


def _palette(names, fixed: Mapping[str, str] = MODEL_COLOURS, others: Sequence[str] | None = None) -> dict[str, str]:
    """Names in `fixed` keep their colour; the others take `others` in turn (default: tab10's colours,
    never one of the fixed ones: tab10's 4th colour IS mlm's red)."""
    if others is None:
        others = [c for c in sns.color_palette("tab10", 20).as_hex() if c not in fixed.values()]
    extra = itertools.cycle(others)
    return {n: fixed.get(n) or next(extra) for n in names}


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="0.4", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


# ---------------------------------------------------------------- data

def document_lengths(docs: pd.DataFrame) -> Figure:
    """Histogram of document lengths (`split, words`; log-spaced bins), one colour per split."""
    _require(docs, ["split", "words"], "document_lengths")
    fig, (ax,) = _figure(1, panel=(6.5, 3.4))
    words = docs["words"].clip(lower=1)
    bins = np.logspace(0, np.log10(max(words.max(), 10)), 40)
    sns.histplot(docs.assign(words=words), x="words", hue="split", bins=bins, element="step", ax=ax,
                 stat="count", common_norm=False)
    ax.set_xscale("log")
    ax.set_title("Pre-training corpus: document length")
    ax.set_xlabel("words per document (log scale)")
    ax.set_ylabel("documents")
    return fig


# ---------------------------------------------------------------- training

def read_logs(paths: dict[str, str | Path]) -> pd.DataFrame:
    """{run name (e.g. "hybrid" or "mlm-s1"): log.jsonl} → one DataFrame with `run`, `objective`, `seed`."""
    frames = []
    for name, path in paths.items():
        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        # validation records ({"split": "validation", "step", "mlm_loss", "jepa_loss"}) → val_* columns
        rows = [{("step" if k == "step" else f"val_{k}"): v for k, v in r.items() if k != "split"}
                if r.get("split") == "validation" else r for r in rows]
        df = pd.DataFrame(rows)
        df["run"] = name
        df["objective"] = df.get("objective", name.split("-s")[0])
        if "seed" not in df:
            df["seed"] = int(name.split("-s")[1]) if "-s" in name else 0
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# (column, panel title, y label, log-scale)
TRAINING_PANELS = [
    ("mlm_loss", "MLM loss (masked tokens)", "cross-entropy (nats/token)", False),
    ("jepa_loss", "JEPA latent-prediction loss", "1 − cosine (target tokens)", False),
    ("lambda", "loss balance λ (hybrid)", "λ = weight of JEPA loss", False),
    ("ema_momentum", "EMA momentum of the target encoder", "momentum", False),
    ("target_std", "collapse signal: target spread", "mean per-dim std of targets", True),
    ("batch_effective_rank", "collapse signal: batch effective rank", "effective rank (dimensions)", False),
]


UNIGRAM_LABEL = "unigram entropy {:.2f} (token frequencies only)"


def training_curves(logs: pd.DataFrame, unigram_entropy: float | None = None) -> Figure:
    """Both losses (train lines, validation dots), λ, EMA momentum and two collapse signals vs step.

    unigram_entropy: the validation tokens' unigram entropy (nats; the `learning` section of
    train_summary.json), drawn as a dashed reference line on the MLM-loss panel: the loss of a
    model that ignores context, so an MLM curve flat at the line has learned only token frequencies."""
    _require(logs, ["objective", "step"], "training_curves")
    if "seed" not in logs:
        logs = logs.assign(seed=0)
    fig, axes = _figure(len(TRAINING_PANELS), ncols=3)
    colours = _palette(sorted(logs["objective"].unique()))
    for ax, (col, title, ylabel, log) in zip(axes, TRAINING_PANELS):
        ax.set_title(title)
        ax.set_xlabel("step (optimizer updates)")
        ax.set_ylabel(ylabel)
        train = logs.dropna(subset=[col]) if col in logs else logs.iloc[:0]
        if train.empty:
            _empty(ax, f"'{col}' not logged")
            continue
        sns.lineplot(train, x="step", y=col, hue="objective", palette=colours, units="seed", estimator=None,
                     ax=ax, linewidth=1.0, legend=ax is axes[0])
        val = f"val_{col}"
        if val in logs:
            v = logs.dropna(subset=[val])
            for obj, g in v.groupby("objective"):
                ax.plot(g["step"], g[val], "o", ms=4, color=colours[obj], label=f"{obj} (validation)")
        if col == "mlm_loss" and unigram_entropy is not None:
            ax.axhline(unigram_entropy, color="0.3", linestyle="--", linewidth=1.0,
                       label=UNIGRAM_LABEL.format(unigram_entropy))
        if log and (train[col] > 0).all():
            ax.set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle("Pre-training: losses, loss balance and collapse signals")
    return fig


# ---------------------------------------------------------------- geometry

def eigen_spectra(spectra: pd.DataFrame, task: str | None = None) -> Figure:
    """Covariance eigenvalues (normalised to sum 1, log scale) vs index, one panel per pooling."""
    _require(spectra, ["objective", "pooling", "index", "eigenvalue"], "eigen_spectra")
    df = spectra if task is None or "task" not in spectra else spectra[spectra["task"] == task]
    df = df.copy()
    keys = [k for k in ("objective", "task", "pooling", "seed") if k in df]
    df["share"] = df["eigenvalue"] / df.groupby(keys)["eigenvalue"].transform("sum")
    df = df[df["share"] > 0]
    poolings = _ordered(df["pooling"])
    fig, axes = _figure(max(len(poolings), 1), ncols=3, panel=(3.8, 3.2))
    colours = _palette(sorted(df["objective"].unique()))
    for ax, pooling in zip(axes, poolings):
        sns.lineplot(df[df["pooling"] == pooling], x="index", y="share", hue="objective", palette=colours,
                     ax=ax, legend=ax is axes[0], errorbar=None)
        ax.set_yscale("log")
        ax.set_title(f"{pooling} pooling")
        ax.set_xlabel("eigenvalue index (rank order)")
        ax.set_ylabel("eigenvalue / total variance (log)")
    if not poolings:
        _empty(axes[0], "no spectra")
    fig.suptitle(f"Covariance eigen-spectra{'' if task is None else f' ({task} dev)'}: flatter = richer geometry")
    return fig


def _wide(metrics: pd.DataFrame, metric_names: Sequence[str]) -> pd.DataFrame:
    """One row per (model, task, pooling), one column per metric (seeds averaged)."""
    m = metrics[metrics["metric"].isin(metric_names)]
    wide = m.pivot_table(index=["model", "task", "pooling"], columns="metric", values="value", aggfunc="mean")
    return wide.reindex(columns=list(metric_names)).reset_index()  # a metric nobody computed: NaN column


def uniformity_alignment(metrics: pd.DataFrame, uniformity: str = "uniformity",
                         alignment: str = "alignment") -> Figure:
    """Wang & Isola plane, one panel per task: lower-left = aligned and uniform."""
    _require(metrics, ["model", "task", "pooling", "metric", "value"], "uniformity_alignment")
    wide = _wide(_trained(metrics), [uniformity, alignment]).dropna(subset=[uniformity, alignment])
    tasks = _ordered(wide["task"]) or ["(none)"]
    fig, axes = _figure(len(tasks), ncols=3, panel=(3.8, 3.4))
    colours = _palette(sorted(wide["model"].unique()))
    for ax, task in zip(axes, tasks):
        sub = wide[wide["task"] == task]
        if sub.empty:
            _empty(ax, "no task has both uniformity and alignment")
        else:
            sns.scatterplot(sub, x=alignment, y=uniformity, hue="model", style="pooling", palette=colours,
                            s=60, ax=ax, legend=ax is axes[0])
        ax.set_title(task)
        ax.set_xlabel("alignment E‖x−y‖² (positive pairs)")
        ax.set_ylabel("uniformity log E exp(−2‖x−y‖²)")
    if axes[0].get_legend():
        sns.move_legend(axes[0], "best", fontsize=7)
    fig.suptitle("Uniformity vs alignment (Wang & Isola): lower-left is better")
    return fig


def _trained(metrics: pd.DataFrame) -> pd.DataFrame:
    """Rows of the pre-trained models (and random_init), without the majority baseline."""
    return metrics[metrics["model"] != "majority"]


def _bars_with_ci(ax, df: pd.DataFrame, x: str, hue: str, x_order, hue_order, colours) -> None:
    """Grouped bars with asymmetric CI whiskers from ci_low/ci_high.

    Hand-written because seaborn.barplot computes its own intervals from raw observations,
    whereas ours come from the bootstrap over dev examples."""
    width = 0.8 / max(len(hue_order), 1)
    for j, h in enumerate(hue_order):
        g = df[df[hue] == h].set_index(x).reindex(x_order)
        pos = np.arange(len(x_order)) - 0.4 + width * (j + 0.5)
        ax.bar(pos, g["value"], width, color=colours[h], label=h)
        lo, hi = g["value"] - g["ci_low"], g["ci_high"] - g["value"]
        ok = lo.notna() & hi.notna()
        ax.errorbar(pos[ok.to_numpy()], g["value"][ok], yerr=[lo[ok].clip(lower=0), hi[ok].clip(lower=0)],
                    fmt="none", ecolor="black", elinewidth=1, capsize=2)
    ax.set_xticks(np.arange(len(x_order)), x_order)


def _seed_mean(df: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Average value and CI bounds over seeds (several seeds: the CI shown is the mean of the CIs)."""
    cols = [c for c in ("value", "ci_low", "ci_high", "chance") if c in df]
    return df.groupby(list(keys), dropna=False, sort=False)[cols].mean().reset_index()


def metric_bars(metrics: pd.DataFrame, metric: str = "effective_rank", tasks: Sequence[str] | None = None) -> Figure:
    """One panel per task: metric per pooling, a bar per model, whiskers = 95% bootstrap CI."""
    _require(metrics, ["model", "task", "pooling", "metric", "value", "ci_low", "ci_high"], "metric_bars")
    df = _seed_mean(_trained(metrics[metrics["metric"] == metric]), ["model", "task", "pooling"])
    tasks = list(tasks or _ordered(df["task"])) or ["(none)"]
    fig, axes = _figure(len(tasks), ncols=3, panel=(4.2, 3.2))
    models = [m for m in MODEL_ORDER if m in set(df["model"])] + sorted(set(df["model"]) - set(MODEL_ORDER))
    colours = _palette(models)
    for ax, task in zip(axes, tasks):
        sub = df[df["task"] == task]
        if sub.empty:
            _empty(ax, f"no {metric} for {task}")
        else:
            _bars_with_ci(ax, sub, "pooling", "model", _ordered(sub["pooling"]), models, colours)
        ax.set_title(task)
        ax.set_xlabel("pooling")
        ax.set_ylabel(GEOMETRY_LABELS.get(metric, metric))
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{metric.replace('_', ' ')} per pooling (bars: value, whiskers: 95% bootstrap CI)")
    return fig


def effective_rank_bars(metrics: pd.DataFrame, tasks: Sequence[str] | None = None) -> Figure:
    return metric_bars(metrics, "effective_rank", tasks)


def probe_bars(metrics: pd.DataFrame, semantic: dict[str, str], lexical: str, pooling: str = "mean") -> Figure:
    """Semantic (task metric) vs lexical probe scores per task, with CIs and chance lines.

    semantic: task -> its headline metric (e.g. {"sst2": "accuracy", "stsb": "spearman"});
    lexical: the lexical probe's metric name. Dashed line = chance (majority class) level."""
    _require(metrics, ["model", "task", "pooling", "metric", "value", "ci_low", "ci_high"], "probe_bars")
    df = metrics[metrics["pooling"].isin([pooling, "none", ""]) | metrics["pooling"].isna()]
    sem = pd.concat([df[(df["task"] == t) & (df["metric"] == m)] for t, m in semantic.items()] or [df.iloc[:0]])
    lex = df[df["metric"] == lexical]
    fig, axes = _figure(2, ncols=2, panel=(5.5, 3.6))
    for ax, part, title, ylabel in ((axes[0], sem, "semantic: task probe", "task metric (acc / F1 / MCC / ρ)"),
                                    (axes[1], lex, "lexical: most-frequent-word probe", "accuracy")):
        trained = _seed_mean(_trained(part), ["model", "task"])
        tasks = _ordered(trained["task"])
        if trained.empty:
            _empty(ax, "no rows")
        else:
            models = [m for m in MODEL_ORDER if m in set(trained["model"])]
            models += sorted(set(trained["model"]) - set(models))
            _bars_with_ci(ax, trained, "task", "model", tasks, models, _palette(models))
            chance = _chance_per_task(part, tasks)
            for k, c in enumerate(chance):
                if np.isfinite(c):
                    ax.hlines(c, k - 0.45, k + 0.45, colors="black", linestyles="--", linewidth=1,
                              label="chance / majority" if k == 0 or not np.isfinite(chance[:k]).any() else None)
            ax.legend(fontsize=8)
        ax.set_title(f"{title} ({pooling} pooling)")
        ax.set_xlabel("task")
        ax.set_ylabel(ylabel)
    fig.suptitle("Semantic vs lexical probes (whiskers: 95% bootstrap CI; dashed: chance)")
    return fig


def _chance_per_task(part: pd.DataFrame, tasks: Sequence[str]) -> np.ndarray:
    """Chance level per task: the `chance` column, else the majority-baseline row's value."""
    out = []
    for t in tasks:
        rows = part[part["task"] == t]
        c = rows["chance"].dropna() if "chance" in rows else pd.Series(dtype=float)
        if c.empty:
            c = rows.loc[rows["model"] == "majority", "value"]
        out.append(float(c.mean()) if len(c) else np.nan)
    return np.array(out)


def difference_heatmaps(differences: pd.DataFrame, metrics: Sequence[str] | None = None, alpha: float = 0.05) -> Figure:
    """hybrid − MLM per task × pooling, one heatmap per metric; * marks p_holm < alpha.

    Each panel has its own symmetric colour scale centred at 0 (red: hybrid higher). A table with
    a `level` column (tables.differences) shows its seed-level rows when there are several seeds,
    else the one seed's rows (example-level p, said in the title)."""
    _require(differences, ["task", "pooling", "metric", "diff", "p_holm"], "difference_heatmaps")
    scope = ""
    if "level" in differences:
        pooled = differences[differences["level"] == POOLED]
        several = len(pooled) and pooled["n_seeds"].max() > 1
        differences = pooled if several else differences[differences["level"] == PER_SEED]
        scope = f", over {int(pooled['n_seeds'].max())} seeds" if several else ", one seed: example-level only"
    metrics = list(metrics or dict.fromkeys(differences["metric"]))
    fig, axes = _figure(max(len(metrics), 1), ncols=3, panel=(4.4, 3.4))
    for ax, metric in zip(axes, metrics):
        sub = differences[differences["metric"] == metric]
        if sub.empty:
            _empty(ax, f"no differences for {metric}")
            ax.set_title(metric)
            continue
        diff = sub.pivot_table(index="task", columns="pooling", values="diff", aggfunc="mean")
        diff = diff.reindex(index=_ordered(diff.index), columns=_ordered(diff.columns))
        p = sub.pivot_table(index="task", columns="pooling", values="p_holm", aggfunc="max").reindex_like(diff)
        labels = diff.map(lambda v: f"{v:.2g}" if np.isfinite(v) else "") + p.map(
            lambda q: "*" if np.isfinite(q) and q < alpha else "")
        vmax = float(np.nanmax(np.abs(diff.to_numpy()))) or 1.0
        with warnings.catch_warnings():  # seaborn 0.13 calls a matplotlib API that is being deprecated
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            sns.heatmap(diff, annot=labels, fmt="", cmap="RdBu_r", center=0, vmin=-vmax, vmax=vmax, ax=ax,
                        cbar_kws={"label": "hybrid − MLM"}, annot_kws={"fontsize": 7})
        ax.set_title(metric.replace("_", " "))
        ax.set_xlabel("pooling")
        ax.set_ylabel("task")
        ax.tick_params(axis="y", rotation=0)
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(f"hybrid − MLM differences (* Holm-corrected p < {alpha}{scope})")
    return fig


def projection(points: pd.DataFrame, title: str = "", ncols: int | None = None) -> Figure:
    """2-D projections side by side: `model, x, y, label` → one panel per model (ncols a row), coloured by
    label; one colour and no legend when every point has the same label (unlabelled data, e.g. `wiki`)."""
    _require(points, ["model", "x", "y", "label"], "projection")
    models = list(dict.fromkeys(points["model"])) or ["(none)"]
    fig, axes = _figure(len(models), ncols=ncols or len(models), panel=(4.2, 3.8))
    labelled = points["label"].nunique() > 1
    numeric = pd.api.types.is_float_dtype(points["label"]) and points["label"].nunique() > 10
    for ax, model in zip(axes, models):
        sub = points[points["model"] == model]
        sns.scatterplot(sub, x="x", y="y", hue="label" if labelled else None, s=12, ax=ax, linewidth=0,
                        palette=("viridis" if numeric else "tab10") if labelled else None,
                        legend=labelled and ax is axes[-1])
        ax.set_title(model)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
    fig.suptitle((title or "Dev embeddings, PCA to 2-D") + ("" if labelled else " — unlabelled"))
    return fig
