"""Encoder, sparse MLM head, predictor, EMA and the pre-training step on tiny configurations."""
import copy

import pytest
import torch
from _train_helpers import one_thread
from transformers import AutoModel, BertForMaskedLM, ModernBertForMaskedLM

from jepa_core.analysis.encode import takes_token_type_ids
from jepa_core.config import ParamsError, params_from_dict
from jepa_core.model import (
    ROPE_THETA,
    Predictor,
    PretrainModel,
    build_encoder,
    ema_momentum,
    ema_update,
    gather_positions,
)
from jepa_core.model.kernels import ATTENTION
from jepa_core.model.masking import PretrainCollator, TokenIds

VOCAB, L = 300, 32
IDS = TokenIds(vocab_size=VOCAB, pad_id=0, mask_id=4, special_ids=(0, 1, 2, 3, 4))
TINY = {"data": {"seq_len": L},
        "model": {"layers": 2, "hidden": 32, "heads": 2, "ffn": 64, "max_position": 64, "dropout": 0.0,
                  "predictor_layers": 1, "predictor_hidden": 16, "predictor_heads": 2},
        "mask": {"min_keep": 4}, "eval": {"max_length": 32}}
ARCHITECTURES = ["bert", "modernbert"]
FOR_MASKED_LM = {"bert": BertForMaskedLM, "modernbert": ModernBertForMaskedLM}


single_thread = pytest.fixture(autouse=True)(one_thread)


def tiny_params(architecture="bert", **overrides):
    return params_from_dict(TINY, {"model.architecture": architecture, **overrides})


def sharpen_attention(encoder, factor=8.0):
    """Scale the query/key projections up: at init attention is nearly uniform, so positions barely
    move the outputs; sharp attention makes a test that depends on positions able to fail."""
    with torch.no_grad():
        for name, q in encoder.named_parameters():
            if any(k in name for k in (".query.", ".key.", ".Wqkv.")):
                q.mul_(factor)
    return encoder


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
    p = tiny_params("bert")
    enc = build_encoder(p.model, VOCAB, 0).eval()
    c = enc.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size) == (2, 32, 2, 64)
    assert (c.max_position_embeddings, c.type_vocab_size, c.pad_token_id, c._attn_implementation) == (
        64, 2, 0, ATTENTION)
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
    assert takes_token_type_ids(enc)


def test_build_modernbert_config_dropout_and_attention_mask():
    enc = build_encoder(tiny_params("modernbert").model, VOCAB, 0).eval()
    c = enc.config
    assert (c.model_type, c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size) == \
        ("modernbert", 2, 32, 2, 64)
    assert enc.layers[0].mlp.Wi.out_features == 2 * 64  # GLU: input and gate halves
    assert c.layer_types == ["full_attention"] * 2  # no sliding windows
    assert c.rope_parameters["full_attention"]["rope_theta"] == ROPE_THETA
    assert (c.max_position_embeddings, c.pad_token_id, c._attn_implementation) == (64, 0, ATTENTION)
    assert enc.embeddings.tok_embeddings.padding_idx == 0
    assert not takes_token_type_ids(enc)  # no segment embeddings: encode.py must not pass segment ids
    ids = torch.randint(5, VOCAB, (2, 16))
    mask = torch.ones_like(ids)
    mask[:, 10:] = 0
    other = ids.clone()
    other[:, 10:] = 7
    a = enc(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(a[:, :10], enc(input_ids=other, attention_mask=mask).last_hidden_state[:, :10],
                               atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, :10], enc(input_ids=ids).last_hidden_state[:, :10], atol=1e-4)
    # dropout (stock nn.Dropout and SDPA dropout): active in train mode, seeded, off in eval
    enc = build_encoder(tiny_params("modernbert", **{"model.dropout": 0.1}).model, VOCAB, 0)
    assert (c := enc.config).embedding_dropout == c.attention_dropout == c.mlp_dropout == 0.1
    enc.train()
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        outs.append(enc(input_ids=ids, attention_mask=mask).last_hidden_state)
    torch.testing.assert_close(outs[0], outs[1], atol=0, rtol=0)
    assert not torch.allclose(outs[0], enc.eval()(input_ids=ids, attention_mask=mask).last_hidden_state, atol=1e-3)


def test_fp32_hybrid_step_through_our_attention_is_bit_identical_to_stock_sdpa():
    """The encoder and predictor run kernels.py's ATTENTION (SDPA, math kernel for bf16 training on CPU); in fp32
    a hybrid step is bit for bit the stock SDPA one, so fp32 runs reproduce runs made before it was routed."""
    p = tiny_params("modernbert")
    torch.manual_seed(0)
    ours = new_model(p).train()
    stock = copy.deepcopy(ours)
    for enc in (stock.encoder, stock.target_encoder):
        enc.set_attn_implementation("sdpa")
    stock.predictor.config._attn_implementation = "sdpa"
    assert ours.encoder.config._attn_implementation == ours.predictor.config._attn_implementation == ATTENTION
    batch = make_batch(p)
    outs = []
    for model in (ours, stock):
        out = model(batch)
        out["loss"].backward()
        outs.append([out["loss"].detach(), *(q.grad for q in model.parameters() if q.requires_grad)])
    assert len(outs[0]) > 10 and all(torch.equal(a, b) for a, b in zip(*outs))


def test_modernbert_is_translation_invariant_in_position_ids():
    """Rotary positions: only offsets between positions matter, so shifting every position id by a
    constant changes nothing, while stretching them does (position_ids are read, not ignored)."""
    enc = sharpen_attention(build_encoder(tiny_params("modernbert").model, VOCAB, 0).eval())
    ids = torch.randint(5, VOCAB, (2, 16))
    pos = torch.arange(16).expand(2, 16)
    h = enc(input_ids=ids, position_ids=pos).last_hidden_state
    torch.testing.assert_close(enc(input_ids=ids, position_ids=pos + 17).last_hidden_state, h, atol=1e-5, rtol=1e-5)
    assert (enc(input_ids=ids, position_ids=2 * pos).last_hidden_state - h).abs().max() > 1e-2


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_sparse_mlm_head_matches_hf_for_masked_lm(architecture):
    """Our encoder + sparse head give the stock *ForMaskedLM's loss, and its logits at masked positions."""
    p = tiny_params(architecture)
    model = new_model(p, "mlm").eval()
    torch.manual_seed(1)
    hf = FOR_MASKED_LM[architecture](model.encoder.config).eval()
    with torch.no_grad():
        hf.get_output_embeddings().bias.normal_()  # non-zero bias so the test can see it
        for name, q in hf.named_parameters():
            if "norm" in name or "LayerNorm" in name:  # non-trivial norms: the test sees where they are
                q.normal_(1.0 if name.endswith("weight") else 0.0, 0.2)
    model.encoder.load_state_dict(hf.base_model.state_dict())
    model.mlm_head.load_from_hf(hf)
    batch = make_batch(p, "mlm")
    ours, hidden = model.mlm_forward(batch)
    out = hf(input_ids=batch["mlm_input_ids"], attention_mask=batch["attention_mask"], labels=batch["mlm_labels"])
    assert abs(ours.item() - out.loss.item()) < 1e-5
    masked = batch["mlm_labels"] != -100
    torch.testing.assert_close(model.mlm_head(hidden[masked]), out.logits[masked], atol=1e-4, rtol=1e-4)
    # the decoder is tied: one embedding matrix, counted once, no duplicate state_dict entry
    embedding = model.encoder.get_input_embeddings()
    assert model.mlm_head._tied[0].weight is embedding.weight
    assert hf.get_output_embeddings().weight is hf.get_input_embeddings().weight  # the stock model ties too
    assert not any(k.startswith("mlm_head") and q.shape == embedding.weight.shape
                   for k, q in model.state_dict().items())
    assert sum(q.numel() for q in model.parameters()) == sum(q.numel() for q in model.encoder.parameters()) + \
        sum(q.numel() for q in model.mlm_head.parameters())


def test_modernbert_head_has_the_stock_init():
    """ModernBertForMaskedLM's init: the head's dense is truncated normal with std 0.02/sqrt(2·layers)."""
    model = new_model(tiny_params("modernbert", **{"model.layers": 8, "model.hidden": 256, "model.heads": 4}), "mlm")
    w = model.mlm_head.transform.dense.weight
    std = 0.02 / (2 * 8) ** 0.5
    assert w.abs().max() <= 2 * std + 1e-7  # cut at 2 std
    assert 0.7 * std < w.std() < std  # a normal cut at ±2σ keeps 88% of its std
    assert model.mlm_head.transform.dense.bias is None and torch.equal(model.mlm_head.bias, torch.zeros(VOCAB))


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_context_forward_equals_full_pass_with_hiding_mask(architecture):
    """Token dropping at the original positions = the full sequence with the dropped tokens hidden from
    attention. Context positions have gaps (targets are cut out), so the check fails if the encoder
    ignored position_ids and numbered the context tokens 0..K-1, which the last assertion confirms."""
    p = tiny_params(architecture)
    model = new_model(p).eval()
    sharpen_attention(model.encoder)
    batch = make_batch(p)
    ctx = model.context_forward(batch)
    hide = torch.zeros_like(batch["attention_mask"])
    hide.scatter_(1, batch["context_idx"], batch["context_valid"].long())
    hide[:, 0] = 1  # position 0 is always a context token (padded slots also point at 0)
    full = model.encoder(input_ids=batch["input_ids"], attention_mask=hide).last_hidden_state
    expected = gather_positions(full, batch["context_idx"])
    v = batch["context_valid"]
    torch.testing.assert_close(ctx[v], expected[v], atol=1e-5, rtol=1e-5)
    renumbered = model.encoder(input_ids=gather_positions(batch["input_ids"], batch["context_idx"]),
                               attention_mask=v.long()).last_hidden_state
    assert (renumbered[v] - ctx[v]).abs().max() > 1e-2


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

@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_target_encoder_frozen_and_always_eval(architecture):
    p = tiny_params(architecture, **{"model.dropout": 0.1})
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


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_target_forward_is_layernormed_top_layers(precision, architecture):
    p = tiny_params(architecture, **{"jepa.target_layers": 2, "jepa.target_precision": precision})
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
        fp32 = new_model(tiny_params(architecture, **{"jepa.target_layers": 2,
                                                      "jepa.target_precision": "fp32"})).eval()
        diff = (fp32.target_forward(batch) - targets).abs()
        assert 0 < diff.max() < 0.1


def test_target_precision_auto_follows_the_hardware(monkeypatch):
    model = new_model(tiny_params())
    assert model.target_precision == "auto"
    for native in (True, False):
        monkeypatch.setattr("jepa_core.model.hybrid.native_bf16", lambda device_type, native=native: native)
        assert model.target_bf16("cpu") is native
    model.target_precision = "fp32"
    monkeypatch.setattr("jepa_core.model.hybrid.native_bf16", lambda device_type: True)
    assert model.target_bf16("cpu") is False


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("objective,shared_pass", [("hybrid", False), ("hybrid", True), ("mlm", False)])
def test_forward_outputs(objective, shared_pass, architecture):
    p = tiny_params(architecture, **{"jepa.shared_pass": shared_pass})
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
    p = tiny_params(**{"jepa.shared_pass": True})
    model = new_model(p)
    calls = []
    model.encoder.register_forward_hook(lambda m, a, kw, out: calls.append(1), with_kwargs=True)
    model(make_batch(p, shared_pass=True))
    assert len(calls) == 1
    calls.clear()
    model.shared_pass = False
    model(make_batch(p))
    assert len(calls) == 2


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("objective,shared_pass", [("hybrid", False), ("hybrid", True), ("mlm", False)])
def test_a_few_steps_lower_both_losses(objective, shared_pass, architecture):
    p = tiny_params(architecture, **{"jepa.shared_pass": shared_pass})
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


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_export_round_trip(tmp_path, architecture):
    p = tiny_params(architecture, **{"model.dropout": 0.1})
    model = new_model(p).eval()
    model.encoder_for_export().save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model.encoder) and loaded.config._attn_implementation == "sdpa"
    ids = torch.randint(5, VOCAB, (2, 16))
    torch.testing.assert_close(loaded(input_ids=ids).last_hidden_state, model.encoder(input_ids=ids).last_hidden_state)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_init_std_sets_the_scale_of_every_random_weight(architecture, tmp_path):
    """model.init_std reaches the encoder (and its exported config), the MLM head and the predictor."""
    def weight_std(module, kinds):
        ws = [p.detach().flatten() for n, p in module.named_parameters() if p.dim() == 2 and any(k in n for k in kinds)]
        return torch.cat(ws).std().item()

    stds = {}
    for init_std in (0.02, 0.08):
        model = new_model(tiny_params(architecture, **{"model.init_std": init_std}))
        stds[init_std] = {
            "attention": weight_std(model.encoder, (".query.", ".key.", ".Wqkv.")),
            "head": weight_std(model.mlm_head, ("transform",)),
            "predictor": weight_std(model.predictor, ("in_proj", "blocks")),
        }
        model.encoder.save_pretrained(tmp_path / str(init_std))
        assert AutoModel.from_pretrained(tmp_path / str(init_std)).config.initializer_range == init_std
    # ModernBERT's normal truncated at 2 std (initializer_cutoff_factor) has 0.88 x its nominal std
    shrink = 0.88 if architecture == "modernbert" else 1.0
    assert stds[0.08]["attention"] == pytest.approx(0.08 * shrink, rel=0.05)
    for part in ("attention", "head", "predictor"):
        assert stds[0.08][part] / stds[0.02][part] == pytest.approx(4.0, rel=0.1), part


def test_init_std_must_be_positive():
    with pytest.raises(ParamsError, match="model.init_std"):
        tiny_params(**{"model.init_std": 0.0})
