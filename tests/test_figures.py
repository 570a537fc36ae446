"""Each figure function returns a Figure with titled, labelled axes from a small synthetic table."""
import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from jepa_core.report import figures

TASKS = ["sst2", "stsb", "wiki"]
POOLINGS = ["mean", "max"]


def _visible_axes(fig: Figure):
    # colour bars are axes too; the panels are the ones with a title
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]


def _assert_labelled(fig: Figure, n_panels: int):
    assert isinstance(fig, Figure)
    panels = _visible_axes(fig)
    assert len(panels) == n_panels
    for ax in panels:
        assert ax.get_xlabel() and ax.get_ylabel(), ax.get_title()
    assert fig.get_suptitle() or n_panels == 1  # one panel: its own title says it all


@pytest.fixture(scope="module")
def metrics() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for model in ["hybrid", "mlm", "random_init", "majority"]:
        for task in TASKS:
            for pooling in POOLINGS:
                for metric in ["uniformity", "alignment", "effective_rank", "accuracy", "lexical_mfw"]:
                    v = rng.uniform(0.2, 0.8)
                    rows.append(dict(model=model, objective=model if model in ("hybrid", "mlm") else "",
                                     seed=0, task=task, pooling=pooling, metric=metric, value=v,
                                     ci_low=v - 0.05, ci_high=v + 0.05, n=100,
                                     chance=0.5 if metric in ("accuracy", "lexical_mfw") else np.nan, note=""))
    return pd.DataFrame(rows)


def test_training_curves_reads_jsonl_and_plots_all_panels(tmp_path):
    for obj in ("hybrid", "mlm"):
        lines = []
        for step in range(1, 11):
            rec = {"step": step, "loss": 3.0, "mlm_loss": 5 - 0.1 * step, "lr": 1e-3, "grad_norm": 1.0,
                   "batch_effective_rank": 8.0}
            if obj == "hybrid":
                rec.update(jepa_loss=1 - 0.05 * step, **{"lambda": 0.5}, ema_momentum=0.996, target_std=0.3)
            lines.append(json.dumps(rec))
            if step % 5 == 0:
                lines.append(json.dumps({"split": "validation", "step": step, "mlm_loss": 4.8, "jepa_loss": None}))
        (tmp_path / f"{obj}.jsonl").write_text("\n".join(lines))
    logs = figures.read_logs({o: tmp_path / f"{o}.jsonl" for o in ("hybrid", "mlm")})
    assert set(logs["objective"]) == {"hybrid", "mlm"}
    assert logs["val_mlm_loss"].notna().sum() == 4  # validation records became val_* columns
    assert logs["mlm_loss"].notna().sum() == 20  # ... and are not mixed into the training curve
    fig = figures.training_curves(logs)
    _assert_labelled(fig, len(figures.TRAINING_PANELS))
    mlm_panel = _visible_axes(fig)[0]
    assert len(mlm_panel.get_lines()) >= 2  # one line per objective (+ validation markers)
    assert not [ln for ln in mlm_panel.get_lines() if ln.get_label().startswith("unigram")]  # none unless given

    with_h = figures.training_curves(logs, unigram_entropy=6.88)
    panels = _visible_axes(with_h)
    assert panels[0].get_title().startswith("MLM loss")
    (line,) = [ln for ln in panels[0].get_lines() if ln.get_label().startswith("unigram entropy 6.88")]
    assert list(line.get_ydata()) == [6.88, 6.88] and line.get_linestyle() == "--"  # horizontal, at H
    assert any(t.get_text().startswith("unigram entropy 6.88") for t in panels[0].get_legend().get_texts())
    assert all(not ln.get_label().startswith("unigram") for ax in panels[1:] for ln in ax.get_lines())


def test_document_lengths():
    docs = pd.DataFrame({"split": ["train"] * 5 + ["validation"] * 2, "words": [10, 100, 1000, 50, 0, 20, 30]})
    _assert_labelled(figures.document_lengths(docs), 1)


def test_eigen_spectra_one_panel_per_pooling():
    spectra = pd.DataFrame([dict(objective=o, task="sst2", pooling=p, index=i, eigenvalue=np.exp(-i * r))
                            for o, r in (("hybrid", 0.1), ("mlm", 0.5)) for p in POOLINGS for i in range(32)])
    fig = figures.eigen_spectra(spectra, "sst2")
    _assert_labelled(fig, 2)
    assert all(ax.get_yscale() == "log" for ax in _visible_axes(fig))


def test_uniformity_alignment_one_panel_per_task(metrics):
    _assert_labelled(figures.uniformity_alignment(metrics), len(TASKS))


def test_effective_rank_bars_have_ci_whiskers(metrics):
    fig = figures.effective_rank_bars(metrics)
    _assert_labelled(fig, len(TASKS))
    ax = _visible_axes(fig)[0]
    # hybrid, mlm, random_init bars for each pooling; the majority baseline is not a bar
    assert len(ax.patches) == 3 * len(POOLINGS)
    assert ax.collections  # errorbar line collections


def test_probe_bars_draw_chance_lines(metrics):
    fig = figures.probe_bars(metrics, {"sst2": "accuracy", "stsb": "accuracy"}, "lexical_mfw")
    _assert_labelled(fig, 2)
    semantic, lexical = _visible_axes(fig)
    assert any(abs(seg[0][1] - 0.5) < 1e-9 for c in semantic.collections
               for seg in getattr(c, "get_segments", lambda: [])())


def test_difference_heatmaps_mark_significance():
    diffs = pd.DataFrame([dict(task=t, pooling=p, metric=m, diff=0.1 * (i + 1), ci_low=0, ci_high=1, p=0.01,
                               p_holm=0.01 if (t, p) == ("sst2", "mean") else 0.5)
                          for i, t in enumerate(TASKS) for p in POOLINGS for m in ("uniformity", "effective_rank")])
    fig = figures.difference_heatmaps(diffs)
    _assert_labelled(fig, 2)
    texts = [t.get_text() for t in _visible_axes(fig)[0].texts]
    assert sum(t.endswith("*") for t in texts) == 1  # only sst2 × mean is significant


def test_projection_side_by_side():
    rng = np.random.default_rng(0)
    pts = pd.DataFrame({"model": np.repeat(["hybrid", "mlm"], 20), "x": rng.normal(size=40), "y": rng.normal(size=40),
                        "label": rng.integers(0, 2, 40)})
    fig = figures.projection(pts)
    _assert_labelled(fig, 2)
    assert _visible_axes(fig)[-1].get_legend() is not None  # labels 0/1: a legend on the last panel


def test_projection_of_unlabelled_points_has_no_legend():
    rng = np.random.default_rng(0)
    pts = pd.DataFrame({"model": np.repeat(["hybrid", "mlm"], 20), "x": rng.normal(size=40), "y": rng.normal(size=40),
                        "label": 0})
    fig = figures.projection(pts, "wiki", ncols=1)
    assert all(ax.get_legend() is None for ax in _visible_axes(fig)) and "unlabelled" in fig.get_suptitle()
    assert len({tuple(c) for ax in _visible_axes(fig) for c in ax.collections[0].get_facecolors()}) == 1
    assert _visible_axes(fig)[1].get_position().y0 < _visible_axes(fig)[0].get_position().y0  # ncols=1: stacked


def test_missing_columns_are_named():
    with pytest.raises(KeyError, match="eigenvalue"):
        figures.eigen_spectra(pd.DataFrame({"objective": [], "pooling": [], "index": []}))


def test_save_writes_png(tmp_path, metrics):
    path = figures.save(figures.effective_rank_bars(metrics), tmp_path, "er")
    assert path == tmp_path / "figures" / "er.png" and path.read_bytes()[:4] == b"\x89PNG"


def test_difference_heatmaps_show_the_seed_level_rows_of_an_evaluate_table():
    rows = []
    for t in TASKS:
        for p in POOLINGS:
            key = dict(task=t, pooling=p, metric="uniformity", p=0.01)
            rows += [dict(key, level="seed", seed=s, n_seeds=1, diff=9.0, p_holm=0.001) for s in (0, 1, 2)]
            rows.append(dict(key, level="pooled", seed=None, n_seeds=3, diff=0.5, p_holm=0.01 if t == "sst2" else 0.5))
    fig = figures.difference_heatmaps(pd.DataFrame(rows))
    texts = [t.get_text() for t in _visible_axes(fig)[0].texts]
    assert all(t.startswith("0.5") for t in texts) and sum(t.endswith("*") for t in texts) == len(POOLINGS)
    assert "over 3 seeds" in fig.get_suptitle()
