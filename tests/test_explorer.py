"""The explorer without a browser: seed selection, unlabelled tasks, two-run comparison, widget wiring
(tests/test_browser.py drives the same widgets in JupyterLab)."""
import numpy as np
import pandas as pd
import pytest

from jepa_core.report import explorer

# hybrid's uniformity on sst2 × mean per seed: mean -2.5, sd (sample) 0.7071
HYBRID_UNIFORMITY = {0: -2.0, 1: -3.0}


def _metrics(offset: float, trained_seeds: list[int]) -> pd.DataFrame:
    rows = []
    for model, seed_list in (("hybrid", trained_seeds), ("mlm", trained_seeds), ("random_init", trained_seeds),
                             ("majority", [None])):
        for seed in seed_list:
            for task in ("sst2", "wiki"):
                for metric in ("uniformity", "effective_rank"):
                    v = HYBRID_UNIFORMITY[seed] if (model, task, metric) == ("hybrid", "sst2", "uniformity") \
                        else 1.0 + (seed or 0)
                    rows.append(dict(model=model, objective=model, seed=seed, task=task,
                                     pooling="none" if model == "majority" else "mean", metric=metric,
                                     value=v + offset, ci_low=v + offset - 0.1, ci_high=v + offset + 0.1))
    return pd.DataFrame(rows)


def _write_run(outputs, name: str, offset: float, trained_seeds=(0, 1)):
    run_dir = outputs / name
    (run_dir / "results").mkdir(parents=True)
    _metrics(offset, list(trained_seeds)).to_csv(run_dir / "results" / "metrics.csv", index=False)
    rng = np.random.default_rng(1)
    for task, labels in (("sst2", rng.integers(0, 2, 30)), ("wiki", np.zeros(30, dtype=int))):
        folder = run_dir / "results" / "embeddings" / task
        for key in ("hybrid-s0", "hybrid-s1", "mlm-s0", "mlm-s1", "random_init-s0", "random_init-s1"):
            (folder / key).mkdir(parents=True)
            np.save(folder / key / "mean.npy", rng.normal(size=(30, 8)).astype(np.float32))
        pd.DataFrame({"example": range(30), "label": labels}).to_parquet(folder / "examples.parquet")
    return run_dir


@pytest.fixture()
def outputs(tmp_path):
    _write_run(tmp_path, "r1", 0.0)
    _write_run(tmp_path, "r2", 10.0)
    return tmp_path


def _panel_titles(fig):
    return [ax.get_title() for ax in fig.axes if ax.get_visible() and ax.get_title()]


def test_seeds_and_encoder_keys(outputs):
    m = explorer.load_metrics(outputs / "r1")
    assert explorer.Explorer(outputs).options("r1")["pooling"] == ["mean"]  # not majority's "none"
    assert explorer.seeds(m) == [0, 1]
    # one random-init encoder per pre-training seed, chosen with its seed like the trained ones
    assert explorer.encoder_keys(m) == ["hybrid-s0", "hybrid-s1", "mlm-s0", "mlm-s1", "random_init-s0",
                                        "random_init-s1"]
    assert explorer.encoder_keys(m, 1) == ["hybrid-s1", "mlm-s1", "random_init-s1"]
    assert set(m.loc[m["model"] == "random_init", "key"]) == {"random_init-s0", "random_init-s1"}


def test_table_for_one_seed_and_for_all_seeds_with_their_spread(outputs):
    m = explorer.load_metrics(outputs / "r1")
    one = explorer.selection_table(m, "sst2", "mean", "uniformity", seed=1)
    assert list(one.columns) == ["hybrid-s1", "majority", "mlm-s1", "random_init-s1"]  # majority: any pooling
    assert one.loc["uniformity", "hybrid-s1"] == "-3.000 [-3.100, -2.900]"
    every = explorer.selection_table(m, "sst2", "mean", "uniformity")
    keys = {"hybrid-s0", "hybrid-s1", "mlm-s0", "mlm-s1", "random_init-s0", "random_init-s1"}
    assert keys <= set(every.columns)
    assert every.loc["uniformity", "hybrid mean ± sd"] == "-2.500 ± 0.707"
    assert every.loc["uniformity", "mlm mean ± sd"] == "1.500 ± 0.707"


def test_figure_shows_the_chosen_seeds_one_row_per_seed(outputs):
    ex = explorer.Explorer(outputs, run="r1")
    fig, _ = ex.render("r1", "sst2", "mean", None, seed=0)
    assert _panel_titles(fig) == ["hybrid-s0", "mlm-s0", "random_init-s0"]
    fig, _ = ex.render("r1", "sst2", "mean", None)
    assert _panel_titles(fig) == ["hybrid-s0", "hybrid-s1", "mlm-s0", "mlm-s1", "random_init-s0", "random_init-s1"]
    assert fig.axes[0].get_position().y0 > fig.axes[3].get_position().y0  # three models a row: 2 × 3 grid


def test_unlabelled_task_has_no_label_legend(outputs):
    ex = explorer.Explorer(outputs, run="r1")
    wiki, _ = ex.render("r1", "wiki", "mean", None)
    assert all(ax.get_legend() is None for ax in wiki.axes)
    sst2, _ = ex.render("r1", "sst2", "mean", None)
    legend = [ax.get_legend() for ax in sst2.axes if ax.get_legend() is not None]
    assert [t.get_text() for t in legend[0].get_texts()] == ["0", "1"]


def test_second_run_table_next_to_the_first(outputs):
    ex = explorer.Explorer(outputs, run="r1")
    assert ex.options("r1")["compare"] == ["(none)", "r2"]
    _, table = ex.render("r1", "sst2", "mean", "uniformity", seed=0, compare="r2")
    assert list(table.columns.get_level_values(0).unique()) == ["r1", "r2"]
    assert table.loc["uniformity", ("r1", "hybrid-s0")] == "-2.000 [-2.100, -1.900]"
    assert table.loc["uniformity", ("r2", "hybrid-s0")] == "8.000 [7.900, 8.100]"
    _write_run(outputs, "one-seed", 20.0, trained_seeds=[0])
    _, table = explorer.Explorer(outputs, run="r1").render("r1", "sst2", "mean", "uniformity", seed=1,
                                                           compare="one-seed")
    assert table.loc["uniformity", ("one-seed (no seed 1: all seeds)", "hybrid-s0")] == "18.000 [17.900, 18.100]"
    _, alone = ex.render("r1", "sst2", "mean", "uniformity", seed=0, compare="(none)")
    assert list(alone.columns) == ["hybrid-s0", "majority", "mlm-s0", "random_init-s0"]


def _record_renders(monkeypatch) -> list[tuple]:
    """Widgets built without a frontend (no display, not headless); every render's arguments recorded."""
    monkeypatch.delenv("JEPA_HEADLESS", raising=False)
    monkeypatch.setattr("IPython.display.display", lambda obj: None)
    calls = []
    original = explorer.Explorer.render
    monkeypatch.setattr(explorer.Explorer, "render",
                        lambda self, *args: calls.append(args) or original(self, *args))
    return calls


def test_every_dropdown_reaches_render(outputs, monkeypatch):
    """Widgets built without a frontend: each dropdown change re-renders with the new value."""
    calls = _record_renders(monkeypatch)
    ex = explorer.Explorer(outputs, run="r1")
    ex.show()
    dd = ex.dropdowns
    assert calls[-1] == ("r1", "sst2", "mean", "uniformity", "all", "(none)", "main study", "last")
    assert [label for label, _ in dd["seed"].options] == ["all seeds", "s0", "s1"]
    for name, value, position in (("task", "wiki", 1), ("pooling", "mean", 2), ("metric", "(all)", 3),
                                  ("seed", 1, 4), ("compare", "r2", 5), ("run", "r2", 0)):
        dd[name].value = value
        assert calls[-1][position] == (None if value == "(all)" else value), name
    assert dd["compare"].options == ("(none)", "r1")  # the run itself is not offered for comparison
    dd["compare"].value, dd["seed"].value = "r1", 1
    calls.clear()
    dd["run"].value = "r1"  # new options for every dropdown: one redraw; seed 1 kept (r1 has it), compare reset
    assert calls == [("r1", "wiki", "mean", None, 1, "(none)", "main study", "last")]


def test_headless_renders_static_view(outputs, monkeypatch, capsys):
    shown = []
    monkeypatch.setenv("JEPA_HEADLESS", "1")
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    assert explorer.Explorer(outputs, run="r1").show() is None
    assert "static view of run=r1 task=sst2 pooling=mean" in capsys.readouterr().out
    assert type(shown[0]).__name__ == "Image" and isinstance(shown[1], pd.DataFrame)


def test_unknown_run_is_named(outputs):
    with pytest.raises(FileNotFoundError, match="nope"):
        explorer.Explorer(outputs, run="nope")
    assert explorer.Explorer(outputs / "empty").show() is None  # no runs: a message, not a crash


# ---------------------------------------------------------------- notebook 05's outputs: variants and layers

VARIANTS = ("hybrid-learned", "mlm", "hybrid-fixed0.5")  # 05's names: the main hybrid, MLM, one variant
REFERENCE = "minilm"  # a reference encoder: no pre-training seed


def _write_05(run_dir, cached=("hybrid-learned-s0", "hybrid-fixed0.5-s0", "mlm-s0", REFERENCE)):
    """<run>/ablations/results/ (metrics.csv and the embeddings of `cached`, sst2 only) and
    results/layerwise.csv, as ablation_study writes them. Values: ablation metric = 100 + seed;
    layer-wise value = 10·(model's index) + layer + seed/10."""
    rows = [dict(model="majority", objective="majority", seed=None, task="sst2", pooling="none",
                 metric="accuracy", value=0.5, ci_low=0.4, ci_high=0.6)]
    for model, seed in [(v, s) for v in VARIANTS for s in (0, 1)] + [(REFERENCE, None)]:
        for pooling in ("mean", "max"):
            for metric in ("uniformity", "accuracy"):
                rows.append(dict(model=model, objective="reference" if seed is None else model, seed=seed,
                                 task="sst2", pooling=pooling, metric=metric, value=100 + (seed or 0),
                                 ci_low=float("nan"), ci_high=float("nan")))
    results = run_dir / "ablations" / "results"
    results.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(results / "metrics.csv", index=False)
    folder = results / "embeddings" / "sst2"
    rng = np.random.default_rng(2)
    for key in cached:
        (folder / key).mkdir(parents=True)
        np.save(folder / key / "mean.npy", rng.normal(size=(30, 8)).astype(np.float32))
    pd.DataFrame({"example": range(30), "label": rng.integers(0, 2, 30)}).to_parquet(folder / "examples.parquet")
    layer_rows = []
    models = [("hybrid", "hybrid"), ("mlm", "mlm"), ("hybrid-fixed0.5", "hybrid"), (REFERENCE, "reference")]
    for i, (model, objective) in enumerate(models):
        for seed in ([None] if objective == "reference" else [0, 1]):
            for task in ("sst2", "wiki"):
                for layer in range(3):
                    for metric in ("uniformity", "anisotropy", "effective_rank"):
                        layer_rows.append(dict(model=model, objective=objective, seed=seed, task=task, layer=layer,
                                               metric=metric, value=10 * i + layer + (seed or 0) / 10, n=30))
    pd.DataFrame(layer_rows).astype({"seed": "Int64"}).to_csv(run_dir / "results" / "layerwise.csv", index=False)


@pytest.fixture()
def outputs05(tmp_path):
    """r1: a run without 05's outputs; r05 (newest): the same with them."""
    _write_run(tmp_path, "r1", 0.0)
    _write_05(_write_run(tmp_path, "r05", 0.0))
    return tmp_path


def test_a_run_without_05_outputs_offers_what_it_did(outputs05):
    ex = explorer.Explorer(outputs05, run="r1")
    assert ex.options("r1")["models"] == ["main study"] and ex.options("r1")["layer"] == ["last"]
    assert ex.options("r1", "ablations") == ex.options("r1")  # nothing to switch to
    assert ex.options("r05")["models"] == ["main study", "ablations"]
    assert ex.options("r05")["layer"] == ["last", "layer-wise"]
    assert {k: v for k, v in ex.options("r05").items() if k not in ("models", "layer", "compare")} == \
        {k: v for k, v in ex.options("r1").items() if k not in ("models", "layer", "compare")}


def test_ablation_variants_in_table_and_projection(outputs05):
    ex = explorer.Explorer(outputs05, run="r05")
    assert ex.options("r05", "ablations")["pooling"] == ["mean", "max"]  # 05 evaluates the claims' poolings
    fig, table = ex.render("r05", "sst2", "mean", "uniformity", models="ablations")
    assert {"hybrid-fixed0.5-s0", "hybrid-fixed0.5-s1", "mlm-s1", REFERENCE} <= set(table.columns)
    assert table.loc["uniformity", "hybrid-fixed0.5-s1"] == "101.000"
    # projected: the cached variants only (hybrid-fixed0.5-s1 has none); the reference with any seed
    assert _panel_titles(fig) == ["hybrid-fixed0.5-s0", "hybrid-learned-s0", REFERENCE, "mlm-s0"]
    assert "(ablations)" in fig.texts[0].get_text()
    _, seed1 = ex.render("r05", "sst2", "mean", "uniformity", seed=1, models="ablations")
    assert list(seed1.columns) == ["hybrid-fixed0.5-s1", "hybrid-learned-s1", REFERENCE, "mlm-s1"]
    uncached, _ = ex.render("r05", "sst2", "max", "uniformity", models="ablations")
    assert uncached == explorer.NO_EMBEDDINGS  # said plainly, not an empty figure
    main_fig, main = ex.render("r05", "sst2", "mean", "uniformity")
    assert "hybrid-fixed0.5-s0" not in main.columns and _panel_titles(main_fig)[0] == "hybrid-s0"


def _legend(fig):
    return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_layer_wise_view_draws_the_metric_across_layers(outputs05):
    ex = explorer.Explorer(outputs05, run="r05")
    fig, table = ex.render("r05", "sst2", "mean", "anisotropy", layer="layer-wise")
    assert [ax.get_title() for ax in fig.axes] == ["sst2"]  # the chosen task's panel
    assert _legend(fig) == ["hybrid", "mlm"]  # main study: the main encoders
    assert list(fig.axes[0].lines[1].get_ydata()) == pytest.approx([10.05, 11.05, 12.05])  # mlm, mean of seeds
    assert list(table.index) == [("anisotropy", 0), ("anisotropy", 1), ("anisotropy", 2)]
    assert table.loc[("anisotropy", 2), "mlm-s1"] == "12.100"
    fig, table = ex.render("r05", "sst2", "mean", "anisotropy", seed=0, models="ablations", layer="layer-wise")
    assert _legend(fig) == ["hybrid", "mlm", "hybrid-fixed0.5", f"{REFERENCE} (reference)"]
    assert list(table.columns) == ["hybrid-fixed0.5-s0", "hybrid-s0", REFERENCE, "mlm-s0"]
    every, table = ex.render("r05", "wiki", "mean", None, layer="layer-wise")
    assert every.startswith("choose one metric") and len(table) == 3 * 3  # three metrics × three layers
    missing, _ = ex.render("r05", "sst2", "mean", "accuracy", layer="layer-wise")
    assert missing.startswith("no layer-wise accuracy for sst2")
    with pytest.raises(FileNotFoundError, match="layer-wise"):
        ex.render("r1", "sst2", "mean", "uniformity", layer="layer-wise")


def test_comparison_with_a_run_without_05_outputs_says_so(outputs05):
    ex = explorer.Explorer(outputs05, run="r05")
    _, table = ex.render("r05", "sst2", "mean", "uniformity", compare="r1", models="ablations")
    assert list(table.columns.get_level_values(0).unique()) == ["r05", "r1 (no ablation results)"]
    _, table = ex.render("r05", "sst2", "mean", "uniformity", compare="r1", layer="layer-wise")
    assert "r1 (no layer-wise results)" in table.columns.get_level_values(0)


def test_models_and_layer_dropdowns_only_where_05_ran(outputs05, monkeypatch):
    calls = _record_renders(monkeypatch)
    without = explorer.Explorer(outputs05, run="r1")
    without.show()
    assert {without.dropdowns[n].layout.display for n in ("models", "layer")} == {"none"}
    ex = explorer.Explorer(outputs05, run="r05")
    ex.show()
    dd = ex.dropdowns
    assert {dd[n].layout.display for n in ("models", "layer")} == {None}
    calls.clear()
    dd["models"].value = "ablations"  # its own poolings and metrics; task, seed, metric kept: one redraw
    assert dd["pooling"].options == ("mean", "max")
    assert calls == [("r05", "sst2", "mean", "uniformity", "all", "(none)", "ablations", "last")]
    dd["layer"].value = "layer-wise"
    assert calls[-1][-2:] == ("ablations", "layer-wise")
    calls.clear()
    dd["run"].value = "r1"  # no 05 outputs: back to the main study's last layer, both dropdowns hidden
    assert calls == [("r1", "sst2", "mean", "uniformity", "all", "(none)", "main study", "last")]
    assert {dd[n].layout.display for n in ("models", "layer")} == {"none"}


def test_ablations_folder_is_the_one_notebook_05_writes():
    from jepa_core.study import ablations as ablation_study

    assert explorer.study_dir("run", explorer.ABLATIONS).name == ablation_study.STUDY_DIR


# ---------------------------------------------------------------- the training view (trajectories, issue 25)

def _write_trajectories(study_dir, models=("hybrid", "mlm")):
    """results/trajectories.csv as analysis/trajectories.py writes it: value = 10·(model's index) + step/10 + seed."""
    rows = []
    for i, model in enumerate(models):
        for seed in (0, 1):
            for point, step in enumerate((0, 10, 20)):
                for pooling in ("mean", "max"):
                    for metric in ("uniformity", "effective_rank"):
                        value = 10 * i + step / 10 + seed
                        rows.append(dict(model=model, seed=seed, step=step, tokens=step * 100, flops=step * 1e6,
                                         task="wiki", pooling=pooling, metric=metric, value=value, ci_low=value - 1,
                                         ci_high=value + 1, objective=model.split("-")[0], point=point, points=3, n=30))
            rows.append(dict(model=model, seed=seed, step=20, tokens=2000, flops=2e7, task="sst2", pooling="mean",
                             metric="accuracy", value=0.6, ci_low=0.5, ci_high=0.7, objective=model.split("-")[0],
                             point=2, points=3, n=200))
    (study_dir / "results").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(study_dir / "results" / "trajectories.csv", index=False)


def test_training_view_draws_a_metric_against_steps_per_model_and_seed(outputs05):
    _write_trajectories(outputs05 / "r05")
    _write_trajectories(outputs05 / "r05" / "ablations", models=("hybrid-learned", "mlm", "hybrid-fixed0.5"))
    ex = explorer.Explorer(outputs05, run="r05")
    assert ex.options("r05")["layer"] == ["last", "layer-wise", "training"]
    assert ex.options("r1")["layer"] == ["last"]  # no trajectories: no training view
    fig, table = ex.render("r05", "wiki", "max", "uniformity", layer="training")
    assert _legend(fig) == ["hybrid-s0", "hybrid-s1", "mlm-s0", "mlm-s1"]
    assert list(fig.axes[0].lines[3].get_ydata()) == [11.0, 12.0, 13.0]  # mlm-s1 at steps 0, 10, 20
    assert list(table.index) == [("uniformity", 0), ("uniformity", 10), ("uniformity", 20)]
    assert table.loc[("uniformity", 20), "mlm-s1"] == "13.000 [12.000, 14.000]"
    _, one = ex.render("r05", "wiki", "max", "uniformity", seed=1, layer="training")
    assert list(one.columns) == ["hybrid-s1", "mlm-s1"]
    fig, table = ex.render("r05", "wiki", "mean", "effective_rank", models="ablations", layer="training")
    assert _legend(fig)[:2] == ["hybrid-learned-s0", "hybrid-learned-s1"] and "hybrid-fixed0.5-s1" in table.columns
    every, table = ex.render("r05", "wiki", "mean", None, layer="training")
    assert every.startswith("choose one metric") and len(table) == 2 * 3  # two metrics × three steps
    missing, _ = ex.render("r05", "sst2", "mean", "uniformity", layer="training")
    assert missing.startswith("no trajectory of uniformity for sst2")
    _, compared = ex.render("r05", "wiki", "max", "uniformity", compare="r1", layer="training")
    assert "r1 (no trajectories)" in compared.columns.get_level_values(0)
