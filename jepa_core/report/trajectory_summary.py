"""summary.md's exploratory block on the trajectories (analysis/trajectories.py): hybrid − MLM at each
snapshot point of pre-training, with its seed-level interval, and one sentence on the trend of the cells
that carry the claims. Exploratory: no claim of the paper is about trajectories, no verdict rests on them,
and they are not in Holm's family; the trend labels follow trajectories.classify_trend's rule.

    lines = exploratory_trajectory_section(run_dir)   # [] when the run has no trajectories
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

SECTION = "### Trajectories: how the geometry evolves during pre-training"
DIFFERENCES, TRENDS, INFO = (Path("results") / f for f in ("trajectory_differences.csv", "trajectory_trends.csv",
                                                           "trajectories.json"))
# the cells one sentence each: the claims' headline cells, on the held-out Wikipedia sentences (the
# trajectories' sentence set), and the SST-2 probe (C5's headline cell)
HEADLINE = (("wiki", "mean", "uniformity", "C1"), ("wiki", "max", "effective_rank", "C2"),
            ("sst2", "mean", "accuracy", "C5"))
NAMES = {"mlm": "MLM"}  # as the rest of summary.md writes it
LABELS = ("growing", "shrinking", "reversing", "flat", "undetermined")


def _num(v) -> str:
    if v is None or not np.isfinite(v):
        return "–"
    return f"{v:.3f}" if v == 0 or abs(v) >= 0.01 else f"{v:.2e}"


def _ci(v, lo, hi) -> str:
    return f"{_num(v)} [{_num(lo)}, {_num(hi)}]" if np.isfinite(lo) and np.isfinite(hi) else _num(v)


def _tokens(v: float) -> str:
    return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.0f}k" if v >= 1e3 else f"{v:.0f}"


def _sentence(t: pd.Series, claim: str, a: str, b: str) -> str:
    where = f"{t['metric']} ({t['task']}, {t['pooling']} pooling; {claim}'s cell on these sentences)" \
        if t["task"] == "wiki" else f"{t['task']} {t['metric']} ({t['pooling']} pooling; {claim}'s headline cell)"
    text = (f"{where}: {a} − {b} {_ci(t['diff_end'], t['ci_low_end'], t['ci_high_end'])} at the end (step "
            f"{t['step_end']:,.0f}), {_ci(t['diff_middle'], t['ci_low_middle'], t['ci_high_middle'])} at the middle "
            f"(step {t['step_middle']:,.0f})")
    if np.isfinite(t["change"]):
        text += f", change {_ci(t['change'], t['change_ci_low'], t['change_ci_high'])}"
    return f"{text}: **{t['trend']}** ({t['reason']})."


def exploratory_trajectory_section(run_dir: str | Path, model_a: str = "hybrid", model_b: str = "mlm") -> list[str]:
    """The block's markdown lines (`SECTION` first), from the run's results/trajectory_*.csv; [] when the
    run has none, a short note when its models had no snapshots."""
    from jepa_core.report.summary import markdown_table  # here: summary.py calls this function

    run_dir = Path(run_dir)
    if not (run_dir / TRENDS).is_file():
        return []
    diffs, trends = pd.read_csv(run_dir / DIFFERENCES), pd.read_csv(run_dir / TRENDS)
    diffs = diffs[(diffs["model_a"] == model_a) & (diffs["model_b"] == model_b)]
    trends = trends[(trends["model_a"] == model_a) & (trends["model_b"] == model_b)]
    info = json.loads((run_dir / INFO).read_text()) if (run_dir / INFO).is_file() else {}
    intro = (f"Beyond the paper's end points (exploratory): {model_a} − {NAMES.get(model_b, model_b)} on the held-out "
             "Wikipedia sentences (label-free geometry, mean and max pooling) and the SST-2 mean-pooling probe, "
             "measured on the encoder snapshots kept during pre-training (`train.snapshots`; each the weights at "
             "that step), with the seed-level 95% interval of the claims. Step 0 is the shared initial encoder "
             "(difference 0, not shown). Trend rule (`analysis/trajectories.classify_trend`): **reversing** when the "
             "interval excludes 0 on one side at one point and on the other side later; else the change from the "
             "middle point to the end gets its own seed-level interval: **growing** / **shrinking** when it excludes "
             "0 and the end's difference is larger / smaller in size than the middle's, **flat** when it contains 0; "
             "**undetermined** with one seed. No verdict rests on this block. All rows: "
             "`results/trajectory_differences.csv`, `results/trajectory_trends.csv`, `results/trajectories.csv`.")
    out = [SECTION, "", intro, ""]
    if diffs.empty:
        notes = info.get("notes") or ["no pair of pre-trained models with snapshots"]
        return out + [f"_No trajectories: {'; '.join(notes)}._", ""]
    later = diffs[diffs["point"] > 0]
    points = later.drop_duplicates("point").sort_values("point")
    header = {p: f"step {s:,.0f} ({_tokens(t)} tokens)" for p, s, t in zip(points["point"], points["step_a"],
                                                                            points["tokens_a"])}
    rows = []
    for (task, pool, metric), g in later.groupby(["task", "pooling", "metric"], sort=False):
        row = {"task": task, "pooling": pool, "metric": metric}
        row.update({header[p]: "" for p in header})
        row.update({header[r.point]: _ci(r.diff, r.ci_low, r.ci_high) for r in g.itertuples()})
        t = trends[(trends["task"] == task) & (trends["pooling"] == pool) & (trends["metric"] == metric)]
        row["trend"] = t["trend"].iloc[0] if len(t) else "–"
        rows.append(row)
    rank = {"wiki": 0, "mean": 0, "max": 1}  # the geometry first, mean pooling first; metrics as measured
    rows.sort(key=lambda r: (rank.get(r["task"], 1), rank.get(r["pooling"], 2)))
    out += [markdown_table(pd.DataFrame(rows)), ""]
    for task, pool, metric, claim in HEADLINE:
        t = trends[(trends["task"] == task) & (trends["pooling"] == pool) & (trends["metric"] == metric)]
        if len(t):
            out += [f"- {_sentence(t.iloc[0], claim, *(NAMES.get(m, m) for m in (model_a, model_b)))}"]
    label_free = trends[trends["task"] == "wiki"]
    if len(label_free):
        counts = label_free["trend"].value_counts()
        out += [f"- Over all {len(label_free)} label-free cells ({label_free['metric'].nunique()} metrics × "
                f"{label_free['pooling'].nunique()} poolings): "
                + ", ".join(f"{counts[k]} {k}" for k in LABELS if k in counts) + "."]
    return out + [f"- Note: {n}" for n in info.get("notes", [])] + [""]
