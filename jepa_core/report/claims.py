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

The confirmatory verdict (docs/PROTOCOL.md §2a). The confirmatory family is exactly the cells the rules
read (`claim_cells`: 32 with all five GLUE tasks). Each cell enters with one p-value (`family_cells`): the
two-sided seed-level p for C1–C4, for C5 `stats.equivalence_p_value` (TOST inside the margin, twice the
one-sided p outside). Holm runs over the family (`holm_family`); a cell with Holm p < 0.05 is *decided*. The
rules then run on the decided cells (`decided_differences`: a decided cell counts on its estimate's side, an
undecided one as covering 0, or for C5 as inconclusive): that is `Verdict.verdict`. The same rules on the
unadjusted 95% intervals give `Verdict.unadjusted`, an exploratory reading printed beside it. Notebook 05
builds its own family over several comparisons and passes it in (`verdicts(..., family=...)`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sp

from jepa_core.analysis.stats import PER_SEED, POOLED, equivalence_p_value, holm, seed_level_se
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
EXPLORATORY = "exploratory"  # a claim (or row) outside the confirmatory family: read, not decided
HOLM_ALPHA = 0.05  # family-wise level of Holm over the confirmatory family (and of the exploratory grid note)


@dataclass
class Verdict:
    claim: str
    verdict: str
    rule: str
    table: pd.DataFrame = field(default_factory=pd.DataFrame)
    notes: list[str] = field(default_factory=list)
    unadjusted: str | None = None  # exploratory: the same rule on the unadjusted 95% intervals
    family: pd.DataFrame = field(default_factory=pd.DataFrame)  # this claim's confirmatory cells (holm_family)
    confirmatory: bool = True  # False: the claim is outside the family (05's C3/C4): `verdict` is exploratory
    # the claim's planned task was not evaluated (e.g. "SST-2, its planned task, not evaluated: measured on wiki"):
    # shown next to the verdict wherever it is shown, so that a headline never moves to another task silently
    caveat: str | None = None


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
               "diff": d["diff"], "ci_low": d["ci_low"], "ci_high": d["ci_high"], "sd_seeds": d.get("sd_seeds"),
               "p_grid_holm": d.get("p_holm"),
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


def claim_cells(differences: pd.DataFrame | None = None) -> dict[str, list[tuple[str, str, str]]]:
    """The (task, pooling, metric) cells each claim's rule reads, for the tasks of this differences table
    (None: the planned cells, every GLUE task and `wiki`). C1 reads SST-2 (`wiki` when SST-2 was not
    evaluated, said in a note), C2 every GLUE task (`wiki` when none was)."""
    present = set(TASKS) | {"wiki"} if differences is None else set(differences["task"])
    glue = [t for t in TASKS if t in present]
    return {"C1": [("sst2" if "sst2" in present else "wiki", "mean", "uniformity")],
            "C2": [(t, "max", m) for m in SPECTRAL_METRICS for t in (glue or ["wiki"])],
            "C3": [(t, "mean", LEXICAL_METRIC) for t in (*TASKS, "wiki") if t in present],
            "C4": [(t, "mean", BALANCE_METRIC) for t in glue],
            "C5": [(t, "mean", HEADLINE_METRIC[t]) for t in glue]}


C1_CONTEXT = ("uniformity_centred", "mean_direction")  # shown beside C1's uniformity; the rule does not read them


def claim_c1(metrics: pd.DataFrame, differences: pd.DataFrame) -> Verdict:
    task = claim_cells(differences)["C1"][0][0]
    table = _diff_rows(differences, metrics, [(task, m) for m in ("uniformity", *C1_CONTEXT)], "mean")
    main = table[table["metric"] == "uniformity"] if len(table) else table
    verdict = combine([count_rule([s], -1, 1) for s in main["side"]]) if len(main) else INCONCLUSIVE
    notes = [] if task == "sst2" else ["SST-2 was not evaluated in this run: measured on held-out Wikipedia sentences."]
    notes.append("The centred uniformity (mean embedding removed first) and the mean-direction term are shown for "
                 "context (Exploratory: C1 taken apart); the verdict uses the paper's uncentred definition.")
    rule = (f"hybrid − MLM uniformity ({task}, mean pooling): reproduced if its 95% CI lies entirely below 0 "
            "(hybrid more uniform); not reproduced if entirely above 0; inconclusive if it covers 0.")
    caveat = None if task == "sst2" else "SST-2, its planned task, not evaluated: measured on wiki"
    return Verdict("C1", verdict, rule, table, notes, caveat=caveat)


def claim_c2(metrics: pd.DataFrame, differences: pd.DataFrame) -> Verdict:
    tasks = _glue_tasks(differences) or ["wiki"]
    need = math.ceil(0.8 * len(tasks))  # the paper: 4 of 5 tasks
    table = _diff_rows(differences, metrics, [(t, m) for t, _, m in claim_cells(differences)["C2"]], "max")
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
    tasks = [t for t, _, _ in claim_cells(differences)["C3"]]
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
    caveat = None
    if "sst2" not in tasks:  # the paper's first (headline) task: the table's first row would be another one
        caveat = "SST-2, its planned headline task, not evaluated" + (f": headline on {tasks[0]}" if tasks
                                                                       else ": no GLUE task evaluated")
    return Verdict("C5", verdict, rule, table, [caveat + "."] if caveat else [], caveat=caveat)


CLAIM_RULES = (claim_c1, claim_c2, claim_c3, claim_c4, claim_c5)


def n_seeds(differences: pd.DataFrame) -> int:
    """Pre-training seeds behind the seed-level rows (0 when there are none)."""
    pooled = seed_level_rows(differences)
    return int(pooled["n_seeds"].max()) if len(pooled) else 0


def _holm_tests(differences: pd.DataFrame) -> int:
    """How many seed-level differences of the whole grid have a p-value (the exploratory grid note)."""
    return int(seed_level_rows(differences)["p"].notna().sum())


def holm_reach(differences: pd.DataFrame, alpha: float = HOLM_ALPHA) -> str:
    """How far from 0 (in standard errors) a seed-level difference must lie to survive Holm over the grid:
    with few seeds the t quantile of the smallest Holm threshold is far beyond the planned test's."""
    tested, seeds = _holm_tests(differences), n_seeds(differences)
    if tested == 0 or seeds < 2:
        return ""
    need = sp.t.isf(alpha / tested / 2, seeds - 1)
    return (f"With {seeds} seeds, Holm over all {tested} tested differences of the grid would need the first rejected "
            f"difference to lie {need:.0f} standard errors from 0 (one test: {sp.t.isf(alpha / 2, seeds - 1):.1f}); "
            "that is why the confirmatory family is only the cells the claims read, and the grid is read unadjusted, "
            "as exploration.")


# ---------------------------------------------------------------- the confirmatory family (PROTOCOL §2a)

FAMILY_COLUMNS = ["claim", "task", "pooling", "metric", "n_seeds", "diff", "ci_low", "ci_high", "sd_seeds", "se",
                  "p", "row"]


def family_cells(differences: pd.DataFrame, claims: Sequence[str] = tuple(CLAIMS),
                 margin: float = C5_MARGIN) -> pd.DataFrame:
    """One row per cell a rule of `claims` reads that has a seed-level row, with its one p-value: two-sided
    (the table's `p`) for C1–C4; `equivalence_p_value` for C5, from the same seed-level SE (the `se` column, or
    read back from the interval for tables older than it) and S − 1 df. `row`: the index in `differences`."""
    pooled = seed_level_rows(differences)
    index = {key: i for i, key in zip(pooled.index, zip(pooled["task"], pooled["pooling"], pooled["metric"]))}
    rows = []
    for claim, cells in claim_cells(differences).items():
        for cell in cells if claim in claims else ():
            if cell not in index:
                continue
            r = pooled.loc[index[cell]]
            seeds = int(r["n_seeds"])
            se = float(r["se"]) if np.isfinite(float(r.get("se", np.nan))) else \
                seed_level_se(float(r["ci_low"]), float(r["ci_high"]), seeds)
            p = equivalence_p_value(float(r["diff"]), se, seeds - 1, margin) if claim == "C5" else float(r["p"])
            rows.append(dict(claim=claim, task=cell[0], pooling=cell[1], metric=cell[2], n_seeds=seeds,
                             diff=float(r["diff"]), ci_low=float(r["ci_low"]), ci_high=float(r["ci_high"]),
                             sd_seeds=float(r.get("sd_seeds", np.nan)), se=se, p=p, row=index[cell]))
    return pd.DataFrame(rows, columns=FAMILY_COLUMNS)


def holm_family(family: pd.DataFrame, alpha: float = HOLM_ALPHA) -> pd.DataFrame:
    """The family with `p_holm` (Holm over all its p-values; NaN p, e.g. one seed, do not count) and `decided`
    (p_holm < alpha)."""
    family = family.copy()
    family["p_holm"] = holm(family["p"].to_numpy(dtype=float)) if len(family) else []
    family["decided"] = family["p_holm"].astype(float) < alpha
    return family


def confirmatory_family(differences: pd.DataFrame, alpha: float = HOLM_ALPHA, margin: float = C5_MARGIN
                        ) -> pd.DataFrame:
    """The main study's family: every cell C1–C5 read, Holm over all of them (32 with five GLUE tasks)."""
    return holm_family(family_cells(differences, margin=margin), alpha)


def decided_differences(differences: pd.DataFrame, family: pd.DataFrame, margin: float = C5_MARGIN) -> pd.DataFrame:
    """`differences` with each family cell's seed-level interval replaced by its decision: a decided cell by the
    point (estimate, estimate), so it counts on its estimate's side (C5: equivalent inside the margin, not
    equivalent outside); an undecided cell widened to cover 0 (C5: NaN, inconclusive). Cells outside the
    family are made undecided too: the claim rules run on this table count only decided cells."""
    d = differences.copy()
    d["ci_low"], d["ci_high"] = d["ci_low"].astype(float), d["ci_high"].astype(float)
    pooled = d["level"] == POOLED
    d.loc[pooled, "ci_low"] = np.fmin(d.loc[pooled, "ci_low"], 0.0)
    d.loc[pooled, "ci_high"] = np.fmax(d.loc[pooled, "ci_high"], 0.0)
    for r in family.itertuples():
        if r.decided:
            d.loc[r.row, ["ci_low", "ci_high"]] = r.diff, r.diff
            if r.claim == "C5" and abs(r.diff) == margin:  # on the boundary: neither side
                d.loc[r.row, ["ci_low", "ci_high"]] = np.nan
        elif r.claim == "C5":
            d.loc[r.row, ["ci_low", "ci_high"]] = np.nan
    return d


def _attach_family(v: Verdict, family: pd.DataFrame) -> None:
    """The claim's family rows, and their p / Holm p / decided beside the table's cells."""
    v.family = family[family["claim"] == v.claim]
    keys = ["task", "pooling", "metric"]
    cols = v.family[keys + ["p", "p_holm", "decided"]]
    v.table = v.table.merge(cols, on=keys, how="left") if len(v.table) else v.table
    present = set(zip(v.family["task"], v.family["pooling"], v.family["metric"]))
    missing = [c for c in claim_cells()[v.claim] if c not in present]
    if missing and v.confirmatory:
        shown = ", ".join(f"({t}, {p}, {m})" for t, p, m in missing)
        v.notes.append(f"Planned cell(s) without a seed-level row in this run: {shown}; the family is smaller.")


def verdicts(metrics: pd.DataFrame, differences: pd.DataFrame, alpha: float = HOLM_ALPHA,
             family: pd.DataFrame | None = None) -> list[Verdict]:
    """C1–C5: `verdict` is the confirmatory one (the rules on the cells Holm decides over `family`, default
    `confirmatory_family(differences)`), `unadjusted` the same rules on the unadjusted 95% intervals
    (exploratory). A claim without cells in `family` is exploratory (`confirmatory` False, `verdict` =
    `unadjusted`). One seed: inconclusive (no seed-level interval), with the verdict that seed's example-level
    CIs alone would give as a note."""
    family = confirmatory_family(differences, alpha) if family is None else family
    decided = decided_differences(differences, family)
    out = []
    for rule in CLAIM_RULES:
        v, confirmed = rule(metrics, differences), rule(metrics, decided)
        v.unadjusted = v.verdict
        v.confirmatory = bool((family["claim"] == v.claim).any())
        if v.confirmatory:
            v.verdict, v.notes = confirmed.verdict, confirmed.notes
            if "verdict" in confirmed.table:  # C5's per-task verdict, decided like the claim
                v.table["verdict"] = confirmed.table["verdict"].to_numpy()
        _attach_family(v, family)
        out.append(v)
    if n_seeds(differences) == 1:
        one_seed = differences[differences["level"] == PER_SEED].assign(level=POOLED)
        for v, rule in zip(out, CLAIM_RULES):
            v.notes.insert(0, f"{ONE_SEED}: the interval over pre-training seeds needs ≥ 2 seeds. On this seed's "
                              f"example-level CIs alone the rule would give: {rule(metrics, one_seed).verdict}.")
    return out


# ---------------------------------------------------------------- a uniformity difference taken apart

DECOMPOSITION = ("uniformity", "uniformity_centred", "mean_direction")


def uniformity_carrier(sides: dict[str, int]) -> str:
    """Which term carries a uniformity difference, decided from the sides of the three seed-level intervals
    (`side`: +1 above 0, −1 below, 0 covers 0) of hybrid − MLM uniformity, centred uniformity and mean-direction
    term (‖mean of the normalised embeddings‖²). A larger mean-direction term makes the cloud less uniform
    (uniformity rises): a uniformity difference of sign s is *carried by the mean direction* when the
    mean-direction difference has sign s, and *by the spread around the mean* when the centred uniformity's
    has sign s. The rule:

        uniformity side 0                       -> "none": there is no difference to take apart
        both terms on side s                    -> "both"
        only the mean-direction term on side s  -> "mean direction"
        only the centred uniformity on side s   -> "spread"
        neither                                 -> "undetermined": no term's interval excludes 0 on that side
    """
    s = sides.get("uniformity", 0)
    if s == 0:
        return "none"
    by_direction, by_spread = sides.get("mean_direction", 0) == s, sides.get("uniformity_centred", 0) == s
    return "both" if by_direction and by_spread else "mean direction" if by_direction else \
        "spread" if by_spread else "undetermined"


CARRIER_TEXT = {
    "none": "the uniformity difference's interval covers 0: there is no difference to take apart",
    "both": "both the spread around the mean (centred uniformity) and the mean direction carry the difference",
    "mean direction": "the mean direction carries the difference (the embeddings' shared direction changes; the "
                      "centred uniformity shows no difference of that sign)",
    "spread": "the spread around the mean carries the difference (centred uniformity moves the same way; the "
              "mean-direction term does not)",
    "undetermined": "neither the centred uniformity nor the mean-direction term has an interval that excludes 0 on "
                    "the side of the difference: the decomposition cannot say which carries it",
}


def decomposition(differences: pd.DataFrame, task: str, pooling: str) -> tuple[pd.DataFrame, str]:
    """The seed-level hybrid − MLM rows of uniformity, centred uniformity and mean-direction term of one
    (task, pooling), and the one sentence `uniformity_carrier` gives (empty table and "" without uniformity)."""
    pooled = seed_level_rows(differences)
    rows = pooled[(pooled["task"] == task) & (pooled["pooling"] == pooling) & pooled["metric"].isin(DECOMPOSITION)]
    rows = rows.set_index("metric").reindex([m for m in DECOMPOSITION if m in set(rows["metric"])])
    if "uniformity" not in rows.index:
        return rows, ""
    sides = {m: side(float(r["ci_low"]), float(r["ci_high"])) for m, r in rows.iterrows()}
    u = rows.loc["uniformity"]
    return rows, (f"{task}, {pooling} pooling: uniformity {ci_text(u['diff'], u['ci_low'], u['ci_high'])}: "
                  f"{CARRIER_TEXT[uniformity_carrier(sides)]}.")
