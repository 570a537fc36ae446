"""Run the workbook notebooks (01–05) in order with papermill, reusing finished steps.

    python -m jepa_core.study.workbook run parameters/cpu.yaml [--run-name X] [--force] [--set key=value ...]

Parameters are validated (file + overrides) before any notebook starts, then written to
`outputs/<run_name>/params.yaml`; every notebook receives that file through its `parameters`
cell and validates it again. A finished step leaves a small done-marker holding a fingerprint
of the parameters it depends on (plus the notebook's source) and the inputs it read besides them
(`study.inputs`: the Wikipedia and GLUE sources with a content fingerprint, the analysis code); a
later invocation skips steps whose marker matches, so an interrupted run continues from the first
incomplete step and an `eval`-only change re-runs only the analysis notebooks; the console says why
each step re-runs. `--force` re-runs everything.

Reliability (docs/WORKBOOK.md, "Reliability"): one run per folder (`study.lock`); the configured GLUE
data is parsed before any notebook runs (a malformed file stops the run naming file and line; a task
without data is skipped, said on the console and at the top of summary.md); a failing step's own error
is never masked by the HTML export or other clean-up; redirected to a file, the log holds the runner's
progress lines only (no progress-bar frames from the kernels and their workers).

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
from jepa_core.config import (
    NON_WEIGHT_KEYS,
    WEIGHT_SECTIONS,
    Params,
    ParamsError,
    load_params,
    parse_overrides,
    save_params,
)
from jepa_core.runs import model_name
from jepa_core.study import inputs as step_inputs_module
from jepa_core.study.interrupts import RUNNER as INTERRUPTS
from jepa_core.study.interrupts import WorkbookInterrupted
from jepa_core.study.lock import RunLocked, run_lock

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


class DataError(RuntimeError):
    """The configured data cannot be used (a malformed GLUE file ...): found before any notebook runs."""


# the steps whose notebooks read GLUE (03 evaluates; 05 evaluates its variants with 03's protocol)
GLUE_STEPS = ("03_probe", "05_ablations")
NOT_RUN_YET = "not run yet"
OUT_OF_DATE = "> **Out of date:**"  # first words of the notice a stopped invocation puts on top of summary.md


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


def step_records(params: Params, notebooks_dir: Path = NOTEBOOKS_DIR) -> dict[str, dict[str, Any]]:
    """Per step: `fingerprint` (step_fingerprints), and what it hashes, kept in the done-marker so that a later
    invocation can say what changed: `parameters` (the step's own keys) and `notebook` (a hash of its source)."""
    d = params.to_dict()
    out, previous = {}, ""
    for step, keys in STEPS.items():
        source = (notebooks_dir / f"{step}.ipynb").read_bytes()
        picked = {k: _picked(d, k) for k in keys}
        blob = json.dumps([previous, picked], sort_keys=True).encode() + source
        previous = hashlib.sha256(blob).hexdigest()[:16]
        out[step] = {"fingerprint": previous, "parameters": picked,
                     "notebook": hashlib.sha256(source).hexdigest()[:16]}
    return out


def step_fingerprints(params: Params, notebooks_dir: Path = NOTEBOOKS_DIR) -> dict[str, str]:
    """One fingerprint per step: its parameter keys (less UNFINGERPRINTED_KEYS) + its notebook source + the
    previous step's. Leaving NON_WEIGHT_KEYS out changed 02's (and so every later) fingerprint: runs made
    before that re-run their steps 02-05 once (the checkpoints are resumed, not retrained). The data and
    code a step reads are not in it: they are compared separately (`plan_reasons`, study.inputs)."""
    return {step: r["fingerprint"] for step, r in step_records(params, notebooks_dir).items()}


def _marker(run_dir: Path, step: str) -> Path:
    return run_dir / ".done" / f"{step}.json"


def _read_marker(run_dir: Path, step: str) -> dict | None:
    try:
        data = json.loads(_marker(run_dir, step).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _short(v: Any) -> str:
    text = json.dumps(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _parameter_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    a, b = _flat(dict(old)), _flat(dict(new))
    keys = [k for k in dict.fromkeys([*b, *a]) if a.get(k, "(absent)") != b.get(k, "(absent)")]
    shown = [f"{k} ({_short(a.get(k, '(absent)'))} → {_short(b.get(k, '(absent)'))})" for k in keys[:4]]
    return ", ".join(shown) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")


def _legacy_wiki(run_dir: Path, entry: Mapping[str, Any]) -> str | None:
    """A marker written before inputs were recorded: compare the Wikipedia source with data/corpus.json (the
    source the data step actually read). The change as a phrase, or None when it matches or cannot be told."""
    try:
        corpus = json.loads((run_dir / "data" / "corpus.json").read_text())
    except (OSError, ValueError):
        return None
    value = str(entry.get("value", ""))
    if corpus.get("source") == "hub" or not corpus.get("path"):
        before, same = "the hub", value.startswith("hub ")
    else:
        path = Path(corpus["path"]).expanduser().resolve()
        before = str(path)
        same = ("gensim" in str(path)) if value == "gensim's embedded excerpt" else \
            value.partition("=")[2] == str(path)
    return None if same else f"Wikipedia changed ({before}, from data/corpus.json → {value})"


def _own_reason(run_dir: Path, step: str, record: Mapping[str, Any] | str,
                now: Mapping[str, Any] | None) -> str | None:
    """Why `step` cannot be reused on its own account (its marker, notebook, parameters, inputs), or None."""
    record = {"fingerprint": record} if isinstance(record, str) else record
    notebook = run_dir / "notebooks" / f"{step}.ipynb"
    if not _marker(run_dir, step).is_file():
        return "unfinished: no done-marker (stopped or failed last time)" if notebook.is_file() else NOT_RUN_YET
    marker = _read_marker(run_dir, step)
    if marker is None:
        return "its done-marker is unreadable"
    if not notebook.is_file():
        return f"its executed notebook {notebook.name} is missing"
    if marker.get("fingerprint") != record["fingerprint"]:
        if "parameters" in marker and "parameters" in record and marker["parameters"] != record["parameters"]:
            return f"parameters changed: {_parameter_changes(marker['parameters'], record['parameters'])}"
        if "notebook" in marker and "notebook" in record and marker["notebook"] != record["notebook"]:
            return f"notebook {step}.ipynb changed"
        return "parameters or notebook changed"
    if not now:
        return None
    if "inputs" not in marker:  # written before inputs were recorded
        if step == "01_data_prep":  # never re-train because of this change alone: compare with what 01 read
            return _legacy_wiki(run_dir, now.get("Wikipedia", {}))
        return "its done-marker predates the recording of data and code inputs (a one-time re-run)"
    changed = step_inputs_module.changes(marker["inputs"], dict(now))
    return "; ".join(changed) or None


def plan_reasons(run_dir: Path, records: Mapping[str, Mapping[str, Any] | str], force: bool = False,
                 inputs: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, str | None]:
    """step -> why it must run (None: reused). A step is reused only if its marker matches its fingerprint
    (`records`: step_records or step_fingerprints), its executed notebook exists, the inputs it read
    (`inputs`: study.inputs.step_inputs; None: not compared) are unchanged, and every step before it is
    reused too."""
    reasons, first = {}, None
    for step, record in records.items():
        why = "--force" if force else _own_reason(run_dir, step, record, (inputs or {}).get(step))
        if why is None and first is not None:
            why = f"runs after {first}"
        if why is not None and first is None:
            first = step
        reasons[step] = why
    return reasons


def plan(run_dir: Path, fingerprints: Mapping[str, Mapping[str, Any] | str], force: bool = False,
         inputs: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, bool]:
    """step -> True when it must run (`plan_reasons` says why)."""
    return {step: why is not None for step, why in plan_reasons(run_dir, fingerprints, force, inputs).items()}


def _write_marker(run_dir: Path, step: str, record: Mapping[str, Any], inputs: Mapping[str, Any] | None,
                  **extra: Any) -> None:
    marker = _marker(run_dir, step)
    marker.parent.mkdir(exist_ok=True)
    data = {"fingerprint": record["fingerprint"], **extra, "parameters": record.get("parameters"),
            "notebook": record.get("notebook")}
    if inputs is not None:
        data["inputs"] = dict(inputs)
    tmp = marker.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    tmp.replace(marker)  # a marker is whole or absent


def _upgrade_marker(run_dir: Path, step: str, record: Mapping[str, Any], inputs: Mapping[str, Any] | None) -> None:
    """A reused step whose marker predates the records of parameters and inputs gets them (same fingerprint)."""
    marker = _read_marker(run_dir, step) or {}
    if "parameters" in marker and ("inputs" in marker or inputs is None):
        return
    extra = {k: v for k, v in marker.items() if k in ("seconds", "finished")}
    _write_marker(run_dir, step, record, inputs, **extra)


# ---------------------------------------------------------------- data before any work

def grouped_reasons(skipped: Mapping[str, str]) -> str:
    """{task: why} as "sst2, mrpc: why; cola: other why" (tasks with the same reason together)."""
    by_reason: dict[str, list[str]] = {}
    for task, why in skipped.items():
        by_reason.setdefault(why, []).append(task)
    return "; ".join(f"{', '.join(tasks)}: {why}" for why, tasks in by_reason.items())


def check_data(params: Params, todo: Mapping[str, bool], echo: Callable[[str], None] = print) -> dict[str, str]:
    """Parse every configured GLUE split a step of this invocation will read, before any notebook runs.
    Raises DataError naming the file (and line) for data that is there but unusable; returns the tasks
    skipped for lack of data ({task: why}), said loudly on the console (and, by 03, at the top of summary.md)."""
    if not any(todo.get(step) for step in GLUE_STEPS) or not params.eval.tasks:
        return {}
    from jepa_core.data import glue  # deferred: pandas

    try:
        _, skipped = glue.check_tasks(list(params.eval.tasks), params.eval.glue_dir)
    except glue.GlueDataError as exc:
        raise DataError(f"GLUE data: {exc}\n  fix the file or remove it (a task without data is skipped, saying "
                        "so), then run the same command again; nothing was run") from None
    if skipped:
        echo(f"warning: {len(skipped)} of {len(params.eval.tasks)} GLUE task(s) have no data and are skipped: "
             + grouped_reasons(skipped))
        if "sst2" in skipped:
            echo("warning: SST-2 is the planned task of C1 and C5's headline: their verdicts say that it was not "
                 "evaluated (C1 is measured on held-out Wikipedia sentences)")
    return skipped


# ---------------------------------------------------------------- the data and parameters pre-training used

def _pretrain_data_file(run_dir: Path, step: str) -> Path:
    return run_dir / ".done" / f"{step}.data.json"


def _recorded_data(run_dir: Path, step: str) -> str | None:
    try:
        return json.loads(_pretrain_data_file(run_dir, step).read_text()).get("data")
    except (OSError, ValueError, AttributeError):
        return None


def _record_data(run_dir: Path, step: str, fingerprint: str | None) -> None:
    if fingerprint is None:
        return
    path = _pretrain_data_file(run_dir, step)
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"data": fingerprint}))


def _weight_values(d: Mapping[str, Any]) -> dict[str, Any]:
    flat = _flat({s: d.get(s, {}) for s in WEIGHT_SECTIONS})
    return {k: v for k, v in flat.items() if k not in NON_WEIGHT_KEYS}


def _weight_changes(run_dir: Path, params: Params) -> str | None:
    """The weight-changing parameters that differ from the previous invocation's params.yaml, as a phrase."""
    import yaml

    try:
        before = yaml.safe_load((run_dir / "params.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(before, dict):
        return None
    a, b = _weight_values(before), _weight_values(params.to_dict())
    keys = [k for k in dict.fromkeys([*b, *a]) if a.get(k, "(absent)") != b.get(k, "(absent)")]
    if not keys:
        return None
    shown = ", ".join(f"{k} ({_short(a.get(k, '(absent)'))} → {_short(b.get(k, '(absent)'))})" for k in keys[:4])
    return shown + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")


def write_params(params: Params, path: Path, finished: bool) -> None:
    """params.yaml with a first line saying whether the invocation that wrote it finished: until it has, the
    run folder's summary.md, results/ and report.html may still come from the parameters of an earlier one."""
    save_params(params, path)
    when = time.strftime("%Y-%m-%dT%H:%M:%S")
    head = (f"# parameters of the invocation finished {when}: every step's outputs were made with these\n"
            if finished else
            f"# parameters of the invocation started {when}, NOT FINISHED: until it is, summary.md, results/ and "
            "report.html may come\n# from an earlier invocation's parameters (.done/ lists the finished steps)\n")
    path.write_text(head + path.read_text(encoding="utf-8"), encoding="utf-8")


def _mark_summary_out_of_date(run_dir: Path, stopped_at: str) -> None:
    """Put a notice on top of an existing summary.md that this (stopped) invocation was going to re-write; 04
    re-writes the whole file, notice included, when it finishes."""
    summary = run_dir / "summary.md"
    try:
        text = summary.read_text(encoding="utf-8")
    except OSError:
        return
    if text.startswith(OUT_OF_DATE):
        return
    notice = (f"{OUT_OF_DATE} an invocation started {time.strftime('%Y-%m-%d %H:%M')} with other parameters or "
              f"inputs stopped at {stopped_at} before re-writing this summary, so its numbers come from an earlier "
              "invocation; run the same command again to bring it up to date (params.yaml holds the new "
              "parameters).\n\n")
    summary.write_text(notice + text, encoding="utf-8")


# ---------------------------------------------------------------- execution

# Set in the kernels (and so in the workers they spawn) when the runner's stdout is not a terminal: their
# progress bars would otherwise reach a redirected log as carriage-return frames (hundreds of KB per run)
# through the output streams the kernel processes inherit; the runner's own progress lines replace them.
QUIET_PROGRESS_ENV = {"TQDM_DISABLE": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
                      "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def quiet_progress(stream: Any = None) -> bool:
    """Whether the kernels' progress bars are turned off: the runner's stdout (or `stream`) is not a terminal."""
    stream = sys.stdout if stream is None else stream
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream
        return True


def kernel_env(quiet: bool | None = None) -> dict[str, str]:
    """The environment variables of the run's kernelspec (QUIET_PROGRESS_ENV when `quiet`, default quiet_progress())."""
    env = {"MPLBACKEND": "module://matplotlib_inline.backend_inline",
           "JEPA_HEADLESS": "1"}  # explorer.py: render a static view, nobody can click
    if quiet_progress() if quiet is None else quiet:
        env.update(QUIET_PROGRESS_ENV)
    return env


@contextlib.contextmanager
def _kernel_manager(run_dir: Path):
    """A kernel running THIS interpreter, from a kernelspec kept inside the run folder.

    Nothing is installed in the user's Jupyter paths, and a stale user-level `python3` spec
    cannot shadow the venv. MPLBACKEND is pinned to inline so figures land in the notebooks
    even when the caller exported MPLBACKEND=Agg (as the tests do); JEPA_HEADLESS tells the
    explorer that no one will interact with its widgets; `kernel_env` turns progress bars off
    when the runner's output goes to a file."""
    # deferred here and below: the notebook tooling (jupyter_client, papermill, nbconvert) is heavy to import
    # and `workbook --help`, a bad profile's error and the notebooks' own open_run never need it
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.utils import run_sync

    spec_dir = run_dir / ".kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": f"Python ({sys.prefix})", "language": "python", "env": kernel_env()}
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    ksm = KernelSpecManager(kernel_dirs=[str(spec_dir.parent)])
    # IPC sockets (local files, short temp path: the socket path limit is ~100 chars) instead of
    # unencrypted TCP ports, which ipykernel warns about on every start.
    ipc_dir = Path(tempfile.mkdtemp(prefix="jepa-kernel-"))
    # async: nbclient notices a dead kernel (DeadKernelError) only through an async manager
    km = AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=ksm, transport="ipc", ip=str(ipc_dir / "k"))
    failed = False
    try:
        with INTERRUPTS.forwarding_to(km):  # the runner's SIGINT / SIGTERM reach the kernel's process group
            yield km
    except BaseException:
        failed = True
        raise
    finally:  # nbclient leaves a kernel it did not create running: stop it here
        try:
            if km.has_kernel:
                run_sync(km.shutdown_kernel)(now=True)
        except Exception as exc:
            if not failed:  # with a failure in flight, the failure is the news: never mask it
                raise
            print(f"(after the error, stopping the kernel also failed: {type(exc).__name__}: {exc})", file=sys.stderr)
        finally:
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
        error = WorkbookError(source.stem, output, f"{exc.ename}: {exc.evalue}\n{_strip_ansi(tb)}")
        error.ename, error.evalue = exc.ename, exc.evalue  # the cell's exception (study.interrupts reads them)
        raise error from None
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
    try:
        nbformat.write(merged, tmp)
        export_html(tmp, html, exclude_input=True)
    finally:
        tmp.unlink(missing_ok=True)


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
    One run per folder: raises RunLocked at once while another run holds the folder (`study.lock`).

    `executor(source, output, parameters, run_dir)` runs one notebook (default: papermill); tests
    pass a fake one to check the reuse logic without starting kernels."""
    started = time.perf_counter()
    overrides = dict(overrides or {})
    if run_name is not None:
        overrides["run_name"] = run_name
    params = load_params(params_file, overrides)  # raises ParamsError before anything runs
    run_dir = (Path(outputs_dir) / params.run_name).resolve()
    # SIGINT / SIGTERM: forwarded to the running kernel, whose pre-training checkpoints (study.interrupts)
    with INTERRUPTS.installed(), run_lock(run_dir, echo):  # the lock: before anything in the folder is touched
        return _run_locked(params, run_dir, started, force, Path(notebooks_dir), executor, html, log_output, echo,
                           board)


def _run_locked(params: Params, run_dir: Path, started: float, force: bool, notebooks_dir: Path,
                executor: Executor | None, html: bool, log_output: bool, echo: Callable[[str], None],
                board: progress.Board | None) -> list[StepResult]:
    (run_dir / "notebooks").mkdir(parents=True, exist_ok=True)
    params_path = run_dir / "params.yaml"
    records = step_records(params, notebooks_dir)
    now_inputs = step_inputs_module.step_inputs(params)
    reasons = plan_reasons(run_dir, records, force, now_inputs)
    todo = {step: why is not None for step, why in reasons.items()}
    if executor is None:
        def executor(src, out, nb_params, rd):
            execute_notebook(src, out, nb_params, rd, log_output=log_output)

    echo(f"run folder: {run_dir}")
    check_data(params, todo, echo)  # raises DataError before any work
    weight_changes = _weight_changes(run_dir, params)  # against the previous invocation's params.yaml
    for step in ("02_pretrain", "05_ablations"):  # runs made before the record: the data on disk is theirs
        if _marker(run_dir, step).is_file() and _recorded_data(run_dir, step) is None:
            _record_data(run_dir, step, step_inputs_module.data_fingerprint(run_dir))
    for step, why in reasons.items():
        if why is None:
            _upgrade_marker(run_dir, step, records[step], now_inputs.get(step))
    write_params(params, params_path, finished=False)
    board = board or progress.Board(sys.stdout)
    runs = [model_name(params, o, s) for s in params.seeds for o in params.objectives]
    parallel = min(params.train.parallel_runs, len(runs))
    results = []
    for i, (step, must_run) in enumerate(todo.items(), 1):
        output = run_dir / "notebooks" / f"{step}.ipynb"
        if not must_run:
            echo(f"[{i}/{len(todo)}] {step}: reused (parameters and inputs unchanged; --force re-runs it)")
            results.append(StepResult(step, False, 0.0))
            continue
        if reasons[step] != NOT_RUN_YET:
            echo(f"[{i}/{len(todo)}] {step}: re-runs: {reasons[step]}")
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
            nb_params["resume"] = _resume(run_dir, step, force, weight_changes, f"[{i}/{len(todo)}] {step}", echo)
        failure: BaseException | None = None
        try:
            with watcher.running():
                executor(notebooks_dir / f"{step}.ipynb", output, nb_params, run_dir)
        except BaseException as exc:
            failure = INTERRUPTS.stopped(step, exc)  # after SIGINT / SIGTERM: WorkbookInterrupted
            report_failure(step, watcher, time.perf_counter() - start, echo)
        problems = []  # clean-up after a failure: reported after the failure, never instead of it
        if html and output.is_file():  # also for a failed notebook: the HTML shows where it stopped
            try:
                export_html(output, output.with_suffix(".html"))
            except Exception as exc:
                if failure is None:
                    raise WorkbookError(step, output, f"exporting the executed notebook to HTML failed: "
                                                      f"{type(exc).__name__}: {exc}") from exc
                problems.append(f"exporting {output.name} to HTML: {type(exc).__name__}: {exc}")
        if failure is not None:
            if todo.get("04_geometry"):  # summary.md was to be re-written: say that it was not
                try:
                    _mark_summary_out_of_date(run_dir, step)
                except Exception as exc:
                    problems.append(f"marking summary.md out of date: {type(exc).__name__}: {exc}")
            raise _with_cleanup_problems(failure, problems)
        seconds = time.perf_counter() - start
        _write_marker(run_dir, step, records[step], now_inputs.get(step), seconds=round(seconds, 1),
                      finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
        echo(f"[{i}/{len(todo)}] {step}: done in {seconds:.0f} s")
        results.append(StepResult(step, True, seconds))
        INTERRUPTS.raise_if_stopped(step)  # a signal that came as the step finished: stop before the next
    if html and any(r.ran for r in results):
        export_report([run_dir / "notebooks" / f"{s}.ipynb" for s in todo], run_dir / "report.html")
    write_params(params, params_path, finished=True)
    report_end(run_dir, time.perf_counter() - started, echo)
    return results


def _resume(run_dir: Path, step: str, force: bool, weight_changes: str | None, label: str,
            echo: Callable[[str], None]) -> bool:
    """The notebook's `resume`: False under --force, and when the data 01 prepared differs from the data this
    step's checkpoints were trained on (never resume those); else True (a checkpoint of other weight-changing
    parameters is still moved aside by the trainer, said here in advance). Records the data it trains on."""
    data = step_inputs_module.data_fingerprint(run_dir)
    recorded = _recorded_data(run_dir, step)
    resume = not force
    if resume and data is not None and recorded is not None and data != recorded:
        echo(f"{label}: the prepared data changed since its checkpoints were trained (data/ fingerprint {recorded} → "
             f"{data}): they are moved aside (checkpoints/<name>.stale-<time>/, nothing deleted) and pre-training "
             "starts from scratch")
        resume = False
    elif resume and weight_changes and step == "02_pretrain" and any(
            not progress.SET_ASIDE.match(c.name) for c in (run_dir / "checkpoints").glob("*") if c.is_dir()):
        echo(f"{label}: weight-changing parameters differ from the previous invocation's: {weight_changes}; "
             "checkpoints trained with other values are moved aside (checkpoints/<name>.stale-<time>/, nothing "
             "deleted) and those runs train from scratch")
    _record_data(run_dir, step, data)
    return resume


def _with_cleanup_problems(failure: BaseException, problems: list[str]) -> BaseException:
    """The failure, carrying the clean-up problems met after it (`cleanup_problems`, and as notes that a
    traceback prints after the error itself)."""
    if problems:
        failure.cleanup_problems = [*getattr(failure, "cleanup_problems", []), *problems]
        for problem in problems:
            if hasattr(failure, "add_note"):  # Python >= 3.11
                failure.add_note(f"after this error, clean-up also failed: {problem}")
    return failure


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
        context = summary.run_context(run_dir)
        for w in context["collapse_warnings"]:
            echo(f"warning: {w}")
        if context["skipped_tasks"]:  # also at the top of summary.md
            echo("warning: GLUE task(s) not evaluated (no data): " + grouped_reasons(context["skipped_tasks"]))
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
    except (WorkbookError, DataError, RunLocked) as exc:
        print(f"error: {exc}", file=sys.stderr)
        _print_cleanup_problems(exc)
        return 1
    except WorkbookInterrupted as exc:  # SIGINT / SIGTERM: what was saved, exit 130 / 143
        print(f"interrupted ({exc.signal_name}): {exc}", file=sys.stderr)
        _print_cleanup_problems(exc)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        print("interrupted: run the same command again to continue from the unfinished step", file=sys.stderr)
        _print_cleanup_problems(exc)
        return 130
    return 0


def _print_cleanup_problems(exc: BaseException) -> None:
    """Clean-up that failed after the error: printed after it (the error is the news)."""
    for problem in getattr(exc, "cleanup_problems", []):
        print(f"after this error, clean-up also failed: {problem}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
