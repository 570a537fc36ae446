"""flops.py: a hand count on a toy config, torch's own FLOP counter on the real model, ratios."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from jepa_core.config import load_params
from jepa_core.model import PretrainModel
from jepa_core.model.masking import PretrainCollator, TokenIds
from jepa_core.pretrain.flops import (
    TokenCounts,
    encoder_forward_flops,
    expected_token_counts,
    measure_token_counts,
    mlm_head_forward_flops,
    predictor_forward_flops,
    training_flops_per_step,
)

VOCAB, CLS = 100, 2
IDS = TokenIds(vocab_size=VOCAB, pad_id=0, mask_id=4, special_ids=(0, 1, 2, 3, 4))


def toy_params(**overrides):
    base = {"model.layers": 1, "model.hidden": 4, "model.heads": 1, "model.ffn": 8, "model.predictor_layers": 1,
            "model.predictor_hidden": 2, "model.predictor_heads": 1, "train.batch_size": 2}
    return load_params(None, {**base, **overrides})


def test_hand_count_one_layer_toy():
    # d=4, f=8, V=10, dp=2, fp=8; a sequence of L=6 tokens, M=1 masked, C=3 context, G=2 targets.
    # enc(T) = 2T(4·16 + 2·4·8) + 4·T²·4 = 256T + 16T²  ->  enc(6) = 2112, enc(3) = 912
    assert encoder_forward_flops(6, 1, 4, 8) == 2112
    assert encoder_forward_flops(3, 1, 4, 8) == 912
    # a GLU FFN has a third d×f matrix: + 2T·d·f = 64T  ->  enc(6) = 2112 + 384
    assert encoder_forward_flops(6, 1, 4, 8, ffn_matrices=3) == 2496
    # head(1) = 2·1·(4·4 + 4·10) = 112
    assert mlm_head_forward_flops(1, 4, 10) == 112
    # pred: in-proj 2·3·4·2 = 48; 1 layer over 5 tokens: 2·5·(4·4 + 2·2·8) + 4·25·2 = 680; out 2·2·2·4 = 32
    assert predictor_forward_flops(3, 2, 4, 2, 1) == 760
    params = toy_params()
    counts = TokenCounts(seq_len=6, masked=1, context=3, target=2, masked_in_context=1)
    mlm = training_flops_per_step(params, 10, "mlm", counts)
    hybrid = training_flops_per_step(params, 10, "hybrid", counts, shared_pass=False)
    shared = training_flops_per_step(params, 10, "hybrid", counts, shared_pass=True)
    assert mlm["total"] == 2 * 3 * (2112 + 112)  # batch of 2, fwd + bwd
    assert hybrid["total"] == 2 * (3 * (2112 + 112) + 3 * (912 + 760) + 2112)  # + context pass, predictor, EMA target
    assert shared["total"] == 2 * (3 * (912 + 112 + 760) + 2112)
    assert hybrid["target"] == 2 * 2112 and hybrid["predictor"] == 2 * 3 * 760
    assert sum(v for k, v in hybrid.items() if k != "total") == hybrid["total"]


def _batch(objective, shared, params, n=4, L=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    items = [{"input_ids": torch.cat([torch.tensor([CLS]), torch.randint(5, VOCAB, (L - 1,), generator=g)]), "index": i}
             for i in range(n)]
    return PretrainCollator(IDS, params.mask, seed, objective, shared)(items)


@pytest.mark.parametrize("architecture", ["bert", "modernbert"])
@pytest.mark.parametrize("objective,shared", [("mlm", False), ("hybrid", False), ("hybrid", True)])
def test_matches_torch_flop_counter_on_the_real_model(objective, shared, architecture):
    """torch counts every matmul of one real forward + backward; eager attention so that the
    attention matmuls are visible to the counter (its CPU SDPA kernel is not registered)."""
    params = load_params(None, {"model.layers": 2, "model.hidden": 32, "model.heads": 2, "model.ffn": 64,
                                "model.predictor_layers": 1, "model.predictor_hidden": 16, "model.predictor_heads": 2,
                                "model.dropout": 0.0, "train.batch_size": 4, "jepa.shared_pass": shared,
                                "model.architecture": architecture})
    batch = _batch(objective, shared, params)
    model = PretrainModel(params, objective, VOCAB, IDS.pad_id)
    for module in model.modules():
        if getattr(module, "config", None) is not None:
            module.config._attn_implementation = "eager"
    with FlopCounterMode(display=False) as counter:
        model(batch)["loss"].backward()
    predicted = training_flops_per_step(params, VOCAB, objective, measure_token_counts([batch]))["total"]
    assert counter.get_total_flops() == pytest.approx(predicted, rel=1e-9)


def test_ratios_behave():
    params = load_params(None)  # the default architecture
    h, m = (training_flops_per_step(params, 8000, o)["total"] for o in ("hybrid", "mlm"))
    glu = load_params(None, {"model.architecture": "modernbert"})
    assert training_flops_per_step(glu, 8000, "mlm")["total"] > m  # the GLU's extra matrix
    assert 1.5 < h / m < 3.5  # an extra context pass, a predictor and a no-grad target pass
    shared = training_flops_per_step(params, 8000, "hybrid", shared_pass=True)["total"]
    assert shared < h  # one student pass over the context instead of two passes (can undercut MLM)
    deeper = load_params(None, {"model.predictor_layers": 6})
    assert training_flops_per_step(deeper, 8000, "hybrid")["total"] > h
    assert training_flops_per_step(deeper, 8000, "mlm")["total"] == m  # the MLM run has no predictor
    double = load_params(None, {"train.batch_size": 64})
    assert training_flops_per_step(double, 8000, "mlm")["total"] == pytest.approx(2 * m)
    with pytest.raises(ValueError, match="objective"):
        training_flops_per_step(params, 8000, "jepa")


def test_expected_counts_close_to_measured():
    params = load_params(None, {"data.seq_len": 128})
    batches = [_batch("hybrid", False, params, n=64, L=128, seed=s) for s in range(2)]
    measured, expected = measure_token_counts(batches), expected_token_counts(params)
    real_context = torch.cat([b["context_valid"].sum(1) for b in batches]).float().mean().item()
    real_target = torch.cat([b["target_valid"].sum(1) for b in batches]).float().mean().item()
    assert expected.seq_len == measured.seq_len == 128
    assert expected.masked == pytest.approx(measured.masked, rel=0.05)
    assert expected.context == pytest.approx(real_context, rel=0.1)
    assert expected.target == pytest.approx(real_target, rel=0.25)  # target blocks may overlap: an upper bound
    assert expected.target >= real_target
    # measured counts are padded widths, i.e. what the model computes on
    assert measured.context >= real_context and measured.target >= real_target
    with pytest.raises(ValueError):
        measure_token_counts([])
