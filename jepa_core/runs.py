"""Where a run's files go: the one `<name>-s<seed>` folder rule, a pre-training run's paths, and the
encoder snapshots it keeps along the way.

Every folder and table name of a trained model comes from `folder_name`: the main runs (`model_name`),
the ablation variants (`study.variants.AblationRun.key`), the evaluated encoders
(`analysis.evaluate.ModelFolder.key`) and a run folder's layout (`RunPaths.for_run`).

Snapshots (train.snapshots): `snapshot_steps` says at which steps a run keeps a light copy of its encoder
(pretrain/snapshots.py writes them), `list_snapshots` reads them back (analysis/trajectories.py). Here,
below both, so that the writer and the reader share one layout.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from jepa_core.config import Params


def folder_name(name: str, seed: int | None) -> str:
    """`name`, suffixed with -s<seed> when a seed is given (a run with several seeds)."""
    return name if seed is None else f"{name}-s{seed}"


def model_name(params: Params, objective: str, seed: int) -> str:
    """models/<name>/ of a main run: the objective, suffixed with -s<seed> when the profile has several seeds."""
    return folder_name(objective, None if len(params.seeds) == 1 else seed)


@dataclass
class RunPaths:
    model_dir: Path  # HF encoder + tokenizer, written when training ends
    checkpoint_dir: Path  # training state for resume (atomic)
    log_path: Path  # JSONL, one record per logged step / validation
    summary_path: Path  # train_summary.json
    data_dir: Path  # where train() builds the data when none is passed in
    tensorboard_dir: Path  # TensorBoard event files (train.report_to includes tensorboard)
    snapshot_dir: Path  # encoder snapshots, one step-<N>/ folder each (train.snapshots)

    @classmethod
    def in_folder(cls, out_dir: str | os.PathLike) -> "RunPaths":
        out = Path(out_dir)
        return cls(out / "model", out / "checkpoint", out / "log.jsonl", out / "train_summary.json", out / "data",
                   out / "tensorboard" / "run", out / "snapshots")

    @classmethod
    def for_run(cls, run_dir: str | os.PathLike, objective: str, seed: int | None = None) -> "RunPaths":
        """docs/DESIGN.md's run folder: models/<name>/, checkpoints/<name>/, logs/<name>.jsonl,
        logs/tensorboard/<name>/, snapshots/<name>/; name = `folder_name(objective, seed)`."""
        run, name = Path(run_dir), folder_name(objective, seed)
        model_dir = run / "models" / name
        return cls(model_dir, run / "checkpoints" / name, run / "logs" / f"{name}.jsonl",
                   model_dir / "train_summary.json", run / "data", run / "logs" / "tensorboard" / name,
                   run / SNAPSHOTS / name)


# ---------------------------------------------------------------- encoder snapshots

SNAPSHOTS = "snapshots"  # <run>/snapshots/<name>/step-<N>/
SNAPSHOT_META = "snapshot.json"  # written last into a snapshot folder: a folder without it is incomplete


def snapshot_steps(total_steps: int, count: int) -> list[int]:
    """The steps at which a run of `total_steps` planned steps keeps an encoder snapshot: `count` points
    evenly spaced from step 0 (before the first update) to `total_steps` (after the last), each rounded
    half up to a whole step (integer arithmetic: the same on every machine); fewer when the run is shorter
    than the grid (repeated steps count once); none when count is 0. Every point is a step the run
    reaches, so a snapshot is the weights at that step, never an interpolation."""
    if count <= 0 or total_steps < 0:
        return []
    if count == 1 or total_steps == 0:
        return [0]
    gaps = count - 1
    return sorted({(2 * i * total_steps + gaps) // (2 * gaps) for i in range(count)})


def snapshot_folder(snapshot_dir: str | os.PathLike, step: int) -> Path:
    return Path(snapshot_dir) / f"step-{int(step)}"


@dataclass(frozen=True)
class Snapshot:
    """One complete encoder snapshot: its folder (AutoModel / AutoTokenizer.from_pretrained-loadable) and
    the run's state when it was taken."""
    path: Path
    step: int  # optimizer steps done when the weights were copied (0: the initial encoder)
    planned_steps: int  # the run's planned steps at that moment
    point: int  # index on the grid of `points` snapshot_steps (0: the initial encoder, points − 1: the end):
    points: int  # runs of different lengths (mlm-flops) are compared point by point, at equal shares of their plans
    tokens: int  # tokens trained on up to that step
    flops: float  # training FLOPs spent up to that step
    objective: str
    seed: int | None


def list_snapshots(snapshot_dir: str | os.PathLike) -> list[Snapshot]:
    """The complete snapshots in a model's snapshot folder, by step (none: [])."""
    found = []
    for meta in Path(snapshot_dir).glob(f"step-*/{SNAPSHOT_META}"):
        m = json.loads(meta.read_text())
        found.append(Snapshot(meta.parent, int(m["step"]), int(m["planned_steps"]), int(m["point"]),
                              int(m["points"]), int(m["tokens"]), float(m["flops"]), m["objective"], m.get("seed")))
    return sorted(found, key=lambda s: s.step)
