"""Shared by the trainer tests: a tiny real-text data folder and tiny parameters (fast on 2 CPU cores)."""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from jepa_core.config import load_params
from jepa_core.data.blocks import PreparedData, load_prepared_data

REPO = Path(__file__).resolve().parents[1]

# A 1-layer, 32-wide encoder on 32-token blocks: ~20 ms a step on a laptop core.
TINY = {
    "data.source": "wiki_dump", "data.max_documents": 6, "data.vocab_size": 400, "data.seq_len": 32,
    "data.validation_fraction": 0.3,
    "model.layers": 1, "model.hidden": 32, "model.heads": 2, "model.ffn": 64, "model.max_position": 64,
    "model.dropout": 0.1, "model.predictor_layers": 1, "model.predictor_hidden": 16, "model.predictor_heads": 2,
    "mask.min_keep": 4,
    "train.steps": 30, "train.batch_size": 8, "train.lr": 3e-3, "train.warmup_steps": 3,
    "train.log_every": 1, "train.eval_every": 10, "train.eval_batches": 2, "train.checkpoint_every": 10,
    "train.report_to": ["jsonl"],  # TensorBoard: tests/test_tensorboard.py and the chain test (smoke profile)
}


def tiny_params(**overrides):
    """The smoke profile shrunk further; keyword overrides use '__' for '.' (train__steps=5)."""
    dotted = {k.replace("__", "."): v for k, v in overrides.items()}
    return load_params(REPO / "parameters" / "smoke.yaml", {**TINY, **dotted})


@functools.lru_cache(maxsize=1)
def tiny_data_dir() -> Path:
    """A prepared data folder (tokenizer/, blocks_*.npy, corpus.json) from 6 articles of the
    embedded Wikipedia excerpt, built once per test session through the project's data path."""
    from jepa_core.data.blocks import prepare_data

    out = Path(tempfile.mkdtemp(prefix="tiny_data_"))
    prepare_data(tiny_params().data, out, 0)
    return out


def tiny_data() -> PreparedData:
    return load_prepared_data(tiny_data_dir())


def read_log(path: Path) -> tuple[list[dict], list[dict]]:
    """(train records, validation records) of a log.jsonl."""
    records = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [r for r in records if "split" not in r], [r for r in records if r.get("split") == "validation"]


def cli_args(*args: str) -> list[str]:
    """Arguments of `python -m jepa_core.pretrain.train` with the tiny parameters as --set overrides
    (later ones win)."""
    sets = [f"--set={k}={json.dumps(v)}" for k, v in TINY.items()]
    return ["--params", str(REPO / "parameters" / "smoke.yaml"), "--data", str(tiny_data_dir()), *sets, *args]


def cli(*args: str, **popen) -> subprocess.Popen:
    """Start `python -m jepa_core.pretrain.train ...` (tiny parameters) as a real process."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "jepa_core.pretrain.train", *cli_args(*args)], cwd=REPO, env=env,
                            **popen)


def one_thread():
    """Generator for an autouse fixture: tiny models run far faster on one thread (and do not
    fight the rest of the suite for the cores); the setting is restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TIMING_FIELDS = ("tokens_per_s", "elapsed_s")


def deterministic(records: list[dict]) -> list[dict]:
    """Log records without the wall-clock fields."""
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records]


def read_events(folder: Path) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} of the scalars in a TensorBoard run folder; fails on a step logged twice."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep every event
    acc.Reload()
    events = {tag: acc.Scalars(tag) for tag in acc.Tags()["scalars"]}
    for tag, scalars in events.items():  # a resumed run's recomputed steps replace the earlier session's
        steps = [e.step for e in scalars]
        assert len(steps) == len(set(steps)), f"{tag}: steps logged twice: {sorted(steps)}"
    return {tag: {e.step: e.value for e in scalars} for tag, scalars in events.items()}


def log_scalars(log_path: Path) -> dict[str, dict[int, float]]:
    """What the TensorBoard event files should hold for a log.jsonl: {tag: {step: value}}."""
    from jepa_core.pretrain.run_state import tensorboard_scalars

    steps, validations = read_log(log_path)
    expected: dict[str, dict[int, float]] = {}
    for record in steps + validations:
        for tag, value in tensorboard_scalars(record).items():
            expected.setdefault(tag, {})[record["step"]] = value
    return expected
