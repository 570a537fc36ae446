"""kernels.py against the stock ops it replaces: dropout statistics, attention math, fused decoder + CE."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from jepa_core.model.kernels import (
    DROPOUT_RESOLUTION,
    FastDropout,
    _uniform16,
    dropout_attention,
    fast_dropout,
    linear_cross_entropy,
    use_fast_dropout,
)

# ---------------------------------------------------------------- dropout

def test_uniform16_has_all_sixteen_bits_random_in_every_lane():
    torch.manual_seed(0)
    u = _uniform16(4 * 200_000).view(-1, 4)  # the four 16-bit lanes of each 64-bit draw
    for lane in range(4):  # a generator that leaves the sign bit of a word at 0 would fail lane 3
        x = u[:, lane].long()
        assert abs((x < 0).float().mean().item() - 0.5) < 0.01
        assert abs(x.float().mean().item()) < 300  # uniform on [-32768, 32767]: mean -0.5, sd 18919/sqrt(n)
        assert x.min().item() < -32000 and x.max().item() > 32000


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_fast_dropout_drops_at_rate_p_and_rescales_the_rest(p):
    torch.manual_seed(1)
    x = torch.rand(1_000_000) + 1.0  # never 0, so a zero in the output is a drop
    y = fast_dropout(x, p)
    dropped = (y == 0).float().mean().item()
    p_eff = round(p * DROPOUT_RESOLUTION) / DROPOUT_RESOLUTION
    assert abs(p_eff - p) < 1 / DROPOUT_RESOLUTION
    assert abs(dropped - p) < 5 * math.sqrt(p * (1 - p) / len(x))
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / (1 - p_eff))
    assert abs(y.mean().item() / x.mean().item() - 1) < 0.01  # unbiased in expectation


def test_fast_dropout_is_identity_when_off_and_rejects_bad_p():
    x = torch.randn(10)
    assert fast_dropout(x, 0.1, training=False) is x
    assert fast_dropout(x, 0.0) is x
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="dropout probability"):
            fast_dropout(x, bad)


def test_fast_dropout_masks_follow_the_seed_and_the_gradient_uses_the_same_mask():
    x = torch.randn(64, 32, requires_grad=True)
    torch.manual_seed(5)
    a = fast_dropout(x, 0.3)
    torch.manual_seed(5)
    b = fast_dropout(x, 0.3)
    torch.manual_seed(6)
    c = fast_dropout(x, 0.3)
    assert torch.equal(a, b) and not torch.equal(a, c)
    a.sum().backward()
    scale = DROPOUT_RESOLUTION / (DROPOUT_RESOLUTION - round(0.3 * DROPOUT_RESOLUTION))
    torch.testing.assert_close(x.grad, (a != 0).float() * scale)


def test_use_fast_dropout_swaps_every_dropout_and_keeps_p():
    net = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.2), nn.Sequential(nn.Dropout(0.3), nn.ReLU()))
    use_fast_dropout(net)
    drops = [m for m in net.modules() if isinstance(m, nn.Dropout)]
    assert [type(m) for m in drops] == [FastDropout, FastDropout] and [m.p for m in drops] == [0.2, 0.3]
    net.eval()
    x = torch.randn(3, 4)
    torch.testing.assert_close(net(x), torch.relu(net[0](x)))


def test_compiled_bert_encoder_with_dropout_trains_and_draws_the_eager_masks():
    """torch.compile of a training BERT encoder with dropout used to crash ("setStorage ... out of
    bounds") once fast_dropout met a second size (hidden states 2·6·16, attention weights 2·2·6·6: the
    sizes must differ, which is why L=6). aot_eager runs dynamo and AOTAutograd, where it crashed,
    without inductor's minute of C++ compilation. Same seed, same masks as eager: equal outputs and
    gradients up to float rounding."""
    from jepa_core.config import ModelConfig
    from jepa_core.model import build_encoder

    cfg = ModelConfig(architecture="bert", layers=1, hidden=16, heads=2, ffn=32, max_position=16, dropout=0.1)
    torch.manual_seed(0)
    eager = build_encoder(cfg, vocab_size=50, pad_token_id=0).train()
    compiled = build_encoder(cfg, vocab_size=50, pad_token_id=0).train()
    compiled.load_state_dict(eager.state_dict())
    ids = torch.randint(1, 50, (2, 6))
    outputs, grads = [], []
    for encoder in (eager, torch.compile(compiled, backend="aot_eager")):
        torch.manual_seed(1)
        out = encoder(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
        out.square().sum().backward()
        outputs.append(out)
        grads.append(encoder.get_parameter("embeddings.word_embeddings.weight").grad)
    # other masks would differ by O(1); the compiled graph's own float rounding reaches ~1e-5 in the gradient
    torch.testing.assert_close(outputs[1], outputs[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(grads[1], grads[0], atol=1e-4, rtol=1e-4)
    eval_out = eager.eval()(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    assert not torch.allclose(outputs[0], eval_out)  # dropout was on


# ---------------------------------------------------------------- attention

def _qkv(b=2, h=2, L=6, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, L, d, generator=g) for _ in range(3)]


class _Module(nn.Module):
    is_causal = False


@pytest.mark.parametrize("masked", [False, True])
def test_dropout_attention_math_path_matches_sdpa(masked):
    q, k, v = _qkv()
    mask = None
    if masked:  # sdpa_mask's convention: bool (B, 1, Lq, Lk), True = may attend; second sequence padded
        valid = torch.tensor([[1] * 6, [1] * 4 + [0] * 2], dtype=torch.bool)
        mask = valid[:, None, None, :].expand(2, 1, 6, 6)
    module = _Module().train()
    want, _ = sdpa_attention_forward(module, q, k, v, mask, dropout=0.0, scaling=0.3)
    # p so small that it rounds to 0 drops: the math path runs, the mask keeps everything
    got, _ = dropout_attention(module, q, k, v, mask, dropout=1e-9, scaling=0.3)
    assert got.shape == (2, 6, 2, 8)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def _sdpa(backend, q, k, v, mask):
    with sdpa_kernel(backend):
        return sdpa_attention_forward(_Module(), q, k, v, mask, dropout=0.0)[0]


@pytest.mark.parametrize("masked", [False, True])
def test_bf16_training_attention_on_cpu_takes_sdpas_math_kernel_and_the_rest_is_plain_sdpa(masked):
    """A bf16 pass with a graph: SDPA's math kernel (faster bf16 backward here; kernels.py). A bf16 pass without
    one (the EMA target) and every fp32 pass: SDPA's own choice, bit for bit (fp32 runs reproduce exactly)."""
    q, k, v = (t.repeat(8, 1, 8, 4) for t in _qkv())  # (16, 2, 48, 32): long enough for the flash kernel to block
    mask = None
    if masked:
        valid = torch.ones(16, 48, dtype=torch.bool)
        valid[1, 40:] = False
        mask = valid[:, None, None, :].expand(16, 1, 48, 48)
    qb, kb, vb = (t.bfloat16().requires_grad_() for t in (q, k, v))
    module = _Module().eval()
    math = _sdpa(SDPBackend.MATH, qb, kb, vb, mask)
    assert not torch.equal(math, _sdpa(SDPBackend.FLASH_ATTENTION, qb, kb, vb, mask))  # the test can tell them apart
    assert torch.equal(dropout_attention(module, qb, kb, vb, mask)[0], math)
    detached = [t.detach() for t in (qb, kb, vb)]
    stock = sdpa_attention_forward(module, *detached, mask, dropout=0.0)[0]
    assert not torch.equal(stock, math)
    assert torch.equal(dropout_attention(module, *detached, mask)[0], stock)
    with torch.no_grad():
        assert torch.equal(dropout_attention(module, qb, kb, vb, mask)[0], stock)
    want = sdpa_attention_forward(module, q.requires_grad_(), k, v, mask, dropout=0.0)[0]
    assert torch.equal(dropout_attention(module, q, k, v, mask)[0], want)


def test_dropout_attention_drops_attention_weights_reproducibly():
    q, k, v = _qkv()
    module = _Module().train()
    clean, _ = dropout_attention(module, q, k, v, None, dropout=0.0)
    torch.manual_seed(3)
    a, _ = dropout_attention(module, q, k, v, None, dropout=0.5)
    torch.manual_seed(3)
    b, _ = dropout_attention(module, q, k, v, None, dropout=0.5)
    assert torch.equal(a, b) and not torch.allclose(a, clean, atol=1e-3)


# ---------------------------------------------------------------- decoder + cross-entropy

def _head_inputs(n=10, hdim=8, vocab=50, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    h = (torch.randn(n, hdim, generator=g) * scale).requires_grad_()
    w = torch.randn(vocab, hdim, generator=g).requires_grad_()
    b = torch.randn(vocab, generator=g).requires_grad_()
    y = torch.randint(0, vocab, (n,), generator=g)
    return h, w, b, y


def _grads(loss_fn, h, w, b, y, upstream=1.0):
    h, w, b = (t.detach().clone().requires_grad_() for t in (h, w, b))
    loss = loss_fn(h, w, b, y)
    (loss * upstream).backward()
    return loss.detach(), h.grad, w.grad, b.grad


@pytest.mark.parametrize("chunk_rows", [1, 3, 10, 64])
@pytest.mark.parametrize("scale", [1.0, 200.0])  # 200: logits in the thousands (exp would overflow unshifted)
def test_linear_cross_entropy_matches_linear_then_cross_entropy(chunk_rows, scale):
    h, w, b, y = _head_inputs(scale=scale)
    stock = _grads(lambda h, w, b, y: F.cross_entropy(F.linear(h, w, b), y), h, w, b, y, upstream=0.7)
    fused = _grads(lambda h, w, b, y: linear_cross_entropy(h, w, b, y, chunk_rows), h, w, b, y, upstream=0.7)
    assert torch.isfinite(fused[0])
    for s, f in zip(stock, fused):
        torch.testing.assert_close(f, s, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("chunk_rows", [1, 4, 64])
def test_linear_cross_entropy_ignores_rows_labelled_minus_100(chunk_rows):
    """Static-shape padding: ignored rows change neither the mean nor any gradient, as in F.cross_entropy."""
    h, w, b, y = _head_inputs()
    y = y.clone()
    y[[2, 3, 7]] = -100
    stock = _grads(lambda h, w, b, y: F.cross_entropy(F.linear(h, w, b), y), h, w, b, y, upstream=0.7)
    fused = _grads(lambda h, w, b, y: linear_cross_entropy(h, w, b, y, chunk_rows), h, w, b, y, upstream=0.7)
    kept = _grads(lambda h, w, b, y: linear_cross_entropy(h, w, b, y, chunk_rows), h[y != -100], w, b, y[y != -100],
                  upstream=0.7)
    for s, f in zip(stock, fused):
        torch.testing.assert_close(f, s, atol=1e-5, rtol=1e-5)
    assert torch.count_nonzero(fused[1][[2, 3, 7]]) == 0
    torch.testing.assert_close(fused[0], kept[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(fused[2], kept[2], atol=1e-6, rtol=1e-6)


def test_linear_cross_entropy_without_grad_and_with_no_rows():
    h, w, b, y = _head_inputs()
    with torch.no_grad():
        loss = linear_cross_entropy(h, w, b, y)
    assert not loss.requires_grad
    assert loss.item() == pytest.approx(F.cross_entropy(F.linear(h, w, b), y).item(), rel=1e-6)
    empty = linear_cross_entropy(h[:0], w, b, y[:0])
    assert empty.item() == 0.0
    empty.backward()
    assert torch.count_nonzero(w.grad) == 0


def test_linear_cross_entropy_falls_back_to_stock_ops_under_autocast():
    h, w, b, y = _head_inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = linear_cross_entropy(h, w, b, y)
        want = F.cross_entropy(F.linear(h, w, b).float(), y)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
