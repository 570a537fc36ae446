"""Tokenise-once caching, [SEP]-joined streams packed into [CLS]-led blocks, dataset, statistics."""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from jepa_core.config import DataConfig
from jepa_core.data import blocks as blocks_mod
from jepa_core.data.blocks import BlockDataset, Blocks, build_blocks, corpus_statistics, join_stream, pack_blocks
from jepa_core.data.corpus import Corpus, Document, load_corpus
from jepa_core.data.tokenizer import get_tokenizer, train_tokenizer

WORDS = "the cat sat on a mat while dogs ran past houses near rivers and tall green trees".split()


def make_corpus(n_train: int = 30, n_val: int = 6) -> Corpus:
    rng = np.random.default_rng(0)
    def doc(i):
        return Document(str(i), f"D{i}", " ".join(rng.choice(WORDS, size=int(rng.integers(5, 60)))) + ".")
    return Corpus([doc(i) for i in range(n_train)], [doc(i) for i in range(n_train, n_train + n_val)], "text", None)


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return make_corpus()


@pytest.fixture(scope="module")
def tok(corpus):
    return train_tokenizer([d.text for d in corpus.train], vocab_size=200)


def test_join_stream_and_pack_known_answer():
    stream = join_stream([np.array([1, 2]), np.array([3]), np.array([], np.int32), np.array([4, 5])], sep_id=9)
    assert stream.tolist() == [1, 2, 9, 3, 9, 4, 5] and stream.dtype == np.int32
    assert pack_blocks(stream, seq_len=3, cls_id=7).tolist() == [[7, 1, 2], [7, 9, 3], [7, 9, 4]]  # 5 dropped
    assert join_stream([], sep_id=9).tolist() == []


def test_blocks_are_cls_plus_the_sep_joined_stream(corpus, tok, tmp_path):
    cfg = DataConfig(seq_len=16)
    blocks = build_blocks(corpus, tok, cfg, tmp_path)
    for split, docs in corpus.splits().items():
        b = blocks[split]
        # reference stream built independently: one encode call per document
        ref = []
        for i, d in enumerate(docs):
            ref += ([tok.sep_token_id] if i else []) + tok.encode(d.text, add_special_tokens=False)
        assert b.dtype == np.int32 and b.shape == (len(ref) // 15, 16)
        assert (b[:, 0] == tok.cls_token_id).all() and (b[:, 1:] != tok.cls_token_id).all()
        assert b[:, 1:].reshape(-1).tolist() == ref[:b.shape[0] * 15]
    assert isinstance(blocks["train"], np.memmap)  # loaded memory-mapped from the cache


def test_cache_is_reused_and_seq_len_change_does_not_retokenise(corpus, tok, tmp_path, monkeypatch):
    calls = []
    real = blocks_mod.tokenize_split
    monkeypatch.setattr(blocks_mod, "tokenize_split", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = build_blocks(corpus, tok, DataConfig(seq_len=16), tmp_path)
    assert len(calls) == 2  # train + validation, once each
    again = build_blocks(corpus, tok, DataConfig(seq_len=16), tmp_path)
    assert len(calls) == 2 and np.array_equal(again["train"], first["train"]) and again.meta == first.meta
    longer = build_blocks(corpus, tok, DataConfig(seq_len=32), tmp_path)
    assert len(calls) == 2 and longer["train"].shape[1] == 32  # re-packed from the cached token stream
    assert np.array_equal(longer["train"][:, 1:].reshape(-1)[:60], first["train"][:, 1:].reshape(-1)[:60])
    # a vocabulary that always differs: at 150 the trainer stops at 81 tokens, like `tok`, and whether
    # the two sets differ is left to its tie-breaking (huggingface/tokenizers#1794); 60 < 81 always does
    other_tok = train_tokenizer([d.text for d in corpus.train], vocab_size=60)
    assert other_tok.get_vocab() != tok.get_vocab()
    build_blocks(corpus, other_tok, DataConfig(seq_len=32), tmp_path)
    assert len(calls) == 4  # a different tokenizer is a different cache key
    changed = Corpus(corpus.train[1:], corpus.validation, "text", None)
    build_blocks(changed, tok, DataConfig(seq_len=32), tmp_path)
    assert len(calls) == 6  # and so is different text


def test_split_too_small_for_one_block_is_a_clear_error(tok, tmp_path):
    tiny = Corpus([Document("1", "", " ".join(WORDS * 20))], [Document("2", "", "the cat sat")], "text", None)
    with pytest.raises(ValueError, match=r"validation split is too small for one block: 3 tokens \(1 documents\) "
                                         r"but a block of data.seq_len=64 needs 63 tokens"):
        build_blocks(tiny, tok, DataConfig(seq_len=64), tmp_path)


def test_block_dataset_items_and_default_collate(corpus, tok, tmp_path):
    blocks = build_blocks(corpus, tok, DataConfig(seq_len=16), tmp_path)
    ds = BlockDataset(blocks["train"])
    item = ds[2]
    assert len(ds) == len(blocks["train"]) and item["index"] == 2
    assert item["input_ids"].dtype == torch.long and item["input_ids"].tolist() == blocks["train"][2].tolist()
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["input_ids"].shape == (4, 16) and batch["index"].tolist() == [0, 1, 2, 3]


def test_corpus_statistics_known_counts_and_unk_rate(tok, tmp_path):
    # "ǂ" never occurs in the training text, so the trained vocab maps it to [UNK]
    c = Corpus([Document("1", "", " ".join(WORDS * 4))],
               [Document("2", "", " ".join(WORDS) + " ǂ ǂ"), Document("3", "", " ".join(WORDS[:10]) + " ǂ")], "text",
               None)
    tok2 = train_tokenizer([d.text for d in c.train], vocab_size=200)
    blocks = build_blocks(c, tok2, DataConfig(seq_len=16), tmp_path)
    stats = corpus_statistics(c, tok2, blocks)
    val_tokens = len(tok2.encode(c.validation[0].text, add_special_tokens=False)) + \
        len(tok2.encode(c.validation[1].text, add_special_tokens=False))
    assert stats.loc["validation", "documents"] == 2 and stats.loc["validation", "words"] == len(WORDS) + 2 + 10 + 1
    assert stats.loc["validation", "tokens"] == val_tokens
    assert stats.loc["validation", "unk_rate"] == pytest.approx(3 / val_tokens)
    assert stats.loc["train", "unk_rate"] == 0
    assert stats.loc["train", "tokens_per_word"] == pytest.approx(stats.loc["train", "tokens"] / (4 * len(WORDS)))
    assert stats.loc["train", "blocks"] == len(blocks["train"])
    assert corpus_statistics(c, tok2, dict(blocks)).equals(stats)  # without the record: tokenised again


def test_embedded_excerpt_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("WIKI_DIR", raising=False)
    cfg = DataConfig(source="auto", max_documents=12, validation_fraction=0.2, vocab_size=1000, seq_len=64)
    c = load_corpus(cfg)
    tok = get_tokenizer(cfg, c, tmp_path / "tokenizer")
    blocks = build_blocks(c, tok, cfg, tmp_path)
    assert isinstance(blocks, Blocks) and set(blocks) == {"train", "validation"}
    assert all(b.shape[1] == 64 and b.shape[0] > 10 and (b[:, 0] == tok.cls_token_id).all() for b in blocks.values())
    assert sorted(p.name for p in tmp_path.glob("blocks*")) == ["blocks.json", "blocks_train.npy",
                                                                "blocks_validation.npy"]
    stats = corpus_statistics(c, tok, blocks)
    assert 1.0 < stats.loc["train", "tokens_per_word"] < 2.5


def test_mlm_unigram_entropy_known_answers():
    cls, sep, unk = 1, 2, 3
    # uniform over k = 4 maskable tokens; [CLS]/[SEP]/[UNK] are never masked, so they do not count
    uniform = np.array([[cls, 10, 11, 12, 13, sep, 10, 11], [cls, 12, 13, unk, unk, sep, sep, sep]], np.int32)
    assert blocks_mod.mlm_unigram_entropy(uniform, [cls, sep, unk]) == pytest.approx(np.log(4), abs=1e-12)
    # frequencies (1/2, 1/4, 1/4): H = ln 2 / 2 + 2 · ln 4 / 4 = 1.5 ln 2
    skewed = np.array([[cls, 7, 7, 8, 9, sep]], np.int32)
    assert blocks_mod.mlm_unigram_entropy(skewed, [cls, sep]) == pytest.approx(1.5 * np.log(2), abs=1e-12)
    assert blocks_mod.mlm_unigram_entropy(np.array([[cls, 5, 5, 5]]), [cls]) == 0.0  # one token: no uncertainty
    # id beyond the data
    assert blocks_mod.mlm_unigram_entropy(skewed, [cls, sep, 99]) == pytest.approx(1.5 * np.log(2))
    with pytest.raises(ValueError, match="no maskable tokens"):
        blocks_mod.mlm_unigram_entropy(np.array([[cls, sep, sep]]), [cls, sep])


def _entropy_by_counting(blocks: np.ndarray, special: set[int]) -> float:
    """Independent of the implementation: Counter + the definition -Σ p ln p."""
    import math
    from collections import Counter

    counts = Counter(int(t) for t in np.asarray(blocks).ravel() if int(t) not in special)
    n = sum(counts.values())
    return -sum(c / n * math.log(c / n) for c in counts.values())


def test_unigram_entropy_is_recorded_cached_and_exposed(corpus, tok, tmp_path):
    import json

    blocks = build_blocks(corpus, tok, DataConfig(seq_len=16), tmp_path)
    special = set(tok.all_special_ids)
    expected = {s: _entropy_by_counting(blocks[s], special) for s in ("train", "validation")}
    record = json.loads((tmp_path / "blocks.json").read_text())["splits"]
    for split, h in expected.items():
        assert record[split]["mlm_unigram_entropy"] == pytest.approx(h, rel=1e-12)
    assert 0 < expected["validation"] < np.log(len(tok))
    # exposed the same way whether the blocks come with their record or as plain arrays
    assert blocks_mod.validation_unigram_entropy(blocks, tok) == pytest.approx(expected["validation"], rel=1e-12)
    assert blocks_mod.validation_unigram_entropy(dict(blocks), tok) == pytest.approx(expected["validation"], rel=1e-12)
    assert corpus_statistics(corpus, tok, blocks).loc["validation", "mlm_unigram_entropy"] == \
        pytest.approx(expected["validation"], rel=1e-12)
    # a record written before the entropy existed is completed on the next (cached) read
    for split in record:
        del record[split]["mlm_unigram_entropy"]
    full = json.loads((tmp_path / "blocks.json").read_text())
    (tmp_path / "blocks.json").write_text(json.dumps({**full, "splits": record}))
    again = build_blocks(corpus, tok, DataConfig(seq_len=16), tmp_path)
    assert again.meta["validation"]["mlm_unigram_entropy"] == pytest.approx(expected["validation"], rel=1e-12)
    assert "mlm_unigram_entropy" in json.loads((tmp_path / "blocks.json").read_text())["splits"]["train"]
