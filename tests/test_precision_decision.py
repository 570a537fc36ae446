"""bench/precision.py: the bf16 adoption rule on run folders with known numbers."""
import json

import numpy as np
import pytest

from jepa_core.analysis.measures import MEASURES, save_measures
from jepa_core.analysis.tables import Measure, ModelFolder, Results
from jepa_core.bench import precision
from jepa_core.config import load_params, save_params
from jepa_core.report.summary import LEARNING_GAP_MIN

SEEDS = [0, 1, 2]
B = 400


def make_run(root, c1_per_seed, losses, gaps=None, wall=(600.0, 300.0)):
    """A run folder with hybrid/mlm seeds 0-2: train summaries (learning section, wall time) and a
    measures.npz whose C1 cell gives hybrid − MLM = c1_per_seed[s] with a small shared example noise."""
    rng = np.random.default_rng(0)
    results, encoders = Results(), []
    noise = rng.normal(0, 0.002, B)  # the task's shared resamples
    for objective, time_s in zip(("hybrid", "mlm"), wall):
        for s in SEEDS:
            folder = root / "models" / f"{objective}-s{s}"
            folder.mkdir(parents=True)
            gap = (gaps or {}).get((objective, s), 1.8)
            loss = losses[objective, s]
            learning = dict(validation_mlm_loss=loss, unigram_entropy=loss + gap, gap=gap,
                            context_free_loss=loss + 1.0, gap_vs_context_free=1.0)
            (folder / "train_summary.json").write_text(json.dumps({"learning": learning, "wall_time_s": time_s}))
            value = -0.4 + (c1_per_seed[s] if objective == "hybrid" else 0.0)
            results.measures[objective, s, "sst2", "mean", "uniformity"] = Measure(value, value + noise, 872)
            encoders.append(ModelFolder(objective, objective, s, folder))
    (root / "results").mkdir()
    save_params(load_params(None, {"seeds": SEEDS}), root / "params.yaml")  # the run's model names: hybrid-s0, ...
    save_measures(results, root / "results" / MEASURES, load_params(None), encoders)
    return root


LOSSES = {(o, s): 5.0 + 0.1 * s for o in ("hybrid", "mlm") for s in SEEDS}


def test_equal_runs_adopt_and_the_c1_row_is_the_claims_interval(tmp_path):
    c1 = [-0.10, -0.05, -0.12]
    fp32 = make_run(tmp_path / "fp32", c1, LOSSES)
    bf16 = make_run(tmp_path / "bf16", c1, {k: v + 0.02 for k, v in LOSSES.items()}, wall=(400.0, 200.0))
    d = precision.bf16_decision(fp32, bf16, SEEDS)
    assert d["adopt"] and all(d["conditions"].values())
    assert d["c1"]["bf16"]["per_seed"] == pytest.approx(c1)
    assert d["c1"]["fp32"]["diff"] == pytest.approx(np.mean(c1))
    assert d["c1"]["fp32"]["sd_seeds"] == pytest.approx(np.std(c1, ddof=1))
    # t interval with 2 degrees of freedom (4.303) around the mean; the shared noise cancels in a − b
    half = 4.303 * np.std(c1, ddof=1) / np.sqrt(3)
    assert d["c1"]["fp32"]["ci_high"] - d["c1"]["fp32"]["diff"] == pytest.approx(half, rel=1e-3)
    assert d["mean_abs_loss_shift"] == pytest.approx(0.02) and d["mean_loss_shift"] == pytest.approx(0.02)
    assert d["speedup"] == pytest.approx({"hybrid": 1.5, "mlm": 1.5})
    assert "adopt bf16: yes" in precision.markdown(d)


def test_each_condition_alone_refuses(tmp_path):
    c1 = [-0.10, -0.09, -0.11]
    fp32 = make_run(tmp_path / "fp32", c1, LOSSES)
    # 1. one bf16 model short of the recipe's target (hybrid 1.2)
    low = make_run(tmp_path / "low", c1, LOSSES, gaps={("hybrid", 1): 1.19})
    d = precision.bf16_decision(fp32, low, SEEDS)
    assert d["conditions"] == {"learning_targets": False, "loss_shift": True, "c1_overlap": True} and not d["adopt"]
    # 2. the loss moves 0.06 nats on average in absolute value, though its signed mean is near 0
    moved = {k: v + (0.06 if k[1] % 2 else -0.06) for k, v in LOSSES.items()}
    d = precision.bf16_decision(fp32, make_run(tmp_path / "moved", c1, moved), SEEDS)
    assert d["mean_abs_loss_shift"] == pytest.approx(0.06) and abs(d["mean_loss_shift"]) < 0.03
    assert d["conditions"]["loss_shift"] is False and not d["adopt"]
    # 3. C1 intervals apart
    d = precision.bf16_decision(fp32, make_run(tmp_path / "apart", [0.10, 0.09, 0.11], LOSSES), SEEDS)
    assert d["conditions"] == {"learning_targets": True, "loss_shift": True, "c1_overlap": False}


def test_the_precondition_below_the_context_free_baseline_counts_too(tmp_path):
    c1 = [-0.10, -0.09, -0.11]
    fp32 = make_run(tmp_path / "fp32", c1, LOSSES)
    bf16 = make_run(tmp_path / "bf16", c1, LOSSES)
    path = bf16 / "models" / "mlm-s2" / "train_summary.json"
    summary = json.loads(path.read_text())
    summary["learning"]["gap_vs_context_free"] = LEARNING_GAP_MIN - 0.01
    path.write_text(json.dumps(summary))
    assert precision.bf16_decision(fp32, bf16, SEEDS)["conditions"]["learning_targets"] is False


def test_a_missing_model_or_cell_is_named(tmp_path):
    fp32 = make_run(tmp_path / "fp32", [-0.1, -0.1, -0.1], LOSSES)
    with pytest.raises(ValueError, match="models/mlm-s3"):
        precision.bf16_decision(fp32, fp32, [0, 3])
    with pytest.raises(ValueError, match="no C1 cell"):
        precision.c1_interval(fp32, [7])
