"""The trained objects of a pre-training run and the two halves of its step.

`forward_backward` (forward, backward, clip) and `apply_update` (AdamW, LR schedule, EMA) are the step;
`Engine` holds the model, optimizer and schedule as Accelerate prepared them and does what involves
every process: agree on values, validate, save / restore a checkpoint, export the encoder.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import is_tensorboard_available, set_seed

from jepa_core.config import Params
from jepa_core.model import PretrainModel, native_bf16
from jepa_core.pretrain import checkpoint as ckpt
from jepa_core.pretrain.model_card import write_card
from jepa_core.pretrain.numerics import EarlyFingerprint
from jepa_core.pretrain.resume import run_identity
from jepa_core.pretrain.run_state import RunState
from jepa_core.runs import RunPaths

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


def emulated_bf16_note(mixed: str, device_type: str) -> str | None:
    """The note a run gets when bf16 autocast will be emulated on its device (a CPU without AVX512-BF16 or
    AMX): the profile's numerics are kept, never switched silently, but the user learns what it costs and
    how to choose otherwise."""
    if mixed != "bf16" or native_bf16(device_type):
        return None
    return (f"note: train.precision=bf16 on a {device_type} without native bf16 (no AVX512-BF16 / AMX): autocast "
            "is emulated here and runs slower than fp32. The run keeps bf16, so its rounding is the profile's; "
            "--set train.precision=fp32 trains faster on this machine, with results that then differ from bf16 "
            "runs by rounding (docs/PROTOCOL.md §4a).")


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
    # the weights' short SHA-256 at an early step (train_summary.json `numerics`): same path as another run?
    early_fingerprint: EarlyFingerprint = field(default_factory=lambda: EarlyFingerprint(_weights_digest))

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
        run.weights_fingerprint = self.early_fingerprint.value  # restore() gives it back to a resumed run
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
        self.early_fingerprint.value = run.weights_fingerprint  # taken before the checkpoint (or None)
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


def accelerator(precision: str, tensorboard_dir: Path | None = None) -> Accelerator:
    """The run's Accelerator; with `tensorboard_dir`, its TensorBoard tracker is set up to write there
    (Accelerate's tracker API: it writes on the main process only, and the trainer already holds an
    Accelerator, so no second writer is needed)."""
    # Several processes without CUDA (torchrun / accelerate launch on CPU): Accelerate sets up gloo
    # DDP only when told cpu=True.
    multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    if tensorboard_dir is not None and not is_tensorboard_available():
        raise ImportError("train.report_to includes tensorboard but the tensorboard package is not installed: "
                          "pip install tensorboard (requirements.txt installs it), or drop it from train.report_to")
    # Accelerate keeps one AcceleratorState per process and refuses a second Accelerator with another
    # mixed_precision ("restart your runtime"): a notebook, or a worker that trains several runs, may train an
    # fp32 run and then a bf16 one. Each run starts from a fresh state (private API, as Accelerate's own test
    # utilities use it); the distributed part (PartialState: process group, rank) is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=mixed_precision(precision), cpu=multi_cpu,
                       log_with=None if tensorboard_dir is None else "tensorboard",
                       project_dir=None if tensorboard_dir is None else tensorboard_dir.parent)
