"""train.py: learning, the log, the exported model, resume, determinism, budgets, the pieces."""
import json
import math
import os
import shutil
import signal
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from _train_helpers import REPO, cli_args, deterministic, one_thread, read_log, tiny_data, tiny_params
from transformers import AutoModel, AutoTokenizer

import jepa_core.pretrain.batches as B
import jepa_core.pretrain.engine as E
import jepa_core.pretrain.train as T
from jepa_core.config import hash_dict
from jepa_core.model import PretrainModel
from jepa_core.pretrain import checkpoint as ckpt
from jepa_core.pretrain import numerics as N
from jepa_core.pretrain import resume as R
from jepa_core.pretrain.run_state import SECONDS_PROBE_STEPS

STEP_FIELDS = {"step", "loss", "mlm_loss", "jepa_loss", "lambda", "lr", "ema_momentum", "grad_norm", "tokens_per_s",
               "target_std", "batch_effective_rank", "flops", "elapsed_s"}

single_thread = pytest.fixture(autouse=True)(one_thread)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """30 steps of each objective on the tiny data (dropout 0.1), in out_dir layout."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("runs")
    data = tiny_data()
    summaries = {obj: T.train(tiny_params(), obj, root / obj, data=data) for obj in ("hybrid", "mlm")}
    return root, summaries


def test_both_objectives_learn(runs):
    root, _ = runs
    for objective, keys in (("hybrid", ("mlm_loss", "jepa_loss", "loss")), ("mlm", ("mlm_loss",))):
        steps, _ = read_log(root / objective / "log.jsonl")
        assert [r["step"] for r in steps] == list(range(1, 31))
        for key in keys:
            first = sum(r[key] for r in steps[:5]) / 5
            last = sum(r[key] for r in steps[-5:]) / 5
            assert last < first - 0.05, (objective, key, first, last)


def test_log_has_every_field_and_lambda_every_step(runs):
    root, _ = runs
    hybrid, hybrid_val = read_log(root / "hybrid" / "log.jsonl")
    mlm, mlm_val = read_log(root / "mlm" / "log.jsonl")
    for r in hybrid + mlm:
        assert STEP_FIELDS <= r.keys()
        assert all(math.isfinite(r[k]) for k in ("loss", "mlm_loss", "lr", "grad_norm", "flops",
                                                 "batch_effective_rank"))
    assert all(0 < r["lambda"] < 1 and r["jepa_loss"] > 0 and r["target_std"] > 0 for r in hybrid)
    assert hybrid[0]["lambda"] == pytest.approx(0.5, abs=0.01)  # sigmoid(w0 = 0)
    assert len({r["lambda"] for r in hybrid}) > 20  # λ is learned: it moves every step
    assert all(r["lambda"] is None and r["jepa_loss"] is None and r["target_std"] is None for r in mlm)
    assert all(r["loss"] == r["mlm_loss"] for r in mlm)
    # EMA momentum: linear 0.996 -> 1.0 over the run (value used at step s is for s-1 completed steps)
    assert hybrid[0]["ema_momentum"] == pytest.approx(0.996)
    assert hybrid[-1]["ema_momentum"] == pytest.approx(0.996 + 0.004 * 29 / 30)
    # LR: warm-up over 3 steps to 3e-3, then cosine down toward 3e-4
    lrs = [r["lr"] for r in hybrid]
    assert lrs[:4] == pytest.approx([3e-3 / 4, 3e-3 * 2 / 4, 3e-3 * 3 / 4, 3e-3])
    assert lrs[-1] == pytest.approx(3e-4 + 2.7e-3 * 0.5 * (1 + math.cos(math.pi * 26 / 27)))
    # FLOPs accumulate by the per-step count; a hybrid step costs more than an MLM step
    assert hybrid[-1]["flops"] == pytest.approx(30 * hybrid[0]["flops"])
    assert hybrid[0]["flops"] > 1.5 * mlm[0]["flops"]
    # validation on fixed batches every 10 steps; MLM runs have no JEPA loss
    assert [v["step"] for v in hybrid_val] == [10, 20, 30] == [v["step"] for v in mlm_val]
    assert all(v["jepa_loss"] > 0 and v["mlm_loss"] > 0 for v in hybrid_val)
    assert all(v["jepa_loss"] is None for v in mlm_val)
    assert hybrid_val[-1]["mlm_loss"] < hybrid_val[0]["mlm_loss"]


def test_summary_and_exported_model(runs):
    root, summaries = runs
    data = tiny_data()
    for objective, s in summaries.items():
        on_disk = json.loads((root / objective / "train_summary.json").read_text())
        assert on_disk["steps"] == s["steps"] == 30 and on_disk["objective"] == objective
        assert s["tokens"] == 30 * 8 * 32
        assert s["total_flops"] == pytest.approx(30 * s["flops_per_step"])
        assert s["data_source"].startswith("wiki_dump:") and s["budget"]["mode"] == "steps"
        assert s["final"]["mlm_loss"] > 0 and s["final_validation"]["step"] == 30
        # model/: AutoModel + AutoTokenizer load it; same hidden states as the trained encoder
        model = AutoModel.from_pretrained(root / objective / "model").eval()
        tok = AutoTokenizer.from_pretrained(root / objective / "model")
        assert len(tok) == len(data.tokenizer)
        trained = PretrainModel(tiny_params(), objective, len(tok), tok.pad_token_id)
        ckpt.load_checkpoint(root / objective / "checkpoint", trained)
        enc = trained.encoder_for_export().eval()
        inputs = tok(["The history of the city.", "Anarchism is a political philosophy"], padding=True,
                     return_tensors="pt")
        with torch.no_grad():
            torch.testing.assert_close(model(**inputs).last_hidden_state, enc(**inputs).last_hidden_state, rtol=0,
                                       atol=1e-6)
    assert summaries["hybrid"]["hybrid_mlm_flops_ratio"] == summaries["mlm"]["hybrid_mlm_flops_ratio"] > 1.5


def _check_positions(objective_seed: int = 0):
    """(labels, inputs) at the masked positions of the learning check's batches, rebuilt here from the MLM
    collator and the first validation blocks (independent of learning.py)."""
    from jepa_core.model.masking import PretrainCollator
    data, params = tiny_data(), tiny_params()
    t = params.train
    collate = PretrainCollator(data.tokenizer, params.mask, objective_seed, "mlm", False, t.static_shapes,
                               params.data.seq_len)
    collate.set_epoch(0)
    blocks = data.blocks["validation"][:t.eval_batches * t.batch_size]
    labels, inputs = [], []
    for s in range(0, len(blocks), t.batch_size):
        b = collate([{"input_ids": torch.tensor(np.array(x, dtype=np.int64)), "index": s + k}
                     for k, x in enumerate(blocks[s:s + t.batch_size])])
        chosen = b["mlm_labels"] != -100
        labels += b["mlm_labels"][chosen].tolist()
        inputs += b["mlm_input_ids"][chosen].tolist()
    return labels, inputs, data.tokenizer.mask_token_id


def test_learning_check_scores_loss_entropy_and_baseline_on_the_same_tokens(runs, tmp_path):
    root, summaries = runs
    labels, inputs, mask_id = _check_positions()
    n = len(labels)
    # the frequency model: training-split unigram counts, +1 for every non-special id (independent of learning.py)
    data = tiny_data()
    special = set(data.tokenizer.all_special_ids)
    train_counts = Counter(int(t) for t in data.blocks["train"].ravel() if int(t) not in special)
    total = sum(train_counts.values()) + len(data.tokenizer) - len(special)
    entropy = -sum(math.log((train_counts[t] + 1) / total) for t in labels) / n
    masked = [i == mask_id for i in inputs]
    shared = T.train(tiny_params(train__steps=4, jepa__shared_pass=True), "hybrid", tmp_path / "shared",
                     data=tiny_data())
    for name, s in {**summaries, "hybrid-shared": shared}.items():
        learning = json.loads(((root / name) if name in summaries else tmp_path / "shared")
                              .joinpath("train_summary.json").read_text())["learning"]
        assert learning == s["learning"]
        # every model, hybrid-shared included: the same positions for loss and entropy
        assert learning["loss_tokens"] == learning["entropy_tokens"] == n, name
        assert learning["mask_tokens"] == sum(masked) and 0.6 * n < sum(masked) < 0.95 * n
        assert learning["unigram_entropy"] == pytest.approx(entropy, rel=1e-12)
        assert learning["gap"] == pytest.approx(entropy - learning["validation_mlm_loss"], abs=1e-12)
        # the context-free baseline copies the visible token: below the entropy by about the kept share
        assert learning["context_free_loss"] < entropy
        assert learning["gap_vs_context_free"] == pytest.approx(
            learning["context_free_loss"] - learning["validation_mlm_loss"], abs=1e-12)
        assert learning["mask_loss"] is not None and learning["objective_validation_mlm_loss"] is not None


def test_context_free_baseline_on_known_positions():
    from jepa_core.pretrain import learning as L
    mask = 9
    labels = np.array([1, 1, 2, 2, 3, 1])
    inputs = np.array([mask, mask, mask, 2, 1, 1])  # 3 masked, one kept (2), one random (1 for 3), one kept (1)
    # training tokens 1 1 1 2 and specials 0, 9 in a vocabulary of 10: +1 count for each of the 8 other ids
    qv = L.unigram_distribution(np.array([[0, 1, 1, 1, 2]]), [0, 9], 10)
    assert qv[0] == qv[9] == 0 and qv[1] == pytest.approx(4 / 12) and qv[3] == pytest.approx(1 / 12)
    q = {1: 4 / 12, 2: 2 / 12, 3: 1 / 12}
    want = [-math.log(q[1]), -math.log(q[1]), -math.log(q[2]), -math.log(0.5 + 0.5 * q[2]),
            -math.log(0.5 * q[3]), -math.log(0.5 + 0.5 * q[1])]
    assert L.context_free_losses(labels, inputs, mask, qv) == pytest.approx(want)
    check = L.learning_check({"labels": labels, "inputs": inputs, "losses": np.full(6, 0.5)}, mask, qv)
    assert check["unigram_entropy"] == pytest.approx(-np.mean([math.log(q[t]) for t in labels]))
    assert (check["loss_tokens"], check["entropy_tokens"], check["mask_tokens"]) == (6, 6, 3)
    assert check["mask_unigram_loss"] == pytest.approx(np.mean(want[:3]))
    assert L.learning_check(None, mask, qv)["validation_mlm_loss"] is None


@pytest.mark.parametrize("architecture", ["bert", "modernbert"])
def test_interrupt_then_resume_reproduces_every_step(runs, tmp_path, monkeypatch, architecture):
    """SIGINT (in-process) after step 14 → checkpoint at 14 → resume: all 30 steps equal the
    uninterrupted run's to 1e-6, with dropout on (the RNG state travels in the checkpoint), for each
    encoder architecture (bert's dropout is kernels.py's, modernbert's torch's own)."""
    root, _ = runs
    params = tiny_params(model__architecture=architecture)
    if architecture != tiny_params().model.architecture:  # the module's runs are of the profile's architecture
        root = tmp_path / "uninterrupted"
        T.train(params, "hybrid", root / "hybrid", data=tiny_data())
    tmp_path = tmp_path / "interrupted"
    real = T.ema_momentum

    def interrupt_at_step_15(step, *args):
        if step == 14:
            os.kill(os.getpid(), signal.SIGINT)  # arrives mid-step; the step still completes
        return real(step, *args)

    monkeypatch.setattr(T, "ema_momentum", interrupt_at_step_15)
    # what the process had before: Python's default handler, or SIG_IGN in a shell's background job
    handler_before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt) as info:
        T.train(params, "hybrid", tmp_path, data=tiny_data())
    assert isinstance(info.value, T.TrainingInterrupted) and info.value.step == 15
    assert ckpt.load_checkpoint(tmp_path / "checkpoint")["step"] == 15
    assert not (tmp_path / "model").exists()  # no final model from an unfinished run
    assert signal.getsignal(signal.SIGINT) is handler_before  # handlers restored
    monkeypatch.setattr(T, "ema_momentum", real)

    summary = T.train(params, "hybrid", tmp_path, data=tiny_data(), resume=True)
    assert summary["resumed_from_step"] == 15 and summary["steps"] == 30
    resumed, resumed_val = read_log(tmp_path / "log.jsonl")
    full, full_val = read_log(root / "hybrid" / "log.jsonl")
    assert [r["step"] for r in resumed] == list(range(1, 31))
    for a, b in zip(resumed, full):
        for key in ("loss", "mlm_loss", "jepa_loss", "lambda", "grad_norm", "target_std"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), (a["step"], key)
    assert [v["step"] for v in resumed_val] == [10, 20, 30]
    assert resumed_val[-1]["mlm_loss"] == pytest.approx(full_val[-1]["mlm_loss"], abs=1e-6)

    again = T.train(params, "hybrid", tmp_path, data=tiny_data(), resume=True)  # finished: just re-export
    assert again["steps"] == 30 and again["final"]["loss"] == pytest.approx(summary["final"]["loss"])
    # resumed past step 10 (at 15, then at 30): the fingerprint the first session took travels in the checkpoints
    full_fp = json.loads((root / "hybrid" / "train_summary.json").read_text())["numerics"]["weights_fingerprint"]
    assert full_fp["step"] == N.FINGERPRINT_STEP
    assert summary["numerics"]["weights_fingerprint"] == again["numerics"]["weights_fingerprint"] == full_fp


def test_existing_checkpoint_needs_resume(runs):
    root, _ = runs
    with pytest.raises(FileExistsError, match="resume=True"):
        T.train(tiny_params(), "mlm", root / "mlm", data=tiny_data())


def test_same_seed_same_log_other_seed_other_log(tmp_path):
    """Seeded end to end: data order, masks (in worker processes too), init, dropout."""
    data, params = tiny_data(), tiny_params(train__steps=5, train__warmup_steps=1, train__eval_every=5)
    logs = {}
    for name, seed, workers in (("a", 0, 0), ("b", 0, 2), ("c", 1, 0)):
        params.train.num_workers = workers
        T.train(params, "hybrid", tmp_path / name, seed=seed, data=data)
        logs[name] = deterministic(sum(read_log(tmp_path / name / "log.jsonl"), []))
    assert logs["a"] == logs["b"]  # also with DataLoader worker processes drawing the masks
    assert [r["loss"] for r in logs["a"][:5]] != [r["loss"] for r in logs["c"][:5]]


def test_seeds_differ_in_init_order_and_masks_objectives_share_them(tmp_path, monkeypatch):
    """What train() itself builds: per seed, one initial encoder + MLM head and one sequence of MLM
    masks shared by both objectives; another seed changes the init, the batch order and the masks."""
    inits, first_batches = {}, {}
    real_model, real_step = E.PretrainModel, T.forward_backward

    def model(params, objective, *args):
        m = real_model(params, objective, *args)
        inits[run] = {k: v.clone() for k, v in m.state_dict().items() if k.startswith(("encoder.", "mlm_head."))}
        return m

    def step(model, batch, *args):
        first_batches.setdefault(run, {k: v.clone() for k, v in batch.items()})
        return real_step(model, batch, *args)

    monkeypatch.setattr(E, "PretrainModel", model)
    monkeypatch.setattr(T, "forward_backward", step)
    data, params = tiny_data(), tiny_params(train__steps=1, train__warmup_steps=0, train__eval_every=100)
    assert params.jepa.shared_pass is False  # with a shared pass the hybrid draws MLM positions in its context
    for run in (("hybrid", 0), ("mlm", 0), ("hybrid", 1), ("mlm", 1)):
        T.train(params, run[0], tmp_path / f"{run[0]}-{run[1]}", seed=run[1], data=data)

    def same(a, b, keys):
        return all(torch.equal(a[k], b[k]) for k in keys)

    weights = list(inits["hybrid", 0])
    assert len(weights) > 10 and "encoder.embeddings.word_embeddings.weight" in weights
    shared = ("input_ids", "mlm_input_ids", "mlm_labels")  # batch order (rows) and MLM masks
    for seed in (0, 1):  # within a seed: the same initial encoder + head, batches and MLM masks
        assert same(inits["hybrid", seed], inits["mlm", seed], weights)
        assert same(first_batches["hybrid", seed], first_batches["mlm", seed], shared)
    for objective in ("hybrid", "mlm"):  # across seeds: every one of them differs
        for key in weights:
            if inits[objective, 0][key].std() > 0:  # (LayerNorm weights start at 1, biases at 0 in every seed)
                assert not torch.equal(inits[objective, 0][key], inits[objective, 1][key]), key
        for key in shared:
            assert not torch.equal(first_batches[objective, 0][key], first_batches[objective, 1][key]), key
    assert not torch.equal(first_batches["hybrid", 0]["target_idx"], first_batches["hybrid", 1]["target_idx"])


def test_flops_budget_gives_the_mlm_run_more_steps(tmp_path):
    data, params = tiny_data(), tiny_params(train__steps=5, train__warmup_steps=1, train__budget="flops",
                                            train__eval_every=100, train__checkpoint_every=100)
    h = T.train(params, "hybrid", tmp_path / "h", data=data)
    m = T.train(params, "mlm", tmp_path / "m", data=data)
    assert h["steps"] == 5
    assert m["steps"] == round(5 * h["flops_per_step"] / m["flops_per_step"]) > 5
    assert abs(m["total_flops"] - h["total_flops"]) <= m["flops_per_step"] / 2 + 1
    assert "equal FLOPs" in m["budget"]["note"]
    assert len(read_log(tmp_path / "m" / "log.jsonl")[0]) == m["steps"]


def test_seconds_budget_sets_the_schedule_after_a_timed_warmup(tmp_path):
    data = tiny_data()
    params = tiny_params(train__steps=5, train__warmup_steps=1, train__budget="seconds", train__budget_seconds=1.5,
                         train__eval_every=1000, train__checkpoint_every=1000)
    s = T.train(params, "mlm", tmp_path, data=data)
    assert s["steps"] > SECONDS_PROBE_STEPS  # the probe always runs
    assert s["budget"]["stopped_by"] in ("time", "steps")
    assert "equal wall-clock" in s["budget"]["note"]
    steps, _ = read_log(tmp_path / "log.jsonl")
    assert len(steps) == s["steps"] and ckpt.load_checkpoint(tmp_path / "checkpoint")["step"] == s["steps"]


# ---------------------------------------------------------------- the pieces

def test_batch_order_is_seeded_sharded_and_resumable():
    order = B.BatchOrder(num_rows=103, batch_size=8, seed=0)
    assert order.num_batches == 12  # the incomplete last batch is dropped
    epoch0 = list(order.batches(0))
    assert epoch0 == list(B.BatchOrder(103, 8, 0).batches(0))  # same seed: same order
    assert epoch0 != list(order.batches(1)) and epoch0 != list(B.BatchOrder(103, 8, 1).batches(0))
    assert len({i for b in epoch0 for i in b}) == 96  # no row twice in an epoch
    assert list(order.batches(0, start=5)) == epoch0[5:]  # resume skips straight to the position
    shards = [list(B.BatchOrder(103, 8, 0, rank=r, world=2).batches(0)) for r in range(2)]
    assert [a + b for a, b in zip(*shards)] == epoch0  # two processes split each global batch
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        B.BatchOrder(103, 8, 0, rank=0, world=3)


def test_warmup_cosine_known_values():
    f = E.WarmupCosine(warmup=4, total=14, min_ratio=0.1)
    assert [f(s) for s in range(5)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert f(9) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the decay
    assert f(14) == pytest.approx(0.1) and f(100) == pytest.approx(0.1)


def test_batch_rankme_known_values():
    assert T.batch_rankme(torch.eye(6)) == pytest.approx(6.0)
    assert T.batch_rankme(torch.ones(8, 5)) == pytest.approx(1.0)
    x = torch.zeros(4, 4)
    x[0, 0], x[1, 1] = 3.0, 1.0  # singular values 3, 1: p = (.75, .25)
    assert T.batch_rankme(x) == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))


def test_optimizer_groups_exclude_biases_layernorm_and_lambda():
    params = tiny_params()
    model = PretrainModel(params, "hybrid", 400, 0)
    opt = E.build_optimizer(model, params, fused=False)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == params.train.weight_decay and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert "balancer.lambda_logit" in no_decay_names
    assert all(n.endswith("bias") or "LayerNorm" in n or "norm" in n or
               n in ("balancer.lambda_logit", "predictor.mask_token")
               for n in no_decay_names)
    assert all(p.ndim == 2 for p in decay["params"])
    assert id(model.encoder.get_input_embeddings().weight) in {id(p) for p in decay["params"]}
    assert sum(len(g["params"]) for g in opt.param_groups) == sum(1 for p in model.parameters() if p.requires_grad)


def test_precision_choice():
    assert E.mixed_precision("fp32") == "no" and E.mixed_precision("bf16") == "bf16"
    expected = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    assert E.mixed_precision("auto") == expected


def test_run_paths_layouts(tmp_path):
    a = T.RunPaths.in_folder(tmp_path)
    assert (a.model_dir, a.checkpoint_dir, a.log_path) == (tmp_path / "model", tmp_path / "checkpoint",
                                                           tmp_path / "log.jsonl")
    b = T.RunPaths.for_run(tmp_path, "mlm", seed=3)
    assert b.model_dir == tmp_path / "models" / "mlm-s3" and b.checkpoint_dir == tmp_path / "checkpoints" / "mlm-s3"
    assert b.log_path == tmp_path / "logs" / "mlm-s3.jsonl" and b.data_dir == tmp_path / "data"
    assert T.RunPaths.for_run(tmp_path, "hybrid").model_dir == tmp_path / "models" / "hybrid"


def test_cli_rejects_bad_overrides(tmp_path, capsys):
    code = T.main(["--params", str(REPO / "parameters" / "smoke.yaml"), "--objective", "mlm", "--out", str(tmp_path),
                   "--set", "train.lr=-1"])
    assert code == 2 and "train.lr=-1" in capsys.readouterr().err


# ---------------------------------------------------------------- which checkpoint is resumed

def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_non_weight_keys_leave_the_trained_weights_unchanged(tmp_path):
    """NON_WEIGHT_KEYS is a claim about the trainer: changing all of them at once (but compile and
    parallel_runs and static_shapes, which only change float rounding) gives the same weights, bit for bit."""
    from safetensors.torch import load_file

    data = tiny_data()
    base = T.train(tiny_params(train__steps=12), "hybrid", tmp_path / "a", data=data)
    with pytest.warns(RuntimeWarning, match="collapse"):  # collapse_std=0.99 makes the warning fire
        other = T.train(tiny_params(train__steps=12, train__log_every=5, train__eval_every=3, train__eval_batches=1,
                                    train__checkpoint_every=4, train__collapse_std=0.99, train__num_workers=1,
                                    train__report_to=["jsonl", "tensorboard"], train__snapshots=3),
                        "hybrid", tmp_path / "b", data=data)
    # parallel_runs is read by the workbook, not by train(), and only changes thread counts (float rounding)
    changed = {k for k in R.NON_WEIGHT_KEYS if k not in ("train.compile", "train.parallel_runs", "train.static_shapes")}
    assert {f"train.{k}" for k, v in other["params"]["train"].items() if v != base["params"]["train"][k]} == changed
    a, b = (load_file(tmp_path / run / "checkpoint" / ckpt.WEIGHTS) for run in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # same machine, same seed: the same path, so the same early-step fingerprint (and the run says what it ran on)
    fa, fb = (run["numerics"]["weights_fingerprint"] for run in (base, other))
    assert fa == fb and fa["step"] == N.FINGERPRINT_STEP and len(fa["sha256"]) == N.FINGERPRINT_CHARS
    assert base["numerics"]["torch"] == torch.__version__ and base["numerics"]["torch_threads"] >= 1
    assert base["numerics"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert set(R.run_identity(tiny_params(), "mlm", 0)["weight_keys"]).isdisjoint(R.NON_WEIGHT_KEYS)
    assert "train.lr" in R.run_identity(tiny_params(), "mlm", 0)["weight_keys"]


def test_cli_resume_keeps_or_moves_aside_never_deletes(tmp_path, capsys):
    out = tmp_path / "run"
    def run(*sets):
        return T.main(cli_args("--objective", "mlm", "--out", str(out), "--resume", "--set=train.steps=4",
                               *[f"--set={s}" for s in sets]))
    assert run() == 0
    first = _files(out / "checkpoint")
    # a key that does not change the weights: the checkpoint is resumed, nothing moves
    assert run("train.log_every=2", "train.checkpoint_every=3") == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["resumed_from_step"] == 4 and summary["params"]["train"]["log_every"] == 2
    assert "resumed mlm" in capsys.readouterr().out and not list(tmp_path.glob("run/checkpoint.stale-*"))
    # a key that does: the old checkpoint (with its log) is moved aside, named in the message, intact
    assert run("model.hidden=16") == 0
    message = capsys.readouterr().out
    (stale,) = out.glob("checkpoint.stale-*")
    assert "model.hidden: 32 -> 16" in message and str(stale) in message and "nothing was deleted" in message
    kept = _files(stale)
    assert {k: v for k, v in kept.items() if k not in ("log.jsonl", "train_summary.json")
            and not k.startswith("snapshots/")} == first
    assert {"snapshots/step-0/snapshot.json", "snapshots/step-4/snapshot.json"} <= set(kept)  # its snapshots too
    assert [r["step"] for r in read_log(stale / "log.jsonl")[0]] == [1, 2, 3, 4]
    assert json.loads(kept["train_summary.json"])["params"]["model"]["hidden"] == 32
    new = json.loads((out / "train_summary.json").read_text())
    assert new["resumed_from_step"] is None and new["params"]["model"]["hidden"] == 16
    # back to the first parameters: the 16-wide checkpoint goes aside too, next to (not over) the first
    assert run() == 0
    stales = sorted(out.glob("checkpoint.stale-*"))
    assert len(stales) == 2 and stale in stales and _files(stale) == kept
    assert all(ckpt.load_checkpoint(s)["step"] == 4 for s in stales)


def test_resume_reads_the_checkpoint_state_once(runs, tmp_path, monkeypatch):
    """claim_checkpoint reads state.pt to compare run identities; the resume uses that same read."""
    root, _ = runs
    shutil.copytree(root / "mlm", tmp_path / "mlm")
    reads, real_load = [], torch.load

    def counting_load(f, *args, **kwargs):
        reads.append(Path(str(getattr(f, "name", f))).name)
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    again = T.train(tiny_params(), "mlm", tmp_path / "mlm", data=tiny_data(), resume=True)
    assert reads.count(ckpt.STATE) == 1 and again["resumed_from_step"] == 30


def test_legacy_checkpoint_identity_follows_the_old_rule():
    params = tiny_params()
    d = params.to_dict()  # the old rule hashed the JEPA section under its old name, objective
    old_hash = hash_dict({"data": d["data"], "model": d["model"], "mask": d["mask"], "objective": d["jepa"]})
    legacy = {"objective": "mlm", "seed": 0, "params": old_hash, "batch_size": params.train.batch_size}
    now = R.run_identity(params, "mlm", 0)
    assert R._changed_keys(legacy, now, params) == []
    other = tiny_params(model__hidden=16)
    (changed,) = R._changed_keys(legacy, R.run_identity(other, "mlm", 0), other)
    assert changed.startswith("params (data/model/mask/jepa")
    assert R._changed_keys(now, R.run_identity(params, "hybrid", 1), params) == ["objective: 'mlm' -> 'hybrid'",
                                                                                 "seed: 0 -> 1"]


def test_checkpoints_from_before_the_jepa_rename_keep_their_identity():
    params = tiny_params()
    now = R.run_identity(params, "hybrid", 0)
    assert any(k.startswith("jepa.") for k in now["weight_keys"])
    saved = {**now, "weight_keys": {k.replace("jepa.", "objective.", 1) if k.startswith("jepa.") else k: v
                                    for k, v in now["weight_keys"].items()}}
    assert R._changed_keys(saved, now, params) == []
    saved["weight_keys"]["objective.ema_end"] = 0.5
    assert R._changed_keys(saved, now, params) == [f"jepa.ema_end: 0.5 -> {params.jepa.ema_end!r}"]


def test_checkpoints_that_stored_a_key_now_known_not_to_change_weights_keep_their_identity():
    """A checkpoint written while train.report_to still counted as a weight key resumes today."""
    params = tiny_params()
    now = R.run_identity(params, "mlm", 0)
    saved = {**now, "weight_keys": {**now["weight_keys"], "train.report_to": ["jsonl", "tensorboard"]}}
    assert "train.report_to" in R.NON_WEIGHT_KEYS
    assert R._changed_keys(saved, now, params) == []
    saved["weight_keys"]["train.lr"] = 0.5
    assert R._changed_keys(saved, now, params) == [f"train.lr: 0.5 -> {params.train.lr!r}"]


def test_the_data_step_writes_what_training_reads(tmp_path):
    from jepa_core.data.blocks import load_prepared_data, prepare_data
    prepared = prepare_data(tiny_params().data, tmp_path / "data", 0)
    back = load_prepared_data(tmp_path / "data")
    for split in ("train", "validation"):
        assert len(prepared.blocks[split]) > 0
        np.testing.assert_array_equal(back.blocks[split], prepared.blocks[split])
    assert back.tokenizer.get_vocab() == prepared.tokenizer.get_vocab()
    assert back.source == f"{prepared.corpus.source}:{prepared.corpus.path}"
    assert prepare_data(tiny_params().data, tmp_path / "data", 0).source == back.source


def test_cpu_flags_are_read_from_cpuinfo_and_fingerprints_change_with_the_weights(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 fma avx512_bf16\n\n"
                    "processor\t: 1\nmodel name\t: other\nflags\t\t: amx_tile\n")
    cpu = N.cpu_info(info)
    assert cpu["model"] == "Test CPU 9000"
    assert cpu["flags"]["avx2"] and cpu["flags"]["avx512_bf16"] and not cpu["flags"]["amx_tile"]
    assert N.cpu_info(tmp_path / "absent")["flags"] is None
    model = torch.nn.Linear(3, 2)
    early = N.EarlyFingerprint(E._weights_digest, step=2)
    early.after_step(1, 5, model)
    assert early.record(None)["sha256"] is None
    early.after_step(2, 5, model)
    before = early.record(None)["sha256"]
    with torch.no_grad():
        model.weight[0, 0] += 1e-6  # one rounding step's worth
    assert N.EarlyFingerprint(E._weights_digest, step=2).digest(model)[:N.FINGERPRINT_CHARS] != before
    short = N.EarlyFingerprint(E._weights_digest)  # a 3-step run: the last step
    short.after_step(3, 3, model)
    assert short.record(None)["step"] == 3
