"""Run the workbook notebooks (01–05) in order with papermill, reusing finished steps.

    python -m jepa_core.study.workbook run parameters/cpu.yaml [--run-name X] [--force] [--set key=value ...]

Parameters are validated (file + overrides) before any notebook starts, then written to
`outputs/<run_name>/params.yaml`; every notebook receives that file through its `parameters`
cell and validates it again. A finished step leaves a small done-marker holding a fingerprint
of the parameters it depends on (plus the notebook's source); a later invocation skips steps
whose marker matches, so an interrupted run continues from the first incomplete step and an
`eval`-only change re-runs only the analysis notebooks. `--force` re-runs everything.

Each executed notebook is saved to `<run>/notebooks/NN_*.ipynb` and exported to HTML next to
it; `<run>/report.html` gathers them all without their code (nbconvert `exclude_input`).
The notebooks call `open_run()` below first thing, so they also work opened by hand in
JupyterLab (from the project root or from `notebooks/`).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from jepa_core import progress
from jepa_core.config import NON_WEIGHT_KEYS, Params, ParamsError, load_params, parse_overrides, save_params
from jepa_core.runs import model_name

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS_DIR = PACKAGE_ROOT / "notebooks"
KERNEL_NAME = "jepa-core"

# The notebooks, in order, with the parameter keys each one's outputs depend on (besides the
# keys of the steps before it: a step's fingerprint chains the previous one's).
STEPS: dict[str, tuple[str, ...]] = {
    "01_data_prep": ("seeds", "data", "eval.wiki_sentences"),
    "02_pretrain": ("objectives", "model", "mask", "jepa", "train"),
    "03_probe": ("eval",),
    "04_geometry": (),
    # ablations and reference encoders (jepa_core/study/ablations.py): its own step, so that turning it on
    # re-runs only 05
    "05_ablations": ("ablations", "eval.reference_models"),
}
# Keys that sit in an earlier step's section but only a later step reads: left out of that section's
# fingerprint, so setting them re-runs only the later step (and adding them kept old fingerprints)
LATER_KEYS = ("eval.reference_models",)
# Keys left out of their section's fingerprint: LATER_KEYS, and the pre-training keys that cannot change
# the trained weights (config.NON_WEIGHT_KEYS: log/eval/checkpoint intervals, compile, loggers ...), so
# that changing those re-runs no pre-training. 02's outputs are the weights; its logs keep the intervals
# and loggers of the run that made them.
UNFINGERPRINTED_KEYS = (*LATER_KEYS, *NON_WEIGHT_KEYS)


class WorkbookError(RuntimeError):
    """A notebook failed; `notebook` is the partly executed copy."""

    def __init__(self, step: str, notebook: Path, message: str):
        super().__init__(f"step {step} failed: {message}\n  partly executed notebook: {notebook}")
        self.step, self.notebook = step, notebook


# ---------------------------------------------------------------- helpers for the notebooks

def project_root(start: Path | None = None) -> Path:
    """The nearest folder at or above `start` (default: cwd) holding `parameters/`; else cwd.

    Lets a notebook opened from `notebooks/` in JupyterLab find `parameters/` and `outputs/`."""
    start = (start or Path.cwd()).resolve()
    for d in (start, *start.parents):
        if (d / "parameters").is_dir():
            return d
    return start


def open_run(params_file: str, run_dir: str | None = None,
             overrides: Mapping[str, Any] | None = None) -> tuple[Params, Path]:
    """Validate the parameters and locate (create) the run folder. First call of every notebook."""
    path = Path(params_file)
    if not path.is_absolute() and not path.exists():
        path = project_root() / path
    params = load_params(path, overrides or {})
    out = Path(run_dir) if run_dir else project_root() / "outputs" / params.run_name
    out.mkdir(parents=True, exist_ok=True)
    return params, out


def require(run_dir: Path, *relative: str, step: str) -> None:
    """Fail with a clear message when an earlier step's artifact is missing."""
    missing = [r for r in relative if not (Path(run_dir) / r).exists()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)} missing in {run_dir}: run notebook {step} first "
                                f"(or `python -m jepa_core.study.workbook run <params>`)")


# ---------------------------------------------------------------- fingerprints and markers

def _pick(d: Mapping[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        d = d[part]
    return d


def _picked(d: Mapping[str, Any], key: str) -> Any:
    """The value of `key` for its step's fingerprint, without the UNFINGERPRINTED_KEYS inside it."""
    value = _pick(d, key)
    left_out = [k[len(key) + 1:] for k in UNFINGERPRINTED_KEYS if k.startswith(key + ".")]
    if not left_out:
        return value
    value = json.loads(json.dumps(value))  # a copy: params.to_dict() must stay as it is
    for rest in left_out:
        *parents, leaf = rest.split(".")
        node = value
        for part in parents:
            node = node[part]
        node.pop(leaf, None)
    return value


def step_fingerprints(params: Params, notebooks_dir: Path = NOTEBOOKS_DIR) -> dict[str, str]:
    """One fingerprint per step: its parameter keys (less UNFINGERPRINTED_KEYS) + its notebook source + the
    previous step's. Leaving NON_WEIGHT_KEYS out changed 02's (and so every later) fingerprint: runs made
    before that re-run their steps 02-05 once (the checkpoints are resumed, not retrained)."""
    d = params.to_dict()
    out, previous = {}, ""
    for step, keys in STEPS.items():
        source = (notebooks_dir / f"{step}.ipynb").read_bytes()
        picked = {k: _picked(d, k) for k in keys}
        blob = json.dumps([previous, picked], sort_keys=True).encode() + source
        previous = out[step] = hashlib.sha256(blob).hexdigest()[:16]
    return out


def _marker(run_dir: Path, step: str) -> Path:
    return run_dir / ".done" / f"{step}.json"


def plan(run_dir: Path, fingerprints: Mapping[str, str], force: bool = False) -> dict[str, bool]:
    """step -> True when it must run. A step is reused only if its marker matches its
    fingerprint, its executed notebook exists, and every step before it is reused too."""
    todo, rerun_rest = {}, force
    for step, fp in fingerprints.items():
        marker = _marker(run_dir, step)
        done = (marker.is_file() and (run_dir / "notebooks" / f"{step}.ipynb").is_file()
                and json.loads(marker.read_text()).get("fingerprint") == fp)
        rerun_rest = rerun_rest or not done
        todo[step] = rerun_rest
    return todo


# ---------------------------------------------------------------- execution

@contextlib.contextmanager
def _kernel_manager(run_dir: Path):
    """A kernel running THIS interpreter, from a kernelspec kept inside the run folder.

    Nothing is installed in the user's Jupyter paths, and a stale user-level `python3` spec
    cannot shadow the venv. MPLBACKEND is pinned to inline so figures land in the notebooks
    even when the caller exported MPLBACKEND=Agg (as the tests do); JEPA_HEADLESS tells the
    explorer that no one will interact with its widgets."""
    # deferred here and below: the notebook tooling (jupyter_client, papermill, nbconvert) is heavy to import
    # and `workbook --help`, a bad profile's error and the notebooks' own open_run never need it
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.utils import run_sync

    spec_dir = run_dir / ".kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": f"Python ({sys.prefix})", "language": "python",
            "env": {"MPLBACKEND": "module://matplotlib_inline.backend_inline",
                    "JEPA_HEADLESS": "1"}}  # explorer.py: render a static view, nobody can click
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    ksm = KernelSpecManager(kernel_dirs=[str(spec_dir.parent)])
    # IPC sockets (local files, short temp path: the socket path limit is ~100 chars) instead of
    # unencrypted TCP ports, which ipykernel warns about on every start.
    ipc_dir = Path(tempfile.mkdtemp(prefix="jepa-kernel-"))
    # async: nbclient notices a dead kernel (DeadKernelError) only through an async manager
    km = AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=ksm, transport="ipc", ip=str(ipc_dir / "k"))
    try:
        yield km
    finally:  # nbclient leaves a kernel it did not create running: stop it here
        if km.has_kernel:
            run_sync(km.shutdown_kernel)(now=True)
        shutil.rmtree(ipc_dir, ignore_errors=True)


def execute_notebook(source: Path, output: Path, parameters: dict[str, Any], run_dir: Path,
                     log_output: bool = False) -> None:
    """Execute one notebook with papermill; raise WorkbookError naming the failing cell."""
    import papermill as pm

    try:
        with _kernel_manager(run_dir) as km:
            pm.execute_notebook(str(source), str(output), parameters=parameters, kernel_name=KERNEL_NAME,
                                km=km, progress_bar=False, log_output=log_output)  # progress.Watcher reports instead
    except pm.PapermillExecutionError as exc:  # a cell raised
        tb = "\n".join(exc.traceback[-6:]) if exc.traceback else ""
        raise WorkbookError(source.stem, output, f"{exc.ename}: {exc.evalue}\n{_strip_ansi(tb)}") from None
    except Exception as exc:  # the kernel died (e.g. out of memory), failed to start, timed out, ...
        raise WorkbookError(source.stem, output, f"{type(exc).__name__}: {exc}") from exc


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def export_html(notebook: Path, html: Path, exclude_input: bool = False) -> None:
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=exclude_input, exclude_input_prompt=exclude_input,
                            exclude_output_prompt=exclude_input)
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
    html.write_text(body, encoding="utf-8")


def export_report(notebooks: Sequence[Path], html: Path) -> None:
    """All executed notebooks in one code-hidden HTML page (parameters cells dropped)."""
    import nbformat

    merged = nbformat.v4.new_notebook()
    for nb_path in notebooks:
        nb = nbformat.read(nb_path, as_version=4)
        merged.metadata = merged.metadata or nb.metadata
        merged.cells += [c for c in nb.cells
                         if not {"parameters", "injected-parameters"} & set(c.metadata.get("tags", []))]
    tmp = html.with_suffix(".ipynb.tmp")
    nbformat.write(merged, tmp)
    try:
        export_html(tmp, html, exclude_input=True)
    finally:
        tmp.unlink()


def _notebook_parameters(path: Path) -> set[str]:
    import papermill as pm

    return set(pm.inspect_notebook(str(path)))


@dataclass
class StepResult:
    step: str
    ran: bool
    seconds: float


Executor = Callable[[Path, Path, dict, Path], None]


def run(params_file: str | Path, run_name: str | None = None, overrides: Mapping[str, Any] | None = None,
        force: bool = False, outputs_dir: str | Path = "outputs", notebooks_dir: Path = NOTEBOOKS_DIR,
        executor: Executor | None = None, html: bool = True, log_output: bool = False,
        echo: Callable[[str], None] = print, board: progress.Board | None = None) -> list[StepResult]:
    """Validate parameters, then execute the notebooks in order into outputs/<run_name>/, showing live
    progress (`progress.Watcher` on `board`, default: stdout) and ending with the verdicts (`report_end`).

    `executor(source, output, parameters, run_dir)` runs one notebook (default: papermill); tests
    pass a fake one to check the reuse logic without starting kernels."""
    started = time.perf_counter()
    overrides = dict(overrides or {})
    if run_name is not None:
        overrides["run_name"] = run_name
    params = load_params(params_file, overrides)  # raises ParamsError before anything runs
    run_dir = (Path(outputs_dir) / params.run_name).resolve()
    (run_dir / "notebooks").mkdir(parents=True, exist_ok=True)
    params_path = run_dir / "params.yaml"
    save_params(params, params_path)
    notebooks_dir = Path(notebooks_dir)
    fingerprints = step_fingerprints(params, notebooks_dir)
    todo = plan(run_dir, fingerprints, force)
    if executor is None:
        def executor(src, out, nb_params, rd):
            execute_notebook(src, out, nb_params, rd, log_output=log_output)

    echo(f"run folder: {run_dir}")
    board = board or progress.Board(sys.stdout)
    runs = [model_name(params, o, s) for s in params.seeds for o in params.objectives]
    parallel = min(params.train.parallel_runs, len(runs))
    results = []
    for i, (step, must_run) in enumerate(todo.items(), 1):
        output = run_dir / "notebooks" / f"{step}.ipynb"
        if not must_run:
            echo(f"[{i}/{len(todo)}] {step}: reused (parameters unchanged; --force re-runs it)")
            results.append(StepResult(step, False, 0.0))
            continue
        echo(f"[{i}/{len(todo)}] {step}: running ...")
        if step == "02_pretrain":
            echo(f"[pretrain] plan: {len(runs)} run(s) ({', '.join(runs)}), {params.train.steps:,} steps each "
                 f"(train.budget: {params.train.budget}), {parallel} at a time (CPU); an estimate follows after "
                 f"the first {progress.ESTIMATE_STEPS} steps")
        eval_dir = run_dir
        if step == "05_ablations":  # its own pre-training runs (variants), of differing lengths
            # deferred: study.ablations imports torch, which this runner process never loads
            from jepa_core.study.ablations import STUDY_DIR, trained_names

            models, total, eval_dir = trained_names(params), None, run_dir / STUDY_DIR
        else:
            models, total = runs, params.train.steps if params.train.budget == "steps" else None
        watcher = progress.Watcher(run_dir, models, total, parallel, board, label=f"[{i}/{len(todo)}] {step}",
                                   eval_dir=eval_dir)
        _marker(run_dir, step).unlink(missing_ok=True)
        start = time.perf_counter()
        nb_params = {"params_file": str(params_path), "run_dir": str(run_dir), "overrides": {}}
        if "resume" in _notebook_parameters(notebooks_dir / f"{step}.ipynb"):
            nb_params["resume"] = not force  # --force: pre-train from scratch, not from checkpoints
        try:
            with watcher.running():
                executor(notebooks_dir / f"{step}.ipynb", output, nb_params, run_dir)
        except BaseException:
            report_failure(step, watcher, time.perf_counter() - start, echo)
            raise
        finally:
            if html and output.is_file():  # also for a failed notebook: the HTML shows where it stopped
                export_html(output, output.with_suffix(".html"))
        seconds = time.perf_counter() - start
        marker = _marker(run_dir, step)
        marker.parent.mkdir(exist_ok=True)
        marker.write_text(json.dumps({"fingerprint": fingerprints[step], "seconds": round(seconds, 1),
                                      "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}))
        echo(f"[{i}/{len(todo)}] {step}: done in {seconds:.0f} s")
        results.append(StepResult(step, True, seconds))
    if html and any(r.ran for r in results):
        export_report([run_dir / "notebooks" / f"{s}.ipynb" for s in todo], run_dir / "report.html")
    report_end(run_dir, time.perf_counter() - started, echo)
    return results


def report_failure(step: str, watcher: progress.Watcher, seconds: float, echo: Callable[[str], None]) -> None:
    """What was running when a step failed, how far it got, and how to continue."""
    try:
        lines = watcher.last_lines() or ["(none reported)"]
    except Exception as exc:  # never hide the step's own error behind a display error
        lines = [f"(unavailable: {type(exc).__name__}: {exc})"]
    echo(f"{step} stopped after {seconds:.0f} s; last progress:")
    for line in lines:
        echo(f"  {line}")
    echo("to resume: run the same command again; finished steps are reused and pre-training continues from "
         "its last checkpoint")


def report_end(run_dir: Path, seconds: float, echo: Callable[[str], None] = print) -> None:
    """The answer: summary.md's verdicts (summary.console_verdicts), its learning warning, collapse
    warnings, time, peak memory and where the summary and the report are."""
    from jepa_core.report import summary  # deferred: pandas, which the runner loads only at the end

    if (run_dir / "results" / "differences.csv").is_file():
        echo("verdicts (hybrid − MLM, 95% CI over seeds; rules and all rows in summary.md):")
        for line in summary.console_verdicts(run_dir):
            echo(f"  {line}")
        warning = summary.learning_warning(run_dir)
        if warning:
            echo("warning: " + warning.replace("**", "").replace("`", ""))
        for w in summary.run_context(run_dir)["collapse_warnings"]:
            echo(f"warning: {w}")
    memory = progress.peak_memory()
    echo(f"total {seconds / 60:.1f} min; peak memory (resident, per process): runner {memory['runner_gb']:.2f} GB, "
         f"largest finished child process (kernel or worker) {memory['largest_child_gb']:.2f} GB")
    echo(f"summary: {run_dir / 'summary.md'}")
    echo(f"report:  {run_dir / 'report.html'}")


# ---------------------------------------------------------------- CLI

def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jepa_core.study.workbook", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="execute the notebooks in order into outputs/<run_name>/")
    r.add_argument("params", help="parameter profile, e.g. parameters/cpu.yaml")
    r.add_argument("--run-name", help="run folder name (default: run_name in the profile)")
    r.add_argument("--force", action="store_true", help="re-run every step even if its outputs exist")
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override one parameter, e.g. --set train.steps=100 (repeatable)")
    r.add_argument("--outputs", default="outputs", help="parent folder of run folders (default: outputs)")
    r.add_argument("--no-html", action="store_true", help="skip the HTML exports")
    r.add_argument("--verbose", action="store_true", help="stream the notebooks' own output to the log")
    args = ap.parse_args(argv)
    if args.verbose:  # papermill streams cell output through its logger
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        run(args.params, run_name=args.run_name, overrides=parse_overrides(args.sets), force=args.force,
            outputs_dir=args.outputs, html=not args.no_html, log_output=args.verbose)
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except WorkbookError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: run the same command again to continue from the unfinished step", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
