"""The encoder: a randomly initialised HF BERT or ModernBERT that `save_pretrained` exports and
`AutoModel.from_pretrained` loads back, and whether this machine runs bf16 natively."""
from __future__ import annotations

import functools

import torch
from torch import nn
from transformers import BertConfig, BertModel, ModernBertConfig, ModernBertModel, PretrainedConfig, PreTrainedModel

from jepa_core.config import ARCHITECTURES, ModelConfig
from jepa_core.model.kernels import ATTENTION, use_fast_dropout

ROPE_THETA = 10_000.0  # modernbert: rotary base (encoder_config says why)


def encoder_config(model_cfg: ModelConfig, vocab_size: int, pad_token_id: int) -> PretrainedConfig:
    """The transformers config of a `model_cfg.architecture` encoder (build_encoder says what each is).

    bert        BertConfig; attention = kernels.py's (exported as plain SDPA).
    modernbert  ModernBertConfig, stock modules, SDPA (through kernels.py's ATTENTION, exported as plain
                SDPA). Every layer is global attention: ModernBERT's sliding-window layers measure the
                window in sequence slots, which in the token-dropped context pass are not positions, and
                our sequences (<= max_position) are short anyway.
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
            initializer_range=m.init_std, attn_implementation=ATTENTION,  # SDPA (kernels.py: bf16 on CPU)
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


def init_bert_like(module: nn.Module, std: float) -> None:
    """HF's BERT init (normal(0, std) weights, zero biases, unit LayerNorm) for hand-built modules."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=std)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


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
