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
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from jepa_core.config import OBJECTIVES, MaskConfig

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


def _block_size(u: torch.Tensor, length: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Block size in [1, n − 1] for a uniform u in [0, 1) and real length n (float32 arithmetic)."""
    return ((lo + (hi - lo) * u) * length).round().long().clamp_min(1).minimum(length - 1)


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
        size = _block_size(u_size, length, lo, hi)
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


def static_widths(seq_len: int, cfg: MaskConfig) -> tuple[int, int]:
    """(Kc_max, Kt_max): the most context and target tokens `draw_blocks` can give a sequence of real
    length <= seq_len, so that static-shape batches can pad every batch to the same widths.

    Sizes grow with u (float rounding is monotone), so u = 1 bounds every draw. Per real length n:
      normal draw   context <= 1 + (largest context block), and <= n − (smallest target block) (targets
                    are never context); targets <= T·(largest target block), and
                    targets <= n − 1 − min_keep (they are disjoint from >= min_keep context tokens in [1, n));
      fallback      context = n − |target union| and the union holds the largest shrunk block, which is
                    >= min(smallest drawn block, ceil((n − 1 − min_keep) / T)) (the shrink stops at that sum);
                    impossible where every draw keeps (smallest context block) − T·(largest target block)
                    >= min_keep tokens (at the profiles' scales: every n > 54), so that bound is not applied there.
    """
    T, n = cfg.num_targets, torch.arange(1 + cfg.num_targets + cfg.min_keep, seq_len + 1)
    if len(n) == 0:
        raise ValueError(f"data.seq_len={seq_len} is too short for JEPA masks: needs at least "
                         f"1 + num_targets({T}) + min_keep({cfg.min_keep}) tokens")
    one, zero = torch.ones(len(n)), torch.zeros(len(n))
    ctx_max, tgt_max = _block_size(one, n, *cfg.context_scale), _block_size(one, n, *cfg.target_scale)
    tgt_min, budget = _block_size(zero, n, *cfg.target_scale), n - 1 - cfg.min_keep
    fallback_ctx = n - tgt_min.minimum(-(-budget // T))
    fallback_ctx[_block_size(zero, n, *cfg.context_scale) - T * tgt_max >= cfg.min_keep] = 0
    kc = (1 + ctx_max).minimum(n - tgt_min).maximum(fallback_ctx).max()
    kt = (T * tgt_max).minimum(budget).max()
    return int(kc), int(kt)


def mlm_width(seq_len: int, probability: float) -> int:
    """The most tokens `mlm_mask` selects in a row of <= seq_len eligible tokens (same float32 arithmetic)."""
    return max(1, int((torch.tensor([seq_len]) * probability).round()))


def jepa_masks(real_lengths: torch.Tensor, num_targets: int, target_scale: Sequence[float],
               context_scale: Sequence[float], min_keep: int,
               generator: torch.Generator | Sequence[torch.Generator],
               widths: tuple[int, int] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sequence multi-block masks as padded index lists.

    Returns context_idx (B, Kc), context_valid (B, Kc) bool, target_idx (B, Kt), target_valid (B, Kt)
    bool; indices are sorted positions, valid slots first, padded slots hold 0. Kc, Kt are the batch's
    largest counts, or `widths` (Kc, Kt) when given (static shapes; a count above them is an error).
    `generator` is one generator for the whole batch or one per sequence.
    """
    c_start, c_size, t_start, t_size = draw_blocks(real_lengths, num_targets, target_scale, context_scale,
                                                   min_keep, generator)
    positions = torch.arange(int(real_lengths.max()))
    is_target = _covers(t_start, t_size, positions).any(1)  # (B, L)
    in_context = _covers(c_start, c_size, positions) & ~is_target
    in_context[:, 0] = True  # [CLS]
    kc, kt = (None, None) if widths is None else widths
    return (*_index_lists(in_context, kc), *_index_lists(is_target, kt))


def _index_lists(mask: torch.Tensor, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Bool (B, L) -> positions of the True entries, in order, padded with 0: (idx, valid) (B, K);
    K = the largest count, or `width`."""
    count = mask.sum(1)
    width = int(count.max()) if width is None else width
    if int(count.max()) > width:
        raise AssertionError(f"a mask has {int(count.max())} positions, more than the static width {width}: "
                             "static_widths is wrong")
    mask = F.pad(mask, (0, max(0, width - mask.shape[1])))  # short rows: argsort needs width columns
    order = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)  # True positions first, in order
    valid = torch.arange(width) < count.unsqueeze(1)
    return order[:, :width].masked_fill(~valid, 0), valid


# ---------------------------------------------------------------- collator

class PretrainCollator:
    """Stacks dataset items and draws the masks for one objective ("hybrid" or "mlm").

    Items are {"input_ids": LongTensor(L), "index": int} with an optional "attention_mask" (padding);
    rows of different lengths are right-padded with [PAD]. Returns `input_ids, attention_mask,
    mlm_input_ids, mlm_labels` (B, L), `mlm_positions` (N,) (flat indices of the masked tokens), and for
    hybrid also `context_idx, context_valid, target_idx, target_valid`. With `shared_pass`, MLM positions
    are drawn inside the context only (so those MLM masks differ from the MLM-only run's, which is inherent
    to a shared pass).

    With `static_shapes` (train.static_shapes) every batch of B rows has the same shapes, so that a
    compiled encoder is not recompiled for each batch's mask counts: rows are padded to `seq_len`,
    context/target lists to `static_widths`, and mlm_positions to B · `mlm_width`, its padded entries
    pointing at a token whose label is −100 (the losses ignore it). The draws are the same, so the
    valid entries equal those of the default collator.

    Call `set_epoch(e)` before creating each epoch's DataLoader iterator (workers copy the collator).
    """

    def __init__(self, tokenizer_or_ids: Any, mask_cfg: MaskConfig, seed: int, objective: str,
                 shared_pass: bool = False, static_shapes: bool = False, seq_len: int | None = None):
        if objective not in OBJECTIVES:
            raise ValueError(f"objective={objective!r} is invalid: allowed {', '.join(OBJECTIVES)}")
        self.ids = (tokenizer_or_ids if isinstance(tokenizer_or_ids, TokenIds)
                    else TokenIds.from_tokenizer(tokenizer_or_ids))
        self.cfg, self.seed, self.objective = mask_cfg, seed, objective
        self.shared_pass = shared_pass and objective == "hybrid"
        self.special = torch.tensor(self.ids.special_ids, dtype=torch.long)
        self.epoch = 0
        self.seq_len = seq_len
        if static_shapes and seq_len is None:
            raise ValueError("PretrainCollator(static_shapes=True) needs seq_len (data.seq_len)")
        self.static_shapes = static_shapes
        self.widths = static_widths(seq_len, mask_cfg) if static_shapes and objective == "hybrid" else None

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
                                                                c.context_scale, c.min_keep, gens, self.widths)
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
        if self.static_shapes:  # after the draws: mlm_mask draws per column, so padding first would change them
            self._pad_rows(batch)
        # Flat (B·L) indices of the masked tokens, found here on the CPU: the model gathers them with
        # index_select, where a boolean mask would make a GPU wait for the host to learn their count.
        batch["mlm_positions"] = (batch["mlm_labels"].view(-1) != -100).nonzero().squeeze(1)
        if self.static_shapes:
            batch["mlm_positions"] = self._pad_positions(batch["mlm_positions"], batch["mlm_labels"])
        return batch

    def _pad_rows(self, batch: dict[str, torch.Tensor]) -> None:
        """Right-pad the (B, L) tensors to seq_len columns (padding tokens, label −100), in place."""
        extra = self.seq_len - batch["input_ids"].shape[1]
        if extra < 0:
            raise ValueError(f"a row of {batch['input_ids'].shape[1]} tokens is longer than seq_len={self.seq_len}")
        fill = {"input_ids": self.ids.pad_id, "attention_mask": 0, "mlm_input_ids": self.ids.pad_id, "mlm_labels": -100}
        for key, value in fill.items():
            batch[key] = F.pad(batch[key], (0, extra), value=value)

    def _pad_positions(self, positions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """positions padded to B · mlm_width with the flat index of an unselected token (label −100)."""
        width = labels.shape[0] * mlm_width(self.seq_len, self.cfg.mlm_probability)
        if len(positions) > width:
            raise AssertionError(f"{len(positions)} MLM positions, more than the static width {width}")
        unselected = (labels.view(-1) == -100).nonzero()
        if len(unselected) == 0:
            raise ValueError("static_shapes: every token of the batch is an MLM target, none is left to pad with")
        return F.pad(positions, (0, width - len(positions)), value=int(unselected[0]))
