"""Analytic training FLOPs per optimizer step, so the two objectives can get equal compute.

The paper compared the hybrid and the MLM model at equal *steps* although a hybrid step does
several encoder passes (docs/PROTOCOL.md, defect 5). This module counts what a step costs, per objective,
with the usual matmul convention (Kaplan et al. 2020; nanoGPT's `estimate_mfu`):

    a matmul (n×k)·(k×m) costs 2·n·k·m FLOPs; the backward pass costs twice the forward
    (gradients w.r.t. inputs and weights), so a pass that is trained costs 3× its forward
    and the no-grad EMA target pass costs 1×.

Forward cost of the pieces, for a sequence of T tokens (d = hidden, f = ffn, V = vocab,
dp / fp = predictor width / FFN width, n / np = encoder / predictor layers):

    enc(T)     = n · [ 2·T·(4d² + k·d·f)      Q, K, V, O projections and the k FFN matmuls:
                                              k = 2 for BERT (in, out), 3 for ModernBERT's GLU
                                              (in and gate, one d×2f matrix, then out)
                     + 4·T²·d ]               attention scores QKᵀ and the weighted sum of V
    head(M)    = 2·M·(d² + d·V)               MLM transform + tied decoder, ONLY at the M masked tokens
    pred(C, G) = 2·C·d·dp                     context states projected into the predictor
               + np · [ 2·(C+G)·(4dp² + 2·dp·fp) + 4·(C+G)²·dp ]
               + 2·G·dp·d                     predictions projected back to the encoder width
               (C context tokens, G target tokens = mask-token queries)

Per sequence, with L tokens, M masked tokens, C context tokens, G target tokens:

    mlm                 3·[enc(L) + head(M)]
    hybrid              3·[enc(L) + head(M)] + 3·[enc(C) + pred(C, G)] + 1·enc(L)
                        (MLM pass on the corrupted sequence, student pass on context tokens
                         only, EMA target pass on the clean sequence)
    hybrid shared_pass  3·[enc(C) + head(M_C) + pred(C, G)] + 1·enc(L)
                        (one student pass over the MLM-corrupted context; M_C = masked tokens
                         inside the context)

Ignored as small (O(T·d) or O(d)): embedding lookups, LayerNorms, softmax, GELU, the GLU's
product, rotary position rotations, biases, the loss itself, λ, the EMA update and the optimizer.
C and G are the sizes the model actually computes on (padded widths of the index tensors), so
`measure_token_counts` reads them from real collator batches; `expected_token_counts` is the
analytic expectation used when no batch is at hand.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import torch

from jepa_core.config import Params

PREDICTOR_FFN_MULT = 4  # the predictor's FFN is 4× its width (standard transformer layer)
FFN_MATRICES = {"bert": 2, "modernbert": 3}  # d×f matmuls per FFN, by model.architecture (GLU: +1)


@dataclass
class TokenCounts:
    """Tokens per sequence that each pass computes on (means over a few batches)."""

    seq_len: float  # L: tokens in the full sequence (MLM pass, EMA target pass)
    masked: float  # M: MLM-masked tokens (where the head runs)
    context: float = 0.0  # C: tokens fed to the student context pass (hybrid)
    target: float = 0.0  # G: JEPA target positions predicted (hybrid)
    masked_in_context: float = 0.0  # M_C: masked tokens inside the context (shared_pass)


def encoder_forward_flops(tokens: float, layers: int, hidden: int, ffn: int, ffn_matrices: int = 2) -> float:
    """Forward FLOPs of a transformer encoder stack over one sequence of `tokens` tokens
    (`ffn_matrices`: 2 for a plain FFN, 3 for a GLU)."""
    dense = 2 * tokens * (4 * hidden * hidden + ffn_matrices * hidden * ffn)
    attention = 4 * tokens * tokens * hidden
    return layers * (dense + attention)


def mlm_head_forward_flops(masked: float, hidden: int, vocab_size: int) -> float:
    """Forward FLOPs of the MLM head (transform + tied decoder) at `masked` positions only."""
    return 2 * masked * (hidden * hidden + hidden * vocab_size)


def predictor_forward_flops(context: float, target: float, hidden: int, pred_hidden: int,
                            pred_layers: int, pred_ffn: int | None = None) -> float:
    """Forward FLOPs of the JEPA predictor: in-projection, its transformer layers, out-projection."""
    pred_ffn = pred_ffn or PREDICTOR_FFN_MULT * pred_hidden
    tokens = context + target
    return (2 * context * hidden * pred_hidden
            + encoder_forward_flops(tokens, pred_layers, pred_hidden, pred_ffn)
            + 2 * target * pred_hidden * hidden)


def expected_token_counts(params: Params) -> TokenCounts:
    """Expected per-sequence counts from the mask parameters (block overlaps and padding ignored)."""
    L, k = params.data.seq_len, params.mask
    masked = k.mlm_probability * (L - 1)  # every block is [CLS] + L-1 stream tokens
    target = min(L, k.num_targets * sum(k.target_scale) / 2 * L)
    context_block = sum(k.context_scale) / 2 * L
    context = max(k.min_keep, context_block * (1 - target / L))  # targets are cut out of the context
    return TokenCounts(seq_len=L, masked=masked, context=context, target=target,
                       masked_in_context=masked * context / L)


def measure_token_counts(batches: Iterable[Mapping[str, torch.Tensor]]) -> TokenCounts:
    """Mean per-sequence counts over collated batches (padded index widths: what is computed)."""
    sums = dict(seq_len=0.0, masked=0.0, context=0.0, target=0.0, masked_in_context=0.0)
    n = 0
    for batch in batches:
        labels = batch["mlm_labels"]
        B, L = labels.shape
        n += B
        sums["seq_len"] += B * L
        sums["masked"] += (labels != -100).sum().item()
        if "context_idx" in batch:
            ctx = batch["context_idx"]
            sums["context"] += B * ctx.shape[1]
            sums["target"] += B * batch["target_idx"].shape[1]
            in_ctx = torch.gather(labels, 1, ctx) != -100
            sums["masked_in_context"] += (in_ctx & batch["context_valid"]).sum().item()
    if n == 0:
        raise ValueError("measure_token_counts needs at least one batch")
    return TokenCounts(**{k: v / n for k, v in sums.items()})


def training_flops_per_step(params: Params, vocab_size: int, objective: str,
                            counts: TokenCounts | None = None, shared_pass: bool | None = None) -> dict[str, float]:
    """FLOPs of one optimizer step (batch of train.batch_size sequences), by part and in total.

    `objective` is "mlm" or "hybrid"; `shared_pass` defaults to params.jepa.shared_pass.
    Returns {"student": ..., "target": ..., "predictor": ..., "mlm_head": ..., "total": ...}
    (student = trained encoder passes; all parts already include the ×3 / ×1 factors).
    """
    if objective not in ("mlm", "hybrid"):
        raise ValueError(f"objective={objective!r}: expected 'mlm' or 'hybrid'")
    m = params.model
    c = counts or expected_token_counts(params)
    shared = params.jepa.shared_pass if shared_pass is None else shared_pass

    def enc(tokens: float) -> float:
        return encoder_forward_flops(tokens, m.layers, m.hidden, m.ffn, FFN_MATRICES[m.architecture])

    def head(masked: float) -> float:
        return mlm_head_forward_flops(masked, m.hidden, vocab_size)

    parts = dict(student=0.0, target=0.0, predictor=0.0, mlm_head=0.0)
    if objective == "mlm" or not shared:
        parts["student"] += 3 * enc(c.seq_len)
        parts["mlm_head"] += 3 * head(c.masked)
    if objective == "hybrid":
        parts["student"] += 3 * enc(c.context)
        if shared:
            parts["mlm_head"] += 3 * head(c.masked_in_context)
        parts["predictor"] = 3 * predictor_forward_flops(c.context, c.target, m.hidden, m.predictor_hidden,
                                                         m.predictor_layers)
        parts["target"] = enc(c.seq_len)
    parts = {k: v * params.train.batch_size for k, v in parts.items()}
    parts["total"] = sum(parts.values())
    return parts
