"""Encoder, sparse MLM head, predictor, EMA and the pre-training step on tiny configurations."""
import copy

import pytest
import torch
from transformers import AutoModel, BertForMaskedLM

from jepa_core.config import params_from_dict
from jepa_core.kernels import ATTENTION
from jepa_core.masking import PretrainCollator, TokenIds
from jepa_core.model import (Predictor, PretrainModel, build_encoder, ema_momentum, ema_update,
                             gather_positions)

VOCAB, L = 300, 32
IDS = TokenIds(vocab_size=VOCAB, pad_id=0, mask_id=4, special_ids=(0, 1, 2, 3, 4))
TINY = {"data": {"seq_len": L},
        "model": {"layers": 2, "hidden": 32, "heads": 2, "ffn": 64, "max_position": 64, "dropout": 0.0,
                  "predictor_layers": 1, "predictor_hidden": 16, "predictor_heads": 2},
        "mask": {"min_keep": 4}, "eval": {"max_length": 32}}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, and lose a lot on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_params(**overrides):
    return params_from_dict(TINY, overrides)


def make_batch(params, objective="hybrid", n=8, seed=0, padded=True, shared_pass=False):
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        ids = torch.randint(5, VOCAB, (L,), generator=g)
        ids[0] = 2
        item = {"input_ids": ids, "index": i}
        if padded and i % 3 == 1:  # some padded rows: real length 24
            ids[24:] = 0
            item["attention_mask"] = (torch.arange(L) < 24).long()
        items.append(item)
    return PretrainCollator(IDS, params.mask, seed=0, objective=objective, shared_pass=shared_pass)(items)


def new_model(params, objective="hybrid", seed=0):
    torch.manual_seed(seed)
    return PretrainModel(params, objective, VOCAB, IDS.pad_id)


# ---------------------------------------------------------------- encoder and head

def test_build_encoder_config_and_attention_mask():
    p = tiny_params()
    enc = build_encoder(p.model, VOCAB, 0).eval()
    c = enc.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size) == (2, 32, 2, 64)
    assert (c.max_position_embeddings, c.type_vocab_size, c.pad_token_id, c._attn_implementation) == (64, 2, 0, ATTENTION)
    assert enc.pooler is None
    assert not any(type(m) is torch.nn.Dropout for m in enc.modules())  # all swapped for FastDropout
    ids = torch.randint(5, VOCAB, (2, 16))
    mask = torch.ones_like(ids)
    mask[:, 10:] = 0
    other = ids.clone()
    other[:, 10:] = 7  # change only padded tokens
    a = enc(input_ids=ids, attention_mask=mask).last_hidden_state
    b = enc(input_ids=other, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(a[:, :10], b[:, :10], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, :10], enc(input_ids=ids).last_hidden_state[:, :10], atol=1e-4)
    # training mode with dropout runs kernels.py's attention: padding is still hidden, masks follow the seed
    enc = build_encoder(tiny_params(**{"model.dropout": 0.1}).model, VOCAB, 0).train()
    outs = []
    for x in (ids, other, ids):
        torch.manual_seed(0)
        outs.append(enc(input_ids=x, attention_mask=mask).last_hidden_state)
    torch.testing.assert_close(outs[0][:, :10], outs[1][:, :10], atol=1e-6, rtol=0)
    assert not torch.allclose(outs[0], enc.eval()(input_ids=ids, attention_mask=mask).last_hidden_state, atol=1e-3)


def test_sparse_mlm_head_matches_hf_bert_for_masked_lm():
    p = tiny_params()
    model = new_model(p, "mlm").eval()
    torch.manual_seed(1)
    hf = BertForMaskedLM(model.encoder.config).eval()
    with torch.no_grad():
        hf.cls.predictions.bias.normal_()  # non-zero bias so the test can see it
    model.encoder.load_state_dict(hf.bert.state_dict())
    model.mlm_head.load_from_hf(hf)
    batch = make_batch(p, "mlm")
    ours, _ = model.mlm_forward(batch)
    theirs = hf(input_ids=batch["mlm_input_ids"], attention_mask=batch["attention_mask"], labels=batch["mlm_labels"]).loss
    assert abs(ours.item() - theirs.item()) < 1e-5
    # the decoder is tied: one embedding matrix, counted once, no duplicate state_dict entry
    assert model.mlm_head._tied[0].weight is model.encoder.embeddings.word_embeddings.weight
    assert not any("mlm_head" in k and "word_embeddings" in k for k in model.state_dict())
    assert sum(q.numel() for q in model.parameters()) == sum(q.numel() for q in model.encoder.parameters()) + \
        sum(q.numel() for q in model.mlm_head.parameters())


def test_context_forward_equals_full_pass_with_hiding_mask():
    p = tiny_params()
    model = new_model(p).eval()
    batch = make_batch(p)
    ctx = model.context_forward(batch)
    hide = torch.zeros_like(batch["attention_mask"])
    hide.scatter_(1, batch["context_idx"], batch["context_valid"].long())
    hide[:, 0] = 1  # position 0 is always a context token (padded slots also point at 0)
    full = model.encoder(input_ids=batch["input_ids"], attention_mask=hide).last_hidden_state
    expected = gather_positions(full, batch["context_idx"])
    v = batch["context_valid"]
    torch.testing.assert_close(ctx[v], expected[v], atol=1e-5, rtol=1e-5)


def test_predictor_shapes_and_padding_invariance():
    torch.manual_seed(0)
    pred = Predictor(32, 16, depth=1, heads=2, max_position=64).eval()
    ctx = torch.randn(2, 6, 32)
    c_idx = torch.tensor([[0, 1, 2, 3, 0, 0], [0, 5, 6, 7, 8, 9]])
    c_val = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    t_idx = torch.tensor([[4, 5, 0], [1, 2, 3]])
    t_val = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    out = pred(ctx, c_idx, c_val, t_idx, t_val)
    assert out.shape == (2, 3, 32)
    ctx2 = ctx.clone()
    ctx2[0, 4:] = 1e3  # padded context slots
    t_idx2 = t_idx.clone()
    t_idx2[0, 2] = 40  # padded target slot at another position
    out2 = pred(ctx2, c_idx, c_val, t_idx2, t_val)
    torch.testing.assert_close(out2[t_val], out[t_val], atol=1e-5, rtol=1e-5)
    # a target's prediction depends on its position
    t_idx3 = t_idx.clone()
    t_idx3[0, 0] = 20
    assert not torch.allclose(pred(ctx, c_idx, c_val, t_idx3, t_val)[0, 0], out[0, 0])


# ---------------------------------------------------------------- EMA

def test_ema_momentum_schedule():
    assert ema_momentum(0, 100, 0.996, 1.0) == 0.996
    assert ema_momentum(100, 100, 0.996, 1.0) == 1.0
    assert ema_momentum(250, 100, 0.996, 1.0) == 1.0
    assert ema_momentum(25, 100, 0.996, 1.0) == pytest.approx(0.997)
    values = [ema_momentum(s, 10, 0.9, 1.0) for s in range(11)]
    diffs = [b - a for a, b in zip(values, values[1:])]
    assert diffs == pytest.approx([0.01] * 10)


def test_ema_update_rule_is_exact():
    torch.manual_seed(0)
    online = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    target = copy.deepcopy(online)
    with torch.no_grad():
        for q in online.parameters():
            q.add_(torch.randn_like(q))
    before = [q.clone() for q in target.parameters()]
    m = 0.9
    ema_update(target, online, m)
    after = [t.clone() for t in target.parameters()]
    for t, t0, s in zip(after, before, online.parameters()):
        assert torch.equal(t, torch.lerp(t0, s, 1 - m))  # bit-exact against the same float ops
        torch.testing.assert_close(t, m * t0 + (1 - m) * s, atol=1e-6, rtol=0)
        assert not torch.equal(t, t0)
    ema_update(target, online, 1.0)  # momentum 1 freezes the target
    for t, t1 in zip(target.parameters(), after):
        assert torch.equal(t, t1)


def test_update_target_moves_only_the_target():
    p = tiny_params()
    model = new_model(p)
    with torch.no_grad():
        for q in model.encoder.parameters():
            q.add_(0.1)
    student = [q.clone() for q in model.encoder.parameters()]
    old = [q.clone() for q in model.target_encoder.parameters()]
    model.update_target(0.5)
    for t, t0, s in zip(model.target_encoder.parameters(), old, model.encoder.parameters()):
        torch.testing.assert_close(t, 0.5 * t0 + 0.5 * s)
    for s, s0 in zip(model.encoder.parameters(), student):
        assert torch.equal(s, s0)


# ---------------------------------------------------------------- the step

def test_target_encoder_frozen_and_always_eval():
    p = tiny_params(**{"model.dropout": 0.1})
    model = new_model(p).train()
    assert model.encoder.training and model.predictor.training
    assert not model.target_encoder.training
    assert all(not q.requires_grad for q in model.target_encoder.parameters())
    batch = make_batch(p)
    out = model(batch)
    out["loss"].backward()
    assert all(q.grad is None for q in model.target_encoder.parameters())
    assert model.balancer.lambda_logit.grad is not None
    missing = [n for n, q in model.named_parameters() if q.requires_grad and q.grad is None]
    assert missing == []  # every trainable parameter is used (DDP needs no find_unused_parameters)
    # targets are deterministic (no dropout) even in train mode
    torch.testing.assert_close(model.target_forward(batch), model.target_forward(batch), atol=0, rtol=0)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_target_forward_is_layernormed_top_layers(precision):
    p = tiny_params(**{"objective.target_layers": 2, "objective.target_precision": precision})
    model = new_model(p).eval()
    batch = make_batch(p)
    targets = model.target_forward(batch)
    assert not targets.requires_grad and targets.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        hs = model.target_encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                  output_hidden_states=True).hidden_states
    h = (hs[-1].float() + hs[-2].float()) / 2
    h = (h - h.mean(-1, keepdim=True)) / torch.sqrt(h.var(-1, unbiased=False, keepdim=True) + 1e-5)
    torch.testing.assert_close(targets, gather_positions(h, batch["target_idx"]), atol=1e-5, rtol=1e-5)
    if precision == "bf16":  # bf16 matmuls: close to the fp32 targets, not equal
        fp32 = new_model(tiny_params(**{"objective.target_layers": 2, "objective.target_precision": "fp32"})).eval()
        diff = (fp32.target_forward(batch) - targets).abs()
        assert 0 < diff.max() < 0.1


def test_target_precision_auto_follows_the_hardware(monkeypatch):
    model = new_model(tiny_params())
    assert model.target_precision == "auto"
    for native in (True, False):
        monkeypatch.setattr("jepa_core.model.native_bf16", lambda device_type, native=native: native)
        assert model.target_bf16("cpu") is native
    model.target_precision = "fp32"
    monkeypatch.setattr("jepa_core.model.native_bf16", lambda device_type: True)
    assert model.target_bf16("cpu") is False


@pytest.mark.parametrize("objective,shared_pass", [("hybrid", False), ("hybrid", True), ("mlm", False)])
def test_forward_outputs(objective, shared_pass):
    p = tiny_params(**{"objective.shared_pass": shared_pass})
    model = new_model(p, objective)
    batch = make_batch(p, objective, shared_pass=shared_pass)
    out = model(batch)
    keys = {"loss", "mlm_loss", "context_embedding"}
    if objective == "hybrid":
        keys |= {"jepa_loss", "lambda", "target_std"}
        assert out["lambda"].item() == 0.5
        assert out["loss"].item() == pytest.approx(0.5 * (out["mlm_loss"] + out["jepa_loss"]).item(), rel=1e-5)
        assert 0 < out["target_std"].item() < 2
    else:
        assert not hasattr(model, "target_encoder") and not hasattr(model, "predictor")
    assert set(out) == keys
    assert out["loss"].requires_grad and not out["mlm_loss"].requires_grad
    assert out["context_embedding"].shape == (8, 32) and not out["context_embedding"].requires_grad
    assert 3 < out["mlm_loss"].item() < 9  # ~ln(300) = 5.7 at init


def test_shared_pass_uses_one_student_pass():
    p = tiny_params(**{"objective.shared_pass": True})
    model = new_model(p)
    calls = []
    model.encoder.register_forward_hook(lambda m, a, kw, out: calls.append(1), with_kwargs=True)
    model(make_batch(p, shared_pass=True))
    assert len(calls) == 1
    calls.clear()
    model.shared_pass = False
    model(make_batch(p))
    assert len(calls) == 2


@pytest.mark.parametrize("objective,shared_pass", [("hybrid", False), ("hybrid", True), ("mlm", False)])
def test_a_few_steps_lower_both_losses(objective, shared_pass):
    p = tiny_params(**{"objective.shared_pass": shared_pass})
    model = new_model(p, objective).train()
    batch = make_batch(p, objective, shared_pass=shared_pass)
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=3e-3)
    first = model(batch)
    for _ in range(15):
        out = model(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        model.update_target(0.996)
    last = model(batch)
    assert last["mlm_loss"] < first["mlm_loss"] - 0.3
    if objective == "hybrid":
        assert last["jepa_loss"] < first["jepa_loss"] * 0.9


def test_export_round_trip(tmp_path):
    p = tiny_params()
    model = new_model(p).eval()
    model.encoder_for_export().save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    ids = torch.randint(5, VOCAB, (2, 16))
    torch.testing.assert_close(loaded(input_ids=ids).last_hidden_state, model.encoder(input_ids=ids).last_hidden_state)
