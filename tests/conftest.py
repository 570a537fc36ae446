"""Hermetic, offline test session: no hub calls, caches and matplotlib config in temp dirs."""
import contextlib
import io
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="hf_home_")
os.environ["MPLCONFIGDIR"] = tempfile.mkdtemp(prefix="mpl_")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


def _data_dir(var: str, what: str, ci_value: str) -> Path:
    """The folder an env var names, or a skip saying how CI sets it."""
    d = os.environ.get(var)
    if not d or not Path(d).is_dir():
        pytest.skip(f"{var} is not set to a {what} (CI sets it to {ci_value})")
    return Path(d)


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    return _data_dir("GLUE_DIR", "GLUE folder", "../shared/data/glue_data")


@pytest.fixture(scope="session")
def wiki_dir() -> Path:
    return _data_dir("WIKI_DIR", "WikiExtractor folder", "../shared/data/wikipedia")


@pytest.fixture(scope="session")
def smoke_chain(tmp_path_factory, glue_dir, wiki_dir):
    """One papermill chain (workbook.run, parameters/smoke.yaml) per session, a few minutes on 2 cores:
    (run folder, step results). test_chain.py checks it; test_browser.py shows its results in JupyterLab."""
    from jepa_core.study import workbook

    outputs = tmp_path_factory.mktemp("outputs")
    console = io.StringIO()  # not a terminal: the runner prints plain, throttled progress lines
    with contextlib.redirect_stdout(console):
        results = workbook.run(REPO / "parameters" / "smoke.yaml", outputs_dir=outputs)
    (outputs / "console.txt").write_text(console.getvalue())
    return outputs / "smoke", results
