"""Atomic checkpoints: HF encoder + tokenizer + the full training state, safe against kill -9.

A checkpoint is a folder:

    encoder/            the student encoder via save_pretrained (safetensors) + tokenizer:
                        `AutoModel.from_pretrained(ckpt / "encoder")` works on any intermediate state
    model.safetensors   every weight of the training model (student, EMA target, heads, predictor, λ)
    state.pt            optimizer, scheduler, step, data position, RNG states, extras — tensors and
                        plain Python types only, read back with torch.load(weights_only=True), so
                        loading never unpickles arbitrary objects
    meta.json           written last: a folder without it is incomplete and never loaded

Atomicity: everything is written into a sibling temp folder and fsynced, then swapped in with two
renames (current → `.old`, temp → current) and the old copy is deleted. Whatever moment a process
dies, one complete checkpoint survives: the previous one stays in place until the new one is
complete, and if the process died between the two renames `resolve_checkpoint` finds it at `.old`.
A checkpoint that must not be resumed is moved aside (`set_aside`), never deleted.
"""
from __future__ import annotations

import json
import os
import random
import shutil
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


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp folder to fill; on success it replaces `path` atomically, on error it is dropped."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = _sibling(path, "tmp"), _sibling(path, "old")
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
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    _fsync(path.parent)
    shutil.rmtree(old, ignore_errors=True)


def resolve_checkpoint(path: str | os.PathLike) -> Path | None:
    """The complete checkpoint stored at `path` (or at its `.old` sibling after a crash mid-swap)."""
    path = Path(path)
    for candidate in (path, _sibling(path, "old")):
        if (candidate / META).is_file():
            return candidate
    return None


def set_aside(found: str | os.PathLike, name: str | os.PathLike) -> Path:
    """Move the checkpoint folder `found` to a new sibling `<name>.stale-<YYYYmmdd-HHMMSS>[-n]` and
    return it: a checkpoint that must not be resumed is kept, never deleted, and an earlier stale
    copy is never overwritten (a counter is appended when the name is taken)."""
    found, name = Path(found), Path(name)
    stem = f"{name.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}"
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
    with atomic_dir(path) as tmp:
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
                                            "data_position": data_position}, indent=1))
    return path


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The stored training state of the complete checkpoint at `path`, read once (state.pt, to CPU):
    {"step", "data_position", "optimizer", "scheduler", "rng_states", "extra", "path"}; `restore_checkpoint`
    puts it into the model and optimizer. Raises FileNotFoundError when no complete checkpoint exists there."""
    found = resolve_checkpoint(path)
    if found is None:
        raise FileNotFoundError(f"no complete checkpoint at {path} (expected {path}/{META})")
    # CPU first: RNG states must stay CPU tensors; the optimizer moves its state to the parameters' device.
    return {**torch.load(found / STATE, map_location="cpu", weights_only=True), "path": found}


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


def saved_step(found: str | os.PathLike) -> int:
    """The step of the complete checkpoint folder `found`, from its meta.json (the state is not read)."""
    return json.loads((Path(found) / META).read_text())["step"]
