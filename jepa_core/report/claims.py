"""The claims C1–C5 (docs/PROTOCOL.md §2) and the rules that decide each one

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
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sp

from jepa_core.analysis.stats import PER_SEED, POOLED
from jepa_core.config import HEADLINE_METRIC, TASKS

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
HOLM_ALPHA = 0.05  # family-wise level of the Holm check over the whole grid


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

def fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}"


def ci_text(v, lo, hi) -> str:
    return f"{fmt(v)} [{fmt(lo)}, {fmt(hi)}]"


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
        return ci_text(*m.iloc[0][["value", "ci_low", "ci_high"]])
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
    smallest = fmt(float(decisive["p_holm"].astype(float).min()), 3) if len(decisive) else "–"
    return (f"Family-wise: after Holm correction over all {tested} tested seed-level differences of the grid, too few "
            f"of the differences that decide this verdict keep p < {alpha:g} (smallest Holm p among them {smallest}), "
            f"so with only Holm-significant differences the rule gives **{v.familywise}**. The verdict above holds "
            "for this claim's own pre-specified comparison at the 95% level, not as a grid-wide finding.")


def holm_reach(differences: pd.DataFrame, alpha: float = HOLM_ALPHA) -> str:
    """How far from 0 (in standard errors) a seed-level difference must lie to survive Holm over the grid:
    with few seeds the t quantile of the smallest Holm threshold is far beyond the planned test's."""
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
