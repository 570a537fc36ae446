"""Pre-training losses: JEPA latent prediction, sparse MLM cross-entropy, and the λ balancer."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from jepa_core.config import JEPA_LOSSES, LAMBDA_MODES


def jepa_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, kind: str = "cosine") -> torch.Tensor:
    """Mean loss over REAL target tokens: pred, target (B, K, H), valid (B, K) bool.

    Padded slots are dropped before any arithmetic, so whatever they hold (even NaN) cannot reach
    the value or the gradient. cosine = 1 − cos (paper); smooth_l1 / mse average over tokens and dims.
    """
    if kind not in JEPA_LOSSES:
        raise ValueError(f"jepa loss kind={kind!r} is invalid: allowed {', '.join(JEPA_LOSSES)}")
    p, t = pred[valid].float(), target[valid].float()  # (N, H); fp32 even under bf16 autocast
    if len(p) == 0:  # no real target token: contribute 0 (with a graph), not NaN
        return pred.sum() * 0.0
    if kind == "cosine":
        return (1 - F.cosine_similarity(p, t, dim=-1)).mean()
    if kind == "smooth_l1":
        return F.smooth_l1_loss(p, t)
    return F.mse_loss(p, t)


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over already-gathered masked positions: logits (N, V), labels (N,); 0 when N = 0."""
    if len(labels) == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels)


class LossBalancer(nn.Module):
    """Combines the two losses: `forward(l_jepa, l_mlm) -> (total, lam)`, lam detached for logging.

    learned      λ = sigmoid(w), w₀ = 0, total = λ·L_jepa + (1−λ)·L_mlm — the paper's rule, kept for
                 fidelity. docs/PROTOCOL.md, defect 4: ∂total/∂w = λ(1−λ)(L_jepa − L_mlm), so minimising total
                 drives λ toward whichever loss is numerically smaller (1 − cos ≤ 2 ≪ CE ≈ ln V), not
                 toward usefulness; we log λ every step so the drift is visible, and keep w out of
                 weight decay (`no_decay_parameters`).
    fixed        λ = fixed_lambda, no parameters.
    uncertainty  Kendall et al. (2018): total = Σ_i exp(−s_i)·L_i + s_i with learned log-variances
                 s = (s_jepa, s_mlm), s₀ = 0; reported λ = exp(−s_jepa) / (exp(−s_jepa) + exp(−s_mlm)).
    """

    def __init__(self, mode: str = "learned", fixed_lambda: float = 0.5):
        super().__init__()
        if mode not in LAMBDA_MODES:
            raise ValueError(f"lambda mode={mode!r} is invalid: allowed {', '.join(LAMBDA_MODES)}")
        if not 0 <= fixed_lambda <= 1:
            raise ValueError(f"fixed_lambda={fixed_lambda!r} is invalid: allowed a number in [0, 1]")
        self.mode = mode
        if mode == "learned":
            self.lambda_logit = nn.Parameter(torch.zeros(()))
        elif mode == "uncertainty":
            self.log_vars = nn.Parameter(torch.zeros(2))  # (s_jepa, s_mlm)
        else:
            self.register_buffer("fixed_lambda", torch.tensor(float(fixed_lambda)))

    def no_decay_parameters(self) -> list[nn.Parameter]:
        """Every parameter here: λ's logit / log-variances must not be pulled to 0 by weight decay."""
        return list(self.parameters())

    def forward(self, l_jepa: torch.Tensor, l_mlm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mode == "learned":
            lam = torch.sigmoid(self.lambda_logit)
            return lam * l_jepa + (1 - lam) * l_mlm, lam.detach()
        if self.mode == "uncertainty":
            s = self.log_vars
            total = torch.exp(-s[0]) * l_jepa + s[0] + torch.exp(-s[1]) * l_mlm + s[1]
            return total, torch.softmax(-s, 0)[0].detach()
        lam = self.fixed_lambda
        return lam * l_jepa + (1 - lam) * l_mlm, lam

    def extra_repr(self) -> str:
        return f"mode={self.mode}"

