"""Masks for pre-training: MLM 80/10/10 corruption, JEPA multi-block masks, and the batch collator.

Every random draw for dataset item i comes from its own `torch.Generator`, seeded by a stable hash
of (seed, epoch, i, stream). Masks therefore do not depend on batch composition, DataLoader worker,
or resume point (for rows of equal padded length, as packed blocks are), and the MLM masks of the hybrid
run equal those of the MLM-only run (the MLM and JEPA draws use separate streams, so adding JEPA
masks does not shift the MLM draws).

JEPA mask layout (docs/PROTOCOL.md §4, 1-D multi-block, per sequence of real length n):
  - position 0 ([CLS]) is never a target and is ALWAYS in the context: the student input then starts
    with [CLS] like every downstream input, and [CLS] has no local span to predict;
  - `num_targets` contiguous target blocks, each round(U(target_scale)·n) tokens inside [1, n);
    target blocks may overlap each other (as in I-JEPA); the target set is their union;
  - one contiguous context block of round(U(context_scale)·n) tokens inside [1, n);
  - context := {0} ∪ (context block − targets): context and targets are disjoint by construction;
  - the first of MAX_TRIES candidate draws that leaves >= `min_keep` text tokens (not counting
    [CLS]) in the context is kept; if none does, the whole text becomes the context block and the
    target blocks shrink until the guarantee holds.
Only the random draws are per item; everything after them is vectorised over the batch.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

from .config import OBJECTIVES, MaskConfig

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


def _uniform(shape: tuple[int, ...], generator: torch.Generator | Sequence[torch.Generator], rows: int) -> torch.Tensor:
    """(rows, *shape) uniforms from one generator, or from one generator per row: then a row's draws
    do not depend on the other rows, and everything after the draws can be vectorised over the batch."""
    if isinstance(generator, torch.Generator):
        return torch.rand((rows, *shape), generator=generator)
    if len(generator) != rows:
        raise ValueError(f"got {len(generator)} generators for {rows} sequences")
    return torch.stack([torch.rand(shape, generator=g) for g in generator])


# ---------------------------------------------------------------- MLM

def mlm_mask(input_ids: torch.Tensor, special_tokens_mask: torch.Tensor, attention_mask: torch.Tensor,
             vocab_size: int, mask_token_id: int, probability: float,
             generator: torch.Generator | Sequence[torch.Generator],
             special_ids: Sequence[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT corruption of (B, L) ids: returns (mlm_input_ids, mlm_labels), labels −100 where not selected.

    Each row selects exactly max(1, round(probability · n)) of its n eligible tokens (real and not
    special; a row with none selects none) — a fixed count rather than Bernoulli draws, so no batch
    is ever without MLM targets. Selected: 80% → [MASK], 10% → a random id not in `special_ids`,
    10% kept. Pass a `special_tokens_mask` that also covers positions outside the context to restrict
    MLM there. `generator`: one for the batch or one per row.
    """
    eligible = attention_mask.bool() & ~special_tokens_mask.bool()
    n_eligible = eligible.sum(1)
    n_select = torch.where(n_eligible > 0, (n_eligible * probability).round().clamp_min(1), 0)
    score, action, pick = _uniform((3, input_ids.shape[1]), generator, input_ids.shape[0]).unbind(1)
    # Random ranks among eligible positions: ineligible ones get score 2 (> any uniform) and sort last.
    ranks = score.masked_fill(~eligible, 2.0).argsort(1).argsort(1)
    selected = ranks < n_select.unsqueeze(1)

    to_mask = selected & (action < 0.8)
    to_random = selected & (action >= 0.8) & (action < 0.9)
    allowed = torch.ones(vocab_size, dtype=torch.bool)
    allowed[torch.tensor(list(special_ids), dtype=torch.long)] = False
    pool = allowed.nonzero().squeeze(1)
    random_ids = pool[(pick * len(pool)).long().clamp_max(len(pool) - 1)]

    mlm_input_ids = input_ids.masked_fill(to_mask, mask_token_id)
    mlm_input_ids = torch.where(to_random, random_ids, mlm_input_ids)
    mlm_labels = input_ids.masked_fill(~selected, -100)
    return mlm_input_ids, mlm_labels


# ---------------------------------------------------------------- JEPA

def _covers(start: torch.Tensor, size: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Block membership: start, size (...) -> bool (..., len(positions))."""
    return (positions >= start.unsqueeze(-1)) & (positions < (start + size).unsqueeze(-1))


def draw_blocks(real_lengths: torch.Tensor, num_targets: int, target_scale: Sequence[float],
                context_scale: Sequence[float], min_keep: int,
                generator: torch.Generator | Sequence[torch.Generator]
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw the blocks of each sequence inside [1, n): context_start, context_size (B,),
    target_start, target_size (B, num_targets); they leave >= min_keep context tokens outside the targets.

    All MAX_TRIES candidate draws are made up front and checked at once; each row keeps its first
    candidate that satisfies min_keep (rows where none does take the shrink fallback).
    """
    n = real_lengths.long()
    too_short = n - 1 - num_targets < min_keep
    if too_short.any():
        bad = int(n[too_short][0])
        raise ValueError(f"sequence of real length {bad} is too short for JEPA masks: needs at least "
                         f"1 + num_targets({num_targets}) + min_keep({min_keep}) = {1 + num_targets + min_keep} tokens")
    B, T = len(n), num_targets
    u = _uniform((MAX_TRIES, 2 * T + 2), generator, B)  # per try: T target sizes, T target starts, context size, start
    length, text = n.view(B, 1, 1), (n - 1).view(B, 1, 1)

    def blocks(u_size: torch.Tensor, u_start: torch.Tensor, lo: float, hi: float) -> tuple[torch.Tensor, torch.Tensor]:
        size = ((lo + (hi - lo) * u_size) * length).round().long().clamp_min(1).minimum(text)
        return 1 + (u_start * (text - size + 1)).long(), size  # start + size <= n

    t_start, t_size = blocks(u[..., :T], u[..., T:2 * T], *target_scale)  # (B, R, T)
    c_start, c_size = blocks(u[..., 2 * T:2 * T + 1], u[..., 2 * T + 1:], *context_scale)  # (B, R, 1)
    c_start, c_size = c_start.squeeze(2), c_size.squeeze(2)
    positions = torch.arange(int(n.max()))
    in_targets = _covers(t_start, t_size, positions).any(2)  # (B, R, L)
    left = (_covers(c_start, c_size, positions) & ~in_targets).sum(2)  # (B, R)
    ok = left >= min_keep
    first = ok.int().argmax(1)  # first satisfying try (0 when none: handled below)
    rows = torch.arange(B)
    c_start, c_size = c_start[rows, first], c_size[rows, first]
    t_start, t_size = t_start[rows, first], t_size[rows, first]

    # Fallback (rare): whole text as context block, target blocks shrunk until min_keep tokens remain.
    for b in (~ok.any(1)).nonzero().flatten().tolist():
        sizes, budget = t_size[b].tolist(), int(n[b]) - 1 - min_keep
        while sum(sizes) > budget:
            sizes[sizes.index(max(sizes))] -= 1
        t_size[b] = torch.tensor(sizes)
        c_start[b], c_size[b] = 1, int(n[b]) - 1
    return c_start, c_size, t_start, t_size


def jepa_masks(real_lengths: torch.Tensor, num_targets: int, target_scale: Sequence[float],
               context_scale: Sequence[float], min_keep: int,
               generator: torch.Generator | Sequence[torch.Generator]
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sequence multi-block masks as padded index lists.

    Returns context_idx (B, Kc), context_valid (B, Kc) bool, target_idx (B, Kt), target_valid (B, Kt)
    bool; indices are sorted positions, valid slots first, padded slots hold 0. `generator` is one
    generator for the whole batch or one per sequence.
    """
    c_start, c_size, t_start, t_size = draw_blocks(real_lengths, num_targets, target_scale, context_scale,
                                                   min_keep, generator)
    positions = torch.arange(int(real_lengths.max()))
    is_target = _covers(t_start, t_size, positions).any(1)  # (B, L)
    in_context = _covers(c_start, c_size, positions) & ~is_target
    in_context[:, 0] = True  # [CLS]
    return (*_index_lists(in_context), *_index_lists(is_target))


def _index_lists(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bool (B, L) -> positions of the True entries, in order, padded with 0: (idx, valid) (B, K)."""
    count = mask.sum(1)
    order = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)  # True positions first, in order
    valid = torch.arange(int(count.max())) < count.unsqueeze(1)
    return order[:, :valid.shape[1]].masked_fill(~valid, 0), valid


# ---------------------------------------------------------------- collator

class PretrainCollator:
    """Stacks dataset items and draws the masks for one objective ("hybrid" or "mlm").

    Items are {"input_ids": LongTensor(L), "index": int} with an optional "attention_mask" (padding);
    rows of different lengths are right-padded with [PAD]. Returns `input_ids, attention_mask,
    mlm_input_ids, mlm_labels` (B, L), `mlm_positions` (N,) (flat indices of the masked tokens), and for
    hybrid also `context_idx, context_valid, target_idx, target_valid`. With `shared_pass`, MLM positions
    are drawn inside the context only (so those MLM masks differ from the MLM-only run's, which is inherent
    to a shared pass).

    Call `set_epoch(e)` before creating each epoch's DataLoader iterator (workers copy the collator).
    """

    def __init__(self, tokenizer_or_ids: Any, mask_cfg: MaskConfig, seed: int, objective: str,
                 shared_pass: bool = False):
        if objective not in OBJECTIVES:
            raise ValueError(f"objective={objective!r} is invalid: allowed {', '.join(OBJECTIVES)}")
        self.ids = (tokenizer_or_ids if isinstance(tokenizer_or_ids, TokenIds)
                    else TokenIds.from_tokenizer(tokenizer_or_ids))
        self.cfg, self.seed, self.objective = mask_cfg, seed, objective
        self.shared_pass = shared_pass and objective == "hybrid"
        self.special = torch.tensor(self.ids.special_ids, dtype=torch.long)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        input_ids = pad_sequence([it["input_ids"].long() for it in items], batch_first=True,
                                 padding_value=self.ids.pad_id)
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

        gens = [item_generator(self.seed, self.epoch, int(it["index"]), "mlm") for it in items]
        batch["mlm_input_ids"], batch["mlm_labels"] = mlm_mask(input_ids, special, attention_mask, self.ids.vocab_size,
                                                               self.ids.mask_id, self.cfg.mlm_probability, gens,
                                                               self.ids.special_ids)
        # Flat (B·L) indices of the masked tokens, found here on the CPU: the model gathers them with
        # index_select, where a boolean mask would make a GPU wait for the host to learn their count.
        batch["mlm_positions"] = (batch["mlm_labels"].view(-1) != -100).nonzero().squeeze(1)
        return batch
