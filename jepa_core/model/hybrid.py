"""The pre-training model: a HF encoder (BERT or ModernBERT), a sparse tied MLM head, the JEPA predictor, EMA target.

One training step, I-JEPA style (`PretrainModel.forward`):
  targets = target_forward(batch)    EMA encoder, no grad, eval mode, full clean sequence
  ctx     = context_forward(batch)   student sees ONLY the context tokens (original position ids)
  mlm     = mlm_forward(batch)       student pass over the MLM-corrupted sequence, head at masked positions
  loss    = balancer(jepa_loss(predictor(ctx), targets), mlm_loss)
With jepa.shared_pass one student pass over the MLM-corrupted context tokens feeds both losses.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from jepa_core.config import OBJECTIVES, Params
from jepa_core.model.encoder import build_encoder, native_bf16
from jepa_core.model.heads import Predictor, SparseMLMHead, gather_positions, masked_mean
from jepa_core.model.losses import LossBalancer, jepa_loss


def ema_momentum(step: int, total_steps: int, start: float, end: float) -> float:
    """Linear schedule from `start` at step 0 to `end` at `total_steps` (held at `end` after)."""
    frac = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return start + (end - start) * frac


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """θ_target ← m·θ_target + (1 − m)·θ_online, in place over all parameters (same module structure)."""
    t_params, o_params = list(target.parameters()), list(online.parameters())
    if len(t_params) != len(o_params):
        raise ValueError(f"ema_update: target has {len(t_params)} parameter tensors, online has {len(o_params)}")
    torch._foreach_lerp_(t_params, o_params, 1.0 - momentum)  # one pass: t + (1 − m)(o − t)


class PretrainModel(nn.Module):
    """Encoder + sparse MLM head; for objective "hybrid" also predictor, EMA target encoder, λ balancer.

    `forward(batch)` returns a dict of 0-dim tensors (call .item() to log) plus one (B, H) tensor:
      loss          the total to back-propagate (the only entry with a graph)
      mlm_loss      detached
      jepa_loss, lambda, target_std   hybrid only (target_std: mean per-dim std of the target latents
                    over real target tokens — a collapse signal)
      context_embedding  (B, H) detached mean of the student's hidden states over its real input tokens
                    (hybrid: context tokens; mlm: the whole sequence) — for a batch effective-rank signal
    """

    def __init__(self, params: Params, objective: str, vocab_size: int, pad_token_id: int):
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"objective={objective!r} is invalid: allowed {', '.join(OBJECTIVES)}")
        m, o = params.model, params.jepa
        self.objective = objective
        self.shared_pass = o.shared_pass
        self.jepa_kind = o.jepa_loss
        self.target_layers = o.target_layers
        self.target_precision = o.target_precision
        self.encoder = build_encoder(m, vocab_size, pad_token_id)
        self.mlm_head = SparseMLMHead(self.encoder)
        if objective == "hybrid":
            self.predictor = Predictor(m.hidden, m.predictor_hidden, m.predictor_layers, m.predictor_heads,
                                       m.max_position, m.init_std)
            self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False).eval()
            self.balancer = LossBalancer(o.lambda_mode, o.fixed_lambda)

    def train(self, mode: bool = True) -> "PretrainModel":
        super().train(mode)
        if self.objective == "hybrid":
            self.target_encoder.eval()  # the EMA target never uses dropout
        return self

    # ------------------------------------------------------------ the three passes

    def target_bf16(self, device_type: str) -> bool:
        """Whether the target pass runs under bf16 autocast (jepa.target_precision; auto: where native)."""
        return self.target_precision == "bf16" or (self.target_precision == "auto" and native_bf16(device_type))

    @torch.no_grad()
    def target_forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Target latents (B, Kt, H): parameter-free LayerNorm of the EMA encoder's last layer (or the
        mean of its top-K layers) on the full clean sequence, gathered at target_idx."""
        k, ids = self.target_layers, batch["input_ids"]
        with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=self.target_bf16(ids.device.type)):
            out = self.target_encoder(input_ids=ids, attention_mask=batch["attention_mask"], output_hidden_states=k > 1)
        h = out.last_hidden_state.float() if k == 1 else torch.stack(out.hidden_states[-k:]).float().mean(0)
        h = F.layer_norm(h, h.shape[-1:])
        return gather_positions(h, batch["target_idx"])

    def context_forward(self, batch: dict[str, torch.Tensor], input_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Student hidden states (B, Kc, H) of the context tokens alone (token dropping): the other
        tokens are not fed at all; position ids are the original positions; padded slots masked."""
        ids = batch["input_ids"] if input_ids is None else input_ids
        idx = batch["context_idx"]
        return self.encoder(input_ids=gather_positions(ids, idx), position_ids=idx,
                            attention_mask=batch["context_valid"].long()).last_hidden_state

    def mlm_forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(MLM loss, student hidden states (B, L, H)) of a full pass over mlm_input_ids."""
        h = self.encoder(input_ids=batch["mlm_input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        return self._masked_lm_loss(h, batch["mlm_labels"], batch.get("mlm_positions")), h

    def _masked_lm_loss(self, hidden: torch.Tensor, labels: torch.Tensor, positions: torch.Tensor | None = None
                        ) -> torch.Tensor:
        """MLM loss at the positions whose label is not −100; `positions` (the collator's flat indices
        of those tokens) avoids the host sync of boolean indexing on a GPU."""
        if positions is None:
            selected = labels != -100
            return self.mlm_head.loss(hidden[selected], labels[selected])
        return self.mlm_head.loss(hidden.flatten(0, 1).index_select(0, positions),
                                  labels.flatten().index_select(0, positions))

    # ------------------------------------------------------------ the step

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.objective == "mlm":
            l_mlm, h = self.mlm_forward(batch)
            return {"loss": l_mlm, "mlm_loss": l_mlm.detach(),
                    "context_embedding": masked_mean(h.detach(), batch["attention_mask"])}

        targets = self.target_forward(batch)
        if self.shared_pass:  # one pass over the corrupted context; MLM positions were drawn inside it
            ctx = self.context_forward(batch, batch["mlm_input_ids"])
            labels = gather_positions(batch["mlm_labels"], batch["context_idx"])
            labels = labels.masked_fill(~batch["context_valid"], -100)
            l_mlm = self._masked_lm_loss(ctx, labels)
        else:  # the paper: a full MLM pass plus a clean context pass
            l_mlm, _ = self.mlm_forward(batch)
            ctx = self.context_forward(batch)
        pred = self.predictor(ctx, batch["context_idx"], batch["context_valid"], batch["target_idx"],
                              batch["target_valid"])
        l_jepa = jepa_loss(pred, targets, batch["target_valid"], self.jepa_kind)
        total, lam = self.balancer(l_jepa, l_mlm)
        return {"loss": total, "mlm_loss": l_mlm.detach(), "jepa_loss": l_jepa.detach(), "lambda": lam,
                "target_std": targets[batch["target_valid"]].std(0).mean(),
                "context_embedding": masked_mean(ctx.detach(), batch["context_valid"])}

    # ------------------------------------------------------------ EMA and export

    def update_target(self, momentum: float) -> None:
        """EMA step of the target encoder toward the student (nothing to do for objective "mlm")."""
        if self.objective == "hybrid":
            ema_update(self.target_encoder, self.encoder, momentum)

    def encoder_for_export(self) -> PreTrainedModel:
        """The student encoder (the one the MLM head trains, comparable across objectives), unwrapped
        from torch.compile if needed, ready for `save_pretrained`."""
        return getattr(self.encoder, "_orig_mod", self.encoder)
