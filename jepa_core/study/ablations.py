"""Notebook 05 (issue 13): which knob drives the hybrid-vs-MLM geometry, where in depth it appears, and
where a reference encoder sits.

    on = enabled(params)                          # ablations.variants or eval.reference_models set
    pretrain_variants(params, run_dir, resume)    # the variants that are not a main run (pretrain.jobs.pretrain_runs)
    metrics, differences = evaluate_study(params, run_dir)   # -> <run>/ablations/results/
    effects = effect_table(metrics, differences)  # variant − MLM per claim row (C1–C4); verdicts on 05's family
    layerwise = layerwise_study(params, run_dir)  # -> <run>/results/layerwise.csv
    trajectory_study(params, run_dir, trajectory_runs(params, run_dir), study_pairs(variant_names(params)),
                     out_dir=run_dir / STUDY_DIR)        # analysis/trajectories.py -> <run>/ablations/results/

Protocol: ONE implementation. Every variant is evaluated by evaluate.evaluate with the run's eval
parameters (same tasks, dev subsets, bootstrap resamples: they are seeded by the profile's first
seed and the task, not by the model), restricted to the poolings the claims C1–C4 read
(CLAIM_POOLINGS: a pooling's numbers do not depend on the other poolings, and the learned ones are
the costly ones). Each variant is paired with the MLM baseline by pre-training seed (tables.differences:
seed k of the variant − seed k of MLM, the seed-level interval from stats.seed_level_difference),
and each claim's verdict comes from summary.py's own rule with the variant in the hybrid's place.

Confirmatory part (docs/PROTOCOL.md §2a): the DECLARED comparisons, each with its C1 cell and 15 C2 cells,
form 05's own family (64 cells with all four); Holm runs over it and the C1 / C2 rules run on the decided cells.
Every other row (C3, C4, the context rows of C1, undeclared comparisons) is `exploratory` in effects.csv.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

import pandas as pd

from jepa_core.analysis.encode import load_encoder, reference_encoder_path
from jepa_core.analysis.evaluate import evaluate
from jepa_core.analysis.layerwise import layer_embeddings, layerwise_geometry
from jepa_core.analysis.trajectories import TrajectoryRun
from jepa_core.config import Params
from jepa_core.pretrain.flops import training_flops_per_step
from jepa_core.pretrain.jobs import pretrain_runs
from jepa_core.report import claims
from jepa_core.report.summary import precondition_sentence, variants_not_learned
from jepa_core.runs import SNAPSHOTS, model_name
from jepa_core.study.variants import AblationRun, expand, planned_budget

BASELINE = "mlm-steps"  # the main MLM run (equal steps): every effect is variant − this run
BASELINE_NAME = "mlm"  # its model name in 05's tables, so that summary.py's rules find it
# compute held equal: the main hybrid against MLM given its FLOPs, paired by seed like every effect
EQUAL_FLOPS = ("hybrid-learned", "mlm-flops")
CLAIM_POOLINGS = ("mean", "max")  # the poolings C1–C4 read (claims.claim_c1 .. claim_c4)
CLAIMS = ("C1", "C2", "C3", "C4")
# 05's confirmatory family (PROTOCOL §2a): these comparisons x the cells of these claims; hybrid-learned −
# mlm-flops was declared on 2026-12-05 for the runs after that commit (before it, it was looked at after the fact)
DECLARED = (("hybrid-fixed0.5", "mlm"), ("hybrid-shared", "mlm"), ("mlm-flops", "mlm"), ("hybrid-learned", "mlm-flops"))
CONFIRMATORY_CLAIMS = ("C1", "C2")
REFERENCE = "reference"  # the objective column of a reference encoder
STUDY_DIR = "ablations"  # <run>/ablations/: 05's evaluation (results/, cache/), apart from 03's
DESCRIPTIONS = {
    "hybrid-learned": "the main hybrid (λ learned)",
    "hybrid-uncertainty": "λ from uncertainty weighting",
    "hybrid-shared": "one student pass feeds both losses",
    "mlm-flops": "MLM at the hybrid's FLOPs",
    "mlm-steps": "the MLM baseline itself",
}


def enabled(params: Params) -> bool:
    """05 does anything only with ablation variants or reference encoders."""
    return bool(params.ablations.variants or params.eval.reference_models)


def variant_names(params: Params) -> list[str]:
    """The compared variants, hybrid-learned first (the main effect, the yardstick of the others)."""
    names = [v for v in params.ablations.variants if v != BASELINE]
    return sorted(names, key=lambda v: v != "hybrid-learned")


def study_runs(params: Params) -> list[AblationRun]:
    """Every (variant, seed) and the MLM baseline's runs; main runs are reused (`AblationRun.reuses`)."""
    return expand(params, [BASELINE, *variant_names(params)], params.ablations.seeds or None)


def trained_names(params: Params) -> list[str]:
    """Folder names of the runs 05 pre-trains itself (for the runner's progress display)."""
    return [r.key for r in study_runs(params) if r.reuses is None] if params.ablations.variants else []


def model_dir(run: AblationRun, base: Params, run_dir: Path) -> Path:
    return Path(run_dir) / "models" / (model_name(base, run.reuses, run.seed) if run.reuses else run.key)


def pretrain_variants(params: Params, run_dir: Path, resume: bool = True,
                      echo: Callable[[str], None] = print) -> dict[str, dict]:
    """Pre-train the runs that are not main runs, as notebook 02 does (pretrain.jobs.pretrain_runs)."""
    every = study_runs(params)
    runs = [r for r in every if r.reuses is None]
    # longest first (analytic FLOPs, in main-hybrid-run units: the variants at the hybrid's compute tie and
    # keep their order): with two runs at a time, a long run started last leaves one core idle at the end
    # (the cpu 05 ran mlm-flops-s2 alone for its last 9 min)
    vocab = params.data.vocab_size
    main_hybrid = params.train.steps * training_flops_per_step(params, vocab, "hybrid")["total"]
    runs.sort(key=lambda r: -round(planned_budget(r, vocab)["total_flops"] / main_hybrid, 2))
    jobs = [(r.key, r.params, r.objective, r.seed) for r in runs]
    missing = [str(model_dir(r, params, run_dir)) for r in every
               if r.reuses and not (model_dir(r, params, run_dir) / "config.json").is_file()]
    if missing:
        raise FileNotFoundError(f"main encoders missing: {', '.join(missing)}: run notebook 02_pretrain first")
    return pretrain_runs(jobs, Path(run_dir), params.train.parallel_runs, resume, echo) if jobs else {}


def reference_models(params: Params) -> dict[str, Path]:
    return {Path(str(name)).name: reference_encoder_path(name) for name in params.eval.reference_models}


def study_models(params: Params, run_dir: Path) -> tuple[dict, dict[str, str]]:
    """({model name: {seed: folder}}, {model name: objective}) of everything 05 evaluates."""
    models: dict[str, dict] = {}
    objectives = {}
    for r in study_runs(params):
        name = BASELINE_NAME if r.name == BASELINE else r.name
        models.setdefault(name, {})[r.seed] = model_dir(r, params, run_dir)
        objectives[name] = r.objective
    for name, path in reference_models(params).items():
        models[name], objectives[name] = {None: path}, REFERENCE
    return models, objectives


def reused_models(params: Params, run_dir: Path) -> dict[str, tuple[Path, str]]:
    """The study's models that ARE main runs (the MLM baseline, hybrid-learned) -> (03's results folder, their
    name there): evaluate takes their seeds from 03's measures.npz instead of evaluating them again."""
    return {BASELINE_NAME if r.name == BASELINE else r.name: (Path(run_dir) / "results", r.reuses)
            for r in study_runs(params) if r.reuses}


def evaluate_study(params: Params, run_dir: Path, reuse: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """evaluate.evaluate on every variant, the MLM baseline and the reference encoders, pairs
    (variant, mlm); writes <run>/ablations/results/. reuse: the main runs' numbers come from 03's
    results/measures.npz (`reused_models`; the same code, settings, subsets and resamples, so the same
    numbers), evaluated again only where 03 has not measured them with these settings."""
    run_dir = Path(run_dir)
    models, objectives = study_models(params, run_dir)
    if not params.ablations.variants:  # reference encoders only: nothing to pair
        models = {n: m for n, m in models.items() if objectives[n] == REFERENCE}
    poolings = [p for p in params.eval.poolings if p in CLAIM_POOLINGS]
    study = dataclasses.replace(params, eval=dataclasses.replace(params.eval, poolings=poolings))
    wiki = json.loads((run_dir / "data" / "wiki_sentences.json").read_text())
    return evaluate(models, study, run_dir / STUDY_DIR, wiki, objectives=objectives, random_init=False,
                    pairs=study_pairs(variant_names(params)),
                    reuse=reused_models(params, run_dir) if reuse else None)


def trajectory_runs(params: Params, run_dir: Path) -> list[TrajectoryRun]:
    """Every run of the study (variants, the MLM baseline, hybrid-learned) with its snapshot folder, named as in
    05's tables: analysis/trajectories.py measures them into <run>/ablations/results/ (the main runs' snapshots
    from the cache that 03 filled)."""
    return [TrajectoryRun(BASELINE_NAME if r.name == BASELINE else r.name, r.objective, r.seed,
                          Path(run_dir) / SNAPSHOTS / (model_name(params, r.reuses, r.seed) if r.reuses else r.key))
            for r in study_runs(params)]


def study_pairs(variants: list[str]) -> list[tuple[str, str]]:
    """Every variant − MLM, and the main hybrid − mlm-flops when both are in the study (equal FLOPs)."""
    return [(v, BASELINE_NAME) for v in variants] + ([EQUAL_FLOPS] if set(EQUAL_FLOPS) <= set(variants) else [])


# ---------------------------------------------------------------- effects and verdicts

def _as_main_comparison(metrics: pd.DataFrame, differences: pd.DataFrame, variant: str,
                        baseline: str = BASELINE_NAME):
    """The tables summary.py's claim rules read, with `variant` in the hybrid's role and `baseline` in MLM's."""
    d = differences[(differences["model_a"] == variant) & (differences["model_b"] == baseline)]
    m = metrics[metrics["model"].isin([variant, baseline, "majority"])].copy()
    m.loc[m["model"] == variant, "objective"] = "hybrid"
    m.loc[m["model"] == baseline, "objective"] = "mlm"
    return m, d


EFFECT_COLUMNS = ["claim", "variant", "baseline", "task", "metric", "pooling", "n_seeds", "diff", "ci_low",
                  "ci_high", "p", "p_holm", "decided", "verdict", "claim_unadjusted", "note"]


def study_family(differences: pd.DataFrame, alpha: float = claims.HOLM_ALPHA) -> pd.DataFrame:
    """05's confirmatory family: the C1 and C2 cells of every DECLARED comparison present, one p each, Holm over
    all of them together (64 cells with the four comparisons and five GLUE tasks)."""
    parts = []
    for a, b in DECLARED:
        d = differences[(differences["model_a"] == a) & (differences["model_b"] == b)]
        if len(d):
            parts.append(claims.family_cells(d, CONFIRMATORY_CLAIMS).assign(variant=a, baseline=b))
    family = pd.concat(parts, ignore_index=True) if parts else \
        pd.DataFrame(columns=[*claims.FAMILY_COLUMNS, "variant", "baseline"])
    return claims.holm_family(family, alpha)


def effect_table(metrics: pd.DataFrame, differences: pd.DataFrame) -> pd.DataFrame:
    """One row per claim (C1–C4) x comparison x claim row (task, metric): the seed-level effect variant −
    baseline with its unadjusted 95% interval. `verdict`: the claim's confirmatory verdict (the rule on the cells
    Holm decides over `study_family`) on the rows that decide it, `exploratory` on every other row;
    `claim_unadjusted`: the rule on the unadjusted intervals. The comparisons: every variant − MLM, then
    hybrid-learned − mlm-flops (equal FLOPs) where both were evaluated."""
    rows = []
    family = study_family(differences)
    pairs = list(dict.fromkeys(zip(differences["model_a"], differences["model_b"])))
    # hybrid-learned − MLM first, the other variants − MLM in the table's order, the equal-FLOPs pair last
    pairs.sort(key=lambda pair: (pair[1] != BASELINE_NAME, pair[0] != "hybrid-learned"))
    for variant, baseline in pairs:
        m, d = _as_main_comparison(metrics, differences, variant, baseline)
        own = family[(family["variant"] == variant) & (family["baseline"] == baseline)]
        for verdict in claims.verdicts(m, d, family=own):
            if verdict.claim not in CLAIMS:
                continue
            note = verdict.notes[0] if verdict.notes and claims.ONE_SEED in verdict.notes[0] else ""
            decides = set(zip(verdict.family["task"], verdict.family["pooling"], verdict.family["metric"]))
            for _, r in verdict.table.iterrows():
                in_family = (r["task"], r["pooling"], r["metric"]) in decides
                rows.append(dict(claim=verdict.claim, variant=variant, baseline=baseline, task=r["task"],
                                 metric=r["metric"], pooling=r["pooling"], n_seeds=r["n_seeds"], diff=r["diff"],
                                 ci_low=r["ci_low"], ci_high=r["ci_high"], p=r.get("p"), p_holm=r.get("p_holm"),
                                 decided=bool(r.get("decided")) if in_family else None,
                                 verdict=verdict.verdict if in_family else claims.EXPLORATORY,
                                 claim_unadjusted=verdict.unadjusted, note=note))
    return pd.DataFrame(rows, columns=EFFECT_COLUMNS)


def _description(variant: str) -> str:
    if variant.startswith("hybrid-fixed"):
        return f"λ fixed at {variant.removeprefix('hybrid-fixed')}"
    return DESCRIPTIONS.get(variant, variant)


def effect_sentences(effects: pd.DataFrame) -> list[str]:
    """One sentence per comparison: each claim's verdict for variant − baseline, with its first row's interval."""
    out = []
    if "baseline" not in effects:  # an effects.csv written before the equal-FLOPs comparison
        effects = effects.assign(baseline=BASELINE_NAME)
    if "claim_unadjusted" not in effects:  # written before 05's family: every verdict was an unadjusted reading
        effects = effects.assign(claim_unadjusted=effects["claim_verdict"], verdict=claims.EXPLORATORY)
    for (variant, baseline), g in effects.groupby(["variant", "baseline"], sort=False):
        parts = []
        for claim, c in g.groupby("claim", sort=False):
            r = c.iloc[0]
            interval = f"{r['task']} {r['metric']} {claims.ci_text(r['diff'], r['ci_low'], r['ci_high'])}"
            if r["verdict"] != claims.EXPLORATORY:
                parts.append(f"{claim} {r['verdict']} (confirmatory, Holm over 05's family; {interval}, Holm p "
                             f"{claims.fmt(float(r['p_holm']), 4)}; unadjusted: {r['claim_unadjusted']})")
            else:
                parts.append(f"{claim} exploratory: {r['claim_unadjusted']} on the unadjusted intervals ({interval})")
        one_seed = " (one seed: not seed-level evidence)" if g["note"].fillna("").astype(bool).any() else ""
        against = "MLM" if baseline == BASELINE_NAME else f"**{baseline}** ({_description(baseline)}: equal FLOPs)"
        out.append(f"**{variant}** ({_description(variant)}) − {against}{one_seed}: " + "; ".join(parts) + ".")
    return out


SECTION = "## What drives the effect"


def summary_section(effects: pd.DataFrame, not_learned: list[tuple[str, float]] | None = None) -> str:
    warning = precondition_sentence(not_learned or [])
    lines = [SECTION, "", *([f"> {warning}", ""] if warning else []),
             "Each variant changes one knob of the hybrid (or gives MLM the hybrid's FLOPs); its effect is "
             "variant − MLM, paired by pre-training seed, with the seed-level 95% interval and the claim rules "
             "above (the variant in the hybrid's place; the first row of each claim is shown, all rows in "
             "`ablations/results/effects.csv`). Confirmatory (docs/PROTOCOL.md §2a): C1 and C2 of the declared "
             "comparisons (" + ", ".join(f"{a} − {b}" for a, b in DECLARED) + "), Holm over their cells together; "
             "everything else here is exploratory. A claim that holds for a variant as for hybrid-learned does not "
             "depend on the knob that variant changes; an effect that mlm-flops also shows can come from extra "
             "compute alone, without JEPA, and the last line, hybrid-learned − mlm-flops, holds compute equal.", ""]
    lines += [f"- {s}" for s in effect_sentences(effects)] or ["- no variant was compared"]
    return "\n".join(lines) + "\n"


def write_summary_section(run_dir: Path, effects: pd.DataFrame) -> str:
    """Replace (or append) the section in summary.md: a re-run of 05 alone must not add a second one."""
    path = Path(run_dir) / "summary.md"
    text = path.read_text() if path.is_file() else ""
    if SECTION in text:
        head, _, rest = text.partition(SECTION)
        after = rest.find("\n## ")
        text = head + (rest[after + 1:] if after >= 0 else "")
    section = summary_section(effects, variants_not_learned(run_dir, f"{STUDY_DIR}/results"))
    path.write_text(text.rstrip("\n") + "\n\n" + section)
    return section


# ---------------------------------------------------------------- layer-wise geometry

LAYERWISE_TASKS = ("sst2", "wiki")  # SST-2 dev and held-out Wikipedia: 04's geometry subsamples


def layerwise_models(params: Params, run_dir: Path) -> list[tuple[str, str, int | None, Path]]:
    """(model, objective, seed, folder): the main models, the trained variants, the reference encoders."""
    out = [(o, o, s, Path(run_dir) / "models" / model_name(params, o, s)) for o in params.objectives
           for s in params.seeds]
    out += [(r.name, r.objective, r.seed, model_dir(r, params, run_dir)) for r in study_runs(params)
            if r.reuses is None and params.ablations.variants]
    out += [(n, REFERENCE, None, p) for n, p in reference_models(params).items()]
    return out


def layerwise_study(params: Params, run_dir: Path) -> pd.DataFrame:
    """layerwise.layerwise_geometry of every model on each LAYERWISE_TASKS sentence set (the examples
    03 drew for geometry, results/embeddings/<task>/examples.parquet); writes results/layerwise.csv."""
    run_dir = Path(run_dir)
    sentences = {}
    for task in LAYERWISE_TASKS:
        path = run_dir / "results" / "embeddings" / task / "examples.parquet"
        if path.is_file():  # SST-2 is absent when GLUE was not available
            sentences[task] = pd.read_parquet(path)["sentence1"].tolist()
    frames = []
    for name, objective, seed, folder in layerwise_models(params, run_dir):
        model, tokenizer = load_encoder(folder)
        for task, texts in sentences.items():
            per_layer = layer_embeddings(model, tokenizer, texts, max_length=params.eval.max_length,
                                         batch_size=params.eval.batch_size)
            frames.append(layerwise_geometry(per_layer).assign(model=name, objective=objective, seed=seed,
                                                               task=task))
    columns = ["model", "objective", "seed", "task", "layer", "metric", "value", "n"]
    table = pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
    table["seed"] = table["seed"].astype("Int64")  # integers; <NA> for a reference encoder
    (run_dir / "results").mkdir(exist_ok=True)
    table.to_csv(run_dir / "results" / "layerwise.csv", index=False)
    return table


def layer_counts(table: pd.DataFrame) -> dict[str, int]:
    """Layers (embeddings included) per model in a layerwise table."""
    return {m: int(g["layer"].max()) + 1 for m, g in table.groupby("model")} if len(table) else {}


def write_effects(run_dir: Path, metrics: pd.DataFrame, differences: pd.DataFrame) -> pd.DataFrame:
    """effect_table, also written to <run>/ablations/results/effects.csv."""
    effects = effect_table(metrics, differences)
    effects.to_csv(Path(run_dir) / STUDY_DIR / "results" / "effects.csv", index=False)
    return effects

