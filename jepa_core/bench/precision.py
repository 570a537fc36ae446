"""Whether bf16 autocast may train the cpu profile: the decision of issue 22, item 4, by a rule fixed first.

bf16 autocast on a CPU with AVX512-BF16 runs an MLM step ~1.5× faster (docs/PERFORMANCE.md) but changes the
run's numerics, and rounding alone moves a seed's C1 value by ~0.07 (docs/PROTOCOL.md §4a). So it is adopted
only if runs trained with it at equal steps still say what fp32 runs say. The rule (docs/PERFORMANCE.md,
"bf16 on CPU: the decision", committed before the bf16 runs were made), read from two run folders of the same
profile whose only difference is `train.precision`, over the same seeds:

1. every bf16 model meets its learning targets: the recipe's gap below the unigram entropy (RECIPE_TARGETS) and
   the summary's precondition, ≥ LEARNING_GAP_MIN nats below the context-free baseline on the same tokens;
2. the validation MLM loss moves little: the mean over (objective, seed) of |bf16 − fp32| < LOSS_SHIFT_MAX nats;
3. the C1 intervals overlap: hybrid − MLM SST-2 uniformity under mean pooling, the seed-level 95% interval
   (`tables.differences`, the code path of the claims) of the bf16 runs and of the fp32 runs on those seeds.

    python -m jepa_core.bench.precision outputs/cpu outputs/cpu-bf16 --seeds 0 1 2 [--out decision.json]
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from jepa_core.analysis.measures import MEASURES, load_measures
from jepa_core.analysis.tables import ModelFolder, Results, differences
from jepa_core.config import load_params
from jepa_core.report.summary import LEARNING_GAP_MIN, learning_table
from jepa_core.runs import folder_name, model_name

RECIPE_TARGETS = {"mlm": 1.5, "hybrid": 1.2}  # docs/RECIPE.md: the cpu profile's gap below the unigram entropy
LOSS_SHIFT_MAX = 0.05  # nats, mean |bf16 − fp32| validation MLM loss (issue 22)
C1_CELL = ("sst2", "mean", "uniformity")


def c1_interval(run_dir: str | Path, seeds: list[int]) -> dict:
    """The seed-level hybrid − MLM C1 row over `seeds`, from the run's results/measures.npz."""
    measures, _, _ = load_measures(Path(run_dir) / "results" / MEASURES)
    results = Results()
    results.measures = {k: m for k, m in measures.items() if (k[2], k[3], k[4]) == C1_CELL and k[1] in seeds}
    encoders = [ModelFolder(o, o, s, Path(run_dir)) for o in ("hybrid", "mlm") for s in seeds]
    table = differences(results, encoders, [("hybrid", "mlm")])
    pooled = table[table["level"] == "pooled"]
    if pooled.empty:
        raise ValueError(f"{run_dir}: no C1 cell {C1_CELL} for hybrid and mlm at seeds {seeds} in results/{MEASURES}")
    row = pooled.iloc[0]
    return {k: float(row[k]) for k in ("diff", "ci_low", "ci_high", "sd_seeds")} | {
        "per_seed": [float(v) for v in table[table["level"] != "pooled"].sort_values("seed")["diff"]]}


def _models(run_dir: str | Path, seeds: list[int]) -> dict[tuple[str, int], dict]:
    """(objective, seed) -> that model's learning row (summary.learning_table) and its pre-training wall time,
    the model named by the run's own params.yaml (runs.model_name)."""
    params = load_params(Path(run_dir) / "params.yaml")
    table = learning_table(run_dir).set_index("model")
    out = {}
    for objective in RECIPE_TARGETS:
        for seed in seeds:
            name = model_name(params, objective, seed)
            if name not in table.index:
                raise ValueError(f"{run_dir}: no models/{name}/train_summary.json")
            summary = json.loads((Path(run_dir) / "models" / name / "train_summary.json").read_text())
            out[objective, seed] = {**table.loc[name].to_dict(), "wall_time_s": summary["wall_time_s"]}
    return out


def bf16_decision(fp32_run: str | Path, bf16_run: str | Path, seeds: list[int]) -> dict:
    """The three conditions of the module docstring, each with its numbers, and `adopt` = all three."""
    fp32, bf16 = _models(fp32_run, seeds), _models(bf16_run, seeds)
    models = []
    for (objective, seed), row in bf16.items():
        meets = (row["gap"] >= RECIPE_TARGETS[objective]) and (row["check_gap"] >= LEARNING_GAP_MIN)
        models.append(dict(objective=objective, seed=seed, gap=row["gap"], gap_target=RECIPE_TARGETS[objective],
                           check_gap=row["check_gap"], meets=bool(meets),
                           loss_fp32=fp32[objective, seed]["validation_mlm_loss"],
                           loss_bf16=row["validation_mlm_loss"],
                           loss_shift=row["validation_mlm_loss"] - fp32[objective, seed]["validation_mlm_loss"]))
    mean_abs_shift = sum(abs(m["loss_shift"]) for m in models) / len(models)
    c1 = {"fp32": c1_interval(fp32_run, seeds), "bf16": c1_interval(bf16_run, seeds)}
    overlap = c1["fp32"]["ci_low"] <= c1["bf16"]["ci_high"] and c1["bf16"]["ci_low"] <= c1["fp32"]["ci_high"]
    times = {k: {o: sum(run[o, s]["wall_time_s"] for s in seeds) / len(seeds) for o in RECIPE_TARGETS}
             for k, run in (("fp32", fp32), ("bf16", bf16))}
    conditions = {"learning_targets": all(m["meets"] for m in models),
                  "loss_shift": bool(mean_abs_shift < LOSS_SHIFT_MAX), "c1_overlap": bool(overlap)}
    return dict(seeds=list(seeds), fp32_run=str(fp32_run), bf16_run=str(bf16_run), models=models,
                mean_abs_loss_shift=mean_abs_shift, mean_loss_shift=sum(m["loss_shift"] for m in models) / len(models),
                c1=c1, wall_time_s=times,
                speedup={o: times["fp32"][o] / times["bf16"][o] for o in RECIPE_TARGETS},
                conditions=conditions, adopt=all(conditions.values()))


def markdown(d: dict) -> str:
    """The decision as the tables docs/PERFORMANCE.md shows."""
    f = lambda v, n=3: "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:+.{n}f}"  # noqa: E731
    lines = ["| model | gap below entropy (target) | below context-free (≥ 0.5) | meets | val. MLM loss fp32 | bf16 "
             "| shift |",
             "|---|---:|---:|:---:|---:|---:|---:|"]
    for m in d["models"]:
        lines.append(f"| {folder_name(m['objective'], m['seed'])} | {m['gap']:.2f} (≥ {m['gap_target']:g}) | "
                     f"{m['check_gap']:.2f} | {'yes' if m['meets'] else '**no**'} | {m['loss_fp32']:.3f} | "
                     f"{m['loss_bf16']:.3f} | {f(m['loss_shift'])} |")
    seeds = ", ".join(map(str, d["seeds"]))
    lines += ["", f"| C1 over seeds {seeds} | hybrid − MLM [95% CI] | seed SD | per seed |",
              "|---|---|---:|---|"]
    for k in ("fp32", "bf16"):
        c = d["c1"][k]
        lines.append(f"| {k} | {f(c['diff'])} [{f(c['ci_low'])}, {f(c['ci_high'])}] | {c['sd_seeds']:.3f} | "
                     + ", ".join(f(v) for v in c["per_seed"]) + " |")
    c = d["conditions"]
    lines += ["", f"- learning targets met by every bf16 model: {'yes' if c['learning_targets'] else 'no'}",
              f"- mean |Δ validation MLM loss| {d['mean_abs_loss_shift']:.3f} nats (signed mean "
              f"{f(d['mean_loss_shift'])}; must be < {LOSS_SHIFT_MAX}): {'yes' if c['loss_shift'] else 'no'}",
              f"- C1 intervals overlap: {'yes' if c['c1_overlap'] else 'no'}",
              "- pre-training wall time per run, fp32 / bf16: " + ", ".join(
                  f"{o} {d['wall_time_s']['fp32'][o] / 60:.1f} / {d['wall_time_s']['bf16'][o] / 60:.1f} min "
                  f"({d['speedup'][o]:.2f}×)" for o in RECIPE_TARGETS),
              f"- **adopt bf16: {'yes' if d['adopt'] else 'no'}**"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("fp32_run", type=Path)
    ap.add_argument("bf16_run", type=Path)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, help="write the decision as JSON here")
    args = ap.parse_args(argv)
    d = bf16_decision(args.fp32_run, args.bf16_run, args.seeds)
    if args.out:
        args.out.write_text(json.dumps(d, indent=1))
    print(markdown(d))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
