"""Wikipedia text for pre-training: one reader per source, `auto` resolution, a hash split.

Every reader yields `Document(id, title, text)` with plain text (paragraphs separated by
newlines, original case) in a fixed order, so `max_documents` takes the first N documents
read and a run is reproducible. Sources (`data.source`):

  hub            `datasets.load_dataset(data.hub_name, data.hub_config, streaming=True)`
  wiki_dump      a `*pages-articles*.xml[.bz2]` dump (file or folder), parsed with gensim's
                 `wikicorpus` tools; redirects, non-article namespaces and pages left empty
                 after markup removal are skipped and counted. Without data.path: the real
                 Wikipedia excerpt shipped inside gensim (106 articles, ~480k words).
  wikiextractor  a folder (searched recursively) or file of WikiExtractor output,
                 `<doc id= url= title=>` ... `</doc>`, plain or .gz/.bz2/.xz. Files that do
                 not start with `<doc` (e.g. a MANIFEST) are skipped and counted.
  text           raw text files (.txt/.raw/.text in a folder; any single file). WikiText
                 files (top-level ` = Title = ` headings) give one document per article, with
                 WikiText's ` @-@ `-style escapes undone. Other files: one document per chunk
                 of text separated by one or more blank lines.
  parquet/jsonl  files with a `text` column/key and optional `id`, `title`.
                 (wikiextractor/text/parquet/jsonl without data.path read $WIKI_DIR.)
  auto           data.path when given (kind detected), else the hub when reachable, else
                 $WIKI_DIR when set (kind detected), else the embedded gensim excerpt. One
                 line says which source was used and why; the choice is recorded in `Corpus`.

Undecodable bytes: local files are decoded as UTF-8 with every invalid byte sequence replaced
by U+FFFD (a few bad bytes should not stop a 100 MB corpus); the number of replaced bytes is
counted in `Corpus.skipped["invalid_utf8_bytes"]` so it shows up in corpus.json.

The train/validation split is a stable hash (sha256) of (id, title), so a document's side never
depends on the order it was read in, on the machine, on PYTHONHASHSEED, or on the training seed
(every pre-training seed is validated on the same held-out documents and shares one data/ folder).
"""
from __future__ import annotations

import bz2
import codecs
import gzip
import hashlib
import html
import json
import lzma
import os
import re
import socket
import threading
from collections import Counter
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlparse
from xml.etree.ElementTree import ParseError

import numpy as np

from jepa_core.config import DataConfig

EMBEDDED_DUMP = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
# the hub host, as huggingface_hub resolves it (HF_ENDPOINT for mirrors)
HUB_HOST = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    text: str


@dataclass
class Corpus:
    train: list[Document]
    validation: list[Document]
    source: str  # the source actually read (never "auto")
    path: str | None  # file or folder read; None for the hub
    skipped: dict[str, int] = field(default_factory=dict)  # counted skips, e.g. {"redirect": 99}
    notice: str = ""  # why this source was used
    _fingerprint: str | None = field(default=None, init=False, repr=False, compare=False)

    def splits(self) -> dict[str, list[Document]]:
        return {"train": self.train, "validation": self.validation}

    def stats(self) -> dict:
        per_split = {
            name: {"documents": len(docs),
                   "words": sum(len(d.text.split()) for d in docs),
                   "chars": sum(len(d.text) for d in docs)}
            for name, docs in self.splits().items()
        }
        return {"source": self.source, "path": self.path, "notice": self.notice,
                "skipped": dict(self.skipped), "fingerprint": self.fingerprint(), "splits": per_split}

    def describe(self) -> str:
        s = self.stats()
        lines = [f"corpus: source={self.source} path={self.path} ({self.notice})"]
        for name, st in s["splits"].items():
            lines.append(f"  {name:<10} {st['documents']:>8,} documents {st['words']:>12,} words "
                         f"{st['chars']:>14,} chars")
        if self.skipped:
            lines.append("  skipped: " + ", ".join(f"{k}={v:,}" for k, v in sorted(self.skipped.items())))
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(self.stats(), indent=2)

    def fingerprint(self) -> str:
        """Hash of the content of both splits: keys the tokenizer and token caches."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for name, docs in self.splits().items():
                h.update(f"<{name}:{len(docs)}>".encode())
                for d in docs:
                    h.update(f"{d.id}\x1f{d.title}\x1f".encode())
                    h.update(d.text.encode("utf-8", "surrogatepass"))
                    h.update(b"\x1e")
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint


# ---------------------------------------------------------------- decoding and files

_replaced_bytes = 0  # running count of invalid UTF-8 bytes, read before/after each file


def _count_and_replace(err: UnicodeDecodeError) -> tuple[str, int]:
    global _replaced_bytes
    _replaced_bytes += err.end - err.start
    return "\ufffd", err.end


codecs.register_error("jepa_core.count_replace", _count_and_replace)

_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def _base_suffix(path: Path) -> str:
    """The suffix that says what a file holds, ignoring a compression suffix: wiki.raw.gz -> .raw."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _OPENERS:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _read_text(path: Path, skipped: Counter) -> str:
    """Whole file as text (decompressing by suffix); invalid UTF-8 replaced and counted."""
    before = _replaced_bytes
    opener = _OPENERS.get(path.suffix.lower(), open)
    with opener(path, "rt", encoding="utf-8", errors="jepa_core.count_replace") as f:
        text = f.read()
    if _replaced_bytes > before:
        skipped["invalid_utf8_bytes"] += _replaced_bytes - before
    return text


def _list_files(path: Path, keep: Callable[[Path], bool] = lambda p: True) -> list[Path]:
    """`path` itself when it is a file, else its files (recursively, sorted, hidden ones skipped)."""
    if path.is_file():
        return [path]
    return sorted((p for p in path.rglob("*")
                   if p.is_file() and keep(p) and not any(part.startswith(".") for part in p.relative_to(path).parts)),
                  key=lambda p: p.relative_to(path).as_posix())


def _first_line(path: Path) -> str:
    """First non-blank line of a (possibly compressed) file, '' if unreadable as text."""
    try:
        opener = _OPENERS.get(path.suffix.lower(), open)
        with opener(path, "rt", encoding="utf-8", errors="replace") as f:
            for line in islice(f, 50):
                if line.strip():
                    return line.strip()
    except (OSError, EOFError, lzma.LZMAError):
        pass
    return ""


# ---------------------------------------------------------------- readers (one per source)

def _read_hub(cfg: DataConfig) -> Iterator[Document]:
    import datasets  # imported here: a slow import that offline runs never need

    rows = datasets.load_dataset(cfg.hub_name, cfg.hub_config, split="train", streaming=True)
    for row in rows:
        yield Document(str(row["id"]), row.get("title") or "", row["text"])


_HEADING = re.compile(r"^(=+)\s*(.*?)\s*\1\s*$")
_LIST_OR_TABLE = re.compile(r"^\s*([*#:;|!]|\{\||\|\})")
_EMPHASIS = re.compile(r"'{2,}")
_IGNORED_TITLE_PREFIXES = ("Wikipedia:", "Category:", "File:", "Portal:", "Template:", "MediaWiki:", "User:",
                           "Help:", "Book:", "Draft:", "WikiProject:", "Special:", "Talk:")  # as gensim's WikiCorpus


def wikitext_to_plain(wikitext: str) -> str:
    """gensim's `filter_wiki` (links, templates, refs, tags removed), then the rest of the markup
    it leaves: ''emphasis'' quotes dropped, `== Heading ==` -> `Heading.` (as WikiExtractor
    writes headings), list and table lines dropped (mostly references and link lists)."""
    from gensim.corpora.wikicorpus import filter_wiki  # deferred: gensim is slow to import, only dumps need it

    lines: list[tuple[str, bool]] = []  # (line, is_heading)
    for line in filter_wiki(wikitext).splitlines():
        if _LIST_OR_TABLE.match(line):
            continue
        heading = _HEADING.match(line.strip())
        line = " ".join(_EMPHASIS.sub("", heading.group(2) + "." if heading else line).split())
        if line and line != ".":
            lines.append((line, bool(heading)))
    # a heading whose section lost all its text (e.g. "See also" with only links) is dropped
    kept = [line for (line, is_heading), nxt in zip(lines, lines[1:] + [("", True)])
            if not (is_heading and nxt[1])]
    return "\n".join(kept)


def _read_wiki_dump(path: Path, skipped: Counter) -> Iterator[Document]:
    from gensim.corpora.wikicorpus import extract_pages  # deferred: slow import, only dumps need it

    files = _list_files(path, lambda p: _base_suffix(p) == ".xml")
    if not files:
        raise FileNotFoundError(f"no *.xml[.bz2] Wikipedia dump found in {path}")
    for file in files:
        other_namespace: set[str] = set()

        def is_article(elem, title, ns_path, pageid_path, **_):
            ns = elem.find(ns_path)
            keep = (ns is None or ns.text == "0") and not (title or "").startswith(_IGNORED_TITLE_PREFIXES)
            if not keep:
                other_namespace.add(elem.find(pageid_path).text)
            return keep

        before = _replaced_bytes
        opener = _OPENERS.get(file.suffix.lower(), open)
        with opener(file, "rt", encoding="utf-8", errors="jepa_core.count_replace") as f:
            try:  # the finally also runs when max_documents stops the reading early
                for title, wikitext, page_id in extract_pages(f, filter_articles=is_article):
                    if page_id in other_namespace:
                        skipped["namespace"] += 1
                    elif wikitext.lstrip()[:9].lower() == "#redirect":
                        skipped["redirect"] += 1
                    elif not (text := wikitext_to_plain(wikitext)):
                        skipped["empty"] += 1
                    else:
                        yield Document(str(page_id), title or "", text)
            except ParseError as exc:
                line, col = exc.position
                raise ValueError(f"{file}: line {line}, column {col}: malformed XML dump ({exc})") from None
            except ValueError as exc:  # gensim: the root element has no MediaWiki namespace
                raise ValueError(f"{file}: not a MediaWiki XML dump ({str(exc).strip()})") from None
            finally:
                skipped["invalid_utf8_bytes"] += _replaced_bytes - before


_DOC_OPEN = re.compile(r"^<doc\b([^>]*)>[ \t]*$", re.M)
_DOC_CLOSE = re.compile(r"^</doc>[ \t]*$", re.M)
_ATTR = re.compile(r'(\w+)="([^"]*)"')


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def parse_wikiextractor(text: str, name: str = "<string>") -> Iterator[tuple[str, str, str]]:
    """(id, title, body) for each `<doc>` element of one WikiExtractor file, body without its
    duplicated title line. Stray text, nested or unterminated `<doc>` -> ValueError with line."""
    pos = 0
    while True:
        opening = _DOC_OPEN.search(text, pos)
        stray = text[pos:opening.start() if opening else len(text)]
        if stray.strip():
            at = pos + len(stray) - len(stray.lstrip())
            raise ValueError(f"{name}: line {_line_of(text, at)}: text outside a <doc> element: {text[at:at + 60]!r}")
        if opening is None:
            return
        closing = _DOC_CLOSE.search(text, opening.end())
        nested = _DOC_OPEN.search(text, opening.end(), closing.start() if closing else len(text))
        if closing is None or nested is not None:
            raise ValueError(f"{name}: line {_line_of(text, opening.start())}: <doc> is not closed by </doc>"
                             + (f" before the next <doc> at line {_line_of(text, nested.start())}" if nested else ""))
        attrs = {k: html.unescape(v) for k, v in _ATTR.findall(opening.group(1))}
        title = attrs.get("title", "")
        body = text[opening.end():closing.start()].strip("\n").split("\n")
        if body and body[0].strip() == title.strip():
            body = body[1:]  # WikiExtractor repeats the title as the first line
        yield attrs.get("id", f"{name}:{_line_of(text, opening.start())}"), title, "\n".join(
            line.strip() for line in body if line.strip())
        pos = closing.end()


def _read_wikiextractor(path: Path, skipped: Counter) -> Iterator[Document]:
    for file in _list_files(path):
        if not _first_line(file).startswith("<doc"):
            skipped["files_not_wikiextractor"] += 1
            continue
        for doc_id, title, body in parse_wikiextractor(_read_text(file, skipped), str(file)):
            if body:
                yield Document(doc_id, title, body)
            else:
                skipped["empty"] += 1


_WIKITEXT_TITLE = re.compile(r"^ = ([^=].*?) = *$", re.M)
_WIKITEXT_ESCAPE = re.compile(r" @([-,.])@ ")
_WIKITEXT_SUBHEADING = re.compile(r"^ *(?:= )+(.*?)(?: =)+ *$", re.M)


def _read_text_files(path: Path, skipped: Counter) -> Iterator[Document]:
    files = _list_files(path, lambda p: _base_suffix(p) in (".txt", ".raw", ".text"))
    if not files:
        raise FileNotFoundError(f"no .txt/.raw/.text files found in {path}")
    for file in files:
        text = _read_text(file, skipped)
        name = file.name if path.is_file() else file.relative_to(path).as_posix()
        titles = list(_WIKITEXT_TITLE.finditer(text))
        if titles:  # WikiText: an article runs from its ` = Title = ` line to the next one
            ends = [m.start() for m in titles[1:]] + [len(text)]
            chunks = [(m.group(1).strip(), text[m.end():end]) for m, end in zip(titles, ends)]
            chunks = [(t, _WIKITEXT_SUBHEADING.sub(r"\1.", _WIKITEXT_ESCAPE.sub(r"\1", body))) for t, body in chunks]
        else:  # plain text: blank lines separate documents
            chunks = [("", chunk) for chunk in re.split(r"\n[ \t]*\n", text)]
        k = 0
        for title, body in chunks:
            body = "\n".join(" ".join(line.split()) for line in body.splitlines() if line.strip())
            if body:
                yield Document(f"{name}:{k}", title, body)
                k += 1
            elif title:
                skipped["empty"] += 1


def _records(path: Path, kind: str, skipped: Counter) -> Iterator[tuple[str, dict]]:
    """(location, record) pairs of every parquet / jsonl file under path."""
    suffixes = (".parquet",) if kind == "parquet" else (".jsonl", ".json")
    files = _list_files(path, lambda p: _base_suffix(p) in suffixes)
    if not files:
        raise FileNotFoundError(f"no {'/'.join(suffixes)} files found in {path}")
    for file in files:
        name = file.name if path.is_file() else file.relative_to(path).as_posix()
        if kind == "parquet":
            import pyarrow.parquet as pq  # deferred: only parquet sources need it

            pf = pq.ParquetFile(file)
            columns = pf.schema_arrow.names
            if "text" not in columns:
                raise ValueError(f"{file}: no 'text' column (columns: {', '.join(columns)})")
            row = 0
            for batch in pf.iter_batches(columns=[c for c in ("id", "title", "text") if c in columns]):
                for rec in batch.to_pylist():
                    yield f"{name}:{row}", rec
                    row += 1
        else:
            for lineno, line in enumerate(_read_text(file, skipped).splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{file}: line {lineno}: invalid JSON ({exc.msg})") from None
                if not isinstance(rec, dict) or "text" not in rec:
                    raise ValueError(f"{file}: line {lineno}: a JSON object with a 'text' key is required")
                yield f"{name}:{lineno}", rec


def _read_table(kind: str) -> Callable[[Path, Counter], Iterator[Document]]:
    def read(path: Path, skipped: Counter) -> Iterator[Document]:
        for location, rec in _records(path, kind, skipped):
            text = (rec.get("text") or "").strip()
            if not text:
                skipped["empty"] += 1
                continue
            doc_id = rec.get("id")
            yield Document(location if doc_id is None else str(doc_id), str(rec.get("title") or ""), text)
    return read


_LOCAL_READERS = {
    "wiki_dump": _read_wiki_dump,
    "wikiextractor": _read_wikiextractor,
    "text": _read_text_files,
    "parquet": _read_table("parquet"),
    "jsonl": _read_table("jsonl"),
}


# ---------------------------------------------------------------- source resolution

def embedded_dump_path() -> Path:
    from gensim.test.utils import datapath  # deferred: slow import (a GPU machine may lack gensim)

    return Path(datapath(EMBEDDED_DUMP))


def hub_reachable(timeout: float = 2.0) -> tuple[bool, str]:
    """(reachable, why). Offline env vars win; else a TCP connect to the hub, at most `timeout` s
    (run in a daemon thread because DNS lookups ignore socket timeouts)."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return False, f"{var}={os.environ[var]}"
    result: list[str | None] = []

    def connect():
        try:
            socket.create_connection((HUB_HOST, 443), timeout=timeout).close()
            result.append(None)
        except Exception as exc:  # any failure means unreachable; one escaping the thread would only be printed
            result.append(f"{HUB_HOST} unreachable: {exc}")

    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(timeout)
    if not result:
        return False, f"{HUB_HOST} did not answer within {timeout:g} s"
    return result[0] is None, result[0] or f"{HUB_HOST} reachable"


def detect_source(path: str | os.PathLike) -> str:
    """Which local reader fits `path`: parquet, jsonl, wiki_dump, wikiextractor or text."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    files = _list_files(path)
    kinds = {_base_suffix(p) for p in files}
    for suffix, kind in ((".parquet", "parquet"), (".jsonl", "jsonl"), (".json", "jsonl"), (".xml", "wiki_dump")):
        if suffix in kinds:
            return kind
    if any(_first_line(p).startswith("<doc") for p in files[:20]):
        return "wikiextractor"
    return "text"


def _existing(path: str, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    return p


def resolve_source(cfg: DataConfig) -> tuple[str, Path | None, str]:
    """(source, path, why) for cfg, turning `auto` into a concrete source."""
    wiki_dir = os.environ.get("WIKI_DIR") or None
    if cfg.source == "hub":
        reachable, why = hub_reachable()
        if not reachable:  # fail in seconds with what to do, instead of datasets' minute of retries
            raise ConnectionError(
                f"data.source=hub but the Hugging Face hub cannot be used ({why}). Go online (and unset "
                "HF_HUB_OFFLINE/HF_DATASETS_OFFLINE), or use local text: data.source=auto (uses $WIKI_DIR or "
                "the embedded excerpt), or set WIKI_DIR / data.path to a WikiExtractor folder or a dump")
        return "hub", None, f"data.source=hub ({why})"
    if cfg.source != "auto":
        if cfg.path is not None:
            return cfg.source, _existing(cfg.path, "data.path"), f"data.source={cfg.source}"
        if cfg.source == "wiki_dump":  # $WIKI_DIR names WikiExtractor output, not a dump
            return ("wiki_dump", embedded_dump_path(),
                    "data.source=wiki_dump without data.path: gensim's embedded excerpt")
        if wiki_dir is not None:
            return cfg.source, _existing(wiki_dir, "$WIKI_DIR"), f"data.source={cfg.source}, path from $WIKI_DIR"
        raise FileNotFoundError(f"data.source={cfg.source} needs data.path or $WIKI_DIR (neither is set)")
    if cfg.path is not None:
        p = _existing(cfg.path, "data.path")
        return detect_source(p), p, "auto: data.path is set"
    reachable, why = hub_reachable()
    if reachable:
        return "hub", None, f"auto: {why}"
    if wiki_dir is not None:
        p = _existing(wiki_dir, "$WIKI_DIR")
        return detect_source(p), p, f"auto: hub not used ({why}); $WIKI_DIR is set"
    return ("wiki_dump", embedded_dump_path(),
            f"auto: hub not used ({why}) and $WIKI_DIR unset: gensim's embedded excerpt")


# ---------------------------------------------------------------- split and load

def _unit_hash(key: str) -> float:
    return int.from_bytes(hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()[:8], "big") / 2**64


def split_documents(docs: list[Document], validation_fraction: float) -> tuple[list[Document], list[Document]]:
    """Hash split, reading order kept inside each side. With >= 2 documents both sides are
    non-empty: if the hash picks none (or all), the lowest- (highest-) scoring one is moved."""
    scores = np.array([_unit_hash(f"{d.id}\x1f{d.title}") for d in docs])
    is_val = scores < validation_fraction
    if len(docs) >= 2:
        if not is_val.any():
            is_val[scores.argmin()] = True
        if is_val.all():
            is_val[scores.argmax()] = False
    return ([d for d, v in zip(docs, is_val) if not v], [d for d, v in zip(docs, is_val) if v])


def load_corpus(cfg: DataConfig, seed: int = 0) -> Corpus:
    """Read the configured source (at most cfg.max_documents documents, in reading order) and
    split it by hash of (id, title) into train / validation. `seed` is part of the data-step
    contract but deliberately does not move the split (see the module docstring)."""
    source, path, why = resolve_source(cfg)
    print(f"[corpus] source={source} path={path if path else cfg.hub_name + '/' + cfg.hub_config} ({why})", flush=True)
    skipped: Counter = Counter()
    reader = _read_hub(cfg) if source == "hub" else _LOCAL_READERS[source](path, skipped)
    docs = list(islice(reader, cfg.max_documents))
    if not docs:
        raise ValueError(f"no documents in source={source} path={path} (skipped: {dict(skipped) or 'nothing'})")
    train, validation = split_documents(docs, cfg.validation_fraction)
    return Corpus(train, validation, source, None if path is None else str(path),
                  {k: v for k, v in sorted(skipped.items()) if v}, why)


# ---------------------------------------------------------------- held-out sentences

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")


def validation_sentences(corpus: Corpus, n: int, seed: int = 0, min_words: int = 5, max_words: int = 60
                         ) -> list[str]:
    """n distinct sentences (min_words..max_words words) drawn, seeded, from the validation
    split; fewer when the split has fewer. Used for label-free geometry on unseen text."""
    pool: dict[str, None] = {}  # ordered set: reproducible order before sampling
    for doc in corpus.validation:
        for paragraph in doc.text.splitlines():
            for sentence in _SENTENCE_END.split(paragraph):
                if min_words <= len(sentence.split()) <= max_words:
                    pool.setdefault(sentence.strip(), None)
    sentences = list(pool)
    if not sentences:
        raise ValueError(f"the validation split ({len(corpus.validation)} documents) has no sentence of "
                         f"{min_words}-{max_words} words")
    picked = np.random.default_rng(seed).permutation(len(sentences))[:n]
    return [sentences[i] for i in picked]
