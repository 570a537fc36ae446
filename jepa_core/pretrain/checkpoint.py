"""Atomic, verified checkpoints: HF encoder + tokenizer + the full training state, safe against kill -9.

A checkpoint is a folder:

    encoder/            the student encoder via save_pretrained (safetensors) + tokenizer:
                        `AutoModel.from_pretrained(ckpt / "encoder")` works on any intermediate state
    model.safetensors   every weight of the training model (student, EMA target, heads, predictor, λ)
    state.pt            optimizer, scheduler, step, data position, RNG states, extras — tensors and
                        plain Python types only, read back with torch.load(weights_only=True), so
                        loading never unpickles arbitrary objects (never weights_only=False)
    meta.json           step, time, data position, format
    manifest.json       written LAST: the size and SHA-256 of every other file

Atomicity: everything is written into a sibling temp folder and fsynced, then swapped in by renames.
The last two checkpoints are kept: the current one at `path` and the one before it at `<path>.prev`
(`atomic_dir(keep_previous=True)`: `<path>.prev` → `.<name>.drop`, `path` → `<path>.prev`,
temp → `path`, then the dropped copy, three saves old, is deleted). Whatever moment a process dies, a
complete checkpoint survives: `resolve_checkpoint` looks at `path`, then `<path>.prev`, then `.<name>.old`
(where code before the rotation left it when it died mid-swap).

Verification (`verify_checkpoint`, run by `read_checkpoint` before anything is loaded): every file the
manifest lists must exist with its size and SHA-256. A folder without the manifest whose meta.json has a
`format` was not completely written; one without meta.json is not a checkpoint, even if its weights
survive. A checkpoint of the code before manifests (meta.json without `format`) is checked for what can
be: meta.json parses, model.safetensors is as long as its header says, state.pt loads. A bad one raises
`CorruptCheckpoint` naming the file; `resume.claim_checkpoint` moves it aside to
`<checkpoint>.corrupt-<time>/` and continues the previous good one (or starts from scratch).
A checkpoint that must not be resumed is moved aside (`set_aside`), never deleted.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import struct
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from safetensors.torch import load_model, save_model
from transformers.utils import logging as hf_logging

META = "meta.json"
STATE = "state.pt"
WEIGHTS = "model.safetensors"
ENCODER = "encoder"
MANIFEST = "manifest.json"
FORMAT = 2  # meta.json's `format`: 2 = written with a manifest (absent: the code before manifests)


class CorruptCheckpoint(ValueError):
    """A checkpoint folder that must not be loaded: `file` (relative to `path`) is missing, truncated,
    changed since it was written, or unreadable (`reason`)."""

    def __init__(self, path: str | os.PathLike, file: str, reason: str):
        super().__init__(f"checkpoint {path} is unusable: {file} {reason}")
        self.path, self.file, self.reason = Path(path), file, reason

    def __reduce__(self):  # picklable with its fields (raised in pool workers)
        return type(self), (self.path, self.file, self.reason)


# ---------------------------------------------------------------- atomic folders

def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)  # directories too: makes their new entries durable
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for path in [*root.rglob("*"), root]:
        _fsync(path)


def _sibling(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{tag}")


def previous(path: str | os.PathLike) -> Path:
    """Where the checkpoint before the current one is kept: `<path>.prev`."""
    path = Path(path)
    return path.with_name(f"{path.name}.prev")


@contextmanager
def atomic_dir(path: str | os.PathLike, keep_previous: bool = False) -> Iterator[Path]:
    """Yield a temp folder to fill; on success it replaces `path` atomically, on error it is dropped.
    keep_previous: the folder it replaces becomes `<path>.prev` (the one there before is deleted)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, old, drop = _sibling(path, "tmp"), _sibling(path, "old"), _sibling(path, "drop")
    if not path.exists() and old.exists():  # died mid-swap last time: the old copy is the good one
        os.replace(old, path)
    shutil.rmtree(tmp, ignore_errors=True)  # leftover of a write that died
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep_previous:
        # every moment leaves a complete folder at `path` or at `<path>.prev` (resolve_checkpoint's order);
        # with `path` absent (moved aside as corrupt), `<path>.prev` stays the one before the new folder
        shutil.rmtree(drop, ignore_errors=True)
        if path.exists():
            if previous(path).exists():
                os.replace(previous(path), drop)
            os.replace(path, previous(path))
        os.replace(tmp, path)
        _fsync(path.parent)
        shutil.rmtree(drop, ignore_errors=True)
        return
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    _fsync(path.parent)
    shutil.rmtree(old, ignore_errors=True)


def _holds_files(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def resolve_checkpoint(path: str | os.PathLike) -> Path | None:
    """The checkpoint folder stored for `path`: `path` itself, else the previous one (`<path>.prev`), else
    `.<name>.old` (a crash mid-swap of the code before `.prev`); the first that holds files. Whether it is
    complete and intact is `verify_checkpoint`'s question (read_checkpoint asks it)."""
    path = Path(path)
    for candidate in (path, previous(path), _sibling(path, "old")):
        if _holds_files(candidate):
            return candidate
    return None


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(folder: Path) -> None:
    """manifest.json: {relative path: {bytes, sha256}} of every file in `folder` (call it last)."""
    files = {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
             for p in _files(folder)}
    (folder / MANIFEST).write_text(json.dumps({"format": FORMAT, "files": files}, indent=1))


def _check_safetensors(found: Path, name: str) -> None:
    """A safetensors file is as long as its header says (catches truncation without reading the data)."""
    path = found / name
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                raise ValueError("header longer than the file")
            header = json.loads(f.read(n))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except FileNotFoundError:
        raise CorruptCheckpoint(found, name, "is missing") from None
    except (ValueError, KeyError, TypeError, IndexError, struct.error) as exc:
        raise CorruptCheckpoint(found, name, f"has no readable safetensors header ({exc})") from None
    if size != 8 + n + end:
        raise CorruptCheckpoint(found, name, f"is {size:,} bytes, its header describes {8 + n + end:,} "
                                             "(truncated or damaged)")


def _read_json(found: Path, name: str) -> dict[str, Any]:
    try:
        value = json.loads((found / name).read_text())
    except FileNotFoundError:
        raise CorruptCheckpoint(found, name, "is missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CorruptCheckpoint(found, name, f"is not readable JSON ({exc})") from None
    if not isinstance(value, dict):
        raise CorruptCheckpoint(found, name, "is not a JSON object")
    return value


def verify_checkpoint(found: str | os.PathLike) -> bool:
    """Raise CorruptCheckpoint (naming the file) unless the folder `found` is a complete, intact
    checkpoint (module docstring). Returns True when a manifest verified every file, False for a
    checkpoint of the code before manifests (only what can be checked without one was)."""
    found = Path(found)
    if not (found / MANIFEST).is_file():
        if not (found / META).is_file():
            survivors = ", ".join(p.relative_to(found).as_posix() for p in _files(found)[:3]) or "nothing"
            raise CorruptCheckpoint(found, META, f"is missing (the folder holds {survivors}): not a complete "
                                                 "checkpoint")
        meta = _read_json(found, META)
        if "format" in meta:
            raise CorruptCheckpoint(found, MANIFEST, "is missing: the checkpoint was not completely written")
        if not isinstance(meta.get("step"), int):
            raise CorruptCheckpoint(found, META, "has no step")
        _check_safetensors(found, WEIGHTS)  # state.pt: read_checkpoint's weights_only load checks it
        return False
    listed = _read_json(found, MANIFEST).get("files")
    if not isinstance(listed, dict) or not {WEIGHTS, STATE, META} <= listed.keys():
        raise CorruptCheckpoint(found, MANIFEST, f"does not list {WEIGHTS}, {STATE} and {META}")
    for name, want in listed.items():  # sizes first: cheap, and they catch truncation
        path = found / name
        if not path.is_file():
            raise CorruptCheckpoint(found, name, "is missing (the manifest lists it)")
        if path.stat().st_size != want["bytes"]:
            raise CorruptCheckpoint(found, name, f"is {path.stat().st_size:,} bytes, the manifest says "
                                                 f"{want['bytes']:,} (truncated or changed)")
    for name, want in listed.items():
        if _sha256(found / name) != want["sha256"]:
            raise CorruptCheckpoint(found, name, "does not match its SHA-256 in the manifest (changed or damaged "
                                                 "after it was written)")
    return True


def set_aside(found: str | os.PathLike, name: str | os.PathLike, tag: str = "stale") -> Path:
    """Move the checkpoint folder `found` to a new sibling `<name>.<tag>-<YYYYmmdd-HHMMSS>[-n]` and
    return it: a checkpoint that must not be resumed (tag "stale") or cannot be ("corrupt") is kept,
    never deleted, and an earlier one set aside is never overwritten (a counter is appended when the
    name is taken)."""
    found, name = Path(found), Path(name)
    stem = f"{name.name}.{tag}-{time.strftime('%Y%m%d-%H%M%S')}"
    target, n = name.with_name(stem), 1
    while target.exists():
        target, n = name.with_name(f"{stem}-{n}"), n + 1
    os.replace(found, target)
    _fsync(target.parent)
    return target


def save_encoder(directory: str | os.PathLike, encoder: Any, tokenizer: Any = None) -> None:
    """`save_pretrained` of the encoder (and tokenizer) without transformers' per-save progress bar."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        encoder.save_pretrained(directory)
        if tokenizer is not None:
            tokenizer.save_pretrained(directory)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


# ---------------------------------------------------------------- RNG state as plain tensors

def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA generator states as tensors / ints (weights_only-loadable)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, torch.tensor(internal, dtype=torch.int64), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal.tolist()), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# ---------------------------------------------------------------- save / load

def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, step: int, data_position: dict[str, int], rng_states: list[dict[str, Any]],
                    encoder: Any = None, tokenizer: Any = None, extra: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint atomically to `path` (see the module docstring for the layout).

    `rng_states` holds one `capture_rng_state()` per process (rank order). `extra` must contain only
    tensors and plain Python types (it goes into state.pt). `encoder` (a PreTrainedModel) and
    `tokenizer` are saved HF-style into `encoder/` when given.
    """
    path = Path(path)
    with atomic_dir(path, keep_previous=True) as tmp:
        save_model(model, str(tmp / WEIGHTS))  # handles tied weights (decoder = input embeddings)
        torch.save({
            "step": int(step),
            "data_position": {k: int(v) for k, v in data_position.items()},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng_states": rng_states,
            "extra": extra or {},
        }, tmp / STATE)
        if encoder is not None:
            save_encoder(tmp / ENCODER, encoder, tokenizer)
        (tmp / META).write_text(json.dumps({"step": int(step), "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                            "data_position": data_position, "format": FORMAT}, indent=1))
        write_manifest(tmp)  # last: a folder without it was not completely written
    return path


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The stored training state of the checkpoint at `path` (`resolve_checkpoint`), verified and read once
    (state.pt, to CPU): {"step", "data_position", "optimizer", "scheduler", "rng_states", "extra", "path"};
    `restore_checkpoint` puts it into the model and optimizer. Raises FileNotFoundError when there is no
    checkpoint, CorruptCheckpoint (naming the file) when it is incomplete or damaged."""
    found = resolve_checkpoint(path)
    if found is None:
        raise FileNotFoundError(f"no complete checkpoint at {path} (expected {path}/{MANIFEST})")
    verify_checkpoint(found)
    try:
        # CPU first: RNG states must stay CPU tensors; the optimizer moves its state to the parameters' device.
        # weights_only, always: a file that needs more is refused, never unpickled
        state = torch.load(found / STATE, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CorruptCheckpoint(found, STATE, f"is not a readable training state ({type(exc).__name__}; it is "
                                              "never loaded with weights_only=False)") from exc
    if not isinstance(state, dict) or not {"step", "optimizer", "rng_states"} <= state.keys():
        raise CorruptCheckpoint(found, STATE, "does not hold a training state (step, optimizer, RNG states)")
    return {**state, "path": found}


def restore_checkpoint(state: dict[str, Any], model: torch.nn.Module | None = None,
                       optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                       map_location: str | torch.device = "cpu") -> None:
    """Load a `read_checkpoint` state into the given objects (in place); the weights are read from its
    folder to `map_location` (the model's device)."""
    if model is not None:
        missing, unexpected = load_model(model, str(state["path"] / WEIGHTS), strict=False, device=str(map_location))
        if missing or unexpected:
            raise RuntimeError(f"checkpoint {state['path']} does not match the model: missing {sorted(missing)}, "
                               f"unexpected {sorted(unexpected)}")
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])


def load_checkpoint(path: str | os.PathLike, model: torch.nn.Module | None = None,
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """`read_checkpoint` + `restore_checkpoint`: load the checkpoint at `path` into the given objects and
    return {"step", "data_position", "rng_states", "extra", "path"}."""
    state = read_checkpoint(path)
    restore_checkpoint(state, model, optimizer, scheduler, map_location)
    return {k: state[k] for k in ("step", "data_position", "rng_states", "extra", "path")}


def saved_step(found: str | os.PathLike) -> int | None:
    """The step of the checkpoint folder `found`, from its meta.json (the state is not read); None when
    meta.json is missing or unreadable."""
    try:
        return json.loads((Path(found) / META).read_text())["step"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
