"""Lexical probe targets, chance level and balance on hand-written examples."""
import numpy as np
import pytest

from jepa_core.analysis import lexical as lx


def test_words_lowercase_and_drop_punctuation():
    assert lx.words("It's a CHARMING, funny -- movie!") == ["it's", "a", "charming", "funny", "movie"]
    assert lx.words("ca n't , does n't .") == ["ca", "n't", "does", "n't"]  # SST-2's PTB split
    assert lx.words("snake_case 3.5 café") == ["snake", "case", "3", "5", "café"]
    assert lx.words(" ... ") == []


def test_most_frequent_word_counts_and_breaks_ties_by_first_occurrence():
    assert lx.most_frequent_word("the cat saw the dog") == "the"
    assert lx.most_frequent_word("dog cat cat dog") == "dog"  # tie: dog occurs first
    assert lx.most_frequent_word("Dog, dog! cat") == "dog"
    assert lx.most_frequent_word("the cat saw the dog", stopwords={"the"}) == "cat"
    assert lx.most_frequent_word("!!!") is None


TRAIN = [
    "the cat sat on the mat",      # the
    "a dog and a cat",             # a
    "the film , the actors",       # the
    "dog dog cat",                 # dog
    "a plot with a twist",         # a
    "the end",                     # the
    "",                            # no word → dropped
]


def test_most_frequent_word_labels_fit_on_train():
    labels, kept, classes = lx.most_frequent_word_labels(TRAIN, top_k=2)
    assert classes == ["the", "a"]  # the: 3, a: 2, dog: 1 (beyond top_k)
    assert labels.tolist() == [0, 1, 0, -1, 1, 0, -1]
    assert kept.tolist() == [True, True, True, False, True, True, False]


def test_dev_uses_the_train_classes():
    _, _, classes = lx.most_frequent_word_labels(TRAIN, top_k=2)
    dev = ["a a the", "dog days", "the the a"]
    labels, kept, dev_classes = lx.most_frequent_word_labels(dev, classes=classes)
    assert dev_classes == classes
    assert labels.tolist() == [1, -1, 0] and kept.tolist() == [True, False, True]


def test_stopwords_change_the_target():
    labels, kept, classes = lx.most_frequent_word_labels(TRAIN, stopwords="english", top_k=3)
    # english stopwords drop the/a/and/on/with: targets cat, dog, film, dog, plot, end
    assert classes[:2] == ["dog", "cat"]
    assert labels[0] == classes.index("cat") and labels[3] == classes.index("dog")
    labels, _, classes = lx.most_frequent_word_labels(TRAIN, stopwords=["the", "A"], top_k=10)
    assert "the" not in classes and "a" not in classes
    with pytest.raises(ValueError, match="top_k"):
        lx.most_frequent_word_labels(TRAIN, top_k=0)


def test_word_content_labels_keep_sentences_with_exactly_one_vocabulary_word():
    train = ["the cat runs"] * 3 + ["the dog runs"] * 3 + ["the cat and the dog"] * 2 + ["the bird"]
    # sentence frequency: the 9, runs 6, cat 5, dog 5, and 2, bird 1
    labels, kept, classes = lx.word_content_labels(train, n_words=2, skip_top=2, min_count=2)
    assert classes == ["cat", "dog"]
    assert kept.tolist() == [True] * 6 + [False] * 3  # both words, or neither
    assert labels[:6].tolist() == [0, 0, 0, 1, 1, 1]
    dev_labels, dev_kept, _ = lx.word_content_labels(["a dog a dog", "cat", "owl"], classes=classes)
    assert dev_labels.tolist() == [1, 0, -1] and dev_kept.tolist() == [True, True, False]
    with pytest.raises(ValueError, match="lower skip_top"):
        lx.word_content_labels(train, skip_top=50)


def test_chance_level_is_train_majority_accuracy_on_dev():
    assert lx.chance_level([0, 1, 1, 1], [1, 0, 0, 0]) == pytest.approx(0.25)
    assert lx.chance_level(np.array(["a", "b", "b"]), np.array(["b", "b"])) == 1.0
    assert lx.chance_level([0, 1], [0, 0, 1]) == pytest.approx(2 / 3)  # tie → smallest label
    with pytest.raises(ValueError, match="non-empty"):
        lx.chance_level([], [1])


def test_balance_formula():
    out = lx.balance(semantic=0.70, semantic_chance=0.50, lexical=0.30, lexical_chance=0.10)
    assert out["balance_diff"] == pytest.approx(0.40)
    # (0.7 − 0.5)/0.5 − (0.3 − 0.1)/0.9 = 0.4 − 0.2222…
    assert out["balance_normalised"] == pytest.approx(0.4 - 0.2 / 0.9)
    assert lx.balance(0.3, 0.0, 0.3, 0.0)["balance_normalised"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="lexical_chance"):
        lx.balance(0.7, 0.5, 1.0, 1.0)
