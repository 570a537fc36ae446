"""The model core: the encoder (`encoder`), what sits on it during pre-training (`heads`: sparse MLM head,
JEPA predictor), the hybrid objective around them (`hybrid`: EMA target, the step's three passes, λ),
its losses and kernels, and the masking collator. It imports nothing of jepa_core but `config`."""
from jepa_core.model.encoder import ROPE_THETA, build_encoder, encoder_config, native_bf16
from jepa_core.model.heads import Predictor, SparseMLMHead, gather_positions, masked_mean
from jepa_core.model.hybrid import PretrainModel, ema_momentum, ema_update

__all__ = ["ROPE_THETA", "build_encoder", "encoder_config", "native_bf16", "Predictor", "SparseMLMHead",
           "gather_positions", "masked_mean", "PretrainModel", "ema_momentum", "ema_update"]
