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
import json
import logging
import sys
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
    add_set_option,
    load_params,
    parse_overrides,
    save_params,
)
from jepa_core.runs import model_name
from jepa_core.study import inputs as step_inputs_module
from jepa_core.study.interrupts import RUNNER as INTERRUPTS
from jepa_core.study.interrupts import WorkbookInterrupted
from jepa_core.study.lock import RunLocked, run_lock
from jepa_core.study.notebooks import (
    WorkbookError,
    execute_notebook,
    export_html,
    export_report,
    notebook_parameters,
)
from jepa_core.study.steps import (
    NOT_RUN_YET,
    NOTEBOOKS_DIR,
    flat_keys,
    marker_path,
    plan_reasons,
    short_value,
    step_records,
    upgrade_marker,
    write_marker,
)


class DataError(RuntimeError):
    """The configured data cannot be used (a malformed GLUE file ...): found before any notebook runs."""


# the steps whose notebooks read GLUE (03 evaluates; 05 evaluates its variants with 03's protocol)
GLUE_STEPS = ("03_probe", "05_ablations")
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
    flat = flat_keys({s: d.get(s, {}) for s in WEIGHT_SECTIONS})
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
    shown = ", ".join(f"{k} ({short_value(a.get(k, '(absent)'))} → {short_value(b.get(k, '(absent)'))})"
                      for k in keys[:4])
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


@dataclass
class StepResult:
    step: str
    ran: bool
    seconds: float


Executor = Callable[[Path, Path, dict, Path], None]


def _params_and_folder(params_file: str | Path, run_name: str | None, overrides: Mapping[str, Any] | None,
                       outputs_dir: str | Path) -> tuple[Params, Path]:
    """The validated parameters (ParamsError before anything runs) and the run folder they name."""
    overrides = dict(overrides or {})
    if run_name is not None:
        overrides["run_name"] = run_name
    params = load_params(params_file, overrides)
    return params, (Path(outputs_dir) / params.run_name).resolve()


def _main_runs(params: Params) -> list[str]:
    """02's pre-training runs, in the order it trains them (seed by seed, objectives within a seed)."""
    return [model_name(params, o, s) for s in params.seeds for o in params.objectives]


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
    params, run_dir = _params_and_folder(params_file, run_name, overrides, outputs_dir)
    # SIGINT / SIGTERM: forwarded to the running kernel, whose pre-training checkpoints (study.interrupts)
    with INTERRUPTS.installed(), run_lock(run_dir, echo):  # the lock: before anything in the folder is touched
        return _run_locked(params, run_dir, started, force, Path(notebooks_dir), executor, html, log_output, echo,
                           board)


def dry_run(params_file: str | Path, run_name: str | None = None, overrides: Mapping[str, Any] | None = None,
            force: bool = False, outputs_dir: str | Path = "outputs", notebooks_dir: Path = NOTEBOOKS_DIR,
            echo: Callable[[str], None] = print) -> dict[str, str | None]:
    """What `run` with these arguments would do, said and returned (step -> why it would run; None: reused),
    changing nothing: no lock, no marker, no params.yaml. A long run's reuse is worth knowing before it starts
    (a re-copied data folder used to re-run 13 encoders' evaluation)."""
    params, run_dir = _params_and_folder(params_file, run_name, overrides, outputs_dir)
    reasons = plan_reasons(run_dir, step_records(params, Path(notebooks_dir)), force,
                           step_inputs_module.step_inputs(params))
    echo(f"run folder: {run_dir} (dry run: nothing runs, nothing is written)")
    for i, (step, why) in enumerate(reasons.items(), 1):
        echo(f"[{i}/{len(reasons)}] {step}: " + ("would be reused" if why is None else f"would run: {why}"))
    if reasons.get("02_pretrain") is not None and not force:
        runs = set(_main_runs(params))
        kept = sorted(c.name for c in (run_dir / "checkpoints").glob("*") if c.is_dir() and c.name in runs)
        names = f"{len(kept)} checkpoint(s) ({', '.join(kept[:4])}{' …' if len(kept) > 4 else ''})"
        weight_changes = _weight_changes(run_dir, params)
        if kept and weight_changes:
            echo(f"  02_pretrain would move {names} aside (nothing deleted) and train from scratch: weight-changing "
                 f"parameters differ from the previous invocation's: {weight_changes}")
        elif kept:
            echo(f"  02_pretrain would resume {names} unless the data 01 prepares differs from theirs")
    return reasons


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
        if marker_path(run_dir, step).is_file() and _recorded_data(run_dir, step) is None:
            _record_data(run_dir, step, step_inputs_module.data_fingerprint(run_dir))
    for step, why in reasons.items():
        if why is None:
            upgrade_marker(run_dir, step, records[step], now_inputs.get(step))
    write_params(params, params_path, finished=False)
    board = board or progress.Board(sys.stdout)
    runs = _main_runs(params)
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
        marker_path(run_dir, step).unlink(missing_ok=True)
        start = time.perf_counter()
        nb_params = {"params_file": str(params_path), "run_dir": str(run_dir), "overrides": {}}
        if "resume" in notebook_parameters(notebooks_dir / f"{step}.ipynb"):
            nb_params["resume"] = _resume(run_dir, step, force, weight_changes, f"[{i}/{len(todo)}] {step}", echo)
        _execute_step(step, output, nb_params, run_dir, notebooks_dir, executor, watcher, html,
                      todo.get("04_geometry", False), start, echo)
        seconds = time.perf_counter() - start
        write_marker(run_dir, step, records[step], now_inputs.get(step), seconds=round(seconds, 1),
                      finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
        echo(f"[{i}/{len(todo)}] {step}: done in {seconds:.0f} s")
        results.append(StepResult(step, True, seconds))
        INTERRUPTS.raise_if_stopped(step)  # a signal that came as the step finished: stop before the next
    if html and any(r.ran for r in results):
        export_report([run_dir / "notebooks" / f"{s}.ipynb" for s in todo], run_dir / "report.html")
    write_params(params, params_path, finished=True)
    report_end(run_dir, time.perf_counter() - started, echo)
    return results


def _execute_step(step: str, output: Path, nb_params: dict[str, Any], run_dir: Path, notebooks_dir: Path,
                  executor: Executor, watcher: progress.Watcher, html: bool, summary_due: bool, start: float,
                  echo: Callable[[str], None]) -> None:
    """Execute one step's notebook and export it to HTML (also a failed one: the HTML shows where it
    stopped). On failure the step's own error is raised; clean-up problems are reported after it, never
    instead of it."""
    failure: BaseException | None = None
    try:
        with watcher.running():
            executor(notebooks_dir / f"{step}.ipynb", output, nb_params, run_dir)
    except BaseException as exc:
        failure = INTERRUPTS.stopped(step, exc)  # after SIGINT / SIGTERM: WorkbookInterrupted
        report_failure(step, watcher, time.perf_counter() - start, echo)
    problems = []
    if html and output.is_file():
        try:
            export_html(output, output.with_suffix(".html"))
        except Exception as exc:
            if failure is None:
                raise WorkbookError(step, output, f"exporting the executed notebook to HTML failed: "
                                                  f"{type(exc).__name__}: {exc}") from exc
            problems.append(f"exporting {output.name} to HTML: {type(exc).__name__}: {exc}")
    if failure is not None:
        if summary_due:  # summary.md was to be re-written: say that it was not
            try:
                _mark_summary_out_of_date(run_dir, step)
            except Exception as exc:
                problems.append(f"marking summary.md out of date: {type(exc).__name__}: {exc}")
        raise _with_cleanup_problems(failure, problems)


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
        if (run_dir / "ablations" / "results" / "evaluation.json").is_file():
            warning = summary.precondition_sentence(summary.variants_not_learned(run_dir))
            if warning:
                echo("warning: notebook 05: " + warning.replace("**", "").replace("`", ""))
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
    add_set_option(r, "train.steps=100")
    r.add_argument("--outputs", default="outputs", help="parent folder of run folders (default: outputs)")
    r.add_argument("--no-html", action="store_true", help="skip the HTML exports")
    r.add_argument("--verbose", action="store_true", help="stream the notebooks' own output to the log")
    r.add_argument("--dry-run", action="store_true", help="say which steps would run and why; change nothing")
    args = ap.parse_args(argv)
    if args.verbose:  # papermill streams cell output through its logger
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.dry_run:
            dry_run(args.params, run_name=args.run_name, overrides=parse_overrides(args.sets), force=args.force,
                    outputs_dir=args.outputs)
            return 0
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
