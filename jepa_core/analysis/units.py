"""Evaluate's (encoder, task) units: all in this process (device-native on a GPU, or one worker), or spread
over eval_workers() spawned single-threaded processes on the CPU; results merged in encoder, then task order.
Split from evaluate.py (which imports these back); the unit's own work is evaluate.evaluate_task.
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from jepa_core import cpu, progress
from jepa_core.analysis import backend
from jepa_core.analysis.tables import ModelFolder, Results
from jepa_core.config import Params

if TYPE_CHECKING:
    from jepa_core.analysis.evaluate import TaskData


def eval_workers(setting: int | None, n_units: int) -> int:
    """Processes for evaluate_encoders: eval.workers, or (None) one per core, never more than units."""
    return max(1, min(setting or cpu.available_cores(), n_units))


_WORKER_ENCODER: dict = {}  # in a worker process: the encoder it loaded last (units come encoder by encoder)


def _evaluate_unit(enc: ModelFolder, data: TaskData, params: Params, out: Path) -> Results:
    """One (encoder, task) unit in a worker process."""
    key = (enc.key, str(enc.path), enc.random_init)
    from jepa_core.analysis import evaluate as ev
    cpu.no_nested_workers()  # this process is one of eval_workers(): no pools inside it
    results = Results()
    with ev._one_thread_each():
        if key not in _WORKER_ENCODER:
            _WORKER_ENCODER.clear()
            _WORKER_ENCODER[key] = ev.load_for_evaluation(enc, params)
        ev.evaluate_task(enc, data, _WORKER_ENCODER[key], params, out, results)
    return results


def evaluate_encoders(encoders: list[ModelFolder], datasets: list[TaskData], params: Params, out: Path,
                      results: Results, device: torch.device | None = None,
                      reused: dict[str, Results] | None = None) -> None:
    """Evaluate every (encoder, task) unit into `results`: device-native (`device`: all in this process, on it)
    or in this process or eval_workers() spawned processes; `reused` (key -> Results) merged in its place.

    A unit's numbers depend only on its encoder and its task's data (the bootstrap resamples
    included), so the tables are the same either way, row for row (units are merged in encoder,
    then task order). On the CPU path each unit runs single-threaded, so a 2-core machine evaluates
    two at once. Spawned, not forked: a CUDA context cannot be forked."""
    from jepa_core.analysis import evaluate as ev
    reused = reused or {}
    todo = [enc for enc in encoders if enc.key not in reused]
    units = [(enc, data) for enc in todo for data in datasets]
    workers = 1 if device is not None else eval_workers(params.eval.workers, len(units))
    progress.note(out, phase="start", units=len(units), workers=workers,  # read by the runner's progress display
                  device=str(device) if device is not None else "cpu")
    if workers == 1:
        with backend.on_device(device):
            for enc in encoders:
                if enc.key in reused:
                    results.merge(reused[enc.key])
                else:
                    ev.evaluate_encoder(enc, datasets, params, out, results)
        return
    parts: dict[int, Results] = {}
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_evaluate_unit, enc, data, params, out): i for i, (enc, data) in enumerate(units)}
        for done in tqdm(as_completed(futures), total=len(units), desc=f"evaluate ({workers} processes)",
                         unit="task"):
            parts[futures[done]] = done.result()
    done_units = iter(parts[i] for i in range(len(units)))
    for enc in encoders:
        for part in [reused[enc.key]] if enc.key in reused else [next(done_units) for _ in datasets]:
            results.merge(part)
