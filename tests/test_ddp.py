"""Two CPU processes (gloo DDP) through `accelerate launch`: same steps, identical replicas."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from _train_helpers import REPO, TINY, read_log, tiny_data_dir
from transformers import AutoModel

from jepa_core.pretrain import checkpoint as ckpt

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with the gloo backend is not available")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_agrees(tmp_path):
    overrides = {**TINY, "train.steps": 4, "train.warmup_steps": 1, "train.checkpoint_every": 2, "train.eval_every": 2}
    # `--multi_gpu` only selects torch's multi-process launcher; without CUDA the trainer uses gloo on CPU
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
           str(free_port()),
           "-m", "jepa_core.pretrain.train", "--params", str(REPO / "parameters" / "smoke.yaml"),
           "--data", str(tiny_data_dir()),
           "--objective", "hybrid", "--out", str(tmp_path),
           *[f"--set={k}={json.dumps(v)}" for k, v in overrides.items()]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]

    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["steps"] == 4
    hashes = summary["replica_weight_sha256"]
    assert len(hashes) == 2 and hashes[0] == hashes[1]
    assert summary["tokens"] == 4 * 8 * 32  # batch_size is global: 4 sequences per process
    steps, val = read_log(tmp_path / "log.jsonl")  # written once, by the main process
    assert [r["step"] for r in steps] == [1, 2, 3, 4] and [v["step"] for v in val] == [2, 4]
    state = ckpt.load_checkpoint(tmp_path / "checkpoint")
    assert state["step"] == 4 and state["data_position"] == {"epoch": 0, "batch": 4}
    assert len(state["rng_states"]) == 2  # one RNG state per process
    AutoModel.from_pretrained(tmp_path / "model")
