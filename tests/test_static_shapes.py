"""train.static_shapes: fixed batch shapes (for a compiled encoder) with the same masks, losses and gradients."""
import pytest
import torch
from _train_helpers import one_thread
from test_model import IDS as MODEL_IDS
from test_model import VOCAB, tiny_params
from test_model import L as MODEL_L

from jepa_core.config import MaskConfig
from jepa_core.model import PretrainModel
from jepa_core.model.masking import PretrainCollator, TokenIds, jepa_masks, mlm_width, static_widths

IDS = TokenIds(vocab_size=500, pad_id=0, mask_id=4, special_ids=(0, 1, 2, 3, 4))


single_thread = pytest.fixture(autouse=True)(one_thread)


def random_items(n, seq_len, ids, seed, min_len):
    """Rows of random real length in [min_len, seq_len] (right-padded, as a short last block would be)."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        real = int(torch.randint(min_len, seq_len + 1, (), generator=g))
        x = torch.randint(5, ids.vocab_size, (real,), generator=g)
        x[0] = 2  # [CLS]
        items.append({"input_ids": x, "index": seed * 1000 + i})
    return items


# ---------------------------------------------------------------- the bounds

CONFIGS = [MaskConfig(),  # the profiles' scales
           MaskConfig(num_targets=3, target_scale=[0.05, 0.4], context_scale=[0.85, 1.0], min_keep=4),
           MaskConfig(num_targets=2, target_scale=[0.2, 0.3], context_scale=[0.5, 0.6], min_keep=15)]  # fallbacks


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("seq_len", [20, 64])
def test_static_widths_bound_every_draw(cfg, seq_len):
    """Many draws over every real length: no count exceeds the bound, and the bound is nearly reached
    (a loose bound would cost padding for nothing)."""
    kc, kt = static_widths(seq_len, cfg)
    lengths = torch.arange(1 + cfg.num_targets + cfg.min_keep, seq_len + 1).repeat(40)
    gens = [torch.Generator().manual_seed(s) for s in range(len(lengths))]
    _, c_valid, _, t_valid = jepa_masks(lengths, cfg.num_targets, cfg.target_scale, cfg.context_scale,
                                        cfg.min_keep, gens)
    seen_c, seen_t = int(c_valid.sum(1).max()), int(t_valid.sum(1).max())
    assert seen_c <= kc <= seq_len and seen_t <= kt < seq_len
    if cfg == MaskConfig():  # the profiles' scales: the widths are (nearly) reached
        assert kc - seen_c <= max(3, seq_len // 10) and kt - seen_t <= max(3, seq_len // 10), (kc, seen_c, kt, seen_t)


def test_fallback_context_is_inside_the_bound():
    # only the shrink fallback fits (test_masking.py's case): context = everything but two 1-token targets
    n, T = 24, 2
    cfg = MaskConfig(num_targets=T, target_scale=[0.2, 0.3], context_scale=[0.5, 0.6], min_keep=n - 1 - T)
    _, c_valid, _, _ = jepa_masks(torch.full((5,), n), T, cfg.target_scale, cfg.context_scale, cfg.min_keep,
                                  [torch.Generator().manual_seed(s) for s in range(5)])
    assert int(c_valid.sum(1).max()) == n - 2 <= static_widths(n, cfg)[0]


def test_bounds_by_hand_and_errors():
    # seq_len 128, defaults: context block <= round(0.85·128) = 109 (+[CLS]); no fallback (every draw
    # keeps >= round(0.65·128) − 2·32 = 19 >= 8 tokens); targets <= 2·round(0.25·128) = 64
    assert static_widths(128, MaskConfig()) == (110, 64)
    # seq_len 20: a fallback can happen; its context <= 20 − min(round(0.1·20), ceil((20 − 9) / 2)) = 18
    assert static_widths(20, MaskConfig()) == (18, 10)
    assert mlm_width(128, 0.15) == 19 and mlm_width(3, 0.15) == 1
    with pytest.raises(ValueError, match="too short"):
        static_widths(10, MaskConfig())
    with pytest.raises(ValueError, match="needs seq_len"):
        PretrainCollator(IDS, MaskConfig(), 0, "hybrid", static_shapes=True)
    col = PretrainCollator(IDS, MaskConfig(), 0, "mlm", static_shapes=True, seq_len=16)
    with pytest.raises(ValueError, match="longer than seq_len"):
        col(random_items(2, 32, IDS, 0, 32))


# ---------------------------------------------------------------- the batches

@pytest.mark.parametrize("objective,shared_pass", [("hybrid", False), ("hybrid", True), ("mlm", False)])
def test_static_batches_have_one_shape_and_the_default_batches_valid_entries(objective, shared_pass):
    seq_len, cfg = 64, MaskConfig()
    dynamic = PretrainCollator(IDS, cfg, 7, objective, shared_pass)
    static = PretrainCollator(IDS, cfg, 7, objective, shared_pass, static_shapes=True, seq_len=seq_len)
    shapes = set()
    for seed in range(12):
        items = random_items(8, seq_len, IDS, seed, min_len=30)
        d, s = dynamic(items), static(items)
        assert d.keys() == s.keys()
        shapes.add(tuple((k, tuple(v.shape)) for k, v in sorted(s.items())))
        Ld = d["input_ids"].shape[1]
        for k in ("input_ids", "attention_mask", "mlm_input_ids", "mlm_labels"):
            assert torch.equal(s[k][:, :Ld], d[k])  # the same masks (same seeds, same draws)
        assert (s["attention_mask"][:, Ld:] == 0).all() and (s["mlm_labels"][:, Ld:] == -100).all()
        # MLM positions: the default's (re-indexed to the wider rows), then padding at an ignored label
        n = len(d["mlm_positions"])
        rows, cols = d["mlm_positions"] // Ld, d["mlm_positions"] % Ld
        assert torch.equal(s["mlm_positions"][:n], rows * seq_len + cols)
        assert (s["mlm_labels"].view(-1)[s["mlm_positions"][n:]] == -100).all()
        if objective == "hybrid":
            for k in ("context", "target"):
                K = d[f"{k}_idx"].shape[1]
                assert torch.equal(s[f"{k}_idx"][:, :K], d[f"{k}_idx"])
                assert torch.equal(s[f"{k}_valid"][:, :K], d[f"{k}_valid"])
                assert not s[f"{k}_valid"][:, K:].any() and (s[f"{k}_idx"][:, K:] == 0).all()
    assert len(shapes) == 1, shapes


# ---------------------------------------------------------------- the losses and gradients

@pytest.mark.parametrize("architecture", ["bert", "modernbert"])
@pytest.mark.parametrize("objective,shared_pass", [("hybrid", False), ("hybrid", True), ("mlm", False)])
def test_static_shapes_leave_losses_and_gradients_unchanged(architecture, objective, shared_pass):
    """fp32, dropout 0: padded slots are masked keys (attention), dropped (JEPA loss) or labelled −100
    (MLM loss), so only float rounding may differ."""
    params = tiny_params(architecture, **{"jepa.shared_pass": shared_pass})
    items = random_items(6, MODEL_L, MODEL_IDS, 3, min_len=20)
    outs, grads, widths = [], [], []
    for static_shapes in (False, True):
        torch.manual_seed(0)
        model = PretrainModel(params, objective, VOCAB, MODEL_IDS.pad_id).train()
        batch = PretrainCollator(MODEL_IDS, params.mask, 0, objective, shared_pass, static_shapes, MODEL_L)(items)
        widths.append(tuple(batch[k].shape[-1] for k in ("context_idx", "target_idx", "mlm_positions") if k in batch))
        out = model(batch)
        out["loss"].backward()
        outs.append(out)
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    (a, b), (ga, gb) = outs, grads
    assert all(w_static > w for w, w_static in zip(*widths)), widths  # the static batch really is padded
    for k in ("loss", "mlm_loss", "jepa_loss", "target_std", "context_embedding"):
        if k in a:
            torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=1e-5)
    assert ga.keys() == gb.keys() and len(ga) > 10
    for name in ga:
        torch.testing.assert_close(gb[name], ga[name], atol=1e-6, rtol=1e-5, msg=name)


# ---------------------------------------------------------------- the trainer

def test_trainer_with_static_shapes_trains_the_same_weights(tmp_path):
    """train.static_shapes reaches the trainer's collators (its widths are asserted there) and, with
    dropout 0 (padding changes how many dropout draws a pass makes), trains the same weights."""
    from _train_helpers import read_log, tiny_data
    from _train_helpers import tiny_params as tiny_train_params
    from safetensors.torch import load_file

    import jepa_core.pretrain.train as T
    from jepa_core.pretrain import checkpoint as ckpt

    data = tiny_data()
    for static_shapes in (False, True):
        params = tiny_train_params(train__steps=6, model__dropout=0.0, train__static_shapes=static_shapes)
        T.train(params, "hybrid", tmp_path / str(static_shapes), data=data)
    logs = [read_log(tmp_path / str(s) / "log.jsonl")[0] for s in (False, True)]
    for key in ("mlm_loss", "jepa_loss"):  # per step (the JEPA lists are padded here: 28 vs ~21 context slots)
        assert [r[key] for r in logs[1]] == pytest.approx([r[key] for r in logs[0]], rel=1e-6, abs=1e-6)
    a, b = (load_file(tmp_path / str(s) / "checkpoint" / ckpt.WEIGHTS) for s in (False, True))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=1e-4, msg=k)
