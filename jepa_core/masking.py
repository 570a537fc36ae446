"""Masks for pre-training: MLM 80/10/10 corruption, JEPA multi-block masks, and the batch collator.

Every random draw for dataset item i comes from its own `torch.Generator`, seeded by a stable hash
of (seed, epoch, i, stream). Masks therefore do not depend on batch composition, DataLoader worker,
or resume point, and the MLM masks of the hybrid run equal those of the MLM-only run (the MLM and
JEPA draws use separate streams, so adding JEPA masks does not shift the MLM draws).

JEPA mask layout (SPEC §2, 1-D multi-block, per sequence of real length n):
  - position 0 ([CLS]) is never a target and is ALWAYS in the context: the student input then starts
    with [CLS] like every downstream input, and [CLS] has no local span to predict;
  - `num_targets` contiguous target blocks, each round(U(target_scale)·n) tokens inside [1, n);
    target blocks may overlap each other (as in I-JEPA); the target set is their union;
  - one contiguous context block of round(U(context_scale)·n) tokens inside [1, n);
  - context := {0} ∪ (context block − targets): context and targets are disjoint by construction;
  - if fewer than `min_keep` text tokens (not counting [CLS]) remain in the context, redraw (up to
    MAX_TRIES); if every draw fails, fall back to the whole text as context block and shrink the
    target blocks until the guarantee holds.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

from .config import MaskConfig, OBJECTIVES

MAX_TRIES = 20  # JEPA redraws before the shrink fallback (rarely needed at the default scales)


# ---------------------------------------------------------------- token ids

@dataclass(frozen=True)
class TokenIds:
    """The ids masking needs; build from a tokenizer with `TokenIds.from_tokenizer`."""

    vocab_size: int
    pad_id: int
    mask_id: int
    special_ids: tuple[int, ...]  # never selected for MLM, never drawn as random replacements

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> "TokenIds":
        for name in ("pad_token_id", "mask_token_id"):
            if getattr(tokenizer, name, None) is None:
                raise ValueError(f"tokenizer {type(tokenizer).__name__} has no {name}; masking needs [PAD] and [MASK]")
        return cls(vocab_size=len(tokenizer), pad_id=tokenizer.pad_token_id, mask_id=tokenizer.mask_token_id,
                   special_ids=tuple(sorted(set(tokenizer.all_special_ids))))


def item_generator(seed: int, epoch: int, index: int, stream: str) -> torch.Generator:
    """A generator seeded by a stable hash (not Python's salted hash()) of (seed, epoch, index, stream)."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}:{stream}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


# ---------------------------------------------------------------- MLM

def mlm_mask(input_ids: torch.Tensor, special_tokens_mask: torch.Tensor, attention_mask: torch.Tensor,
             vocab_size: int, mask_token_id: int, probability: float, generator: torch.Generator,
             special_ids: Sequence[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT corruption of (B, L) ids: returns (mlm_input_ids, mlm_labels), labels −100 where not selected.

    Each row selects exactly max(1, round(probability · n)) of its n eligible tokens (real and not
    special; a row with none selects none) — a fixed count rather than Bernoulli draws, so no batch
    is ever without MLM targets. Selected: 80% → [MASK], 10% → a random non-special id, 10% kept.
    Pass a `special_tokens_mask` that also covers positions outside the context to restrict MLM there.
    """
    eligible = attention_mask.bool() & ~special_tokens_mask.bool()
    n_eligible = eligible.sum(1)
    n_select = torch.where(n_eligible > 0, (n_eligible * probability).round().clamp_min(1), 0)
    # Random ranks among eligible positions: ineligible ones get score 2 (> any uniform) and sort last.
    scores = torch.rand(input_ids.shape, generator=generator).masked_fill(~eligible, 2.0)
    ranks = scores.argsort(1).argsort(1)
    selected = ranks < n_select.unsqueeze(1)

    action = torch.rand(input_ids.shape, generator=generator)
    to_mask = selected & (action < 0.8)
    to_random = selected & (action >= 0.8) & (action < 0.9)
    allowed = torch.ones(vocab_size, dtype=torch.bool)
    allowed[list(special_ids)] = False
    random_pool = allowed.nonzero().squeeze(1)
    random_ids = random_pool[torch.randint(len(random_pool), input_ids.shape, generator=generator)]

    mlm_input_ids = input_ids.masked_fill(to_mask, mask_token_id)
    mlm_input_ids = torch.where(to_random, random_ids, mlm_input_ids)
    mlm_labels = input_ids.masked_fill(~selected, -100)
    return mlm_input_ids, mlm_labels


# ---------------------------------------------------------------- JEPA

def _block_size(scale: torch.Tensor, lo: float, hi: float, n: int) -> int:
    return int(round((lo + (hi - lo) * scale.item()) * n))


def sample_blocks(real_len: int, num_targets: int, target_scale: Sequence[float], context_scale: Sequence[float],
                  min_keep: int, generator: torch.Generator) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """Draw one context block and `num_targets` target blocks as (start, size) inside [1, real_len).

    The returned blocks always leave >= min_keep context tokens once the targets are removed.
    """
    n, text = real_len, real_len - 1  # text positions are 1 .. n-1
    if text - num_targets < min_keep:
        raise ValueError(f"sequence of real length {n} is too short for JEPA masks: needs at least "
                         f"1 + num_targets({num_targets}) + min_keep({min_keep}) = {1 + num_targets + min_keep} tokens")

    def context_left(ctx: tuple[int, int], targets: list[tuple[int, int]]) -> int:
        keep = torch.zeros(n, dtype=torch.bool)
        keep[ctx[0]:ctx[0] + ctx[1]] = True
        for start, size in targets:
            keep[start:start + size] = False
        return int(keep.sum())

    for _ in range(MAX_TRIES):
        u = torch.rand(2 * num_targets + 2, generator=generator)
        targets = []
        for k in range(num_targets):
            size = min(max(1, _block_size(u[2 * k], *target_scale, n)), text)
            targets.append((1 + int(u[2 * k + 1].item() * (text - size + 1)), size))
        csize = min(max(1, _block_size(u[-2], *context_scale, n)), text)
        ctx = (1 + int(u[-1].item() * (text - csize + 1)), csize)
        if context_left(ctx, targets) >= min_keep:
            return ctx, targets
    # Fallback: whole text as context block; shrink the last draw's targets (keeping their starts
    # inside the range) until their total size leaves min_keep tokens.
    budget = text - min_keep
    sizes = [size for _, size in targets]
    while sum(sizes) > budget:
        k = max(range(num_targets), key=lambda i: sizes[i])
        sizes[k] -= 1
    targets = [(start, size) for (start, _), size in zip(targets, sizes)]
    return (1, text), targets


def jepa_masks(real_lengths: torch.Tensor, num_targets: int, target_scale: Sequence[float],
               context_scale: Sequence[float], min_keep: int,
               generator: torch.Generator | Sequence[torch.Generator]
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sequence multi-block masks as padded index lists.

    Returns context_idx (B, Kc), context_valid (B, Kc) bool, target_idx (B, Kt), target_valid (B, Kt)
    bool; indices are sorted positions, padded slots hold 0 with valid False. `generator` is one
    generator for the whole batch or one per sequence.
    """
    gens = list(generator) if isinstance(generator, (list, tuple)) else [generator] * len(real_lengths)
    contexts, targets = [], []
    for n, gen in zip(real_lengths.tolist(), gens):  # per-sequence loop: a handful of tensor ops each
        (c0, cs), blocks = sample_blocks(n, num_targets, target_scale, context_scale, min_keep, gen)
        is_target = torch.zeros(n, dtype=torch.bool)
        for t0, ts in blocks:
            is_target[t0:t0 + ts] = True
        in_context = torch.zeros(n, dtype=torch.bool)
        in_context[c0:c0 + cs] = True
        in_context &= ~is_target
        in_context[0] = True  # [CLS]
        contexts.append(in_context.nonzero().squeeze(1))
        targets.append(is_target.nonzero().squeeze(1))
    return (*_pad(contexts), *_pad(targets))


def _pad(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    idx = pad_sequence(rows, batch_first=True, padding_value=0)
    valid = pad_sequence([torch.ones(len(r), dtype=torch.bool) for r in rows], batch_first=True, padding_value=False)
    return idx, valid


# ---------------------------------------------------------------- collator

class PretrainCollator:
    """Stacks dataset items and draws the masks for one objective ("hybrid" or "mlm").

    Items are {"input_ids": LongTensor(L), "index": int} with an optional "attention_mask" (padding);
    rows of different lengths are right-padded with [PAD]. Returns `input_ids, attention_mask,
    mlm_input_ids, mlm_labels` (B, L), and for hybrid also `context_idx, context_valid, target_idx,
    target_valid`. With `shared_pass`, MLM positions are drawn inside the context only (so those MLM
    masks differ from the MLM-only run's, which is inherent to a shared pass).

    Call `set_epoch(e)` before creating each epoch's DataLoader iterator (workers copy the collator).
    """

    def __init__(self, tokenizer_or_ids: Any, mask_cfg: MaskConfig, seed: int, objective: str, shared_pass: bool = False):
        if objective not in OBJECTIVES:
            raise ValueError(f"objective={objective!r} is invalid: allowed {', '.join(OBJECTIVES)}")
        self.ids = tokenizer_or_ids if isinstance(tokenizer_or_ids, TokenIds) else TokenIds.from_tokenizer(tokenizer_or_ids)
        self.cfg, self.seed, self.objective = mask_cfg, seed, objective
        self.shared_pass = shared_pass and objective == "hybrid"
        self.special = torch.tensor(self.ids.special_ids, dtype=torch.long)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        input_ids = pad_sequence([it["input_ids"].long() for it in items], batch_first=True, padding_value=self.ids.pad_id)
        masks = [it.get("attention_mask", torch.ones(len(it["input_ids"]), dtype=torch.long)).long() for it in items]
        attention_mask = pad_sequence(masks, batch_first=True, padding_value=0)
        special = torch.isin(input_ids, self.special)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}

        if self.objective == "hybrid":
            c = self.cfg
            gens = [item_generator(self.seed, self.epoch, int(it["index"]), "jepa") for it in items]
            ctx_idx, ctx_valid, tgt_idx, tgt_valid = jepa_masks(attention_mask.sum(1), c.num_targets, c.target_scale,
                                                                c.context_scale, c.min_keep, gens)
            batch.update(context_idx=ctx_idx, context_valid=ctx_valid, target_idx=tgt_idx, target_valid=tgt_valid)
            if self.shared_pass:
                # Padded slots point one past the end (a spare column) so they cannot clear a real position.
                in_context = torch.zeros(special.shape[0], special.shape[1] + 1, dtype=torch.bool)
                in_context.scatter_(1, ctx_idx.masked_fill(~ctx_valid, special.shape[1]), True)
                special = special | ~in_context[:, :-1]

        mlm_ids, labels = [], []
        for row, it in enumerate(items):  # per-item generator: masks independent of batch composition
            gen = item_generator(self.seed, self.epoch, int(it["index"]), "mlm")
            ids, lab = mlm_mask(input_ids[row:row + 1], special[row:row + 1], attention_mask[row:row + 1],
                                self.ids.vocab_size, self.ids.mask_id, self.cfg.mlm_probability, gen, self.ids.special_ids)
            mlm_ids.append(ids)
            labels.append(lab)
        batch.update(mlm_input_ids=torch.cat(mlm_ids), mlm_labels=torch.cat(labels))
        return batch
