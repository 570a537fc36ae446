"""Pre-training jobs of a study: every (seed, objective) run of a profile, or any list of named runs,
into the run folder's layout (`runs.RunPaths.for_run`), one after the other or several at once on CPU.

The workbook's notebook 02 calls `pretrain_all`; the ablation study (`study.ablations`) calls
`pretrain_runs` with its variants' jobs.
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from jepa_core.config import Params
from jepa_core.cpu import available_cores
from jepa_core.data.blocks import load_prepared_data
from jepa_core.pretrain.resume import set_aside
from jepa_core.pretrain.train import train
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


def _pretrain_in_process(params: Params, run_dir: Path, objective: str, seed: int, resume: bool, threads: int,
                        name: str | None = None) -> dict:
    """One run of pretrain_runs in a worker process: its own share of the cores."""
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
    """The pre-training jobs, `parallel_runs` at a time on CPU (pretrain_all's docstring); {name: summary}."""
    parallel = 1 if torch.cuda.is_available() else min(parallel_runs, len(jobs))
    if parallel <= 1:
        data = load_prepared_data(run_dir / "data")
        return {name: pretrain(p, run_dir, o, s, data, resume, name) for name, p, o, s in jobs}
    threads = max(1, available_cores() // parallel)
    echo(f"[pretrain] {len(jobs)} runs, {parallel} at a time, {threads} thread(s) each")
    with ProcessPoolExecutor(parallel, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {name: pool.submit(_pretrain_in_process, p, run_dir, o, s, resume, threads, name)
                   for name, p, o, s in jobs}
        summaries = {}
        for name, future in futures.items():
            summaries[name] = future.result()
            echo(f"[pretrain] {name}: {summaries[name]['steps']} steps in {summaries[name]['wall_time_s']:.0f} s")
    return summaries
