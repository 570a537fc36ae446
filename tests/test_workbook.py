"""Workbook runner: notebook hygiene, step fingerprints, reuse / force / resume logic, early
parameter errors, and one real papermill run of tiny notebooks (failure reporting, HTML)."""
import io
import json
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
from _train_helpers import one_thread, tiny_data, tiny_params
from nbformat.v4 import new_code_cell, new_notebook

from jepa_core import progress, runs
from jepa_core.config import NON_WEIGHT_KEYS, ParamsError, load_params, parse_overrides
from jepa_core.pretrain import jobs
from jepa_core.study import steps as workbook_steps
from jepa_core.study import workbook as wb

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "parameters" / "smoke.yaml"


# ---------------------------------------------------------------- the committed notebooks

def test_notebooks_match_generator():
    sys.path.insert(0, str(REPO / "notebooks"))
    try:
        import _build
    finally:
        sys.path.pop(0)
    assert _build.main(check=True) == 0, "run: .venv/bin/python notebooks/_build.py"


@pytest.mark.parametrize("step", list(workbook_steps.STEPS))
def test_notebook_has_one_parameters_cell_and_no_outputs(step):
    nb = nbformat.read(REPO / "notebooks" / f"{step}.ipynb", as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for name in ("params_file", "run_dir", "overrides"):
        assert f"{name} =" in tagged[0].source
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    after = code[code.index(tagged[0]) + 1]
    assert "open_run(params_file, run_dir, overrides)" in after.source  # validation comes first


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
def test_profiles_are_valid_and_fully_commented(profile):
    path = REPO / "parameters" / f"{profile}.yaml"
    load_params(path)
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if profile != "smoke" and stripped and not stripped.startswith("#") and not stripped.endswith(":"):
            assert "#" in line, f"{path.name}: undocumented key: {line}"


# ---------------------------------------------------------------- fingerprints and the plan

def test_fingerprints_chain_downstream_only():
    base = workbook_steps.step_fingerprints(load_params(SMOKE))
    evals = workbook_steps.step_fingerprints(load_params(SMOKE, {"eval.bootstrap": 50}))
    train = workbook_steps.step_fingerprints(load_params(SMOKE, {"train.steps": 31}))
    data = workbook_steps.step_fingerprints(load_params(SMOKE, {"data.vocab_size": 2001}))
    renamed = workbook_steps.step_fingerprints(load_params(SMOKE, {"run_name": "other"}))
    changed = lambda fp: [s for s in workbook_steps.STEPS if fp[s] != base[s]]  # noqa: E731
    assert changed(evals) == ["03_probe", "04_geometry", "05_ablations"]
    assert changed(train) == ["02_pretrain", "03_probe", "04_geometry", "05_ablations"]
    assert changed(data) == list(workbook_steps.STEPS)
    assert changed(renamed) == []


def test_ablation_keys_rerun_only_notebook_05():
    """ablations.* and eval.reference_models (in 03's `eval` section, but read by 05 only) re-run 05
    alone, so turning the study on costs no re-run of 01-04."""
    base = workbook_steps.step_fingerprints(load_params(SMOKE))
    changed = lambda fp: [s for s in workbook_steps.STEPS if fp[s] != base[s]]  # noqa: E731
    for overrides in ({"eval.reference_models": ["all-MiniLM-L6-v2"]}, {"ablations.variants": ["hybrid-shared"]},
                      {"ablations.seeds": [0, 1]}):
        params = load_params(SMOKE, overrides)
        assert changed(workbook_steps.step_fingerprints(params)) == ["05_ablations"], overrides
        assert params == load_params(SMOKE, overrides)  # fingerprinting left the parameters intact


def test_non_weight_keys_rerun_no_pretraining():
    """Keys that cannot change the trained weights (config.NON_WEIGHT_KEYS) leave every fingerprint as it
    is, each alone and all at once; a weight key of the same section (train.lr) re-runs 02 onwards."""
    base = workbook_steps.step_fingerprints(load_params(SMOKE))
    changed = lambda fp: [s for s in workbook_steps.STEPS if fp[s] != base[s]]  # noqa: E731
    p = load_params(SMOKE).train
    others = {"train.log_every": p.log_every + 1, "train.parallel_runs": p.parallel_runs + 1,
              "train.eval_every": p.eval_every + 1, "train.eval_batches": p.eval_batches + 1,
              "train.checkpoint_every": p.checkpoint_every + 1, "train.num_workers": p.num_workers + 1,
              "train.compile": not p.compile, "train.static_shapes": not p.static_shapes,
              "train.collapse_std": p.collapse_std * 2, "train.snapshots": p.snapshots + 1,
              "train.report_to": ["jsonl"] if p.report_to != ["jsonl"] else ["jsonl", "tensorboard"]}
    assert others.keys() == NON_WEIGHT_KEYS.keys()  # a key added there is added here
    for key, value in others.items():
        assert changed(workbook_steps.step_fingerprints(load_params(SMOKE, {key: value}))) == [], key
    assert changed(workbook_steps.step_fingerprints(load_params(SMOKE, others))) == []
    assert changed(workbook_steps.step_fingerprints(load_params(SMOKE, {"train.lr": p.lr * 2}))) == [
        "02_pretrain", "03_probe", "04_geometry", "05_ablations"]


def _mark_done(run_dir: Path, fingerprints: dict, steps):
    (run_dir / "notebooks").mkdir(parents=True, exist_ok=True)
    (run_dir / ".done").mkdir(exist_ok=True)
    for s in steps:
        (run_dir / "notebooks" / f"{s}.ipynb").write_text("{}")
        (run_dir / ".done" / f"{s}.json").write_text(json.dumps({"fingerprint": fingerprints[s]}))


def test_plan(tmp_path):
    fps = {s: f"fp{i}" for i, s in enumerate(workbook_steps.STEPS)}
    steps = list(workbook_steps.STEPS)
    assert all(workbook_steps.plan(tmp_path, fps).values())  # nothing done yet
    _mark_done(tmp_path, fps, steps)
    assert not any(workbook_steps.plan(tmp_path, fps).values())  # everything reusable
    assert all(workbook_steps.plan(tmp_path, fps, force=True).values())
    (tmp_path / ".done" / "02_pretrain.json").unlink()  # interrupted during step 2
    assert [s for s, run in workbook_steps.plan(tmp_path, fps).items() if run] == steps[1:]
    _mark_done(tmp_path, fps, steps)
    assert [s for s, run in workbook_steps.plan(tmp_path, {**fps, "03_probe": "new"}).items() if run] == steps[2:]
    (tmp_path / "notebooks" / "01_data_prep.ipynb").unlink()  # marker without its notebook: not done
    assert all(workbook_steps.plan(tmp_path, fps).values())


# ---------------------------------------------------------------- run() with a fake executor

class FakeExecutor:
    """Records the steps it runs; copies the source notebook as the 'executed' one; can fail."""

    def __init__(self, fail_at: str | None = None):
        self.ran, self.fail_at, self.parameters = [], fail_at, {}

    def __call__(self, source: Path, output: Path, parameters: dict, run_dir: Path):
        self.ran.append(source.stem)
        self.parameters[source.stem] = parameters
        shutil.copy(source, output)
        if source.stem == self.fail_at:
            raise wb.WorkbookError(source.stem, output, "RuntimeError: boom")


def _run(tmp_path, executor, **kw):
    return wb.run(SMOKE, outputs_dir=tmp_path, executor=executor, html=False, echo=lambda s: None, **kw)


def test_run_reuses_forces_and_resumes(tmp_path):
    first = FakeExecutor()
    _run(tmp_path, first)
    assert first.ran == list(workbook_steps.STEPS)
    run_dir = tmp_path / "smoke"
    assert load_params(run_dir / "params.yaml") == load_params(SMOKE)
    p = first.parameters["02_pretrain"]
    assert p["params_file"] == str(run_dir / "params.yaml") and p["run_dir"] == str(run_dir)
    assert p["resume"] is True and "resume" not in first.parameters["01_data_prep"]

    again = FakeExecutor()
    results = _run(tmp_path, again)
    assert again.ran == [] and not any(r.ran for r in results)

    forced = FakeExecutor()
    _run(tmp_path, forced, force=True)
    assert forced.ran == list(workbook_steps.STEPS) and forced.parameters["02_pretrain"]["resume"] is False

    changed = FakeExecutor()
    _run(tmp_path, changed, overrides={"eval.bootstrap": 50})
    assert changed.ran == ["03_probe", "04_geometry", "05_ablations"]


def test_failure_stops_and_next_run_continues(tmp_path):
    failing = FakeExecutor(fail_at="03_probe")
    with pytest.raises(wb.WorkbookError, match="03_probe"):
        _run(tmp_path, failing)
    assert failing.ran == ["01_data_prep", "02_pretrain", "03_probe"]  # 04 never started
    resumed = FakeExecutor()
    _run(tmp_path, resumed)
    assert resumed.ran == ["03_probe", "04_geometry", "05_ablations"]


def test_run_name_sets_the_folder(tmp_path):
    _run(tmp_path, FakeExecutor(), run_name="mine")
    assert load_params(tmp_path / "mine" / "params.yaml").run_name == "mine"


@pytest.mark.parametrize("sets, key", [(["train.nonsense=1"], "train.nonsense"),
                                       (["train.steps=many"], "train.steps"),
                                       (["model.hidden=-4"], "model.hidden")])
def test_bad_parameter_fails_before_any_notebook(tmp_path, capsys, sets, key):
    executor = FakeExecutor()
    with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
        _run(tmp_path, executor, overrides=parse_overrides(sets))
    assert executor.ran == [] and not (tmp_path / "smoke").exists()
    argv = ["run", str(SMOKE), "--outputs", str(tmp_path)] + [a for s in sets for a in ("--set", s)]
    assert wb.main(argv) == 2
    assert key in capsys.readouterr().err


def test_open_run_from_the_notebooks_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO / "notebooks")  # how JupyterLab starts a kernel for notebooks/01_*.ipynb
    params, run_dir = wb.open_run("parameters/smoke.yaml", str(tmp_path / "r"), {"train.steps": 7})
    assert params.train.steps == 7 and run_dir == tmp_path / "r" and run_dir.is_dir()
    with pytest.raises(FileNotFoundError, match="run notebook 01_data_prep first"):
        wb.require(run_dir, "data/blocks_train.npy", step="01_data_prep")


# ---------------------------------------------------------------- a real papermill run

def _tiny_notebooks(folder: Path, bodies: dict[str, str]) -> None:
    folder.mkdir()
    for step in workbook_steps.STEPS:
        nb = new_notebook(cells=[new_code_cell('params_file = ""\nrun_dir = None\noverrides = {}',
                                               metadata={"tags": ["parameters"]}),
                                 new_code_cell(bodies.get(step, "print('ok')"))])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, folder / f"{step}.ipynb")


def test_papermill_failure_names_error_and_partial_notebook(tmp_path):
    nbs = tmp_path / "nbs"
    _tiny_notebooks(nbs, {
        "01_data_prep": "import os, sys, pathlib\n"
                        "pathlib.Path(run_dir, 'kernel.txt')"
                        ".write_text(sys.executable + ' ' + os.environ['MPLBACKEND'])",
        "02_pretrain": "raise ValueError('boom in step two')",
    })
    lines = []
    with pytest.raises(wb.WorkbookError) as err:
        wb.run(SMOKE, outputs_dir=tmp_path / "out", notebooks_dir=nbs, echo=lines.append)
    run_dir = tmp_path / "out" / "smoke"
    assert "ValueError: boom in step two" in str(err.value)
    assert err.value.notebook == run_dir / "notebooks" / "02_pretrain.ipynb" and err.value.notebook.is_file()
    assert str(err.value.notebook) in str(err.value)
    # the kernel ran this interpreter, with inline figures, in the run folder's kernelspec
    executable, backend = (run_dir / "kernel.txt").read_text().split()
    assert Path(executable).resolve() == Path(sys.executable).resolve() and "inline" in backend
    assert (run_dir / "notebooks" / "01_data_prep.html").is_file()
    assert (run_dir / "notebooks" / "02_pretrain.html").is_file()  # partial notebooks are exported too
    assert not (run_dir / "notebooks" / "03_probe.ipynb").exists()
    assert any("02_pretrain: running" in s for s in lines)


single_thread = pytest.fixture(one_thread)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_pretrain_resumes_same_weights_and_moves_other_checkpoints_aside(tmp_path, capsys, single_thread):
    """Real (tiny) pre-training through the workbook: a non-weight key change resumes, a weight key
    change or --force moves the checkpoint aside with a message; no checkpoint file is ever deleted."""
    data, ckpt_dir = tiny_data(), tmp_path / "checkpoints" / "mlm"
    jobs.pretrain(tiny_params(train__steps=4), tmp_path, "mlm", 0, data)
    first = _files(ckpt_dir)
    assert "model.safetensors" in first and "state.pt" in first

    again = jobs.pretrain(tiny_params(train__steps=4, train__log_every=2), tmp_path, "mlm", 0, data)
    assert again["resumed_from_step"] == 4 and _files(ckpt_dir) == first
    assert not list(ckpt_dir.parent.glob("mlm.stale-*"))

    capsys.readouterr()
    other = jobs.pretrain(tiny_params(train__steps=4, model__hidden=16), tmp_path, "mlm", 0, data)
    message = capsys.readouterr().out
    (stale,) = ckpt_dir.parent.glob("mlm.stale-*")
    assert "model.hidden: 32 -> 16" in message and str(stale) in message
    assert other["resumed_from_step"] is None and other["params"]["model"]["hidden"] == 16
    kept = _files(stale)
    assert {k: v for k, v in kept.items() if k not in ("log.jsonl", "train_summary.json")
            and not k.startswith("snapshots/")} == first
    assert {"snapshots/step-0/snapshot.json", "snapshots/step-4/snapshot.json"} <= set(kept)  # its snapshots too
    assert (tmp_path / "logs" / "mlm.jsonl").is_file() and "log.jsonl" in kept  # the new run's log, the old one's

    jobs.pretrain(tiny_params(train__steps=4, model__hidden=16), tmp_path, "mlm", 0, data, resume=False)  # --force
    assert "--force" in capsys.readouterr().out
    assert len(list(ckpt_dir.parent.glob("mlm.stale-*"))) == 2 and _files(stale) == kept
    assert runs.model_name(load_params(SMOKE), "mlm", 0) == "mlm"
    assert runs.model_name(load_params(SMOKE, {"seeds": [0, 1]}), "mlm", 1) == "mlm-s1"


def test_dead_kernel_is_reported_like_a_failing_cell(tmp_path):
    nbs = tmp_path / "nbs"
    _tiny_notebooks(nbs, {"01_data_prep": "import os\nos._exit(1)"})  # the kernel process dies mid-cell
    with pytest.raises(wb.WorkbookError, match="01_data_prep") as err:
        wb.run(SMOKE, outputs_dir=tmp_path / "out", notebooks_dir=nbs, html=False, echo=lambda s: None)
    assert "DeadKernelError" in str(err.value) and "partly executed notebook" in str(err.value)


def test_parallel_pretraining_gives_the_runs_of_the_sequential_loop(tmp_path):
    """train.parallel_runs=2: the four (seed, objective) runs in two spawned single-thread processes
    give what one after the other gives (the same steps, the same losses up to the thread count's
    rounding), and every run's model and summary land in the run folder's layout."""
    from _train_helpers import tiny_data_dir

    summaries = {}
    for parallel in (1, 2):
        params = tiny_params(train__steps=6, train__checkpoint_every=3, train__eval_every=3, seeds=[0, 1],
                             train__parallel_runs=parallel)
        run_dir = tmp_path / f"p{parallel}"
        shutil.copytree(tiny_data_dir(), run_dir / "data")
        summaries[parallel] = jobs.pretrain_all(params, run_dir, echo=lambda _line: None)
        for name in ("hybrid-s0", "mlm-s0", "hybrid-s1", "mlm-s1"):
            assert (run_dir / "models" / name / "model.safetensors").is_file()
    assert list(summaries[1]) == list(summaries[2]) == ["hybrid-s0", "mlm-s0", "hybrid-s1", "mlm-s1"]
    for name, one in summaries[1].items():
        two = summaries[2][name]
        assert two["steps"] == one["steps"] == 6 and two["seed"] == one["seed"]
        for key in ("loss", "mlm_loss"):
            assert two["final"][key] == pytest.approx(one["final"][key], rel=1e-4), (name, key)
    assert summaries[1]["hybrid-s0"]["final"]["loss"] != summaries[1]["hybrid-s1"]["final"]["loss"]  # seeds differ


def test_each_step_reports_its_own_evaluation_progress(tmp_path):
    """03 evaluates into the run folder, 05 into <run>/ablations/: the console shows each step's units."""
    class NotingExecutor(FakeExecutor):
        def __call__(self, source, output, parameters, run_dir):
            super().__call__(source, output, parameters, run_dir)
            folder = {"03_probe": run_dir, "05_ablations": run_dir / "ablations"}.get(source.stem)
            if folder is not None:
                progress.note(folder, unit=f"{source.stem}-model/sst2", phase="done")

    out = io.StringIO()
    wb.run(SMOKE, outputs_dir=tmp_path, executor=NotingExecutor(), html=False, echo=lambda s: None,
           board=progress.Board(out, tty=False))
    done = [line for line in out.getvalue().splitlines() if line.startswith("evaluate ")]
    assert done == ["evaluate 03_probe-model/sst2: done (1/? units)",
                    "evaluate 05_ablations-model/sst2: done (1/? units)"]
