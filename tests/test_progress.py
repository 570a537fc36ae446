"""progress.py: the JSONL tailer, the line formatter, non-TTY throttling (a fake clock, no timed
assertions), the estimate, and the workbook runner's failure and end reports."""
import io
import json

import pytest

from jepa_core import progress
from jepa_core.study import steps as workbook_steps
from jepa_core.study import workbook as wb


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _append(path, *records, raw=""):
    with open(path, "a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records) + raw)


def _step(step, elapsed, **extra):
    return {"step": step, "loss": 7.0 - step / 100, "mlm_loss": 7.5, "lambda": 0.5, "tokens_per_s": 4000.0,
            "elapsed_s": elapsed, **extra}


def test_tail_keeps_a_partial_trailing_line_until_it_is_complete(tmp_path):
    path = tmp_path / "log.jsonl"
    tail = progress.JsonlTail(path)
    assert tail.read() == []  # no file yet
    _append(path, {"step": 1}, raw='{"step": 2, "lo')
    assert tail.read() == [{"step": 1}]
    _append(path, raw='ss": 3.5}\n')
    assert tail.read() == [{"step": 2, "loss": 3.5}]
    assert tail.read() == []
    _append(path, raw="not json\n")
    assert tail.read() == []


def test_tail_from_end_skips_old_records_and_rereads_a_replaced_file(tmp_path):
    path = tmp_path / "log.jsonl"
    _append(path, {"step": 1}, {"step": 2})
    tail = progress.JsonlTail(path, from_end=True)
    assert tail.read() == []
    _append(path, {"step": 3})
    assert tail.read() == [{"step": 3}]
    path.write_text(json.dumps({"step": 1}) + "\n")  # shrunk: a resumed log rewritten up to its checkpoint
    assert tail.read() == [{"step": 1}]


def test_training_line_shows_step_losses_lambda_throughput_and_eta():
    model = progress.TrainingModel("hybrid-s0", total_steps=100)
    assert model.line() == "pretrain hybrid-s0: starting"
    model.update(_step(10, 5.0))
    model.update(_step(20, 10.0))  # 0.5 s/step, 80 steps left -> 40 s
    model.update({"split": "validation", "step": 20, "mlm_loss": 7.25})
    line = model.line()
    assert line.startswith("pretrain hybrid-s0: step 20/100  loss 6.800  mlm 7.500  λ 0.500  4,000 tok/s")
    assert "ETA 40s" in line and "(val mlm 7.250 at 20)" in line
    mlm = progress.TrainingModel("mlm", total_steps=None)
    mlm.update(_step(3, 1.0, **{"lambda": None}))
    assert "step 3  " in mlm.line() and "λ –" in mlm.line() and "ETA" not in mlm.line()


def test_non_tty_board_prints_a_changed_line_at_most_once_per_interval():
    out, clock = io.StringIO(), FakeClock()
    board = progress.Board(out, tty=False, interval=10.0, clock=clock)
    board.status("a", "a 1")  # first line of a key: printed at once
    board.status("a", "a 2")  # changed, but within the interval
    clock.now = 5.0
    board.status("b", "b 1")  # another key has its own interval
    clock.now = 10.0
    board.status("a", "a 3")
    board.status("a", "a 3")  # unchanged: never repeated
    board.status("a", "a 4")
    board.flush()  # the end of a step: the latest line of every key
    assert out.getvalue().splitlines() == ["a 1", "b 1", "a 3", "a 4"]


def test_tty_board_redraws_one_line_per_key_in_place():
    out = io.StringIO()
    board = progress.Board(out, tty=True)
    board.status("a", "a 1")
    board.status("b", "b 1")
    board.status("a", "a 2")
    board.event("note")
    text = out.getvalue()
    assert text.endswith("\x1b[2F\x1b[Jnote\na 2\x1b[K\nb 1\x1b[K\n")  # cleared the block, event, block again


def _watcher(tmp_path, out, clock, models=("hybrid", "mlm"), total=40, parallel=2):
    (tmp_path / "logs").mkdir()
    board = progress.Board(out, tty=False, interval=10.0, clock=clock)
    return progress.Watcher(tmp_path, list(models), total, parallel, board)


def test_watcher_prints_training_lines_the_estimate_and_the_last_line_when_done(tmp_path):
    out, clock = io.StringIO(), FakeClock()
    watcher = _watcher(tmp_path, out, clock)
    _append(tmp_path / "logs" / "hybrid.jsonl", *[_step(s, s * 1.0) for s in range(1, 22)])  # 1 s/step
    _append(tmp_path / "logs" / "mlm.jsonl", *[_step(s, s * 0.5) for s in range(1, 22)])  # 0.5 s/step
    watcher.poll()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("pretrain hybrid: step 21/40") and "ETA 19s" in lines[0]
    assert lines[1] == "[estimate] hybrid: 1.00 s/step over 20 steps → 40s per run of 40 steps"
    assert lines[2].startswith("pretrain mlm: step 21/40")
    assert lines[3] == "[estimate] mlm: 0.50 s/step over 20 steps → 20s per run of 40 steps"
    # (40 + 20 s of work) / 2 runs at a time
    assert lines[4].startswith("[estimate] pre-training ≈ 30s for 2 run(s), 2 at a time")
    _append(tmp_path / "logs" / "hybrid.jsonl", *[_step(s, s * 1.0) for s in range(22, 41)])
    watcher.poll()  # within the interval, but the run finished: its last line is printed
    assert out.getvalue().splitlines()[-1].startswith("pretrain hybrid: step 40/40")
    assert watcher.last_lines()[0].startswith("pretrain hybrid: step 40/40")


def test_watcher_reports_evaluation_units(tmp_path):
    out, clock = io.StringIO(), FakeClock()
    watcher = _watcher(tmp_path, out, clock)
    progress.note(tmp_path, phase="start", units=2, workers=1)
    progress.note(tmp_path, unit="hybrid/sst2", phase="encode", split="train", n=2000)
    watcher.poll()
    progress.note(tmp_path, unit="hybrid/sst2", phase="pooling", pooling="max", i=2, of=5)
    watcher.poll()  # changed within the interval: held back
    assert watcher.last_lines() == ["evaluate hybrid/sst2: pooling max (2/5): probe and geometry"]
    clock.now = 25.0  # a long probe: no new record, but its line still reaches the log every interval
    watcher.poll()
    clock.now = 30.0
    watcher.poll()  # within the interval: held back
    clock.now = 36.0
    watcher.poll()
    progress.note(tmp_path, unit="hybrid/sst2", phase="done")
    watcher.poll()
    assert out.getvalue().splitlines() == ["evaluate hybrid/sst2: encoding train (2,000 texts)  (0 s)",
                                           "evaluate hybrid/sst2: pooling max (2/5): probe and geometry  (25 s)",
                                           "evaluate hybrid/sst2: pooling max (2/5): probe and geometry  (36 s)",
                                           "evaluate hybrid/sst2: done (1/2 units)"]


def test_runner_reports_how_far_a_failed_step_got_and_how_to_resume(tmp_path):
    lines = []

    def executor(source, output, parameters, run_dir):
        if source.stem == "02_pretrain":
            (run_dir / "logs").mkdir(exist_ok=True)
            _append(run_dir / "logs" / "hybrid.jsonl", _step(7, 3.5))
            raise wb.WorkbookError(source.stem, output, "RuntimeError: out of memory")
        output.write_text("{}")

    with pytest.raises(wb.WorkbookError):
        wb.run(workbook_steps.PACKAGE_ROOT / "parameters" / "smoke.yaml", outputs_dir=tmp_path, executor=executor,
               html=False, echo=lines.append, board=progress.Board(io.StringIO(), tty=False))
    text = "\n".join(lines)
    assert "[pretrain] plan: 2 run(s) (hybrid, mlm), 30 steps each" in text
    assert "02_pretrain stopped after" in text and "  pretrain hybrid: step 7/30  loss 6.930" in text
    assert "to resume: run the same command again" in text


def test_peak_memory_is_positive_and_in_gigabytes():
    memory = progress.peak_memory()
    assert 0.001 < memory["runner_gb"] < 1000 and memory["largest_child_gb"] >= 0


def test_a_display_error_is_reported_once_and_does_not_fail_the_step(tmp_path, monkeypatch):
    out, clock = io.StringIO(), FakeClock()
    watcher = _watcher(tmp_path, out, clock)

    def broken(record):
        raise ValueError("bad record")

    monkeypatch.setattr(progress, "eval_line", broken)
    with watcher.running(period=3600):  # the thread never polls: only the final poll of __exit__
        progress.note(tmp_path, unit="mlm/cola", phase="encode", split="dev", n=5)
    assert watcher.broken and not watcher.safe_poll()
    assert out.getvalue().splitlines() == ["(progress display stopped: ValueError: bad record)"]


def test_tty_board_keeps_a_finished_line_above_the_live_block():
    out = io.StringIO()
    board = progress.Board(out, tty=True)
    board.status("a", "a 9/9")
    board.status("b", "b 1")
    board.finish("a")
    assert out.getvalue().endswith("\x1b[2F\x1b[Ja 9/9\nb 1\x1b[K\n") and list(board.lines) == ["b"]


def test_a_quiet_step_still_prints_a_line_every_interval(tmp_path):
    """Kernel start-up or a notebook's closing cells report nothing: the step's label and elapsed time
    fill the silence, but only when nothing else was printed for the interval."""
    out, clock = io.StringIO(), FakeClock()
    board = progress.Board(out, tty=False, interval=10.0, clock=clock)
    watcher = progress.Watcher(tmp_path, [], None, 1, board, label="[3/5] 03_probe")
    for now in (5.0, 10.0, 15.0, 21.0):
        clock.now = now
        watcher.poll()
    board.event("evaluate hybrid/sst2: done (1/2 units)")  # something else was printed at 21 s ...
    clock.now = 29.0
    watcher.poll()  # ... so 8 s later the step is not quiet yet
    clock.now = 31.0
    watcher.poll()
    assert out.getvalue().splitlines() == ["[3/5] 03_probe: running (10s)", "[3/5] 03_probe: running (21s)",
                                           "evaluate hybrid/sst2: done (1/2 units)",
                                           "[3/5] 03_probe: running (31s)"]
