"""Pooling: fixed poolings against a per-sentence reference, padding ignored, learned poolings learn."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from jepa_core.analysis import pooling, probes
from jepa_core.analysis.encode import TokenStates


def ragged(lengths, hidden=8, seed=0, special_ends=True) -> TokenStates:
    rng = np.random.default_rng(seed)
    lengths = np.asarray(lengths)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    T = int(offsets[-1])
    special = np.zeros(T, bool)
    if special_ends:  # [CLS] first, [SEP] last
        special[offsets[:-1]] = special[offsets[1:] - 1] = True
    return TokenStates(rng.normal(size=(T, hidden)).astype(np.float32), offsets,
                       rng.integers(0, 100, T).astype(np.int32), np.zeros(T, np.int8), special)


@pytest.mark.parametrize("include_special", [True, False])
def test_mean_max_cls_match_per_sentence_reference(include_special):
    ts = ragged([3, 17, 5, 2, 9, 30, 4], hidden=6)
    pieces = [ts.states[a:b][(slice(None) if include_special else ~ts.special[a:b])]
              for a, b in zip(ts.offsets[:-1], ts.offsets[1:])]
    # a sentence with no non-special token (length 2 without [CLS]/[SEP]) pools to zeros, not NaN
    def reference(reduce):
        return [reduce(p, 0) if len(p) else np.zeros(6) for p in pieces]
    np.testing.assert_allclose(pooling.pool(ts, "mean", include_special), reference(np.mean), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pooling.pool(ts, "max", include_special), reference(np.max), rtol=1e-6)
    np.testing.assert_array_equal(pooling.pool(ts, "cls"), ts.states[ts.offsets[:-1]])


def test_padding_is_ignored():
    ts = ragged([2, 40, 3], hidden=4)
    x, mask = pooling.pad(ts, np.arange(3))
    assert x.shape == (3, 40, 4) and mask.sum(1).tolist() == [2, 40, 3]
    poisoned = x.masked_fill(~mask.unsqueeze(-1), 1e6)  # whatever sits in the padded slots
    torch.testing.assert_close(pooling.masked_mean(poisoned, mask), pooling.masked_mean(x, mask))
    torch.testing.assert_close(pooling.masked_max(poisoned, mask), pooling.masked_max(x, mask))
    scores = torch.randn(3, 40)
    torch.testing.assert_close(pooling.attend(scores, mask, poisoned), pooling.attend(scores, mask, x))
    # batch of mixed lengths == one sentence at a time, for every pooling incl. a learned one
    y = np.array([0, 1, 0])
    learned = pooling.fit_learned_pooling("attention", ragged([5, 9, 7] * 4, hidden=4, seed=1), np.tile(y, 4),
                                          "classification", max_length=64, epochs=2)
    together = learned.transform(ts)
    for i in range(3):
        np.testing.assert_allclose(learned.transform(ts.subset([i])), together[i:i + 1], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(pooling.pool(ts.subset([i]), "mean"), pooling.pool(ts, "mean")[i:i + 1], rtol=1e-6)


def test_siamese_pair_features():
    a, b = ragged([3, 4], seed=1), ragged([5, 2], seed=2)
    pair = TokenStates(a.states, a.offsets, a.input_ids, a.token_type_ids, a.special, second=b)
    u, v = pooling.pool(a, "mean"), pooling.pool(b, "mean")
    np.testing.assert_allclose(pooling.pool(pair, "mean"), np.hstack([u, v, np.abs(u - v), u * v]), rtol=1e-6)


def signal_at_one_position(n: int, seed: int, hidden: int = 16, position: int = 2):
    """Noise tokens; the label is carried by dimension 0 of the token at `position` only, which
    also carries a marker on dimension 1 that an attention query can find."""
    rng = np.random.default_rng(seed)
    ts = ragged(rng.integers(6, 14, n), hidden=hidden, seed=seed, special_ends=False)
    y = rng.integers(0, 2, n)
    at = ts.offsets[:-1] + position
    ts.states[at, 0] += np.where(y == 1, 1.5, -1.5)
    ts.states[at, 1] += 4.0
    return ts, y


def probe_accuracy(train_x, y_train, test_x, y_test) -> float:
    fitted = probes.fit_probe(train_x, y_train, "classification", cv_folds=3, seed=0)
    return probes.METRICS["accuracy"](y_test, fitted.predict(test_x))


def test_learned_poolings_beat_mean_when_signal_sits_at_one_position():
    (train, y_train), (test, y_test) = signal_at_one_position(500, 0), signal_at_one_position(400, 1)
    mean_acc = probe_accuracy(pooling.pool(train, "mean"), y_train, pooling.pool(test, "mean"), y_test)
    assert 0.55 < mean_acc < 0.8  # the signal is diluted over ~10 tokens of noise
    for method in ("weighted", "attention"):
        learned = pooling.fit_learned_pooling(method, train, y_train, "classification", max_length=16, epochs=25,
                                              seed=0)
        acc = probe_accuracy(learned.transform(train), y_train, learned.transform(test), y_test)
        assert acc > mean_acc + 0.1, (method, acc, mean_acc)
        assert not any(p.requires_grad for p in learned.pooler.parameters())  # frozen after training


def test_weighted_pooling_finds_the_position_in_regression():
    train, _ = signal_at_one_position(300, 3, position=4)
    score = train.states[train.offsets[:-1] + 4, 0].astype(np.float64)  # the target is the signal itself
    learned = pooling.fit_learned_pooling("weighted", train, score, "regression", max_length=16, epochs=20, seed=0)
    assert int(torch.argmax(learned.pooler.logits)) == 4
    # early stopping keeps the epoch with the lowest held-out loss
    assert learned.best_epoch == int(np.argmin([h["val_loss"] for h in learned.history]))


def test_learned_pooling_is_seeded_and_starts_as_mean():
    train, y = signal_at_one_position(120, 5)
    a = pooling.fit_learned_pooling("weighted", train, y, "classification", max_length=16, epochs=3, seed=7)
    b = pooling.fit_learned_pooling("weighted", train, y, "classification", max_length=16, epochs=3, seed=7)
    np.testing.assert_array_equal(a.transform(train), b.transform(train))
    untrained = pooling.LearnedPooling("attention", pooling.AttentionPooling(16, 16), *pooling._token_moments(train))
    np.testing.assert_allclose(untrained.transform(train), pooling.pool(train, "mean"), rtol=1e-5, atol=1e-6)


def test_bad_pooling_names():
    ts = ragged([3])
    with pytest.raises(ValueError, match="trained with fit_learned_pooling"):
        pooling.pool(ts, "weighted")
    with pytest.raises(ValueError, match="learned pooling 'mean'"):
        pooling.fit_learned_pooling("mean", ts, np.zeros(1), "classification", max_length=8)
