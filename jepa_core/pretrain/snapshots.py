"""Light encoder snapshots during pre-training (train.snapshots), for the trajectories of
analysis/trajectories.py: how the geometry evolves while the encoder learns.

At `runs.snapshot_steps(planned steps, train.snapshots)` — step 0 (the initial encoder, before the first
update), the last step, and points evenly spaced between — the trainer copies the student encoder
(`encoder_for_export`, the one models/<name>/ gets at the end) with `save_pretrained` (safetensors) and the
tokenizer into `snapshots/<name>/step-<N>/`, plus `snapshot.json` (step, planned steps, tokens, FLOPs),
written atomically (checkpoint.atomic_dir: a folder either is complete or is not there). No optimizer,
no EMA target, no heads: a few MB at the cpu profile's size. Every snapshot is the weights AT its step;
nothing is interpolated.

Resume: a resumed run keeps the snapshots its earlier sessions wrote (the same run: the checkpoint's
identity matched) and writes the points still ahead of it; a point it reaches again (an earlier session
wrote it after its last checkpoint) is written again, with the same weights (a resumed run repeats the
uninterrupted one). A run that starts from scratch moves an earlier run's snapshots aside to
`snapshots/<name>.stale-<time>/` (when its checkpoint was set aside, resume.set_aside already moved them
into the stale checkpoint folder); nothing is ever deleted. Only the main process writes.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from jepa_core.pretrain import checkpoint as ckpt
from jepa_core.pretrain.run_state import RunState
from jepa_core.runs import SNAPSHOT_META, snapshot_folder, snapshot_steps


def write_snapshot(folder: Path, encoder: Any, tokenizer: Any, run: RunState, objective: str,
                   seed: int | None, point: int, points: int) -> Path:
    """The encoder (save_pretrained) + tokenizer + snapshot.json into `folder`, atomically. point: the
    snapshot's index on the run's grid of `points` (0: the initial encoder, points − 1: the end)."""
    with ckpt.atomic_dir(folder) as tmp:
        ckpt.save_encoder(tmp, encoder, tokenizer)
        (tmp / SNAPSHOT_META).write_text(json.dumps({
            "step": run.step, "planned_steps": run.total_steps, "point": point, "points": points,
            "tokens": run.tokens, "flops": run.flops, "objective": objective, "seed": seed,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=1))
    return folder


class Snapshots:
    """The snapshot points of one run and the writing of them (module docstring).

        snapshots = Snapshots(paths.snapshot_dir, params.train.snapshots, engine, objective, seed, fresh)
        snapshots.start(run)       # before the first step: step 0 of a fresh run
        snapshots.after_step(run)  # after each optimizer update: the point of this step, if it is one
        snapshots.last(run)        # the run stopped early (budget=seconds): its final step
    """

    def __init__(self, directory: Path, count: int, engine: Any, objective: str, seed: int | None, fresh: bool,
                 say: Callable[[str], None] = print):
        self.directory, self.count, self.engine = Path(directory), count, engine
        self.objective, self.seed = objective, seed
        self.main = engine.acc.is_main_process
        self._plan: tuple[int, set[int]] = (-1, set())  # (planned steps, their snapshot steps)
        if count and fresh and self.main and self.directory.is_dir() and any(self.directory.iterdir()):
            stale = ckpt.set_aside(self.directory, self.directory)
            say(f"[train] {objective}: a new run from scratch; the earlier run's encoder snapshots were moved to "
                f"{stale}, nothing was deleted")

    def _take(self, run: RunState, point: int) -> None:
        if self.main:
            write_snapshot(snapshot_folder(self.directory, run.step), self.engine.core.encoder_for_export(),
                           self.engine.tokenizer, run, self.objective, self.seed, point, self.count)

    def start(self, run: RunState) -> None:
        if self.count and run.step == 0:
            self._take(run, 0)

    def due(self, step: int, total_steps: int) -> bool:
        """Whether step `step` of a plan of `total_steps` is a snapshot point. The plan can change once
        (budget=seconds re-plans): the points follow the current plan."""
        if self._plan[0] != total_steps:
            self._plan = (total_steps, set(snapshot_steps(total_steps, self.count)))
        return step in self._plan[1]

    def after_step(self, run: RunState) -> None:
        if self.due(run.step, run.total_steps):
            self._take(run, snapshot_steps(run.total_steps, self.count).index(run.step))

    def last(self, run: RunState) -> None:
        """The final step of a run the clock stopped: the end point of its grid."""
        if self.count and not (snapshot_folder(self.directory, run.step) / SNAPSHOT_META).is_file():
            self._take(run, self.count - 1)
