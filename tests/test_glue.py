"""GLUE loading: the real files (when $GLUE_DIR is set) and small fixtures of every layout."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from jepa_core.data import glue

GLUE_DIR = os.environ.get("GLUE_DIR")
needs_glue = pytest.mark.skipif(not GLUE_DIR or not Path(GLUE_DIR).is_dir(),
                                reason="GLUE_DIR is not set to a GLUE folder")

# official GLUE sizes: (task, split) -> rows
OFFICIAL_ROWS = {("sst2", "train"): 67_349, ("sst2", "dev"): 872, ("cola", "train"): 8_551, ("cola", "dev"): 1_043,
                 ("mrpc", "train"): 3_668, ("mrpc", "dev"): 408, ("stsb", "train"): 5_749, ("stsb", "dev"): 1_500,
                 ("mnli", "dev_matched"): 9_815, ("mnli", "dev_mismatched"): 9_832}


@needs_glue
@pytest.mark.parametrize("task,split", list(OFFICIAL_ROWS))
def test_real_files_have_official_row_counts(task, split):
    df = glue.load_task(task, split, GLUE_DIR)
    assert len(df) == OFFICIAL_ROWS[task, split]
    assert list(df.columns) == ["sentence1", "sentence2", "label"]
    assert df["sentence1"].map(lambda s: isinstance(s, str) and len(s) > 0).all()
    pair = task in ("mrpc", "stsb", "mnli")
    assert df["sentence2"].map(lambda s: isinstance(s, str)).all() if pair else df["sentence2"].isna().all()
    assert df["label"].dtype == ("float64" if task == "stsb" else "int64")


@needs_glue
def test_real_label_balance_and_first_rows():
    def counts(task, split):
        return glue.load_task(task, split, GLUE_DIR)["label"].value_counts().to_dict()
    assert counts("sst2", "dev") == {1: 444, 0: 428}
    assert counts("mrpc", "dev") == {1: 279, 0: 129}
    assert counts("cola", "train") == {1: 6_023, 0: 2_528}
    assert counts("mnli", "dev_matched") == {0: 3_479, 1: 3_123, 2: 3_213}  # entailment / neutral / contradiction
    stsb = glue.load_task("stsb", "dev", GLUE_DIR)
    assert stsb["label"].between(0, 5).all() and stsb["label"].iloc[0] == 5.0
    mnli = glue.load_task("mnli", "dev_matched", GLUE_DIR)
    assert mnli.iloc[0].tolist() == ["The new rights are nice enough", "Everyone really likes the newest benefits ", 1]
    mrpc = glue.load_task("mrpc", "dev", GLUE_DIR)  # QUOTE_NONE keeps the unbalanced quote
    assert mrpc["sentence2"].iloc[0].startswith('" The foodservice pie business')


@needs_glue
def test_real_mnli_tsv_equals_hub_parquet():
    tsv = glue.load_task("mnli", "dev_mismatched", GLUE_DIR)
    parquet = glue.read_parquet(next(Path(GLUE_DIR, "MNLI").glob("validation_mismatched-*.parquet")), "mnli")
    pd.testing.assert_frame_equal(tsv, parquet)


# ---------------------------------------------------------------- fixtures of every layout

def write(path: Path, text: str, bom: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())


@pytest.fixture
def glue_tree(tmp_path):
    write(tmp_path / "SST-2/train.tsv", "sentence\tlabel\nit 's \" good\t1\nbad \t0\n")
    write(tmp_path / "SST-2/dev.tsv", "sentence\tlabel\nfine\t1\n")
    # no final newline
    write(tmp_path / "CoLA/train.tsv", "gj04\t1\t\tThe sailors rode.\ngj04\t0\t*\tRode sailors the.")
    write(tmp_path / "MRPC/dev.tsv", "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\ta \" b\tc d\n", bom=True)
    write(tmp_path / "STS-B/dev.tsv",
          "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
          "0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man.\tA guy.\t4.750\n")
    classic = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
               "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "label2", "label3",
               "label4", "label5", "gold_label"]
    row = ["0", "1", "1e", "fiction", "( a )", "( b )", "(S a)", "(S b)", "He ran.", "He moved.",
           "entailment", "entailment", "neutral", "entailment", "entailment", "entailment"]
    write(tmp_path / "MNLI/dev_matched.tsv", "\t".join(classic) + "\n" + "\t".join(row) + "\n")
    write(tmp_path / "MNLI/dev_mismatched.tsv", "idx\tpremise\thypothesis\tlabel\tgold_label\n"
          "0\tA b.\tC d.\t2\tcontradiction\n1\tE.\tF.\t1\tneutral\n")
    return tmp_path


def test_fixture_layouts_parse_to_one_schema(glue_tree):
    sst = glue.load_task("sst2", "train", glue_tree)
    assert sst["sentence1"].tolist() == ['it \'s " good', "bad "] and sst["label"].tolist() == [1, 0]
    cola = glue.load_task("cola", "train", glue_tree)
    assert cola["sentence1"].tolist() == ["The sailors rode.", "Rode sailors the."] and cola["label"].tolist() == [1, 0]
    mrpc = glue.load_task("mrpc", "dev", glue_tree)
    assert mrpc.iloc[0].tolist() == ['a " b', "c d", 1]
    stsb = glue.load_task("stsb", "dev", glue_tree)
    assert stsb.iloc[0].tolist() == ["A man.", "A guy.", 4.75]
    assert glue.load_task("mnli", "dev_matched", glue_tree).iloc[0].tolist() == ["He ran.", "He moved.", 0]
    assert glue.load_task("mnli", "dev_mismatched", glue_tree)["label"].tolist() == [2, 1]


def test_malformed_row_names_file_and_line(glue_tree):
    bad = glue_tree / "SST-2/train.tsv"
    write(bad, "sentence\tlabel\ngood\t1\ntoo\tmany\t1\n")
    with pytest.raises(glue.GlueFormatError, match=rf"{bad}:3: expected 2 tab-separated fields, got 3"):
        glue.load_task("sst2", "train", glue_tree)
    write(bad, "sentence\tlabel\ngood\t1\nbad\tpositive\n")
    with pytest.raises(glue.GlueFormatError, match=rf"{bad}:3: bad label"):
        glue.load_task("sst2", "train", glue_tree)
    write(glue_tree / "STS-B/dev.tsv", "index\tsentence1\tsentence2\n0\ta\tb\n")
    with pytest.raises(glue.GlueFormatError, match="header has no column 'score'"):
        glue.load_task("stsb", "dev", glue_tree)


def test_missing_folder_or_split_is_skipped_with_reason(glue_tree):
    available, skipped = glue.available_tasks(["sst2", "cola", "mrpc", "mnli"], glue_tree)
    assert available == ["sst2", "mnli"]
    assert "no dev split" in skipped["cola"] and "CoLA" in skipped["cola"]
    assert "no train split" in skipped["mrpc"]
    with pytest.raises(glue.GlueUnavailable, match="no train.tsv"):
        glue.load_task("mrpc", "train", glue_tree)
    available, skipped = glue.available_tasks(["sst2"], glue_tree / "nowhere")
    assert available == [] and "does not exist" in skipped["sst2"]


def test_mnli_without_train_trains_on_mismatched_with_note(glue_tree):
    assert glue.task_splits("mnli", glue_tree) == ("dev_mismatched", "dev_matched", glue.MNLI_NOTE)
    assert "dev_mismatched" in glue.MNLI_NOTE and "dev_matched" in glue.MNLI_NOTE
    write(glue_tree / "MNLI/train.tsv", "idx\tpremise\thypothesis\tlabel\tgold_label\n0\ta\tb\t0\tentailment\n")
    assert glue.task_splits("mnli", glue_tree) == ("train", "dev_matched", "")
    assert glue.task_splits("sst2", glue_tree) == ("train", "dev", "")


def test_offline_without_folder_skips_with_reason(monkeypatch):
    monkeypatch.delenv("GLUE_DIR", raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    available, skipped = glue.available_tasks(["sst2", "stsb"], None)
    assert available == [] and set(skipped) == {"sst2", "stsb"}
    assert "_OFFLINE" in skipped["sst2"]  # HF_HUB_OFFLINE or HF_DATASETS_OFFLINE, whichever is set
    with pytest.raises(glue.GlueUnavailable, match="hub is offline"):
        glue.load_task("sst2", "dev")


def test_unknown_task_or_split_is_rejected(glue_tree):
    with pytest.raises(ValueError, match="unknown GLUE task 'qqp'"):
        glue.load_task("qqp", "dev", glue_tree)
    with pytest.raises(ValueError, match="unknown split 'dev' for mnli"):
        glue.load_task("mnli", "dev", glue_tree)


def test_hub_rows_map_to_the_same_schema(monkeypatch):
    """Online without a folder: nyu-mll/glue columns and split names map onto the local schema."""
    import datasets

    calls = []

    def fake_load_dataset(name, config, split):
        calls.append((name, config, split))
        return datasets.Dataset.from_dict({"premise": ["p"], "hypothesis": ["h"], "label": [2], "idx": [0]})

    monkeypatch.delenv("GLUE_DIR", raising=False)
    monkeypatch.setattr(glue, "hub_offline", lambda: None)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    df = glue.load_task("mnli", "dev_mismatched")
    assert calls == [("nyu-mll/glue", "mnli", "validation_mismatched")]
    assert df.iloc[0].tolist() == ["p", "h", 2] and df.attrs["source"].startswith("hub:")
    assert glue.available_tasks(["sst2", "mnli"], None) == (["sst2", "mnli"], {})
