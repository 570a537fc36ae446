"""Side-by-side training-speed benchmark: the usual HF MLM loop next to our MLM and hybrid steps.

    python -m jepa_core.bench --out outputs/bench.json        (`make bench`)
    python -m jepa_core.bench --ablations --markdown           (+ what each optimisation buys; docs tables)
    python -m jepa_core.bench --tiny                           (seconds; what the test runs)

In ONE process, with the same encoder config, batch, sequence length, vocabulary and data:

  hf      transformers BertForMaskedLM (ModernBertForMaskedLM with --architecture modernbert) +
          DataCollatorForLanguageModeling, the naive loop: logits over the whole vocabulary at every
          position, torch AdamW over all parameters
  mlm     our MLM-only step: PretrainCollator + PretrainModel("mlm") (vocab projection at masked
          positions only) + the trainer's optimizer (train.build_optimizer) and schedule
  hybrid  our hybrid step as in the paper: MLM pass + student pass on context tokens + EMA target pass
  shared  the hybrid with jepa.shared_pass: one student pass over the corrupted context
  hybrid_static, shared_static   (--static-shapes) the same two steps with train.static_shapes: every
          batch padded to fixed widths, so that a compiled encoder (--compile) is not recompiled
  gemm    one large matmul (fp32 on CPU, bf16 on GPU): this machine's achievable FLOP/s

After a warm-up, the five run round-robin for R rounds, so machine noise (other processes, thermal
state) hits all of them alike; ratios are also computed round by round. Then: evaluation encoding
throughput on GLUE SST-2 dev sentences (padded to max_length / dynamic padding in input order /
length-bucketed), and the memory of one step of each workload. Everything goes to a table on stdout
and to JSON (--out), with a "targets" section (each target, the measured value, pass/fail).

The training batches are real text: Wikipedia articles from the embedded excerpt, tokenised once and
packed into full-length blocks (blocks.py), exactly as the trainer feeds them.

The package, one concern a module: config (BenchConfig, TARGETS, GPU peaks, machine info), data (text,
blocks, batches), workloads (stock, ours, GEMM, ablations), timing (round-robin, spread, step memory),
encoding (the encoding benchmark), report (the tables); here: run_benchmark and the command line.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from jepa_core.bench.config import (
    GPU_BF16_PEAK_TFLOPS,
    STATIC,
    TARGETS,
    TRAINING,
    WORKLOADS,
    BenchConfig,
    bench_params,
    gpu_peak_flops,
    machine_info,
)
from jepa_core.bench.data import GPU_BATCHES, BlockCycle, batch_source, encode_sentences, load_data
from jepa_core.bench.encoding import encoding_benchmark
from jepa_core.bench.evaluation import evaluation_benchmark, sklearn_fit_probe
from jepa_core.bench.pretrain_speed import pretrain_speed_benchmark
from jepa_core.bench.report import Table, format_markdown, format_table, report
from jepa_core.bench.timing import round_robin, spread, state_bytes, step_memory, timed
from jepa_core.bench.workloads import (
    STOCK,
    VARIANTS,
    Workload,
    gemm_workload,
    hf_workload,
    micro_workloads,
    our_workload,
    stock_workloads,
)
from jepa_core.model import native_bf16

__all__ = [  # the public names of the single-module bench.py this package replaces: `bench.X` keeps working
    "GPU_BATCHES", "GPU_BF16_PEAK_TFLOPS", "STATIC", "STOCK", "TARGETS", "TRAINING", "VARIANTS", "WORKLOADS",
    "BenchConfig",
    "BlockCycle", "evaluation_benchmark", "sklearn_fit_probe",
    "Table", "Workload", "batch_source", "bench_params", "encode_sentences", "encoding_benchmark",
    "format_markdown", "format_table", "gemm_workload", "gpu_peak_flops", "hf_workload", "load_data", "machine_info",
    "main", "micro_workloads", "our_workload", "parse_args", "report", "round_robin",
    "run_benchmark", "spread", "state_bytes", "step_memory", "stock_workloads", "timed",
]


def _ratio_stats(num: list[float], den: list[float], cpu_num: list[float] | None = None,
                 cpu_den: list[float] | None = None) -> dict[str, Any]:
    """Ratio of the medians of two interleaved series (the reported value), its round-by-round
    spread, and the same ratio in CPU time when given."""
    out: dict[str, Any] = {"value": float(np.median(num) / np.median(den)),
                           "per_round": spread([a / b for a, b in zip(num, den)])}
    if cpu_num is not None and cpu_den is not None:
        out["cpu_time_value"] = float(np.median(cpu_num) / np.median(cpu_den))
    return out


def _check(name: str, measured: float | None) -> dict[str, Any]:
    op, threshold, what = TARGETS[name]
    ok = None if measured is None else (measured >= threshold if op == ">=" else measured <= threshold)
    return {"target": f"{op} {threshold}", "measured": measured, "pass": ok, "met": ok, "what": what}


def _workload_results(workloads: list, times: dict, cpu_times: dict, gemm_flops_s: float,
                      peak: float | None) -> dict[str, Any]:
    """Per timed training workload: step times, FLOPs, achieved FLOP/s (and MFU against `peak`)."""
    results: dict[str, Any] = {}
    for w in workloads:
        if not w.flops:  # micro-benchmarks: times only
            continue
        med = float(np.median(times[w.name]))
        r = {"label": w.label, "step_seconds": spread(times[w.name]), "step_cpu_seconds": spread(cpu_times[w.name]),
             "flops_per_step": w.flops,
             "achieved_flops_per_s": w.flops / med, "fraction_of_gemm": w.flops / med / gemm_flops_s, **w.notes}
        if w.tokens:
            r["tokens_per_step"] = w.tokens
            r["tokens_per_s"] = spread([w.tokens / t for t in times[w.name]])
        if peak:
            r["mfu_vs_peak"] = w.flops / med / peak
        results[w.name] = r
    return results


def _ablation_results(workloads: list, times: dict, results: dict, ratio) -> dict[str, Any]:
    """--ablations: each variant's step time against its base workload, and the micro-benchmarks' times."""
    ablations = {}
    for v, (base, what) in VARIANTS.items():
        ablations[v] = {"what": what, "base": base, "step_seconds": results[v]["step_seconds"]["median"],
                        "base_step_seconds": results[base]["step_seconds"]["median"],
                        "variant_over_base": ratio(v, base)}
    for w in workloads:
        if not w.flops:
            ablations[w.name] = {"what": w.label.strip(), "step_seconds": spread(times[w.name])}
    return ablations


def _evaluation(cfg: BenchConfig, tokenizer, corpus, ratios: dict, progress: bool) -> dict[str, Any]:
    """The evaluation benchmark (bench/evaluation.py; skipped with eval_rounds 0); its ratio joins `ratios`."""
    if not cfg.eval_rounds:
        return {}
    evaluation = evaluation_benchmark(cfg, tokenizer, corpus, progress)
    ratios["evaluation_speedup"] = {"value": evaluation["speedup"], "per_round": spread(evaluation["per_round"]),
                                    "cpu_time_value": evaluation["speedup_cpu_time"]}
    return evaluation


def run_benchmark(cfg: BenchConfig, progress: bool = True) -> dict[str, Any]:
    """Run everything; return the JSON-ready result (see the module docstring)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    # The trainer's rule (train.mixed_precision): bf16 autocast on a bf16 GPU for auto; --precision bf16
    # forces it for every training workload alike (on CPU it needs AVX512-BF16 / AMX to be fast).
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda"
                                       and native_bf16("cuda"))
    t_start = time.perf_counter()
    machine = machine_info(device)

    corpus, tokenizer, blocks = load_data(cfg)
    cycle = BlockCycle(blocks, cfg.batch)
    sentences, sentence_source = encode_sentences(cfg, corpus)

    workloads = [*(hf_workload(cfg, tokenizer, cycle, device, bf16, name) for name in stock_workloads(cfg)),
                 our_workload(cfg, tokenizer, cycle, device, bf16, "mlm"),
                 our_workload(cfg, tokenizer, cycle, device, bf16, "hybrid"),
                 our_workload(cfg, tokenizer, cycle, device, bf16, "hybrid", shared_pass=True),
                 *(our_workload(cfg, tokenizer, cycle, device, bf16, "hybrid", shared_pass=name == "shared",
                                static_shapes=True) for name in (STATIC if cfg.static_shapes else ())),
                 gemm_workload(cfg, device, bf16)]
    if cfg.ablations:
        workloads += [our_workload(cfg, tokenizer, cycle, device, bf16, base, variant=v)
                      for v, (base, _) in VARIANTS.items()]
        workloads += micro_workloads(cfg, tokenizer, device)
    by_name = {w.name: w for w in workloads}
    times, cpu_times = round_robin(workloads, cfg.rounds, cfg.warmup, device, progress)

    gemm_flops_s = by_name["gemm"].flops / float(np.median(times["gemm"]))
    peak = gpu_peak_flops(device, cfg.peak_tflops)
    results = _workload_results(workloads, times, cpu_times, gemm_flops_s, peak)

    def ratio(a: str, b: str) -> dict[str, Any]:
        return _ratio_stats(times[a], times[b], cpu_times[a], cpu_times[b])

    ratios = {"speedup_mlm_vs_hf": ratio("hf", "mlm"), "hybrid_vs_mlm_step_time": ratio("hybrid", "mlm"),
              "shared_vs_mlm_step_time": ratio("shared", "mlm"),
              **{f"speedup_mlm_vs_{n}": ratio(n, "mlm") for n in stock_workloads(cfg)[1:]},
              **{f"speedup_hybrid_vs_{n}": ratio(n, "hybrid") for n in stock_workloads(cfg)},
              **{f"{n}_static_vs_{n}_step_time": ratio(f"{n}_static", n) for n in STATIC if cfg.static_shapes},
              "hybrid_vs_mlm_flops": {"value": by_name["hybrid"].flops / by_name["mlm"].flops},
              "shared_vs_mlm_flops": {"value": by_name["shared"].flops / by_name["mlm"].flops}}

    ablations = _ablation_results(workloads, times, results, ratio) if cfg.ablations else {}

    encoding = encoding_benchmark(cfg, tokenizer, sentences, device, progress)
    encoding["source"] = sentence_source
    evaluation = _evaluation(cfg, tokenizer, corpus, ratios, progress)
    pretrain = {}  # the CPU pre-training speed-up at the profile's shapes (a GPU run has its own precision rule)
    if cfg.pretrain_profile and device.type == "cpu":
        pretrain = pretrain_speed_benchmark(cfg, cfg.pretrain_profile, progress)
        ratios["cpu_pretrain_speedup"] = {"value": pretrain["speedup"], "per_round": pretrain["per_round"],
                                          "cpu_time_value": pretrain["cpu_time_speedup"]}

    training = [*stock_workloads(cfg), *TRAINING[1:]]  # TRAINING[0] is "hf"
    memory = {w.name: step_memory(w, cfg.warmup + cfg.rounds, device) for w in workloads if w.name in training}
    memory["process_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    if device.type == "cuda":
        memory["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 1024 ** 2

    measured = {"speedup_mlm_vs_hf": ratios["speedup_mlm_vs_hf"]["value"],
                "hybrid_vs_mlm_step_time": ratios["hybrid_vs_mlm_step_time"]["value"],
                "shared_vs_mlm_step_time": ratios["shared_vs_mlm_step_time"]["value"],
                "mlm_flops_fraction_of_gemm": results["mlm"]["fraction_of_gemm"],
                "encode_bucketed_vs_padded": encoding["bucketed_vs_padded"],
                "evaluation_speedup": evaluation.get("speedup"),
                "cpu_pretrain_speedup": pretrain.get("speedup")}
    targets = {name: _check(name, value) for name, value in measured.items()}
    machine["load_average_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "command": None,  # main() fills in the command line
        "config": dataclasses.asdict(cfg), "machine": machine, "precision": "bf16" if bf16 else "fp32",
        "gemm_flops_per_s": gemm_flops_s, "gpu_peak_flops_per_s": peak, "results": results, "ratios": ratios,
        "encoding": encoding, "memory": memory, "targets": targets, "ablations": ablations,
        "evaluation": evaluation, "pretrain_speed": pretrain,
        "all_targets_pass": all(t["pass"] for t in targets.values()),
        "data": {"corpus": f"{corpus.source}:{corpus.path}", "blocks": len(cycle.blocks),
                 "tokenizer_size": len(tokenizer)},
        "wall_seconds": time.perf_counter() - t_start,
    }


def parse_args(argv: Sequence[str] | None = None) -> tuple[BenchConfig, argparse.Namespace]:
    """(BenchConfig, the other options): one flag per BenchConfig field, plus --tiny, --out, --quiet."""
    ap = argparse.ArgumentParser(prog="python -m jepa_core.bench", description=__doc__.split("\n")[0])
    types_ = {"int": int, "float": float, "str": str}
    for f in dataclasses.fields(BenchConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            ap.add_argument(flag, action="store_true", default=None)
        else:  # "int", "int | None", "str | None" ...
            kind = types_[f.type.split(" ")[0]]
            ap.add_argument(flag, type=kind, default=None, metavar=kind.__name__.upper(),
                            help=f"default {f.default}")
    ap.add_argument("--tiny", action="store_true", help="a config whose steps take milliseconds (the test's)")
    ap.add_argument("--out", default=None, help="write the JSON result here")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--markdown", action="store_true", help="print Markdown tables instead of the text table")
    args = ap.parse_args(argv)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(BenchConfig)
             if getattr(args, f.name) is not None}
    return (BenchConfig.tiny(**given) if args.tiny else BenchConfig(**given)), args


def main(argv: Sequence[str] | None = None) -> int:
    cfg, opts = parse_args(argv)
    res = run_benchmark(cfg, progress=not opts.quiet)
    res["command"] = " ".join(["python -m jepa_core.bench", *(sys.argv[1:] if argv is None else argv)])
    print(format_markdown(res) if opts.markdown else format_table(res))
    if opts.out:
        out = Path(opts.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1))
        print(f"\nwrote {out}")
    return 0
