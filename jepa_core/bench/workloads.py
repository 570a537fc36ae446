"""The timed workloads: the stock transformers steps (STOCK), our MLM and hybrid steps, the GEMM
roofline, and with --ablations the one-change VARIANTS and the optimizer / EMA micro-benchmarks."""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch
from transformers import AutoModelForMaskedLM, DataCollatorForLanguageModeling

from jepa_core.bench.config import BenchConfig, bench_params
from jepa_core.bench.data import BlockCycle, batch_source
from jepa_core.model import PretrainModel, ema_momentum, ema_update, encoder_config
from jepa_core.model.masking import PretrainCollator
from jepa_core.pretrain.engine import WarmupCosine, apply_update, build_optimizer, forward_backward
from jepa_core.pretrain.flops import (
    FFN_MATRICES,
    encoder_forward_flops,
    measure_token_counts,
    mlm_head_forward_flops,
    training_flops_per_step,
)


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
                 objective: str, shared_pass: bool = False, variant: str | None = None,
                 static_shapes: bool = False) -> Workload:
    """Our step, as the trainer's loop body runs it (train.py): forward → backward → clip → finite
    check → AdamW (build_optimizer: decay groups, fused) → LR schedule → EMA update.
    `variant` (a key of VARIANTS) undoes or adds one optimisation, to measure what it buys;
    `static_shapes`: batches padded to fixed widths (train.static_shapes), same FLOP count as without."""
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
    if static_shapes:
        collator = PretrainCollator(tokenizer, params.mask, cfg.seed, objective, shared_pass, True, cfg.seq)
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
    if static_shapes:
        name, label = f"{name}_static", f"{label}, static shapes"
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
