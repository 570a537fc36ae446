"""Ctrl-C and SIGTERM in the workbook runner: pre-training finishes its step and checkpoints, then the
runner stops, says what was saved, and exits 130 (SIGINT) / 143 (SIGTERM).

jupyter_client starts every kernel in a session of its own, so its process group (the kernel, the
pre-training pool workers it spawns, their DataLoader workers) never receives a signal meant for the
runner: neither a terminal's Ctrl-C nor a scheduler's SIGTERM to the runner's PID or process group. While
a notebook runs, the runner therefore forwards each SIGINT / SIGTERM it receives to the kernel's process
group (`forwarding_to`) and keeps waiting for the notebook: the training loops finish their step and write
a checkpoint (pretrain/train.py `StopFlag`), `pretrain.jobs.pretrain_runs` raises `PretrainingInterrupted`
naming them, the cell fails, and the runner turns that into `WorkbookInterrupted` (`stopped`). A second
Ctrl-C stops at once, without waiting for checkpoints (the kernel's process group is then killed, as on
any failure). A signal while no kernel runs stops the runner at once: nothing is training then.

The runner never imports torch: the pre-training exception is recognised by its name in the failed
cell's error (`WorkbookError.ename` / `.evalue`).
"""
from __future__ import annotations

import os
import signal
import sys
from contextlib import contextmanager
from typing import Any, Iterator

from jepa_core import signals

PRETRAINING_INTERRUPTED = "PretrainingInterrupted"  # pretrain.jobs.PretrainingInterrupted, by name


class WorkbookInterrupted(KeyboardInterrupt):
    """The run stopped on SIGINT / SIGTERM; `detail` says what was saved. The CLI exits `exit_code`."""

    def __init__(self, signum: int, detail: str = ""):
        self.signum, self.detail = int(signum), detail
        advice = "run the same command again to continue" if detail else \
            "run the same command again to continue from the unfinished step"
        super().__init__(f"{detail}; {advice}" if detail else advice)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


class Interrupts:
    """The runner's SIGINT / SIGTERM handling for one `workbook.run` (module docstring)."""

    def __init__(self):
        self.signum: int | None = None
        self._kernels: list[Any] = []  # kernel managers of the notebooks running now

    @contextmanager
    def installed(self) -> Iterator["Interrupts"]:
        """Handle SIGINT / SIGTERM for the block (main thread only; elsewhere the defaults stay)."""
        self.signum = None
        with signals.handled_by(self._handle):
            yield self

    @contextmanager
    def forwarding_to(self, km: Any) -> Iterator[None]:
        """While the block runs, signals go on to the process group of the kernel `km` starts."""
        self._kernels.append(km)
        try:
            yield
        finally:
            self._kernels.remove(km)

    def _kernel_groups(self) -> list[int]:
        groups = []
        for km in self._kernels:
            pgid = getattr(getattr(km, "provisioner", None), "pgid", None)
            if pgid and km.has_kernel:
                groups.append(pgid)
        return groups

    def _handle(self, signum: int, _frame: Any) -> None:
        second_sigint = self.signum == signal.SIGINT and signum == signal.SIGINT
        first = self.signum is None
        self.signum = self.signum or signum
        groups = self._kernel_groups()
        for pgid in groups:
            try:
                os.killpg(pgid, signum)
            except (ProcessLookupError, PermissionError):
                pass
        name = signal.Signals(signum).name
        if second_sigint:
            raise WorkbookInterrupted(signal.SIGINT, "second Ctrl-C: stopped at once, without waiting for "
                                                     "checkpoints (the last periodic ones are kept)")
        if not groups:  # nothing is training: stop here
            raise WorkbookInterrupted(self.signum)
        if first:
            print(f"\n{name} received: passed on to the notebook's kernel; pre-training finishes its step and "
                  "writes checkpoints, then the run stops (Ctrl-C again: stop at once, without them)",
                  file=sys.stderr, flush=True)

    def stopped(self, step: str, failure: BaseException) -> BaseException:
        """What a step's failure means: after a signal, a WorkbookInterrupted saying what was saved (the
        pre-training's checkpoints when it was training); else the failure itself."""
        if self.signum is None:
            return failure
        if isinstance(failure, WorkbookInterrupted):
            return failure if failure.detail else WorkbookInterrupted(failure.signum, f"step {step} stopped")
        if getattr(failure, "ename", None) == PRETRAINING_INTERRUPTED:
            detail = str(getattr(failure, "evalue", "")).strip()
        else:
            detail = f"step {step} stopped before it finished"
        interrupted = WorkbookInterrupted(self.signum, detail)
        interrupted.__cause__ = failure
        return interrupted

    def raise_if_stopped(self, step: str) -> None:
        """After a step that finished (its marker written): stop before the next one if a signal came."""
        if self.signum is not None:
            raise WorkbookInterrupted(self.signum, f"step {step} finished, then the run stopped")


RUNNER = Interrupts()  # the runner process's one instance (workbook.run installs it)
