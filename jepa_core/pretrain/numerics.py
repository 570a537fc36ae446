"""What a pre-training run's numbers depend on beyond its parameters, recorded in train_summary.json
(`numerics`), so a reader can tell whether their run follows the reference run's path.

Same machine, same seed: the weights are identical bit for bit (tests/test_train.py). Another machine can
round differently: another CPU instruction set (AVX-512 bf16 / AMX against AVX2 picks other oneDNN and MKL
kernels), other library versions, other thread counts (reductions split differently). Two runs that agree
to ~1e-6 for the first hundred steps can then drift apart (issue 21), so the seeds, not the bits, must
carry the variance between machines. `numeric_environment` lists every such choice;
`EarlyFingerprint` keeps a short SHA-256 of the weights at an early step (FINGERPRINT_STEP, or the last
step of a shorter run): equal fingerprints mean the two runs took the same path so far.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers

from jepa_core.model import native_bf16

FINGERPRINT_STEP = 10  # early enough to be cheap to reproduce, late enough that the optimizer has moved everything
FINGERPRINT_CHARS = 16  # 64 bits of the SHA-256: enough to tell two paths apart at a glance
# /proc/cpuinfo flags that change which float kernels oneDNN / MKL / PyTorch pick
NUMERIC_CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "ONEDNN_MAX_CPU_ISA",
                    "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY")


def cpu_info(path: str | Path = "/proc/cpuinfo") -> dict[str, Any]:
    """CPU model and the numerics-relevant flags of the first processor in /proc/cpuinfo (Linux); the
    platform's processor string and no flags where the file is absent."""
    try:
        text = Path(path).read_text()
    except OSError:
        return {"model": platform.processor() or platform.machine(), "flags": None}
    fields = {}
    for line in text.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    flags = set(fields.get("flags", "").split())
    return {"model": fields.get("model name", platform.machine()),
            "flags": {f: f in flags for f in NUMERIC_CPU_FLAGS}}


def _build_lines(config: str) -> list[str]:
    """The lines of torch.__config__.show() that name the math libraries it was built with."""
    keys = ("oneDNN", "MKL", "Math Kernel", "LAPACK", "BLAS", "OpenMP", "CPU capability")
    lines = [line.strip(" -") for line in config.splitlines() if any(k in line for k in keys)]
    settings = next((line for line in lines if line.startswith("Build settings")), "")
    wanted = [kv.strip() for kv in settings.removeprefix("Build settings:").split(",")
              if kv.strip().split("=")[0] in ("BLAS_INFO", "LAPACK_INFO", "TORCH_VERSION", "USE_MKLDNN")]
    return [line for line in lines if not line.startswith("Build settings")] + wanted  # not the compiler flags


def numeric_environment(precision: str | None = None, target_precision: str | None = None) -> dict[str, Any]:
    """Every numeric choice of this process that can differ between machines: precisions, library versions,
    the math libraries torch was built with, the CPU kernels it dispatches to, thread counts, CPU model
    and flags."""
    cuda = torch.cuda.is_available()
    return {
        "train_precision": precision, "target_precision": target_precision,
        "native_bf16": native_bf16("cuda" if cuda else "cpu"),  # False: bf16 autocast ran emulated (slow)
        "torch": torch.__version__, "transformers": transformers.__version__, "numpy": np.__version__,
        "python": platform.python_version(),
        "torch_build": _build_lines(torch.__config__.show()),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn_enabled": torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled,
        "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
        "thread_env": {k: os.environ[k] for k in THREAD_VARIABLES if k in os.environ},
        "cpu": cpu_info(),
        "cuda": {"device": torch.cuda.get_device_name(0), "cuda": torch.version.cuda,
                 "cudnn": torch.backends.cudnn.version(),
                 "tf32_matmul": torch.backends.cuda.matmul.allow_tf32} if cuda else None,
    }


class EarlyFingerprint:
    """The short SHA-256 of the weights once the run reaches FINGERPRINT_STEP (or its last step, if it plans
    fewer). `value` travels in the checkpoints (RunState.weights_fingerprint), so a run resumed past that
    step reports the fingerprint its earlier session took; a checkpoint written before that was recorded
    leaves none, and `record` says why."""

    def __init__(self, digest, step: int = FINGERPRINT_STEP):
        self.digest, self.step = digest, step  # digest: model -> hex SHA-256 of its state_dict
        self.value: dict[str, Any] | None = None

    def after_step(self, step: int, total_steps: int, model: torch.nn.Module) -> None:
        if self.value is None and step == min(self.step, total_steps):
            self.value = {"step": step, "sha256": self.digest(model)[:FINGERPRINT_CHARS]}

    def record(self, resumed_from: int | None) -> dict[str, Any]:
        if self.value is not None:
            return self.value
        why = (f"resumed at step {resumed_from}, past the fingerprint step" if resumed_from is not None
               else "the run ended before the fingerprint step")
        return {"step": None, "sha256": None, "note": why}
