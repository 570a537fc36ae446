"""Predict & Reconstruct: hybrid JEPA + MLM text-encoder pre-training and representation analysis.

The study and its rules are in docs/PROTOCOL.md, the layers and contracts in docs/DESIGN.md. The
package is layered; a module imports only from the layers below its own (checked by import-linter,
`make lint`), and the packages on one line never import each other:

    bench                     side-by-side speed benchmark (`make bench`)
    study                     workbook (the papermill runner, `make run`), variants, ablations (notebook 05)
    report                    summary.md and its claim rules, figures, the ipywidgets explorer
    pretrain | analysis       pre-training runs (notebook 02) | evaluation of encoders (notebooks 03, 04)
    data | model              corpus → tokenizer → blocks (notebook 01) | the model core: encoder, heads,
                              hybrid objective, losses, kernels, masking
    runs | cpu | progress | signals   run-folder names and paths | cores and workers | progress lines |
                              SIGINT/SIGTERM handlers for a block
    config                    `Params`: the dataclasses behind parameters/*.yaml, validated once

Reading order, following the data (each module's docstring says the rest):

    data.corpus, data.tokenizer, data.blocks, data.glue
    model.encoder, model.heads, model.hybrid, model.losses, model.kernels, model.masking
    pretrain.batches, pretrain.engine, pretrain.train (`python -m jepa_core.pretrain.train`), pretrain.run_state,
    pretrain.resume, pretrain.checkpoint, pretrain.flops, pretrain.model_card, pretrain.jobs
    analysis.encode, analysis.pooling, analysis.probes, analysis.geometry, analysis.lexical, analysis.stats,
    analysis.tables, analysis.evaluate (`python -m jepa_core.analysis.evaluate`), analysis.layerwise
    report.claims, report.summary, report.figures, report.ablation_figures, report.explorer
    study.workbook (`python -m jepa_core.study.workbook`), study.variants, study.ablations
"""
