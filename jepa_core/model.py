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
import functools

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertModel, ModernBertConfig, ModernBertModel, PretrainedConfig, PreTrainedModel
from transformers.masking_utils import create_bidirectional_mask
from transformers.models.bert.modeling_bert import BertEncoder, BertPredictionHeadTransform
from transformers.models.modernbert.modeling_modernbert import ModernBertPredictionHead

from .config import ARCHITECTURES, OBJECTIVES, ModelConfig, Params
from .kernels import ATTENTION, linear_cross_entropy, use_fast_dropout
from .losses import LossBalancer, jepa_loss
from .pooling import masked_mean

ROPE_THETA = 10_000.0  # modernbert: rotary base (encoder_config says why)


def encoder_config(model_cfg: ModelConfig, vocab_size: int, pad_token_id: int) -> PretrainedConfig:
    """The transformers config of a `model_cfg.architecture` encoder (build_encoder says what each is).

    bert        BertConfig; attention = kernels.py's (exported as plain SDPA).
    modernbert  ModernBertConfig, stock modules, SDPA. Every layer is global attention: ModernBERT's
                sliding-window layers measure the window in sequence slots, which in the token-dropped
                context pass are not positions, and our sequences (<= max_position) are short anyway.
                Rotary base 10,000 (RoFormer's, and ModernBERT's own for its 1,024-token pre-training;
                its 160,000 is for the 8,192-token context extension). model.dropout goes to its
                embedding, attention and MLP dropout. [CLS]/[SEP]/BOS/EOS ids stay unset: the model
                never reads them (its defaults point outside small vocabularies) and the tokenizer,
                saved next to it, carries them.
    """
    m = model_cfg
    if m.architecture == "bert":
        return BertConfig(
            vocab_size=vocab_size, hidden_size=m.hidden, num_hidden_layers=m.layers,
            num_attention_heads=m.heads, intermediate_size=m.ffn,
            hidden_dropout_prob=m.dropout, attention_probs_dropout_prob=m.dropout,
            max_position_embeddings=m.max_position, type_vocab_size=2, pad_token_id=pad_token_id,
            initializer_range=m.init_std, attn_implementation=ATTENTION,
        )
    if m.architecture == "modernbert":
        return ModernBertConfig(
            vocab_size=vocab_size, hidden_size=m.hidden, num_hidden_layers=m.layers,
            num_attention_heads=m.heads, intermediate_size=m.ffn, max_position_embeddings=m.max_position,
            layer_types=["full_attention"] * m.layers,
            rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": ROPE_THETA}},
            embedding_dropout=m.dropout, attention_dropout=m.dropout, mlp_dropout=m.dropout,
            pad_token_id=pad_token_id, bos_token_id=None, eos_token_id=None, cls_token_id=None, sep_token_id=None,
            initializer_range=m.init_std, attn_implementation="sdpa",
            # Older transformers 5.x compile ModernBERT's MLP/embeddings by default on CUDA (every
            # process, every model instance); train.compile decides that here.
            reference_compile=False,
        )
    raise ValueError(f"model.architecture={m.architecture!r} is invalid: allowed {', '.join(ARCHITECTURES)}")


def build_encoder(model_cfg: ModelConfig, vocab_size: int, pad_token_id: int) -> PreTrainedModel:
    """A randomly initialised encoder of `model_cfg.architecture` that `save_pretrained` exports and
    `AutoModel.from_pretrained` loads back (docs/DESIGN.md compares the two).

    bert        BertModel (no pooler, post-LN, learned absolute positions). Training runs on kernels.py's
                CPU-fast dropout and attention (SDPA whenever dropout is off); the weights and the
                exported config are a plain SDPA BertModel's.
    modernbert  ModernBertModel (pre-LN, rotary positions, GeGLU FFN, no biases) with its stock dropout
                and SDPA: kernels.py's versions are written against BERT's modules and measured there,
                and ModernBERT's own recipe trains without dropout.
    """
    config = encoder_config(model_cfg, vocab_size, pad_token_id)
    if model_cfg.architecture == "bert":
        return use_fast_dropout(BertModel(config, add_pooling_layer=False))
    return ModernBertModel(config)


def _init_bert_like(module: nn.Module, std: float) -> None:
    """HF's BERT init (normal(0, std) weights, zero biases, unit LayerNorm) for hand-built modules."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=std)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


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
            _init_bert_like(self.transform, config.initializer_range)
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
            max_position_embeddings=max_position, attn_implementation="sdpa",
        )
        self.in_proj = nn.Linear(encoder_hidden, pred_hidden)
        self.position = nn.Embedding(max_position, pred_hidden)
        self.mask_token = nn.Parameter(torch.zeros(pred_hidden))
        self.norm = nn.LayerNorm(pred_hidden, eps=self.config.layer_norm_eps)
        self.blocks = BertEncoder(self.config)
        self.out_proj = nn.Linear(pred_hidden, encoder_hidden)
        _init_bert_like(self, init_std)
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


@functools.lru_cache(maxsize=None)
def native_bf16(device_type: str) -> bool:
    """Whether this machine's `device_type` ("cpu", "cuda") runs bf16 matmuls natively: a bf16 GPU, or
    a CPU with AVX512-BF16 / AMX (oneDNN's check). Elsewhere bf16 autocast works but is emulated (slow)."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # a torch build without oneDNN
            return False
    return False


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
