"""What a workbook step reads besides its parameters: data sources and code, for the runner's reuse decisions.

A step's done-marker (`workbook.plan`) records, next to the fingerprint of its parameters and notebook, the
inputs below as they were when the step ran. A step whose recorded inputs differ from today's re-runs (and
every step after it), and the console says which input changed, e.g.
`03_probe: re-runs: GLUE_DIR changed (unset → /data/glue)`:

    01_data_prep   "Wikipedia": the source the data step will read, resolved as `corpus.resolve_source` does
                   (data.path or $WIKI_DIR with a content fingerprint of its files: relative names, sizes,
                   modification times; the hub's dataset name and config; or the excerpt embedded in gensim)
    03_probe       "GLUE_DIR" (or "eval.glue_dir"): the GLUE folder with a content fingerprint of the configured
                   tasks' folders, or "unset" (offline: no GLUE data) / "unset, hub nyu-mll/glue"; and "code":
                   the source of the evaluation (jepa_core/analysis, jepa_core/data/glue.py)
    04_geometry    "code": the source of the report (jepa_core/report)
    05_ablations   "code": the source of the study (jepa_core/study/ablations.py, variants.py)

Pre-training (02) is keyed on its parameters and on the data 01 prepared, nothing else: a GLUE change never
re-runs 01/02, and a change of pre-training code re-trains nothing (use --force). When 01 re-ran and the prepared
data changed (`data_fingerprint`), the runner has 02 (and 05's variants) train from scratch instead of resuming
checkpoints trained on other data. The hub's revision is not recorded: a dataset repository's revision moves with
unrelated commits, and a failed lookup would flip it, re-training for nothing; the config (`20231101.en`) names a
fixed dump.

A folder's fingerprint is its files' bytes (SHA-256) while it holds at most LISTED_FILES files and HASHED_BYTES
bytes (GLUE's tasks, the shared 37 MB Wikipedia sample: ~0.1 s), so a copy of the same data made afresh (new
modification times, same bytes) re-runs nothing: re-evaluating 13 encoders for a `cp -r` cost 13 minutes. A larger
folder (a full dump) is fingerprinted by names, sizes and modification times, which costs milliseconds.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

from jepa_core.config import Params

PACKAGE = Path(__file__).resolve().parents[1]  # jepa_core/
# step -> the package sources (relative to jepa_core/) whose changes change that step's outputs
CODE = {"03_probe": ("analysis", "data/glue.py"), "04_geometry": ("report",),
        "05_ablations": ("study/ablations.py", "study/variants.py")}
LISTED_FILES = 300  # a folder's files are recorded one by one up to this many (to name the changed ones)
HASHED_BYTES = 2 * 10**9  # ... and by their bytes while the listed files hold at most this much (~4 s to hash)
HUB_GLUE = "nyu-mll/glue"


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _walk(path: Path) -> dict[str, list[int]]:
    """relative name -> [size, mtime_ns] of every file at or under `path` (hidden ones skipped)."""
    if path.is_file():
        st = path.stat()
        return {path.name: [st.st_size, st.st_mtime_ns]}
    files = {}
    for folder, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            p = Path(folder) / name
            try:
                st = p.stat()
            except OSError:  # a dangling link: counted as changed when it reappears
                continue
            files[str(p.relative_to(path))] = [st.st_size, st.st_mtime_ns]
    return files


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def folder_content(path: Path, subfolders: list[str] | None = None) -> dict[str, Any]:
    """A content fingerprint of a file or folder (or of some of its subfolders): per file [size, mtime_ns, sha]
    while the folder is small enough to hash (module doc), else [size, mtime_ns]. `content` digests the names
    with the bytes' hashes when there are some (so a fresh copy of the same bytes keeps it), else with the times."""
    if not path.exists():
        return {"content": "missing", "summary": "does not exist", "files": {}}
    files: dict[str, list] = {}
    for sub in subfolders if subfolders is not None else [""]:
        where = path / sub if sub else path
        if where.exists():
            found = _walk(where)
            files.update({str(Path(sub) / k) if sub else k: v for k, v in found.items()})
    total = sum(entry[0] for entry in files.values())
    hashed = len(files) <= LISTED_FILES and total <= HASHED_BYTES
    if hashed:
        for name, entry in files.items():
            entry.append(_sha(path if path.is_file() else path / name))
    digest = hashlib.sha256(json.dumps(sorted((k, [v[0], v[-1]]) for k, v in files.items())).encode()).hexdigest()[:16]
    return {"content": digest, "summary": f"{len(files)} file(s), {_size(total)}",
            "files": files if len(files) <= LISTED_FILES else None}


class _Hub:
    """hub_reachable(), asked at most once, and only when an input depends on it."""

    def __init__(self, probe: Callable[[], tuple[bool, str]] | None = None):
        self.probe, self.answer = probe, None

    def reachable(self) -> bool:
        if self.answer is None:
            probe = self.probe
            if probe is None:
                from jepa_core.data.corpus import hub_reachable as probe
            self.answer = probe()[0]
        return self.answer


def wiki_input(params: Params, hub: _Hub) -> dict[str, Any]:
    """The Wikipedia source 01 will read, resolved as corpus.resolve_source does (without reading it)."""
    d = params.data
    wiki_dir = os.environ.get("WIKI_DIR") or None
    hub_value = {"value": f"hub {d.hub_name} {d.hub_config}"}
    embedded = {"value": "gensim's embedded excerpt"}
    if d.source == "hub":
        return hub_value
    if d.path is not None:
        where, path = "data.path", d.path
    elif d.source == "wiki_dump":
        return embedded
    elif d.source != "auto":
        if wiki_dir is None:
            return {"value": "$WIKI_DIR unset"}  # 01 fails saying so
        where, path = "$WIKI_DIR", wiki_dir
    elif hub.reachable():
        return hub_value
    elif wiki_dir is not None:
        where, path = "$WIKI_DIR", wiki_dir
    else:
        return embedded
    resolved = Path(path).expanduser().resolve()
    return {"value": f"{where}={resolved}", "what": "Wikipedia data", **folder_content(resolved)}


def glue_input(params: Params, hub: _Hub) -> tuple[str, dict[str, Any]]:
    """(name, entry) of the GLUE source 03 will read: the folder with the configured tasks' content, or the hub."""
    from jepa_core.data.glue import TASK_FOLDERS, resolve_glue_dir  # deferred: glue imports pandas

    name = "GLUE_DIR" if params.eval.glue_dir is None else "eval.glue_dir"
    root = resolve_glue_dir(params.eval.glue_dir)
    if root is None:
        return name, {"value": f"unset, hub {HUB_GLUE}" if hub.reachable() else "unset"}
    root = root.resolve()
    folders = sorted({f for t in params.eval.tasks for f in (TASK_FOLDERS.get(t, t), t)})
    return name, {"value": str(root), "what": f"GLUE data in {root}", **folder_content(root, folders)}


def code_input(parts: tuple[str, ...]) -> dict[str, Any]:
    """A hash of the Python sources under `parts` (paths relative to jepa_core/), one per part."""
    hashes = {}
    for part in parts:
        where = PACKAGE / part
        files = sorted(where.rglob("*.py")) if where.is_dir() else [where]
        h = hashlib.sha256()
        for f in files:
            if f.is_file() and "__pycache__" not in f.parts:
                h.update(str(f.relative_to(PACKAGE)).encode() + b"\0" + f.read_bytes() + b"\0")
        hashes[f"jepa_core/{part}"] = h.hexdigest()[:16]
    digest = hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()[:16]
    return {"value": digest, "parts": hashes}


def step_inputs(params: Params, probe: Callable[[], tuple[bool, str]] | None = None) -> dict[str, dict[str, Any]]:
    """step -> {input name: entry} for the steps that read something besides their parameters (module doc).
    probe: the hub check (default corpus.hub_reachable; asked only when a source depends on it)."""
    hub = _Hub(probe)
    glue_name, glue = glue_input(params, hub)
    out: dict[str, dict[str, Any]] = {"01_data_prep": {"Wikipedia": wiki_input(params, hub)},
                                      "03_probe": {glue_name: glue}}
    for step, parts in CODE.items():
        out.setdefault(step, {})["code"] = code_input(parts)
    return out


def _same_file(old: list, new: list) -> bool:
    """One file's [size, mtime_ns(, sha)] entries: the same bytes. When both sides hashed them the hashes decide
    (a fresh copy keeps them); otherwise size and modification time do (markers written before hashing)."""
    if len(old) >= 3 and len(new) >= 3:
        return old[0] == new[0] and old[2] == new[2]
    return old[:2] == new[:2]


def _files_changed(old: dict, new: dict) -> str:
    added = sorted(new.keys() - old.keys())
    removed = sorted(old.keys() - new.keys())
    modified = sorted(k for k in old.keys() & new.keys() if not _same_file(old[k], new[k]))
    parts = [f"{len(names)} {what}: {', '.join(names[:3])}{' …' if len(names) > 3 else ''}"
             for what, names in (("modified", modified), ("added", added), ("removed", removed)) if names]
    return "; ".join(parts)


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Why a step's recorded inputs (`old`, from its marker) differ from today's (`new`): one phrase per changed
    input, e.g. "GLUE_DIR changed (unset → /data/glue)", "GLUE data in /data/glue changed (1 modified:
    SST-2/train.tsv)", "code changed (jepa_core/analysis)". Empty when nothing changed."""
    out = []
    for name in [*new, *(k for k in old if k not in new)]:
        o, n = old.get(name), new.get(name)
        if o is None:
            out.append(f"{name}: {n['value']} (not recorded when the step last ran)")
        elif n is None:
            out.append(f"{name}: no longer read")
        elif name == "code":
            if o.get("value") != n.get("value"):
                moved = [k for k in n.get("parts", {}) if o.get("parts", {}).get(k) != n["parts"][k]]
                out.append(f"code changed ({', '.join(moved) or 'sources'})")
        elif o.get("value") != n.get("value"):
            out.append(f"{name} changed ({o.get('value')} → {n.get('value')})")
        elif o.get("content") != n.get("content"):
            if o.get("files") is not None and n.get("files") is not None:
                detail = _files_changed(o["files"], n["files"])
                if detail:  # else only the times moved, and the bytes are the same (both sides hashed them)
                    out.append(f"{n.get('what', name)} changed ({detail})")
            else:
                out.append(f"{n.get('what', name)} changed ({o.get('summary')} → {n.get('summary')})")
    return out


# ---------------------------------------------------------------- the data pre-training was trained on

def data_fingerprint(run_dir: Path) -> str | None:
    """What 01 prepared in run_dir/data/: the corpus content fingerprint (corpus.json), the tokenizer files'
    bytes and the block files' sizes. None when there is no prepared data."""
    data = Path(run_dir) / "data"
    try:
        corpus = json.loads((data / "corpus.json").read_text()).get("fingerprint")
    except (OSError, ValueError):
        return None
    h = hashlib.sha256(str(corpus).encode())
    tokenizer = data / "tokenizer"
    for f in sorted(tokenizer.rglob("*")) if tokenizer.is_dir() else []:
        if f.is_file():
            h.update(str(f.relative_to(data)).encode() + b"\0" + f.read_bytes())
    for f in sorted(data.glob("blocks_*.npy")):
        h.update(f"{f.name}:{f.stat().st_size}".encode())
    return h.hexdigest()[:16]
