"""summary.md: the paper's claims C1–C5 (docs/PROTOCOL.md §2), this run's numbers, and a verdict for each.

Every verdict is decided from the SEED-LEVEL 95% intervals of hybrid − MLM differences (the
`level == "pooled"` rows of results/differences.csv: over pre-training seeds AND dev examples,
`stats.seed_level_difference`), never from point estimates, with the rule written next to it:

    reproduced      the CI(s) lie entirely on the side the paper claims (enough tasks of them)
    not reproduced  the CI(s) lie entirely on the other side (enough tasks that the claim cannot hold)
    inconclusive    otherwise: the CIs cover 0 (or the equivalence margin) or the data are missing

A run with one pre-training seed has no seed-level interval, so every claim is inconclusive there
("one seed: not seed-level evidence"); the verdict the example-level CIs of that seed would give
is added as a note. Each seed's own difference is shown next to the pooled one.

Family-wise check: each claim's rule reads its own pre-specified rows at the 95% level. The
Holm-corrected p-value of every seed-level difference (Holm over the whole grid: every task x pooling
x metric) is printed next to it, and C1–C4 are decided a second time with only the differences that
keep p_holm < 0.05 counting as decided (`holm_decided`, `Verdict.familywise`). Where the two disagree, the verdict
table and the claim say so: the result holds for the planned comparison but not as a grid-wide finding.
C5 is an equivalence claim, which a test of "difference ≠ 0" cannot support: no family-wise verdict.

Learning check: summary.md also says whether the encoders learned more than token frequencies
(`learning_warning`); a run whose models sit at the unigram plateau is not evidence about the claims.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from jepa_core.config import HEADLINE_METRIC, POOLINGS, TASKS
from jepa_core.model_card import update_cards
from jepa_core.stats import PER_SEED, POOLED

LEXICAL_METRIC = "lexical_mfw"  # most-frequent-word probe accuracy (the paper's lexical probe)
BALANCE_METRIC = "balance_diff"  # semantic − lexical (the paper's balance)
SPECTRAL_METRICS = ("effective_rank", "stable_rank", "spectral_entropy")
C5_MARGIN = 0.03  # equivalence margin for "similar accuracy": ±3 points on a 0–1 scale (see C5)
PAPER = {
    "C1": "uniformity ≤ −0.16 hybrid vs ≈ −0.05 MLM (SST-2, mean pooling)",
    "C2": "higher effective/stable rank and spectral entropy under max pooling on 4 of 5 tasks",
    "C3": "lower lexical (most-frequent-word) probe accuracy",
    "C4": "semantic probe ≈ equal while the lexical probe drops",
    "C5": "similar linear-probe accuracy: SST-2 67.6 / 68.7, MNLI-m 50.8 / 51.4, STS-B ρ 0.281 / 0.283 (hybrid / MLM)",
}
CLAIMS = {
    "C1": "hybrid embeddings are more uniform (Wang & Isola, t=2)",
    "C2": "richer spectral geometry under max pooling",
    "C3": "less surface-level lexical information",
    "C4": "better semantic-to-lexical balance",
    "C5": "similar downstream linear-probe accuracy",
}
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
ONE_SEED = "one seed: not seed-level evidence"
# nats: validation MLM loss must lie at least this far below the unigram entropy of the tokens, else
# the model predicts little more than token frequencies (the unigram plateau) and its embeddings
# say nothing about the objectives
LEARNING_GAP_MIN = 0.5
HOLM_ALPHA = 0.05  # family-wise level of the Holm check over the whole grid
LEARNING_COLUMNS = ["model", "validation_mlm_loss", "unigram_entropy", "gap"]


@dataclass
class Verdict:
    claim: str
    verdict: str
    rule: str
    table: pd.DataFrame = field(default_factory=pd.DataFrame)
    notes: list[str] = field(default_factory=list)
    familywise: str | None = None  # the verdict when only Holm-significant differences count (C1–C4)


# ---------------------------------------------------------------- rules

def side(ci_low: float, ci_high: float) -> int:
    """+1 if the CI lies entirely above 0, −1 entirely below, 0 if it covers 0 (or is missing)."""
    if not (np.isfinite(ci_low) and np.isfinite(ci_high)):
        return 0
    return 1 if ci_low > 0 else -1 if ci_high < 0 else 0


def count_rule(sides: Sequence[int], direction: int, need: int) -> str:
    """Claim "the difference has sign `direction` on at least `need` of these tasks".

    reproduced:     at least `need` CIs lie entirely on the claimed side;
    not reproduced: so many CIs lie entirely on the opposite side that fewer than `need`
                    tasks remain that could support the claim;
    inconclusive:   otherwise (also when there are fewer than `need` tasks at all)."""
    sides = list(sides)
    support = sum(s == direction for s in sides)
    oppose = sum(s == -direction for s in sides)
    if len(sides) >= need and support >= need:
        return REPRODUCED
    if len(sides) >= need and len(sides) - oppose < need:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def equivalence_rule(ci_low: float, ci_high: float, margin: float) -> str:
    """reproduced: CI inside [−margin, margin]; not reproduced: CI entirely outside it;
    inconclusive: the CI straddles a margin boundary (too wide to tell)."""
    if not (np.isfinite(ci_low) and np.isfinite(ci_high)):
        return INCONCLUSIVE
    if -margin <= ci_low and ci_high <= margin:
        return REPRODUCED
    if ci_low > margin or ci_high < -margin:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def combine(verdicts: Sequence[str]) -> str:
    """Several seeds or metrics: one shared verdict if all agree, else inconclusive."""
    verdicts = list(verdicts)
    return verdicts[0] if verdicts and all(v == verdicts[0] for v in verdicts) else INCONCLUSIVE


# ---------------------------------------------------------------- tables

def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}"


def _ci(v, lo, hi) -> str:
    return f"{_fmt(v)} [{_fmt(lo)}, {_fmt(hi)}]"


def seed_level_rows(differences: pd.DataFrame) -> pd.DataFrame:
    """The rows a verdict rests on: the seed-level (`level == "pooled"`) rows of differences.csv."""
    if "level" not in differences:
        raise ValueError("differences table without a `level` column: it predates seed-level rows; re-run the "
                         "evaluation (notebook 03_probe) to rebuild results/differences.csv")
    return differences[differences["level"] == POOLED]


def _signed(v: float) -> str:
    return f"{v:+.3f}".replace("-", "−") if np.isfinite(v) else "–"


def _model_cell(m: pd.DataFrame) -> str:
    """One seed: "value [CI]"; several: "mean ± sd (k seeds)" of the per-seed values."""
    if m.empty:
        return "–"
    if len(m) == 1:
        return _ci(*m.iloc[0][["value", "ci_low", "ci_high"]])
    return f"{m['value'].mean():.3f} ± {m['value'].std():.3f} ({len(m)} seeds)"


def _diff_rows(differences: pd.DataFrame, metrics: pd.DataFrame, task_metric: Sequence[tuple[str, str]],
               pooling: str) -> pd.DataFrame:
    """For each (task, metric): hybrid and MLM values, the seed-level difference with its CI, and
    every seed's own difference next to it."""
    pooled = seed_level_rows(differences)
    per_seed = differences[differences["level"] == PER_SEED]
    rows = []
    for task, metric in task_metric:
        def cell(df):
            return df[(df["task"] == task) & (df["metric"] == metric) & (df["pooling"] == pooling)]
        d = cell(pooled)
        if d.empty:
            continue
        d = d.iloc[0]
        seeds = cell(per_seed).sort_values("seed")
        row = {"task": task, "metric": metric, "pooling": pooling, "n_seeds": int(d["n_seeds"]),
               "diff": d["diff"], "ci_low": d["ci_low"], "ci_high": d["ci_high"], "p_holm": d.get("p_holm"),
               "per_seed": ", ".join(f"s{int(s)} {_signed(v)}" for s, v in zip(seeds["seed"], seeds["diff"]))}
        for obj in ("hybrid", "mlm"):
            m = cell(metrics[metrics["objective"] == obj])
            row[obj] = _model_cell(m)
            row[f"{obj}_ci_low"] = m["ci_low"].min() if len(m) else np.nan  # above chance on every seed
            if obj == "hybrid":
                row["chance"] = m["chance"].iloc[0] if len(m) and "chance" in m else np.nan
        row["side"] = side(row["ci_low"], row["ci_high"])
        rows.append(row)
    return pd.DataFrame(rows)


def _markdown(table: pd.DataFrame) -> str:
    if table.empty:
        return "_no rows: the metric was not computed in this run_\n"
    show = table.copy()
    show["hybrid − MLM [95% CI over seeds]"] = [_ci(r["diff"], r["ci_low"], r["ci_high"]) for _, r in show.iterrows()]
    show["per seed"] = show["per_seed"]
    show["p (Holm)"] = [_fmt(p, 3) for p in show["p_holm"]]
    cols = ["task", "pooling", "metric", "hybrid", "mlm", "hybrid − MLM [95% CI over seeds]", "per seed", "p (Holm)"]
    cols += [c for c in ("verdict",) if c in show]
    return markdown_table(show[cols])


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (pandas' to_markdown needs the tabulate package)."""
    cells = [[str(c) for c in df.columns]] + [["–" if v is None else str(v) for v in row]
                                            for row in df.itertuples(index=False)]
    lines = ["| " + " | ".join(r).replace("\n", " ") + " |" for r in cells]
    lines.insert(1, "|" + "---|" * len(df.columns))
    return "\n".join(lines) + "\n"


def probe_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Headline probe metric per task × pooling (rows) and model (columns), "value [CI]"; the
    majority baseline (one value per task) is repeated on every pooling row. Several seeds:
    "mean ± sd (k seeds)" of the values."""
    head = metrics[[HEADLINE_METRIC.get(t) == m for t, m in zip(metrics["task"], metrics["metric"])]]
    if head.empty:
        return pd.DataFrame()

    def cell(g: pd.DataFrame) -> str:
        if len(g) > 1:
            return f"{g['value'].mean():.3f} ± {g['value'].std():.3f} ({len(g)} seeds)"
        r = g.iloc[0]
        return _ci(r["value"], r["ci_low"], r["ci_high"])

    keys = ["task", "metric", "pooling", "model"]
    cells = head.groupby(keys, sort=False).apply(cell, include_groups=False).rename("cell").reset_index()
    trained = cells[cells["model"] != "majority"]
    table = trained.pivot(index=["task", "metric", "pooling"], columns="model", values="cell")
    majority = cells[cells["model"] == "majority"].set_index(["task", "metric"])["cell"]
    table["majority"] = [majority.get((t, m), "–") for t, m, _ in table.index]
    order = {name: i for i, name in enumerate((*TASKS, *POOLINGS))}
    table = table.sort_index(key=lambda idx: idx.map(lambda v: order.get(v, len(order))))
    models = [c for c in ("hybrid", "mlm", "random_init", "majority") if c in table.columns]
    return table[models + [c for c in table.columns if c not in models]]


# ---------------------------------------------------------------- the five claims

def _glue_tasks(differences: pd.DataFrame) -> list[str]:
    present = set(differences["task"])
    return [t for t in TASKS if t in present]


def claim_c1(metrics: pd.DataFrame, differences: pd.DataFrame) -> Verdict:
    task = "sst2" if "sst2" in set(differences["task"]) else "wiki"
    table = _diff_rows(differences, metrics, [(task, "uniformity"), (task, "uniformity_centred")], "mean")
    main = table[table["metric"] == "uniformity"] if len(table) else table
    verdict = combine([count_rule([s], -1, 1) for s in main["side"]]) if len(main) else INCONCLUSIVE
    notes = [] if task == "sst2" else ["SST-2 was not evaluated in this run: measured on held-out Wikipedia sentences."]
    notes.append("The centred uniformity (mean embedding removed first) is shown for context; the verdict uses the "
                 "paper's uncentred definition.")
    rule = (f"hybrid − MLM uniformity ({task}, mean pooling): reproduced if its 95% CI lies entirely below 0 "
            "(hybrid more uniform); not reproduced if entirely above 0; inconclusive if it covers 0.")
    return Verdict("C1", verdict, rule, table, notes)


def claim_c2(metrics: pd.DataFrame, differences: pd.DataFrame) -> Verdict:
    tasks = _glue_tasks(differences) or ["wiki"]
    need = math.ceil(0.8 * len(tasks))  # the paper: 4 of 5 tasks
    table = _diff_rows(differences, metrics, [(t, m) for m in SPECTRAL_METRICS for t in tasks], "max")
    per_metric = {}
    for metric in SPECTRAL_METRICS:
        sub = table[table["metric"] == metric] if len(table) else table
        if len(sub):
            per_metric[metric] = count_rule(sub["side"], +1, need)
    votes = list(per_metric.values())
    best = max(set(votes), key=votes.count) if votes else INCONCLUSIVE
    verdict = best if votes.count(best) >= 2 else INCONCLUSIVE
    rule = (f"for each of effective rank, stable rank and spectral entropy (max pooling, {len(tasks)} task(s)): "
            f"reproduced if hybrid − MLM CIs lie entirely above 0 on ≥ {need} tasks (the paper: 4 of 5); "
            f"not reproduced if so many lie entirely below 0 that fewer than {need} could; else inconclusive. "
            "The claim takes the verdict shared by at least 2 of the 3 metrics, else inconclusive.")
    notes = [f"{m}: {v}" for m, v in per_metric.items()]
    return Verdict("C2", verdict, rule, table, notes)


def _majority_need(n: int) -> int:
    return n // 2 + 1


def claim_c3(metrics: pd.DataFrame, differences: pd.DataFrame) -> Verdict:
    tasks = [t for t in (*TASKS, "wiki") if t in set(differences["task"])]
    table = _diff_rows(differences, metrics, [(t, LEXICAL_METRIC) for t in tasks], "mean")
    need = _majority_need(len(tasks))
    verdict = count_rule(table["side"], -1, need) if len(table) else INCONCLUSIVE
    rule = (f"lexical (most-frequent-word) probe accuracy, mean pooling, {len(tasks)} task(s): reproduced if "
            f"hybrid − MLM CIs lie entirely below 0 on a majority (≥ {need}); not reproduced if so many lie entirely "
            f"above 0 that no majority could; else inconclusive.")
    return Verdict("C3", verdict, rule, table, [])


def claim_c4(metrics: pd.DataFrame, differences: pd.DataFrame) -> Verdict:
    tasks = _glue_tasks(differences)
    table = _diff_rows(differences, metrics, [(t, BALANCE_METRIC) for t in tasks], "mean")
    need = _majority_need(len(tasks))
    verdict = count_rule(table["side"], +1, need) if len(table) else INCONCLUSIVE
    rule = (f"semantic − lexical balance (task metric minus lexical probe accuracy, mean pooling, "
            f"{len(tasks)} task(s)): "
            f"reproduced if hybrid − MLM CIs lie entirely above 0 on a majority (≥ {need}); not reproduced if so many "
            "lie entirely below 0 that no majority could; else inconclusive. C3 and C5 show the two halves "
            "(lexical drop, semantic parity).")
    return Verdict("C4", verdict, rule, table, [])


def claim_c5(metrics: pd.DataFrame, differences: pd.DataFrame, margin: float = C5_MARGIN) -> Verdict:
    tasks = _glue_tasks(differences)
    table = _diff_rows(differences, metrics, [(t, HEADLINE_METRIC[t]) for t in tasks], "mean")
    if len(table):
        # both models at chance: "similar" would be vacuous, so such a task cannot support the claim
        informative = (table["hybrid_ci_low"] > table["chance"]) | (table["mlm_ci_low"] > table["chance"])
        table["verdict"] = [equivalence_rule(lo, hi, margin) if ok else f"{INCONCLUSIVE} (at chance)"
                            for lo, hi, ok in zip(table["ci_low"], table["ci_high"], informative)]
        per = table["verdict"].tolist()
        verdict = NOT_REPRODUCED if NOT_REPRODUCED in per else REPRODUCED if all(v == REPRODUCED for v in per) \
            else INCONCLUSIVE
    else:
        verdict = INCONCLUSIVE
    rule = (f"headline metric per task (mean pooling): equivalent if the CI of hybrid − MLM lies inside ±{margin} "
            f"(±{margin * 100:g} points); reproduced if every task is equivalent; not reproduced if any task's CI lies "
            "entirely outside the margin; else inconclusive (CIs too wide to tell). A task where neither model's CI "
            "lies above the majority baseline (`chance`) on every seed is inconclusive: two encoders at chance are "
            "trivially similar.")
    return Verdict("C5", verdict, rule, table, [])


CLAIM_RULES = (claim_c1, claim_c2, claim_c3, claim_c4, claim_c5)


def n_seeds(differences: pd.DataFrame) -> int:
    """Pre-training seeds behind the seed-level rows (0 when there are none)."""
    pooled = seed_level_rows(differences)
    return int(pooled["n_seeds"].max()) if len(pooled) else 0


def holm_decided(differences: pd.DataFrame, alpha: float = HOLM_ALPHA) -> pd.DataFrame:
    """The seed-level rows with every difference that does not keep p_holm < alpha (or has no p) made
    undecided: its CI widened to cover 0. A claim rule run on this table counts only the differences
    that survive Holm over the whole grid."""
    d = differences.copy()
    weak = (d["level"] == POOLED) & ~(d["p_holm"].astype(float) < alpha)
    d.loc[weak, "ci_low"] = np.fmin(d.loc[weak, "ci_low"].astype(float), 0.0)
    d.loc[weak, "ci_high"] = np.fmax(d.loc[weak, "ci_high"].astype(float), 0.0)
    return d


def _holm_tests(differences: pd.DataFrame) -> int:
    """How many seed-level differences Holm's family holds (the rows with a p-value)."""
    return int(seed_level_rows(differences)["p_holm"].notna().sum())


def _familywise_note(v: Verdict, differences: pd.DataFrame, alpha: float) -> str:
    tested = _holm_tests(differences)
    decisive = v.table[v.table["side"] != 0]
    smallest = _fmt(float(decisive["p_holm"].astype(float).min()), 3) if len(decisive) else "–"
    return (f"Family-wise: after Holm correction over all {tested} tested seed-level differences of the grid, too few "
            f"of the differences that decide this verdict keep p < {alpha:g} (smallest Holm p among them {smallest}), "
            f"so with only Holm-significant differences the rule gives **{v.familywise}**. The verdict above holds "
            "for this claim's own pre-specified comparison at the 95% level, not as a grid-wide finding.")


def _holm_reach(differences: pd.DataFrame, alpha: float = HOLM_ALPHA) -> str:
    """How far from 0 (in standard errors) a seed-level difference must lie to survive Holm over the grid:
    with few seeds the t quantile of the smallest Holm threshold is far beyond the planned test's."""
    from scipy import stats as sp

    tested, seeds = _holm_tests(differences), n_seeds(differences)
    if tested == 0 or seeds < 2:
        return ""
    need = sp.t.isf(alpha / tested / 2, seeds - 1)
    return (f" With {seeds} seeds and {tested} tests, the first difference Holm rejects must lie {need:.0f} standard "
            f"errors from 0 (the planned test: {sp.t.isf(alpha / 2, seeds - 1):.1f}), so at this seed count the "
            "family-wise column can confirm only very large, very consistent differences.")


def verdicts(metrics: pd.DataFrame, differences: pd.DataFrame, alpha: float = HOLM_ALPHA) -> list[Verdict]:
    """C1–C5 on the seed-level rows, and for C1–C4 the family-wise verdict (holm_decided), with a note
    where it differs. One seed: inconclusive (no seed-level interval), with the verdict that seed's
    example-level CIs alone would give as a note."""
    out = [rule(metrics, differences) for rule in CLAIM_RULES]
    strict = holm_decided(differences, alpha)
    for v, rule in zip(out, CLAIM_RULES):
        if rule is claim_c5:
            continue
        v.familywise = rule(metrics, strict).verdict
        if v.familywise != v.verdict:
            v.notes.append(_familywise_note(v, differences, alpha))
    if n_seeds(differences) == 1:
        one_seed = differences[differences["level"] == PER_SEED].assign(level=POOLED)
        for v, rule in zip(out, CLAIM_RULES):
            v.notes.insert(0, f"{ONE_SEED}: the interval over pre-training seeds needs ≥ 2 seeds. On this seed's "
                              f"example-level CIs alone the rule would give: {rule(metrics, one_seed).verdict}.")
    return out


# ---------------------------------------------------------------- context from the run folder

def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _number(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return np.nan


def learning_table(run_dir: str | Path) -> pd.DataFrame:
    """Per pre-trained model (models/<name>/train_summary.json): validation MLM loss, unigram entropy
    of the tokens and gap = entropy − loss in nats (positive: learned beyond token frequencies);
    NaN where the summary has no `learning` section (runs older than the check)."""
    rows = []
    for path in sorted(Path(run_dir).glob("models/*/train_summary.json")):
        learning = _read_json(path).get("learning") or {}
        loss, entropy = _number(learning.get("validation_mlm_loss")), _number(learning.get("unigram_entropy"))
        gap = _number(learning.get("gap", entropy - loss))
        rows.append(dict(model=path.parent.name, validation_mlm_loss=loss, unigram_entropy=entropy, gap=gap))
    return pd.DataFrame(rows, columns=LEARNING_COLUMNS)


def _learning_warning(table: pd.DataFrame) -> str | None:
    if table.empty:
        return "Learning check unavailable: no models/*/train_summary.json in this run."
    gap = table["gap"].astype(float)
    low = table[gap < LEARNING_GAP_MIN]
    missing = table[~np.isfinite(gap)]
    if len(low):
        models = ", ".join(f"`{m}` ({_fmt(g, 2)} nats)" for m, g in zip(low["model"], low["gap"]))
        return (f"**This run is not evidence about the claims.** The validation MLM loss of {models} lies less than "
                f"{LEARNING_GAP_MIN:g} nats below the unigram entropy of the tokens: the model is at the unigram "
                "plateau, it knows little more than token frequencies, so its embeddings say nothing yet about what "
                "the objectives learn. Train longer (train.steps) or check the run before reading the verdicts.")
    if len(missing):
        return (f"Learning check unavailable for {', '.join(f'`{m}`' for m in missing['model'])}: train_summary.json "
                "has no `learning` section (a run older than the check); whether the models learned beyond token "
                "frequencies is unknown.")
    return None


def learning_warning(run_dir: str | Path) -> str | None:
    """A warning for the top of summary.md and the HTML report, or None when every pre-trained model's
    validation MLM loss lies ≥ LEARNING_GAP_MIN nats below the unigram entropy. Runs whose summaries
    lack the `learning` section get "Learning check unavailable: …" instead of an error."""
    return _learning_warning(learning_table(run_dir))


def run_context(run_dir: str | Path) -> dict[str, Any]:
    """Data source, skipped tasks, notes and collapse warnings, read from the run folder's files."""
    run_dir = Path(run_dir)
    corpus = _read_json(run_dir / "data" / "corpus.json")
    evaluation = _read_json(run_dir / "results" / "evaluation.json")
    warnings = []
    for log in sorted((run_dir / "logs").glob("*.jsonl")):
        flagged = [json.loads(line) for line in log.read_text().splitlines() if '"warning"' in line]
        if flagged:
            warnings.append(f"{log.stem}: {len(flagged)} logged step(s) flagged, first at step "
                            f"{flagged[0].get('step')}: {flagged[0]['warning']}")
    training = {}
    for path in sorted((run_dir / "models").glob("*/train_summary.json")):
        t = _read_json(path)
        training[path.parent.name] = {"steps": t.get("steps"), "flops_per_step": t.get("flops_per_step"),
                                      "wall_time_s": t.get("wall_time_s"), **(t.get("final") or {})}
    vs_random = run_dir / "results" / "vs_random_init.csv"
    return {"corpus": corpus, "skipped_tasks": evaluation.get("skipped_tasks", {}),
            "notes": evaluation.get("notes", []), "collapse_warnings": warnings, "training": training,
            "learning": learning_table(run_dir).to_dict("records"),
            "vs_random_init": pd.read_csv(vs_random).to_dict("records") if vs_random.is_file() else []}


def _versus_random_section(rows: list[dict]) -> list[str]:
    """Each pre-trained encoder against the random-init one on SST-2 mean-pooling probe accuracy."""
    if not rows:
        return []
    vs = pd.DataFrame(rows)
    first = vs.iloc[0]
    show = pd.DataFrame({"model": [f"{m}-s{s}" for m, s in zip(vs["model"], vs["seed"])],
                         first["metric"]: [_fmt(v) for v in vs["value"]],
                         "random init": [_fmt(v) for v in vs["random_init"]],
                         "difference [95% CI]": [_ci(d, lo, hi)
                                                 for d, lo, hi in zip(vs["diff"], vs["ci_low"], vs["ci_high"])],
                         "beats random init": ["yes" if b else "**no**" for b in vs["beats_random_init"]]})
    return [f"Each pre-trained encoder against the random-init one ({first['task']}, {first['pooling']} pooling, "
            f"probe {first['metric']}; paired bootstrap over dev examples): it beats it when the CI lies above 0.",
            "", markdown_table(show)]


def _learning_section(table: pd.DataFrame, vs_random: list[dict] = ()) -> list[str]:
    out = ["## Learning check", "",
           f"Validation MLM loss against the unigram entropy of the tokens (nats); gap = entropy − loss must be "
           f"≥ {LEARNING_GAP_MIN:g} for the run to say anything about the objectives.", ""]
    if table.empty:
        return out + ["_no pre-trained models in this run folder_", ""] + _versus_random_section(list(vs_random))
    show = pd.DataFrame({"model": table["model"],
                         "validation MLM loss": [_fmt(v) for v in table["validation_mlm_loss"]],
                         "unigram entropy": [_fmt(v) for v in table["unigram_entropy"]],
                         "gap": [_fmt(v) for v in table["gap"]],
                         "learned beyond frequencies": ["unavailable" if not np.isfinite(g) else
                                                        "yes" if g >= LEARNING_GAP_MIN else "**no**"
                                                        for g in table["gap"].astype(float)]})
    return out + [markdown_table(show)] + _versus_random_section(list(vs_random))


def write_summary(metrics_df: pd.DataFrame, differences_df: pd.DataFrame, run_dir: str | Path,
                  context: dict[str, Any] | None = None) -> str:
    """Write run_dir/summary.md and return its text; update the model cards of run_dir/models/*/ with
    their evaluation. context: see run_context (read from run_dir if None)."""
    run_dir = Path(run_dir)
    ctx = run_context(run_dir) if context is None else context
    learning = pd.DataFrame(ctx.get("learning") or [], columns=LEARNING_COLUMNS)
    warning = _learning_warning(learning)
    out = [f"> {warning}", ""] if warning else []  # first lines: the reader must see it before any verdict
    seeds = n_seeds(differences_df)
    out += [f"# Summary of run `{run_dir.name}`", "",
            "Claims of arXiv 2606.05173 (docs/PROTOCOL.md §2), this run's numbers "
            "(hybrid − MLM over pre-training seeds and dev "
            "examples: 95% intervals from the per-seed paired bootstrap differences, see `jepa_core/stats.py`) and a "
            "verdict decided from the intervals by the rule stated under each claim.", ""]
    if seeds == 1:
        out += [f"> **{ONE_SEED.capitalize()}.** This run pre-trained one seed per objective, so there is no "
                "interval over seeds and no claim can be decided; each claim notes what this seed's example-level CIs "
                "alone would give. Set `seeds: [0, 1, 2]` for seed-level verdicts.", ""]
    vs = verdicts(metrics_df, differences_df)
    shown = f"{INCONCLUSIVE} ({ONE_SEED})" if seeds == 1 else None
    out += [f"| claim | paper | verdict | with Holm over the grid (p < {HOLM_ALPHA:g}) |", "|---|---|---|---|"]
    out += [f"| {v.claim} {CLAIMS[v.claim]} | {PAPER[v.claim]} | **{shown or v.verdict}** | "
            f"{'–' if v.familywise is None or shown else v.familywise} |" for v in vs]
    out += ["", "The verdict is each claim's planned comparison at the 95% level (rule under each claim); the last "
            "column decides C1–C4 again counting only the differences that survive Holm correction over every task × "
            "pooling × metric of the grid (C5, an equivalence claim, has none)." + _holm_reach(differences_df), ""]
    out += _learning_section(learning, ctx.get("vs_random_init") or [])
    for v in vs:
        out += [f"## {v.claim}: {CLAIMS[v.claim]} — **{v.verdict}**", "", f"Paper: {PAPER[v.claim]}.", "",
                f"Rule: {v.rule}", "", _markdown(v.table)]
        out += [f"- {n}" for n in v.notes] + ([""] if v.notes else [])

    out += ["## Data and caveats", ""]
    corpus = ctx.get("corpus") or {}
    if corpus:
        splits = corpus.get("splits", {})
        sizes = ", ".join(f"{k}: {s.get('documents', '?'):,} documents / {s.get('words', 0):,} words"
                          for k, s in splits.items())
        out.append(f"- Pre-training corpus: source `{corpus.get('source')}` ({corpus.get('path') or 'hub'}); "
                   f"{corpus.get('notice', '')}. {sizes}.")
    else:
        out.append("- Pre-training corpus: not recorded (data/corpus.json missing).")
    for name, t in (ctx.get("training") or {}).items():
        lam = f", final λ {_fmt(t.get('lambda'))}" if t.get("lambda") is not None else ""
        out.append(f"- Pre-training `{name}`: {t.get('steps')} steps, {_fmt((t.get('flops_per_step') or 0) / 1e9, 1)} "
                   f"GFLOPs/step, {_fmt((t.get('wall_time_s') or 0) / 60, 1)} min; final MLM loss "
                   f"{_fmt(t.get('mlm_loss'))}{lam}.")
    skipped = ctx.get("skipped_tasks") or {}
    out.append("- Tasks skipped: " + ("; ".join(f"{t} ({why})" for t, why in skipped.items()) if skipped else "none."))
    for note in ctx.get("notes") or []:
        out.append(f"- {note}")
    if "mnli" in set(differences_df["task"]) and not any("mnli" in n.lower() for n in ctx.get("notes") or []):
        out.append("- MNLI: where the train split is unavailable (the offline GLUE copy has only the dev sets) the "
                   "probe trains on dev_mismatched and reports dev_matched.")
    warnings = ctx.get("collapse_warnings") or []
    quiet = "none (target spread and batch effective rank stayed above thresholds)."
    out.append("- Collapse warnings: " + ("; ".join(warnings) if warnings else quiet))
    text = "\n".join(out) + "\n"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.md").write_text(text, encoding="utf-8")
    update_cards(run_dir, metrics_df)  # each encoder's model card gets its evaluation
    return text


def console_verdicts(run_dir: str | Path) -> list[str]:
    """summary.md's verdicts as plain lines for the console: claim, verdict and its first (headline) row's
    hybrid − MLM difference with the seed-level 95% CI, plus how many of the claim's CIs lie above / below 0
    (none with one seed: no seed-level interval).
    The verdicts are `verdicts()`'s, from the run's results/metrics.csv and differences.csv."""
    res = Path(run_dir) / "results"
    metrics_df, differences_df = pd.read_csv(res / "metrics.csv"), pd.read_csv(res / "differences.csv")
    one_seed = n_seeds(differences_df) == 1
    lines = []
    for v in verdicts(metrics_df, differences_df):
        verdict = f"{INCONCLUSIVE} ({ONE_SEED})" if one_seed else v.verdict
        if not one_seed and v.familywise is not None and v.familywise != v.verdict:
            verdict += f" (with Holm over the grid: {v.familywise})"
        head = "no rows"
        if len(v.table):
            r = v.table.iloc[0]
            head = f"{r['task']} {r['metric']} ({r['pooling']}): {_ci(r['diff'], r['ci_low'], r['ci_high'])}"
            if len(v.table) > 1 and np.isfinite(v.table["ci_low"].astype(float)).any():
                sides = v.table["side"].tolist()
                head += f"; {sides.count(1)} of {len(sides)} CIs above 0, {sides.count(-1)} below"
        lines.append(f"{v.claim} {CLAIMS[v.claim]}: {verdict} | hybrid − MLM {head}")
    return lines
