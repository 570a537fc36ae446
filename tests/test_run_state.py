"""run_state.py: the run state as one checkpoint unit, the step plan, the time budget (fake clock), the log record."""
import io
import json

import pytest
import torch
from _train_helpers import tiny_params

from jepa_core.pretrain.run_state import (
    COLLAPSE_RANK,
    JsonlLog,
    RunState,
    Throughput,
    TimeBudget,
    log_record,
    plan_steps,
)


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = 100.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


# ---------------------------------------------------------------- RunState

def test_advance_counts_and_wraps_the_epoch():
    run = RunState(total_steps=10, budget_note="n", epoch=2, batch=1)
    for _ in range(3):
        run.advance(tokens=256, flops=1.5e6, batches_per_epoch=3)
    assert (run.step, run.epoch, run.batch, run.tokens, run.flops) == (3, 3, 1, 768, 4.5e6)
    assert run.data_position == {"epoch": 3, "batch": 1}


def test_run_state_round_trips_through_a_weights_only_checkpoint():
    run = RunState(total_steps=17, budget_note="equal wall-clock", step=5, epoch=1, batch=2, tokens=1280,
                   flops=7.5e9, elapsed_s=12.25, warned_collapse=True)
    buffer = io.BytesIO()
    torch.save({"step": run.step, "data_position": run.data_position, "extra": {"seed": 0, **run.to_checkpoint()}},
               buffer)
    buffer.seek(0)
    assert RunState.from_checkpoint(torch.load(buffer, weights_only=True)) == run


def test_run_state_reads_the_flat_layout_of_older_checkpoints():
    state = {"step": 4, "data_position": {"epoch": 0, "batch": 4},
             "extra": {"objective": "mlm", "seed": 0, "weight_keys": {}, "total_steps": 30,
                       "budget_note": "train.steps=30",
                       "elapsed_s": 2.5, "tokens": 1024, "flops": 8.0e7, "warned_collapse": False}}
    assert RunState.from_checkpoint(state) == RunState(30, "train.steps=30", step=4, epoch=0, batch=4, tokens=1024,
                                                       flops=8.0e7, elapsed_s=2.5)


# ---------------------------------------------------------------- the plan and the time budget

def test_plan_steps_under_each_budget():
    flops = {"hybrid": 3.0e9, "mlm": 1.2e9}
    steps = tiny_params(train__steps=10)
    assert plan_steps(steps, "mlm", flops) == (10, "train.steps=10")
    parity = tiny_params(train__steps=10, train__budget="flops")
    assert plan_steps(parity, "hybrid", flops) == (10, "train.steps=10")
    total, note = plan_steps(parity, "mlm", flops)
    assert total == 25 and note.startswith("equal FLOPs: 10 hybrid steps")  # 10 x 3.0 / 1.2
    seconds = tiny_params(train__steps=5, train__budget="seconds", train__budget_seconds=60)
    assert plan_steps(seconds, "mlm", flops) == (12, "provisional (5) until the timed warm-up of budget_seconds=60.0")
    assert plan_steps(tiny_params(train__steps=40, train__budget="seconds", train__budget_seconds=60), "hybrid",
                      flops)[0] == 40  # at least the timed steps (10 after the first, then one more)


def test_time_budget_times_steps_2_to_n_plus_1_and_replans_once():
    clock = FakeClock()
    budget = TimeBudget(seconds=10.0, probing=True, clock=clock, probe_steps=3)
    plans = []
    for step, seconds in enumerate([2.0, 0.5, 0.5, 0.5, 0.5, 0.5], start=1):  # step 1 carries start-up costs
        assert not budget.time_is_up()
        clock.tick(seconds)
        plans.append(budget.replan(step))
    # timed: steps 2-4, 1.5 s -> 0.5 s a step; at 3.5 s, 6.5 s are left: 13 more steps
    assert plans[:3] == [None, None, None] and plans[4:] == [None, None]
    assert plans[3] == (17, "equal wall-clock: 10 s at 500.0 ms/step (timed over steps 2-4) -> 17 steps")
    assert budget.elapsed() == pytest.approx(4.5)
    clock.tick(5.25)
    assert not budget.time_is_up()
    clock.tick(0.25)
    assert budget.time_is_up()


def test_time_budget_decides_on_the_agreed_values():
    clock = FakeClock()
    budget = TimeBudget(seconds=10.0, probing=True, clock=clock, probe_steps=2)
    slower_elsewhere = lambda values: [2 * v for v in values]  # noqa: E731 (the other process is twice as slow)
    for step in (1, 2):
        clock.tick(1.0)
        assert budget.replan(step, slower_elsewhere) is None
    clock.tick(1.0)
    assert budget.replan(3, slower_elsewhere)[0] == 3 + int(7.0 / 2.0)  # 2 s a step, 7 s left
    clock.tick(2.0)  # 5 s here, 10 s as agreed
    assert budget.time_is_up(slower_elsewhere) and not budget.time_is_up()


def test_time_budget_counts_earlier_sessions_and_plans_at_least_one_more_step():
    clock = FakeClock()
    resumed = TimeBudget(seconds=10.0, elapsed_before=9.0, clock=clock)  # resumed: nothing to time
    clock.tick(0.5)
    assert not resumed.time_is_up() and resumed.replan(1) is None and resumed.replan(11) is None
    clock.tick(0.5)
    assert resumed.time_is_up()
    slow = TimeBudget(seconds=1.0, probing=True, clock=clock, probe_steps=2)
    for step in (1, 2, 3):
        clock.tick(1.0)
        plan = slow.replan(step)
    assert plan[0] == 4  # the budget is spent already: one more step, then time_is_up stops the run


def test_time_budget_without_seconds_is_only_a_clock():
    clock = FakeClock()
    budget = TimeBudget(elapsed_before=3.0, clock=clock)
    clock.tick(1e9)
    assert not budget.time_is_up() and budget.replan(1) is None and budget.elapsed() == pytest.approx(3.0 + 1e9)
    with pytest.raises(ValueError, match="seconds"):
        TimeBudget(probing=True)


def test_throughput_between_calls():
    clock = FakeClock()
    rate = Throughput(tokens_per_step=256, step=4, clock=clock)
    clock.tick(2.0)
    assert rate(8) == pytest.approx(4 * 256 / 2.0)
    clock.tick(0.5)
    assert rate(9) == pytest.approx(256 / 0.5)


# ---------------------------------------------------------------- the log record

VALUES = {"loss": 3.0, "mlm_loss": 5.0, "jepa_loss": 1.0, "lambda": 0.5, "lr": 1e-3, "ema_momentum": 0.996,
          "grad_norm": 2.0, "tokens_per_s": 1000.0, "target_std": 0.8, "batch_effective_rank": 6.0, "elapsed_s": 7.0}


def test_log_record_fields_in_order_and_nulls_for_mlm():
    run = RunState(30, "n", step=12, epoch=1, flops=1.2e9)
    record = log_record(run, VALUES, hybrid=True, collapse_std=0.01)
    assert list(record) == ["step", "epoch", "loss", "mlm_loss", "jepa_loss", "lambda", "lr", "ema_momentum",
                            "grad_norm",
                            "tokens_per_s", "target_std", "batch_effective_rank", "flops", "elapsed_s"]
    assert record == {"step": 12, "epoch": 1, "flops": 1.2e9, **VALUES}
    mlm = log_record(run, {**VALUES, "jepa_loss": 0.0, "lambda": None, "target_std": 0.0}, hybrid=False,
                     collapse_std=0.01)
    assert [mlm[k] for k in ("jepa_loss", "lambda", "ema_momentum", "target_std")] == [None] * 4
    assert mlm["loss"] == 3.0 and mlm["lr"] == 1e-3 and "warning" not in mlm  # target_std is no signal without JEPA


def test_log_record_warns_on_each_collapse_signal():
    run = RunState(30, "n", step=3)
    low_std = log_record(run, VALUES, hybrid=True, collapse_std=0.9)
    assert low_std["warning"] == "possible representation collapse: target_std 0.8 < train.collapse_std 0.9"
    both = log_record(run, {**VALUES, "batch_effective_rank": 1.2}, hybrid=True, collapse_std=0.9)
    assert both["warning"].endswith(f"; batch effective rank 1.20 < {COLLAPSE_RANK}")
    mlm = log_record(run, {**VALUES, "batch_effective_rank": 1.2}, hybrid=False, collapse_std=0.9)
    assert mlm["warning"] == f"possible representation collapse: batch effective rank 1.20 < {COLLAPSE_RANK}"


def test_jsonl_log_on_resume_keeps_records_up_to_the_checkpoint_and_drops_a_torn_line(tmp_path):
    path = tmp_path / "logs" / "run.jsonl"
    path.parent.mkdir()
    path.write_text("\n".join(json.dumps(r) for r in [{"step": 1}, {"split": "validation", "step": 2}, {"step": 2},
                                                        {"step": 3}]) + '\n{"step": 4, "lo')
    log = JsonlLog(path, enabled=True, keep_until_step=2)
    log.write({"step": 3, "loss": 1.0})
    log.close()
    assert [json.loads(ln) for ln in path.read_text().splitlines()] == [
        {"step": 1}, {"split": "validation", "step": 2}, {"step": 2}, {"step": 3, "loss": 1.0}]
    JsonlLog(tmp_path / "other.jsonl", enabled=False, keep_until_step=None).write({"step": 1})  # not the main process
    assert not (tmp_path / "other.jsonl").exists()
