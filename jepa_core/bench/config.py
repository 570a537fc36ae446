"""What the benchmark runs with: BenchConfig, its speed TARGETS, the workload names, the GPU peak
table and the machine description that goes into the JSON."""
from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from jepa_core.config import ARCHITECTURES, PRECISIONS, Params, load_params

# Dense bf16 tensor-core peaks (no sparsity), TFLOP/s, from the vendors' data sheets; the first key
# found as a word in torch.cuda.get_device_name() wins (so "H100 PCIe" before "H100").
# --peak-tflops overrides, and is needed for any card not listed.
GPU_BF16_PEAK_TFLOPS = {
    "H200": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.0,  # H100 SXM: "NVIDIA H100 80GB HBM3"
    "A100": 312.0, "L40S": 362.0, "L4": 121.0,
}
TARGETS = {  # name: (comparison, threshold, what)
    "speedup_mlm_vs_hf": (">=", 3.0, "tokens/s of our MLM step / HF BertForMaskedLM naive loop"),
    "hybrid_vs_mlm_step_time": ("<=", 1.9, "step time of the paper's hybrid / our MLM step"),
    "shared_vs_mlm_step_time": ("<=", 1.3, "step time of the shared_pass hybrid / our MLM step"),
    "mlm_flops_fraction_of_gemm": (">=", 0.4, "achieved training FLOP/s of our MLM step / measured GEMM FLOP/s"),
    "encode_bucketed_vs_padded": (">=", 3.0, "encoding sentences/s, length-bucketed / padded to max_length"),
    "evaluation_speedup": (">=", 5.0, "evaluation wall time of one encoder, all tasks and poolings: the previous "
                                      "path (scikit-learn probes) / the current one"),
    "cpu_pretrain_speedup": (">=", 1.4, "CPU step time of one hybrid + one MLM step at the cpu profile's shapes, "
                                        "one thread: fp32 (before issue 22) / the profile's precision now"),
}
WORKLOADS = ("hf", "mlm", "hybrid", "shared", "hybrid_static", "shared_static", "gemm")
STATIC = ("hybrid", "shared")  # --static-shapes times these again with train.static_shapes, side by side
TRAINING = ("hf", "mlm", "hybrid", "shared")


@dataclass
class BenchConfig:
    architecture: str = "bert"  # model.architecture: bert | modernbert
    dropout: float = 0.1  # model.dropout (the gpu profile trains without: --dropout 0)
    layers: int = 4
    hidden: int = 256
    heads: int = 4
    ffn: int = 1024
    vocab: int = 30522  # 30522: the bert-base-uncased tokenizer; otherwise a WordPiece of this size
    batch: int = 32
    seq: int = 128
    predictor_layers: int = 2  # the predictor defaults of ModelConfig
    predictor_hidden: int = 128
    predictor_heads: int = 4
    rounds: int = 10  # timed round-robin rounds after the warm-up
    warmup: int = 2  # untimed steps of each workload first (allocations, optimizer state, kernels)
    gemm_size: int | None = None  # n of the (n×n)·(n×n) matmul; None: 2048 on CPU, 8192 on GPU
    gemm_repeats: int = 3  # matmuls per timed GEMM "step"
    encode_repeats: int = 3  # interleaved repeats of each encoding mode
    encode_batch: int = 64  # eval.batch_size default
    encode_max_length: int = 128
    encode_sentences: int | None = None  # cap on sentences (None: all of SST-2 dev)
    glue_dir: str | None = None  # None: $GLUE_DIR; neither: sentences of the embedded Wikipedia excerpt
    documents: int = 12  # Wikipedia articles packed into training blocks (cycled through)
    threads: int | None = None  # torch.set_num_threads; None: leave torch's default (physical cores)
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (bf16 autocast on a bf16-capable GPU, else fp32) | bf16 | fp32
    compile: bool = False  # torch.compile our encoder (as train.compile does)
    static_shapes: bool = False  # also time the hybrid steps with train.static_shapes (fixed batch shapes)
    peak_tflops: float | None = None  # GPU bf16 peak for MFU; None: looked up in GPU_BF16_PEAK_TFLOPS
    ablations: bool = False  # also time VARIANTS and the optimizer / EMA micro-benchmarks
    seed: int = 0
    eval_rounds: int = 2  # interleaved rounds of the evaluation benchmark (bench/evaluation.py); 0: skip it
    eval_profile: str = "cpu"  # the parameter profile whose evaluation it times (parameters/<name>.yaml)
    eval_tiny: bool = False  # a few examples of SST-2 and wiki instead of the profile's sizes (the test's)
    pretrain_profile: str | None = "cpu"  # the CPU pre-training speed-up at this profile's shapes
    #   (bench/pretrain_speed.py); None (--pretrain-profile none): skip it

    def __post_init__(self) -> None:
        for key in ("layers", "hidden", "heads", "ffn", "vocab", "batch", "seq", "predictor_layers",
                    "predictor_hidden", "predictor_heads", "rounds", "gemm_repeats", "encode_repeats",
                    "encode_batch", "encode_max_length", "documents"):
            if getattr(self, key) < 1:
                raise ValueError(f"bench {key}={getattr(self, key)!r} is invalid: allowed a positive integer")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"bench architecture={self.architecture!r} is invalid: allowed {', '.join(ARCHITECTURES)}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"bench dropout={self.dropout!r} is invalid: allowed a number in [0, 1)")
        if self.eval_rounds < 0:
            raise ValueError(f"bench eval_rounds={self.eval_rounds!r} is invalid: allowed an integer >= 0")
        if self.pretrain_profile in ("", "none"):
            self.pretrain_profile = None
        for key in ("eval_profile", "pretrain_profile"):
            name = getattr(self, key)
            if name is not None and not (Path(__file__).resolve().parents[2] / "parameters" / f"{name}.yaml").is_file():
                raise ValueError(f"bench {key}={name!r} is invalid: no parameters/{name}.yaml")
        if self.warmup < 0:
            raise ValueError(f"bench warmup={self.warmup!r} is invalid: allowed an integer >= 0")
        if self.hidden % self.heads:
            raise ValueError(f"bench heads={self.heads} is invalid: allowed a divisor of hidden={self.hidden}")
        if self.predictor_hidden % self.predictor_heads:
            raise ValueError(f"bench predictor_heads={self.predictor_heads} is invalid: allowed a divisor of "
                             f"predictor_hidden={self.predictor_hidden}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"bench precision={self.precision!r} is invalid: allowed {', '.join(PRECISIONS)}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"bench device={self.device!r} is invalid: allowed auto, cpu, cuda or cuda:N")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"bench device={self.device!r}: no CUDA device is available")

    @classmethod
    def tiny(cls, **overrides: Any) -> "BenchConfig":
        """A config whose steps take milliseconds: for the test and for trying the CLI."""
        base = dict(layers=1, hidden=32, heads=2, ffn=64, vocab=400, batch=4, seq=32, predictor_layers=1,
                    predictor_hidden=16, predictor_heads=2, rounds=2, warmup=1, gemm_size=128, gemm_repeats=1,
                    encode_repeats=1, encode_batch=16, encode_max_length=64, encode_sentences=48, documents=2,
                    eval_rounds=1, eval_tiny=True, pretrain_profile="smoke")
        return cls(**{**base, **overrides})


def bench_params(cfg: BenchConfig) -> Params:
    """The Params our model and trainer would get for this benchmark config."""
    return load_params(None, {
        "model.architecture": cfg.architecture, "model.dropout": cfg.dropout, "model.layers": cfg.layers,
        "model.hidden": cfg.hidden, "model.heads": cfg.heads, "model.ffn": cfg.ffn,
        "model.max_position": max(128, cfg.seq, cfg.encode_max_length),
        "model.predictor_layers": cfg.predictor_layers, "model.predictor_hidden": cfg.predictor_hidden,
        "model.predictor_heads": cfg.predictor_heads,
        "data.seq_len": cfg.seq, "data.vocab_size": cfg.vocab, "train.batch_size": cfg.batch,
        "train.precision": cfg.precision, "train.compile": cfg.compile, "eval.max_length": cfg.encode_max_length,
    })


# ---------------------------------------------------------------- machine

def machine_info(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import transformers

    info = {"cpu": cpu, "logical_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "platform": platform.platform(), "device": str(device),
            # other processes share the cores: the 1-minute load average shows how busy the machine was
            "load_average_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def gpu_peak_flops(device: torch.device, override_tflops: float | None) -> float | None:
    """The card's dense bf16 peak in FLOP/s (flag first, then the table), None when unknown / on CPU."""
    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in GPU_BF16_PEAK_TFLOPS.items():
        if re.search(rf"\b{re.escape(key)}\b", name):
            return tflops * 1e12
    return None
