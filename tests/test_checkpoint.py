"""checkpoint.py: round trip of the full training state, weights_only loading, atomic replacement."""
import pickle
import random

import numpy as np
import pytest
import torch
from transformers import AutoModel

from jepa_core.config import load_params
from jepa_core.model import PretrainModel
from jepa_core.model.masking import PretrainCollator, TokenIds
from jepa_core.pretrain import checkpoint as ckpt
from jepa_core.pretrain.engine import WarmupCosine, build_optimizer

VOCAB = 60
IDS = TokenIds(vocab_size=VOCAB, pad_id=0, mask_id=4, special_ids=(0, 1, 2, 3, 4))
PARAMS = load_params(None, {"model.layers": 1, "model.hidden": 16, "model.heads": 2, "model.ffn": 32,
                            "model.predictor_layers": 1, "model.predictor_hidden": 8, "model.predictor_heads": 2,
                            "train.warmup_steps": 2, "train.steps": 10})


def trained_state(seed=0):
    """A hybrid model, optimizer and scheduler after one real step."""
    torch.manual_seed(seed)
    model = PretrainModel(PARAMS, "hybrid", VOCAB, 0)
    opt = build_optimizer(model, PARAMS, fused=False)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(2, 10, 0.1))
    items = [{"input_ids": torch.cat([torch.tensor([2]), torch.randint(5, VOCAB, (23,))]),
              "index": i} for i in range(4)]
    batch = PretrainCollator(IDS, PARAMS.mask, 0, "hybrid")(items)
    model(batch)["loss"].backward()
    opt.step()
    sched.step()
    model.update_target(0.9)
    return model, opt, sched, batch


def test_round_trip_restores_everything(tmp_path):
    model, opt, sched, batch = trained_state()
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    rng = ckpt.capture_rng_state()
    expected_draws = (random.random(), np.random.rand(), torch.rand(3))
    ckpt.save_checkpoint(tmp_path / "ck", model, opt, sched, step=7, data_position={"epoch": 1, "batch": 3},
                         rng_states=[rng], extra={"note": "x", "elapsed_s": 1.5})

    fresh, fresh_opt, fresh_sched, _ = trained_state(seed=1)  # different weights, optimizer moments
    state = ckpt.load_checkpoint(tmp_path / "ck", fresh, fresh_opt, fresh_sched)
    assert state["step"] == 7 and state["data_position"] == {"epoch": 1, "batch": 3}
    assert state["extra"] == {"note": "x", "elapsed_s": 1.5}
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name  # student, EMA target, predictor, head, λ
    for a, b in zip(opt.state_dict()["state"].values(), fresh_opt.state_dict()["state"].values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    assert fresh_sched.state_dict() == sched.state_dict()
    assert fresh_sched.lr_lambdas[0].total == 10  # the schedule object's fields travel with it
    # identical outputs after the round trip (dropout off)
    model.eval(), fresh.eval()
    assert torch.equal(model(batch)["loss"], fresh(batch)["loss"])

    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    ckpt.restore_rng_state(state["rng_states"][0])
    assert (random.random(), np.random.rand()) == expected_draws[:2]
    assert torch.equal(torch.rand(3), expected_draws[2])


def test_encoder_folder_loads_with_automodel(tmp_path):
    model, opt, sched, batch = trained_state()
    ckpt.save_checkpoint(tmp_path / "ck", model, opt, sched, 1, {"epoch": 0, "batch": 1}, [ckpt.capture_rng_state()],
                         encoder=model.encoder_for_export())
    loaded = AutoModel.from_pretrained(tmp_path / "ck" / "encoder").eval()
    enc = model.encoder_for_export().eval()
    with torch.no_grad():
        a = enc(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        b = loaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


class Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_state_is_loaded_with_weights_only(tmp_path):
    model, opt, sched, _ = trained_state()
    ckpt.save_checkpoint(tmp_path / "ck", model, opt, sched, 1, {"epoch": 0, "batch": 1}, [ckpt.capture_rng_state()])
    torch.load(tmp_path / "ck" / ckpt.STATE, weights_only=True)  # plain types and tensors only
    torch.save({"step": 1, "payload": Evil()}, tmp_path / "ck" / ckpt.STATE)  # a tampered file
    with pytest.raises(pickle.UnpicklingError):
        ckpt.load_checkpoint(tmp_path / "ck", model)


def test_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model, opt, sched, _ = trained_state()
    rng = [ckpt.capture_rng_state()]
    ckpt.save_checkpoint(tmp_path / "ck", model, opt, sched, 1, {"epoch": 0, "batch": 1}, rng)
    before = (tmp_path / "ck" / ckpt.WEIGHTS).read_bytes()

    def torn_save(obj, f, *a, **k):  # weights written, then the process "dies" in the middle of state.pt
        open(f, "wb").write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.torch, "save", torn_save)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(tmp_path / "ck", model, opt, sched, 2, {"epoch": 0, "batch": 2}, rng)
    monkeypatch.undo()
    assert (tmp_path / "ck" / ckpt.WEIGHTS).read_bytes() == before
    assert ckpt.load_checkpoint(tmp_path / "ck")["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no temp folder left behind


def test_crash_between_the_two_renames(tmp_path):
    """The process died after `ck` → `.ck.old` and before `.ck.tmp` → `ck`: the old copy is found."""
    model, opt, sched, _ = trained_state()
    rng = [ckpt.capture_rng_state()]
    ckpt.save_checkpoint(tmp_path / "ck", model, opt, sched, 1, {"epoch": 0, "batch": 1}, rng)
    (tmp_path / "ck").rename(tmp_path / ".ck.old")
    (tmp_path / ".ck.tmp").mkdir()  # an incomplete new one
    assert ckpt.resolve_checkpoint(tmp_path / "ck") == tmp_path / ".ck.old"
    assert ckpt.load_checkpoint(tmp_path / "ck", model)["step"] == 1
    ckpt.save_checkpoint(tmp_path / "ck", model, opt, sched, 2, {"epoch": 0, "batch": 2}, rng)
    assert ckpt.load_checkpoint(tmp_path / "ck")["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_incomplete_or_mismatched_checkpoints_are_refused(tmp_path):
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / ckpt.STATE).write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        ckpt.load_checkpoint(tmp_path / "ck")
    model, opt, sched, _ = trained_state()
    ckpt.save_checkpoint(tmp_path / "ck2", model, opt, sched, 1, {"epoch": 0, "batch": 1}, [ckpt.capture_rng_state()])
    mlm_model = PretrainModel(PARAMS, "mlm", VOCAB, 0)
    with pytest.raises(RuntimeError, match="does not match the model.*predictor"):
        ckpt.load_checkpoint(tmp_path / "ck2", mlm_model)


def test_set_aside_moves_and_never_overwrites(tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt.time, "strftime", lambda fmt: "20260101-000000")  # both moves in "the same second"
    path = tmp_path / "checkpoints" / "mlm"
    moved = []
    for content in ("first", "second"):
        path.mkdir(parents=True)
        (path / ckpt.META).write_text(content)
        moved.append(ckpt.set_aside(path, path))
        assert not path.exists()
    assert [m.name for m in moved] == ["mlm.stale-20260101-000000", "mlm.stale-20260101-000000-1"]
    assert [(m / ckpt.META).read_text() for m in moved] == ["first", "second"]
    # a checkpoint found at its `.old` sibling (crash mid-swap) is named after the checkpoint it stands for
    old = tmp_path / "checkpoints" / ".mlm.old"
    old.mkdir()
    (old / ckpt.META).write_text("third")
    assert ckpt.set_aside(ckpt.resolve_checkpoint(path), path).name == "mlm.stale-20260101-000000-2"
