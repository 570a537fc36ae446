"""Ablation variants (issue 13): which knob, not JEPA itself, explains a hybrid-vs-MLM difference.

The main comparison confounds the JEPA loss with three other changes: the learned λ drifts during the
run, a hybrid step costs ~1.8x the FLOPs of an MLM step, and it runs two student passes. Each variant
below changes exactly one of these, and nothing else, relative to the profile (`expand` is tested to
differ from the base `Params` only at the variant's own keys):

    hybrid-learned      the main hybrid (λ = sigmoid(w), learned): reused, not retrained
    hybrid-fixed<λ>     λ held fixed (e.g. hybrid-fixed0.5): L = λ·L_jepa + (1-λ)·L_mlm
    hybrid-uncertainty  λ from Kendall et al.'s uncertainty weighting
    hybrid-shared       one student pass over the MLM-corrupted context feeds both losses
    mlm-steps           the main MLM baseline (equal steps): reused, not retrained
    mlm-flops           MLM trained to the hybrid's FLOPs: train.budget=flops, i.e. the MLM run takes
                        round(train.steps x FLOPs_hybrid / FLOPs_mlm) steps (run_state.plan_steps),
                        FLOPs per step from flops.py with token counts measured on the run's first batches

A variant's overrides are applied to the profile through `config.params_from_dict`, so they are
validated like any other value. Custom variants are `Variant(name, objective, overrides)`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from jepa_core.config import (
    OBJECTIVES,
    Params,
    ParamsError,
    Variant,
    params_from_dict,
    variant,
)
from jepa_core.pretrain.flops import TokenCounts, training_flops_per_step
from jepa_core.pretrain.run_state import plan_steps
from jepa_core.runs import folder_name


@dataclass(frozen=True)
class AblationRun:
    """One concrete pre-training run of a variant."""
    name: str  # the variant's name
    objective: str
    seed: int
    params: Params  # the base profile with the variant's overrides (seeds / objectives left as in the base)
    reuses: str | None  # "hybrid" / "mlm" when the run IS the main run of that objective (no training)

    @property
    def key(self) -> str:
        """Folder and table name, as analysis.tables.ModelFolder.key names the main runs."""
        return folder_name(self.name, self.seed)


def expand(base: Params, variants: Sequence[str | Variant], seeds: Sequence[int] | None = None) -> list[AblationRun]:
    """Every (variant, seed) as a concrete run; seeds default to the base's."""
    seeds = list(base.seeds if not seeds else seeds)
    specs = [v if isinstance(v, Variant) else variant(v) for v in variants]
    names = [v.name for v in specs]
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        raise ParamsError(f"ablation variants listed twice: {', '.join(dupes)}")
    runs = []
    for spec in specs:
        if spec.objective not in OBJECTIVES:
            raise ParamsError(f"ablation variant {spec.name!r}: objective={spec.objective!r} is not one of "
                              f"{', '.join(OBJECTIVES)}")
        params = params_from_dict(base.to_dict(), dict(spec.overrides))
        for seed in seeds:
            # identical parameters, seed and objective to a run the main study trains: reuse its encoder
            same = params == base and seed in base.seeds and spec.objective in base.objectives
            runs.append(AblationRun(spec.name, spec.objective, seed, params, spec.objective if same else None))
    return runs


def changed_keys(a: Params, b: Params) -> dict[str, tuple[Any, Any]]:
    """Dotted key -> (a's value, b's value) wherever the two differ."""
    def flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out
    fa, fb = flat(a.to_dict()), flat(b.to_dict())
    return {k: (fa.get(k), fb.get(k)) for k in sorted(fa.keys() | fb.keys()) if fa.get(k) != fb.get(k)}


def planned_budget(run: AblationRun, vocab_size: int,
                   counts: Mapping[str, TokenCounts] | None = None) -> dict[str, float]:
    """Steps and FLOPs a run will get: steps, flops_per_step, total_flops and the hybrid's total (the
    FLOPs target of mlm-flops). `counts` per objective as train.step_costs measures them; without
    them the analytic expectation (flops.expected_token_counts), so the step count can differ from the
    trained one by the gap between expected and measured token counts."""
    counts = counts or {}
    flops = {o: training_flops_per_step(run.params, vocab_size, o, counts.get(o))["total"] for o in OBJECTIVES}
    steps, _ = plan_steps(run.params, run.objective, flops)
    return {"steps": steps, "flops_per_step": flops[run.objective], "total_flops": steps * flops[run.objective],
            "hybrid_total_flops": run.params.train.steps * flops["hybrid"]}
