"""Which checkpoint a run continues: THE rule of the CLI's --resume and the workbook alike.

A checkpoint is continued when its run identity (`run_identity`: the objective, the seed and every
weight-changing parameter, i.e. all keys of data/model/mask/jepa/train except config.NON_WEIGHT_KEYS)
matches this run's; otherwise `claim_checkpoint` moves it aside to `<checkpoint>.stale-<time>/` (with
its log, summary and encoder snapshots, `set_aside`) with a message naming the changed keys. Nothing is
deleted. Checkpoints written before the `objective` section was renamed `jepa` compare under the new name.

A checkpoint that fails verification (`checkpoint.verify_checkpoint`: a file missing, truncated, changed
since it was written, or unreadable) is moved aside to `<checkpoint>.corrupt-<time>/` with a message
naming the file, and the previous checkpoint (`<checkpoint>.prev`, the one before it) is tried next;
when none is left the run starts from scratch, saying so.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable

from jepa_core.config import NON_WEIGHT_KEYS, RENAMED_SECTIONS, WEIGHT_SECTIONS, Params, hash_dict
from jepa_core.pretrain import checkpoint as ckpt
from jepa_core.runs import RunPaths


def _current_key(key: str) -> str:
    """A weight key as stored by an older checkpoint, under today's section name (objective.x -> jepa.x)."""
    section, dot, rest = key.partition(".")
    return f"{RENAMED_SECTIONS.get(section, section)}{dot}{rest}"


def run_identity(params: Params, objective: str, seed: int) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed: the objective, the seed and every key of
    WEIGHT_SECTIONS except NON_WEIGHT_KEYS, stored key by key so that a mismatch can be named."""
    d = params.to_dict()
    keys = {f"{section}.{k}": v for section in WEIGHT_SECTIONS for k, v in d[section].items()}
    return {"objective": objective, "seed": seed,
            "weight_keys": {k: v for k, v in keys.items() if k not in NON_WEIGHT_KEYS}}


def _changed_keys(saved: dict[str, Any], now: dict[str, Any], params: Params) -> list[str]:
    """'key: checkpoint value -> now value' for every identity key that differs."""
    if "weight_keys" not in saved:  # written before identities were stored key by key: the old rule
        d = params.to_dict()  # hashed under the section names of the time (jepa was called objective)
        old_hash = hash_dict({"data": d["data"], "model": d["model"], "mask": d["mask"], "objective": d["jepa"]})
        legacy = {"objective": now["objective"], "seed": now["seed"], "batch_size": params.train.batch_size,
                  "params (data/model/mask/jepa, one hash)": old_hash}
        saved = {**saved, "params (data/model/mask/jepa, one hash)": saved.get("params")}
        return [f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in legacy.items() if saved.get(k) != v]
    # keys that became NON_WEIGHT_KEYS after the checkpoint was written (train.report_to) do not count
    old = {key: v for k, v in saved["weight_keys"].items() if (key := _current_key(k)) not in NON_WEIGHT_KEYS}
    new = now["weight_keys"]
    changed = [f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in ("objective", "seed") if saved.get(k) != now[k]]
    return changed + [f"{k}: {old.get(k, '(absent)')!r} -> {new.get(k, '(absent)')!r}"
                      for k in sorted(old.keys() | new.keys()) if old.get(k, "(absent)") != new.get(k, "(absent)")]


def set_aside(paths: RunPaths, why: str, say: Callable[[str], None] = print) -> Path | None:
    """Move the run's checkpoint (with its log, summary and encoder snapshots) to a new
    `<checkpoint>.stale-<time>` folder and say so; nothing is deleted. Returns where it went (None: there
    was no checkpoint)."""
    found = ckpt.resolve_checkpoint(paths.checkpoint_dir)
    if found is None:
        return None
    stale = ckpt.set_aside(found, paths.checkpoint_dir)
    if found == paths.checkpoint_dir and ckpt.previous(found).exists():  # the one before it belongs to that run too
        os.replace(ckpt.previous(found), stale / "prev")
    if paths.log_path.is_file():  # the new run starts a new log: keep the old one with its checkpoint
        os.replace(paths.log_path, stale / "log.jsonl")
    if paths.summary_path.is_file():  # the model folder is replaced only when the new run finishes
        shutil.copy2(paths.summary_path, stale / "train_summary.json")
    if paths.snapshot_dir.is_dir():  # the encoder snapshots of that run go with it (train.snapshots)
        os.replace(paths.snapshot_dir, stale / "snapshots")
    step = ckpt.saved_step(stale)
    say(f"[train] {why}; the previous checkpoint (step {'?' if step is None else step}) was moved to "
        f"{stale}, nothing was deleted")
    return stale


def set_aside_corrupt(paths: RunPaths, corrupt: "ckpt.CorruptCheckpoint", say: Callable[[str], None] = print
                      ) -> Path:
    """Move the checkpoint folder that failed verification to `<folder>.corrupt-<time>/` and say which
    file is bad and what happens next (the previous checkpoint, or a start from scratch); nothing is deleted."""
    found = corrupt.path
    name = found if not found.name.startswith(".") else paths.checkpoint_dir  # `.<name>.old`: named as the checkpoint
    moved = ckpt.set_aside(found, name, tag="corrupt")
    after = ckpt.resolve_checkpoint(paths.checkpoint_dir)
    step = None if after is None else ckpt.saved_step(after)
    then = ("no earlier checkpoint is left: training starts from scratch" if after is None
            else f"trying the previous checkpoint {after} (step {'?' if step is None else step})")
    say(f"[train] checkpoint {found} is corrupt: {corrupt.file} {corrupt.reason}. It was moved to {moved} "
        f"(nothing was deleted); {then}")
    return moved


def claim_checkpoint(paths: RunPaths, params: Params, objective: str, seed: int,
                     say: Callable[[str], None] = print, is_main: bool = True,
                     barrier: Callable[[], None] = lambda: None) -> dict[str, Any] | None:
    """THE rule for an existing checkpoint (CLI --resume and the workbook alike): resume it when it is
    intact and its run identity matches this run's; a corrupt one is moved aside (`set_aside_corrupt`)
    and the previous one tried; one of other parameters is moved aside (`set_aside`), naming the changed
    keys. Returns the state to resume (`checkpoint.read_checkpoint`: read once, here) or None. Only the
    main process moves files; all agree on the answer."""
    while True:
        found = ckpt.resolve_checkpoint(paths.checkpoint_dir)
        if found is None:
            return None
        try:
            state, corrupt = ckpt.read_checkpoint(found), None
        except ckpt.CorruptCheckpoint as exc:
            state, corrupt = None, exc
        barrier()  # every process has read (or failed to read) the checkpoint before anything moves
        if corrupt is None:
            break
        if is_main:
            set_aside_corrupt(paths, corrupt, say)
        barrier()
    changed = _changed_keys(state["extra"], run_identity(params, objective, seed), params)
    barrier()  # every process has read the checkpoint before it moves
    if changed and is_main:
        set_aside(paths, f"{found} belongs to other weight-changing parameters ({'; '.join(changed)}): "
                         "training from scratch", say)
    barrier()
    return None if changed else state
