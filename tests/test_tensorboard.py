"""train.report_to=[jsonl, tensorboard]: the event files hold the JSONL log's numbers, at its steps."""
import pytest
import torch
from _train_helpers import log_scalars, one_thread, read_events, read_log, tiny_data, tiny_params

import jepa_core.pretrain.train as T
from jepa_core.pretrain.run_state import tensorboard_scalars

single_thread = pytest.fixture(autouse=True)(one_thread)


@pytest.mark.parametrize("objective", ["hybrid", "mlm"])
def test_event_files_hold_the_jsonl_values(tmp_path, objective):
    torch.set_num_threads(1)
    params = tiny_params(train__steps=12, train__eval_every=5, train__report_to=["jsonl", "tensorboard"])
    paths = T.RunPaths.for_run(tmp_path, objective)
    T.train(params, objective, paths, data=tiny_data())
    assert paths.tensorboard_dir == tmp_path / "logs" / "tensorboard" / objective
    events = read_events(paths.tensorboard_dir)
    steps, validations = read_log(paths.log_path)
    assert [r["step"] for r in steps] == list(range(1, 13)) and [v["step"] for v in validations] == [5, 10, 12]
    expected = log_scalars(paths.log_path)
    assert set(events) == set(expected)
    for tag in expected:  # TensorBoard stores float32
        assert events[tag] == pytest.approx(expected[tag], rel=1e-6, abs=1e-12), tag
    hybrid_only = {"train/jepa_loss", "train/lambda", "train/ema_momentum", "train/target_std", "validation/jepa_loss"}
    assert hybrid_only <= set(events) if objective == "hybrid" else not hybrid_only & set(events)
    always = {"train/loss", "train/lr", "train/grad_norm", "train/batch_effective_rank", "validation/mlm_loss"}
    assert always <= set(events)


def test_a_resumed_run_replaces_the_events_after_its_checkpoint(tmp_path, monkeypatch):
    """A crash after step 7 (checkpoint at 5): the resumed run recomputes steps 6-12; the event files,
    like the JSONL log, hold each step once, with the values of the log."""
    torch.set_num_threads(1)
    params = tiny_params(train__steps=12, train__eval_every=5, train__checkpoint_every=5,
                         train__report_to=["jsonl", "tensorboard"])
    paths = T.RunPaths.for_run(tmp_path, "hybrid")
    real = T.ema_momentum

    def crash_at_step_8(step, *args):
        if step == 7:  # 0-based: the eighth step, after seven logged ones
            raise RuntimeError("simulated crash")
        return real(step, *args)

    monkeypatch.setattr(T, "ema_momentum", crash_at_step_8)
    with pytest.raises(RuntimeError, match="simulated crash"):
        T.train(params, "hybrid", paths, data=tiny_data())
    assert max(read_events(paths.tensorboard_dir)["train/loss"]) == 7
    monkeypatch.setattr(T, "ema_momentum", real)
    T.train(params, "hybrid", paths, data=tiny_data(), resume=True)
    events, expected = read_events(paths.tensorboard_dir), log_scalars(paths.log_path)
    assert sorted(events["train/loss"]) == list(range(1, 13)) and set(events) == set(expected)
    for tag in expected:
        assert events[tag] == pytest.approx(expected[tag], rel=1e-6, abs=1e-12), tag


def test_tensorboard_scalars_of_a_record():
    record = {"step": 3, "epoch": 0, "loss": 2.5, "mlm_loss": 2.0, "jepa_loss": None, "lr": 1e-3, "flops": 9.0,
              "warning": "possible representation collapse"}
    assert tensorboard_scalars(record) == {"train/loss": 2.5, "train/mlm_loss": 2.0, "train/lr": 1e-3}
    assert tensorboard_scalars({"split": "validation", "step": 5, "mlm_loss": 4.0, "jepa_loss": 0.5}) == {
        "validation/mlm_loss": 4.0, "validation/jepa_loss": 0.5}


def test_report_to_must_keep_jsonl():
    from jepa_core.config import ParamsError

    with pytest.raises(ParamsError, match="report_to"):
        tiny_params(train__report_to=["tensorboard"])
    with pytest.raises(ParamsError, match="report_to"):
        tiny_params(train__report_to=["jsonl", "wandb"])
