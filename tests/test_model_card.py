"""model_card.py: the card written at export, its evaluation update, hand edits kept, push offline."""
import os
import subprocess
import sys
import warnings

import pandas as pd
import pytest
import torch
from _train_helpers import REPO, one_thread, tiny_data, tiny_params
from huggingface_hub import ModelCard

import jepa_core.pretrain.train as T
from jepa_core.pretrain import model_card as MC

single_thread = pytest.fixture(autouse=True)(one_thread)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 6-step hybrid run in the workbook's run folder layout."""
    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("run")
    paths = T.RunPaths.for_run(run_dir, "hybrid", seed=0)
    summary = T.train(tiny_params(train__steps=6, train__eval_every=3), "hybrid", paths, data=tiny_data())
    return run_dir, paths.model_dir, summary


def test_export_writes_a_card_with_the_training_facts(run):
    _, model_dir, summary = run
    card = ModelCard.load(model_dir / "README.md")
    assert card.data.library_name == "transformers" and card.data.license == "other"
    assert {"jepa", "masked-lm", "feature-extraction"} <= set(card.data.tags)
    assert card.data.datasets is None  # local text (the embedded excerpt), not a hub dataset
    assert "- Data: `wiki_dump: enwiki-" in card.text and "site-packages" not in card.text  # no local paths
    assert MC.MARKER in card.content and "Not evaluated yet" in card.text
    assert "- Steps: 6 (train.steps=6)" in card.text and f"tokens seen: {summary['tokens']:,}" in card.text
    final = summary["final"]
    assert f"loss {final['loss']:.4g}, MLM {final['mlm_loss']:.4g}, JEPA {final['jepa_loss']:.4g}" in card.text
    assert f"final λ {final['lambda']:.4g}" in card.text
    assert f"MLM {summary['final_validation']['mlm_loss']:.4g}" in card.text


def test_hub_data_source_names_the_dataset(run):
    _, _, summary = run
    text = MC.card_text({**summary, "data_source": "hub:wikimedia/wikipedia"})
    card = ModelCard(text)
    assert card.data.datasets == ["wikimedia/wikipedia"]


def test_summary_step_adds_the_evaluation_with_intervals(run):
    run_dir, model_dir, _ = run
    rows = [("hybrid", 0.0, "sst2", "mean", "accuracy", 0.61, 0.58, 0.65, 872, 0.51),
            ("hybrid", 0.0, "sst2", "max", "accuracy", 0.55, 0.52, 0.58, 872, 0.51),  # not mean pooling
            ("hybrid", 0.0, "mrpc", "mean", "accuracy", 0.69, 0.64, 0.74, 408, 0.68),  # not the headline metric
            ("hybrid", 0.0, "mrpc", "mean", "f1", 0.81, 0.78, 0.85, 408, 0.81),
            ("hybrid", 1.0, "sst2", "mean", "accuracy", 0.99, 0.98, 1.0, 872, 0.51),  # another seed
            ("mlm", 0.0, "sst2", "mean", "accuracy", 0.70, 0.66, 0.73, 872, 0.51)]
    metrics = pd.DataFrame(rows, columns=["model", "seed", "task", "pooling", "metric", "value", "ci_low", "ci_high",
                                          "n", "chance"])
    assert MC.update_cards(run_dir, metrics) == [model_dir / "README.md"]
    card = ModelCard.load(model_dir / "README.md")
    assert "| sst2 | accuracy | 0.610 [0.580, 0.650] | 872 | 0.510 |" in card.text
    assert "| mrpc | f1 | 0.810 [0.780, 0.850] | 408 | 0.810 |" in card.text
    assert card.text.count("| sst2 |") == 1 and "| mrpc | accuracy" not in card.text
    assert "Not evaluated yet" not in card.text


def test_a_hand_edited_card_is_never_overwritten(run, tmp_path):
    _, model_dir, summary = run
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "README.md").write_text("# my notes\n")
    with pytest.warns(UserWarning, match="edited by hand"):
        path = MC.write_card(folder, summary)
    assert path == folder / "README.generated.md" and ModelCard.load(path).data.library_name == "transformers"
    assert (folder / "README.md").read_text() == "# my notes\n"
    with warnings.catch_warnings():  # a card the workbook wrote is regenerated in place, silently
        warnings.simplefilter("error")
        assert MC.write_card(model_dir, summary) == model_dir / "README.md"


def test_re_export_keeps_a_hand_edited_card(run):
    run_dir, model_dir, _ = run
    (model_dir / "README.md").write_text("# hand-written card\n")
    with pytest.warns(UserWarning, match="edited by hand"):  # the finished run: resume only re-exports
        T.train(tiny_params(train__steps=6, train__eval_every=3), "hybrid", T.RunPaths.for_run(run_dir, "hybrid", 0),
                data=tiny_data(), resume=True)
    assert (model_dir / "README.md").read_text() == "# hand-written card\n"
    assert MC.MARKER in (model_dir / "README.generated.md").read_text()


def test_push_offline_fails_at_once_with_a_clear_message_and_deletes_nothing(run):
    _, model_dir, _ = run
    before = sorted(p.name for p in model_dir.iterdir())
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-m", "jepa_core.pretrain.model_card", "push", str(model_dir),
                          "--repo", "user/x"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "HF_HUB_OFFLINE is set" in out.stderr and "Traceback" not in out.stderr
    assert sorted(p.name for p in model_dir.iterdir()) == before


def test_push_needs_an_exported_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an exported encoder"):
        MC.push(tmp_path, "user/x")
