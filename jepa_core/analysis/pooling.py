"""Sentence vectors from ragged token states: mean / max / cls, and learned weighted / attention.

`pool(states, method)` for the fixed poolings pads the ragged states per chunk of similar-length
sentences into a dense (B, L, H) tensor with a mask, so mean and max run over real tokens only
([CLS]/[SEP] included, the attention-mask convention of sentence-transformers and SimCSE;
`include_special=False` leaves them out). Siamese pairs give [u, v, |u-v|, u*v].

The two learned poolings are TRAINED, unlike the paper's code (docs/PROTOCOL.md, defect 6: its "weighted" was
exactly mean pooling and its "attention" a random query drawn per model):
- `weighted`: a learned softmax weight per position, softmax(w[pos]) over the real tokens;
- `attention`: a learned query q, softmax(q . z_t / sqrt(H)) over the real tokens, where z_t are the
  token states standardised with the train split's per-dimension mean and std (this only rescales
  q, and keeps BERT's few huge outlier dimensions from swamping the scores).
Both start at zero, i.e. at mean pooling, and are fitted jointly with a linear head (cross-entropy,
or MSE on the standardised score for STS-B) on the TRAIN split: Adam, seeded, early stopping on a
held-out part of TRAIN (never dev). Frozen, they then pool train and dev for the same linear probe
as every other pooling. The pooled vector is the weighted sum of the RAW token states, so the
geometry of every pooling lives in the same space.
"""
from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jepa_core.analysis.backend import current_device
from jepa_core.analysis.encode import TokenStates, ragged_index
from jepa_core.model.heads import masked_mean

FIXED = ("mean", "max", "cls")
LEARNED = ("weighted", "attention")
CHUNK = 256  # sentences padded at once: bounds memory at CHUNK x max_length x H floats


@contextmanager
def single_thread():
    """Run small tensor ops on one thread: a batch of token states is too small for OpenMP to pay off
    (training a pooler measured 8x slower with 2 threads than with 1 on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pad(ts: TokenStates, idx: np.ndarray, include_special: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense float32 states (B, L, H) of sentences `idx` and their real-token mask (B, L)."""
    idx = np.asarray(idx, dtype=np.int64)
    rows, cols, src = ragged_index(ts.offsets, idx)
    length = int(ts.lengths[idx].max()) if len(idx) else 0
    x = torch.zeros(len(idx), length, ts.hidden)
    x[rows, cols] = torch.from_numpy(ts.states[src].astype(np.float32, copy=False))
    mask = torch.zeros(len(idx), length, dtype=torch.bool)
    mask[rows, cols] = torch.from_numpy(np.ones(len(src), bool) if include_special else ~ts.special[src])
    return x, mask


def masked_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    out = x.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)
    return torch.where(mask.any(1, keepdim=True), out, torch.zeros_like(out))  # a sentence without tokens -> 0


def pair_features(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Siamese pair features [u, v, |u-v|, u*v] (InferSent / Sentence-BERT)."""
    return np.concatenate([u, v, np.abs(u - v), u * v], axis=1)


def pool(ts: TokenStates, method: str, include_special: bool = True) -> np.ndarray:
    """(N, H) float32 sentence vectors by a fixed pooling (mean, max, cls); (N, 4H) for siamese pairs."""
    if method not in FIXED:
        raise ValueError(f"pooling {method!r} is not a fixed pooling ({', '.join(FIXED)}); "
                         f"{', '.join(LEARNED)} are trained with fit_learned_pooling")
    if ts.second is not None:
        return pair_features(pool(side_a(ts), method, include_special),
                             pool(ts.second, method, include_special))
    if method == "cls":
        return ts.states[ts.offsets[:-1]].astype(np.float32)
    reduce = masked_mean if method == "mean" else masked_max
    out = np.empty((ts.n, ts.hidden), dtype=np.float32)
    order = np.argsort(ts.lengths, kind="stable")  # chunks of similar length pad little
    with single_thread():
        for start in range(0, ts.n, CHUNK):
            idx = order[start:start + CHUNK]
            out[idx] = reduce(*pad(ts, idx, include_special)).numpy()
    return out


def side_a(ts: TokenStates) -> TokenStates:
    """Sentence a of a siamese pair (`ts` without `second`)."""
    return TokenStates(ts.states, ts.offsets, ts.input_ids, ts.token_type_ids, ts.special)


# ---------------------------------------------------------------- learned poolings

class WeightedPooling(nn.Module):
    """A learned score per position (sequence positions past `max_length` share the last one)."""

    def __init__(self, hidden: int, max_length: int):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(max_length))

    def scores(self, z: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(z.shape[1], device=z.device).clamp(max=len(self.logits) - 1)
        return self.logits[positions].expand(z.shape[0], -1)


class AttentionPooling(nn.Module):
    """Dot-product attention of one learned query over the (standardised) token states."""

    def __init__(self, hidden: int, max_length: int):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(hidden))

    def scores(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.query / math.sqrt(z.shape[-1])


POOLERS = {"weighted": WeightedPooling, "attention": AttentionPooling}


def attend(scores: torch.Tensor, mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Softmax of `scores` over the real tokens, then the weighted sum of `x`."""
    weights = scores.masked_fill(~mask, float("-inf")).softmax(-1).nan_to_num(0.0)  # no tokens -> 0
    return torch.einsum("bl,blh->bh", weights, x)


class _Dense:
    """One side of a split padded once, (N, L, H) with its real-token mask, on `device`: a batch of sentences
    is then one gather cut to its own longest sentence, the same tensors `pad` builds for it (not rebuilt
    from the ragged states at every step of every epoch)."""

    def __init__(self, ts: TokenStates, include_special: bool, device: torch.device):
        self.lengths = ts.lengths
        x, mask = pad(ts, np.arange(ts.n), include_special)
        self.x, self.mask = x.to(device), mask.to(device)

    def batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        length = int(self.lengths[idx].max()) if len(idx) else 0
        rows = torch.as_tensor(np.asarray(idx, dtype=np.int64), device=self.x.device)
        return self.x[rows, :length], self.mask[rows, :length]


def _sides(ts: TokenStates, include_special: bool, device: torch.device) -> list[_Dense]:
    return [_Dense(s, include_special, device) for s in ([side_a(ts), ts.second] if ts.second is not None else [ts])]


@dataclass
class LearnedPooling:
    """A fitted weighted/attention pooler: `transform(ts)` pools with it frozen."""
    method: str
    pooler: nn.Module
    mu: torch.Tensor  # per-dimension mean / std of the train tokens
    sd: torch.Tensor
    include_special: bool = True
    history: list[dict] = field(default_factory=list)  # per epoch: train_loss, val_loss
    best_epoch: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def _pool(self, side: _Dense, idx: np.ndarray) -> torch.Tensor:
        x, mask = side.batch(idx)
        return attend(self.pooler.scores((x - self.mu) / self.sd), mask, x)

    def _features(self, sides: list[_Dense], idx: np.ndarray, standardise: bool) -> torch.Tensor:
        """Pooled vectors (pair features for siamese); `standardise` feeds the head well-scaled inputs."""
        pooled = [self._pool(s, idx) for s in sides]
        if standardise:
            pooled = [(p - self.mu) / self.sd for p in pooled]
        if len(pooled) == 1:
            return pooled[0]
        u, v = pooled
        return torch.cat([u, v, (u - v).abs(), u * v], dim=1)

    @torch.no_grad()
    def transform(self, ts: TokenStates) -> np.ndarray:
        out = np.empty((ts.n, ts.hidden * (4 if ts.second is not None else 1)), dtype=np.float32)
        with single_thread():
            sides = _sides(ts, self.include_special, self.device)
            for start in range(0, ts.n, CHUNK):
                idx = np.arange(start, min(start + CHUNK, ts.n))
                out[idx] = self._features(sides, idx, standardise=False).cpu().numpy()
        return out


def _token_moments(ts: TokenStates) -> tuple[torch.Tensor, torch.Tensor]:
    states = ts.states if ts.second is None else np.concatenate([ts.states, ts.second.states])
    mu = states.mean(0, dtype=np.float64)
    sd = np.sqrt(np.maximum(states.var(0, dtype=np.float64), 1e-12))
    return torch.from_numpy(mu).float(), torch.from_numpy(sd).float()


def fit_learned_pooling(method: str, ts: TokenStates, y: np.ndarray, task_type: str, *, max_length: int,
                        epochs: int = 30, seed: int = 0, lr: float = 1e-2, batch_size: int = 64,
                        val_fraction: float = 0.2, patience: int = 5, include_special: bool = True,
                        device: str | torch.device | None = None) -> LearnedPooling:
    """Train a weighted/attention pooler jointly with a linear head on the TRAIN split's token states.

    `task_type` is "classification" (y: int labels) or "regression" (y: floats). A seeded
    `val_fraction` of the examples is held out for early stopping on its loss; the best epoch's
    pooler is kept. device: where it trains and pools (default: the device-native evaluation's, else the CPU).
    """
    device = torch.device(device or current_device() or "cpu")
    if method not in POOLERS:
        raise ValueError(f"learned pooling {method!r}: expected one of {', '.join(POOLERS)}")
    if task_type not in ("classification", "regression"):
        raise ValueError(f"task_type={task_type!r}: expected classification or regression")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(ts.n)
    n_val = max(1, int(round(val_fraction * ts.n)))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    if task_type == "classification":
        classes, y_coded = np.unique(y, return_inverse=True)
        target = torch.from_numpy(y_coded.astype(np.int64))
        n_out, loss_fn = len(classes), F.cross_entropy
    else:
        y = np.asarray(y, dtype=np.float64)
        target = torch.from_numpy((y - y.mean()) / (y.std() + 1e-12)).float()
        n_out, loss_fn = 1, lambda pred, t: F.mse_loss(pred.squeeze(-1), t)

    with torch.random.fork_rng(devices=[]):  # seeded init without disturbing the caller's RNG
        torch.manual_seed(seed)
        mu, sd = _token_moments(ts)
        fitted = LearnedPooling(method, POOLERS[method](ts.hidden, max_length).to(device), mu.to(device),
                                sd.to(device), include_special, device=device)
        head = nn.Linear(ts.hidden * (4 if ts.second is not None else 1), n_out).to(device)
    target = target.to(device)
    params = list(fitted.pooler.parameters()) + list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=lr)
    sides = _sides(ts, include_special, device)

    def loss_on(idx: np.ndarray) -> torch.Tensor:
        return loss_fn(head(fitted._features(sides, idx, standardise=True)), target[idx])

    best, best_state, waited = float("inf"), None, 0
    with single_thread():
        for epoch in range(epochs):
            order = rng.permutation(train_idx)
            total = 0.0
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                loss = loss_on(idx)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item() * len(idx)
            with torch.no_grad():  # in chunks: the held-out part may be large
                val = sum(loss_on(val_idx[i:i + CHUNK]).item() * len(val_idx[i:i + CHUNK])
                          for i in range(0, len(val_idx), CHUNK)) / len(val_idx)
            fitted.history.append({"epoch": epoch, "train_loss": total / max(len(order), 1), "val_loss": val})
            if val < best - 1e-6:
                best, best_state, waited, fitted.best_epoch = val, copy.deepcopy(fitted.pooler.state_dict()), 0, epoch
            else:
                waited += 1
                if waited >= patience:
                    break
    if best_state is not None:
        fitted.pooler.load_state_dict(best_state)
    fitted.pooler.requires_grad_(False)
    return fitted
