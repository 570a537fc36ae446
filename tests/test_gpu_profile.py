"""parameters/gpu.yaml: it validates, and the workbook runs it end to end on CPU when shrunk with
--set-style overrides (every key that sizes the run, nothing that changes the code path: the same
WikiExtractor source, trained tokenizer, DataLoader workers, log/checkpoint cadence, two seeds).
The full-size run needs a GPU: scripts/gpu_check.sh, results in docs/results/gpu/."""
import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from jepa_core.config import load_params, parse_overrides
from jepa_core.study import steps as workbook_steps
from jepa_core.study import workbook as wb

REPO = Path(__file__).resolve().parents[1]
GPU = REPO / "parameters" / "gpu.yaml"
SHRINK = ["seeds=[0, 1]", "data.max_documents=40", "data.vocab_size=1500", "model.layers=1", "model.hidden=32",
          "model.heads=2", "model.ffn=64", "model.predictor_layers=1", "model.predictor_hidden=16",
          "model.predictor_heads=2", "train.steps=6", "train.batch_size=8", "train.warmup_steps=2",
          "train.num_workers=2", "train.log_every=4", "train.eval_every=3", "train.eval_batches=1",
          "train.checkpoint_every=3", "eval.tasks=[sst2, stsb]", "eval.poolings=[mean, cls]", "eval.batch_size=64",
          "eval.max_train_examples=120", "eval.max_dev_examples=120", "eval.geometry_samples=100",
          "eval.bootstrap=50", "eval.wiki_sentences=100", "eval.learned_pooling_epochs=2"]


def test_gpu_profile_is_the_papers_model():
    p = load_params(GPU)
    m = p.model
    assert (m.layers, m.hidden, m.heads, m.ffn) == (6, 512, 8, 2048)
    assert (m.predictor_layers, m.predictor_hidden) == (6, 192)
    assert (p.data.seq_len, p.jepa.ema_start, p.jepa.ema_end, p.jepa.lambda_mode) == \
        (128, 0.996, 1.0, "learned")
    assert p.train.precision == "auto" and p.data.source == "wikiextractor" and p.data.max_documents is None
    assert len(p.seeds) >= 3 and p.train.log_every > 1  # seed-level intervals; no host sync every step


def test_gpu_check_script_parses():
    for script in ("gpu_check.sh", "gpu_prepare.sh"):
        subprocess.run(["bash", "-n", str(REPO / "scripts" / script)], check=True)


@pytest.mark.slow
def test_gpu_profile_shrunk_runs_on_cpu(tmp_path, glue_dir, wiki_dir):
    results = wb.run(GPU, overrides=parse_overrides(SHRINK), outputs_dir=tmp_path, html=False)
    assert [r.step for r in results if r.ran] == list(workbook_steps.STEPS)
    run_dir = tmp_path / "gpu"
    for name in ("hybrid-s0", "mlm-s0", "hybrid-s1", "mlm-s1"):
        summary = json.loads((run_dir / "models" / name / "train_summary.json").read_text())
        assert summary["steps"] == 6 and summary["tokens"] == 6 * 8 * 128
        assert summary["data_source"].startswith("wikiextractor")
    metrics = pd.read_csv(run_dir / "results" / "metrics.csv")
    assert set(metrics["task"]) >= {"sst2", "stsb"}
    assert (run_dir / "summary.md").is_file()
