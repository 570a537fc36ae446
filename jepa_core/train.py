"""Pre-train one encoder with the hybrid JEPA + MLM objective or the MLM-only baseline.

    python -m jepa_core.train --params parameters/smoke.yaml --objective hybrid --out outputs/x/hybrid
    accelerate launch --multi_gpu --num_processes 2 -m jepa_core.train --params ... --objective mlm --out ...
    (without CUDA the same command, or `torchrun --nproc_per_node 2 -m jepa_core.train ...`, runs
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
     due, the JSONL record (`run_state.log_record`), validation, the budget's re-plan, a checkpoint
  4. `run_summary`: train_summary.json (with a `learning` section: the final validation MLM loss, the
     validation tokens' unigram entropy, and their gap); `Engine.finish` writes the HF encoder +
     tokenizer to `model/`

Output layout (`RunPaths`): by default everything under one folder —
    out_dir/model/ (AutoModel.from_pretrained-loadable), out_dir/checkpoint/, out_dir/log.jsonl,
    out_dir/train_summary.json
— or, with `RunPaths.for_run(run_dir, objective, seed)`, the run-folder layout of docs/DESIGN.md
(models/<name>/, checkpoints/<name>/, logs/<name>.jsonl, summary inside models/<name>/).

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
`TrainingInterrupted` (a KeyboardInterrupt; the CLI exits 130 / 143); kill -9 at any moment leaves
the previous checkpoint intact (checkpoint.py writes atomically).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import signal
import sys
import threading
import warnings
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import is_tensorboard_available, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .blocks import BlockDataset, validation_unigram_entropy
from .config import OBJECTIVES, Params, ParamsError, load_params, parse_overrides, save_params
from .flops import TokenCounts, measure_token_counts, training_flops_per_step
from .masking import PretrainCollator, item_generator
from .model import PretrainModel, ema_momentum, native_bf16
from .model_card import write_card
from .resume import claim_checkpoint, run_identity
from .run_state import (
    Agree,
    JsonlLog,
    RunState,
    Throughput,
    TimeBudget,
    log_record,
    plan_steps,
    tensorboard_scalars,
)

FLOPS_PROBE_BATCHES = 8  # batches collated to measure token counts for the FLOPs estimate


class NonFiniteLossError(FloatingPointError):
    """A loss or the gradient norm became NaN/inf; training stopped before the optimizer step."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM received: the current step finished and a checkpoint was written."""

    def __init__(self, signum: int, step: int, checkpoint_dir: Path):
        super().__init__(f"{signal.Signals(signum).name} at step {step}; checkpoint written to {checkpoint_dir}")
        self.signum, self.step, self.checkpoint_dir = signum, step, checkpoint_dir


# ---------------------------------------------------------------- where things go

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
        logs/tensorboard/<name>/; name = objective, or objective-s<seed> when `seed` is given (several
        seeds per run)."""
        run, name = Path(run_dir), objective if seed is None else f"{objective}-s{seed}"
        model_dir = run / "models" / name
        return cls(model_dir, run / "checkpoints" / name, run / "logs" / f"{name}.jsonl",
                   model_dir / "train_summary.json", run / "data", run / "logs" / "tensorboard" / name)


# ---------------------------------------------------------------- data

@dataclass
class PretrainData:
    tokenizer: Any  # PreTrainedTokenizerFast
    blocks: dict[str, np.ndarray]  # {"train": (N, L) int32, "validation": (M, L) int32}
    source: str = "given"  # the corpus source actually used (recorded in the summary)


def prepare_data(params: Params, data_dir: str | os.PathLike, seed: int) -> PretrainData:
    """The data step (blocks.prepare_data) as training's input."""
    from .blocks import prepare_data as data_step

    corpus, tokenizer, blocks = data_step(params.data, data_dir, seed)
    return PretrainData(tokenizer, blocks, f"{corpus.source}:{corpus.path or params.data.hub_name}")


def load_prepared_data(data_dir: str | os.PathLike) -> PretrainData:
    """Read a data folder written by the workbook's data step: tokenizer/, blocks_{train,validation}.npy
    and (optionally) corpus.json naming the source."""
    from transformers import AutoTokenizer

    data_dir = Path(data_dir)
    blocks = {}
    for split in ("train", "validation"):
        f = data_dir / f"blocks_{split}.npy"
        if not f.is_file():
            raise FileNotFoundError(f"prepared data folder {data_dir} lacks {f.name} (run the data step first)")
        blocks[split] = np.load(f, mmap_mode="r", allow_pickle=False)  # rows are read on demand
    tokenizer = AutoTokenizer.from_pretrained(data_dir / "tokenizer")
    source = "prepared:" + str(data_dir)
    if (data_dir / "corpus.json").is_file():
        meta = json.loads((data_dir / "corpus.json").read_text())
        source = f"{meta.get('source')}:{meta.get('path')}"
    return PretrainData(tokenizer, blocks, source)


def _as_data(data: Any) -> PretrainData:
    if isinstance(data, PretrainData):
        return data
    if isinstance(data, (tuple, list)) and len(data) in (2, 3):
        return PretrainData(*data)
    raise TypeError(f"data must be PretrainData or (tokenizer, blocks[, source]), got {type(data).__name__}")


class BatchOrder:
    """Which dataset rows form batch b of epoch e: a fixed slice of a permutation seeded by (seed, e).

    Depends on nothing but (seed, epoch, batch size, dataset size), so both objectives see the same
    order, a resumed run jumps straight to (epoch, batch), and no consumed batch is re-read.
    """

    def __init__(self, num_rows: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if batch_size % world:
            raise ParamsError(f"parameter train.batch_size={batch_size} is invalid: allowed a multiple of "
                              f"the number of processes ({world})")
        self.num_batches = num_rows // batch_size  # the incomplete last batch is dropped
        if self.num_batches == 0:
            raise ValueError(f"only {num_rows} training blocks: fewer than one batch of train.batch_size={batch_size}")
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.num_rows = num_rows

    def batches(self, epoch: int, start: int = 0) -> "_Batches":
        """This process's share of batches start.. of `epoch` (each a list of row indices)."""
        perm = torch.randperm(self.num_rows, generator=item_generator(self.seed, epoch, -1, "order"))
        per_rank = self.batch_size // self.world
        grid = perm[: self.num_batches * self.batch_size].view(self.num_batches, self.batch_size)
        return _Batches(grid[start:, self.rank * per_rank:(self.rank + 1) * per_rank])


class _Batches:
    """A DataLoader batch_sampler over the rows of an index grid (no Python list of the whole epoch)."""

    def __init__(self, grid: torch.Tensor):
        self.grid = grid

    def __len__(self) -> int:
        return len(self.grid)

    def __iter__(self) -> Iterator[list[int]]:
        return (row.tolist() for row in self.grid)


def _ignore_sigint(_worker_id: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's business


def batch_stream(dataset: Any, collator: PretrainCollator, order: BatchOrder, epoch: int, start: int,
                 num_workers: int) -> Iterator[tuple[int, int, dict[str, torch.Tensor]]]:
    """Yield (epoch, batch index, collated batch) forever, starting at (epoch, start)."""
    while True:
        collator.set_epoch(epoch)  # before the iterator exists: workers copy the collator
        loader = DataLoader(dataset, batch_sampler=order.batches(epoch, start), collate_fn=collator,
                            num_workers=num_workers, worker_init_fn=_ignore_sigint if num_workers else None,
                            pin_memory=torch.cuda.is_available(),
                            # own generator: creating an iterator must not draw from the global RNG
                            # (that would shift dropout after a resume)
                            generator=torch.Generator().manual_seed(order.seed))
        for b, batch in enumerate(loader, start=start):
            yield epoch, b, batch
        epoch, start = epoch + 1, 0


# ---------------------------------------------------------------- optimisation

def build_optimizer(model: PretrainModel, params: Params, fused: bool) -> torch.optim.AdamW:
    """AdamW; weight decay only on matrices (not on biases, LayerNorm weights, or λ's parameters)."""
    no_decay = {id(p) for p in model.balancer.no_decay_parameters()} if hasattr(model, "balancer") else set()
    decay, keep = [], []
    for p in model.parameters():
        if p.requires_grad:
            (keep if p.ndim < 2 or id(p) in no_decay else decay).append(p)
    groups = [{"params": decay, "weight_decay": params.train.weight_decay}, {"params": keep, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=params.train.lr, betas=(0.9, 0.999), fused=fused or None)


def forward_backward(model: torch.nn.Module, batch: dict[str, torch.Tensor], grad_clip: float,
                     backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
                     clip_grad_norm: Callable = torch.nn.utils.clip_grad_norm_,
                     ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """First half of a training step: forward (PretrainModel.forward: target, context, losses),
    backward, gradient clipping. Returns (outputs, grad norm, whether loss and grad norm are finite:
    a 0-dim bool tensor, so that reading it, a host sync on a GPU, is the caller's choice);
    the caller decides what a non-finite step means before `apply_update`. `backward` and
    `clip_grad_norm` are Accelerate's in the trainer (mixed precision, DDP), torch's in the benchmark."""
    out = model(batch)
    backward(out["loss"])
    grad_norm = clip_grad_norm(model.parameters(), grad_clip)
    return out, grad_norm, torch.isfinite(out["loss"]) & torch.isfinite(grad_norm)


def apply_update(optimizer: torch.optim.Optimizer, scheduler: Any, model: PretrainModel, momentum: float) -> None:
    """Second half: AdamW step, LR schedule step, clear the gradients, EMA update of the target."""
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    model.update_target(momentum)


class WarmupCosine:
    """LR multiplier: linear warm-up to 1, then cosine decay to `min_ratio` at `total` steps.

    Hand-written (not transformers.get_scheduler) because budget=seconds learns `total` only after a
    timed warm-up; as a plain object its fields are saved in the scheduler's state_dict.
    """

    def __init__(self, warmup: int, total: int, min_ratio: float):
        self.warmup, self.total, self.min_ratio = warmup, total, min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)  # never exactly 0: step 0 already learns a little
        progress = min((step - self.warmup) / max(self.total - self.warmup, 1), 1.0)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def mixed_precision(precision: str) -> str:
    """Accelerate's mixed_precision for train.precision: bf16 where asked for or (auto) supported on GPU."""
    if precision == "bf16":
        return "bf16"
    if precision == "auto" and native_bf16("cuda"):
        return "bf16"
    return "no"


# ---------------------------------------------------------------- collapse signal, OS signals

def batch_rankme(x: torch.Tensor) -> float:
    """RankMe (Garrido et al. 2023): exp of the entropy of the normalised singular values of x (n, d),
    uncentred, on one training batch (logged as `batch_effective_rank`); not geometry's centred effective rank."""
    s = torch.linalg.svdvals(x.float())
    p = s / s.sum().clamp_min(1e-12)
    return math.exp(-(p * torch.log(p.clamp_min(1e-12))).sum().item())


class StopFlag:
    """SIGINT/SIGTERM set a flag that the loop checks between steps; a second SIGINT aborts at once."""

    def __init__(self):
        self.signum: int | None = None

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt("second SIGINT: aborting without a checkpoint")
        self.signum = signum
        print(f"\n[train] {signal.Signals(signum).name} received: finishing this step, then checkpointing",
              file=sys.stderr, flush=True)

    @contextmanager
    def installed(self) -> Iterator["StopFlag"]:
        if threading.current_thread() is not threading.main_thread():  # handlers only work there
            yield self
            return
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


# ---------------------------------------------------------------- helpers of the run

def fixed_batches(blocks: np.ndarray, collator: PretrainCollator, n_batches: int, batch_size: int) -> list[dict]:
    """The first n_batches batches of `blocks`, collated once: same sequences, same masks at every evaluation."""
    dataset = BlockDataset(blocks)
    n = min(len(dataset), n_batches * batch_size)
    collator.set_epoch(0)
    return [collator([dataset[i] for i in range(s, min(s + batch_size, n))]) for s in range(0, n, batch_size)]


@dataclass
class StepCosts:
    """Token counts and FLOPs per step of BOTH objectives, measured on the first batches of the run
    (the same for the hybrid and the MLM run, so either can compute the FLOPs-parity step count)."""
    counts: dict[str, TokenCounts]
    parts: dict[str, dict[str, float]]  # flops.training_flops_per_step: FLOPs by part, and their "total"

    @property
    def flops(self) -> dict[str, float]:
        return {objective: parts["total"] for objective, parts in self.parts.items()}


def step_costs(params: Params, tokenizer: Any, train_blocks: np.ndarray, seed: int) -> StepCosts:
    dataset = BlockDataset(train_blocks)
    rows = BatchOrder(len(dataset), params.train.batch_size, seed).batches(0).grid[:FLOPS_PROBE_BATCHES].tolist()
    counts, parts = {}, {}
    for objective in OBJECTIVES:
        # the default (unpadded) collator: the planned steps must not depend on train.static_shapes
        collator = PretrainCollator(tokenizer, params.mask, seed, objective, params.jepa.shared_pass)
        counts[objective] = measure_token_counts(collator([dataset[i] for i in r]) for r in rows)
        parts[objective] = training_flops_per_step(params, len(tokenizer), objective, counts[objective])
    return StepCosts(counts, parts)


# ---------------------------------------------------------------- the trained objects

@dataclass
class Engine:
    """The model, optimizer and LR schedule as Accelerate prepared them, and what the run does with them
    that involves every process: agree on values, validate, save / restore a checkpoint, finish."""
    acc: Accelerator
    model: torch.nn.Module  # what the step runs (DDP-wrapped with several processes)
    core: PretrainModel  # the same model unwrapped: EMA update, checkpoints, export
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    schedule: WarmupCosine  # the scheduler's multiplier: budget=seconds changes its `total`
    checkpoint_dir: Path
    identity: dict[str, Any]  # run_identity, stored with every checkpoint
    tokenizer: Any  # saved with the encoder

    @classmethod
    def build(cls, params: Params, objective: str, seed: int, tokenizer: Any, total_steps: int, acc: Accelerator,
              checkpoint_dir: Path) -> "Engine":
        t = params.train
        set_seed(seed)  # same initial encoder + MLM head for both objectives (built first, in the same order)
        model = PretrainModel(params, objective, len(tokenizer), tokenizer.pad_token_id)
        # fused AdamW on CUDA and CPU alike (CPU: 38 → 8 ms per step at the bench defaults, docs/PERFORMANCE.md)
        optimizer = build_optimizer(model, params, fused=acc.device.type in ("cuda", "cpu"))
        schedule = WarmupCosine(t.warmup_steps, total_steps, t.min_lr_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        if t.compile:
            model.encoder = torch.compile(model.encoder)
        model, optimizer = acc.prepare(model, optimizer)  # not the scheduler: Accelerate would step it per process
        return cls(acc, model, acc.unwrap_model(model), optimizer, scheduler, schedule, checkpoint_dir,
                   run_identity(params, objective, seed), tokenizer)

    @property
    def target_precision(self) -> str | None:
        """The precision of the EMA target's forward pass (jepa.target_precision; hybrid only)."""
        if self.core.objective != "hybrid":
            return None
        return "bf16" if self.core.target_bf16(self.acc.device.type) else "fp32"

    def agree(self, values: list[float]) -> list[float]:
        """The processes' mean of `values`: every process must take the same branch."""
        if self.acc.num_processes == 1:  # nothing to agree on, and no device round trip (a sync on a GPU)
            return [float(v) for v in values]
        x = torch.tensor(values, dtype=torch.float64, device=self.acc.device)
        return self.acc.reduce(x, reduction="mean").tolist()

    @torch.no_grad()
    def validate(self, batches: list[dict], step: int) -> dict[str, Any]:
        """The validation record: mean losses over the fixed batches, in eval mode."""
        self.core.eval()
        outs = []
        for vb in batches:
            with self.acc.autocast():
                outs.append(self.core({k: v.to(self.acc.device) for k, v in vb.items()}))
        self.core.train()
        mean = lambda key: sum(o[key].item() for o in outs) / len(outs)  # noqa: E731
        return {"split": "validation", "step": step, "mlm_loss": mean("mlm_loss"),
                "jepa_loss": mean("jepa_loss") if self.core.objective == "hybrid" else None}

    def save(self, run: RunState, elapsed_s: float) -> None:
        """Checkpoint the run as it stands, `elapsed_s` into its state: weights, optimizer, schedule,
        every process's RNG state and the run state as one unit."""
        run.elapsed_s = elapsed_s
        rng = [ckpt.capture_rng_state()]
        if self.acc.num_processes > 1:  # each process has its own dropout RNG
            rng = [None] * self.acc.num_processes
            torch.distributed.all_gather_object(rng, ckpt.capture_rng_state())
        if self.acc.is_main_process:
            ckpt.save_checkpoint(self.checkpoint_dir, self.core, self.optimizer, self.scheduler, run.step,
                                 run.data_position, rng, encoder=self.core.encoder_for_export(),
                                 tokenizer=self.tokenizer, extra={**self.identity, **run.to_checkpoint()})
        self.acc.wait_for_everyone()

    def restore(self, state: dict[str, Any]) -> RunState:
        """Put a checkpoint's state (from `claim_checkpoint`) into the model, optimizer, schedule and this
        process's RNGs; returns the run state it was saved with."""
        ckpt.restore_checkpoint(state, self.core, self.optimizer, self.scheduler, map_location=self.acc.device)
        run = RunState.from_checkpoint(state)
        self.schedule.total = run.total_steps
        rng = state["rng_states"]
        if len(rng) != self.acc.num_processes:
            warnings.warn(f"checkpoint has RNG states of {len(rng)} processes, this run has {self.acc.num_processes}: "
                          "dropout after the resume will differ from an uninterrupted run")
        ckpt.restore_rng_state(rng[min(self.acc.process_index, len(rng) - 1)])
        return run

    def replica_digests(self) -> list[str]:
        """Each process's SHA-256 of its weights (DDP replicas must be identical)."""
        digests = [None] * self.acc.num_processes
        torch.distributed.all_gather_object(digests, _weights_digest(self.core))
        return digests

    def finish(self, paths: RunPaths, summary: dict[str, Any]) -> None:
        """Write model/ (HF encoder + tokenizer + summary) atomically and the summary file; release the
        process group."""
        if self.acc.is_main_process:
            with ckpt.atomic_dir(paths.model_dir) as tmp:
                ckpt.save_encoder(tmp, self.core.encoder_for_export(), self.tokenizer)
                (tmp / "train_summary.json").write_text(json.dumps(summary, indent=1))
                if (paths.model_dir / "README.md").exists():  # the folder is replaced: keep a hand-edited card
                    shutil.copy2(paths.model_dir / "README.md", tmp / "README.md")
                write_card(tmp, summary)  # training facts; the summary step adds the evaluation
            paths.summary_path.parent.mkdir(parents=True, exist_ok=True)
            paths.summary_path.write_text(json.dumps(summary, indent=1))
        self.acc.wait_for_everyone()
        # An undestroyed gloo group can abort the process at exit (pytorch#190489); end_training also
        # closes the TensorBoard writer (train.report_to).
        if self.acc.num_processes > 1 or self.acc.trackers:
            self.acc.end_training()


def _weights_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for p in model.state_dict().values():
        h.update(p.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _accelerator(precision: str, tensorboard_dir: Path | None = None) -> Accelerator:
    """The run's Accelerator; with `tensorboard_dir`, its TensorBoard tracker is set up to write there
    (Accelerate's tracker API: it writes on the main process only, and the trainer already holds an
    Accelerator, so no second writer is needed)."""
    # Several processes without CUDA (torchrun / accelerate launch on CPU): Accelerate sets up gloo
    # DDP only when told cpu=True.
    multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    if tensorboard_dir is not None and not is_tensorboard_available():
        raise ImportError("train.report_to includes tensorboard but the tensorboard package is not installed: "
                          "pip install tensorboard (requirements.txt installs it), or drop it from train.report_to")
    return Accelerator(mixed_precision=mixed_precision(precision), cpu=multi_cpu,
                       log_with=None if tensorboard_dir is None else "tensorboard",
                       project_dir=None if tensorboard_dir is None else tensorboard_dir.parent)


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
            f"{target}, {acc.num_processes} process(es), data {data_source}")


def _postfix(record: dict[str, Any]) -> str:
    return (f"loss {record['loss']:.3f} mlm {record['mlm_loss']:.3f} jepa {_fmt(record['jepa_loss'])} "
            f"λ {_fmt(record['lambda'])}")


def _fmt(v: Any) -> str:
    return "null" if v is None else f"{v:.4f}"


# ---------------------------------------------------------------- the summary

def learning_check(final_validation: dict[str, Any] | None, unigram_entropy: float) -> dict[str, Any]:
    """The summary's `learning` section: the final validation MLM loss next to the unigram entropy of
    the validation tokens (the loss of a model that knows only token frequencies); gap = entropy - loss
    is how far below that plateau the encoder got by using context (<= 0: it learned no more than that)."""
    loss = (final_validation or {}).get("mlm_loss")
    return {"validation_mlm_loss": loss, "unigram_entropy": unigram_entropy,
            "gap": None if loss is None else unigram_entropy - loss}


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

def train(params: Params, objective: str, out_dir: str | os.PathLike | RunPaths, resume: bool = False,
          seed: int | None = None, data: PretrainData | tuple | None = None) -> dict[str, Any]:
    """Pre-train one model; returns the summary also written to train_summary.json.

    out_dir: a folder (RunPaths.in_folder layout) or a RunPaths. resume: continue from the checkpoint
    if one exists and its run identity matches (`claim_checkpoint`: else it is moved aside, never
    deleted, and the run starts fresh); without resume, an existing checkpoint is an error. seed:
    defaults to params.seed. data: PretrainData or (tokenizer, blocks[, source]) from the workbook's
    data step; None builds it in paths.data_dir.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r} is invalid: allowed {', '.join(OBJECTIVES)}")
    paths = out_dir if isinstance(out_dir, RunPaths) else RunPaths.in_folder(out_dir)
    seed = params.seed if seed is None else seed
    t, hybrid = params.train, objective == "hybrid"
    acc = _accelerator(t.precision, paths.tensorboard_dir if "tensorboard" in t.report_to else None)
    main, say = acc.is_main_process, acc.print

    # 1. data, batch order, cost of a step, planned steps -----------------------------------------
    if data is None:
        with acc.main_process_first():  # one process builds the caches, the others then read them
            data = prepare_data(params, paths.data_dir, seed)
    data = _as_data(data)
    tokenizer, train_blocks = data.tokenizer, data.blocks["train"]
    new_collator = partial(PretrainCollator, tokenizer, params.mask, seed, objective, params.jepa.shared_pass,
                           t.static_shapes, params.data.seq_len)
    order = BatchOrder(len(train_blocks), t.batch_size, seed, acc.process_index, acc.num_processes)
    val_batches = fixed_batches(data.blocks["validation"], new_collator(), t.eval_batches, t.batch_size)
    costs = step_costs(params, tokenizer, train_blocks, seed)
    run = RunState(*plan_steps(params, objective, costs.flops))

    # 2. model, optimizer, schedule; resume ---------------------------------------------------------
    engine = Engine.build(params, objective, seed, tokenizer, run.total_steps, acc, paths.checkpoint_dir)
    state = claim_checkpoint(paths, params, objective, seed, say, main, acc.wait_for_everyone) if resume else None
    if state is not None:
        run = engine.restore(state)
        say(f"[train] resumed {objective} from {state['path']} at step {run.step} (epoch {run.epoch}, "
            f"batch {run.batch})")
    elif resume:
        say(f"[train] no checkpoint in {paths.checkpoint_dir}: starting {objective} from scratch")
    elif ckpt.resolve_checkpoint(paths.checkpoint_dir) is not None:  # never overwrite a run by accident
        raise FileExistsError(f"{paths.checkpoint_dir} holds a checkpoint: pass resume=True (--resume) to "
                              "continue it, or delete it / choose another output folder to start over")
    resumed_from = run.step if state is not None else None
    seconds = t.budget_seconds if t.budget == "seconds" else None
    budget = TimeBudget(seconds, run.elapsed_s, probing=seconds is not None and resumed_from is None)

    # 3. the loop ---------------------------------------------------------------------------------
    say(_start_message(objective, engine, costs, run, data.source))
    log = JsonlLog(paths.log_path, main, keep_until_step=resumed_from)
    # purge_step: TensorBoard drops an earlier session's events from this step on, as the JSONL log
    # drops its records after the checkpoint's step.
    acc.init_trackers(paths.tensorboard_dir.name, init_kwargs={"tensorboard": {"purge_step": (resumed_from or 0) + 1}})
    stream = batch_stream(BlockDataset(train_blocks), new_collator(), order, run.epoch, run.batch, t.num_workers)
    tokens_per_step, flops_per_step = t.batch_size * train_blocks.shape[1], costs.flops[objective]
    throughput = Throughput(tokens_per_step, run.step)
    bar = tqdm(total=run.total_steps, initial=run.step, desc=objective, disable=not main, dynamic_ncols=True)
    # One CUDA process: reading the finite flag every step is a host sync that would stall the GPU's
    # queue, so it is read only when a log record or checkpoint is due (a non-finite step is then
    # caught before anything is logged or saved). Elsewhere: every step, before the optimizer step.
    deferred = acc.device.type == "cuda" and acc.num_processes == 1
    all_finite = torch.ones((), dtype=torch.bool, device=acc.device)
    stop, stopped_by, last = StopFlag(), "steps", {}
    engine.model.train()
    with stop.installed(), closing(bar), closing(log):
        while run.step < run.total_steps:
            if budget.time_is_up(engine.agree):
                stopped_by = "time"
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
            check = not deferred or _check_due(run.step + 1, t, run.total_steps) or stop.signum is not None
            bad, stopping = engine.agree([not bool(all_finite), stop.signum is not None]) if check else (0.0, 0.0)
            if bad:
                message = _non_finite_message(out, run.step + 1, objective, grad_norm.item(), lr,
                                              ckpt.resolve_checkpoint(paths.checkpoint_dir), deferred)
                log.write({"step": run.step + 1, "error": message})
                raise NonFiniteLossError(message)
            # Step 3: AdamW step, LR schedule, EMA update of the target encoder
            apply_update(engine.optimizer, engine.scheduler, engine.core, momentum)
            run.advance(tokens_per_step, flops_per_step, order.num_batches)

            if _due(run.step, t.log_every, run.total_steps):
                values = {**step_values(out, grad_norm, engine.agree), "lr": lr, "ema_momentum": momentum,
                          "tokens_per_s": throughput(run.step), "elapsed_s": budget.elapsed()}
                last = log_record(run, values, hybrid, t.collapse_std)
                _warn_collapse_once(run, last, objective)
                _write_log(log, acc, last)
                bar.set_postfix_str(_postfix(last), refresh=False)
            bar.update(1)
            if val_batches and _due(run.step, t.eval_every, run.total_steps):
                _write_log(log, acc, engine.validate(val_batches, run.step))
            if (plan := budget.replan(run.step, engine.agree)) is not None:  # budget=seconds, once
                run.total_steps, run.budget_note = plan
                engine.schedule.total = bar.total = run.total_steps
                say(f"[train] {run.budget_note}")
            if _due(run.step, t.checkpoint_every, run.total_steps) or stopping:
                engine.save(run, budget.elapsed())
            if stopping:
                raise TrainingInterrupted(stop.signum or signal.SIGTERM, run.step, paths.checkpoint_dir)

    # 4. summary and export -----------------------------------------------------------------------
    last = last or (_last_logged_step(paths.log_path) if run.step > 0 else {})
    final_validation = engine.validate(val_batches, run.step) if val_batches else None
    learning = learning_check(final_validation, validation_unigram_entropy(data.blocks, tokenizer))
    summary = run_summary(params, objective, seed, run, costs, last, final_validation, learning, session={
        "wall_time_s": budget.elapsed(), "stopped_by": stopped_by, "data_source": data.source,
        "precision": acc.mixed_precision, "device": str(acc.device), "target_precision": engine.target_precision,
        "num_processes": acc.num_processes, "resumed_from_step": resumed_from})
    if acc.num_processes > 1:  # DDP replicas must hold identical weights: record each one's hash
        summary["replica_weight_sha256"] = engine.replica_digests()
    engine.finish(paths, summary)
    say(f"[train] {objective} done: {run.step} steps, {budget.elapsed():.1f} s, final loss {_fmt(last.get('loss'))}, "
        f"mlm {_fmt(last.get('mlm_loss'))}, jepa {_fmt(last.get('jepa_loss'))}, λ {_fmt(last.get('lambda'))}"
        f" -> {paths.model_dir}")
    return summary


# ---------------------------------------------------------------- CLI

def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jepa_core.train", description=__doc__.split("\n")[0])
    ap.add_argument("--params", required=True, help="YAML profile, e.g. parameters/smoke.yaml")
    ap.add_argument("--objective", required=True, choices=OBJECTIVES)
    ap.add_argument("--out", required=True, help="output folder: model/, checkpoint/, log.jsonl, train_summary.json")
    ap.add_argument("--resume", action="store_true",
                    help="continue from OUT/checkpoint if it exists; one written with other weight-changing "
                    "parameters is moved aside to OUT/checkpoint.stale-<time>/ instead")
    ap.add_argument("--seed", type=int, default=None, help="default: the profile's first seed")
    ap.add_argument("--data", default=None,
                    help="prepared data folder (tokenizer/, blocks_*.npy); default: build in OUT/data")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override a parameter (repeatable), e.g. --set train.steps=100")
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
