"""The benchmark's report: one list of tables, rendered as aligned text or as Markdown."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jepa_core.bench.config import STATIC, TRAINING, WORKLOADS
from jepa_core.bench.workloads import STOCK


@dataclass
class Table:
    """One section of the report: an intro line, then a table (cells already formatted)."""

    intro: str
    header: list[str]
    rows: list[list[str]]
    left: tuple[int, ...] = (0,)  # left-aligned (text) columns; the others are numbers, right-aligned


def report(res: dict[str, Any]) -> tuple[str, list[Table]]:
    """(machine and config paragraph, tables): what both renderers below print."""
    m, c = res["machine"], res["config"]
    about = (f"Machine: {m['cpu']}, {m['logical_cores']} logical cores, torch threads {m['torch_threads']}, "
             f"torch {m['torch']}, transformers {m['transformers']}, device {m['device']}"
             f"{' (' + m['gpu'] + ')' if 'gpu' in m else ''}, precision {res['precision']}; "
             f"1-min load average {m['load_average_start']:.1f} at the start, {m['load_average_end']:.1f} "
             f"at the end. Config: {c['layers']} layers, hidden {c['hidden']}, {c['heads']} heads, "
             f"FFN {c['ffn']}, vocab {c['vocab']}, batch {c['batch']} x {c['seq']} tokens, {c['rounds']} timed "
             f"rounds after {c['warmup']} warm-up.")
    tables = []
    rows = []
    for name in [n for n in dict.fromkeys((*STOCK, *WORKLOADS)) if n in res["results"]]:
        r, s = res["results"][name], res["results"][name]["step_seconds"]
        rows.append([r["label"], f"{s['median'] * 1e3:,.0f} ({s['iqr'] * 1e3:,.0f})",
                     f"{r['tokens_per_s']['median']:,.0f}" if "tokens_per_s" in r else "–",
                     f"{r['flops_per_step'] / 1e9:.1f}", f"{r['achieved_flops_per_s'] / 1e9:.1f}",
                     f"{r['fraction_of_gemm']:.0%}"])
    tables.append(Table("", ["workload", "step ms, median (IQR)", "tokens/s", "GFLOP/step", "GFLOP/s", "of GEMM"],
                        rows))
    rows = []
    for name, t in res["targets"].items():
        cpu = res["ratios"].get(name, {}).get("cpu_time_value")
        rows.append([t["what"], f"{t['measured']:.2f}{f' ({cpu:.2f})' if cpu else ''}", f"{t['target']}",
                     {True: "yes", False: "NO", None: "n/a"}[t["pass"]], f"`{name}`"])
    tables.append(Table("Targets (wall clock; in brackets the same ratio in process CPU time, less sensitive "
                        "to other load):", ["target", "measured (CPU-time ratio)", "target", "pass", "JSON key"],
                        rows, left=(0, 4)))
    stock = [k for k in res["ratios"] if k.startswith(("speedup_mlm_vs_hf_", "speedup_hybrid_vs_hf"))]
    if stock:
        tables.append(Table("Tokens/s of our steps over each stock step (> 1: ours is faster):", ["ratio", "value"],
                            [[k, f"{res['ratios'][k]['value']:.2f}"] for k in stock], left=(0,)))
    static = [k for k in (f"{n}_static_vs_{n}_step_time" for n in STATIC) if k in res["ratios"]]
    if static:
        tables.append(Table("Step time with train.static_shapes over the default shapes "
                            "(< 1: static shapes are faster):",
                            ["ratio", "value"], [[k, f"{res['ratios'][k]['value']:.3f}"] for k in static], left=(0,)))
    if res["ablations"]:
        rows = []
        for name, a in res["ablations"].items():
            if "variant_over_base" in a:
                rows.append([f"`{name}`", f"{a['step_seconds'] * 1e3:,.0f}",
                             f"{a['base']} {a['base_step_seconds'] * 1e3:,.0f}",
                             f"{a['variant_over_base']['value']:.2f}",
                             a["what"]])
            else:
                rows.append([f"`{name}`", f"{a['step_seconds']['median'] * 1e3:.1f}", "", "", a["what"]])
        tables.append(Table("Ablations (one change each; variant / base > 1: our base choice is that much faster):",
                            ["ablation", "ms", "vs base", "variant / base", "what changes"], rows, left=(0, 4)))
    e = res["encoding"]
    tables.append(Table(
        f"Encoding {e['sentences']} sentences ({e['source']}; mean {e['mean_tokens']:.1f}, max {e['max_tokens']} "
        f"tokens), batch {e['batch_size']}; on token-linear work bucketing can beat input order by at most "
        f"{e['padding_bound_unbucketed']:.2f}x and padding to max_length by {e['padding_bound_padded']:.2f}x:",
        ["mode", "sentences/s"],
        [[mode, f"{e[mode]['sentences_per_s']:,.0f}"] for mode in ("padded", "unbucketed", "bucketed")]))
    if res.get("evaluation"):
        tables.append(_evaluation_table(res["evaluation"]))
    if res.get("pretrain_speed"):
        tables.append(_pretrain_table(res["pretrain_speed"]))
    mem = res["memory"]
    training = [n for n in dict.fromkeys((*STOCK, *TRAINING)) if isinstance(mem.get(n), dict)]
    tables.append(Table(
        f"Memory (process peak RSS {mem['process_peak_rss_mib']:,.0f} MiB):", ["memory, MiB", *training],
        [["state (params + grads + AdamW)", *(f"{mem[n]['state_mib']:.0f}" for n in training)],
         ["one step above resident", *(f"{mem[n]['step_peak_mib']:.0f}" if mem[n]["step_peak_mib"] is not None
                                       else "–" for n in training)]]))
    return about, tables


def _evaluation_table(ev: dict[str, Any]) -> Table:
    """The evaluation benchmark: each part's median seconds on both paths, the speed-up and the tolerance."""
    tol = ev["tolerance"]
    return Table(
        f"Evaluation of one encoder ({ev['encoder']}; {ev['profile']} profile: {', '.join(ev['tasks'])}; "
        f"{', '.join(ev['poolings'])}), previous path (scikit-learn probes) and current one ({ev['device']}), "
        f"{ev['rounds']} interleaved round(s), median wall seconds; speed-up {ev['speedup']:.2f}x "
        f"(CPU time {ev['speedup_cpu_time']:.2f}x). Tables: probe metrics within "
        f"{tol['probe_max_abs_points']:.2f} points ({tol['probe_cells_over_0_5_points']} of {tol['probe_cells']} "
        f"cells over 0.5), geometry within {tol['geometry_max_rel']:.1e} relative, CI widths within "
        f"{tol['ci_width_max_rel_change']:.1%}:",
        ["part", "previous s", "current s", "ratio"],
        [[part, f"{ev['parts_seconds']['today'][part]:.2f}", f"{ev['parts_seconds']['new'][part]:.2f}",
          f"{ev['parts_seconds']['today'][part] / max(ev['parts_seconds']['new'][part], 1e-9):.2f}"]
         for part in ev["parts_seconds"]["today"]]
        + [["total", f"{sorted(ev['seconds']['today']['wall'])[len(ev['seconds']['today']['wall']) // 2]:.2f}",
            f"{sorted(ev['seconds']['new']['wall'])[len(ev['seconds']['new']['wall']) // 2]:.2f}",
            f"{ev['speedup']:.2f}"]])


def _pretrain_table(ps: dict[str, Any]) -> Table:
    """The CPU pre-training speed-up: fp32 and the profile's precision, per objective, one thread."""
    sh = ps["shapes"]
    return Table(
        f"Pre-training steps at the {ps['profile']} profile's shapes ({sh['architecture']}, {sh['layers']} x "
        f"{sh['hidden']}, vocab {sh['vocab']}, batch {sh['batch']} x {sh['seq']}), one thread, fp32 against the "
        f"profile's precision now ({ps['current']}); median ms, interleaved rounds; one hybrid + one MLM step "
        f"{ps['speedup']:.2f}x (CPU time {ps['cpu_time_speedup']:.2f}x):",
        ["objective", "fp32 ms", f"{ps['current']} ms", "speed-up"],
        [[o, f"{ps[o]['fp32_step_seconds']['median'] * 1e3:,.0f}",
          f"{ps[o]['current_step_seconds']['median'] * 1e3:,.0f}", f"{ps[o]['speedup']:.2f}"]
         for o in ("hybrid", "mlm")])


def format_table(res: dict[str, Any]) -> str:
    """The report as aligned plain text (printed at the end of a run)."""
    about, tables = report(res)
    out = [about]
    for t in tables:
        widths = [max(len(row[k]) for row in [t.header, *t.rows]) for k in range(len(t.header))]
        line = lambda cells: "  ".join(cell.ljust(w) if k in t.left else cell.rjust(w)  # noqa: E731
                                       for k, (cell, w) in enumerate(zip(cells, widths))).rstrip()
        out += ["", *([t.intro] if t.intro else []), line(t.header), *(line(row) for row in t.rows)]
    return "\n".join(out)


def format_markdown(res: dict[str, Any]) -> str:
    """The report as Markdown tables (docs/PERFORMANCE.md is pasted from this: --markdown)."""
    about, tables = report(res)
    out = [about]
    for t in tables:
        out += ["", *([t.intro, ""] if t.intro else []), "| " + " | ".join(t.header) + " |",
                "|" + "".join("---|" if k in t.left else "---:|" for k in range(len(t.header))),
                *("| " + " | ".join(row) + " |" for row in t.rows)]
    return "\n".join(out)
