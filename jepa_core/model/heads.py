"""What sits on the encoder during pre-training: the sparse tied MLM head and the JEPA predictor, and the
masked mean both the trainer's collapse signal and mean pooling use."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, PreTrainedModel
from transformers.masking_utils import create_bidirectional_mask
from transformers.models.bert.modeling_bert import BertEncoder, BertPredictionHeadTransform
from transformers.models.modernbert.modeling_modernbert import ModernBertPredictionHead

from jepa_core.model.encoder import init_bert_like
from jepa_core.model.kernels import ATTENTION, linear_cross_entropy


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x (B, K, H) over the mask's (B, K) slots -> (B, H); a row without slots -> 0."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp(min=1)


def gather_positions(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, L, ...) at positions idx (B, K) -> (B, K, ...)."""
    return x.take_along_dim(idx.view(*idx.shape, *([1] * (x.dim() - 2))), dim=1)


class SparseMLMHead(nn.Module):
    """The encoder architecture's own MLM head, applied only to the gathered hidden states of masked
    tokens: (N, H) → (N, V). Computing logits for ~15% of the tokens instead of all of them saves most
    of the vocab projection's cost.
      bert        BertLMPredictionHead: dense → gelu → LayerNorm → decoder tied to the input embeddings + bias
      modernbert  ModernBertPredictionHead: dense → gelu → LayerNorm (no biases) → the same tied decoder + bias
    Initialised as the stock *ForMaskedLM initialises it."""

    def __init__(self, encoder: PreTrainedModel):
        super().__init__()
        config = encoder.config
        self.model_type = config.model_type
        if self.model_type == "bert":
            self.transform = BertPredictionHeadTransform(config)
            init_bert_like(self.transform, config.initializer_range)
        elif self.model_type == "modernbert":
            self.transform = ModernBertPredictionHead(config)
            # ModernBERT's own init (truncated normal, dense scaled by 1/sqrt(2·layers)); apply() visits
            # children first, as post_init does, so the head's rule has the last word over the Linear's
            self.transform.apply(encoder._init_weights)
        else:
            raise ValueError(f"SparseMLMHead: no head for model_type={self.model_type!r}")
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        # A tuple is not registered as a submodule: the tied weight belongs to the encoder alone, so
        # it appears once in parameters() and state_dict() (safetensors rejects aliased tensors).
        self._tied = (encoder.get_input_embeddings(),)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(self.transform(hidden), self._tied[0].weight, self.bias)

    def loss(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of forward(hidden) (N, H) against labels (N,), without keeping the logits."""
        return linear_cross_entropy(self.transform(hidden), self._tied[0].weight, self.bias, labels)

    @torch.no_grad()
    def load_from_hf(self, for_masked_lm: nn.Module) -> None:
        """Copy the head of a transformers BertForMaskedLM / ModernBertForMaskedLM (its decoder weight is
        the tied embedding)."""
        if self.model_type == "bert":
            transform, decoder = for_masked_lm.cls.predictions.transform, for_masked_lm.cls.predictions.decoder
        else:
            transform, decoder = for_masked_lm.head, for_masked_lm.decoder
        self.transform.load_state_dict(transform.state_dict())
        self.bias.copy_(decoder.bias)


class Predictor(nn.Module):
    """Narrow transformer that predicts target latents from context latents.

    Context states are projected to `pred_hidden`, target slots are a learned mask token; both get a
    learned embedding of their original position. Padded slots are hidden by the attention mask.
    Dropout is 0 (I-JEPA's predictor has none). Built from a BertEncoder (post-LN blocks, SDPA).
    """

    def __init__(self, encoder_hidden: int, pred_hidden: int, depth: int, heads: int, max_position: int,
                 init_std: float = 0.02):
        super().__init__()
        self.config = BertConfig(
            vocab_size=1, hidden_size=pred_hidden, num_hidden_layers=depth, num_attention_heads=heads,
            intermediate_size=4 * pred_hidden, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
            max_position_embeddings=max_position, attn_implementation=ATTENTION,
        )
        self.in_proj = nn.Linear(encoder_hidden, pred_hidden)
        self.position = nn.Embedding(max_position, pred_hidden)
        self.mask_token = nn.Parameter(torch.zeros(pred_hidden))
        self.norm = nn.LayerNorm(pred_hidden, eps=self.config.layer_norm_eps)
        self.blocks = BertEncoder(self.config)
        self.out_proj = nn.Linear(pred_hidden, encoder_hidden)
        init_bert_like(self, init_std)
        nn.init.normal_(self.mask_token, std=init_std)

    def forward(self, context: torch.Tensor, context_idx: torch.Tensor, context_valid: torch.Tensor,
                target_idx: torch.Tensor, target_valid: torch.Tensor) -> torch.Tensor:
        """context (B, Kc, H) at positions context_idx -> predictions (B, Kt, H) at target_idx."""
        x_context = self.in_proj(context) + self.position(context_idx)
        x_target = self.mask_token + self.position(target_idx)
        x = self.norm(torch.cat([x_context, x_target], dim=1))
        valid = torch.cat([context_valid, target_valid], dim=1)
        mask = create_bidirectional_mask(config=self.config, inputs_embeds=x, attention_mask=valid)
        h = self.blocks(x, attention_mask=mask).last_hidden_state
        return self.out_proj(h[:, context.shape[1]:])
