"""Hermetic, offline test session: no hub calls, caches and matplotlib config in temp dirs."""
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


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    d = os.environ.get("GLUE_DIR")
    if not d or not Path(d).is_dir():
        pytest.skip("GLUE_DIR is not set to a GLUE folder (CI sets it to ../shared/data/glue_data)")
    return Path(d)


@pytest.fixture(scope="session")
def wiki_dir() -> Path:
    d = os.environ.get("WIKI_DIR")
    if not d or not Path(d).is_dir():
        pytest.skip("WIKI_DIR is not set to a WikiExtractor folder (CI sets it to ../shared/data/wikipedia)")
    return Path(d)
