"""Tokenise every document once (cached), pack the stream into full-length blocks.

Each split becomes one token stream, `doc_1 [SEP] doc_2 [SEP] ... doc_n`, cut into blocks of
L = data.seq_len tokens: `[CLS]` + the next L-1 stream tokens. The last partial block is
dropped, so no compute is spent on padding and documents are never truncated (a document
longer than L simply spans several blocks). Files in cache_dir (the run's data/ folder):

  tokens-<corpus fp>-<tokenizer fp>-<split>.npy   the int32 stream (reused when only L changes)
  blocks_<split>.npy                              int32 (N, L), memory-mapped when loaded
  blocks.json                                     what the blocks were built from, counts, and the
                                                  MLM unigram entropy of each split (`mlm_unigram_entropy`)
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from scipy.stats import entropy
from torch.utils.data import Dataset
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from jepa_core.config import DataConfig
from jepa_core.data.corpus import Corpus, Document, load_corpus
from jepa_core.data.tokenizer import get_tokenizer, tokenizer_fingerprint

TOKENIZE_BATCH = 256  # documents per call to the (multi-threaded, Rust) fast tokenizer
PROGRESS_MIN_DOCUMENTS = 500  # show a progress bar from this many documents on


class Blocks(dict):
    """{split: int32 array (N, L)} plus `meta`: per-split counts recorded when packing."""

    def __init__(self, arrays: dict[str, np.ndarray], meta: dict):
        super().__init__(arrays)
        self.meta = meta


def _save_npy(path: Path, array: np.ndarray) -> None:
    """Write then rename, so a crash never leaves a truncated file under the final name."""
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def tokenize_split(docs: list[Document], tokenizer, desc: str = "tokenize") -> list[np.ndarray]:
    """Token ids of each document (no special tokens), one batched tokenizer call per batch."""
    out: list[np.ndarray] = []
    # None, not False, for a large split: no frames in a redirected log (pretrain/train.py's bar says why)
    bar = tqdm(total=len(docs), desc=desc, unit="doc", disable=True if len(docs) < PROGRESS_MIN_DOCUMENTS else None)
    for start in range(0, len(docs), TOKENIZE_BATCH):
        texts = [d.text for d in docs[start:start + TOKENIZE_BATCH]]
        # verbose=False: documents are longer than model_max_length by design (we pack, not truncate)
        ids = tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False,
                        return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        out.extend(np.asarray(x, dtype=np.int32) for x in ids)
        bar.update(len(texts))
    bar.close()
    return out


def join_stream(token_lists: list[np.ndarray], sep_id: int) -> np.ndarray:
    """doc_1 [SEP] doc_2 [SEP] ... doc_n as one int32 array (documents without tokens left out)."""
    token_lists = [t for t in token_lists if len(t)]
    if not token_lists:
        return np.zeros(0, dtype=np.int32)
    lengths = np.array([len(t) for t in token_lists], dtype=np.int64)
    stream = np.full(lengths.sum() + len(lengths) - 1, sep_id, dtype=np.int32)
    is_token = np.ones(len(stream), dtype=bool)
    is_token[np.cumsum(lengths[:-1] + 1) - 1] = False  # where each [SEP] goes
    stream[is_token] = np.concatenate(token_lists)
    return stream


def _stream_counts(stream: np.ndarray, tokenizer) -> dict[str, int]:
    n_sep = int(np.count_nonzero(stream == tokenizer.sep_token_id))
    return {"stream_tokens": len(stream),  # including the [SEP]s between documents
            "tokens": len(stream) - n_sep,
            "unk_tokens": int(np.count_nonzero(stream == tokenizer.unk_token_id))}


def mlm_unigram_entropy(blocks: np.ndarray, special_ids: list[int] | tuple[int, ...]) -> float:
    """Shannon entropy (nats) of the empirical unigram distribution of the tokens MLM can mask: every
    token of `blocks` whose id is not special. It is the MLM loss of a model that predicts exactly
    these token frequencies and ignores the context: the plateau an encoder sits on before it uses
    context. (scipy's `entropy` normalises the counts.)"""
    counts = np.bincount(np.asarray(blocks, dtype=np.int64).ravel())
    special = [i for i in special_ids if i < len(counts)]
    counts[special] = 0
    if not counts.any():
        raise ValueError("no maskable tokens: every token of the blocks is a special token")
    return float(entropy(counts))


def _with_entropy(meta: dict, arrays: dict[str, np.ndarray], tokenizer) -> tuple[dict, bool]:
    """meta with `mlm_unigram_entropy` for every split (computed where a cached record lacks it)."""
    missing = [s for s in arrays if "mlm_unigram_entropy" not in meta.get(s, {})]
    for split in missing:
        meta[split]["mlm_unigram_entropy"] = mlm_unigram_entropy(arrays[split], tokenizer.all_special_ids)
    return meta, bool(missing)


def validation_unigram_entropy(blocks: dict[str, np.ndarray], tokenizer) -> float:
    """The validation split's MLM unigram entropy: from `build_blocks`'s record when `blocks` is a
    `Blocks`, else computed from the array (one pass; e.g. blocks read by `load_prepared_data`)."""
    recorded = getattr(blocks, "meta", {}).get("validation", {}).get("mlm_unigram_entropy")
    if recorded is not None:
        return recorded
    return mlm_unigram_entropy(blocks["validation"], tokenizer.all_special_ids)


def pack_blocks(stream: np.ndarray, seq_len: int, cls_id: int) -> np.ndarray:
    """(N, seq_len) int32: [CLS] + consecutive seq_len-1 slices of the stream; tail dropped."""
    body = seq_len - 1
    n = len(stream) // body
    blocks = np.empty((n, seq_len), dtype=np.int32)
    blocks[:, 0] = cls_id
    blocks[:, 1:] = stream[:n * body].reshape(n, body)
    return blocks


def build_blocks(corpus: Corpus, tokenizer, cfg: DataConfig, cache_dir: str | os.PathLike) -> Blocks:
    """{"train": (N, L), "validation": (M, L)} int32 blocks, memory-mapped from cache_dir.

    Reuses blocks_<split>.npy when blocks.json says they come from the same corpus, tokenizer
    and L; else reuses the cached token streams; only tokenises when neither exists."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = f"{corpus.fingerprint()}-{tokenizer_fingerprint(tokenizer)}"
    built_from = {"key": key, "seq_len": cfg.seq_len}
    meta_path = cache_dir / "blocks.json"
    splits = corpus.splits()
    if meta_path.is_file():
        recorded = json.loads(meta_path.read_text())
        if {k: recorded.get(k) for k in built_from} == built_from and all(
                (cache_dir / f"blocks_{s}.npy").is_file() for s in splits):
            arrays = {s: np.load(cache_dir / f"blocks_{s}.npy", mmap_mode="r") for s in splits}
            meta, added = _with_entropy(recorded["splits"], arrays, tokenizer)
            if added:  # a record written before the entropy was: complete it once
                meta_path.write_text(json.dumps({**recorded, "splits": meta}, indent=2))
            return Blocks(arrays, meta)

    meta_path.unlink(missing_ok=True)  # the blocks below are about to change
    meta: dict[str, dict] = {}
    for split, docs in splits.items():
        stream_path = cache_dir / f"tokens-{key}-{split}.npy"
        if stream_path.is_file():
            stream = np.load(stream_path)
        else:
            stream = join_stream(tokenize_split(docs, tokenizer, desc=f"tokenize {split}"), tokenizer.sep_token_id)
            _save_npy(stream_path, stream)
        if len(stream) < cfg.seq_len - 1:
            raise ValueError(
                f"the {split} split is too small for one block: {len(stream):,} tokens "
                f"({len(docs)} documents) but a block of data.seq_len={cfg.seq_len} needs {cfg.seq_len - 1} "
                f"tokens after [CLS]; use more documents (data.max_documents), a larger "
                f"data.validation_fraction, or a smaller data.seq_len")
        blocks = pack_blocks(stream, cfg.seq_len, tokenizer.cls_token_id)
        _save_npy(cache_dir / f"blocks_{split}.npy", blocks)
        meta[split] = {"documents": len(docs), **_stream_counts(stream, tokenizer),
                       "blocks": len(blocks), "dropped_tail_tokens": len(stream) - blocks.shape[0] * (cfg.seq_len - 1),
                       "mlm_unigram_entropy": mlm_unigram_entropy(blocks, tokenizer.all_special_ids)}
    meta_path.write_text(json.dumps({**built_from, "splits": meta}, indent=2))
    return Blocks({s: np.load(cache_dir / f"blocks_{s}.npy", mmap_mode="r") for s in splits}, meta)


class BlockDataset(Dataset):
    """Item i = {"input_ids": LongTensor(L), "index": i} (the index seeds that item's masks)."""

    def __init__(self, blocks: np.ndarray):
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": torch.from_numpy(self.blocks[i].astype(np.int64)), "index": i}


def corpus_statistics(corpus: Corpus, tokenizer, blocks: dict[str, np.ndarray]) -> pd.DataFrame:
    """Per split: documents, words, tokens, blocks, tokens per word, [UNK] rate, MLM unigram entropy
    (nats). Counts come from `build_blocks`'s record; a plain dict of arrays makes it tokenise again."""
    rows = []
    for split, docs in corpus.splits().items():
        if isinstance(blocks, Blocks):
            m = blocks.meta[split]
        else:
            m = _stream_counts(join_stream(tokenize_split(docs, tokenizer), tokenizer.sep_token_id), tokenizer)
            m["blocks"] = len(blocks[split])
            m["mlm_unigram_entropy"] = mlm_unigram_entropy(blocks[split], tokenizer.all_special_ids)
        words = sum(len(d.text.split()) for d in docs)
        rows.append({"split": split, "documents": len(docs), "words": words, "tokens": m["tokens"],
                     "blocks": m["blocks"], "tokens_per_word": m["tokens"] / max(words, 1),
                     "unk_rate": m["unk_tokens"] / max(m["tokens"], 1),
                     "mlm_unigram_entropy": m["mlm_unigram_entropy"]})
    return pd.DataFrame(rows).set_index("split")


class PreparedData(NamedTuple):
    """What pre-training reads: the tokenizer, the packed blocks and the corpus source actually used
    (recorded in the summaries); `corpus` is set when the data step built them in this process."""
    tokenizer: Any  # PreTrainedTokenizerFast
    blocks: dict[str, np.ndarray]  # {"train": (N, L) int32, "validation": (M, L) int32}
    source: str = "given"
    corpus: Corpus | None = None


def prepare_data(cfg: DataConfig, data_dir: str | os.PathLike, seed: int) -> PreparedData:
    """THE data step: corpus → tokenizer → packed blocks, cached under data_dir (tokenizer/,
    blocks_*.npy), plus corpus.json naming the source actually used (read back by `load_prepared_data`)."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    corpus = load_corpus(cfg, seed)
    tokenizer = get_tokenizer(cfg, corpus, data_dir / "tokenizer")
    blocks = build_blocks(corpus, tokenizer, cfg, data_dir)
    (data_dir / "corpus.json").write_text(corpus.to_json())
    return PreparedData(tokenizer, blocks, f"{corpus.source}:{corpus.path or cfg.hub_name}", corpus)


def load_prepared_data(data_dir: str | os.PathLike) -> PreparedData:
    """Read a data folder written by the data step: tokenizer/, blocks_{train,validation}.npy and
    (optionally) corpus.json naming the source."""
    data_dir = Path(data_dir)
    blocks = {}
    for split in ("train", "validation"):
        f = data_dir / f"blocks_{split}.npy"
        if not f.is_file():
            raise FileNotFoundError(f"prepared data folder {data_dir} lacks {f.name} (run the data step first)")
        blocks[split] = np.load(f, mmap_mode="r", allow_pickle=False)  # rows are read on demand
    tokenizer = AutoTokenizer.from_pretrained(data_dir / "tokenizer")
    source = "prepared:" + str(data_dir)
    if (data_dir / "corpus.json").is_file():
        meta = json.loads((data_dir / "corpus.json").read_text())
        source = f"{meta.get('source')}:{meta.get('path')}"
    return PreparedData(tokenizer, blocks, source)
