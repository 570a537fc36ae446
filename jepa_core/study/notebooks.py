"""Executing one notebook with papermill in a kernel of this interpreter, and exporting notebooks to HTML.

The notebook tooling (jupyter_client, papermill, nbconvert) is imported inside the functions that use
it: it is heavy, and `workbook --help`, a bad profile's error and the notebooks' own `open_run` never
need it.
"""
from __future__ import annotations

import contextlib
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

from jepa_core.study.interrupts import RUNNER as INTERRUPTS

KERNEL_NAME = "jepa-core"


class WorkbookError(RuntimeError):
    """A notebook failed; `notebook` is the partly executed copy."""

    def __init__(self, step: str, notebook: Path, message: str):
        super().__init__(f"step {step} failed: {message}\n  partly executed notebook: {notebook}")
        self.step, self.notebook = step, notebook


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


def notebook_parameters(path: Path) -> set[str]:
    import papermill as pm

    return set(pm.inspect_notebook(str(path)))
