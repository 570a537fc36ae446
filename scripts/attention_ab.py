"""bf16 training steps with SDPA's math kernel (kernels.py as it stands) against SDPA's own choice (the flash
kernel), interleaved in one process, one thread, the cpu profile's shapes (docs/PERFORMANCE.md, bf16 section).

    python scripts/attention_ab.py [rounds]     # 8 rounds of 5 steps per (objective, kernel)
"""
import contextlib
import sys
import time

import numpy as np
import torch

from jepa_core.bench.config import BenchConfig
from jepa_core.bench.data import BlockCycle, load_data
from jepa_core.bench.pretrain_speed import profile_config
from jepa_core.bench.workloads import our_workload
from jepa_core.model import kernels


def main(rounds: int) -> None:
    torch.set_num_threads(1)  # before the workloads: each step runs at the count its workload was built with
    cfg = profile_config(BenchConfig(), "cpu")
    _, tokenizer, blocks = load_data(cfg)
    cycle = BlockCycle(blocks, cfg.batch)
    workloads = {o: our_workload(cfg, tokenizer, cycle, torch.device("cpu"), True, o) for o in ("hybrid", "mlm")}
    math_kernel = kernels.sdpa_kernel
    times: dict[tuple[str, str], list[float]] = {}
    for r in range(rounds):
        for objective, w in workloads.items():
            for kernel in ("math", "flash") if r % 2 == 0 else ("flash", "math"):
                kernels.sdpa_kernel = math_kernel if kernel == "math" else (lambda *a, **k: contextlib.nullcontext())
                w.step(0)
                for i in range(5):
                    t = time.perf_counter()
                    w.step(i)
                    times.setdefault((objective, kernel), []).append(time.perf_counter() - t)
    med = {k: float(np.median(v)) for k, v in times.items()}
    for (objective, kernel), m in sorted(med.items()):
        print(f"{objective} {kernel}: median {m * 1e3:.1f} ms (n={len(times[objective, kernel])})")
    for objective in workloads:
        print(f"{objective} flash/math: {med[objective, 'flash'] / med[objective, 'math']:.3f}")
    pair = sum(med[o, "flash"] for o in workloads) / sum(med[o, "math"] for o in workloads)
    print(f"one hybrid + one MLM step, flash/math: {pair:.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 8)
