"""The CPU pre-training speed-up of issue 22: the cpu profile's training step as it stands against the
same step in fp32 (the profile before issue 22), side by side in one process.

Shapes are the profile's (parameters/<profile>.yaml: architecture, widths, vocabulary, batch, predictor),
one thread per step as each of the study's `train.parallel_runs` single-thread runs has, rounds
interleaved. `current` is the profile's `train.precision` as the trainer resolves it on this machine
(engine.mixed_precision: `bf16` autocast where asked for, `auto` only on a bf16 GPU). The figure that
decides the target is the pair's: one hybrid step plus one MLM step (a seed of the study), fp32 over current.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jepa_core.bench.config import BenchConfig
from jepa_core.bench.data import BlockCycle, load_data
from jepa_core.bench.timing import round_robin, spread
from jepa_core.bench.workloads import our_workload
from jepa_core.config import load_params

OBJECTIVES = ("hybrid", "mlm")


def profile_config(cfg: BenchConfig, profile: str) -> BenchConfig:
    """`cfg` with the shapes of parameters/<profile>.yaml."""
    p = load_params(Path(__file__).resolve().parents[2] / "parameters" / f"{profile}.yaml")
    m = p.model
    return dataclasses.replace(cfg, architecture=m.architecture, dropout=m.dropout, layers=m.layers, hidden=m.hidden,
                               heads=m.heads, ffn=m.ffn, vocab=p.data.vocab_size, batch=p.train.batch_size,
                               seq=p.data.seq_len, predictor_layers=m.predictor_layers,
                               predictor_hidden=m.predictor_hidden, predictor_heads=m.predictor_heads,
                               precision=p.train.precision)


def pretrain_speed_benchmark(cfg: BenchConfig, profile: str = "cpu", progress: bool = True,
                             precision: str | None = None) -> dict[str, Any]:
    """{"current": precision, per objective fp32 / current step times and ratio, "speedup": the pair's ratio}.
    `precision` stands in for the profile's train.precision: what a change would buy before it is adopted."""
    pcfg = profile_config(cfg, profile)
    if precision is not None:
        pcfg = dataclasses.replace(pcfg, precision=precision)
    current = "bf16" if pcfg.precision == "bf16" else "fp32"  # `auto` is fp32 on a CPU (engine.mixed_precision)
    device = torch.device("cpu")
    _, tokenizer, blocks = load_data(pcfg)
    cycle = BlockCycle(blocks, pcfg.batch)
    threads = torch.get_num_threads()
    # one thread per run, as the study's parallel runs; set BEFORE the workloads are built, since each step
    # runs at the thread count its workload was built with (until session 9 that was every core: the
    # "one thread" figures of session 8 were two-thread steps)
    torch.set_num_threads(1)
    try:
        workloads = [dataclasses.replace(our_workload(pcfg, tokenizer, cycle, device, p == "bf16", o),
                                         name=f"{o}_{p}") for o in OBJECTIVES for p in dict.fromkeys(("fp32", current))]
        times, cpu_times = round_robin(workloads, cfg.rounds, cfg.warmup, device, progress)
    finally:
        torch.set_num_threads(threads)
    med = {name: float(np.median(t)) for name, t in times.items()}

    def pair(series: dict[str, list[float]], r: int | None = None) -> float:
        """One hybrid + one MLM step, fp32 over current: of the medians, or of round r."""
        at = (lambda t: float(np.median(t))) if r is None else (lambda t: t[r])  # noqa: E731
        return (sum(at(series[f"{o}_fp32"]) for o in OBJECTIVES)
                / sum(at(series[f"{o}_{current}"]) for o in OBJECTIVES))

    out: dict[str, Any] = {"profile": profile, "current": current, "threads": 1,
                           "shapes": {k: getattr(pcfg, k) for k in ("architecture", "layers", "hidden", "heads",
                                                                     "ffn", "vocab", "batch", "seq")}}
    for o in OBJECTIVES:
        out[o] = {"fp32_step_seconds": spread(times[f"{o}_fp32"]),
                  "current_step_seconds": spread(times[f"{o}_{current}"]),
                  "speedup": med[f"{o}_fp32"] / med[f"{o}_{current}"]}
    out["speedup"] = pair(times)
    out["per_round"] = spread([pair(times, r) for r in range(cfg.rounds)])
    out["cpu_time_speedup"] = pair(cpu_times)
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m jepa_core.bench.pretrain_speed [--profile cpu] [--precision bf16] [--rounds 10] [--out x.json]`:
    this section alone (the full bench runs it too, with the profile's own precision)."""
    import argparse
    import json

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--precision", choices=("fp32", "bf16"), help="instead of the profile's train.precision")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", help="write the JSON here")
    args = ap.parse_args(argv)
    res = pretrain_speed_benchmark(BenchConfig(rounds=args.rounds, warmup=args.warmup), args.profile, True,
                                   args.precision)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))
    for o in OBJECTIVES:
        print(f"{o}: fp32 {res[o]['fp32_step_seconds']['median'] * 1e3:.0f} ms, {res['current']} "
              f"{res[o]['current_step_seconds']['median'] * 1e3:.0f} ms: {res[o]['speedup']:.2f}x")
    print(f"one hybrid + one MLM step: {res['speedup']:.2f}x (CPU time {res['cpu_time_speedup']:.2f}x; "
          f"rounds {res['per_round']['min']:.2f}-{res['per_round']['max']:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
