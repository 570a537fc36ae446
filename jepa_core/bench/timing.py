"""How the workloads are measured: the interleaved round-robin of timed steps, the spread of a
sample, and the memory of one step."""
from __future__ import annotations

import ctypes
import gc
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from jepa_core.bench.workloads import Workload


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(w: Workload, i: int, device: torch.device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of step i. On a shared machine CPU time is less
    sensitive to other processes than wall time (though spinning OpenMP threads still inflate it)."""
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    w.step(i)
    _sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, quartiles, IQR, min, max and count of a sample."""
    v = np.asarray(values, dtype=np.float64)
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return {"median": float(med), "q1": float(q1), "q3": float(q3), "iqr": float(q3 - q1),
            "min": float(v.min()), "max": float(v.max()), "n": int(len(v))}


def round_robin(workloads: list[Workload], rounds: int, warmup: int, device: torch.device,
                progress: bool = True) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """(wall, CPU) step times in s of each workload: `warmup` untimed rounds, then `rounds` timed ones,
    the workloads taking turns within each round."""
    wall: dict[str, list[float]] = {w.name: [] for w in workloads}
    cpu: dict[str, list[float]] = {w.name: [] for w in workloads}
    with tqdm(total=(warmup + rounds) * len(workloads), desc="bench", unit="step", disable=not progress) as bar:
        for r in range(warmup + rounds):
            for w in workloads:
                bar.set_postfix_str(w.name, refresh=False)
                dt, dc = timed(w, r, device)
                if r >= warmup:
                    wall[w.name].append(dt)
                    cpu[w.name].append(dc)
                bar.update(1)
    return wall, cpu


# ---------------------------------------------------------------- memory

_LIBC = None


def _trim_heap() -> None:
    """Give freed heap pages back to the OS (glibc), so the next step's peak is its own."""
    global _LIBC
    gc.collect()
    try:
        _LIBC = _LIBC or ctypes.CDLL("libc.so.6")
        _LIBC.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def state_bytes(w: Workload) -> int:
    """Parameters + buffers + gradients (one per trainable parameter, during a step) + optimizer state."""
    seen, total = set(), 0
    for m in w.modules:
        for t in list(m.parameters()) + list(m.buffers()):
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size() * (2 if t.requires_grad else 1)
    if w.optimizer is not None:
        for st in w.optimizer.state.values():
            total += sum(v.numel() * v.element_size() for v in st.values() if torch.is_tensor(v))
    return total


def step_memory(w: Workload, i: int, device: torch.device) -> dict[str, float | None]:
    """Peak memory of one step above what was resident before it (activations and temporaries).

    CPU: process RSS high-water mark (VmHWM, reset before the step after trimming the heap);
    CUDA: torch.cuda.max_memory_allocated above memory_allocated before the step.
    """
    mib = 1024 ** 2
    out: dict[str, float | None] = {"state_mib": state_bytes(w) / mib}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        w.step(i)
        torch.cuda.synchronize(device)
        out["step_peak_mib"] = (torch.cuda.max_memory_allocated(device) - before) / mib
        return out
    _trim_heap()
    before = _rss_kib("VmRSS")
    if before is None or not _reset_peak_rss():
        w.step(i)
        out["step_peak_mib"] = None  # no /proc (not Linux): only the process peak below
        return out
    w.step(i)
    out["step_peak_mib"] = (_rss_kib("VmHWM") - before) / 1024
    return out
