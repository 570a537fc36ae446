"""The explorer in a real frontend: JupyterLab (127.0.0.1, random port, token) driven by Chromium
through Playwright. A notebook shows the explorer over the smoke chain's results (conftest.smoke_chain,
notebook 05's included) and a two-seed run derived from them; every dropdown is changed in turn and the
widget's table (and, where the selection changes what is plotted, its figure) must change, with no widget
or kernel error.

Screenshots go to $ARTIFACTS/browser (else the test's tmp folder); the path is printed (pytest -s).
Skipped with the reason when Chromium (/usr/bin/chromium; .ci/run installs it with apt-get) or the
playwright package is missing. Playwright drives the system Chromium: no `playwright install` download.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
try:
    import playwright.sync_api as pw
except ImportError:
    pw = None

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"no Chromium at {CHROMIUM} (apt: chromium)"),
              pytest.mark.skipif(pw is None, reason="the playwright package is not installed (requirements: dev)")]

REPO = Path(__file__).resolve().parents[1]
WAIT_S = 120  # how long a step may take before the test gives up (a cold kernel imports torch and sklearn)
KERNEL_IDLE = "window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'"
ERRORS = ("Error displaying widget", "cannot render this selection", "Traceback", "Kernel Restarting")


def _two_runs(smoke_run: Path, outputs: Path) -> None:
    """outputs/smoke: the chain's results (03's and 05's: ablations/results, results/layerwise.csv);
    outputs/smoke-2seeds: the same with a second seed whose embeddings are the first seed's plus noise and
    whose metric values are shifted (a reader sees spread)."""
    for run in ("smoke", "smoke-2seeds"):
        shutil.copytree(smoke_run / "results", outputs / run / "results")
        shutil.copytree(smoke_run / "ablations" / "results", outputs / run / "ablations" / "results")
    rng = np.random.default_rng(0)
    for two in (outputs / "smoke-2seeds" / "results", outputs / "smoke-2seeds" / "ablations" / "results"):
        m = pd.read_csv(two / "metrics.csv")
        trained = m[m["seed"].notna() & ~m["model"].isin(["majority", "random_init"])]
        pd.concat([m, trained.assign(seed=1, value=trained["value"] + 0.01)]).to_csv(two / "metrics.csv", index=False)
        for folder in (two / "embeddings").glob("*/*-s0"):
            target = folder.with_name(folder.name[:-1] + "1")
            target.mkdir()
            for npy in folder.glob("*.npy"):
                x = np.load(npy)
                np.save(target / npy.name, x + rng.normal(scale=x.std() + 1e-6, size=x.shape).astype(x.dtype))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def lab(tmp_path, smoke_chain):
    """A JupyterLab server over tmp_path with explorer.ipynb; yields (url, token, artifacts folder)."""
    smoke_run, _ = smoke_chain
    outputs = tmp_path / "outputs"
    _two_runs(smoke_run, outputs)
    source = f"from jepa_core.report.explorer import Explorer\n\nExplorer({str(outputs)!r}, run='smoke-2seeds').show()"
    notebook = {"cells": [{"cell_type": "code", "execution_count": None, "id": "explorer", "metadata": {},
                           "outputs": [], "source": source}],
                "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
                "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "explorer.ipynb").write_text(json.dumps(notebook))
    port, token = _free_port(), os.urandom(16).hex()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter_config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"), "OMP_NUM_THREADS": "1"}
    env.pop("JEPA_HEADLESS", None)  # the explorer must build its widgets, not the static view
    log = open(tmp_path / "jupyterlab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--ServerApp.token={token}", f"--ServerApp.root_dir={tmp_path}", "--LabApp.expose_app_in_browser=True",
         "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         *(["--allow-root"] if os.geteuid() == 0 else [])],  # CI containers run as root
        env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, \
                    f"JupyterLab did not start:\n{(tmp_path / 'jupyterlab.log').read_text()[-3000:]}"
                time.sleep(0.5)
        artifacts = Path(os.environ["ARTIFACTS"]) / "browser" if os.environ.get("ARTIFACTS") else tmp_path / "shots"
        artifacts.mkdir(parents=True, exist_ok=True)
        print(f"\nbrowser test screenshots: {artifacts}")
        yield url, token, artifacts
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def _view(page) -> tuple[str, str]:
    """(figure PNG source, table text) of the explorer's output area; empty while it redraws."""
    out = page.locator(".widget-output")
    img = out.locator("img")
    table = out.locator("table")
    return (img.first.get_attribute("src") or "" if img.count() else "",
            table.first.inner_text() if table.count() else "")


def _wait_for(page, condition, what: str, shot: Path):
    deadline = time.monotonic() + WAIT_S
    while True:
        text = page.locator("#main").inner_text()
        errors = [e for e in ERRORS if e in text]
        if errors or time.monotonic() > deadline:
            page.screenshot(path=str(shot), full_page=True)
            assert not errors, f"{what}: {errors} on the page (screenshot {shot})"
            pytest.fail(f"{what}: not seen within {WAIT_S} s (screenshot {shot})")
        view = _view(page)
        if condition(view) and page.evaluate(KERNEL_IDLE):  # idle: the redraw is over, not half-way
            return _view(page)
        page.wait_for_timeout(250)


def _dropdown(page, name: str):
    label = page.locator("label", has_text=re.compile(f"^{name}$"))
    return page.locator(".widget-dropdown", has=label).locator("select")


def test_every_dropdown_changes_the_view(lab):
    url, token, artifacts = lab
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.goto(f"{url}/lab/tree/explorer.ipynb?token={token}")
            page.wait_for_function("window.jupyterapp && window.jupyterapp.shell.currentWidget "
                                   "&& window.jupyterapp.shell.currentWidget.sessionContext "
                                   "&& window.jupyterapp.shell.currentWidget.sessionContext.session",
                                   timeout=WAIT_S * 1000)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            view = _wait_for(page, lambda v: v[0] and v[1], "the explorer's first view", artifacts / "00_start.png")
            page.screenshot(path=str(artifacts / "00_start.png"), full_page=True)
            # (dropdown, new option label or None = the first other option, does the figure change)
            steps = [("task", "wiki", True), ("pooling", None, True), ("metric", "(all)", False),
                     ("seed", "s1", True), ("compare", "smoke", False), ("run", "smoke", True),
                     ("models", "ablations", True), ("metric", "uniformity", False), ("view", "layer-wise", True),
                     ("view", "training", True)]
            for i, (name, label, figure_changes) in enumerate(steps, start=1):
                select = _dropdown(page, name)
                assert select.count() == 1, f"no {name} dropdown"
                current = select.evaluate("s => s.options[s.selectedIndex].text")
                options = select.locator("option").all_inner_texts()
                label = label or next(o for o in options if o != current)
                assert label in options and label != current, (name, label, options)
                select.select_option(label=label)
                before = view
                changed = (lambda v: v[0] and v[1] != before[1]  # noqa: E731 (one condition per step)
                           and (v[0] != before[0] or not figure_changes))
                view = _wait_for(page, changed, f"{name} → {label}", artifacts / f"{i:02d}_{name}.png")
                page.screenshot(path=str(artifacts / f"{i:02d}_{name}.png"), full_page=True)
                if name == "compare":  # the one-seed run beside seed 1 of the two-seed run: all its seeds
                    assert "smoke-2seeds" in view[1] and "smoke (no seed 1: all seeds)" in view[1]
                    assert view[1].count("hybrid-s") == 2, view[1]  # hybrid-s1 here, hybrid-s0 there
                if name == "run":  # compare reset to (none): this run's table alone
                    assert "smoke-2seeds" not in view[1] and "hybrid-s0" in view[1], view[1]
                if name == "models":  # 05's variants (parameters/smoke.yaml) beside the baseline
                    assert "hybrid-fixed0.5-s0" in view[1] and "mlm-flops-s0" in view[1], view[1]
                if label == "layer-wise":  # the metric per layer (0 = embeddings) of every encoder 05 measured
                    assert "layer" in view[1] and "hybrid-fixed0.5-s0" in view[1], view[1]
                if label == "training":  # the metric against pre-training steps (the snapshots)
                    assert "step" in view[1], view[1]
        finally:
            browser.close()
