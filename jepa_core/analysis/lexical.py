"""Lexical probe targets and the semantic-to-lexical balance (docs/PROTOCOL.md §5.5, claims C3/C4).

Two targets, both built from the sentence text (not from a tokenizer, so the hybrid, the MLM
encoder and any other checkpoint are probed on the same labels):

- most-frequent word (the paper's lexical probe): the word occurring most often in the
  sentence, ties broken by first occurrence;
- word content (Conneau et al. 2018, "WC"): a vocabulary of mid-frequency words; sentences
  containing exactly one of them, label = that word.

Classes are always fitted on the TRAIN sentences and reused on dev: call the function on the
train sentences (classes=None), then on the dev sentences with classes=<train's classes>.
Labels are integer codes aligned with the input (−1 where the sentence is dropped);
kept_mask says which sentences carry a label. For pair tasks, pass the two sentences joined by
a space: the probe then sees the same text as the single encoded `[CLS] a [SEP] b` sequence.

Measured on GLUE here (top_k=100, no stopwords): SST-2 keeps 59% of train / 80% of dev
sentences, majority ("the") 26% on dev; CoLA keeps 81%, chance 24%. Word content (defaults):
SST-2 18k train / 285 dev sentences, 100 classes, chance 4%.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, Sequence

import numpy as np
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

# letters/digits, with inner apostrophes kept ("don't", PTB-split "n't"); "_" is not a letter
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def words(sentence: str) -> list[str]:
    """Lowercased word tokens; punctuation dropped."""
    return _WORD.findall(sentence.lower())


def _stopword_set(stopwords) -> frozenset[str]:
    if stopwords is None:
        return frozenset()
    if stopwords == "english":
        return frozenset(ENGLISH_STOP_WORDS)  # scikit-learn's list (318 words)
    return frozenset(w.lower() for w in stopwords)


def _encode(targets: Sequence[str | None], classes: Sequence[str]):
    code = {c: k for k, c in enumerate(classes)}
    labels = np.array([code.get(t, -1) if t is not None else -1 for t in targets], dtype=np.int64)
    return labels, labels >= 0


def most_frequent_word(sentence: str, stopwords: Iterable[str] = frozenset()) -> str | None:
    """The sentence's most frequent word (ties: the first to occur); None if it has no word."""
    counts = Counter(w for w in words(sentence) if w not in stopwords)
    # most_common sorts stably by count, and a Counter keeps first-occurrence order
    return counts.most_common(1)[0][0] if counts else None


def most_frequent_word_labels(sentences: Sequence[str], stopwords=None, top_k: int = 100,
                              classes: Sequence[str] | None = None):
    """(labels, kept_mask, classes) for the most-frequent-word probe.

    classes=None: fit on these (train) sentences — the top_k most common targets, most common
    first (ties in first-seen order). Otherwise use the given classes (dev). Sentences whose
    target is outside the classes, or that have no word, are dropped (kept_mask False, label −1).
    stopwords: None (paper: every token counts), "english", or an iterable of words to ignore.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be ≥ 1, got {top_k}")
    stop = _stopword_set(stopwords)
    targets = [most_frequent_word(s, stop) for s in sentences]
    if classes is None:
        classes = [w for w, _ in Counter(t for t in targets if t is not None).most_common(top_k)]
    return (*_encode(targets, classes), list(classes))


def word_content_labels(sentences: Sequence[str], n_words: int = 100, skip_top: int = 100,
                        min_count: int = 5, classes: Sequence[str] | None = None):
    """(labels, kept_mask, classes) for the word-content probe (Conneau et al. 2018).

    classes=None: the vocabulary is fitted on these (train) sentences — words ranked by the
    number of sentences containing them, the skip_top most common skipped (function words),
    then the next n_words that occur in ≥ min_count sentences. A sentence is kept when it
    contains exactly one vocabulary word (possibly repeated); its label is that word.
    """
    if n_words < 1 or skip_top < 0 or min_count < 1:
        raise ValueError(f"need n_words ≥ 1, skip_top ≥ 0, min_count ≥ 1; got {n_words}, {skip_top}, {min_count}")
    types = [set(words(s)) for s in sentences]
    if classes is None:
        doc_freq = Counter(w for t in types for w in sorted(t))
        ranked = [w for w, c in doc_freq.most_common() if c >= min_count]
        classes = ranked[skip_top:skip_top + n_words]
        if not classes:
            raise ValueError(f"no word beyond the top {skip_top} occurs in ≥ {min_count} of "
                             f"{len(sentences)} sentences: lower skip_top/min_count")
    vocab = set(classes)
    targets = []
    for t in types:
        hits = t & vocab
        targets.append(hits.pop() if len(hits) == 1 else None)
    return (*_encode(targets, classes), list(classes))


def chance_level(y_train, y_dev) -> float:
    """Dev accuracy of always predicting the train split's majority class."""
    y_train, y_dev = np.asarray(y_train), np.asarray(y_dev)
    if y_train.size == 0 or y_dev.size == 0:
        raise ValueError(f"chance_level needs non-empty label arrays, got {y_train.size} train, {y_dev.size} dev")
    values, counts = np.unique(y_train, return_counts=True)
    majority = values[np.argmax(counts)]  # ties: the smallest label, deterministic
    return float(np.mean(y_dev == majority))


def balance(semantic: float, semantic_chance: float, lexical: float, lexical_chance: float) -> dict[str, float]:
    """Semantic-to-lexical balance (C4).

    balance_diff: semantic − lexical (the paper's);
    balance_normalised: each score rescaled to its gain above chance, (s − c)/(1 − c), then
    subtracted, so tasks with different chance levels (2-way vs 100-way) compare fairly.
    """
    for name, c in (("semantic_chance", semantic_chance), ("lexical_chance", lexical_chance)):
        if not c < 1:
            raise ValueError(f"{name} must be < 1 to normalise above chance, got {c}")

    def above_chance(score, chance):
        return (score - chance) / (1 - chance)

    return {
        "balance_diff": semantic - lexical,
        "balance_normalised": above_chance(semantic, semantic_chance) - above_chance(lexical, lexical_chance),
    }
