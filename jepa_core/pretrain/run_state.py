"""The bookkeeping of a training run, apart from the tensors: where it stands, when it ends, what it logs.

- `RunState`: step, data position, tokens, FLOPs, elapsed time, the planned length and why, whether a
  collapse warning was given; saved as one unit in a checkpoint (`to_checkpoint` / `from_checkpoint`).
- `plan_steps` + `TimeBudget`: how many steps train.budget allows. "steps" and "flops" fix the count
  up front; "seconds" plans provisionally, times the first steps, re-plans once, and stops the run
  when the wall-clock is spent. `TimeBudget` is also the run's clock (elapsed time across resumes).
- `log_record`: one step's measured values -> the JSONL record (a pure function); `JsonlLog` writes it;
  `tensorboard_scalars`: the same record as TensorBoard scalars (train.report_to).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from jepa_core.config import Params

COLLAPSE_RANK = 1.5  # batch effective rank below this: the context embeddings span ~one direction
SECONDS_PROBE_STEPS = 10  # budget=seconds: timed steps (after the first) to estimate the step time

Agree = Callable[[list[float]], list[float]]  # the processes' mean of some values (identity in one process)


def _alone(values: list[float]) -> list[float]:
    return values


@dataclass
class RunState:
    """Where the run stands between two steps: everything a checkpoint holds besides the weights,
    optimizer, LR schedule and RNG states."""
    total_steps: int  # planned optimizer steps (budget=seconds: re-planned after the timed steps)
    budget_note: str  # why that many
    step: int = 0  # optimizer steps done
    epoch: int = 0  # data position: the next batch to read is batch `batch` of epoch `epoch`
    batch: int = 0
    tokens: int = 0  # tokens trained on (all processes)
    flops: float = 0.0  # training FLOPs spent (all processes)
    elapsed_s: float = 0.0  # wall-clock of the run at the last save, earlier sessions included
    warned_collapse: bool = False  # the collapse warning is printed once per run
    weights_fingerprint: dict[str, Any] | None = None  # numerics.EarlyFingerprint's value at the save (Engine),
    #   so a run resumed past the fingerprint step still reports its path's fingerprint

    def advance(self, tokens: int, flops: float, batches_per_epoch: int) -> None:
        """Count one finished optimizer step that consumed batch (epoch, batch)."""
        self.step, self.batch = self.step + 1, self.batch + 1
        self.tokens, self.flops = self.tokens + tokens, self.flops + flops
        if self.batch == batches_per_epoch:
            self.epoch, self.batch = self.epoch + 1, 0

    @property
    def data_position(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}

    def to_checkpoint(self) -> dict[str, Any]:
        """The checkpoint `extra` entry holding this state (plain types: loadable with weights_only)."""
        return {"run_state": asdict(self)}

    @classmethod
    def from_checkpoint(cls, state: Mapping[str, Any]) -> "RunState":
        """The state saved in a checkpoint (`checkpoint.read_checkpoint`). Checkpoints written before
        the state was one unit hold its fields flat in `extra`, the position beside it."""
        extra = state["extra"]
        if "run_state" in extra:
            return cls(**extra["run_state"])
        kept = {f.name: extra[f.name] for f in fields(cls) if f.name in extra}
        return cls(**kept, step=state["step"], **state["data_position"])


def plan_steps(params: Params, objective: str, flops: Mapping[str, float]) -> tuple[int, str]:
    """Planned optimizer steps for this objective under train.budget, with a note saying why."""
    t = params.train
    if t.budget == "seconds":
        return TimeBudget.provisional_plan(t.steps, t.budget_seconds)
    if t.budget == "steps" or objective == "hybrid":
        return t.steps, f"train.steps={t.steps}"
    steps = max(1, round(t.steps * flops["hybrid"] / flops["mlm"]))
    return steps, (f"equal FLOPs: {t.steps} hybrid steps x {flops['hybrid']:.3g} FLOPs "
                   f"/ {flops['mlm']:.3g} FLOPs per MLM step")


class TimeBudget:
    """The run's clock and, with `seconds`, its wall-clock budget (train.budget=seconds).

    - `elapsed()`: seconds of the run, earlier sessions (`elapsed_before`, from the checkpoint) included;
    - `time_is_up(agree)`: whether the budget is spent (never without `seconds`), checked before each step;
    - `replan(step, agree)`: called after each step of a run that is `probing`: steps 2..N+1 are timed
      (step 1 carries the start-up costs), then it returns (the steps that fit, a note) once, else None.
      The timed steps are ordinary steps: during the LR warm-up nothing depends on the planned length.
    `agree` averages a value over the processes, so that all of them take the same branch.
    """

    def __init__(self, seconds: float | None = None, elapsed_before: float = 0.0, probing: bool = False,
                 clock: Callable[[], float] = time.perf_counter, probe_steps: int = SECONDS_PROBE_STEPS):
        if probing and seconds is None:
            raise ValueError("probing times steps to fit a budget in seconds: give `seconds`")
        self.seconds, self.elapsed_before, self.clock = seconds, elapsed_before, clock
        self.probe_steps = probe_steps if probing else 0  # 0: nothing (more) to time
        self.started, self.probe_started = clock(), 0.0

    @staticmethod
    def provisional_plan(steps: int, seconds: float, probe_steps: int = SECONDS_PROBE_STEPS) -> tuple[int, str]:
        """The plan before any step is timed: train.steps, but at least until the timed steps are over."""
        return max(steps, probe_steps + 2), f"provisional ({steps}) until the timed warm-up of budget_seconds={seconds}"

    def elapsed(self) -> float:
        return self.elapsed_before + self.clock() - self.started

    def time_is_up(self, agree: Agree = _alone) -> bool:
        return self.seconds is not None and agree([self.elapsed()])[0] >= self.seconds

    def replan(self, step: int, agree: Agree = _alone) -> tuple[int, str] | None:
        if self.probe_steps and step == 1:
            self.probe_started = self.clock()
        if not self.probe_steps or step != 1 + self.probe_steps:
            return None
        per_step = agree([(self.clock() - self.probe_started) / self.probe_steps])[0]
        total = max(step + 1, step + int((self.seconds - self.elapsed()) / per_step))
        self.probe_steps = 0
        return total, (f"equal wall-clock: {self.seconds:g} s at {per_step * 1e3:.1f} ms/step "
                       f"(timed over steps 2-{step}) -> {total} steps")


class Throughput:
    """Tokens per second since the previous call (or since the start)."""

    def __init__(self, tokens_per_step: int, step: int, clock: Callable[[], float] = time.perf_counter):
        self.tokens_per_step, self.clock = tokens_per_step, clock
        self.last_step, self.last_time = step, clock()

    def __call__(self, step: int) -> float:
        now = self.clock()
        rate = self.tokens_per_step * (step - self.last_step) / max(now - self.last_time, 1e-9)
        self.last_step, self.last_time = step, now
        return rate


JEPA_ONLY = ("jepa_loss", "lambda", "ema_momentum", "target_std")  # null in the records of MLM runs


def log_record(run: RunState, values: Mapping[str, float], hybrid: bool, collapse_std: float) -> dict[str, Any]:
    """The JSONL record of the step `run` has just finished. `values`: the step's measured loss,
    mlm_loss, jepa_loss, lambda, lr, ema_momentum, grad_norm, tokens_per_s, target_std,
    batch_effective_rank, elapsed_s. Adds "warning" when a collapse signal fires: the EMA targets'
    mean per-dim std below `collapse_std` (hybrid) or the batch effective rank below COLLAPSE_RANK."""
    record = {"step": run.step, "epoch": run.epoch}
    for key in ("loss", "mlm_loss", "jepa_loss", "lambda", "lr", "ema_momentum", "grad_norm", "tokens_per_s",
                "target_std", "batch_effective_rank"):
        record[key] = None if key in JEPA_ONLY and not hybrid else values[key]
    record.update(flops=run.flops, elapsed_s=values["elapsed_s"])
    collapse = [f"target_std {record['target_std']:.3g} < train.collapse_std {collapse_std}"] \
        if hybrid and record["target_std"] < collapse_std else []
    if record["batch_effective_rank"] < COLLAPSE_RANK:
        collapse.append(f"batch effective rank {record['batch_effective_rank']:.2f} < {COLLAPSE_RANK}")
    if collapse:
        record["warning"] = "possible representation collapse: " + "; ".join(collapse)
    return record


TENSORBOARD_KEYS = ("loss", "mlm_loss", "jepa_loss", "lambda", "lr", "ema_momentum", "grad_norm", "tokens_per_s",
                    "target_std", "batch_effective_rank")


def tensorboard_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The TensorBoard scalars of a JSONL record (a step's or a validation's), the same numbers under
    train/<key> or validation/<key>; nulls (the JEPA values of an MLM run) are left out."""
    split = record.get("split", "train")
    return {f"{split}/{k}": record[k] for k in TENSORBOARD_KEYS if record.get(k) is not None}


class JsonlLog:
    """Append-only JSONL log, flushed per record; written by the main process only. On resume, records
    after the checkpoint's step (computed again) and a torn last line (kill -9) are dropped."""

    def __init__(self, path: Path, enabled: bool, keep_until_step: int | None):
        self.file = None
        if not enabled:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if keep_until_step is not None and path.exists():
            kept = [ln for ln in path.read_text().splitlines() if _step_of(ln) <= keep_until_step]
        path.write_text("".join(ln + "\n" for ln in kept))
        self.file = open(path, "a")

    def write(self, record: dict[str, Any]) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def _step_of(line: str) -> float:
    try:
        return json.loads(line).get("step", 0)
    except json.JSONDecodeError:
        return math.inf
