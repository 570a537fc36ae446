"""Predict & Reconstruct: hybrid JEPA + MLM text-encoder pre-training and representation analysis.

The study and its rules are in docs/PROTOCOL.md, the contracts between modules in docs/DESIGN.md.
Reading order, following the data (each module's docstring says the rest):

parameters
    config      `Params`: the dataclasses behind parameters/*.yaml, loaded and validated once
data (notebook 01)
    corpus      Wikipedia sources → documents, `auto` resolution, hash train/validation split
    tokenizer   WordPiece trained on the train split (canonical ids), or a pretrained tokenizer
    blocks      documents tokenised once and packed into fixed-length blocks
pre-training (notebook 02)
    masking     MLM 80/10/10 masks and JEPA context/target blocks, the collator
    model       encoder, tied sparse MLM head, predictor, EMA target encoder
    kernels     CPU-fast dropout, the attention that uses it, fused decoder + cross-entropy
    losses      JEPA and MLM losses, the λ balancer
    flops       FLOPs per step of each objective, for budget parity
    checkpoint  atomic save/load of the encoder and the full training state
    run_state   a run's progress (saved as one unit), step plan and time budget, log record
    resume      which checkpoint a run continues (run identity), stale ones moved aside
    train       optimizer, schedule, step functions and the loop; `python -m jepa_core.train`
analysis (notebooks 03 and 04)
    glue        GLUE tasks from a local folder or the hub, in one schema
    encode      frozen encoder → token states, length-bucketed and cached
    pooling     mean / max / cls, and the trained weighted / attention poolings
    probes      linear probes (CV on train only), task metrics, majority baseline
    geometry    uniformity, alignment, anisotropy, covariance spectrum, class-distance ratio
    lexical     lexical probe targets and the semantic-to-lexical balance
    stats       bootstrap CIs, paired differences, Holm, seed aggregation
    evaluate    encode → pool → probes + geometry → tidy tables; `python -m jepa_core.evaluate`
report
    figures     the plots of the notebooks
    summary     summary.md: claims C1–C5 with this run's numbers and verdicts
    explorer    the ipywidgets explorer of notebook 04
    workbook    the papermill runner behind `make run`
bench           side-by-side speed benchmark (`make bench`), a package: config, data, workloads, timing,
                encoding, report
"""
