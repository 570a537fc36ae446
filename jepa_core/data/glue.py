"""GLUE tasks in one schema, from a local folder or the hub.

`load_task(task, split, glue_dir)` returns a DataFrame with columns `sentence1`, `sentence2`
(None for single-sentence tasks) and `label` (int; float for STS-B). Sources, in order:

1. a local folder in the original GLUE TSV layout (`SST-2/ MRPC/ MNLI/ CoLA/ STS-B/`, the layout
   of the GLUE download script and of the BERT repository), or the hub's parquet files
   (`validation_matched-*.parquet` ...) in the same folders or in `sst2/ mrpc/ ...`;
2. the hub (`nyu-mll/glue`) when no folder is given (`glue_dir` None and `$GLUE_DIR` unset).

Each TSV has its own quirks, handled below: CoLA has no header and 4 columns, MRPC starts with a
BOM and names its columns `Quality / #1 String / #2 String`, STS-B has 10 columns and a float
score, MNLI's dev files come as the classic 16-column TSV, a derived 5-column TSV or parquet, with
the label given as `gold_label` text. GLUE TSVs contain unbalanced quotes, so they are read with
`csv.QUOTE_NONE`. MNLI labels use the hub coding: 0 entailment, 1 neutral, 2 contradiction.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from jepa_core.data.corpus import hub_reachable

TASK_FOLDERS = {"sst2": "SST-2", "mrpc": "MRPC", "mnli": "MNLI", "cola": "CoLA", "stsb": "STS-B"}
MNLI_LABELS = {"entailment": 0, "neutral": 1, "contradiction": 2}
REGRESSION_TASKS = ("stsb",)
# split name here -> split name on the hub / in the hub's parquet file names
HUB_SPLITS = {"train": "train", "dev": "validation", "dev_matched": "validation_matched",
              "dev_mismatched": "validation_mismatched"}
MNLI_NOTE = ("MNLI train split not available: the probe is trained on dev_mismatched "
             "and reported on dev_matched")


class GlueDataError(ValueError):
    """GLUE data that is there but cannot be used (a malformed file, a GLUE folder that does not exist):
    an error, never a skip. The message names the file (and line) and what was expected."""


class GlueFormatError(GlueDataError):
    """A GLUE file does not have the expected layout (names the file and line)."""


class GlueUnavailable(RuntimeError):
    """A task/split cannot be loaded here (no local file, hub offline); the message says why."""


@dataclass(frozen=True)
class TsvLayout:
    """Where the fields of one GLUE TSV are: header names (or indices when there is no header)."""
    sentence1: str | int
    sentence2: str | int | None
    label: str | int
    parse_label: Callable[[str], int | float]
    header: bool = True


def _int_label(text: str) -> int:
    if text not in ("0", "1"):
        raise ValueError(f"label {text!r} is not 0 or 1")
    return int(text)


def _mnli_label(text: str) -> int:
    if text not in MNLI_LABELS:
        raise ValueError(f"gold_label {text!r} is not one of {', '.join(MNLI_LABELS)}")
    return MNLI_LABELS[text]


def _score(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 5.0:
        raise ValueError(f"score {value} is outside [0, 5]")
    return value


TSV_LAYOUTS = {
    "sst2": TsvLayout("sentence", None, "label", _int_label),
    "cola": TsvLayout(3, None, 1, _int_label, header=False),  # source, label, original mark, sentence
    "mrpc": TsvLayout("#1 String", "#2 String", "Quality", _int_label),
    "stsb": TsvLayout("sentence1", "sentence2", "score", _score),
    # classic 16-column MNLI TSV; the derived 5-column one names its sentences premise/hypothesis
    "mnli": TsvLayout("sentence1", "sentence2", "gold_label", _mnli_label),
}
MNLI_ALIASES = {"sentence1": "premise", "sentence2": "hypothesis"}
# column names in the hub's parquet files / datasets
HUB_COLUMNS = {"sst2": ("sentence", None), "cola": ("sentence", None), "mrpc": ("sentence1", "sentence2"),
               "stsb": ("sentence1", "sentence2"), "mnli": ("premise", "hypothesis")}


# ---------------------------------------------------------------- local files

def resolve_glue_dir(glue_dir: str | os.PathLike | None = None) -> Path | None:
    """The GLUE folder to use: the argument, else $GLUE_DIR, else None (the hub)."""
    chosen = glue_dir if glue_dir is not None else os.environ.get("GLUE_DIR") or None
    return Path(chosen).expanduser() if chosen is not None else None


def _check_task_split(task: str, split: str) -> None:
    if task not in TASK_FOLDERS:
        raise ValueError(f"unknown GLUE task {task!r}: expected one of {', '.join(TASK_FOLDERS)}")
    allowed = ("train", "dev_matched", "dev_mismatched") if task == "mnli" else ("train", "dev")
    if split not in allowed:
        raise ValueError(f"unknown split {split!r} for {task}: expected one of {', '.join(allowed)}")


def locate(task: str, split: str, glue_dir: Path) -> Path | None:
    """The local file holding `task/split` (TSV preferred, then hub parquet), or None."""
    _check_task_split(task, split)
    for folder in (glue_dir / TASK_FOLDERS[task], glue_dir / task):
        tsv = folder / f"{split}.tsv"
        if tsv.is_file():
            return tsv
        parquet = sorted(folder.glob(f"{HUB_SPLITS[split]}-*.parquet"))
        if parquet:
            return parquet[0]
    return None


def _expected(layout: TsvLayout) -> str:
    if not layout.header:
        return "4 tab-separated fields per line (source, label, original mark, sentence), no header"
    names = [c for c in (layout.sentence1, layout.sentence2, layout.label) if c is not None]
    return f"a header row naming the columns {', '.join(names)}, then one example per line"


def _check_text(path: Path, layout: TsvLayout) -> None:
    """A GLUE TSV is UTF-8 text without NUL bytes: else a GlueFormatError naming the line and the byte (a binary,
    compressed or UTF-16 file). One pass over the bytes, line by line."""
    offset = 0
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            nul = raw.find(b"\0")
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as err:
                bad = err.start if nul < 0 else min(err.start, nul)
            else:
                bad = nul
            if bad >= 0:
                what = "a NUL byte" if bad == nul else f"byte 0x{raw[bad]:02x}"
                raise GlueFormatError(f"{path}:{line_no}: not UTF-8 text ({what} at offset {offset + bad}): expected "
                                      f"a tab-separated GLUE file ({_expected(layout)}); is it a binary or compressed "
                                      "file?")
            offset += len(raw)


def read_tsv(path: Path, task: str) -> pd.DataFrame:
    """Parse one GLUE TSV strictly: every row must have the header's field count and a valid label. Anything
    else (a binary or empty file, a bad header, a malformed row) raises GlueFormatError naming the file, the
    line where there is one, and what was expected."""
    layout = TSV_LAYOUTS[task]
    _check_text(path, layout)
    try:
        return _read_tsv(path, task, layout)
    except csv.Error as err:
        raise GlueFormatError(f"{path}: {err}: expected tab-separated UTF-8 text ({_expected(layout)})") from None


def _read_tsv(path: Path, task: str, layout: TsvLayout) -> pd.DataFrame:
    with open(path, encoding="utf-8-sig", newline="") as f:  # utf-8-sig drops MRPC's BOM
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        if layout.header:
            header = next(rows, None)
            if header is None:
                raise GlueFormatError(f"{path}: empty file (expected {_expected(layout)})")
            columns = {name: i for i, name in enumerate(header)}
            if task == "mnli" and "sentence1" not in columns:
                columns.update({k: columns[v] for k, v in MNLI_ALIASES.items() if v in columns})
            try:
                idx = [columns[c] if c is not None else None
                       for c in (layout.sentence1, layout.sentence2, layout.label)]
            except KeyError as err:
                raise GlueFormatError(f"{path}:1: header has no column {err.args[0]!r} (header: {header}; "
                                      f"expected {_expected(layout)})") from None
            width = len(header)
        else:
            idx, width = [layout.sentence1, layout.sentence2, layout.label], 4
        i1, i2, il = idx
        s1, s2, labels = [], [], []
        for row in rows:
            if not row:  # a blank line (e.g. a trailing newline) carries no example
                continue
            line = rows.line_num
            if len(row) != width:
                raise GlueFormatError(f"{path}:{line}: expected {width} tab-separated fields, got {len(row)}")
            try:
                labels.append(layout.parse_label(row[il]))
            except ValueError as err:
                raise GlueFormatError(f"{path}:{line}: bad label: {err}") from None
            s1.append(row[i1])
            s2.append(row[i2] if i2 is not None else None)
    if not labels:
        raise GlueFormatError(f"{path}: no examples{' after the header' if layout.header else ''} "
                              f"(expected {_expected(layout)})")
    return _frame(s1, s2, labels, task)


def read_parquet(path: Path, task: str) -> pd.DataFrame:
    try:
        df = pd.read_parquet(path)
    except Exception as err:  # pyarrow's errors (ArrowInvalid, OSError ...) do not name the file
        raise GlueFormatError(f"{path}: not a readable parquet file ({type(err).__name__}: {err})") from None
    c1, c2 = HUB_COLUMNS[task]
    missing = [c for c in (c1, c2, "label") if c is not None and c not in df.columns]
    if missing:
        raise GlueFormatError(f"{path}: missing column(s) {missing} (has {list(df.columns)})")
    if not len(df):
        raise GlueFormatError(f"{path}: no examples")
    return _frame(df[c1].tolist(), df[c2].tolist() if c2 else [None] * len(df), df["label"].tolist(), task)


def _frame(s1: list, s2: list, labels: list, task: str) -> pd.DataFrame:
    dtype = np.float64 if task in REGRESSION_TASKS else np.int64
    return pd.DataFrame({"sentence1": pd.Series(s1, dtype=object), "sentence2": pd.Series(s2, dtype=object),
                         "label": np.asarray(labels, dtype=dtype)})


# ---------------------------------------------------------------- hub

def hub_offline() -> str | None:
    """Why the hub cannot be used (offline env vars, no route to it), or None when it answers.
    A quick probe (corpus.hub_reachable): without one, datasets waits 30-50 s before giving up."""
    reachable, why = hub_reachable()
    return None if reachable else why


def _load_hub(task: str, split: str) -> pd.DataFrame:
    reason = hub_offline()
    if reason:
        raise GlueUnavailable(f"{task}/{split}: no GLUE folder (eval.glue_dir / $GLUE_DIR unset) "
                              f"and the hub is offline: {reason}")
    import datasets  # heavy import, only needed here

    ds = datasets.load_dataset("nyu-mll/glue", task, split=HUB_SPLITS[split])
    c1, c2 = HUB_COLUMNS[task]
    return _frame(ds[c1], ds[c2] if c2 else [None] * len(ds), ds["label"], task)


# ---------------------------------------------------------------- public API

def load_task(task: str, split: str, glue_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """`task` in sst2 mrpc mnli cola stsb; `split` train / dev (MNLI: train / dev_matched / dev_mismatched)."""
    _check_task_split(task, split)
    root = resolve_glue_dir(glue_dir)
    if root is None:
        df = _load_hub(task, split)
        df.attrs["source"] = f"hub:nyu-mll/glue/{task}/{HUB_SPLITS[split]}"
        return df
    path = locate(task, split, root)
    if path is None:
        raise GlueUnavailable(f"{task}/{split}: no {split}.tsv or {HUB_SPLITS[split]}-*.parquet "
                              f"in {root / TASK_FOLDERS[task]}")
    df = read_parquet(path, task) if path.suffix == ".parquet" else read_tsv(path, task)
    df.attrs["source"] = str(path)
    return df


def split_available(task: str, split: str, glue_dir: str | os.PathLike | None = None) -> bool:
    root = resolve_glue_dir(glue_dir)
    if root is None:
        return hub_offline() is None
    return locate(task, split, root) is not None


def task_splits(task: str, glue_dir: str | os.PathLike | None = None) -> tuple[str, str, str]:
    """(train split, dev split, note). MNLI without a train split trains on dev_mismatched, reports dev_matched."""
    if task != "mnli":
        _check_task_split(task, "train")
        return "train", "dev", ""
    if split_available("mnli", "train", glue_dir):
        return "train", "dev_matched", ""
    return "dev_mismatched", "dev_matched", MNLI_NOTE


def available_tasks(tasks: list[str], glue_dir: str | os.PathLike | None = None) -> tuple[list[str], dict[str, str]]:
    """Split `tasks` into those with both probe splits at hand and a dict task -> why it is skipped."""
    root = resolve_glue_dir(glue_dir)
    if root is None:
        reason = hub_offline()
        if reason:
            why = f"no GLUE folder (eval.glue_dir / $GLUE_DIR unset) and the hub is offline: {reason}"
            return [], {t: why for t in tasks}
        return list(tasks), {}
    if not root.is_dir():
        return [], {t: f"GLUE folder {root} does not exist" for t in tasks}
    available, skipped = [], {}
    for task in tasks:
        train, dev, _ = task_splits(task, root)
        missing = [s for s in dict.fromkeys((train, dev)) if locate(task, s, root) is None]
        if missing:
            skipped[task] = (f"no {' / '.join(missing)} split in {root / TASK_FOLDERS[task]} "
                             f"(expected {' / '.join(s + '.tsv' for s in missing)} or the hub's parquet files)")
        else:
            available.append(task)
    return available, skipped


def check_tasks(tasks: list[str], glue_dir: str | os.PathLike | None = None) -> tuple[list[str], dict[str, str]]:
    """available_tasks(), then every split that evaluation will read of each available task parsed in full,
    so that bad data stops a run before any work: raises GlueDataError (naming the file, the line where there
    is one, and what was expected) for a malformed, empty or binary file, and for a GLUE folder that does not
    exist. Tasks without data (no folder or split; no folder and the hub offline) are returned as skipped, with
    why. From the hub (no folder), nothing is downloaded here."""
    root = resolve_glue_dir(glue_dir)
    if root is not None and not root.is_dir():
        where = "eval.glue_dir" if glue_dir is not None else "$GLUE_DIR"
        raise GlueDataError(f"{where}={root}: the GLUE folder does not exist (expected a folder holding "
                            f"{', '.join(f'{f}/' for f in TASK_FOLDERS.values())})")
    available, skipped = available_tasks(tasks, glue_dir)
    if root is None:
        return available, skipped
    for task in available:
        train, dev, _ = task_splits(task, root)
        splits = [train, dev] + (["dev_mismatched"] if task == "mnli" and train == "train"
                                 and locate(task, "dev_mismatched", root) is not None else [])
        for split in dict.fromkeys(splits):
            load_task(task, split, root)
    return available, skipped
