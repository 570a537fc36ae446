"""Write the workbook notebooks (01–05) from the cell sources below, without outputs.

    .venv/bin/python notebooks/_build.py          # rewrite the .ipynb files
    .venv/bin/python notebooks/_build.py --check  # exit 1 if a committed .ipynb is out of sync

The .ipynb files are what is committed and executed; this script keeps them reviewable as plain
Python and free of outputs. tests/test_workbook.py fails when they drift apart.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

PARAMETERS = '''\
# Parameters (papermill injects the run's values below this cell)
params_file = "parameters/cpu.yaml"  # profile, relative to the project root
run_dir = None  # None: outputs/<run_name>/ under the project root
overrides = {}  # e.g. {"train.steps": 50}; validated like the profile'''

OPEN_RUN = '''\
%matplotlib inline
from IPython.display import Markdown, display

from jepa_core.report import figures
from jepa_core.study.workbook import open_run, require

params, run_dir = open_run(params_file, run_dir, overrides)  # validates every parameter first
print(f"run folder: {run_dir}")'''


def md(text: str):
    return new_markdown_cell(text.strip())


def code(text: str, tags: list[str] | None = None):
    cell = new_code_cell(text.strip())
    if tags:
        cell.metadata["tags"] = tags
    return cell


def header(title: str, intro: str, extra_parameters: str = "") -> list:
    parameters = PARAMETERS + ("\n" + extra_parameters.strip() if extra_parameters else "")
    return [md(f"# {title}\n\n{intro}"), code(parameters, ["parameters"]), code(OPEN_RUN)]


NOTEBOOKS = {
    "01_data_prep": header("01 · Data: corpus, tokenizer, packed blocks", """
Reads English Wikipedia from the source the profile names (`data.source`; `auto` = the hub when
reachable, else `$WIKI_DIR`, else the Wikipedia excerpt shipped with gensim), splits documents
train/validation by a hash of their id, trains (or loads) the WordPiece tokenizer on the TRAIN
split only, and packs each split into full-length blocks `[CLS] + L−1` tokens of the document
stream (documents joined with `[SEP]`, never truncated). Writes `data/` in the run folder.""") + [
        code('''
from jepa_core.data.blocks import prepare_data
from jepa_core.data.corpus import validation_sentences

data_dir = run_dir / "data"
tokenizer, blocks, _source, corpus = prepare_data(params.data, data_dir, params.seed)
print(corpus.describe())'''),
        md("The line above names the **source actually used** and why; it is recorded in `data/corpus.json` "
           "and repeated in `summary.md`."),
        code('''
from jepa_core.data.blocks import corpus_statistics

stats = corpus_statistics(corpus, tokenizer, blocks)
stats.to_csv(data_dir / "corpus_statistics.csv")
stats.style.format({"tokens_per_word": "{:.2f}", "unk_rate": "{:.2%}", "mlm_unigram_entropy": "{:.3f}"},
                   thousands=",")'''),
        md("**Corpus statistics.** `tokens_per_word` shows how finely the tokenizer splits words (≈1.2–1.5 is "
           "typical for a WordPiece vocabulary trained on the same text); `unk_rate` should be near 0. Every block "
           "is exactly `data.seq_len` tokens, so pre-training spends no compute on padding. `mlm_unigram_entropy` "
           "(nats) is the entropy of the token frequencies MLM can mask: the MLM loss of a model that ignores "
           "context, the reference line of the training curves in notebook 02."),
        code('''
import pandas as pd

docs = pd.DataFrame([{"split": split, "words": len(d.text.split())}
                     for split, ds in corpus.splits().items() for d in ds])
fig = figures.document_lengths(docs)
figures.save(fig, run_dir, "document_lengths")
display(fig)'''),
        md("**Document lengths.** Wikipedia articles span orders of magnitude in length; long articles are packed "
           "over several blocks instead of being cut at the first 512 characters (defect 3 of the public code)."),
        code('''
import json

wiki = validation_sentences(corpus, params.eval.wiki_sentences, params.seed)
(data_dir / "wiki_sentences.json").write_text(json.dumps(wiki, indent=0))
print(f"{len(wiki)} held-out Wikipedia sentences for label-free geometry, e.g.:")
for s in wiki[:3]:
    print("  ·", s[:120])'''),
    ],

    "02_pretrain": header("02 · Pre-training: hybrid JEPA + MLM and the MLM baseline", """
Trains one encoder per objective (and seed) on the packed blocks of notebook 01: the **hybrid**
(L = λ·L_JEPA + (1−λ)·L_MLM on one shared encoder, targets from an EMA copy, λ = sigmoid(w)
learned) and the **MLM-only baseline** with the same data order, MLM masks and optimizer.
An interrupted run resumes from its last checkpoint when no weight-changing parameter changed
(log, validation and checkpoint intervals, workers and `compile` do not count); a checkpoint of
other parameters is moved aside to `checkpoints/<name>.stale-<time>/`, never deleted.""",
        "resume = True  # continue an interrupted pre-training of the same parameters (workbook --force: False)") + [
        code('''
require(run_dir, "data/blocks_train.npy", "data/tokenizer", step="01_data_prep")
from jepa_core.pretrain.jobs import pretrain_all

summaries = pretrain_all(params, run_dir, resume)  # every seed x objective (train.parallel_runs at a time)'''),
        code('''
import pandas as pd

rows = {name: {"objective": s["objective"], "seed": s["seed"], "steps": s["steps"],
               "wall time (s)": s["wall_time_s"], "GFLOPs/step": s["flops_per_step"] / 1e9,
               "final loss": s["final"]["loss"], "final MLM loss": s["final"]["mlm_loss"],
               "final JEPA loss": s["final"]["jepa_loss"], "final λ": s["final"]["lambda"],
               "val MLM loss": s["learning"]["validation_mlm_loss"],
               "unigram entropy": s["learning"]["unigram_entropy"],
               "below unigram": s["learning"]["gap"], "budget": s["budget"]["note"]}
        for name, s in summaries.items()}
pd.DataFrame.from_dict(rows, orient="index").round(3)'''),
        md("**Budget.** `GFLOPs/step` counts each objective's real work: a hybrid step also runs the EMA target "
           "encoder and the predictor, so equal steps (the paper's parity, `train.budget: steps`) is NOT equal "
           "compute; `train.budget: flops` gives the MLM baseline the hybrid's FLOPs instead. `below unigram` = "
           "unigram entropy − validation MLM loss: how far the encoder got below the loss of a model that knows "
           "only token frequencies (≤ 0: it learned nothing more than those)."),
        code('''
logs = figures.read_logs({name: run_dir / "logs" / f"{name}.jsonl" for name in summaries})
unigram = next(iter(summaries.values()))["learning"]["unigram_entropy"]  # same validation data for every run
fig = figures.training_curves(logs, unigram_entropy=unigram)
figures.save(fig, run_dir, "training_curves")
display(fig)'''),
        md("""**Training curves.** Lines: training values per logged step; dots: validation (held-out documents).
- *MLM loss* (nats per masked token) should fall for both models; the gap between them at equal steps is what the
  JEPA term costs (or gives) the MLM objective. The dashed line is the unigram entropy of the validation tokens:
  the loss of a model that knows only token frequencies. A long flat stretch at that line is the unigram plateau:
  the encoder has not yet learned to use context.
- *JEPA loss* (1 − cosine between predicted and EMA-target token latents) falls as the predictor learns.
- *λ* is the learned weight of the JEPA loss. With the paper's rule it drifts toward whichever loss is numerically
  smaller, not toward usefulness (docs/PROTOCOL.md, defect 4) — watch its trajectory here.
- *EMA momentum* rises linearly 0.996 → 1.0: the target encoder freezes progressively.
- *Collapse signals*: a target spread near 0 or a batch effective rank near 1 means the latents collapsed to a
  point or a line; the summary repeats any warning."""),
    ],

    "03_probe": header("03 · Linear probes on GLUE", """
Evaluates the frozen encoders (hybrid, MLM, and a random-init encoder of the same architecture)
on SST-2, MRPC, MNLI, CoLA and STS-B with five poolings. Probes are logistic (ridge for STS-B)
regressions on standardised features, regularisation chosen by cross-validation on the TRAIN
split, reported on the DEV split with 95% bootstrap CIs next to the majority-class baseline.
Also computes every geometry metric (shown in notebook 04). Writes `results/`.""") + [
        code('''
import json

from jepa_core.analysis.evaluate import evaluate
from jepa_core.runs import model_name

models = {objective: [run_dir / "models" / model_name(params, objective, seed) for seed in params.seeds]
          for objective in params.objectives}
require(run_dir, *[str(p.relative_to(run_dir)) for ps in models.values() for p in ps], step="02_pretrain")
wiki = json.loads((run_dir / "data" / "wiki_sentences.json").read_text())
metrics, differences = evaluate(models, params, run_dir, wiki)  # writes results/'''),
        code('''
from jepa_core.report.summary import probe_table

probe_table(metrics)'''),
        md("""**Probe scores** (value [95% bootstrap CI over dev examples]). Compare each encoder with the
`majority` row (always predicting the train split's majority class; for MRPC this is the all-positive F1 that the
paper's public numbers equalled) and with `random_init` (an untrained encoder: what pooling + a linear probe get from
token identity alone). Pretraining is only doing something where it beats both."""),
        code('''
from jepa_core.config import HEADLINE_METRIC
from jepa_core.report.claims import LEXICAL_METRIC

tasks = [t for t in HEADLINE_METRIC if t in set(metrics["task"])]
fig = figures.probe_bars(metrics, {t: HEADLINE_METRIC[t] for t in tasks}, LEXICAL_METRIC, pooling="mean")
figures.save(fig, run_dir, "probes_semantic_lexical")
display(fig)'''),
        md("**Semantic vs lexical probes.** Left: each task's headline metric (semantic content). Right: accuracy of "
           "predicting the sentence's most frequent word from its embedding (surface lexical content, the paper's "
           "lexical probe); the dashed line is its chance level. Claim C3 expects the hybrid's lexical bar lower, "
           "C4/C5 its semantic bars about equal."),
        code('''
evaluation = json.loads((run_dir / "results" / "evaluation.json").read_text())
lines = [f"- skipped **{t}**: {why}" for t, why in evaluation["skipped_tasks"].items()]
lines += [f"- {note}" for note in evaluation["notes"]]
display(Markdown("\\n".join(lines) or "All configured tasks were evaluated."))
print(f"evaluation took {evaluation['seconds']:.0f} s")'''),
        code('''
from jepa_core.analysis.trajectories import trajectory_study

trajectories, _, _ = trajectory_study(params, run_dir, wiki_sentences=wiki)  # results/trajectories*.csv
info = json.loads((run_dir / "results" / "trajectories.json").read_text())
print(f"trajectories: {len(info['points'])} run(s), {trajectories['step'].nunique()} snapshot steps, "
      f"{info['seconds']:.0f} s")
for note in info["notes"]:
    print("note:", note)'''),
        md("**Trajectories** (beyond the paper; shown in notebook 04): the encoder snapshots each pre-training run "
           "kept (`train.snapshots`: step 0, the last step and points between, each the weights at that step) are "
           "measured like the finished encoders above: the label-free geometry of the held-out Wikipedia sentences "
           "(mean and max pooling) and, at the start, middle and end, the SST-2 mean-pooling probe."),
    ],

    "04_geometry": header("04 · Representation geometry, significance and summary", """
Uniformity and alignment (Wang & Isola, t = 2), anisotropy, covariance spectra (effective
rank, stable rank, spectral entropy), per pooling, for the hybrid and the MLM encoder; hybrid −
MLM differences with paired-bootstrap CIs; the confirmatory verdict on each of the paper's claims
C1–C5 (`summary.md`: Holm over the cells the claims read, docs/PROTOCOL.md §2a; everything else
exploratory); an interactive explorer.""") + [
        code('''
import pandas as pd

require(run_dir, "results/metrics.csv", "results/differences.csv", step="03_probe")
metrics = pd.read_csv(run_dir / "results" / "metrics.csv")
differences = pd.read_csv(run_dir / "results" / "differences.csv")
geometry = ["uniformity", "uniformity_centred", "alignment", "anisotropy", "effective_rank", "stable_rank",
            "spectral_entropy"]
(metrics[metrics["metric"].isin(geometry) & metrics["objective"].isin(["hybrid", "mlm"])]
 .pivot_table(index=["task", "pooling"], columns=["metric", "objective"], values="value").round(3))'''),
        code('''
fig = figures.uniformity_alignment(metrics)
figures.save(fig, run_dir, "uniformity_alignment")
display(fig)'''),
        md("**Uniformity vs alignment.** Uniformity (log of the mean Gaussian potential between L2-normalised "
           "embeddings; lower = spread more evenly over the sphere) against alignment (mean squared distance between "
           "positive pairs: same label, or STS-B pairs scoring ≥ 4; lower = closer). Claim C1: the hybrid sits lower "
           "(more uniform) on SST-2 with mean pooling."),
        code('''
from jepa_core.analysis.evaluate import load_spectra

spectra = load_spectra(run_dir)
task = "sst2" if "sst2" in set(spectra["task"]) else spectra["task"].iloc[0]
fig = figures.eigen_spectra(spectra, task)
figures.save(fig, run_dir, "eigen_spectra")
display(fig)'''),
        md("**Eigen-spectra.** Eigenvalues of the covariance of the dev embeddings, each divided by their sum, on a "
           "log scale. A curve that falls slowly spreads variance over many directions (a richer geometry); a steep "
           "drop means a few directions dominate (anisotropy)."),
        code('''
fig = figures.effective_rank_bars(metrics)
figures.save(fig, run_dir, "effective_rank")
display(fig)'''),
        md("**Effective rank** (RankMe: exp of the entropy of the normalised singular values) per pooling, with 95% "
           "bootstrap CIs. Claim C2: higher for the hybrid under **max** pooling on 4 of 5 tasks."),
        code('''
shown = [m for m in ["uniformity", "alignment", "effective_rank", "spectral_entropy", "lexical_mfw",
                     "balance_diff"] if m in set(differences["metric"])]
fig = figures.difference_heatmaps(differences, shown)
figures.save(fig, run_dir, "differences_heatmap")
display(fig)'''),
        md("**Significance map.** Each cell is hybrid − MLM for one task × pooling; red: the hybrid's value is higher. "
           "`*` marks differences whose p-value stays below 0.05 after Holm correction across the whole grid (all "
           "tasks, poolings and metrics): an exploratory map; the verdicts use the confirmatory family. With "
           "several pre-training seeds the cells are the seed-level differences "
           "(mean over seeds; p over seeds and dev examples, the rows the verdicts use); with one seed, that seed's "
           "paired-bootstrap differences (example-level only). `results/differences.csv` has both (`level`)."),
        code('''
from jepa_core.report.summary import write_summary

display(Markdown(write_summary(metrics, differences, run_dir)))'''),
        md("## Explorer\n\nPick a run, task, pooling, metric and seed (one, or all to see the spread between "
           "pre-training seeds): the dev embeddings of the encoders projected to 2-D (PCA), coloured by label, and "
           "the metric table for the selection; `compare` puts a second run's table beside it. Once notebook 05 "
           "has run (re-run this cell), `models` shows its ablation variants and `layer` a metric across layers. "
           "Needs a live kernel with widgets (JupyterLab); in a headless run it renders the default selection once."),
        code('''
from jepa_core.report.explorer import Explorer

Explorer(run_dir.parent, run=run_dir.name).show()'''),
        md("## Beyond the paper: the geometry during pre-training\n\nThe paper reports one end point per model. "
           "Here the metrics of the held-out Wikipedia sentences (and the SST-2 probe at the start, middle and end) "
           "on the encoder snapshots kept during pre-training, against the tokens seen and against the training "
           "FLOPs (a hybrid step costs more than an MLM step): would the difference grow, vanish or reverse with "
           "more training? Exploratory: no verdict rests on it. The explorer's `view` → `training` shows each "
           "model and seed against optimizer steps."),
        code('''
from jepa_core.report import trajectory_figures
from jepa_core.report.trajectory_summary import exploratory_trajectory_section

require(run_dir, "results/trajectories.csv", step="03_probe")
trajectories = pd.read_csv(run_dir / "results" / "trajectories.csv")
for x, name in (("tokens", "trajectories"), ("flops", "trajectories_flops")):
    fig = trajectory_figures.trajectories(trajectories, x=x)
    figures.save(fig, run_dir, name)
    display(fig)'''),
        md("**Trajectories.** One panel per metric and pooling; a line per objective (mean over pre-training seeds, "
           "markers at the snapshots), its band min–max over seeds. Step 0 is the same random encoder for both "
           "objectives. First against the tokens seen (equal for both objectives at equal steps), then against "
           "the training FLOPs."),
        code('''
trajectory_differences = pd.read_csv(run_dir / "results" / "trajectory_differences.csv")
trends = pd.read_csv(run_dir / "results" / "trajectory_trends.csv")
fig = trajectory_figures.difference_trajectories(trajectory_differences, trends)
figures.save(fig, run_dir, "trajectory_differences")
display(fig)
display(Markdown("\\n".join(exploratory_trajectory_section(run_dir)[2:])))  # summary.md's block, less its heading'''),
    ],
    "05_ablations": header("05 · What drives the effect: ablations, layer-wise geometry, reference encoders", """
Off unless the profile lists ablation variants (`ablations.variants`) or reference encoders
(`eval.reference_models`); then it pre-trains the variants that are not main runs (each changes one
knob: λ fixed or uncertainty-weighted, one shared student pass, MLM at the hybrid's FLOPs;
`jepa_core/study/variants.py`), evaluates them, the MLM baseline and the reference encoders with notebook
03's protocol (the poolings the claims read: mean, max), pairs each variant with the MLM baseline by
pre-training seed, and measures the geometry of every layer. Writes `ablations/results/`,
`results/layerwise.csv`, `figures/ablation_*.png`, `figures/layerwise_*.png` and a section of `summary.md`.""",
        "resume = True  # continue an interrupted pre-training of the same parameters (workbook --force: False)") + [
        code('''
from jepa_core.report import ablation_figures
from jepa_core.study import ablations as study

on = study.enabled(params)
if not on:
    print("05_ablations is off: ablations.variants and eval.reference_models are empty "
          "(docs/WORKBOOK.md: how to turn it on and what it costs)")
else:
    require(run_dir, "results/metrics.csv", "results/embeddings/wiki/examples.parquet", step="03_probe")
    print("reference encoders:", study.reference_models(params) or "none")  # a bad one fails here, before training
    summaries = study.pretrain_variants(params, run_dir, resume)  # variants that are not main runs
    print(f"pre-trained: {', '.join(summaries) or 'nothing (every run is a main run)'}")'''),
        code('''
if on:
    metrics, differences = study.evaluate_study(params, run_dir)  # writes ablations/results/
    effects = study.write_effects(run_dir, metrics, differences)
    display(effects.round(3))'''),
        md("**Effects.** One row per claim (C1–C4), variant and claim row: variant − MLM (paired by pre-training "
           "seed), its 95% interval over seeds and dev examples, its p and Holm p over 05's family (C1 and C2 cells of "
           "the declared comparisons, docs/PROTOCOL.md §2a), and `verdict`: the claim's confirmatory verdict on the "
           "rows that decide it, `exploratory` on every other row (C3, C4, C1's context rows, undeclared "
           "comparisons). With one seed there is no seed-level interval (verdicts inconclusive)."),
        code('''
if on and len(effects):
    for claim in study.CLAIMS:
        fig = ablation_figures.forest(effects, claim)
        figures.save(fig, run_dir, f"ablation_forest_{claim}")
        display(fig)'''),
        md("**Forest plots**, one per claim: each variant's effect against the MLM baseline. hybrid-learned (the "
           "main hybrid) is on top: a variant whose interval sits where hybrid-learned's does keeps the effect "
           "without the knob it changes; mlm-flops shows what extra compute alone does."),
        code('''
from jepa_core.config import HEADLINE_METRIC

tasks = [t for t in HEADLINE_METRIC if t in set(metrics["task"])] if on else []
if on:
    fig = ablation_figures.model_points(metrics, [(t, HEADLINE_METRIC[t], "mean") for t in tasks],
                                        "Probe scores (mean pooling): our models; reference encoders dashed")
    figures.save(fig, run_dir, "ablation_probes")
    display(fig)
    task = "sst2" if "sst2" in tasks else "wiki"
    fig = ablation_figures.model_points(
        metrics, [(task, "uniformity", "mean"), (task, "lexical_mfw", "mean"), (task, "effective_rank", "max")],
        "Geometry: our models; reference encoders dashed")
    figures.save(fig, run_dir, "ablation_geometry")
    display(fig)'''),
        md("**Where the reference encoders sit.** Points: our models (mean over seeds, whiskers: bootstrap CI); "
           "dashed lines: reference encoders (e.g. all-MiniLM-L6-v2, trained far longer on far more data), "
           "evaluated with the same protocol; dotted: the majority baseline."),
        code('''
from jepa_core.analysis.layerwise import METRICS

if on:
    layers = study.layerwise_study(params, run_dir)  # results/layerwise.csv
    for metric in METRICS:
        fig = ablation_figures.layerwise(layers, metric)
        figures.save(fig, run_dir, f"layerwise_{metric}")
        display(fig)'''),
        md("**Layer-wise geometry** of the mean-pooled states of every layer (0 = embeddings) on SST-2 dev and "
           "held-out Wikipedia sentences (notebook 03's geometry subsamples): where in depth the objectives' "
           "geometries part. Bands: min–max over pre-training seeds; dashed: reference encoders (their own depth)."),
        code('''
from jepa_core.analysis.trajectories import trajectory_study
from jepa_core.report import trajectory_figures

if on and params.ablations.variants:
    trajectories, _, _ = trajectory_study(params, run_dir, study.trajectory_runs(params, run_dir),
                                          study.study_pairs(study.variant_names(params)),
                                          out_dir=run_dir / study.STUDY_DIR)  # ablations/results/trajectories*.csv
    fig = trajectory_figures.trajectories(trajectories, x="flops")
    figures.save(fig, run_dir, "ablation_trajectories")
    display(fig)'''),
        md("**Trajectories of the variants** against training FLOPs, so that MLM given the hybrid's FLOPs "
           "(mlm-flops) lines up with the hybrid: the same snapshot measurements as notebook 04's, every variant − "
           "MLM per point in `ablations/results/trajectory_differences.csv`, trends in `trajectory_trends.csv`."),
        code('''
if on:
    display(Markdown(study.write_summary_section(run_dir, effects)))'''),
    ],
}


def build(name: str, cells: list) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):  # stable ids: rebuilding an unchanged notebook changes nothing
        cell["id"] = f"{name[:2]}-{i:02d}"
    return nb


def main(check: bool = False) -> int:
    stale = []
    for name, cells in NOTEBOOKS.items():
        path = HERE / f"{name}.ipynb"
        text = nbformat.writes(build(name, cells)) + "\n"
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of sync with notebooks/_build.py: {', '.join(stale)} (run python notebooks/_build.py)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(check="--check" in sys.argv))
