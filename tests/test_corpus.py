"""Corpus sources, `auto` resolution, hash split, held-out sentences and fault handling."""
import bz2
import gzip
import json
import random
import socket
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from jepa_core.config import DataConfig
from jepa_core.data import corpus as corpus_mod
from jepa_core.data.corpus import (
    EMBEDDED_DUMP,
    Corpus,
    Document,
    detect_source,
    hub_reachable,
    load_corpus,
    parse_wikiextractor,
    resolve_source,
    split_documents,
    validation_sentences,
)

FIXTURES = Path(__file__).parent / "fixtures" / "data"


@pytest.fixture(autouse=True)
def offline_without_wiki_dir(monkeypatch):
    """Every test starts offline and without $WIKI_DIR; tests that need it set it themselves."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("WIKI_DIR", raising=False)


def docs_of(c: Corpus) -> dict[str, Document]:
    return {d.id: d for d in c.train + c.validation}


def load(source: str, path, **kw) -> Corpus:
    return load_corpus(DataConfig(source=source, path=str(path), **kw))


# ---------------------------------------------------------------- wikiextractor

WIKIEXTRACTOR_TEXTS = {
    "12": 'Anarchism is a political philosophy that advocates stateless societies.\nEtymology and terminology.\n'
          'The term "anarchism" is a compound word composed from the word "anarchy".',
    "25": "Autism is a neurodevelopmental disorder characterized by impaired social interaction.",
    "39": "AT&T is an American telecommunications company.\nIt was founded in 1885.",
    "41": "Albedo is the diffuse reflectivity of a surface.",
}


def test_wikiextractor_folder_parses_documents_and_counts_skips():
    c = load("wikiextractor", FIXTURES / "wikiextractor")
    docs = docs_of(c)
    assert {k: d.text for k, d in docs.items()} == WIKIEXTRACTOR_TEXTS  # title line dropped, paragraphs kept
    assert docs["39"].title == "AT&T"  # attribute entities unescaped
    assert c.source == "wikiextractor" and c.path == str(FIXTURES / "wikiextractor")
    assert c.skipped == {"empty": 1, "files_not_wikiextractor": 1}  # the empty article; MANIFEST.tsv


@pytest.mark.parametrize("compress", [gzip.open, bz2.open])
def test_wikiextractor_compressed_files_give_the_same_documents(tmp_path, compress):
    for src in (FIXTURES / "wikiextractor").rglob("wiki_*"):
        suffix = ".gz" if compress is gzip.open else ".bz2"
        dst = tmp_path / src.relative_to(FIXTURES / "wikiextractor").parent / (src.name + suffix)
        dst.parent.mkdir(parents=True, exist_ok=True)
        with compress(dst, "wb") as f:
            f.write(src.read_bytes())
    assert {k: d.text for k, d in docs_of(load("wikiextractor", tmp_path)).items()} == WIKIEXTRACTOR_TEXTS


def test_max_documents_takes_the_first_documents_in_file_order():
    c = load("wikiextractor", FIXTURES / "wikiextractor", max_documents=3)
    assert set(docs_of(c)) == {"12", "25", "39"}  # AA/wiki_00 then AB/wiki_00


@pytest.mark.parametrize("text, line, words", [
    ('<doc id="1" title="A">\nA\n\nbody\n', 1, "not closed"),  # unterminated at end of file
    ('<doc id="1" title="A">\nbody\n<doc id="2" title="B">\nB\n</doc>\n', 1, "before the next <doc> at line 3"),
    ('<doc id="1" title="A">\nbody\n</doc>\nstray words\n', 4, "outside a <doc>"),
])
def test_malformed_wikiextractor_file_names_file_and_line(tmp_path, text, line, words):
    bad = tmp_path / "AA" / "wiki_07"
    bad.parent.mkdir()
    bad.write_text(text)
    with pytest.raises(ValueError, match=rf"wiki_07: line {line}: .*{words}"):
        load("wikiextractor", tmp_path)


def test_parse_wikiextractor_keeps_body_when_first_line_is_not_the_title():
    (doc,) = parse_wikiextractor('<doc id="3" url="u" title="Tea">\nTea is a drink.\n</doc>\n')
    assert doc == ("3", "Tea", "Tea is a drink.")


def test_real_wikiextractor_file_from_wiki_dir(wiki_dir):
    c = load("wikiextractor", wiki_dir, max_documents=5)  # stops inside AA/wiki_00.gz
    docs = docs_of(c)
    assert len(docs) == 5 and docs["12"].title == "Anarchism"
    assert docs["12"].text.startswith("Anarchism is a political philosophy")  # no duplicated title line
    assert "<doc" not in docs["12"].text and "</doc>" not in docs["12"].text


# ---------------------------------------------------------------- wiki_dump (gensim wikicorpus)

def test_wiki_dump_strips_markup_and_counts_redirects_namespaces_and_empty_pages(tmp_path):
    c = load("wiki_dump", FIXTURES / "dump")
    docs = docs_of(c)
    assert docs["12"].text == ("Anarchism is a political philosophy that advocates stateless societies.\n"
                               "History.\nThe earliest anarchist themes can be found in the 6th century BC.")
    assert docs["39"] == Document("39", "Albedo", "Albedo is the diffuse reflectivity of a surface.")
    assert set(docs) == {"12", "39"}
    assert c.skipped == {"redirect": 1, "namespace": 1, "empty": 1}
    packed = tmp_path / "tiny-pages-articles.xml.bz2"
    packed.write_bytes(bz2.compress((FIXTURES / "dump" / "tiny-pages-articles.xml").read_bytes()))
    assert docs_of(load("wiki_dump", packed)) == docs


def test_malformed_xml_dump_names_file_and_line(tmp_path):
    bad = tmp_path / "broken-pages-articles.xml"
    bad.write_text('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">\n<page>\n<title>A</title>\n</mediawiki>\n')
    with pytest.raises(ValueError, match=r"broken-pages-articles.xml: line 4, column 2: malformed XML"):
        load("wiki_dump", bad)
    bad.write_text("<mediawiki>\n<page></page>\n</mediawiki>\n")
    with pytest.raises(ValueError, match=r"broken-pages-articles.xml: not a MediaWiki XML dump"):
        load("wiki_dump", bad)


@pytest.fixture(scope="module")
def embedded() -> Corpus:
    return load_corpus(DataConfig(source="wiki_dump"))


def test_embedded_gensim_excerpt_is_106_articles(embedded):
    assert embedded.source == "wiki_dump" and embedded.path.endswith(EMBEDDED_DUMP)
    assert len(embedded.train) + len(embedded.validation) == 106
    assert embedded.skipped == {"redirect": 99, "namespace": 1}
    s = embedded.stats()["splits"]
    assert 350_000 < s["train"]["words"] + s["validation"]["words"] < 500_000
    anarchism = docs_of(embedded)["12"]
    assert anarchism.text.startswith("Anarchism is a political philosophy")
    assert "'''" not in anarchism.text and "[[" not in anarchism.text and "{{" not in anarchism.text


def test_embedded_excerpt_max_documents_reads_the_first_pages(embedded):
    capped = load_corpus(DataConfig(source="wiki_dump", max_documents=10))
    first10 = sorted((int(i) for i in docs_of(embedded)), key=int)[:10]  # page ids increase through the dump
    assert sorted(int(i) for i in docs_of(capped)) == first10


# ---------------------------------------------------------------- text, jsonl, parquet

def test_wikitext_raw_gives_one_document_per_article_without_escapes():
    c = load("text", FIXTURES / "text" / "wiki.tiny.raw")
    assert [(d.title, d.text) for d in sorted(c.train + c.validation, key=lambda d: d.id)] == [
        ("Robert Boulter", "Robert Boulter is an English film , television and theatre actor .\nCareer.\n"
                           "He had a guest-starring role in 2000 , aged 1,000.5 years ."),
        ("Du Fu", "Du Fu was a prominent Chinese poet .\nEarly life.\nHe was born in 712 ."),
    ]


def test_plain_text_blank_lines_separate_documents():
    c = load("text", FIXTURES / "text" / "plain.txt")
    assert {d.id: d.text for d in c.train + c.validation} == {
        "plain.txt:0": "First document, first line.\nFirst document, second line.",
        "plain.txt:1": "Second document.",
        "plain.txt:2": "Third document.",
    }


JSONL_DOCS = {"a1": ("Alpha", "Alpha is the first letter."), "7": ("Beta", "Beta is the second letter."),
              "docs.jsonl:4": ("Gamma", "Gamma has no id.")}  # no id: file:line


def test_jsonl_reads_text_id_title_and_skips_empty():
    c = load("jsonl", FIXTURES / "table")
    assert {d.id: (d.title, d.text) for d in c.train + c.validation} == JSONL_DOCS
    assert c.skipped == {"empty": 1}


def test_parquet_reads_the_same_records(tmp_path):
    lines = (FIXTURES / "table" / "docs.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    df = pd.DataFrame(records)
    df["id"] = df["id"].astype("string")
    df.to_parquet(tmp_path / "part-0.parquet")
    c = load("parquet", tmp_path)
    got = {d.title: d.text for d in c.train + c.validation}
    assert got == {t: x for t, x in JSONL_DOCS.values()}
    assert docs_of(c)["part-0.parquet:2"].title == "Gamma"  # no id: file:row
    assert c.skipped == {"empty": 1}


def test_parquet_without_text_column_lists_columns(tmp_path):
    pd.DataFrame({"body": ["x"]}).to_parquet(tmp_path / "p.parquet")
    with pytest.raises(ValueError, match=r"p.parquet: no 'text' column \(columns: body\)"):
        load("parquet", tmp_path)


@pytest.mark.parametrize("line, message", [("{not json", "invalid JSON"), ('{"body": "x"}', "'text' key")])
def test_bad_jsonl_line_names_file_and_line(tmp_path, line, message):
    (tmp_path / "d.jsonl").write_text('{"text": "fine"}\n' + line + "\n")
    with pytest.raises(ValueError, match=rf"d.jsonl: line 2: .*{message}"):
        load("jsonl", tmp_path)


@pytest.mark.parametrize("sub, kind", [("wikiextractor", "wikiextractor"), ("dump", "wiki_dump"),
                                       ("text", "text"), ("table", "jsonl")])
def test_detect_source(sub, kind):
    assert detect_source(FIXTURES / sub) == kind


# ---------------------------------------------------------------- auto resolution

def test_auto_offline_without_wiki_dir_uses_embedded_excerpt_and_says_why(capsys):
    c = load_corpus(DataConfig(source="auto", max_documents=4))
    notice = capsys.readouterr().out.strip()
    assert c.source == "wiki_dump" and c.path.endswith(EMBEDDED_DUMP)
    assert notice.count("\n") == 0 and "embedded excerpt" in notice and "HF_HUB_OFFLINE=1" in notice
    assert "embedded excerpt" in c.notice and json.loads(c.to_json())["source"] == "wiki_dump"


def test_auto_uses_wiki_dir_when_set(monkeypatch, capsys):
    monkeypatch.setenv("WIKI_DIR", str(FIXTURES / "wikiextractor"))
    c = load_corpus(DataConfig(source="auto"))
    assert (c.source, c.path) == ("wikiextractor", str(FIXTURES / "wikiextractor"))
    assert "$WIKI_DIR" in capsys.readouterr().out and "$WIKI_DIR" in c.notice


def test_auto_prefers_hub_when_reachable_unless_a_path_is_given(monkeypatch):
    monkeypatch.setattr(corpus_mod, "hub_reachable", lambda timeout=2.0: (True, "huggingface.co reachable"))
    monkeypatch.setenv("WIKI_DIR", str(FIXTURES / "wikiextractor"))
    assert resolve_source(DataConfig(source="auto"))[:2] == ("hub", None)
    resolved = resolve_source(DataConfig(source="auto", path=str(FIXTURES / "dump")))
    assert resolved[:2] == ("wiki_dump", FIXTURES / "dump")


def test_hub_reachable_honours_offline_env_and_never_hangs(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert hub_reachable() == (False, "HF_HUB_OFFLINE=1")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: time.sleep(30))  # a black-holed network
    reachable, why = hub_reachable(timeout=0.2)
    assert not reachable and "did not answer within 0.2 s" in why

    def refuse(*a, **k):
        raise ConnectionRefusedError("refused")
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert hub_reachable(timeout=0.2) == (False, "huggingface.co unreachable: refused")


def test_hub_probe_threads_end_quietly_whatever_the_connect_does(monkeypatch):
    """A probe thread that outlives its timeout or fails with a non-OSError must not raise: an exception
    escaping it reaches threading.excepthook (pytest: PytestUnhandledThreadExceptionWarning), not the caller."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    escaped = []
    monkeypatch.setattr(threading, "excepthook", escaped.append)
    release = threading.Event()

    def late_and_not_a_socket(*a, **k):
        release.wait(10)
        return None  # .close() on it raises AttributeError, after hub_reachable has returned

    monkeypatch.setattr(socket, "create_connection", late_and_not_a_socket)
    before = set(threading.enumerate())
    assert hub_reachable(timeout=0.05)[0] is False
    probes = set(threading.enumerate()) - before
    release.set()
    for thread in probes:
        thread.join(10)

    def broken(*a, **k):
        raise ValueError("bad host")
    monkeypatch.setattr(socket, "create_connection", broken)
    assert hub_reachable(timeout=5) == (False, "huggingface.co unreachable: bad host")
    assert probes and escaped == []


# ---------------------------------------------------------------- split

def synthetic_docs(n: int) -> list[Document]:
    return [Document(str(i), f"Title {i}", f"text {i}") for i in range(n)]


def test_split_is_deterministic_disjoint_complete_and_order_independent():
    docs = synthetic_docs(2000)
    train, val = split_documents(docs, 0.3)
    assert {d.id for d in train}.isdisjoint(d.id for d in val)
    assert len(train) + len(val) == 2000 and 0.25 < len(val) / 2000 < 0.35
    assert split_documents(docs, 0.3) == (train, val)
    shuffled = docs[:]
    random.Random(1).shuffle(shuffled)
    train2, val2 = split_documents(shuffled, 0.3)
    assert {d.id for d in val2} == {d.id for d in val}
    train_ids = {d.id for d in train}
    assert [d.id for d in train] == [d.id for d in docs if d.id in train_ids]  # reading order kept


def test_split_membership_is_a_pinned_hash_independent_of_the_seed():
    # sha256 of (id, title): never changes across runs, machines, PYTHONHASHSEED or training seeds
    assert load_corpus(DataConfig(source="jsonl", path=str(FIXTURES / "table"), validation_fraction=0.5), seed=0) == \
        load_corpus(DataConfig(source="jsonl", path=str(FIXTURES / "table"), validation_fraction=0.5), seed=7)
    _, val = split_documents(synthetic_docs(40), 0.2)
    assert [d.id for d in val] == ["9", "13", "14", "20", "21", "29", "31", "32"]


def test_split_keeps_one_validation_document_when_the_hash_picks_none():
    train, val = split_documents(synthetic_docs(2), 1e-9)
    assert len(train) == 1 and len(val) == 1
    assert split_documents([Document("x", "", "t")], 1e-9) == ([Document("x", "", "t")], [])


# ---------------------------------------------------------------- faults

def test_missing_path_is_named():
    with pytest.raises(FileNotFoundError, match=r"data.path '/no/such/folder' does not exist"):
        load_corpus(DataConfig(source="wikiextractor", path="/no/such/folder"))


def test_missing_wiki_dir_is_named(monkeypatch):
    monkeypatch.setenv("WIKI_DIR", "/no/wiki/dir")
    with pytest.raises(FileNotFoundError, match=r"\$WIKI_DIR '/no/wiki/dir' does not exist"):
        load_corpus(DataConfig(source="auto"))


def test_local_source_without_any_path_says_what_to_set():
    with pytest.raises(FileNotFoundError, match=r"data.source=jsonl needs data.path or \$WIKI_DIR"):
        load_corpus(DataConfig(source="jsonl"))


def test_empty_corpus_names_source_and_path(tmp_path):
    (tmp_path / "wiki_00").write_text('<doc id="1" url="u" title="A">\nA\n\n</doc>\n')
    with pytest.raises(ValueError, match=rf"no documents in source=wikiextractor path={tmp_path} .*'empty': 1"):
        load("wikiextractor", tmp_path)


def test_invalid_utf8_is_replaced_and_counted(tmp_path):
    (tmp_path / "wiki_00").write_bytes(b'<doc id="1" url="u" title="A">\nA\n\nCaf\xe9 au lait \xff\xfe ok.\n</doc>\n')
    c = load("wikiextractor", tmp_path)
    assert docs_of(c)["1"].text == "Caf\ufffd au lait \ufffd\ufffd ok."
    assert c.skipped == {"invalid_utf8_bytes": 3}
    (tmp_path / "notes.txt").write_bytes(b"Bad \x80 byte here.\n")
    assert load("text", tmp_path / "notes.txt").skipped == {"invalid_utf8_bytes": 1}


# ---------------------------------------------------------------- stats and held-out sentences

def test_stats_count_documents_words_chars():
    c = Corpus([Document("1", "A", "one two three"), Document("2", "B", "four")], [Document("3", "C", "five six")],
               "jsonl", "/x", {"empty": 2}, "because")
    s = c.stats()
    assert s["splits"] == {"train": {"documents": 2, "words": 4, "chars": 17},
                           "validation": {"documents": 1, "words": 2, "chars": 8}}
    assert s["skipped"] == {"empty": 2} and json.loads(c.to_json()) == s
    assert "validation" in c.describe() and "empty=2" in c.describe()
    assert c.fingerprint() != Corpus(c.validation, c.train, "jsonl", "/x").fingerprint()


def test_validation_sentences_come_from_validation_only_with_length_filter():
    val_text = ("The first held out sentence has seven words. Short one. "
                "Another held out sentence is here too!\nA third held out sentence sits on its own line?")
    c = Corpus([Document("t", "", "A training sentence that must never be returned by the sampler.")],
               [Document("v", "", val_text)], "text", None)
    got = validation_sentences(c, 10, seed=0)
    assert sorted(got) == sorted(["The first held out sentence has seven words.",
                                  "Another held out sentence is here too!",
                                  "A third held out sentence sits on its own line?"])
    assert validation_sentences(c, 2, seed=0) == validation_sentences(c, 2, seed=0)
    assert len(validation_sentences(c, 2, seed=0)) == 2
    orders = {tuple(validation_sentences(c, 3, seed=s)) for s in range(10)}
    assert len(orders) > 1  # the seed matters


def test_validation_sentences_error_when_none_qualify():
    c = Corpus([], [Document("v", "", "Too short.")], "text", None)
    with pytest.raises(ValueError, match="no sentence of 5-60 words"):
        validation_sentences(c, 5)
