"""How to spend the machine's cores on the study's pre-training runs (`train.parallel_runs` and threads).

The study trains one hybrid and one MLM run per seed, each for the same number of steps. Three layouts:

    one_at_a_time_1_thread   one run after another, one thread (the other cores idle)
    one_at_a_time_N_threads  one run after another, all N cores as intra-op threads
    side_by_side             N single-thread runs at once (parallel_runs: N, the cpu profile's layout)

Each is timed in its own processes, as the study runs it: `side_by_side` starts a hybrid and an MLM process
together (the MLM one runs more steps so that the two overlap throughout) and reads each one's step time
while the other runs. The figure per layout is the wall time one seed costs per step index, i.e. one hybrid
step plus one MLM step: h + m one at a time, (h + m) / N side by side (N slots share the runs' total
time). Rounds alternate the layouts; the medians over rounds decide. Written here because no library times
process layouts; the step itself is the trainer's (bench/workloads.our_workload).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import numpy as np

from jepa_core.bench.timing import spread


def _child(objective: str, threads: int, steps: int, precision: str, profile: str) -> None:
    """In a subprocess: the median step time (s) of `steps` timed steps, printed as one JSON line."""
    import torch

    from jepa_core.bench.config import BenchConfig
    from jepa_core.bench.data import BlockCycle, load_data
    from jepa_core.bench.pretrain_speed import profile_config
    from jepa_core.bench.timing import timed
    from jepa_core.bench.workloads import our_workload

    torch.set_num_threads(threads)
    cfg, device = profile_config(BenchConfig(), profile), torch.device("cpu")
    _, tokenizer, blocks = load_data(cfg)
    w = our_workload(cfg, tokenizer, BlockCycle(blocks, cfg.batch), device, precision == "bf16", objective)
    for i in range(3):  # warm-up: allocations, optimizer state
        w.step(i)
    times = [timed(w, i, device)[0] for i in range(steps)]
    print(json.dumps({"median": float(np.median(times))}), flush=True)


def _start(objective: str, threads: int, steps: int, precision: str, profile: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TQDM_DISABLE": "1"}
    return subprocess.Popen([sys.executable, "-m", "jepa_core.bench.layout", "--child", objective, str(threads),
                             str(steps), precision, profile], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=env)


def _read(proc: subprocess.Popen) -> float:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"bench layout: a timing process failed (exit {proc.returncode}): {proc.args}")
    return json.loads(out.strip().splitlines()[-1])["median"]


def layout_benchmark(profile: str = "cpu", precision: str = "bf16", rounds: int = 3, steps: int = 40,
                     cores: int | None = None) -> dict[str, Any]:
    """Per layout: the hybrid and MLM step times (s, medians over rounds) and the seconds one seed costs per
    step index; `speedup_over_side_by_side` of each. `steps`: timed hybrid steps per process."""
    n = cores or os.cpu_count() or 1
    layouts = {"one_at_a_time_1_thread": [], "one_at_a_time_N_threads": [], "side_by_side": []}
    for _ in range(rounds):
        for name in layouts:
            if name == "side_by_side":  # the MLM step is ~half the hybrid's: 3x the steps keep it running
                procs = [_start("hybrid", 1, steps, precision, profile), _start("mlm", 1, 3 * steps, precision,
                                                                                  profile)]
                h, m = (_read(p) for p in procs)
                layouts[name].append({"hybrid": h, "mlm": m, "seed_step": (h + m) / n})
            else:
                threads = 1 if name.endswith("1_thread") else n
                h = _read(_start("hybrid", threads, steps, precision, profile))
                m = _read(_start("mlm", threads, 2 * steps, precision, profile))
                layouts[name].append({"hybrid": h, "mlm": m, "seed_step": h + m})
    out: dict[str, Any] = {"profile": profile, "precision": precision, "cores": n, "rounds": rounds}
    base = float(np.median([r["seed_step"] for r in layouts["side_by_side"]]))
    for name, rows in layouts.items():
        seed_step = spread([r["seed_step"] for r in rows])
        out[name] = {"hybrid_step_seconds": float(np.median([r["hybrid"] for r in rows])),
                     "mlm_step_seconds": float(np.median([r["mlm"] for r in rows])),
                     "seed_seconds_per_step": seed_step,
                     "speedup_over_side_by_side": base / seed_step["median"]}
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m jepa_core.bench.layout [--profile cpu] [--precision bf16] [--rounds 3] [--steps 40] [--out x.json]`"""
    import argparse

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        objective, threads, steps, precision, profile = argv[1:6]
        _child(objective, int(threads), int(steps), precision, profile)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--out", help="write the JSON here")
    args = ap.parse_args(argv)
    res = layout_benchmark(args.profile, args.precision, args.rounds, args.steps)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
    print(f"{res['cores']} cores, {args.profile} profile, {args.precision}; one seed per step index "
          "(one hybrid + one MLM step), medians over rounds:")
    for name in ("one_at_a_time_1_thread", "one_at_a_time_N_threads", "side_by_side"):
        r = res[name]
        print(f"  {name:24s} hybrid {r['hybrid_step_seconds'] * 1e3:5.0f} ms  mlm {r['mlm_step_seconds'] * 1e3:5.0f} ms"
              f"  seed {r['seed_seconds_per_step']['median'] * 1e3:5.0f} ms/step  "
              f"{r['speedup_over_side_by_side']:.2f}x side by side")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
