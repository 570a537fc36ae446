"""Pre-train one encoder with the hybrid JEPA + MLM objective or the MLM-only baseline.

    python -m jepa_core.pretrain.train --params parameters/smoke.yaml --objective hybrid --out outputs/x/hybrid
    accelerate launch --multi_gpu --num_processes 2 -m jepa_core.pretrain.train --params ... --objective mlm --out ...
    (without CUDA the same command, or `torchrun --nproc_per_node 2 -m jepa_core.pretrain.train ...`, runs
    gloo DDP on CPU processes)

`train(params, objective, out_dir)` reads top to bottom:
  1. data: (tokenizer, blocks) built here or passed in; a seeded batch order shared by both objectives;
     the FLOPs of a step of each objective (`step_costs`); the planned steps (`run_state.plan_steps`):
     train.budget "steps" — both objectives run train.steps (the paper); "flops" — the hybrid runs
     train.steps, the MLM run round(steps × FLOPs_hybrid / FLOPs_mlm); "seconds" — each runs
     budget_seconds of wall-clock (`run_state.TimeBudget`: the first steps are timed, then the LR / EMA
     schedules are given the step count that fits, and the run also stops when time is up)
  2. `Engine.build`: model, AdamW (no decay on biases / LayerNorm / λ), linear warm-up + cosine decay,
     Accelerate; on resume the checkpoint is claimed and read once (`resume.claim_checkpoint`) and
     `Engine.restore` returns its `RunState` (step, data position, tokens, FLOPs, elapsed time, plan)
  3. the loop, one step: Step 1 `forward_backward` (forward, backward, clip); Step 2 the processes agree
     that the step is finite and whether to stop; Step 3 `apply_update` (AdamW, LR, EMA); then, when
     due, an encoder snapshot (`snapshots.Snapshots`, train.snapshots points from step 0 on), the JSONL
     record (`run_state.log_record`), validation, the budget's re-plan, a checkpoint
  4. `run_summary`: train_summary.json (with a `learning` section, `learning.learning_check`: one full MLM
     pass for every objective; loss, unigram entropy and a context-free baseline on the same positions);
     `Engine.finish` writes the HF encoder + tokenizer to `model/`

Output layout (`RunPaths`): by default everything under one folder —
    out_dir/model/ (AutoModel.from_pretrained-loadable), out_dir/checkpoint/, out_dir/log.jsonl,
    out_dir/train_summary.json, out_dir/snapshots/step-<N>/
— or, with `RunPaths.for_run(run_dir, objective, seed)`, the run-folder layout of docs/DESIGN.md
(models/<name>/, checkpoints/<name>/, logs/<name>.jsonl, snapshots/<name>/, summary inside models/<name>/).

Batch size is GLOBAL: train.batch_size sequences per optimizer step, split evenly over processes,
so a 1-GPU and a 4-GPU run see the same batches. Batch b of epoch e is a fixed slice of a
permutation drawn from (seed, e), and the collator's masks come from (seed, e, item): the hybrid and
the MLM run see the same blocks in the same order with the same MLM masks, and a resumed run
continues exactly at the (epoch, batch) stored in its checkpoint.

Log (JSONL, every train.log_every steps): step, epoch, loss, mlm_loss, jepa_loss, lambda, lr,
ema_momentum, grad_norm (before clipping), tokens_per_s, target_std (mean per-dim std of the EMA
targets), batch_effective_rank (RankMe of the batch's context embeddings), flops (cumulative),
elapsed_s, and "warning" when a collapse signal fires; MLM runs write null for the JEPA-only fields.
Every train.eval_every steps: {"split": "validation", step, mlm_loss, jepa_loss} on fixed batches.

Resume: `resume.claim_checkpoint` (shared with the workbook) continues a checkpoint whose objective,
seed and weight-changing parameters match (all but config.NON_WEIGHT_KEYS); otherwise it is moved
aside to `<checkpoint>.stale-<time>/` (with its log), never deleted. The `RunState` travels in the
checkpoint as one unit, with every process's RNG state: a resumed run repeats the uninterrupted one.

Faults: a non-finite loss or gradient stops the run with `NonFiniteLossError` before the optimizer
step (the last checkpoint is left untouched; on one CUDA process the finite flag is read only when a
log record or checkpoint is due, so nothing non-finite is ever logged or saved); SIGINT / SIGTERM
finish the current step, write a checkpoint and raise
`TrainingInterrupted` (a KeyboardInterrupt; the CLI exits 130 / 143; the workbook: pretrain/jobs.py and
study/interrupts.py); kill -9 at any moment leaves the previous checkpoint intact (checkpoint.py writes
atomically and keeps the one before it); a checkpoint that fails verification is moved aside to
`<checkpoint>.corrupt-<time>/`, naming the bad file, and the previous one is resumed (`claim_checkpoint`).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import warnings
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from jepa_core import signals
from jepa_core.config import OBJECTIVES, Params, ParamsError, add_set_option, load_params, parse_overrides, save_params
from jepa_core.data.blocks import (
    BlockDataset,
    PreparedData,
    load_prepared_data,
    prepare_data,
)
from jepa_core.model import ema_momentum
from jepa_core.model.masking import PretrainCollator
from jepa_core.pretrain import checkpoint as ckpt
from jepa_core.pretrain.batches import BatchOrder, StepCosts, batch_stream, fixed_batches, step_costs
from jepa_core.pretrain.engine import Engine, accelerator, apply_update, emulated_bf16_note, forward_backward
from jepa_core.pretrain.learning import check_batches, learning_check, position_losses, unigram_distribution
from jepa_core.pretrain.numerics import numeric_environment
from jepa_core.pretrain.resume import claim_checkpoint
from jepa_core.pretrain.run_state import (
    Agree,
    JsonlLog,
    RunState,
    Throughput,
    TimeBudget,
    log_record,
    plan_steps,
    tensorboard_scalars,
)
from jepa_core.pretrain.snapshots import Snapshots
from jepa_core.runs import RunPaths


class NonFiniteLossError(FloatingPointError):
    """A loss or the gradient norm became NaN/inf; training stopped before the optimizer step."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM received: the current step finished and a checkpoint was written."""

    def __init__(self, signum: int, step: int, checkpoint_dir: Path):
        super().__init__(f"{signal.Signals(signum).name} at step {step}; checkpoint written to {checkpoint_dir}")
        self.signum, self.step, self.checkpoint_dir = signum, step, checkpoint_dir

    def __reduce__(self):  # picklable with its fields: pool workers (pretrain.jobs) raise it to their parent
        return type(self), (self.signum, self.step, self.checkpoint_dir)


# ---------------------------------------------------------------- data

def _as_data(data: Any) -> PreparedData:
    if isinstance(data, PreparedData):
        return data
    if isinstance(data, (tuple, list)) and len(data) in (2, 3):
        return PreparedData(*data)
    raise TypeError(f"data must be PreparedData or (tokenizer, blocks[, source]), got {type(data).__name__}")


# ---------------------------------------------------------------- collapse signal, OS signals

def batch_rankme(x: torch.Tensor) -> float:
    """RankMe (Garrido et al. 2023): exp of the entropy of the normalised singular values of x (n, d),
    uncentred, on one training batch (logged as `batch_effective_rank`); not geometry's centred effective rank."""
    s = torch.linalg.svdvals(x.float())
    p = s / s.sum().clamp_min(1e-12)
    return math.exp(-(p * torch.log(p.clamp_min(1e-12))).sum().item())


class StopFlag:
    """SIGINT/SIGTERM set a flag that the loop checks between steps; a second SIGINT aborts at once.

    A process that runs several trainings one after the other (the workbook's kernel, a pre-training pool
    worker: `jobs.pretrain_runs`) notes signals for as long as it runs them (`noting`, `start_noting`): a
    signal that arrives outside a training loop (loading, building, exporting) is kept in `StopFlag.noted`
    instead of killing the process (SIGTERM) or raising wherever it lands (SIGINT); a loop that starts after
    it stops after its first step with a checkpoint, and the job runner starts no further run."""

    noted: int | None = None  # the stop signal this process received while noting (class-wide)
    _noting = False

    def __init__(self):
        self.signum: int | None = StopFlag.noted

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt("second SIGINT: aborting without a checkpoint")
        self.signum = signum
        if StopFlag._noting:
            StopFlag.noted = signum
        print(f"\n[train] {signal.Signals(signum).name} received: finishing this step, then checkpointing",
              file=sys.stderr, flush=True)

    @staticmethod
    def _note(signum: int, _frame: Any) -> None:
        if StopFlag.noted == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt("second SIGINT: aborting without a checkpoint")
        StopFlag.noted = signum

    @staticmethod
    def start_noting() -> dict[int, Any]:
        """Note SIGINT/SIGTERM from now on (main thread only; elsewhere nothing changes); returns the
        handlers it replaced. A pool worker calls it once, as its initializer."""
        StopFlag.noted = None
        previous = signals.install(StopFlag._note)
        StopFlag._noting = bool(previous)
        return previous

    @staticmethod
    @contextmanager
    def noting() -> Iterator[None]:
        """`start_noting` for the block; the previous handlers come back after it and `noted` is cleared."""
        previous = StopFlag.start_noting()
        try:
            yield
        finally:
            signals.restore(previous)
            StopFlag.noted, StopFlag._noting = None, False

    @contextmanager
    def installed(self) -> Iterator["StopFlag"]:
        with signals.handled_by(self._handle):
            yield self


# ---------------------------------------------------------------- helpers of the run

def _write_log(log: JsonlLog, acc: Accelerator, record: dict[str, Any]) -> None:
    """One record to the JSONL log and, as scalars, to the trackers (none unless train.report_to asks):
    the values the record already holds, so TensorBoard costs no extra host sync."""
    log.write(record)
    acc.log(tensorboard_scalars(record), step=record["step"])


# ---------------------------------------------------------------- pieces of the step

def _due(step: int, every: int, total_steps: int) -> bool:
    """Whether a periodic action (log, validation, checkpoint) falls on step `step` (1-based): every
    `every` steps and at the last step."""
    return step % every == 0 or step == total_steps


def _check_due(step: int, t: Any, total_steps: int) -> bool:
    """Whether step `step` ends with a log record or a checkpoint."""
    return _due(step, t.log_every, total_steps) or _due(step, t.checkpoint_every, total_steps)


def step_values(out: dict[str, torch.Tensor], grad_norm: torch.Tensor, agree: Agree) -> dict[str, float | None]:
    """A step's scalars for the log, read from the device (host syncs): the losses and the targets'
    std averaged over the processes; λ, the gradient norm and the batch effective rank of this one."""
    zero = torch.zeros((), device=out["loss"].device)
    loss, mlm, jepa, target_std = agree([out["loss"].item(), out["mlm_loss"].item(),
                                         out.get("jepa_loss", zero).item(), out.get("target_std", zero).item()])
    return {"loss": loss, "mlm_loss": mlm, "jepa_loss": jepa, "target_std": target_std,
            "lambda": out["lambda"].item() if "lambda" in out else None, "grad_norm": grad_norm.item(),
            "batch_effective_rank": batch_rankme(out["context_embedding"])}


def _warn_collapse_once(run: RunState, record: dict[str, Any], objective: str) -> None:
    if "warning" in record and not run.warned_collapse:
        warnings.warn(f"{objective} step {run.step}: {record['warning']}", RuntimeWarning, stacklevel=3)
        run.warned_collapse = True


def _non_finite_message(out: dict[str, torch.Tensor], step: int, objective: str, grad_norm: float, lr: float,
                        good_checkpoint: Path | None, deferred: bool = False) -> str:
    values = {k: out[k].item() for k in ("loss", "mlm_loss", "jepa_loss", "lambda") if k in out}
    which = [k for k in ("mlm_loss", "jepa_loss", "loss") if k in values and not math.isfinite(values[k])]
    when = (f"by step {step} (checked at log/checkpoint steps on a GPU)" if deferred else f"at step {step}")
    return (f"non-finite {'/'.join(which) or 'gradient'} {when} of {objective}: "
            + ", ".join(f"{k}={v:.6g}" for k, v in values.items())
            + f", grad_norm={grad_norm:.6g}, lr={lr:.3g}. Training stopped before the optimizer step; "
            f"last good checkpoint: {good_checkpoint or 'none'}. Try a lower train.lr or a longer warm-up.")


def _start_message(objective: str, engine: Engine, costs: StepCosts, run: RunState, data_source: str) -> str:
    acc, flops = engine.acc, costs.flops
    target = f" (target pass {engine.target_precision})" if engine.target_precision else ""
    return (f"[train] {objective}: {sum(p.numel() for p in engine.core.parameters() if p.requires_grad):,} trained "
            f"parameters, {flops[objective]:.3g} FLOPs/step (hybrid/mlm = {flops['hybrid'] / flops['mlm']:.2f}), "
            f"{run.total_steps} steps ({run.budget_note}), device {acc.device}, precision {acc.mixed_precision}"
            f"{target}, {acc.num_processes} process(es), data {data_source}"
            + (f"\n[train] {note}" if (note := emulated_bf16_note(acc.mixed_precision, acc.device.type)) else ""))


def _postfix(record: dict[str, Any]) -> str:
    return (f"loss {record['loss']:.3f} mlm {record['mlm_loss']:.3f} jepa {_fmt(record['jepa_loss'])} "
            f"λ {_fmt(record['lambda'])}")


def _fmt(v: Any) -> str:
    return "null" if v is None else f"{v:.4f}"


# ---------------------------------------------------------------- the summary

def run_summary(params: Params, objective: str, seed: int, run: RunState, costs: StepCosts,
                last: dict[str, Any], final_validation: dict[str, Any] | None, learning: dict[str, Any],
                session: dict[str, Any]) -> dict[str, Any]:
    """train_summary.json. `last`: the last step's log record; `session`: wall_time_s, stopped_by,
    data_source, precision, device, target_precision, num_processes, resumed_from_step."""
    t, flops = params.train, costs.flops
    return {
        "objective": objective, "seed": seed, "steps": run.step, "planned_steps": run.total_steps,
        "tokens": run.tokens, "flops_per_step": flops[objective], "flops_per_step_parts": costs.parts[objective],
        "total_flops": run.flops, "flops_per_step_by_objective": flops,
        "hybrid_mlm_flops_ratio": flops["hybrid"] / flops["mlm"],
        "token_counts": asdict(costs.counts[objective]), "wall_time_s": session["wall_time_s"],
        "budget": {"mode": t.budget, "note": run.budget_note, "stopped_by": session["stopped_by"],
                   "budget_seconds": t.budget_seconds},
        "final": {k: last.get(k) for k in ("loss", "mlm_loss", "jepa_loss", "lambda", "target_std",
                                           "batch_effective_rank")},
        "final_validation": final_validation, "data_source": session["data_source"], "learning": learning,
        **{k: session[k] for k in ("precision", "device", "target_precision", "num_processes", "resumed_from_step")},
        "params": params.to_dict(),
    }


def _last_logged_step(log_path: Path) -> dict[str, Any]:
    """The last step record of a log (a resumed run that had already finished logs nothing new)."""
    records = [json.loads(ln) for ln in log_path.read_text().splitlines() if ln.strip()]
    return next((r for r in reversed(records) if "loss" in r and "split" not in r), {})


# ---------------------------------------------------------------- the run

@dataclass
class _Inputs:
    """Step 1's decisions: the data, this process's batch order, the fixed validation batches, the cost of
    a step of each objective, and a collator factory (one fresh collator per use)."""
    data: PreparedData
    order: BatchOrder
    val_batches: list[dict]
    costs: StepCosts
    new_collator: Callable[[], PretrainCollator]


def _inputs(params: Params, objective: str, seed: int, paths: RunPaths, acc: Any,
            data: PreparedData | tuple | None) -> _Inputs:
    """1. data, batch order, validation batches, cost of a step."""
    t = params.train
    if data is None:
        with acc.main_process_first():  # one process builds the caches, the others then read them
            data = prepare_data(params.data, paths.data_dir, seed)
    data = _as_data(data)
    new_collator = partial(PretrainCollator, data.tokenizer, params.mask, seed, objective, params.jepa.shared_pass,
                           t.static_shapes, params.data.seq_len)
    train_blocks = data.blocks["train"]
    order = BatchOrder(len(train_blocks), t.batch_size, seed, acc.process_index, acc.num_processes)
    val_batches = fixed_batches(data.blocks["validation"], new_collator(), t.eval_batches, t.batch_size)
    return _Inputs(data, order, val_batches, step_costs(params, data.tokenizer, train_blocks, seed), new_collator)


def _engine(params: Params, objective: str, seed: int, paths: RunPaths, acc: Any, inputs: _Inputs,
            resume: bool) -> tuple[Engine, RunState, int | None]:
    """2. planned steps, model, optimizer, schedule; the checkpoint claimed when resuming.
    Returns (engine, run state, the step resumed from or None)."""
    say = acc.print
    run = RunState(*plan_steps(params, objective, inputs.costs.flops))
    engine = Engine.build(params, objective, seed, inputs.data.tokenizer, run.total_steps, acc, paths.checkpoint_dir)
    state = (claim_checkpoint(paths, params, objective, seed, say, acc.is_main_process, acc.wait_for_everyone)
             if resume else None)
    if state is not None:
        run = engine.restore(state)
        say(f"[train] resumed {objective} from {state['path']} at step {run.step} (epoch {run.epoch}, "
            f"batch {run.batch})")
    elif resume:
        say(f"[train] no checkpoint in {paths.checkpoint_dir}: starting {objective} from scratch")
    elif ckpt.resolve_checkpoint(paths.checkpoint_dir) is not None:  # never overwrite a run by accident
        raise FileExistsError(f"{paths.checkpoint_dir} holds a checkpoint: pass resume=True (--resume) to "
                              "continue it, or delete it / choose another output folder to start over")
    return engine, run, run.step if state is not None else None


def _loop(params: Params, objective: str, paths: RunPaths, engine: Engine, run: RunState, inputs: _Inputs,
          budget: TimeBudget, resumed_from: int | None) -> tuple[dict[str, Any], str]:
    """3. the steps, until the plan, the clock or a signal ends them. Returns (last log record, stopped_by)."""
    t, acc, hybrid = params.train, engine.acc, objective == "hybrid"
    train_blocks = inputs.data.blocks["train"]
    log = JsonlLog(paths.log_path, acc.is_main_process, keep_until_step=resumed_from)
    # purge_step: TensorBoard drops an earlier session's events from this step on, as the JSONL log
    # drops its records after the checkpoint's step.
    acc.init_trackers(paths.tensorboard_dir.name, init_kwargs={"tensorboard": {"purge_step": (resumed_from or 0) + 1}})
    stream = batch_stream(BlockDataset(train_blocks), inputs.new_collator(), inputs.order, run.epoch, run.batch,
                          t.num_workers)
    tokens_per_step, flops_per_step = t.batch_size * train_blocks.shape[1], inputs.costs.flops[objective]
    throughput = Throughput(tokens_per_step, run.step)
    # disable=None, not False: tqdm then hides the bar when stderr is not a terminal (a redirected log, the
    # workbook's pool workers) and shows it in a terminal or a notebook; an explicit False would also
    # override the TQDM_DISABLE the workbook sets in its kernels.
    bar = tqdm(total=run.total_steps, initial=run.step, desc=objective, disable=None if acc.is_main_process else True,
               dynamic_ncols=True)
    # One CUDA process: reading the finite flag every step is a host sync that would stall the GPU's
    # queue, so it is read only when a log record or checkpoint is due (a non-finite step is then
    # caught before anything is logged or saved). Elsewhere: every step, before the optimizer step.
    deferred = acc.device.type == "cuda" and acc.num_processes == 1
    all_finite = torch.ones((), dtype=torch.bool, device=acc.device)
    stop, stopped_by, last = StopFlag(), "steps", {}
    # light encoder snapshots at train.snapshots points (step 0 included) for the trajectories (snapshots.py)
    snapshots = Snapshots(paths.snapshot_dir, t.snapshots, engine, objective, engine.identity["seed"],
                          fresh=resumed_from is None, say=acc.print)
    engine.model.train()
    with stop.installed(), closing(bar), closing(log):
        snapshots.start(run)
        while run.step < run.total_steps:
            if budget.time_is_up(engine.agree):
                stopped_by = "time"
                snapshots.last(run)
                engine.save(run, budget.elapsed())
                break
            run.epoch, run.batch, batch = next(stream)
            batch = {k: v.to(acc.device, non_blocking=True) for k, v in batch.items()}
            lr = engine.scheduler.get_last_lr()[0]
            momentum = ema_momentum(run.step, run.total_steps, params.jepa.ema_start, params.jepa.ema_end)
            # Step 1: forward (EMA target, context, losses), backward, gradient clipping
            out, grad_norm, finite = forward_backward(engine.model, batch, t.grad_clip, acc.backward,
                                                      acc.clip_grad_norm_)
            all_finite &= finite
            # Step 2: all processes agree whether every step so far was finite, and whether to stop
            check = (not deferred or _check_due(run.step + 1, t, run.total_steps) or stop.signum is not None
                     or snapshots.due(run.step + 1, run.total_steps))  # a snapshot is saved too: never non-finite
            bad, stopping = engine.agree([not bool(all_finite), stop.signum is not None]) if check else (0.0, 0.0)
            if bad:
                message = _non_finite_message(out, run.step + 1, objective, grad_norm.item(), lr,
                                              ckpt.resolve_checkpoint(paths.checkpoint_dir), deferred)
                log.write({"step": run.step + 1, "error": message})
                raise NonFiniteLossError(message)
            # Step 3: AdamW step, LR schedule, EMA update of the target encoder
            apply_update(engine.optimizer, engine.scheduler, engine.core, momentum)
            run.advance(tokens_per_step, flops_per_step, inputs.order.num_batches)
            snapshots.after_step(run)
            engine.early_fingerprint.after_step(run.step, run.total_steps, engine.core)

            if _due(run.step, t.log_every, run.total_steps):
                values = {**step_values(out, grad_norm, engine.agree), "lr": lr, "ema_momentum": momentum,
                          "tokens_per_s": throughput(run.step), "elapsed_s": budget.elapsed()}
                last = log_record(run, values, hybrid, t.collapse_std)
                _warn_collapse_once(run, last, objective)
                _write_log(log, acc, last)
                bar.set_postfix_str(_postfix(last), refresh=False)
            bar.update(1)
            if inputs.val_batches and _due(run.step, t.eval_every, run.total_steps):
                _write_log(log, acc, engine.validate(inputs.val_batches, run.step))
            if (plan := budget.replan(run.step, engine.agree)) is not None:  # budget=seconds, once
                run.total_steps, run.budget_note = plan
                engine.schedule.total = bar.total = run.total_steps
                acc.print(f"[train] {run.budget_note}")
            if _due(run.step, t.checkpoint_every, run.total_steps) or stopping:
                engine.save(run, budget.elapsed())
            if stopping:
                raise TrainingInterrupted(stop.signum or signal.SIGTERM, run.step, paths.checkpoint_dir)
    return last, stopped_by


def train(params: Params, objective: str, out_dir: str | os.PathLike | RunPaths, resume: bool = False,
          seed: int | None = None, data: PreparedData | tuple | None = None) -> dict[str, Any]:
    """Pre-train one model; returns the summary also written to train_summary.json.

    out_dir: a folder (RunPaths.in_folder layout) or a RunPaths. resume: continue from the checkpoint
    if one exists and its run identity matches (`claim_checkpoint`: else it is moved aside, never
    deleted, and the run starts fresh); without resume, an existing checkpoint is an error. seed:
    defaults to params.seed. data: PreparedData or (tokenizer, blocks[, source]) from the workbook's
    data step; None builds it in paths.data_dir.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r} is invalid: allowed {', '.join(OBJECTIVES)}")
    paths = out_dir if isinstance(out_dir, RunPaths) else RunPaths.in_folder(out_dir)
    seed = params.seed if seed is None else seed
    t = params.train
    acc = accelerator(t.precision, paths.tensorboard_dir if "tensorboard" in t.report_to else None)
    inputs = _inputs(params, objective, seed, paths, acc, data)  # 1.
    engine, run, resumed_from = _engine(params, objective, seed, paths, acc, inputs, resume)  # 2.
    seconds = t.budget_seconds if t.budget == "seconds" else None
    budget = TimeBudget(seconds, run.elapsed_s, probing=seconds is not None and resumed_from is None)
    acc.print(_start_message(objective, engine, inputs.costs, run, inputs.data.source))
    last, stopped_by = _loop(params, objective, paths, engine, run, inputs, budget, resumed_from)  # 3.

    # 4. summary and export -----------------------------------------------------------------------
    last = last or (_last_logged_step(paths.log_path) if run.step > 0 else {})
    final_validation = engine.validate(inputs.val_batches, run.step) if inputs.val_batches else None
    # the same full MLM pass for every model, and entropy, baseline and loss on exactly its positions
    positions = position_losses(engine.core, check_batches(inputs.data.blocks["validation"], inputs.data.tokenizer,
                                                            params, seed), acc.device, acc.autocast) \
        if inputs.val_batches else None
    tok = inputs.data.tokenizer
    learning = learning_check(positions, tok.mask_token_id,
                              unigram_distribution(inputs.data.blocks["train"], tok.all_special_ids, len(tok)),
                              final_validation)
    summary = run_summary(params, objective, seed, run, inputs.costs, last, final_validation, learning, session={
        "wall_time_s": budget.elapsed(), "stopped_by": stopped_by, "data_source": inputs.data.source,
        "precision": acc.mixed_precision, "device": str(acc.device), "target_precision": engine.target_precision,
        "num_processes": acc.num_processes, "resumed_from_step": resumed_from})
    # what can round differently on another machine, and where this run's path stood at an early step
    summary["numerics"] = {**numeric_environment(acc.mixed_precision, engine.target_precision),
                           "weights_fingerprint": engine.early_fingerprint.record(resumed_from)}
    if acc.num_processes > 1:  # DDP replicas must hold identical weights: record each one's hash
        summary["replica_weight_sha256"] = engine.replica_digests()
    engine.finish(paths, summary)
    acc.print(f"[train] {objective} done: {run.step} steps, {budget.elapsed():.1f} s, final loss "
              f"{_fmt(last.get('loss'))}, mlm {_fmt(last.get('mlm_loss'))}, jepa {_fmt(last.get('jepa_loss'))}, "
              f"λ {_fmt(last.get('lambda'))} -> {paths.model_dir}")
    return summary


# ---------------------------------------------------------------- CLI

def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jepa_core.pretrain.train", description=__doc__.split("\n")[0])
    ap.add_argument("--params", required=True, help="YAML profile, e.g. parameters/smoke.yaml")
    ap.add_argument("--objective", required=True, choices=OBJECTIVES)
    ap.add_argument("--out", required=True, help="output folder: model/, checkpoint/, log.jsonl, train_summary.json")
    ap.add_argument("--resume", action="store_true",
                    help="continue from OUT/checkpoint if it exists; one written with other weight-changing "
                    "parameters is moved aside to OUT/checkpoint.stale-<time>/ instead")
    ap.add_argument("--seed", type=int, default=None, help="default: the profile's first seed")
    ap.add_argument("--data", default=None,
                    help="prepared data folder (tokenizer/, blocks_*.npy); default: build in OUT/data")
    add_set_option(ap, "train.steps=100")
    args = ap.parse_args(argv)
    try:
        params = load_params(args.params, parse_overrides(args.sets))
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_params(params, out / "params.yaml")
    data = load_prepared_data(args.data) if args.data else None
    try:
        train(params, args.objective, out, resume=args.resume, seed=args.seed, data=data)
    except TrainingInterrupted as exc:
        print(f"[train] interrupted: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except NonFiniteLossError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
