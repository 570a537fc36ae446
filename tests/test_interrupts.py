"""Ctrl-C / SIGTERM during the workbook's pre-training: the runs finish their step and checkpoint, the runner
says so and exits 130 / 143, and the same command continues them exactly (study/interrupts.py,
pretrain/jobs.py, train.py's StopFlag)."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import torch
from _train_helpers import TINY, one_thread, read_log, tiny_data, tiny_data_dir, tiny_params
from nbformat.v4 import new_code_cell, new_notebook
from safetensors.torch import load

import jepa_core.pretrain.train as T
from jepa_core.pretrain import checkpoint as ckpt
from jepa_core.pretrain import jobs
from jepa_core.study import interrupts, steps
from jepa_core.study import workbook as wb

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "parameters" / "smoke.yaml"
single_thread = pytest.fixture(autouse=True)(one_thread)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load(path.read_bytes())  # copied into memory, not mapped to the file


def _same_weights(a: Path, b: Path) -> bool:
    x, y = _weights(a), _weights(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


# ---------------------------------------------------------------- pretrain_runs in this process (one at a time)

def _jobs(params):
    return [(o, params, o, 0) for o in params.objectives]  # names "hybrid", "mlm"


def test_sigterm_in_the_single_process_path_checkpoints_and_resumes_exactly(tmp_path, monkeypatch):
    """parallel_runs = 1 (the GPU path): the run in training finishes its step and checkpoints, the next run
    does not start, handlers are restored; the same call again ends where an uninterrupted one ends."""
    params = tiny_params(train__steps=12)
    for folder in ("run", "ref"):
        shutil.copytree(tiny_data_dir(), tmp_path / folder / "data")
    real = T.ema_momentum

    def terminate_during_step_6(step, *args):
        if step == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(step, *args)

    monkeypatch.setattr(T, "ema_momentum", terminate_during_step_6)
    with pytest.raises(jobs.PretrainingInterrupted) as info:
        jobs.pretrain_runs(_jobs(params), tmp_path / "run", 1)
    monkeypatch.undo()
    stopped = info.value
    assert stopped.signum == signal.SIGTERM and stopped.checkpoints == {"hybrid": 6} and stopped.not_started == ["mlm"]
    assert str(stopped) == "checkpoints written at step 6 for hybrid; not started: mlm"
    assert ckpt.saved_step(tmp_path / "run" / "checkpoints" / "hybrid") == 6
    assert not (tmp_path / "run" / "checkpoints" / "mlm").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL and T.StopFlag.noted is None

    resumed = jobs.pretrain_runs(_jobs(params), tmp_path / "run", 1)
    assert resumed["hybrid"]["resumed_from_step"] == 6 and resumed["mlm"]["resumed_from_step"] is None
    jobs.pretrain_runs(_jobs(params), tmp_path / "ref", 1)
    for name in ("hybrid", "mlm"):
        assert _same_weights(tmp_path / "run" / "models" / name / "model.safetensors",
                             tmp_path / "ref" / "models" / name / "model.safetensors"), name


def test_a_signal_outside_the_training_loop_is_noted_not_fatal(tmp_path, monkeypatch):
    """SIGTERM while the data loads: the process survives and no run starts. SIGTERM while a run sets up
    (before its loop): that run trains one step and checkpoints, no other run starts."""
    shutil.copytree(tiny_data_dir(), tmp_path / "data")
    params = tiny_params(train__steps=12)

    def load_then_signal(folder):
        os.kill(os.getpid(), signal.SIGTERM)
        return tiny_data()

    monkeypatch.setattr(jobs, "load_prepared_data", load_then_signal)
    with pytest.raises(jobs.PretrainingInterrupted) as info:
        jobs.pretrain_runs(_jobs(params), tmp_path, 1)
    assert info.value.checkpoints == {} and info.value.not_started == ["hybrid", "mlm"]
    assert str(info.value) == "no run was in training: no checkpoint written; not started: hybrid, mlm"
    monkeypatch.undo()

    real = T.step_costs

    def signal_while_setting_up(*args):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args)

    monkeypatch.setattr(T, "step_costs", signal_while_setting_up)
    with pytest.raises(jobs.PretrainingInterrupted) as info:
        jobs.pretrain_runs(_jobs(params), tmp_path, 1)
    assert info.value.checkpoints == {"hybrid": 1} and info.value.not_started == ["mlm"]
    assert ckpt.saved_step(tmp_path / "checkpoints" / "hybrid") == 1
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


# ---------------------------------------------------------------- the runner, with a stand-in kernel

class FakeKernel:
    """What Interrupts reads of a kernel manager: `has_kernel` and `provisioner.pgid`; the "kernel" is a
    process in its own session that writes down the signal it gets and exits."""

    def __init__(self, folder: Path):
        code = ("import signal, sys, time, pathlib\n"
                "def stop(signum, frame):\n"
                f"    pathlib.Path({str(folder / 'got')!r}).write_text(signal.Signals(signum).name)\n"
                "    sys.exit(0)\n"
                "signal.signal(signal.SIGTERM, stop)\n"
                "signal.signal(signal.SIGINT, stop)\n"
                f"pathlib.Path({str(folder / 'ready')!r}).touch()\n"
                "time.sleep(60)\n")
        self.process = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
        self.provisioner = type("P", (), {"pgid": self.process.pid})()
        self.has_kernel = True
        while not (folder / "ready").exists():
            time.sleep(0.01)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_runner_forwards_the_signal_and_reports_the_checkpoints(tmp_path, signum):
    """The runner passes the signal to the kernel's process group, waits for the notebook, and turns the
    pre-training's PretrainingInterrupted into WorkbookInterrupted (exit 128 + signal); the step is not done."""
    def executor(source, output, parameters, run_dir):
        shutil.copy(source, output)
        if source.stem != "02_pretrain":
            return
        kernel = FakeKernel(tmp_path)
        with interrupts.RUNNER.forwarding_to(kernel):
            os.kill(os.getpid(), signum)  # as a terminal's Ctrl-C or a scheduler's SIGTERM would
            kernel.process.wait(timeout=30)  # the notebook ends (its cell fails) once the kernel stops
        error = wb.WorkbookError(source.stem, output, "PretrainingInterrupted: ...")
        error.ename, error.evalue = "PretrainingInterrupted", "checkpoints written at step 7 for hybrid, step 6 for mlm"
        raise error

    # what the process had before: Python's default handlers, or SIGINT ignored in a shell's background job
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    with pytest.raises(interrupts.WorkbookInterrupted) as info:
        wb.run(SMOKE, outputs_dir=tmp_path, executor=executor, html=False, echo=lambda s: None)
    assert (tmp_path / "got").read_text() == signal.Signals(signum).name  # forwarded, the same signal
    assert info.value.exit_code == 128 + signum
    assert str(info.value) == ("checkpoints written at step 7 for hybrid, step 6 for mlm; run the same command "
                               "again to continue")
    assert not (tmp_path / "smoke" / ".done" / "02_pretrain.json").exists()  # 02 runs again next time
    assert (tmp_path / "smoke" / ".done" / "01_data_prep.json").exists()
    assert {s: signal.getsignal(s) for s in before} == before  # the runner's handlers are gone again


def test_a_signal_while_no_kernel_runs_stops_the_runner_at_once(tmp_path):
    ran = []

    def executor(source, output, parameters, run_dir):
        ran.append(source.stem)
        shutil.copy(source, output)
        if source.stem == "03_probe":
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(interrupts.WorkbookInterrupted) as info:
        wb.run(SMOKE, outputs_dir=tmp_path, executor=executor, html=False, echo=lambda s: None)
    assert info.value.exit_code == 143 and "step 03_probe stopped" in str(info.value)
    assert ran == ["01_data_prep", "02_pretrain", "03_probe"]


# ---------------------------------------------------------------- the real thing: SIGTERM to the process group

RUNNER = """
import functools, sys
from pathlib import Path
from jepa_core.study import workbook as wb
wb.run = functools.partial(wb.run, notebooks_dir=Path(sys.argv[1]))
sys.exit(wb.main(sys.argv[2:]))
"""


def _notebooks(folder: Path) -> None:
    """Notebook 02's pre-training cell (pretrain_all, as the real one calls it, without its table and figures);
    the other steps print only (the prepared data is copied in beforehand)."""
    folder.mkdir()
    parameters = 'params_file = ""\nrun_dir = None\noverrides = {}\nresume = True'
    pretrain = ("from jepa_core.pretrain.jobs import pretrain_all\n"
                "from jepa_core.study.workbook import open_run\n"
                "params, run_dir = open_run(params_file, run_dir, overrides)\n"
                "summaries = pretrain_all(params, run_dir, resume)")
    assert "pretrain_all(params, run_dir, resume)" in (REPO / "notebooks" / "02_pretrain.ipynb").read_text()
    for step in steps.STEPS:
        nb = new_notebook(cells=[new_code_cell(parameters, metadata={"tags": ["parameters"]}),
                                 new_code_cell(pretrain if step == "02_pretrain" else "print('ok')")])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, folder / f"{step}.ipynb")


STEPS = 100


def _start(tmp_path: Path, name: str, settings: dict) -> tuple[subprocess.Popen, Path]:
    sets = [a for k, v in settings.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    log = tmp_path / f"{name}.txt"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1"}  # the kernel trains on one thread, as the reference below
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(tmp_path / "nbs"), "run", str(SMOKE), "--outputs",
                             str(tmp_path / "out"), "--no-html", *sets], cwd=REPO, env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)  # its own process group, as a scheduler's job
    return proc, log


def _last_step(log_path: Path) -> int:
    steps = [r["step"] for r in read_log(log_path)[0]] if log_path.is_file() else []
    return steps[-1] if steps else 0


def _interrupt_and_resume(tmp_path: Path, parallel: int, signum: int) -> None:
    """`workbook run` (the real notebook 02, tiny runs), `signum` to the runner's process group once the
    first run has trained 3 steps: every run in training finishes its step and checkpoints there, the
    runner names the checkpoints and exits 128 + signum; the same command again resumes them, and the
    weights equal those of an uninterrupted run."""
    settings = {**TINY, "train.steps": STEPS, "train.parallel_runs": parallel}
    _notebooks(tmp_path / "nbs")
    run_dir = tmp_path / "out" / "smoke"
    shutil.copytree(tiny_data_dir(), run_dir / "data")
    proc, console = _start(tmp_path, "first", settings)
    try:
        deadline = time.monotonic() + 240
        # side by side, both runs must be training (spawned workers start at different moments: the hybrid
        # once reached step 4 before the MLM worker had started, which the test then read as a failure)
        started = ("hybrid", "mlm") if parallel > 1 else ("hybrid",)
        while min(_last_step(run_dir / "logs" / f"{name}.jsonl") for name in started) < 3:
            assert proc.poll() is None, console.read_text()[-3000:]
            assert time.monotonic() < deadline, "pre-training did not start within 240 s"
            time.sleep(0.02)
        os.killpg(proc.pid, signum)  # the runner's whole group, as a scheduler (or a terminal's Ctrl-C) sends it
        proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    out = console.read_text()
    assert proc.returncode == 128 + signum, out[-3000:]
    said = re.search(rf"interrupted \({signal.Signals(signum).name}\): checkpoints written at (.*); run the same "
                     r"command again to continue", out)
    assert said, out[-3000:]
    steps = {name: int(step) for step, name in re.findall(r"step (\d+) for (\w+)", said.group(1))}
    assert "hybrid" in steps and (parallel == 1) == ("not started: mlm" in said.group(1)), said.group(0)
    for name, step in steps.items():
        assert 1 <= step < STEPS
        assert ckpt.saved_step(run_dir / "checkpoints" / name) == step  # the checkpoint at the interrupted step
        assert _last_step(run_dir / "logs" / f"{name}.jsonl") == step  # the step in flight finished
    assert not (run_dir / "models" / "hybrid").exists() and not (run_dir / ".done" / "02_pretrain.json").exists()

    proc, console = _start(tmp_path, "again", settings)  # the same command: continues from the checkpoints
    assert proc.wait(timeout=600) == 0, console.read_text()[-3000:]
    for name in ("hybrid", "mlm"):
        summary = json.loads((run_dir / "models" / name / "train_summary.json").read_text())
        assert summary["resumed_from_step"] == steps.get(name) and summary["steps"] == STEPS, name

    reference = tmp_path / "reference"
    shutil.copytree(tiny_data_dir(), reference / "data")
    params = tiny_params(**{k.replace(".", "__"): v for k, v in settings.items()})
    jobs.pretrain_all(params, reference, echo=lambda _line: None)  # uninterrupted, the same way (pool or not)
    for name in ("hybrid", "mlm"):
        assert _same_weights(run_dir / "models" / name / "model.safetensors",
                             reference / "models" / name / "model.safetensors"), name


def test_sigterm_to_the_workbook_process_group_checkpoints_and_resumes_exactly(tmp_path):
    """One run at a time, in the kernel (train.parallel_runs = 1, the GPU profiles' path)."""
    _interrupt_and_resume(tmp_path, parallel=1, signum=signal.SIGTERM)


@pytest.mark.slow
def test_sigterm_reaches_the_pool_workers_too(tmp_path):
    """Two runs at once in spawned pool workers (train.parallel_runs = 2, the cpu profile's path): both
    checkpoint at their interrupted step. Slow: two worker start-ups per workbook run (a minute or more)."""
    _interrupt_and_resume(tmp_path, parallel=2, signum=signal.SIGTERM)
