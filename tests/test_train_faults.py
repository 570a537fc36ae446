"""train.py under faults: non-finite losses, collapse signals, kill -9, SIGINT / SIGTERM on a real process."""
import math
import os
import signal
import subprocess
import time
import warnings

import pytest
import torch
from _train_helpers import cli, cli_args, one_thread, read_log, tiny_data, tiny_params
from transformers import AutoModel

import jepa_core.pretrain.train as T
from jepa_core.model import PretrainModel
from jepa_core.pretrain import checkpoint as ckpt

single_thread = pytest.fixture(autouse=True)(one_thread)


def test_non_finite_loss_stops_with_a_diagnostic_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    real_forward = PretrainModel.forward
    calls = {"train": 0}

    def nan_at_step_14(self, batch):
        out = real_forward(self, batch)
        if self.training:
            calls["train"] += 1
            if calls["train"] == 14:
                out["jepa_loss"] = out["jepa_loss"] * float("nan")
                out["loss"] = out["loss"] * float("nan")  # keeps the graph: backward runs, grads are NaN
        return out

    monkeypatch.setattr(PretrainModel, "forward", nan_at_step_14)
    with pytest.raises(T.NonFiniteLossError) as info:
        T.train(tiny_params(), "hybrid", tmp_path, data=tiny_data())
    message = str(info.value)
    for part in ("non-finite jepa_loss/loss at step 14", "lambda=0.5", "grad_norm=nan", "mlm_loss=",
                 str(tmp_path / "checkpoint")):
        assert part in message, (part, message)
    state = ckpt.load_checkpoint(tmp_path / "checkpoint")
    assert state["step"] == 10  # the last periodic checkpoint, untouched
    monkeypatch.undo()
    model = PretrainModel(tiny_params(), "hybrid", len(tiny_data().tokenizer), 0)
    ckpt.load_checkpoint(tmp_path / "checkpoint", model)
    assert all(torch.isfinite(p).all() for p in model.state_dict().values())
    steps, _ = read_log(tmp_path / "log.jsonl")
    assert steps[-1]["step"] == 14 and "non-finite" in steps[-1]["error"]
    assert [r["step"] for r in steps[:-1]] == list(range(1, 14))


def test_collapse_signals_warn_once_and_are_logged(tmp_path):
    params = tiny_params(train__steps=4, train__warmup_steps=1, train__collapse_std=100.0)  # every batch "collapsed"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        T.train(params, "hybrid", tmp_path, data=tiny_data())
    collapse = [w for w in caught if "collapse" in str(w.message)]
    assert len(collapse) == 1 and issubclass(collapse[0].category, RuntimeWarning)
    steps, _ = read_log(tmp_path / "log.jsonl")
    assert all("target_std" in r["warning"] for r in steps)


def start(tmp_path, name, *args):
    """`python -m jepa_core.pretrain.train` in the background; its output goes to files (a full pipe would block it)."""
    out = open(tmp_path / f"{name}.out", "w")
    return cli(*args, stdout=out, stderr=subprocess.STDOUT), tmp_path / f"{name}.out"


def _wait_for_step(log_path, step, proc, output, timeout=120.0):
    """Poll the JSONL log until it holds `step` (fails if the process ends first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log_path.exists():
            done = [r["step"] for r in read_log(log_path)[0] if "error" not in r]
            if done and done[-1] >= step:
                return done[-1]
        if proc.poll() is not None:
            raise AssertionError(f"training ended (code {proc.returncode}) before step {step}: "
                                 f"{output.read_text()[-2000:]}")
        time.sleep(0.01)
    raise AssertionError(f"no step {step} within {timeout} s")


def test_kill_9_leaves_a_loadable_checkpoint_and_resume_matches(tmp_path, capsys):
    steps = "--set=train.steps=60"
    run = tmp_path / "run"
    proc, output = start(tmp_path, "first", "--objective", "hybrid", "--out", str(run), steps)
    try:
        seen = _wait_for_step(run / "log.jsonl", 12, proc, output)
        proc.kill()  # SIGKILL: no handler, no cleanup, possibly mid-checkpoint
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    state = ckpt.load_checkpoint(run / "checkpoint")
    assert state["step"] % 10 == 0 and 10 <= state["step"] <= seen + 1
    AutoModel.from_pretrained(ckpt.resolve_checkpoint(run / "checkpoint") / "encoder")

    # --resume through the CLI entry point (in this process: one interpreter start-up less)
    assert T.main(cli_args("--objective", "hybrid", "--out", str(run), steps, "--resume")) == 0
    assert f"resumed hybrid from {run / 'checkpoint'} at step {state['step']}" in capsys.readouterr().out

    reference = T.train(tiny_params(train__steps=60), "hybrid", tmp_path / "ref", data=tiny_data())
    got, _ = read_log(run / "log.jsonl")
    want, _ = read_log(tmp_path / "ref" / "log.jsonl")
    assert [r["step"] for r in got] == list(range(1, 61))
    for a, b in zip(got, want):
        for key in ("loss", "mlm_loss", "jepa_loss", "lambda"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), (a["step"], key)
    assert reference["final"]["loss"] == pytest.approx(got[-1]["loss"], abs=1e-6)


def test_sigint_on_a_process_finishes_the_step_and_checkpoints(tmp_path):
    proc, output = start(tmp_path, "run", "--objective", "mlm", "--out", str(tmp_path), "--set=train.steps=100000",
                         "--set=train.warmup_steps=1")
    try:
        _wait_for_step(tmp_path / "log.jsonl", 3, proc, output)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        proc.kill()
    err = output.read_text()
    assert proc.returncode == 130, err[-3000:]
    assert "SIGINT received" in err and "checkpoint written" in err
    steps, _ = read_log(tmp_path / "log.jsonl")
    assert ckpt.load_checkpoint(tmp_path / "checkpoint")["step"] == steps[-1]["step"]  # the step in flight finished
    assert not math.isnan(steps[-1]["loss"])


def test_sigterm_through_the_cli_exits_143_after_a_checkpoint(tmp_path, monkeypatch, capsys):
    real = T.ema_momentum

    def terminate_during_step_3(step, *args):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(step, *args)

    monkeypatch.setattr(T, "ema_momentum", terminate_during_step_3)
    assert T.main(cli_args("--objective", "mlm", "--out", str(tmp_path))) == 143
    assert "SIGTERM at step 3" in capsys.readouterr().err
    assert ckpt.load_checkpoint(tmp_path / "checkpoint")["step"] == 3
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


# ---------------------------------------------------------------- corrupt checkpoints

def _weights(folder):
    """The tensors of a checkpoint's model.safetensors, copied into memory (not mapped to the file)."""
    from safetensors.torch import load

    return load((folder / ckpt.WEIGHTS).read_bytes())


CORRUPTIONS = {
    "truncated model.safetensors": (ckpt.WEIGHTS, lambda p: p.write_bytes(p.read_bytes()[:-100])),
    "random bytes in state.pt": (ckpt.STATE, lambda p: p.write_bytes(os.urandom(p.stat().st_size))),
    "deleted meta.json": (ckpt.META, lambda p: p.unlink()),
}


@pytest.mark.parametrize("fault", list(CORRUPTIONS))
def test_a_corrupt_checkpoint_is_set_aside_and_the_previous_one_resumed(tmp_path, capsys, fault):
    """The last checkpoint damaged: it is moved to checkpoint.corrupt-<time>/ with a message naming the
    file, the previous one (checkpoint.prev) is resumed, and the run ends where an undamaged one ends."""
    name, damage = CORRUPTIONS[fault]
    params, run = tiny_params(train__steps=20), tmp_path / "run"  # checkpoints at steps 10 and 20
    T.train(params, "hybrid", run, data=tiny_data())
    ck = run / "checkpoint"
    want = _weights(ck)
    damaged_bytes = None
    damage(ck / name)
    if (ck / name).exists():
        damaged_bytes = (ck / name).read_bytes()
    capsys.readouterr()
    summary = T.train(params, "hybrid", run, resume=True, data=tiny_data())
    out = capsys.readouterr().out
    (moved,) = run.glob("checkpoint.corrupt-*")
    assert f"checkpoint {ck} is corrupt: {name} " in out and f"moved to {moved}" in out, out
    assert f"trying the previous checkpoint {ckpt.previous(ck)} (step 10)" in out
    assert f"resumed hybrid from {ckpt.previous(ck)} at step 10" in out
    assert "weights_only=False will" not in out
    assert summary["resumed_from_step"] == 10 and summary["steps"] == 20
    if damaged_bytes is not None:  # the damaged folder is kept as it was: nothing deleted
        assert (moved / name).read_bytes() == damaged_bytes
    got = _weights(ck)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)  # an exact resume
    assert ckpt.saved_step(ck) == 20 and ckpt.saved_step(ckpt.previous(ck)) == 10


def test_no_intact_checkpoint_left_starts_from_scratch_saying_so(tmp_path, capsys):
    params, run = tiny_params(train__steps=20), tmp_path / "run"
    T.train(params, "mlm", run, data=tiny_data())
    (run / "checkpoint" / ckpt.META).unlink()  # the weights survive, the folder is not a checkpoint
    (run / "checkpoint.prev" / ckpt.STATE).write_bytes(b"\x00" * 64)
    capsys.readouterr()
    summary = T.train(params, "mlm", run, resume=True, data=tiny_data())
    out = capsys.readouterr().out
    assert "checkpoint is corrupt: meta.json is missing" in out
    assert "checkpoint.prev is corrupt: state.pt is 64 bytes" in out
    assert "no earlier checkpoint is left: training starts from scratch" in out
    assert summary["resumed_from_step"] is None and summary["steps"] == 20
    assert sorted(p.name.split("-")[0] for p in run.glob("checkpoint*.corrupt-*")) == [
        "checkpoint.corrupt", "checkpoint.prev.corrupt"]


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_without_native_bf16_says_so_and_keeps_bf16(tmp_path, monkeypatch, capsys, native):
    """train.precision=bf16 where bf16 would be emulated: the run keeps bf16 (never a silent switch of numerics),
    prints a note naming the cost and the fp32 choice, and records native_bf16 in its numerics."""
    import jepa_core.pretrain.engine as engine
    import jepa_core.pretrain.numerics as numerics

    monkeypatch.setattr(engine, "native_bf16", lambda device_type: native)
    monkeypatch.setattr(numerics, "native_bf16", lambda device_type: native)
    assert (engine.emulated_bf16_note("bf16", "cpu") is None) == native
    assert engine.emulated_bf16_note("no", "cpu") is None
    T.train(tiny_params(train__steps=2, train__warmup_steps=1), "mlm", tmp_path / "fp32", data=tiny_data())
    # then a bf16 run in the same process (a notebook, a pool worker): Accelerate's per-process state must not refuse it
    summary = T.train(tiny_params(train__steps=2, train__warmup_steps=1, train__precision="bf16"), "mlm",
                      tmp_path / "bf16", data=tiny_data())
    out = capsys.readouterr().out
    assert ("emulated" in out and "train.precision=fp32" in out) == (not native)
    assert summary["precision"] == "bf16" and summary["numerics"]["native_bf16"] is native
