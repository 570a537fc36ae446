"""The benchmark runs end to end on a tiny config and writes well-formed JSON (no timing assertions)."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from jepa_core import bench
from jepa_core.bench import BenchConfig, BlockCycle, parse_args, spread

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    assert bench.main(["--tiny", "--ablations", "--static-shapes", "--quiet", "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_json_has_every_section(result):
    for key in ("command", "config", "machine", "precision", "gemm_flops_per_s", "results", "ratios", "encoding",
                "memory", "targets", "all_targets_pass", "data", "wall_seconds", "evaluation", "pretrain_speed"):
        assert key in result, key
    assert result["command"].startswith("python -m jepa_core.bench --tiny")
    assert result["config"] == vars(BenchConfig.tiny(ablations=True, static_shapes=True))
    assert set(result["results"]) == set(bench.WORKLOADS) | set(bench.VARIANTS)
    assert set(result["targets"]) == set(bench.TARGETS)
    for key in ("cpu", "logical_cores", "torch_threads", "torch", "device"):
        assert result["machine"][key], key


def test_training_results_are_consistent(result):
    res, cfg = result["results"], BenchConfig.tiny()
    for name in bench.TRAINING:
        r = res[name]
        s = r["step_seconds"]
        assert s["n"] == cfg.rounds and 0 < s["min"] <= s["q1"] <= s["median"] <= s["q3"] <= s["max"]
        assert r["tokens_per_step"] == cfg.batch * cfg.seq
        assert r["tokens_per_s"]["median"] > 0
        assert r["achieved_flops_per_s"] == pytest.approx(r["flops_per_step"] / s["median"])
        assert r["fraction_of_gemm"] == pytest.approx(r["achieved_flops_per_s"] / result["gemm_flops_per_s"])
    assert res["gemm"]["fraction_of_gemm"] == pytest.approx(1.0)
    assert res["gemm"]["flops_per_step"] == 2 * cfg.gemm_size ** 3 * cfg.gemm_repeats
    # The naive loop projects every position onto the vocabulary; ours only the masked ones. The
    # hybrid adds a target pass, a context pass and the predictor; the shared pass drops the MLM pass.
    flops = {n: res[n]["flops_per_step"] for n in bench.TRAINING}
    assert flops["hf"] > flops["mlm"] and flops["hybrid"] > flops["shared"] > flops["mlm"] * 0.5
    assert res["hybrid"]["token_counts"]["context"] < cfg.seq


def test_ratios_and_targets_follow_from_the_times(result):
    med = {n: result["results"][n]["step_seconds"]["median"] for n in bench.TRAINING}
    r = result["ratios"]
    assert r["speedup_mlm_vs_hf"]["value"] == pytest.approx(med["hf"] / med["mlm"])
    assert r["hybrid_vs_mlm_step_time"]["value"] == pytest.approx(med["hybrid"] / med["mlm"])
    assert r["shared_vs_mlm_step_time"]["value"] == pytest.approx(med["shared"] / med["mlm"])
    cpu = {n: result["results"][n]["step_cpu_seconds"]["median"] for n in bench.TRAINING}
    assert r["speedup_mlm_vs_hf"]["cpu_time_value"] == pytest.approx(cpu["hf"] / cpu["mlm"])
    for name, t in result["targets"].items():
        op, threshold, _ = bench.TARGETS[name]
        assert t["target"] == f"{op} {threshold}"
        assert isinstance(t["pass"], bool) and math.isfinite(t["measured"])
        assert t["pass"] == (t["measured"] >= threshold if op == ">=" else t["measured"] <= threshold)
    assert result["all_targets_pass"] == all(t["pass"] for t in result["targets"].values())


def test_static_shapes_workloads_sit_next_to_the_default_ones(result):
    res, r = result["results"], result["ratios"]
    for name in bench.STATIC:  # same work counted (padding is not work), own times, own ratio
        static = res[f"{name}_static"]
        assert static["flops_per_step"] == res[name]["flops_per_step"]
        assert static["label"] == res[name]["label"] + ", static shapes"
        assert r[f"{name}_static_vs_{name}_step_time"]["value"] == pytest.approx(
            static["step_seconds"]["median"] / res[name]["step_seconds"]["median"])
        assert f"{name}_static_vs_{name}_step_time" in bench.format_table(result)


def test_encoding_and_memory_sections(result):
    e, cfg = result["encoding"], BenchConfig.tiny()
    assert e["sentences"] == cfg.encode_sentences and e["source"]
    for mode in ("padded", "unbucketed", "bucketed"):
        assert e[mode]["sentences_per_s"] > 0
    assert e["bucketed_vs_padded"] == pytest.approx(e["bucketed"]["sentences_per_s"] / e["padded"]["sentences_per_s"])
    assert e["padding_bound_padded"] >= e["padding_bound_unbucketed"] >= 1
    mem = result["memory"]
    for name in bench.TRAINING:
        assert mem[name]["state_mib"] > 0
    # The hybrid holds a second (EMA) encoder and a predictor on top of the MLM model.
    assert mem["hybrid"]["state_mib"] > mem["mlm"]["state_mib"]
    assert mem["process_peak_rss_mib"] > 0


def test_evaluation_section_times_both_paths_and_compares_their_tables(result):
    """Issue 22: the previous evaluation path (scikit-learn probes) and the current one, interleaved, on the same
    encodings; the speed-up is the ratio of their median wall times and a target like the others."""
    e, cfg = result["evaluation"], BenchConfig.tiny()
    assert e["rounds"] == cfg.eval_rounds and e["tasks"][-1] == "wiki" and e["poolings"] == ["mean", "weighted"]
    walls = {k: e["seconds"][k]["wall"] for k in ("today", "new")}
    assert all(len(v) == cfg.eval_rounds and min(v) > 0 for v in walls.values())
    assert e["speedup"] == pytest.approx(np.median(walls["today"]) / np.median(walls["new"]))
    target = result["targets"]["evaluation_speedup"]
    assert target["measured"] == pytest.approx(e["speedup"]) and target["met"] == target["pass"]
    assert result["ratios"]["evaluation_speedup"]["value"] == pytest.approx(e["speedup"])
    assert set(e["parts_seconds"]["today"]) == set(bench.evaluation.PARTS)
    tol = e["tolerance"]  # the same numbers: probes follow scikit-learn's iterates, geometry is one implementation
    assert tol["rows_compared"] == tol["rows_today"] == tol["rows_new"] > 0 and tol["within_tolerance"]
    assert tol["probe_max_abs_points"] <= 0.5 and tol["geometry_max_rel"] <= 1e-6


def test_ablations_section(result):
    ab, res = result["ablations"], result["results"]
    micro = {f"adamw:{k}" for k in ("loop", "foreach", "fused")} | {f"ema:{k}" for k in ("foreach_mul_add",
                                                                                          "foreach_lerp", "loop")}
    assert set(ab) == set(bench.VARIANTS) | micro
    for name, (base, what) in bench.VARIANTS.items():
        a = ab[name]
        assert a["base"] == base and a["what"] == what
        assert a["variant_over_base"]["value"] == pytest.approx(a["step_seconds"] / a["base_step_seconds"])
        # an ablation is credited with the base's useful FLOPs, whatever extra it computes
        assert res[name]["flops_per_step"] == pytest.approx(res[base]["flops_per_step"])
    for name in micro:
        assert ab[name]["step_seconds"]["median"] > 0


def test_micro_workloads_build_three_adamw_implementations():
    from jepa_core.data.tokenizer import train_tokenizer

    cfg = BenchConfig.tiny()
    tok = train_tokenizer(["a small text for a tiny vocabulary"] * 4, cfg.vocab)
    opts = {w.name: w.step.__defaults__[0] for w in bench.micro_workloads(cfg, tok, torch.device("cpu"))
            if w.name.startswith("adamw:")}
    flags = {name: (o.param_groups[0]["foreach"], o.param_groups[0]["fused"]) for name, o in opts.items()}
    assert flags == {"adamw:loop": (False, False), "adamw:foreach": (True, False), "adamw:fused": (False, True)}
    assert [g["weight_decay"] for g in opts["adamw:fused"].param_groups] == [0.05, 0.0]  # the trainer's groups


def test_text_and_markdown_reports(result):
    text, md = bench.format_table(result), bench.format_markdown(result)
    for name in bench.WORKLOADS:
        label = result["results"][name]["label"]
        assert label in text and f"| {label} |" in md
    for name, t in result["targets"].items():
        assert name in text and t["what"] in md
    assert md.count("\n| `") == len(result["ablations"])  # one row per ablation
    for t in bench.report(result)[1]:  # every table: one line per row in both renderings, same cells
        for row in t.rows:
            assert "| " + " | ".join(row) + " |" in md
            assert all(cell in text for cell in row)


def test_spread_known_answer():
    s = spread([4.0, 1.0, 3.0, 2.0, 5.0])
    assert s == {"median": 3.0, "q1": 2.0, "q3": 4.0, "iqr": 2.0, "min": 1.0, "max": 5.0, "n": 5}


def test_block_cycle_wraps_and_numbers_items():
    blocks = np.arange(7 * 3, dtype=np.int32).reshape(7, 3)
    cycle = BlockCycle(blocks, batch=3)  # 2 full batches per pass; the 7th row is never used
    first, third = cycle.items(0), cycle.items(2)
    assert [it["index"] for it in third] == [6, 7, 8]  # distinct item ids -> fresh masks each step
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(first, third))
    assert torch.equal(cycle.items(1)[0]["input_ids"], torch.tensor([9, 10, 11]))


def test_parse_args_tiny_with_override():
    cfg, opts = parse_args(["--tiny", "--rounds", "5", "--glue-dir", "/x", "--compile", "--out", "b.json"])
    assert cfg == BenchConfig.tiny(rounds=5, glue_dir="/x", compile=True) and opts.out == "b.json"
    assert parse_args([])[0] == BenchConfig()


@pytest.mark.parametrize("name, tflops", [("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0),
                                           ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA L40S", 362.0),
                                           ("NVIDIA L4", 121.0), ("NVIDIA GeForce RTX 3090", None)])
def test_gpu_peak_lookup(monkeypatch, name, tflops):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    peak = bench.gpu_peak_flops(torch.device("cuda"), None)
    assert peak == (tflops * 1e12 if tflops else None)
    assert bench.gpu_peak_flops(torch.device("cuda"), 100.0) == 100e12  # the flag wins
    assert bench.gpu_peak_flops(torch.device("cpu"), None) is None


def test_sst2_dev_sentences(glue_dir):
    sentences, source = bench.encode_sentences(BenchConfig(glue_dir=str(glue_dir)), corpus=None)
    assert len(sentences) == 872 and "SST-2" in source


def test_pretrain_speed_section_at_the_profile_shapes(result):
    """--tiny times the smoke profile's shapes; its precision is auto (fp32 on a CPU): one workload per
    objective, so the speed-up is exactly 1 and the target says it is not met."""
    from jepa_core.config import load_params

    ps, smoke = result["pretrain_speed"], load_params(REPO / "parameters" / "smoke.yaml")
    assert ps["profile"] == "smoke" and ps["current"] == "fp32" and ps["threads"] == 1
    assert ps["shapes"] == dict(architecture=smoke.model.architecture, layers=smoke.model.layers,
                                hidden=smoke.model.hidden, heads=smoke.model.heads, ffn=smoke.model.ffn,
                                vocab=smoke.data.vocab_size, batch=smoke.train.batch_size, seq=smoke.data.seq_len)
    assert ps["speedup"] == 1.0 and ps["hybrid"]["speedup"] == 1.0 and ps["mlm"]["speedup"] == 1.0
    assert result["targets"]["cpu_pretrain_speedup"]["measured"] == 1.0
    assert result["targets"]["cpu_pretrain_speedup"]["met"] is False


def test_pretrain_speed_times_fp32_against_bf16():
    """A profile trained in bf16: fp32 and bf16 steps interleaved; the pair's speed-up is the ratio of the
    summed medians, each objective's the ratio of its own."""
    from jepa_core.bench import pretrain_speed

    ps = pretrain_speed.pretrain_speed_benchmark(BenchConfig.tiny(rounds=2), "smoke", progress=False,
                                                 precision="bf16")
    assert ps["current"] == "bf16"
    med = {(o, k): ps[o][f"{k}_step_seconds"]["median"] for o in ("hybrid", "mlm") for k in ("fp32", "current")}
    for o in ("hybrid", "mlm"):
        assert ps[o]["speedup"] == pytest.approx(med[o, "fp32"] / med[o, "current"])
    assert ps["speedup"] == pytest.approx((med["hybrid", "fp32"] + med["mlm", "fp32"])
                                          / (med["hybrid", "current"] + med["mlm", "current"]))
    assert ps["per_round"]["n"] == 2


def test_pretrain_speed_steps_run_on_one_thread_as_the_studys_runs(monkeypatch):
    """Each timed step runs at one thread whatever the process had (session 8's figures were two-thread steps:
    the thread count was set after the workloads had fixed theirs)."""
    from jepa_core.bench import pretrain_speed

    threads_in_step, linear = [], torch.nn.functional.linear

    def linear_recording_threads(*args, **kwargs):  # every nn.Linear of the step calls it
        threads_in_step.append(torch.get_num_threads())
        return linear(*args, **kwargs)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(torch.nn.functional, "linear", linear_recording_threads)
        pretrain_speed.pretrain_speed_benchmark(BenchConfig.tiny(rounds=1, warmup=0), "smoke", progress=False)
    finally:
        torch.set_num_threads(before)
    assert threads_in_step and set(threads_in_step) == {1}


@pytest.mark.parametrize("bad, message", [(dict(heads=3), "divisor of hidden"), (dict(precision="fp16"), "precision"),
                                          (dict(rounds=0), "rounds"), (dict(device="tpu"), "device"),
                                          (dict(architecture="gpt2"), "architecture"),
                                          (dict(pretrain_profile="nope"), "pretrain_profile")])
def test_config_rejects_bad_values(bad, message):
    with pytest.raises(ValueError, match=message):
        BenchConfig(**bad)


def test_modernbert_runs_every_workload(tmp_path):
    """--architecture modernbert: the stock ModernBertForMaskedLM loop next to our steps (GLU FLOPs)."""
    out = tmp_path / "bench.json"
    assert bench.main(["--tiny", "--architecture", "modernbert", "--quiet", "--rounds", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["config"]["architecture"] == "modernbert"
    assert "ModernBertForMaskedLM" in result["results"]["hf"]["label"]
    flops = {n: result["results"][n]["flops_per_step"] for n in bench.TRAINING}
    assert flops["hf"] > flops["mlm"] and flops["hybrid"] > flops["mlm"]
    assert result["encoding"]["bucketed"]["sentences_per_s"] > 0
    # the strongest stock step (head at masked positions only) and BERT's naive loop, timed alongside
    stock = result["results"]
    assert "sparse_prediction" in stock["hf_sparse"]["label"] and "BertForMaskedLM" in stock["hf_bert"]["label"]
    assert stock["hf_sparse"]["flops_per_step"] < flops["hf"]  # no vocabulary projection at 85% of the tokens
    assert stock["hf_bert"]["flops_per_step"] < flops["hf"]  # no GLU matrix
    for name in ("hf_sparse", "hf_bert"):
        ratio = result["ratios"][f"speedup_mlm_vs_{name}"]
        assert ratio["value"] == pytest.approx(stock[name]["step_seconds"]["median"]
                                               / stock["mlm"]["step_seconds"]["median"])
        assert result["memory"][name]["state_mib"] > 0
    assert "speedup_mlm_vs_hf_sparse" in bench.format_markdown(result)
    text = bench.format_table(result)
    for name in ("hf", "hf_sparse", "hf_bert", "mlm"):  # every workload's row, once
        assert text.count(stock[name]["label"] + " ") == 1, name


def test_stock_workloads_follow_the_architecture():
    assert bench.stock_workloads(BenchConfig.tiny()) == ["hf"]
    assert bench.stock_workloads(BenchConfig.tiny(architecture="modernbert")) == ["hf", "hf_sparse", "hf_bert"]



def test_layout_arithmetic_on_known_step_times(monkeypatch):
    """Stubbed processes with known step times: one at a time a seed costs h + m per step index, side by side
    (h + m) / N; the speed-ups are over side by side; rounds give medians."""
    from jepa_core.bench import layout

    times = {("hybrid", 1): 0.2, ("mlm", 1): 0.1, ("hybrid", 2): 0.15, ("mlm", 2): 0.08}
    started, live = [], []

    def start(objective, threads, steps, precision, profile):
        started.append((objective, threads, steps))
        proc = {"key": (objective, threads), "alongside": bool(live)}
        for other in live:  # started while another runs: both share the machine
            other["alongside"] = True
        live.append(proc)
        return proc

    def read(proc):
        live.remove(proc)
        return times[proc["key"]] * (2.0 if proc["alongside"] else 1.0)  # side by side: half speed each

    monkeypatch.setattr(layout, "_start", start)
    monkeypatch.setattr(layout, "_read", read)
    res = layout.layout_benchmark("smoke", "fp32", rounds=2, steps=4, cores=2)
    assert res["one_at_a_time_1_thread"]["seed_seconds_per_step"]["median"] == pytest.approx(0.3)
    assert res["one_at_a_time_N_threads"]["seed_seconds_per_step"]["median"] == pytest.approx(0.23)
    assert res["side_by_side"]["seed_seconds_per_step"]["median"] == pytest.approx((0.4 + 0.2) / 2)
    assert res["side_by_side"]["speedup_over_side_by_side"] == 1.0
    assert res["one_at_a_time_N_threads"]["speedup_over_side_by_side"] == pytest.approx(0.3 / 0.23)
    assert ("mlm", 1, 12) in started and ("hybrid", 2, 4) in started and ("mlm", 2, 8) in started


def test_layout_timing_process_reports_a_step_time(capsys):
    from jepa_core.bench import layout

    assert layout.main(["--child", "mlm", "1", "2", "fp32", "smoke"]) == 0
    median = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["median"]
    assert 0 < median < 60
