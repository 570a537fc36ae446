"""Pre-training jobs of a study: every (seed, objective) run of a profile, or any list of named runs,
into the run folder's layout (`runs.RunPaths.for_run`), one after the other or several at once on CPU.

The workbook's notebook 02 calls `pretrain_all`; the ablation study (`study.ablations`) calls
`pretrain_runs` with its variants' jobs.

SIGINT / SIGTERM (the workbook runner forwards them to its kernel's process group, which holds the pool
workers too): every run in its training loop finishes its step and writes a checkpoint (train.py's
`StopFlag`), no further run starts, and `pretrain_runs` raises `PretrainingInterrupted` naming the
checkpoints; the same call again continues them (`resume.claim_checkpoint`). The process that runs the
jobs and every pool worker note the signal while they are outside a training loop (`StopFlag.noting`),
so a SIGTERM never kills them half-way and a SIGINT never lands in the middle of a save.
"""
from __future__ import annotations

import multiprocessing
import signal
from concurrent.futures import CancelledError, ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from jepa_core.config import Params
from jepa_core.cpu import available_cores
from jepa_core.data.blocks import load_prepared_data
from jepa_core.pretrain.resume import set_aside
from jepa_core.pretrain.train import StopFlag, TrainingInterrupted, train
from jepa_core.runs import RunPaths, model_name


def pretrain(params: Params, run_dir: Path, objective: str, seed: int, data: Any, resume: bool = True,
             name: str | None = None) -> dict:
    """train() into the run folder layout. resume=True: continue the run's checkpoint when it was
    written with the same weight-changing parameters, else move it aside and start over
    (`resume.claim_checkpoint`, the rule the CLI's --resume follows too). resume=False (workbook
    --force): move any checkpoint aside and start over. No checkpoint is ever deleted. name: the
    folder name (default `model_name`; ablation runs pass their own)."""
    name = name or model_name(params, objective, seed)
    paths = RunPaths.for_run(run_dir, name)
    if not resume:
        set_aside(paths, f"{name}: --force re-trains from scratch")
    return train(params, objective, paths, resume=resume, seed=seed, data=data)


class PretrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped `pretrain_runs`: `checkpoints` {run name: step} were written by the runs that
    were training; `not_started` runs never began (their earlier checkpoints, if any, are as they were)."""

    def __init__(self, signum: int, checkpoints: dict[str, int], not_started: Sequence[str] = ()):
        self.signum, self.checkpoints, self.not_started = int(signum), dict(checkpoints), list(not_started)
        written = ", ".join(f"step {step} for {name}" for name, step in self.checkpoints.items())
        parts = [f"checkpoints written at {written}" if written else "no run was in training: no checkpoint written"]
        if self.not_started:
            parts.append(f"not started: {', '.join(self.not_started)}")
        super().__init__("; ".join(parts))  # the workbook runner shows it after "interrupted (SIGTERM): "

    def __reduce__(self):
        return type(self), (self.signum, self.checkpoints, self.not_started)


def _start_worker() -> None:
    """Pool worker initializer: note stop signals for the worker's whole life (`StopFlag.start_noting`);
    the training loop of a run takes them over while it runs."""
    StopFlag.start_noting()


def _pretrain_in_process(params: Params, run_dir: Path, objective: str, seed: int, resume: bool, threads: int,
                        name: str | None = None) -> dict | None:
    """One run of pretrain_runs in a worker process: its own share of the cores. None: not started, this
    worker was told to stop before it began."""
    if StopFlag.noted is not None:
        return None
    torch.set_num_threads(threads)
    return pretrain(params, run_dir, objective, seed, load_prepared_data(run_dir / "data"), resume, name)


# a pre-training job of pretrain_runs: (folder name, parameters, objective, seed)
Job = tuple[str, Params, str, int]


def pretrain_all(params: Params, run_dir: Path, resume: bool = True, echo: Callable[[str], None] = print
                 ) -> dict[str, dict]:
    """Every (seed, objective) run of the profile, from the data step's folder; {model name: summary}.

    train.parallel_runs > 1 (CPU only) runs that many at once, each in a spawned process with
    cores / parallel_runs threads: a small encoder uses two cores poorly (its matmuls are too small to
    split), so two single-thread runs side by side should finish sooner than one after the other (not
    yet measured side by side; the cpu reference run used it: docs/results/cpu/). Each run is the same
    computation either way but for the thread count's rounding. On a GPU the runs take turns on it."""
    jobs = [(model_name(params, o, s), params, o, s) for s in params.seeds for o in params.objectives]
    return pretrain_runs(jobs, run_dir, params.train.parallel_runs, resume, echo)


def pretrain_runs(jobs: Sequence[Job], run_dir: Path, parallel_runs: int, resume: bool = True,
                  echo: Callable[[str], None] = print) -> dict[str, dict]:
    """The pre-training jobs, `parallel_runs` at a time on CPU (pretrain_all's docstring); {name: summary}.
    Raises PretrainingInterrupted after SIGINT/SIGTERM (module docstring)."""
    parallel = 1 if torch.cuda.is_available() else min(parallel_runs, len(jobs))
    summaries: dict[str, dict] = {}
    stopped: dict[str, int] = {}  # run name -> the step its checkpoint was written at
    with StopFlag.noting():
        if parallel <= 1:
            data = load_prepared_data(run_dir / "data")
            for name, p, o, s in jobs:
                if StopFlag.noted is not None:
                    break
                try:
                    summaries[name] = pretrain(p, run_dir, o, s, data, resume, name)
                except TrainingInterrupted as exc:
                    stopped[name] = exc.step
                    break
        else:
            _pretrain_in_pool(jobs, run_dir, parallel, resume, echo, summaries, stopped)
        signum = StopFlag.noted
    not_started = [name for name, *_ in jobs if name not in summaries and name not in stopped]
    if stopped or not_started:  # a signal after the last run finished stops nothing here
        raise PretrainingInterrupted(signum or signal.SIGTERM, stopped, not_started)
    return summaries


def _pretrain_in_pool(jobs: Sequence[Job], run_dir: Path, parallel: int, resume: bool, echo: Callable[[str], None],
                      summaries: dict[str, dict], stopped: dict[str, int]) -> None:
    """pretrain_runs on `parallel` spawned worker processes; fills `summaries` and `stopped` in job order."""
    threads = max(1, available_cores() // parallel)
    echo(f"[pretrain] {len(jobs)} runs, {parallel} at a time, {threads} thread(s) each")
    with ProcessPoolExecutor(parallel, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_start_worker) as pool:
        futures = {name: pool.submit(_pretrain_in_process, p, run_dir, o, s, resume, threads, name)
                   for name, p, o, s in jobs}
        for name, future in futures.items():
            try:
                summary = future.result()
            except TrainingInterrupted as exc:
                stopped[name] = exc.step
                StopFlag.noted = StopFlag.noted or exc.signum
                summary = None
            except CancelledError:
                summary = None
            if StopFlag.noted is not None:  # start nothing more (a queued run whose worker was signalled returns None)
                for other in futures.values():
                    other.cancel()
            if summary is not None:
                summaries[name] = summary
                echo(f"[pretrain] {name}: {summary['steps']} steps in {summary['wall_time_s']:.0f} s")
