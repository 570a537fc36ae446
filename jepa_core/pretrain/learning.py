"""The learning check on the same tokens (issue 21): did the encoder learn more than token frequencies?

Every model, whatever its objective (`hybrid-shared` included, whose training pass scores only the
context positions), gets the same full MLM pass over the fixed validation batches (`position_losses`: the
encoder on the 80/10/10-corrupted input, the MLM head at every masked position). Everything the check
reports is computed on exactly those positions, so `loss_tokens == entropy_tokens`:

- `validation_mlm_loss`: the mean cross-entropy of the model;
- `unigram_entropy`: the loss on those positions of the model that knows only token frequencies, q = the
  unigram distribution of the TRAINING split (`unigram_distribution`; +1 count for every non-special id, so
  that no validation token has probability 0): its cross-entropy on these labels. Why not the entropy of
  the labels' own frequencies: on the few thousand positions of the validation batches that in-sample
  entropy is biased far low (144 positions of the smoke run: 4.4 nats against 6.9 for the split), and a
  frequency model cannot know the validation labels' frequencies anyway;
- `context_free_loss`: the loss of the best model that sees no context but does see the input token at
  its own position (`context_free_losses`): at a [MASK] it predicts q; at a visible token v (10% kept,
  10% random of the masked positions: it cannot tell which) it predicts "v with probability KEPT_SHARE,
  else q". Copying the visible token alone beats the unigram entropy by ~0.55 nats, so a gap measured
  from the entropy credits a model with what it reads off its own input; the gap from this baseline
  (`gap_vs_context_free`) does not;
- `mask_loss`: the model's loss on the [MASK]-replaced positions alone (the 80% where the input says
  nothing), next to `mask_unigram_loss`, q's loss there.
"""
from __future__ import annotations

from typing import Any, Callable, ContextManager

import numpy as np
import torch
import torch.nn.functional as F

from jepa_core.config import Params
from jepa_core.model.masking import PretrainCollator
from jepa_core.pretrain.batches import fixed_batches

# of the masked positions whose input is not [MASK], the share that kept its own token (80/10/10: 10 of 20)
KEPT_SHARE = 0.5


def unigram_distribution(blocks: np.ndarray, special_ids, vocab_size: int) -> np.ndarray:
    """q over the vocabulary: token frequencies of `blocks` (the training split) without special tokens,
    plus one count for every non-special id (add-one smoothing: a validation token unseen in training gets a
    small probability, not 0); special ids get 0."""
    counts = np.bincount(np.asarray(blocks, dtype=np.int64).ravel(), minlength=vocab_size)[:vocab_size]
    counts = counts.astype(np.float64) + 1.0
    counts[[i for i in special_ids if i < vocab_size]] = 0.0
    return counts / counts.sum()


def check_batches(validation_blocks: np.ndarray, tokenizer: Any, params: Params, seed: int) -> list[dict]:
    """The validation batches of the check: train.eval_batches fixed batches collated with the MLM-only
    collator, whatever the objective, so every model of a seed is scored on the same masked positions (a
    hybrid's MLM masks equal the MLM run's; a shared-pass hybrid's training masks lie inside its context)."""
    t = params.train
    collator = PretrainCollator(tokenizer, params.mask, seed, "mlm", False, t.static_shapes, params.data.seq_len)
    return fixed_batches(validation_blocks, collator, t.eval_batches, t.batch_size)


@torch.no_grad()
def position_losses(core: Any, batches: list[dict], device: torch.device,
                    autocast: Callable[[], ContextManager] | None = None) -> dict[str, np.ndarray]:
    """One full MLM pass of `core` (a PretrainModel: its `encoder` and `mlm_head`) over the batches, in eval
    mode: per masked position (mlm_labels != −100) its label, its input token and the model's
    cross-entropy (float32)."""
    was_training = core.training
    core.eval()
    labels, inputs, losses = [], [], []
    try:
        for vb in batches:
            ids, att = vb["mlm_input_ids"].to(device), vb["attention_mask"].to(device)
            target = vb["mlm_labels"].to(device)
            with autocast() if autocast is not None else torch.autocast(device.type, enabled=False):
                hidden = core.encoder(input_ids=ids, attention_mask=att).last_hidden_state
            selected = target != -100
            logits = core.mlm_head(hidden[selected].float()).float()
            losses.append(F.cross_entropy(logits, target[selected], reduction="none").cpu())
            labels.append(target[selected].cpu())
            inputs.append(ids[selected].cpu())
    finally:
        core.train(was_training)
    cat = lambda xs, dtype: torch.cat(xs).numpy().astype(dtype) if xs else np.empty(0, dtype)  # noqa: E731
    return {"labels": cat(labels, np.int64), "inputs": cat(inputs, np.int64), "losses": cat(losses, np.float64)}


def context_free_losses(labels: np.ndarray, inputs: np.ndarray, mask_id: int, q: np.ndarray,
                        kept_share: float = KEPT_SHARE) -> np.ndarray:
    """Per position, the loss of the context-free predictor: q (`unigram_distribution`) at a [MASK];
    kept_share·[label = visible token] + (1 − kept_share)·q(label) elsewhere."""
    labels, inputs = np.asarray(labels, dtype=np.int64), np.asarray(inputs, dtype=np.int64)
    p = np.asarray(q, dtype=np.float64)[labels]
    visible = inputs != mask_id
    p = np.where(visible, kept_share * (inputs == labels) + (1 - kept_share) * p, p)
    return -np.log(p)


def learning_check(positions: dict[str, np.ndarray] | None, mask_id: int, q: np.ndarray,
                   training_validation: dict[str, Any] | None = None) -> dict[str, Any]:
    """train_summary.json's `learning` section from `position_losses` (module docstring); None values when
    there were no validation batches. `training_validation`: the objective's own validation record, kept as
    `objective_validation_mlm_loss` (for hybrid-shared it scores only context positions)."""
    own = (training_validation or {}).get("mlm_loss")
    if not positions or len(positions["labels"]) == 0:
        return {"validation_mlm_loss": None, "unigram_entropy": None, "gap": None, "loss_tokens": 0,
                "entropy_tokens": 0, "objective_validation_mlm_loss": own}
    labels, inputs, losses = positions["labels"], positions["inputs"], positions["losses"]
    frequency_losses = -np.log(np.asarray(q, dtype=np.float64)[labels])
    loss, h = float(losses.mean()), float(frequency_losses.mean())
    free = context_free_losses(labels, inputs, mask_id, q)
    masked = inputs == mask_id
    return {"validation_mlm_loss": loss, "unigram_entropy": h, "gap": h - loss,
            "loss_tokens": int(len(losses)), "entropy_tokens": int(len(labels)),
            "context_free_loss": float(free.mean()), "gap_vs_context_free": float(free.mean()) - loss,
            "mask_loss": float(losses[masked].mean()) if masked.any() else None,
            "mask_unigram_loss": float(frequency_losses[masked].mean()) if masked.any() else None,
            "mask_tokens": int(masked.sum()), "objective_validation_mlm_loss": own}
