"""Ablation variants: each differs from the profile only at its own keys; mlm-flops gets the hybrid's FLOPs."""
from pathlib import Path

import pytest

from jepa_core.config import DEFAULT_CPU_VARIANTS as DEFAULT_CPU
from jepa_core.config import ParamsError, load_params, params_from_dict
from jepa_core.pretrain.flops import training_flops_per_step
from jepa_core.study.variants import AblationRun, Variant, changed_keys, expand, planned_budget, variant

CPU = Path(__file__).resolve().parents[1] / "parameters" / "cpu.yaml"


@pytest.fixture(scope="module")
def cpu():
    return load_params(CPU)


def test_default_cpu_variants_differ_only_at_their_keys(cpu):
    # cpu.yaml: lambda_mode learned, fixed_lambda 0.5, shared_pass false, budget steps
    assert (cpu.jepa.lambda_mode, cpu.jepa.fixed_lambda, cpu.jepa.shared_pass, cpu.train.budget) == \
        ("learned", 0.5, False, "steps")
    expected = {
        "hybrid-learned": ("hybrid", {}),
        "hybrid-fixed0.5": ("hybrid", {"jepa.lambda_mode": ("learned", "fixed")}),  # fixed_lambda already 0.5
        "hybrid-uncertainty": ("hybrid", {"jepa.lambda_mode": ("learned", "uncertainty")}),
        "hybrid-shared": ("hybrid", {"jepa.shared_pass": (False, True)}),
        "mlm-flops": ("mlm", {"train.budget": ("steps", "flops")}),
    }
    names = (*DEFAULT_CPU, "hybrid-uncertainty")  # the measured cpu list and the fifth variant
    runs = expand(cpu, names)
    assert [(r.name, r.seed) for r in runs] == [(n, s) for n in names for s in cpu.seeds]
    for run in runs:
        objective, diff = expected[run.name]
        assert run.objective == objective
        assert changed_keys(cpu, run.params) == diff, run.name
        assert run.key == f"{run.name}-s{run.seed}"
    # only the variant identical to the main hybrid reuses it
    assert {r.name for r in runs if r.reuses} == {"hybrid-learned"}
    assert all(r.reuses == "hybrid" for r in runs if r.name == "hybrid-learned")


def test_fixed_lambda_is_set_where_the_base_differs():
    base = params_from_dict({}, {"jepa.fixed_lambda": 0.3})
    (run,) = expand(base, ["hybrid-fixed0.5"], seeds=[7])
    assert changed_keys(base, run.params) == {"jepa.lambda_mode": ("learned", "fixed"),
                                              "jepa.fixed_lambda": (0.3, 0.5)}
    assert run.seed == 7 and run.reuses is None  # seed 7 is not a main-run seed
    assert variant("hybrid-fixed0.25").overrides == {"jepa.lambda_mode": "fixed", "jepa.fixed_lambda": 0.25}
    assert variant("hybrid-fixed1").overrides["jepa.fixed_lambda"] == 1.0


def test_mlm_steps_reuses_the_main_mlm_run_and_a_seed_outside_the_main_ones_does_not(cpu):
    runs = expand(cpu, ["mlm-steps"], seeds=[0, 5])
    assert [(r.reuses, changed_keys(cpu, r.params)) for r in runs] == [("mlm", {}), (None, {})]


def test_custom_variant_spec(cpu):
    (run,) = expand(cpu, [Variant("hybrid-ema", "hybrid", {"jepa.ema_start": 0.99})], seeds=[0])
    assert changed_keys(cpu, run.params) == {"jepa.ema_start": (0.996, 0.99)}


@pytest.mark.parametrize("names, fragment", [
    (["hybrid-magic"], "unknown ablation variant 'hybrid-magic': allowed hybrid-learned"),
    (["hybrid-fixed1.5"], "jepa.fixed_lambda=1.5 is invalid"),
    (["mlm-flops", "mlm-flops"], "listed twice: mlm-flops"),
    ([Variant("x", "gpt", {})], "objective='gpt'"),
    ([Variant("x", "hybrid", {"jepa.nope": 1})], "unknown parameter jepa.nope"),
])
def test_bad_variants_are_named(cpu, names, fragment):
    with pytest.raises(ParamsError, match=None) as err:
        expand(cpu, names)
    assert fragment in str(err.value)


def test_config_section_is_off_by_default_and_validated():
    p = params_from_dict({})
    assert p.ablations.variants == [] and p.ablations.seeds == []
    for path in sorted(CPU.parent.glob("*.yaml")):  # every profile lists the section, switched off
        expected = ["hybrid-fixed0.5", "mlm-flops"] if path.stem == "smoke" else []  # smoke: the chain test runs 05
        assert load_params(path).ablations.variants == expected
    assert params_from_dict({}, {"ablations.variants": ["mlm-flops"]}).ablations.variants == ["mlm-flops"]
    with pytest.raises(ParamsError, match="unknown ablation variant 'mlm-tokens'"):
        params_from_dict({}, {"ablations.variants": ["mlm-tokens"]})
    with pytest.raises(ParamsError, match="ablations.variants"):
        params_from_dict({}, {"ablations.variants": ["mlm-flops", "mlm-flops"]})


def test_mlm_flops_gets_the_hybrid_flops(cpu):
    vocab = cpu.data.vocab_size
    by_name = {r.name: r for r in expand(cpu, ["hybrid-learned", "mlm-flops", "mlm-steps", "hybrid-shared"],
                                         seeds=[0])}
    hybrid = training_flops_per_step(cpu, vocab, "hybrid")["total"]
    mlm = training_flops_per_step(cpu, vocab, "mlm")["total"]
    flops = planned_budget(by_name["mlm-flops"], vocab)
    assert flops["steps"] == round(cpu.train.steps * hybrid / mlm) > cpu.train.steps
    assert flops["hybrid_total_flops"] == cpu.train.steps * hybrid
    # equal compute up to rounding the step count: within half an MLM step of the hybrid's total
    assert abs(flops["total_flops"] - flops["hybrid_total_flops"]) <= mlm / 2
    assert planned_budget(by_name["mlm-steps"], vocab)["steps"] == cpu.train.steps
    assert planned_budget(by_name["hybrid-learned"], vocab)["total_flops"] == cpu.train.steps * hybrid
    # the shared pass drops the separate MLM pass: a cheaper hybrid step
    assert planned_budget(by_name["hybrid-shared"], vocab)["flops_per_step"] < hybrid
    assert isinstance(by_name["mlm-flops"], AblationRun)
