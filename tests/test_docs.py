"""The docs stand alone: code, docs, profiles and notebooks cite only files the repository contains.

A reader of a clone can follow every reference: a path like `docs/PROTOCOL.md`, a relative markdown
link (and its #anchor), "PROTOCOL.md §5.5" / "PROTOCOL.md, defect 4", and a `../` path must resolve
inside the repository. Documents outside it (the project's former `../shared/SPEC.md`) are not
citable. Paths that exist only at run time are allowed by the short list below, each with its reason.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCANNED_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".ipynb"}
SKIPPED_DIRS = {".git", ".venv", "outputs", "__pycache__", ".pytest_cache", ".ipynb_checkpoints", "build", "dist"}
# this file spells out the patterns it rejects, so it is not scanned itself
SKIPPED_FILES = {"tests/test_docs.py"}
# top-level folders of the repository: a path starting with one of them is a repo path
SOURCE_DIRS = ("jepa_core", "docs", "tests", "notebooks", "parameters", ".ci")

# Paths that exist only at run time, never in a clone: (prefix or file name, why it is allowed).
RUNTIME_PREFIXES = {
    "outputs/": "run folders are created by `make run` / the workbook",
    "../shared/data/": "data folders passed at run time as $GLUE_DIR / $WIKI_DIR (.ci/run sets them); "
                       "data are never committed",
}
RUNTIME_FILE_NAMES = {
    "summary.md": "written into outputs/<run>/ by summary.write_summary",
}

_TOKEN_START = r"(?<![\w./<>{}*$-])"  # not inside a longer path or a template like outputs/<run>/
_TOKEN_END = r"(?![\w/<>{}*-])"
SPEC_CITATION = re.compile(r"\bSPEC\b(?![.\w])")  # "SPEC §3", "SPEC defect 4"; SPEC.md is a path
PARENT_PATH = re.compile(_TOKEN_START + r"((?:\.\./)+[\w.-]*[\w-](?:/[\w.-]*[\w-])*)")
MD_FILE = re.compile(_TOKEN_START + r"((?:\.\./|[\w.-]+/)*[\w-]+\.md)" + _TOKEN_END)
REPO_PATH = re.compile(_TOKEN_START + r"((?:" + "|".join(re.escape(d) for d in SOURCE_DIRS)
                       + r")/(?:[\w.-]+/)*[\w-]+\.\w+)" + _TOKEN_END)
MD_LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
SECTION_CITATION = re.compile(r"((?:[\w.-]+/)*[\w-]+\.md),? (?:§(\d+(?:\.\d+)*)|defect (\d+))")


def scanned_files(root: Path) -> list[Path]:
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if (path.suffix in SCANNED_SUFFIXES and path.is_file() and not SKIPPED_DIRS & set(rel.parts[:-1])
                and rel.as_posix() not in SKIPPED_FILES and not rel.parts[0].endswith(".egg-info")):
            files.append(path)
    return files


def texts(path: Path) -> list[tuple[str, str, bool]]:
    """(where, text, is_markdown) chunks of a file; a notebook gives one chunk per cell."""
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        return [(f"cell {i}", "".join(c["source"]), c["cell_type"] == "markdown") for i, c in enumerate(cells)]
    return [("", path.read_text(encoding="utf-8"), path.suffix == ".md")]


def _allowed(ref: str) -> bool:
    return ref.startswith(tuple(RUNTIME_PREFIXES)) or ref.rsplit("/", 1)[-1] in RUNTIME_FILE_NAMES


def _inside(root: Path, target: Path) -> bool:
    try:
        target.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return target.exists()


def _resolves(root: Path, citing: Path, ref: str) -> bool:
    """ref relative to the citing file's folder, or else to the repository root."""
    return _inside(root, citing.parent / ref) or _inside(root, root / ref)


def slug(heading: str) -> str:
    """GitHub's anchor for a markdown heading: lower case, punctuation dropped, spaces → '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(md: Path) -> set[str]:
    text = md.read_text(encoding="utf-8")
    found = set(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", text))
    found |= {slug(h) for h in re.findall(r"^#{1,6}\s+(.+?)\s*$", text, flags=re.M)}
    return found


def section_numbers(md: Path) -> set[str]:
    return set(re.findall(r"^#{1,6}\s+(\d+(?:\.\d+)*)\.?\s", md.read_text(encoding="utf-8"), flags=re.M))


def _md_target(root: Path, citing: Path, ref: str) -> Path | None:
    for base in (citing.parent, root):
        if _inside(root, base / ref):
            return base / ref
    return None


def broken_references(root: Path) -> list[str]:
    """Every reference in the scanned files that a reader of `root` could not follow, as 'file:line: ...'."""
    problems = []
    for path in scanned_files(root):
        rel = path.relative_to(root).as_posix()
        for where, text, is_markdown in texts(path):
            seen = set()  # start offsets: one report per reference, whichever patterns match it

            def report(match: re.Match, why: str) -> None:
                line = text.count("\n", 0, match.start()) + 1
                if match.start() in seen:
                    return
                seen.add(match.start())
                problems.append(f"{rel}:{where + ' ' if where else ''}line {line}: {match.group(0)!r} {why}")

            for m in SPEC_CITATION.finditer(text):
                report(m, "cites SPEC, a document outside the repository: cite docs/PROTOCOL.md")
            for pattern in (PARENT_PATH, MD_FILE, REPO_PATH):
                for m in pattern.finditer(text):
                    ref = m.group(1)
                    if not _allowed(ref) and not _resolves(root, path, ref):
                        report(m, "is not a file of the repository")
            for m in SECTION_CITATION.finditer(text):
                target = _md_target(root, path, m.group(1))
                if target is None:
                    continue  # reported above as a missing file
                if m.group(2) and m.group(2) not in section_numbers(target):
                    report(m, f"names a section that {m.group(1)} does not have")
                if m.group(3) and f"defect-{m.group(3)}" not in anchors(target):
                    report(m, f"names a defect that {m.group(1)} does not list")
            if not is_markdown:
                continue
            for m in MD_LINK.finditer(text):
                ref = m.group(1)
                if re.match(r"[a-z][a-z0-9+.-]*:", ref) or _allowed(ref):  # URLs, mailto:, run-time paths
                    continue
                file_part, _, anchor = ref.partition("#")
                target = (path.parent / file_part) if file_part else path
                if not _inside(root, target):
                    report(m, "links to a file the repository does not contain")
                elif anchor and target.suffix == ".md" and anchor not in anchors(target):
                    report(m, f"links to an anchor #{anchor} that {file_part or rel} does not have")
    return problems


def test_code_and_docs_cite_only_files_of_the_repository():
    problems = broken_references(REPO)
    assert not problems, "references a reader of the repository cannot follow:\n" + "\n".join(problems)


def test_the_protocol_has_the_sections_and_defects_the_code_cites():
    protocol = REPO / "docs" / "PROTOCOL.md"
    assert {"1", "2", "3", "4", "5", "5.1", "5.5", "5.6"} <= section_numbers(protocol)
    assert {f"defect-{n}" for n in range(1, 10)} | {"defects", "claims", "evaluation"} <= anchors(protocol)


@pytest.fixture
def mini_repo(tmp_path: Path) -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "jepa_core").mkdir()
    (tmp_path / "docs" / "PROTOCOL.md").write_text(
        '# Protocol\n\n## 1. Setup\n\n<a id="defect-1"></a>one\n\n### 1.2 Probes\n', encoding="utf-8")
    return tmp_path


def test_scanner_accepts_references_that_resolve(mini_repo: Path):
    (mini_repo / "README.md").write_text(
        "See [the protocol](docs/PROTOCOL.md#defect-1), [setup](docs/PROTOCOL.md#1-setup), "
        "docs/PROTOCOL.md §1.2, [site](https://example.org/x.md), `outputs/cpu/summary.md`, "
        "GLUE_DIR=../shared/data/glue_data and [a run](outputs/cpu/report.html).\n", encoding="utf-8")
    (mini_repo / "docs" / "OTHER.md").write_text("[up](../README.md), PROTOCOL.md, defect 1.\n", encoding="utf-8")
    (mini_repo / "jepa_core" / "m.py").write_text('"""Defects: docs/PROTOCOL.md, defect 1; SPECIAL ok."""\n')
    assert broken_references(mini_repo) == []


@pytest.mark.parametrize("text, fragment", [
    ("Protocol: ../shared/SPEC.md.", "'../shared/SPEC.md' is not a file"),
    ("(SPEC §3) conventions", "cites SPEC"),
    ("see docs/MISSING.md", "'docs/MISSING.md' is not a file"),
    ("see `jepa_core/nothing.py`", "'jepa_core/nothing.py' is not a file"),
    ("docs/PROTOCOL.md §7", "names a section"),
    ("docs/PROTOCOL.md, defect 9", "names a defect"),
])
def test_scanner_reports_references_outside_the_repository(mini_repo: Path, text: str, fragment: str):
    (mini_repo / "jepa_core" / "m.py").write_text(f'"""{text}"""\n', encoding="utf-8")
    problems = broken_references(mini_repo)
    assert len(problems) == 1 and fragment in problems[0] and problems[0].startswith("jepa_core/m.py:line 1:")


@pytest.mark.parametrize("link, fragment", [
    ("[spec](../shared/SPEC.md)", "links to a file"),
    ("[gone](docs/GONE.md)", "links to a file"),
    ("[bad anchor](docs/PROTOCOL.md#defect-7)", "anchor #defect-7"),
])
def test_scanner_reports_broken_markdown_links_also_in_notebooks(mini_repo: Path, link: str, fragment: str):
    notebook = {"cells": [{"cell_type": "code", "source": ["x = 1\n"]},
                          {"cell_type": "markdown", "source": ["# Title\n", f"Read {link}.\n"]}]}
    (mini_repo / "nb.ipynb").write_text(json.dumps(notebook), encoding="utf-8")
    problems = [p for p in broken_references(mini_repo) if fragment in p]
    assert problems and problems[0].startswith("nb.ipynb:cell 1 line 2:")
