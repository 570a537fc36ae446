"""Hand-written replacements for three stock ops that dominate our CPU training step.

Each exists because the library version is measurably slow on CPU for this workload (profiles and
figures: docs/PERFORMANCE.md); each is exact up to the note beside it, and each is tested against
the stock op (tests/test_kernels.py). On CUDA the stock ops are already fused, so we use them there.

fast_dropout, FastDropout   torch's CPU dropout draws one MT19937 number per element (`bernoulli_`,
                            ~6.5 ns each: 11 % of our MLM step at the bench defaults). We draw 64 bits
                            per call and cut them into four 16-bit uniforms, so p is rounded to a
                            multiple of 1/65536 (0.1 → 0.100006). Same generator (torch's default), so
                            `torch.manual_seed` and checkpointed RNG state reproduce the masks.
dropout_attention           a transformers attention function (registered as ATTENTION below). With
                            attention-probability dropout, SDPA on CPU falls back to its math kernel
                            anyway (the fused CPU kernels take no dropout) and draws its mask with
                            `bernoulli_`; we run the same math with fast_dropout. Without dropout (eval,
                            the EMA target pass) or off CPU it is plain SDPA, with one choice made for
                            SDPA: a bf16 pass that will be back-propagated on CPU takes SDPA's math kernel,
                            whose bf16 backward at our shapes (B×2×128×64) is ~1.5× faster than the
                            flash kernel's and as accurate (both ~7e-3 relative to float64, the bf16
                            inputs' rounding). fp32 passes and passes without a graph (the EMA target) keep
                            SDPA's own choice, so fp32 runs are bit-identical to plain SDPA.
linear_cross_entropy        the tied decoder + cross-entropy of the sparse MLM head in one autograd
                            Function: logits come from W·hᵀ (MKL runs that shape ~1.6× faster than h·Wᵀ
                            here), the softmax is done in place, and the gradients are computed in the
                            forward while the logits are hot, so the (N, V) logits, log-probabilities
                            and their gradient are never all alive at once. Rows go in chunks, which
                            bounds memory for large batches. fp32 on CPU only; elsewhere (CUDA, autocast)
                            the stock F.linear + F.cross_entropy.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask

from jepa_core.model.losses import mlm_loss

ATTENTION = "jepa_sdpa"  # config._attn_implementation of our training encoders (exported as "sdpa")
DROPOUT_RESOLUTION = 1 << 16  # the drop probability is a multiple of 1/65536
CE_CHUNK_ROWS = 1024  # rows of logits alive at once in linear_cross_entropy: 1024 × 30522 × 4 B = 125 MB
_INT64_MIN = torch.iinfo(torch.int64).min


# ---------------------------------------------------------------- dropout

def _uniform16(n: int) -> torch.Tensor:
    """n independent uniform 16-bit integers (int16, two's complement) from torch's default generator."""
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(_INT64_MIN, None)  # all 64 bits random
    return words.view(torch.int16)[:n]


@torch.compiler.disable
def _keep_mask(shape: torch.Size, drop: int) -> torch.Tensor:
    """True with probability 1 − drop/65536, per element of `shape` (a new tensor).

    Outside torch.compile's graph, on purpose: dynamo cannot trace `random_`, so it broke the graph
    inside _uniform16, and the resumed graph returned an int16 view of an int64 input. Once a second
    size made that size symbolic (hidden states, then attention weights), AOTAutograd rebuilt the view
    by as_strided with the int64 item size and crashed ("setStorage: ... out of bounds") under
    train.compile with dropout > 0. Drawn here, eagerly, the masks are those of the uncompiled run
    (same generator, same order) and nothing the graph returns aliases the random words."""
    return _uniform16(shape.numel()).view(shape) >= drop - DROPOUT_RESOLUTION // 2


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """F.dropout(x, p, training) with a cheaper mask on CPU: zero with probability round(p·65536)/65536,
    scale the rest by 1/(1 − that probability)."""
    if not training or p == 0.0:
        return x
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability p={p!r} is invalid: allowed 0 <= p < 1")
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    drop = round(p * DROPOUT_RESOLUTION)
    keep = _keep_mask(x.shape, drop)
    scale = DROPOUT_RESOLUTION / (DROPOUT_RESOLUTION - drop)
    return x * keep.to(x.dtype).mul_(scale)  # the mask is a constant: autograd saves it for backward


class FastDropout(nn.Dropout):
    """nn.Dropout whose CPU masks come from fast_dropout; a drop-in for the encoder's dropout modules."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p, self.training)


def use_fast_dropout(module: nn.Module) -> nn.Module:
    """Swap every nn.Dropout inside `module` for a FastDropout with the same p (in place; returns module)."""
    for parent in module.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p, child.inplace))
    return module


# ---------------------------------------------------------------- attention

def dropout_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                      **kwargs) -> tuple[torch.Tensor, None]:
    """transformers attention interface: (B, heads, L, d) q, k, v → ((B, L, heads, d), None)."""
    if dropout == 0.0 or query.device.type != "cpu" or torch.is_autocast_enabled("cpu"):
        if query.device.type == "cpu" and query.dtype == torch.bfloat16 and query.requires_grad \
                and torch.is_grad_enabled():
            with sdpa_kernel(SDPBackend.MATH):  # the module doc says why
                return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                              scaling=scaling, **kwargs)
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(-1, -2)).mul_(scaling)
    if attention_mask is not None:  # sdpa_mask: bool, True = may attend
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    probs = fast_dropout(scores.softmax(-1), dropout, True)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION, dropout_attention)
if ATTENTION not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:  # same boolean masks as SDPA
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)


# ---------------------------------------------------------------- decoder + cross-entropy

class _LinearCrossEntropy(torch.autograd.Function):
    """mean_i CE(W·h_i + b, y_i); forward also computes the gradients (scaled by the incoming grad later)."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, labels: torch.Tensor,
                chunk_rows: int, grad: bool) -> torch.Tensor:
        # rows labelled −100 (static-shape padding) add nothing and do not count in the mean, as in F.cross_entropy
        keep = labels != -100
        n = max(int(keep.sum()), 1)
        labels = labels.masked_fill(~keep, 0)
        total = hidden.new_zeros(())
        d_hidden = torch.empty_like(hidden) if grad else None
        d_weight = torch.zeros_like(weight) if grad else None
        d_bias = torch.zeros_like(bias) if grad else None
        for start in range(0, len(labels), chunk_rows):
            h, y, k = (t[start:start + chunk_rows] for t in (hidden, labels, keep))
            z = torch.addmm(bias[:, None], weight, h.t())  # (V, c): logits, transposed
            picked = z.gather(0, y[None])  # (1, c)
            top = z.amax(0, keepdim=True)
            z.sub_(top).exp_()
            norm = z.sum(0, keepdim=True)
            total += (top + norm.log() - picked)[:, k].sum()
            if grad:  # z becomes ∂loss/∂logits = (softmax − onehot) / n, 0 in ignored columns
                z.div_(norm * n)
                z.scatter_add_(0, y[None], z.new_full((1, len(y)), -1.0 / n))
                if not k.all():
                    z.mul_(k)
                torch.mm(z.t(), weight, out=d_hidden[start:start + chunk_rows])
                torch.addmm(d_weight, z, h, out=d_weight)  # not addmm_: FlopCounterMode skips in-place ops
                d_bias += z.sum(1)
        ctx.save_for_backward(d_hidden, d_weight, d_bias)
        return total / n

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        d_hidden, d_weight, d_bias = ctx.saved_tensors
        scaled = [None if d is None or not need else d * grad_out
                  for d, need in zip((d_hidden, d_weight, d_bias), ctx.needs_input_grad)]
        return *scaled, None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, labels: torch.Tensor,
                         chunk_rows: int = CE_CHUNK_ROWS) -> torch.Tensor:
    """F.cross_entropy(F.linear(hidden, weight, bias), labels): hidden (N, H), weight (V, H), bias (V,),
    labels (N,) classes, or −100 to ignore a row (mean over the others). 0 (with a graph) when N = 0."""
    fused = (hidden.device.type == "cpu" and not torch.is_autocast_enabled("cpu")
             and hidden.dtype == weight.dtype == bias.dtype == torch.float32 and len(labels) > 0)
    if not fused:
        return mlm_loss(F.linear(hidden, weight, bias), labels)
    grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad or bias.requires_grad)
    return _LinearCrossEntropy.apply(hidden, weight, bias, labels, chunk_rows, grad)
