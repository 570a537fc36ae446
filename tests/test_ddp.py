"""Two CPU processes (gloo DDP) through `accelerate launch`: same steps, identical replicas."""
import json
import os
import signal
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


def _launch(cmd: list[str], env: dict, timeout: int) -> subprocess.CompletedProcess | None:
    """Run the launcher in its own process group; None when it times out (the whole group is killed, so no rank
    is left waiting, as one once was after a rendezvous hang)."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_two_process_ddp_agrees(tmp_path):
    overrides = {**TINY, "train.steps": 4, "train.warmup_steps": 1, "train.checkpoint_every": 2, "train.eval_every": 2}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    for attempt in range(2):  # a second try, on a fresh port, only when the first hangs (free_port can race)
        # `--multi_gpu` only selects torch's multi-process launcher; without CUDA the trainer uses gloo on CPU
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
               str(free_port()),
               "-m", "jepa_core.pretrain.train", "--params", str(REPO / "parameters" / "smoke.yaml"),
               "--data", str(tiny_data_dir()),
               "--objective", "hybrid", "--out", str(tmp_path / f"try{attempt}"),
               *[f"--set={k}={json.dumps(v)}" for k, v in overrides.items()]]
        done = _launch(cmd, env, timeout=150)
        if done is not None:
            break
    assert done is not None, "two-process DDP hung twice (150 s each)"
    assert done.returncode == 0, done.stderr[-4000:]
    tmp_path = tmp_path / f"try{attempt}"

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
