"""checkpoint.py: round trip of the full training state, weights_only loading, atomic replacement, the last
two checkpoints kept, verification against the manifest (and what can be verified of older checkpoints)."""
import json
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


def _legacy(folder):
    """Make a checkpoint look like one of the code before manifests: no manifest.json, no `format`."""
    (folder / ckpt.MANIFEST).unlink()
    meta = json.loads((folder / ckpt.META).read_text())
    del meta["format"]
    (folder / ckpt.META).write_text(json.dumps(meta))


@pytest.mark.parametrize("manifest", ["rewritten to match", "none (older checkpoint)"])
def test_state_is_loaded_with_weights_only(tmp_path, capsys, manifest):
    model, opt, sched, _ = trained_state()
    ck = tmp_path / "ck"
    ckpt.save_checkpoint(ck, model, opt, sched, 1, {"epoch": 0, "batch": 1}, [ckpt.capture_rng_state()])
    torch.load(ck / ckpt.STATE, weights_only=True)  # plain types and tensors only
    torch.save({"step": 1, "payload": Evil()}, ck / ckpt.STATE)  # a tampered file ...
    if manifest == "rewritten to match":
        (ck / ckpt.MANIFEST).unlink()
        ckpt.write_manifest(ck)  # ... whose manifest was forged to match: the weights_only load still refuses it
    else:
        _legacy(ck)
    with pytest.raises(ckpt.CorruptCheckpoint, match="state.pt is not a readable training state") as info:
        ckpt.load_checkpoint(ck, model)
    assert isinstance(info.value.__cause__, pickle.UnpicklingError)
    assert "unpickled!" not in capsys.readouterr().out
    assert "weights_only=False will likely succeed" not in str(info.value)  # no advice to unpickle it


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
    """The code before `.prev` died after `ck` → `.ck.old` and before `.ck.tmp` → `ck`: the old copy is found."""
    model, opt, sched, _ = trained_state()
    rng = [ckpt.capture_rng_state()]
    ckpt.save_checkpoint(tmp_path / "ck", model, opt, sched, 1, {"epoch": 0, "batch": 1}, rng)
    (tmp_path / "ck").rename(tmp_path / ".ck.old")
    (tmp_path / ".ck.tmp").mkdir()  # an incomplete new one
    assert ckpt.resolve_checkpoint(tmp_path / "ck") == tmp_path / ".ck.old"
    assert ckpt.load_checkpoint(tmp_path / "ck", model)["step"] == 1
    ckpt.save_checkpoint(tmp_path / "ck", model, opt, sched, 2, {"epoch": 0, "batch": 2}, rng)
    assert ckpt.load_checkpoint(tmp_path / "ck")["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck", "ck.prev"]


@pytest.mark.parametrize("died_after", ["prev -> drop", "ck -> prev"])
def test_a_crash_during_the_rotation_leaves_a_good_checkpoint(tmp_path, monkeypatch, died_after):
    """Every moment of the rotation leaves a complete checkpoint that resolve_checkpoint finds."""
    model, opt, sched, _ = trained_state()
    rng = [ckpt.capture_rng_state()]
    ck = tmp_path / "ck"
    for step in (1, 2):
        ckpt.save_checkpoint(ck, model, opt, sched, step, {"epoch": 0, "batch": step}, rng)
    real, renames = ckpt.os.replace, []

    def dying_replace(src, dst):
        real(src, dst)
        renames.append(src)
        if (died_after == "prev -> drop" and len(renames) == 1) or (died_after == "ck -> prev" and len(renames) == 2):
            raise KeyboardInterrupt  # kill -9 right after this rename

    monkeypatch.setattr(ckpt.os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(ck, model, opt, sched, 3, {"epoch": 0, "batch": 3}, rng)
    monkeypatch.undo()
    found = ckpt.resolve_checkpoint(ck)
    assert ckpt.read_checkpoint(ck)["step"] == 2  # the newest complete one, wherever the rotation left it
    assert found == (ck if died_after == "prev -> drop" else ckpt.previous(ck))
    ckpt.save_checkpoint(ck, model, opt, sched, 3, {"epoch": 0, "batch": 3}, rng)  # the next save tidies up
    assert ckpt.read_checkpoint(ck)["step"] == 3 and ckpt.read_checkpoint(ckpt.previous(ck))["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck", "ck.prev"]


def test_incomplete_or_mismatched_checkpoints_are_refused(tmp_path):
    (tmp_path / "ck").mkdir()
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):  # an empty folder: no checkpoint
        ckpt.load_checkpoint(tmp_path / "ck")
    (tmp_path / "ck" / ckpt.STATE).write_bytes(b"")
    with pytest.raises(ckpt.CorruptCheckpoint, match="meta.json is missing .*state.pt"):
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


def _save(path, step, model=None):
    model, opt, sched, _ = trained_state() if model is None else (model, *trained_state()[1:])
    return ckpt.save_checkpoint(path, model, opt, sched, step, {"epoch": 0, "batch": step},
                                [ckpt.capture_rng_state()], encoder=model.encoder_for_export())


def test_the_last_two_checkpoints_are_kept(tmp_path):
    ck = tmp_path / "ck"
    for step in (1, 2, 3):
        _save(ck, step)
    assert ckpt.saved_step(ck) == 3 and ckpt.saved_step(ckpt.previous(ck)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck", "ck.prev"]  # the oldest was rotated out
    assert ckpt.verify_checkpoint(ck) and ckpt.verify_checkpoint(ckpt.previous(ck))
    # the current one moved away (set aside as corrupt): the previous one is found, and the next save keeps it
    ckpt.set_aside(ck, ck, tag="corrupt")
    assert ckpt.resolve_checkpoint(ck) == ckpt.previous(ck)
    _save(ck, 4)
    assert ckpt.saved_step(ck) == 4 and ckpt.saved_step(ckpt.previous(ck)) == 2


def test_the_manifest_lists_every_file_and_is_written_last(tmp_path, monkeypatch):
    ck = _save(tmp_path / "ck", 1)
    listed = json.loads((ck / ckpt.MANIFEST).read_text())["files"]
    files = {p.relative_to(ck).as_posix() for p in ck.rglob("*") if p.is_file()} - {ckpt.MANIFEST}
    assert listed.keys() == files and {"encoder/config.json", "model.safetensors", "state.pt", "meta.json"} <= files
    # a crash while the manifest is written: the new checkpoint never replaces the previous one
    seen = {}

    def crash(folder):
        seen["files"] = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        (folder / ckpt.MANIFEST).write_text('{"format": 2, "fi')  # torn
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "write_manifest", crash)
    with pytest.raises(KeyboardInterrupt):
        _save(ck, 2)
    monkeypatch.undo()
    assert seen["files"] == files  # everything else was written before it
    assert ckpt.read_checkpoint(ck)["step"] == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    # a folder that somehow lacks its manifest (copied mid-write, say) is incomplete: not trusted
    (ck / ckpt.MANIFEST).unlink()
    with pytest.raises(ckpt.CorruptCheckpoint, match="manifest.json is missing: the checkpoint was not completely"):
        ckpt.read_checkpoint(ck)


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _random_bytes(path):
    path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))  # same size: only the hash tells


FAULTS = {
    "truncated model.safetensors": ("model.safetensors", _truncate, "is .* bytes, the manifest says"),
    "random bytes in state.pt": ("state.pt", _random_bytes, "does not match its SHA-256"),
    "deleted meta.json": ("meta.json", lambda p: p.unlink(), "is missing"),
    "edited encoder config": ("encoder/config.json", lambda p: p.write_text(p.read_text().replace("1", "2")),
                              "is .* bytes|does not match its SHA-256"),
    "torn manifest": ("manifest.json", _truncate, "is not readable JSON"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_damaged_checkpoint_is_refused_naming_the_file(tmp_path, fault):
    name, damage, reason = FAULTS[fault]
    ck = _save(tmp_path / "ck", 1)
    damage(ck / name)
    with pytest.raises(ckpt.CorruptCheckpoint) as info:
        ckpt.read_checkpoint(ck)
    assert info.value.file == name and info.value.path == ck, str(info.value)
    assert str(ck) in str(info.value) and name in str(info.value)
    assert __import__("re").search(reason, info.value.reason), info.value.reason
    assert pickle.loads(pickle.dumps(info.value)).file == name  # crosses process boundaries intact


def test_a_checkpoint_without_a_manifest_still_loads_and_is_checked(tmp_path):
    """Checkpoints of the code before manifests: loaded; what can be checked without hashes is."""
    model = trained_state()[0]
    ck = _save(tmp_path / "ck", 3, model)
    _legacy(ck)
    assert ckpt.verify_checkpoint(ck) is False
    fresh = trained_state(seed=1)[0]
    assert ckpt.load_checkpoint(ck, fresh)["step"] == 3
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    _truncate(ck / ckpt.WEIGHTS)
    with pytest.raises(ckpt.CorruptCheckpoint, match="model.safetensors is .* bytes, its header describes"):
        ckpt.read_checkpoint(ck)
    ck2 = _save(tmp_path / "ck2", 3)
    _legacy(ck2)
    _random_bytes(ck2 / ckpt.STATE)
    with pytest.raises(ckpt.CorruptCheckpoint, match="state.pt is not a readable training state"):
        ckpt.read_checkpoint(ck2)
