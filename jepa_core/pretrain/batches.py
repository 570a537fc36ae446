"""Which blocks a pre-training step reads, and what a step costs.

Batch b of epoch e is a fixed slice of a permutation drawn from (seed, e) (`BatchOrder`), and the
collator's masks come from (seed, e, item): the hybrid and the MLM run see the same blocks in the same
order with the same MLM masks, and a resumed run continues exactly at its stored (epoch, batch).
"""
from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from jepa_core.config import OBJECTIVES, Params, ParamsError
from jepa_core.data.blocks import BlockDataset
from jepa_core.model.masking import PretrainCollator, item_generator
from jepa_core.pretrain.flops import TokenCounts, measure_token_counts, training_flops_per_step

FLOPS_PROBE_BATCHES = 8  # batches collated to measure token counts for the FLOPs estimate


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


def _ignore_stop_signals(_worker_id: int) -> None:
    """DataLoader workers ignore SIGINT and SIGTERM: stopping is the training process's business (it finishes
    the step and checkpoints), and a worker killed by a signal sent to the whole process group (Ctrl-C, a
    scheduler, the workbook runner) would make the DataLoader raise in the middle of that step. A worker
    still ends with the training process (the DataLoader shuts it down; its watchdog sees a dead parent)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def batch_stream(dataset: Any, collator: PretrainCollator, order: BatchOrder, epoch: int, start: int,
                 num_workers: int) -> Iterator[tuple[int, int, dict[str, torch.Tensor]]]:
    """Yield (epoch, batch index, collated batch) forever, starting at (epoch, start)."""
    while True:
        collator.set_epoch(epoch)  # before the iterator exists: workers copy the collator
        loader = DataLoader(dataset, batch_sampler=order.batches(epoch, start), collate_fn=collator,
                            num_workers=num_workers, worker_init_fn=_ignore_stop_signals if num_workers else None,
                            pin_memory=torch.cuda.is_available(),
                            # own generator: creating an iterator must not draw from the global RNG
                            # (that would shift dropout after a resume)
                            generator=torch.Generator().manual_seed(order.seed))
        for b, batch in enumerate(loader, start=start):
            yield epoch, b, batch
        epoch, start = epoch + 1, 0


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
