"""End to end: the five notebooks executed by papermill (workbook.run) with parameters/smoke.yaml,
offline, on real Wikipedia ($WIKI_DIR) and GLUE ($GLUE_DIR); assertions on the produced files.

One chain run per session (conftest.smoke_chain, a few minutes on 2 cores); the tests here read it.
Skipped with a reason when GLUE_DIR / WIKI_DIR are unset (CI sets both).
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jepa_core.config import TASKS, load_params
from jepa_core.study import steps as workbook_steps
from jepa_core.study import workbook as wb

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "parameters" / "smoke.yaml"
FIGURES = ["document_lengths", "training_curves", "probes_semantic_lexical", "uniformity_alignment",
           "eigen_spectra", "effective_rank", "differences_heatmap", "trajectories", "trajectories_flops",
           "trajectory_differences"]


@pytest.fixture(scope="module")
def chain(smoke_chain):
    return smoke_chain


@pytest.fixture(scope="module")
def params():
    return load_params(SMOKE)


def test_every_step_ran_and_wrote_its_files(chain, params):
    run_dir, results = chain
    assert [r.step for r in results if r.ran] == list(workbook_steps.STEPS)
    assert load_params(run_dir / "params.yaml") == params
    for step in workbook_steps.STEPS:
        assert (run_dir / "notebooks" / f"{step}.ipynb").is_file()
        assert (run_dir / "notebooks" / f"{step}.html").stat().st_size > 10_000
    report = (run_dir / "report.html").read_text()
    assert "Summary of run" in report and "params = open_run" not in report  # code hidden
    for name in FIGURES:
        png = run_dir / "figures" / f"{name}.png"
        assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG", name
    corpus = json.loads((run_dir / "data" / "corpus.json").read_text())
    assert corpus["source"] == "wikiextractor"  # auto -> $WIKI_DIR offline
    assert corpus["splits"]["train"]["documents"] + corpus["splits"]["validation"]["documents"] \
        <= params.data.max_documents


def test_console_shows_training_progress_and_ends_with_the_verdicts(chain, params):
    """`make run` without --verbose: per-model progress lines while pre-training, then the answer."""
    run_dir, _ = chain
    lines = (run_dir.parent / "console.txt").read_text().splitlines()
    for objective in params.objectives:  # each run's last line is always printed
        assert any(line.startswith(f"pretrain {objective}: step {params.train.steps}/{params.train.steps}  loss ")
                   for line in lines), objective
    assert any(line.startswith("evaluate ") for line in lines)
    verdicts = [line.strip() for line in lines if line.startswith("  C")]
    assert [v.split()[0] for v in verdicts] == ["C1", "C2", "C3", "C4", "C5"]
    assert all("inconclusive (one seed: not seed-level evidence) | hybrid − MLM " in v for v in verdicts)
    assert f"summary: {run_dir / 'summary.md'}" in lines and f"report:  {run_dir / 'report.html'}" in lines
    assert any(line.startswith("total ") and "peak memory" in line for line in lines)


def test_models_load_with_transformers(chain, params):
    from transformers import AutoModel, AutoTokenizer

    run_dir, _ = chain
    for objective in params.objectives:
        model = AutoModel.from_pretrained(run_dir / "models" / objective)
        tok = AutoTokenizer.from_pretrained(run_dir / "models" / objective)
        out = model(**tok(["The cat sat on the mat."], return_tensors="pt"))
        assert out.last_hidden_state.shape[-1] == params.model.hidden
        assert np.isfinite(out.last_hidden_state.detach().numpy()).all()


def _log(run_dir: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "logs" / f"{name}.jsonl").read_text().splitlines()]


def test_lambda_logged_at_every_hybrid_step(chain, params):
    run_dir, _ = chain
    steps = [r for r in _log(run_dir, "hybrid") if r.get("split") != "validation"]
    assert [r["step"] for r in steps] == list(range(1, params.train.steps + 1))
    for r in steps:
        assert 0 < r["lambda"] < 1 and math.isfinite(r["mlm_loss"]) and math.isfinite(r["jepa_loss"])
        assert 0.996 <= r["ema_momentum"] <= 1.0
    mlm = [r for r in _log(run_dir, "mlm") if r.get("split") != "validation"]
    assert len(mlm) == params.train.steps and all(r["lambda"] is None for r in mlm)
    assert any(r.get("split") == "validation" for r in _log(run_dir, "hybrid"))


def test_tensorboard_event_files_hold_the_logged_values(chain, params):
    from _train_helpers import log_scalars, read_events

    run_dir, _ = chain
    assert "tensorboard" in params.train.report_to
    for objective in params.objectives:
        expected = log_scalars(run_dir / "logs" / f"{objective}.jsonl")
        events = read_events(run_dir / "logs" / "tensorboard" / objective)
        assert set(events) == set(expected) and "train/loss" in events and "validation/mlm_loss" in events
        for tag in expected:  # float32 in the event files
            assert events[tag] == pytest.approx(expected[tag], rel=1e-6, abs=1e-12), (objective, tag)


def test_model_cards_hold_training_facts_and_the_evaluation(chain, params):
    from huggingface_hub import ModelCard

    run_dir, _ = chain
    m = pd.read_csv(run_dir / "results" / "metrics.csv")
    for objective in params.objectives:
        card = ModelCard.load(run_dir / "models" / objective / "README.md")
        assert card.data.library_name == "transformers" and "jepa" in card.data.tags
        assert f"- Steps: {params.train.steps} " in card.text
        sst2 = m[(m["model"] == objective) & (m["task"] == "sst2") & (m["pooling"] == "mean")].iloc[0]
        assert f"| sst2 | accuracy | {sst2['value']:.3f} [{sst2['ci_low']:.3f}, {sst2['ci_high']:.3f}] |" in card.text


def test_metrics_cover_every_task_and_are_in_range(chain):
    run_dir, _ = chain
    m = pd.read_csv(run_dir / "results" / "metrics.csv")
    for objective in ("hybrid", "mlm"):
        assert set(m.loc[m["objective"] == objective, "task"]) == set(TASKS) | {"wiki"}
    assert {"majority", "random_init"} <= set(m["model"])
    assert np.isfinite(m["value"]).all()
    ci = m.dropna(subset=["ci_low", "ci_high"])
    assert (ci["ci_low"] <= ci["value"] + 1e-9).all() and (ci["value"] <= ci["ci_high"] + 1e-9).all()
    bounded = m[m["metric"].isin(["accuracy", "f1", "spectral_entropy"])]
    assert bounded["value"].between(0, 1).all()
    assert m.loc[m["metric"].isin(["spearman", "pearson", "mcc", "anisotropy"]), "value"].between(-1, 1).all()
    assert (m.loc[m["metric"] == "uniformity", "value"] <= 1e-9).all()
    assert (m.loc[m["metric"] == "effective_rank", "value"] >= 1 - 1e-9).all()


def test_differences_are_consistent(chain):
    run_dir, _ = chain
    table = pd.read_csv(run_dir / "results" / "differences.csv")
    pooled = table[table["level"] == "pooled"]  # one seed: no seed-level interval, so no verdict can rest on it
    assert (pooled["n_seeds"] == 1).all() and pooled[["ci_low", "ci_high", "p", "p_holm"]].isna().all().all()
    d = table[table["level"] == "seed"]
    assert len(d) == len(pooled) and np.allclose(d["diff"], pooled["diff"])
    assert not d.empty and set(d["task"]) >= set(TASKS)
    assert (d["model_a"] == "hybrid").all() and (d["model_b"] == "mlm").all()
    assert np.allclose(d["diff"], d["a"] - d["b"])
    m = pd.read_csv(run_dir / "results" / "metrics.csv")
    value = m[m["model"].isin(["hybrid", "mlm"])].pivot_table(index=["task", "pooling", "metric"], columns="model",
                                                               values="value")
    joined = d.join(value, on=["task", "pooling", "metric"])
    assert np.allclose(joined["a"], joined["hybrid"]) and np.allclose(joined["b"], joined["mlm"])  # = metrics.csv
    # the CI brackets the estimate (also for rank90, an integer metric whose bootstrap mostly ties: the
    # median recentring puts the estimate inside; it has no p, though)
    assert ((d["ci_low"] <= d["diff"] + 1e-9) & (d["diff"] <= d["ci_high"] + 1e-9)).all()
    cont = d[d["metric"] != "rank90"]
    assert d.loc[d["metric"] == "rank90", ["p", "p_holm"]].isna().all().all()  # CI only, not tested
    assert cont["p"].between(0, 1).all() and cont["p_holm"].between(0, 1).all()
    assert (cont["p_holm"] >= cont["p"] - 1e-12).all()  # Holm only ever raises p-values


def test_summary_names_every_claim(chain):
    run_dir, _ = chain
    text = (run_dir / "summary.md").read_text()
    for claim in ("C1", "C2", "C3", "C4", "C5"):
        assert f"## {claim}:" in text
    assert "wikiextractor" in text and "MNLI" in text
    assert "one seed: not seed-level evidence" in text and "## Learning check" in text


ABLATION_FIGURES = [f"ablation_forest_{c}" for c in ("C1", "C2", "C3", "C4")] + [
    "ablation_probes", "ablation_geometry", "layerwise_uniformity", "layerwise_anisotropy", "layerwise_effective_rank",
    "ablation_trajectories"]


def test_ablations_notebook_evaluates_variants_and_references_like_03(chain, params):
    """05 on the smoke profile: the variants trained, evaluated with 03's protocol (the MLM baseline's
    mean/max numbers equal 03's), paired with MLM, forest plots, the summary section. (Reference encoders:
    tests/test_ablation_study.py; the MiniLM would add ~50 s here.)"""
    run_dir, _ = chain
    for name in ABLATION_FIGURES:
        png = run_dir / "figures" / f"{name}.png"
        assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG", name
    flops = json.loads((run_dir / "models" / "mlm-flops-s0" / "train_summary.json").read_text())
    assert flops["steps"] > params.train.steps  # the MLM run given the hybrid's FLOPs takes more steps
    m = pd.read_csv(run_dir / "ablations" / "results" / "metrics.csv")
    assert set(m["model"]) == {"majority", "mlm", "hybrid-fixed0.5", "mlm-flops"}
    assert set(m.loc[m["model"] != "majority", "pooling"]) == {"mean", "max"}
    assert set(m.loc[m["model"] == "mlm-flops", "task"]) == set(TASKS) | {"wiki"}
    main = pd.read_csv(run_dir / "results" / "metrics.csv")
    key = ["task", "pooling", "metric"]
    same = m[m["model"] == "mlm"].merge(main[main["model"] == "mlm"], on=key, suffixes=("", "_03"))
    assert len(same) == (m["model"] == "mlm").sum() > 0
    assert np.allclose(same[["value", "ci_low", "ci_high"]].to_numpy(dtype=float),
                       same[["value_03", "ci_low_03", "ci_high_03"]].to_numpy(dtype=float), equal_nan=True)
    d = pd.read_csv(run_dir / "ablations" / "results" / "differences.csv")
    assert set(zip(d["model_a"], d["model_b"])) == {("hybrid-fixed0.5", "mlm"), ("mlm-flops", "mlm")}
    effects = pd.read_csv(run_dir / "ablations" / "results" / "effects.csv")
    assert set(effects["claim"]) == {"C1", "C2", "C3", "C4"}
    assert set(effects["variant"]) == {"hybrid-fixed0.5", "mlm-flops"}
    assert (effects["claim_unadjusted"] == "inconclusive").all()  # one seed: no seed-level interval
    assert set(effects["verdict"]) == {"inconclusive", "exploratory"}  # exploratory: rows that decide no claim
    text = (run_dir / "summary.md").read_text()
    assert text.count("## What drives the effect") == 1 and "## C5:" in text
    assert "**hybrid-fixed0.5** (λ fixed at 0.5) − MLM (one seed: not seed-level evidence): C1 inconclusive" in text
    assert "**mlm-flops** (MLM at the hybrid's FLOPs) − MLM" in text


def test_layerwise_table_has_every_model_layer_and_metric(chain, params):
    run_dir, _ = chain
    t = pd.read_csv(run_dir / "results" / "layerwise.csv")
    layers = {"hybrid": params.model.layers, "mlm": params.model.layers, "hybrid-fixed0.5": params.model.layers,
              "mlm-flops": params.model.layers}
    assert set(t["model"]) == set(layers) and set(t["task"]) == {"sst2", "wiki"}
    for (model, task), g in t.groupby(["model", "task"]):
        assert sorted(set(g["layer"])) == list(range(layers[model] + 1)), (model, task)  # 0 = embeddings
        assert len(g) == 3 * (layers[model] + 1)  # uniformity, anisotropy, effective rank per layer
    assert np.isfinite(t["value"]).all() and (t.loc[t["metric"] == "uniformity", "value"] <= 1e-9).all()
    assert (t.loc[t["metric"] == "effective_rank", "value"] >= 1 - 1e-9).all()


def test_trajectories_of_every_model_from_its_snapshots(chain, params):
    """Issue 25: every pre-trained model measured at each snapshot point (step 0 and the last included, no
    interpolation); the end point IS 03's number for the model; step 0 is one encoder for both objectives."""
    from jepa_core.runs import list_snapshots, snapshot_steps

    run_dir, _ = chain
    t = pd.read_csv(run_dir / "results" / "trajectories.csv")
    grid = snapshot_steps(params.train.steps, params.train.snapshots)
    assert len(grid) >= 3 and grid[0] == 0 and grid[-1] == params.train.steps
    for objective in params.objectives:
        assert sorted(t.loc[(t["model"] == objective) & (t["task"] == "wiki"), "step"].unique()) == grid
        assert [s.step for s in list_snapshots(run_dir / "snapshots" / objective)] == grid
        assert sorted(t.loc[(t["model"] == objective) & (t["task"] == "sst2"), "step"]) == [0, grid[len(grid) // 2],
                                                                                          grid[-1]]
    m = pd.read_csv(run_dir / "results" / "metrics.csv")
    end = t[t["step"] == params.train.steps].merge(m, on=["model", "task", "pooling", "metric"], suffixes=("", "_03"))
    assert len(end) == (t["step"] == params.train.steps).sum() > 0
    assert np.allclose(end[["value", "ci_low", "ci_high"]].to_numpy(float),
                       end[["value_03", "ci_low_03", "ci_high_03"]].to_numpy(float), rtol=1e-9, atol=1e-12)
    d = pd.read_csv(run_dir / "results" / "trajectory_differences.csv")
    assert (d.loc[d["point"] == 0, "diff"] == 0).all() and set(d["point"]) == set(range(len(grid)))
    trends = pd.read_csv(run_dir / "results" / "trajectory_trends.csv")
    assert len(trends) and (trends["trend"] == "undetermined").all()  # one seed: no interval
    text = (run_dir / "summary.md").read_text()
    assert text.count("### Trajectories: how the geometry evolves during pre-training") == 1
    v = pd.read_csv(run_dir / "ablations" / "results" / "trajectories.csv")
    flops = v[v["model"] == "mlm-flops"]
    assert flops["step"].max() > params.train.steps and flops["point"].nunique() == len(grid)
    vd = pd.read_csv(run_dir / "ablations" / "results" / "trajectory_differences.csv")
    assert set(zip(vd["model_a"], vd["model_b"])) == {("hybrid-fixed0.5", "mlm"), ("mlm-flops", "mlm")}


def test_second_invocation_reuses_every_step(chain):
    run_dir, _ = chain
    before = (run_dir / "results" / "metrics.csv").stat().st_mtime_ns
    results = wb.run(SMOKE, outputs_dir=run_dir.parent)
    assert not any(r.ran for r in results)
    assert (run_dir / "results" / "metrics.csv").stat().st_mtime_ns == before


def test_force_reruns_every_step(chain, monkeypatch):
    """--force through the CLI re-executes every step (recorded, not executed: the real chain
    already ran above, and the runner's code path up to the executor is the same)."""
    run_dir, _ = chain
    ran = []
    monkeypatch.setattr(wb, "execute_notebook", lambda source, output, parameters, rd, log_output=False:
                        ran.append((source.stem, parameters.get("resume"))))
    assert wb.main(["run", str(SMOKE), "--outputs", str(run_dir.parent), "--force", "--no-html"]) == 0
    assert [s for s, _ in ran] == list(workbook_steps.STEPS)
    assert dict(ran)["02_pretrain"] is False  # pre-training starts over instead of resuming


def test_bad_parameter_fails_before_any_notebook(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for bad, key in (("train.bogus=1", "train.bogus"), ("train.steps=ten", "train.steps")):
        proc = subprocess.run([sys.executable, "-m", "jepa_core.study.workbook", "run", str(SMOKE), "--outputs",
                               str(tmp_path), "--set", bad], capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 2 and key in proc.stderr
    assert not any(tmp_path.iterdir())  # nothing was created, no notebook started
