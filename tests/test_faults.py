"""Cross-cutting faults (issue 5): no network never means a wait; same seed, same table.

The other fault cases live next to the code they guard: parameters (test_params.py), data files
(test_corpus.py, test_blocks.py, test_glue.py), interruption, non-finite losses, collapse and safe
loading (test_train_faults.py, test_checkpoint.py), pipeline re-runs (test_workbook.py, test_chain.py).
"""
from __future__ import annotations

import time

import pandas as pd
import pytest
from test_evaluate import WIKI, make_glue, small_params, tiny_checkpoint  # noqa: F401  (fixture)

from jepa_core.analysis import evaluate as ev
from jepa_core.config import load_params
from jepa_core.data import corpus, glue


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def test_hub_corpus_offline_fails_in_seconds_with_instructions(offline):
    params = load_params(None, {"data.source": "hub"})
    start = time.monotonic()
    with pytest.raises(ConnectionError) as err:
        corpus.load_corpus(params.data)
    assert time.monotonic() - start < 5
    message = str(err.value)
    assert "HF_HUB_OFFLINE" in message and "WIKI_DIR" in message and "Go online" in message


def test_hub_unreachable_without_offline_flags_is_detected_fast(monkeypatch):
    """A black-holed network (no env flags): the probe gives up within its timeout."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)

    def black_hole(*args, **kwargs):
        time.sleep(30)

    monkeypatch.setattr(corpus.socket, "create_connection", black_hole)
    start = time.monotonic()
    assert glue.hub_offline() is not None
    with pytest.raises(ConnectionError, match="did not answer"):
        corpus.resolve_source(load_params(None, {"data.source": "hub"}).data)
    assert time.monotonic() - start < 6


def test_glue_without_data_offline_is_skipped_with_reasons(offline, monkeypatch):
    monkeypatch.delenv("GLUE_DIR", raising=False)
    start = time.monotonic()
    available, skipped = glue.available_tasks(["sst2", "mnli", "stsb"], None)
    assert time.monotonic() - start < 5
    assert available == [] and set(skipped) == {"sst2", "mnli", "stsb"}
    assert all("HF_" in why for why in skipped.values()), skipped


def test_same_seed_gives_an_identical_metrics_table(tmp_path, tiny_checkpoint):  # noqa: F811
    params = small_params(make_glue(tmp_path / "glue"), ["sst2", "stsb"])
    params.eval.random_init_baseline = False
    models = {"hybrid": [str(tiny_checkpoint)], "mlm": [str(tiny_checkpoint)]}
    first, first_diff = ev.evaluate(models, params, tmp_path / "a", WIKI)
    second, second_diff = ev.evaluate(models, params, tmp_path / "b", WIKI)  # fresh folder: no cache reuse
    pd.testing.assert_frame_equal(first, second)
    pd.testing.assert_frame_equal(first_diff, second_diff)
    other = small_params(make_glue(tmp_path / "glue2"), ["sst2", "stsb"])
    other.eval.random_init_baseline = False
    other.seeds = [1]  # another evaluation seed draws other subsets and resamples
    third, _ = ev.evaluate(models, other, tmp_path / "c", WIKI)
    merged = first.merge(third, on=["model", "task", "pooling", "metric"], suffixes=("", "_other"))
    assert not (merged["ci_low"] == merged["ci_low_other"]).all()
