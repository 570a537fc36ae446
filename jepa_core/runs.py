"""Where a run's files go: the one `<name>-s<seed>` folder rule and a pre-training run's paths.

Every folder and table name of a trained model comes from `folder_name`: the main runs (`model_name`),
the ablation variants (`study.variants.AblationRun.key`), the evaluated encoders
(`analysis.evaluate.ModelFolder.key`) and a run folder's layout (`RunPaths.for_run`).
"""
from __future__ import annotations

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

    @classmethod
    def in_folder(cls, out_dir: str | os.PathLike) -> "RunPaths":
        out = Path(out_dir)
        return cls(out / "model", out / "checkpoint", out / "log.jsonl", out / "train_summary.json", out / "data",
                   out / "tensorboard" / "run")

    @classmethod
    def for_run(cls, run_dir: str | os.PathLike, objective: str, seed: int | None = None) -> "RunPaths":
        """docs/DESIGN.md's run folder: models/<name>/, checkpoints/<name>/, logs/<name>.jsonl,
        logs/tensorboard/<name>/; name = `folder_name(objective, seed)`."""
        run, name = Path(run_dir), folder_name(objective, seed)
        model_dir = run / "models" / name
        return cls(model_dir, run / "checkpoints" / name, run / "logs" / f"{name}.jsonl",
                   model_dir / "train_summary.json", run / "data", run / "logs" / "tensorboard" / name)
