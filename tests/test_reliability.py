"""Faults a user meets with the workbook (issue 24, part A), each on the smoke profile with fake or tiny notebooks:
step reuse keyed on the data and code a step reads, data errors before any work, one run per folder, the original
error never masked by clean-up, params.yaml that says whether its invocation finished, and a redirected log
without progress-bar frames."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from jepa_core.analysis import evaluate
from jepa_core.data import glue
from jepa_core.report import claims, summary
from jepa_core.study import inputs, lock
from jepa_core.study import notebooks as nbs
from jepa_core.study import steps as workbook_steps
from jepa_core.study import workbook as wb

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "parameters" / "smoke.yaml"
LATER = ["03_probe", "04_geometry", "05_ablations"]


@pytest.fixture(autouse=True)
def no_data_env(monkeypatch):
    """Every test starts offline without $GLUE_DIR / $WIKI_DIR (CI sets both) and sets what it needs."""
    monkeypatch.delenv("GLUE_DIR", raising=False)
    monkeypatch.delenv("WIKI_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


@pytest.fixture
def glue_dir(tmp_path):
    """A GLUE folder holding SST-2 only (the other configured tasks have no data)."""
    root = tmp_path / "glue"
    write(root / "SST-2/train.tsv", "sentence\tlabel\n" + "".join(f"good {i}\t1\nbad {i}\t0\n" for i in range(10)))
    write(root / "SST-2/dev.tsv", "sentence\tlabel\nfine\t1\nawful\t0\n")
    return root


class FakeExecutor:
    """Records the steps it runs and copies the notebook as the 'executed' one. 01 writes data/corpus.json whose
    fingerprint names the Wikipedia source (as the real data step would change it); `fail_at` raises there."""

    def __init__(self, fail_at: str | None = None, partial: bytes | None = None, error: str = "RuntimeError: boom"):
        self.ran, self.parameters, self.fail_at, self.partial, self.error = [], {}, fail_at, partial, error

    def __call__(self, source: Path, output: Path, parameters: dict, run_dir: Path):
        self.ran.append(source.stem)
        self.parameters[source.stem] = parameters
        shutil.copy(source, output)
        if source.stem == "01_data_prep":
            corpus = {"source": "wikiextractor", "path": os.environ.get("WIKI_DIR"),
                      "fingerprint": f"fp-{os.environ.get('WIKI_DIR')}"}
            write(run_dir / "data" / "corpus.json", json.dumps(corpus))
            write(run_dir / "data" / "blocks_train.npy", b"0" * 8)
        if source.stem == "02_pretrain":
            (run_dir / "checkpoints" / "hybrid").mkdir(parents=True, exist_ok=True)
        if source.stem == self.fail_at:
            if self.partial is not None:  # a notebook cut short, as a full disk leaves it
                output.write_bytes(self.partial)
            raise wb.WorkbookError(source.stem, output, self.error)


def run(tmp_path, executor, echo=None, **kw):
    lines = [] if echo is None else echo
    results = wb.run(SMOKE, outputs_dir=tmp_path / "out", executor=executor, html=kw.pop("html", False),
                     echo=lines.append, **kw)
    return results, lines


# ---------------------------------------------------------------- 1. reuse keyed on data and code

def test_glue_dir_set_after_an_offline_run_reruns_the_analysis_not_pretraining(tmp_path, monkeypatch, glue_dir):
    first = FakeExecutor()
    run(tmp_path, first)
    assert first.ran == list(workbook_steps.STEPS)

    monkeypatch.setenv("GLUE_DIR", str(glue_dir))
    again = FakeExecutor()
    _, lines = run(tmp_path, again)
    assert again.ran == LATER  # GLUE is read by 03 (and 05 after it): data and pre-training are reused
    assert f"[3/5] 03_probe: re-runs: GLUE_DIR changed (unset → {glue_dir.resolve()})" in lines
    assert "[4/5] 04_geometry: re-runs: runs after 03_probe" in lines
    assert any(line.startswith("[1/5] 01_data_prep: reused") for line in lines)
    assert any(line.startswith("[2/5] 02_pretrain: reused") for line in lines)

    same = FakeExecutor()
    run(tmp_path, same)
    assert same.ran == []

    copied = glue_dir.parent / "glue_copy"  # the same bytes copied afresh (new modification times)
    shutil.copytree(glue_dir, copied)
    shutil.rmtree(glue_dir)
    copied.rename(glue_dir)
    for f in glue_dir.rglob("*.tsv"):
        os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    recopied = FakeExecutor()
    _, lines = run(tmp_path, recopied)
    assert recopied.ran == [], lines

    tsv = glue_dir / "SST-2/dev.tsv"  # same size and time, other bytes: the hashes tell them apart
    st = tsv.stat()
    tsv.write_bytes(tsv.read_bytes().replace(b"\t1", b"\t0", 1))
    os.utime(tsv, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert tsv.stat().st_size == st.st_size
    flipped = FakeExecutor()
    _, lines = run(tmp_path, flipped)
    assert flipped.ran == LATER
    assert f"[3/5] 03_probe: re-runs: GLUE data in {glue_dir.resolve()} changed (1 modified: SST-2/dev.tsv)" in lines

    time.sleep(0.01)  # a fixed file: new size and modification time
    write(glue_dir / "SST-2/train.tsv", "sentence\tlabel\n" + "".join(f"nice {i}\t1\nugly {i}\t0\n" for i in range(10)))
    fixed = FakeExecutor()
    _, lines = run(tmp_path, fixed)
    assert fixed.ran == LATER
    assert f"[3/5] 03_probe: re-runs: GLUE data in {glue_dir.resolve()} changed (1 modified: SST-2/train.tsv)" in lines


def test_dry_run_says_what_would_run_and_why_and_changes_nothing(tmp_path, monkeypatch, glue_dir, capsys):
    run(tmp_path, FakeExecutor())
    run_dir = tmp_path / "out" / "smoke"
    (run_dir / "checkpoints" / "mlm").mkdir()
    (run_dir / "checkpoints" / "mlm.prev").mkdir()  # the previous checkpoint, kept while a new one is written
    (run_dir / "checkpoints" / "mlm-flops").mkdir()  # 05's variant: not 02's to resume
    monkeypatch.setenv("GLUE_DIR", str(glue_dir))
    before = {f: f.stat().st_mtime_ns for f in run_dir.rglob("*") if f.is_file()}
    lines = []
    reasons = wb.dry_run(SMOKE, outputs_dir=tmp_path / "out", echo=lines.append)
    assert [step for step, why in reasons.items() if why is not None] == LATER
    assert f"[3/5] 03_probe: would run: GLUE_DIR changed (unset → {glue_dir.resolve()})" in lines
    assert "[2/5] 02_pretrain: would be reused" in lines
    assert {f: f.stat().st_mtime_ns for f in run_dir.rglob("*") if f.is_file()} == before  # nothing written

    lines = []
    wb.dry_run(SMOKE, outputs_dir=tmp_path / "out", overrides={"train.lr": 0.002}, echo=lines.append)
    assert any(line.startswith("[2/5] 02_pretrain: would run: parameters changed: train.lr") for line in lines)
    assert "  02_pretrain would move 2 checkpoint(s) (hybrid, mlm) aside (nothing deleted) and train from scratch: " \
           "weight-changing parameters differ from the previous invocation's: train.lr (0.001 → 0.002)" in lines
    (run_dir / ".done" / "02_pretrain.json").unlink()  # as an interrupted pre-training leaves it
    lines = []
    wb.dry_run(SMOKE, outputs_dir=tmp_path / "out", echo=lines.append)
    assert "[2/5] 02_pretrain: would run: unfinished: no done-marker (stopped or failed last time)" in lines
    assert "  02_pretrain would resume 2 checkpoint(s) (hybrid, mlm) unless the data 01 prepares differs from " \
           "theirs" in lines
    assert wb.main(["run", str(SMOKE), "--outputs", str(tmp_path / "out"), "--dry-run"]) == 0
    assert "02_pretrain: would run: unfinished" in capsys.readouterr().out
    before.pop(run_dir / ".done" / "02_pretrain.json")
    assert {f: f.stat().st_mtime_ns for f in run_dir.rglob("*") if f.is_file()} == before


def test_wiki_dir_change_reruns_the_data_step_and_pretraining_from_scratch(tmp_path, monkeypatch):
    """A new Wikipedia source re-runs 01; 02 then trains from scratch (resume False): its checkpoints were trained
    on other data. Touching nothing re-runs nothing; a changed weight key says that checkpoints move aside."""
    run(tmp_path, FakeExecutor())
    wiki = tmp_path / "wiki"
    write(wiki / "AA/wiki_00", "<doc id=1>text</doc>\n")
    monkeypatch.setenv("WIKI_DIR", str(wiki))
    changed = FakeExecutor()
    _, lines = run(tmp_path, changed)
    assert changed.ran == list(workbook_steps.STEPS)
    assert f"[1/5] 01_data_prep: re-runs: Wikipedia changed (gensim's embedded excerpt → $WIKI_DIR={wiki.resolve()})" \
        in lines
    assert changed.parameters["02_pretrain"]["resume"] is False  # checkpoints of other data are never resumed
    assert any("02_pretrain: the prepared data changed since its checkpoints were trained" in line for line in lines)

    write(wiki / "AA/wiki_01", "<doc id=2>more</doc>\n")
    grown = FakeExecutor()
    _, lines = run(tmp_path, grown)
    assert grown.ran == list(workbook_steps.STEPS)
    assert "[1/5] 01_data_prep: re-runs: Wikipedia data changed (1 added: AA/wiki_01)" in lines
    assert grown.parameters["02_pretrain"]["resume"] is True  # the same prepared data (as the fake writes it)

    steps = FakeExecutor()
    _, lines = run(tmp_path, steps, overrides={"train.lr": 0.002})
    assert steps.ran == ["02_pretrain", *LATER] and steps.parameters["02_pretrain"]["resume"] is True
    assert any("02_pretrain: re-runs: parameters changed: train.lr (" in line for line in lines)
    assert any("weight-changing parameters differ from the previous invocation's: train.lr" in line and
               "moved aside" in line for line in lines)


def test_code_change_reruns_the_analysis_only(tmp_path, monkeypatch):
    package = tmp_path / "package"
    write(package / "analysis" / "x.py", "A = 1\n")
    write(package / "data" / "glue.py", "")
    write(package / "report" / "r.py", "")
    write(package / "study" / "ablations.py", "")
    write(package / "study" / "variants.py", "")
    monkeypatch.setattr(inputs, "PACKAGE", package)
    run(tmp_path, FakeExecutor())
    write(package / "analysis" / "x.py", "A = 2\n")
    again = FakeExecutor()
    _, lines = run(tmp_path, again)
    assert again.ran == LATER
    assert "[3/5] 03_probe: re-runs: code changed (jepa_core/analysis)" in lines
    write(package / "report" / "r.py", "# changed\n")
    report = FakeExecutor()
    run(tmp_path, report)
    assert report.ran == ["04_geometry", "05_ablations"]


def test_markers_written_before_inputs_were_recorded(tmp_path, monkeypatch):
    """Old markers (fingerprint only): the data step and pre-training are reused when the data step's recorded
    source (data/corpus.json) is today's; the analysis steps re-run once; a changed source re-runs 01."""
    run_dir = tmp_path / "out" / "smoke"
    fps = workbook_steps.step_fingerprints(wb.load_params(SMOKE))

    def old_run(corpus_path):
        shutil.rmtree(run_dir, ignore_errors=True)
        for step in workbook_steps.STEPS:
            write(run_dir / "notebooks" / f"{step}.ipynb", "{}")
            write(run_dir / ".done" / f"{step}.json", json.dumps({"fingerprint": fps[step]}))
        write(run_dir / "data" / "corpus.json", json.dumps({"source": "wiki_dump", "path": corpus_path}))

    old_run("/venv/site-packages/gensim/test/test_data/enwiki-latest.bz2")  # the embedded excerpt
    legacy = FakeExecutor()
    _, lines = run(tmp_path, legacy)
    assert legacy.ran == LATER
    assert any("03_probe: re-runs: its done-marker predates the recording" in line for line in lines)
    assert "inputs" in json.loads((run_dir / ".done" / "01_data_prep.json").read_text())  # upgraded in place
    again = FakeExecutor()
    run(tmp_path, again)
    assert again.ran == []

    old_run("/somewhere/else")
    moved = FakeExecutor()
    _, lines = run(tmp_path, moved)
    assert moved.ran == list(workbook_steps.STEPS)
    assert any("01_data_prep: re-runs: Wikipedia changed (/somewhere/else" in line for line in lines)


def test_input_changes_are_named():
    old = {"GLUE_DIR": {"value": "/g", "what": "GLUE data in /g", "content": "a", "summary": "2 file(s), 10 B",
                        "files": {"SST-2/dev.tsv": [5, 1], "SST-2/train.tsv": [5, 1]}}}
    new = {"GLUE_DIR": {"value": "/g", "what": "GLUE data in /g", "content": "b", "summary": "2 file(s), 12 B",
                        "files": {"SST-2/dev.tsv": [7, 2], "MRPC/dev.tsv": [5, 1]}}}
    assert inputs.changes(old, new) == ["GLUE data in /g changed (1 modified: SST-2/dev.tsv; 1 added: MRPC/dev.tsv; "
                                        "1 removed: SST-2/train.tsv)"]
    assert inputs.changes(old, old) == []
    unlisted = {"GLUE_DIR": {**new["GLUE_DIR"], "files": None}}
    assert inputs.changes(old, unlisted) == ["GLUE data in /g changed (2 file(s), 10 B → 2 file(s), 12 B)"]
    # hashed entries [size, mtime, sha]: new times alone are no change; a marker from before hashing ([size,
    # mtime]) compares by time
    hashed = {"GLUE_DIR": {**old["GLUE_DIR"],
                           "files": {"SST-2/dev.tsv": [5, 1, "aa"], "SST-2/train.tsv": [5, 1, "bb"]}}}
    touched = {"GLUE_DIR": {**old["GLUE_DIR"], "content": "c",
                            "files": {"SST-2/dev.tsv": [5, 9, "aa"], "SST-2/train.tsv": [5, 9, "bb"]}}}
    assert inputs.changes(hashed, touched) == []
    assert inputs.changes(old, touched) == ["GLUE data in /g changed (2 modified: SST-2/dev.tsv, SST-2/train.tsv)"]
    assert inputs.changes(old, {"GLUE_DIR": {**touched["GLUE_DIR"], "files": hashed["GLUE_DIR"]["files"]}}) == []


def test_folder_fingerprint_is_the_bytes_while_the_folder_is_small(tmp_path, monkeypatch):
    write(tmp_path / "a" / "x.tsv", "one\n")
    first = inputs.folder_content(tmp_path / "a")
    os.utime(tmp_path / "a" / "x.tsv", ns=(0, 10**9))
    assert inputs.folder_content(tmp_path / "a")["content"] == first["content"]
    assert first["files"]["x.tsv"][2] == hashlib.sha256(b"one\n").hexdigest()[:16]
    monkeypatch.setattr(inputs, "HASHED_BYTES", 3)  # too large to hash: names, sizes and times
    big = inputs.folder_content(tmp_path / "a")
    assert len(big["files"]["x.tsv"]) == 2 and big["content"] != first["content"]


# ---------------------------------------------------------------- 2. data errors are errors

BAD_TSV = {
    "malformed row": (b"sentence\tlabel\ngood\t1\ntoo\tmany\t1\n", r"train\.tsv:3: expected 2 tab-separated fields"),
    "bad header": (b"text\tscore\ngood\t1\n", r"train\.tsv:1: header has no column 'sentence'"),
    "empty": (b"", r"train\.tsv: empty file \(expected a header row naming the columns sentence, label"),
    "header only": (b"sentence\tlabel\n", r"train\.tsv: no examples after the header"),
    "compressed": (gzip.compress(b"sentence\tlabel\ngood\t1\n", mtime=0),
                   r"train\.tsv:1: not UTF-8 text \(byte 0x8b at offset 1\).*binary or compressed"),
    "NUL bytes": (b"sentence\tlabel\ngood\x00\t1\n", r"train\.tsv:2: not UTF-8 text \(a NUL byte at offset 19\)"),
}


@pytest.mark.parametrize("case", list(BAD_TSV))
def test_bad_glue_file_stops_the_run_before_any_work(tmp_path, monkeypatch, capsys, glue_dir, case):
    data, message = BAD_TSV[case]
    write(glue_dir / "SST-2/train.tsv", data)
    with pytest.raises(glue.GlueFormatError, match=message):
        glue.load_task("sst2", "train", glue_dir)
    monkeypatch.setenv("GLUE_DIR", str(glue_dir))
    executor = FakeExecutor()
    with pytest.raises(wb.DataError, match=message) as err:
        run(tmp_path, executor)
    assert str(glue_dir / "SST-2/train.tsv") in str(err.value) and "nothing was run" in str(err.value)
    assert executor.ran == [] and not (tmp_path / "out" / "smoke" / "params.yaml").exists()
    monkeypatch.setattr(wb, "execute_notebook", lambda *a, **k: pytest.fail("a notebook ran"))
    assert wb.main(["run", str(SMOKE), "--outputs", str(tmp_path / "out")]) == 1
    assert str(glue_dir / "SST-2/train.tsv") in capsys.readouterr().err


def test_missing_glue_folder_is_an_error_and_missing_tasks_are_skipped_loudly(tmp_path, monkeypatch, glue_dir):
    monkeypatch.setenv("GLUE_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(wb.DataError, match=r"\$GLUE_DIR=.*nowhere: the GLUE folder does not exist"):
        run(tmp_path, FakeExecutor())
    monkeypatch.setenv("GLUE_DIR", str(glue_dir))
    _, lines = run(tmp_path, FakeExecutor())
    warning = next(line for line in lines if line.startswith("warning: 4 of 5 GLUE task(s) have no data"))
    assert "mrpc, mnli, cola, stsb" not in warning  # each task's own folder is named
    assert "no train / dev split in" in warning and "MRPC" in warning
    assert not any("SST-2 is the planned task" in line for line in lines)


def test_offline_without_glue_skips_saying_so_and_names_the_claims(tmp_path):
    _, lines = run(tmp_path, FakeExecutor())
    assert any(line.startswith("warning: 5 of 5 GLUE task(s) have no data and are skipped: sst2, mrpc, mnli, cola, "
                               "stsb: no GLUE folder") for line in lines)
    assert any("SST-2 is the planned task of C1 and C5" in line for line in lines)


def test_evaluate_cli_bad_data_exits_nonzero_and_non_model_folder_is_named(tmp_path, monkeypatch, capsys, glue_dir):
    model = tmp_path / "model"
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        write(model / name, "{}")
    write(glue_dir / "SST-2/dev.tsv", "sentence\tlabel\nfine\tpositive\n")
    argv = ["--params", str(SMOKE), "--model", f"a={model}", "--out", str(tmp_path / "eval"),
            "--set", f"eval.glue_dir={glue_dir}", "--set", "eval.tasks=[sst2]"]
    assert evaluate.main(argv) == 1  # before any encoder is loaded
    err = capsys.readouterr().err
    assert f"{glue_dir / 'SST-2/dev.tsv'}:2: bad label" in err

    not_model = tmp_path / "checkpoint"
    write(not_model / "state.pt", b"")
    with pytest.raises(SystemExit) as exit_:
        evaluate.main([*argv[:2], "--model", f"a={not_model}", *argv[4:]])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "is not a model folder: no config.json / weights / tokenizer files" in err
    assert "training checkpoint" in err and "sentencepiece" not in err


def _claim_tables(tasks: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    diffs, metrics = [], []
    for task in tasks:
        for metric in ("uniformity", claims.HEADLINE_METRIC.get(task, "accuracy")):
            diffs.append(dict(task=task, pooling="mean", metric=metric, level="pooled", seed=float("nan"), n_seeds=3,
                              diff=-0.1, ci_low=-0.2, ci_high=-0.05, p=0.01, p_holm=0.02, sd_seeds=0.01, se=0.01))
            for objective in ("hybrid", "mlm"):
                metrics.append(dict(model=objective, objective=objective, seed=0, task=task, pooling="mean",
                                    metric=metric, value=0.8, ci_low=0.7, ci_high=0.9, chance=0.5))
    return pd.DataFrame(metrics), pd.DataFrame(diffs)


def test_headline_cells_never_move_silently():
    metrics, diffs = _claim_tables(["mrpc", "wiki"])
    c1, c5 = claims.claim_c1(metrics, diffs), claims.claim_c5(metrics, diffs)
    assert c1.caveat == "SST-2, its planned task, not evaluated: measured on wiki"
    assert c5.caveat == "SST-2, its planned headline task, not evaluated: headline on mrpc"
    metrics, diffs = _claim_tables(["sst2", "mrpc", "wiki"])
    assert claims.claim_c1(metrics, diffs).caveat is None and claims.claim_c5(metrics, diffs).caveat is None
    notice = summary.skipped_notice({"sst2": "no data here", "cola": "no data here"})
    assert notice[0].startswith("> **GLUE task(s) not evaluated (no data): sst2, cola.** sst2, cola: no data here")


# ---------------------------------------------------------------- 3. one run per folder

HOLD = """
import sys, time
from pathlib import Path
from jepa_core.study import workbook as wb

def slow(source, output, parameters, run_dir):
    Path(output).write_text("{}")
    if source.stem == "02_pretrain":
        Path(run_dir, "holding").write_text("")
        time.sleep(60)

wb.run(sys.argv[1], outputs_dir=sys.argv[2], executor=slow, html=False)
"""


def test_a_second_run_on_the_same_folder_is_refused_with_the_holders_pid(tmp_path, capsys):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(SMOKE), str(out)], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (out / "smoke" / "holding").exists():
            assert holder.poll() is None, holder.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        executor = FakeExecutor()
        with pytest.raises(lock.RunLocked, match=rf"in use by another run: PID {holder.pid} on .*, started 20"):
            run(tmp_path, executor)
        assert executor.ran == []
        assert wb.main(["run", str(SMOKE), "--outputs", str(out)]) == 1
        assert f"PID {holder.pid}" in capsys.readouterr().err
        logs = list((out / "smoke" / "logs").glob("*.jsonl")) if (out / "smoke" / "logs").exists() else []
        assert logs == []  # the refused run wrote nothing
    finally:
        holder.kill()
        holder.wait()
    # the holder died without cleaning up: its record is stale, the OS released its lock
    assert json.loads((out / "smoke" / ".lock.json").read_text())["pid"] == holder.pid
    _, lines = run(tmp_path, FakeExecutor())
    assert any(line.startswith(f"taking over a stale lock of {out / 'smoke'}: PID {holder.pid}") and
               "that process is gone" in line for line in lines)
    assert not (out / "smoke" / ".lock.json").exists()  # released at the end


def test_lock_is_released_when_the_run_fails(tmp_path):
    with pytest.raises(wb.WorkbookError):
        run(tmp_path, FakeExecutor(fail_at="02_pretrain"))
    _, lines = run(tmp_path, FakeExecutor())
    assert not any("stale lock" in line for line in lines)


# ---------------------------------------------------------------- 6. the original error is shown

def test_html_export_failing_after_a_failed_step_never_masks_its_error(tmp_path, capsys, monkeypatch):
    enospc = "OSError: [Errno 28] No space left on device"
    failing = FakeExecutor(fail_at="03_probe", partial=b'{"cells": [', error=enospc)
    with pytest.raises(wb.WorkbookError, match=r"No space left on device") as err:
        run(tmp_path, failing, html=True)
    assert err.value.step == "03_probe"
    (problem,) = err.value.cleanup_problems
    assert problem.startswith("exporting 03_probe.ipynb to HTML: ")

    monkeypatch.setattr(wb, "execute_notebook",
                        lambda src, out, params, rd, log_output=False: failing(src, out, params, rd))
    assert wb.main(["run", str(SMOKE), "--outputs", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.index("No space left on device") < err.index("after this error, clean-up also failed: exporting")


@pytest.mark.slow
def test_full_disk_shows_enospc(tmp_path):
    """A full disk during a step (a small tmpfs, mounted in a private mount namespace): the ENOSPC is the error
    shown, not the HTML export's failure on the notebook it cut short."""
    if not shutil.which("unshare"):
        pytest.skip("no `unshare` to mount a small tmpfs in a private mount namespace")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    script = tmp_path / "fill.py"
    script.write_text(textwrap.dedent("""
        import sys
        from pathlib import Path
        import nbformat
        from nbformat.v4 import new_code_cell, new_notebook
        from jepa_core.study import steps as workbook_steps
        from jepa_core.study import workbook as wb

        nbs, out = Path(sys.argv[1]), Path(sys.argv[2])
        nbs.mkdir()
        fill = (  # to the last byte (unbuffered): papermill's next save of this notebook fails, cut short
            "f = open(run_dir + '/fill', 'wb', buffering=0)\\n"
            "for size in (65536, 1):\\n"
            "    try:\\n"
            "        while True:\\n"
            "            f.write(b'0' * size)\\n"
            "    except OSError:\\n"
            "        pass\\n"
            "print('output ' * 50000)  # the notebook grows: its save needs space there is not\\n")
        for step in workbook_steps.STEPS:
            nb = new_notebook(cells=[new_code_cell('params_file = \\"\\"\\nrun_dir = None\\noverrides = {}',
                                                   metadata={"tags": ["parameters"]}),
                                     new_code_cell(fill if step == "03_probe" else "print('ok')")])
            nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
            nbformat.write(nb, nbs / f"{step}.ipynb")
        try:
            wb.run(sys.argv[3], outputs_dir=out, notebooks_dir=nbs)
        except wb.WorkbookError as exc:
            print(f"error: {exc}", file=sys.stderr)
            for problem in getattr(exc, "cleanup_problems", []):
                print(f"after this error, clean-up also failed: {problem}", file=sys.stderr)
            sys.exit(1)
    """))
    mount = f"mount -t tmpfs -o size=4m tmpfs {mnt}"
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", mount], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (unshare -rm: {probe.stderr.strip()})")
    cmd = f"{mount} && exec {sys.executable} {script} {tmp_path / 'nbs'} {mnt / 'out'} {SMOKE}"
    done = subprocess.run(["unshare", "-rm", "sh", "-c", cmd], capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    first_error = next(line for line in done.stderr.splitlines() if line.startswith("error: "))
    assert "03_probe" in first_error and "No space left on device" in first_error, done.stderr
    assert "NotJSONError" not in first_error
    if "clean-up also failed" in done.stderr:  # the export of the notebook the full disk cut short: after it
        assert done.stderr.index("No space left") < done.stderr.index("clean-up also failed")


# ---------------------------------------------------------------- 7. minor: params.yaml, quiet logs

def test_params_yaml_says_whether_its_invocation_finished_and_a_stopped_one_marks_the_summary(tmp_path):
    run(tmp_path, FakeExecutor())
    run_dir = tmp_path / "out" / "smoke"
    assert (run_dir / "params.yaml").read_text().startswith("# parameters of the invocation finished")
    (run_dir / "summary.md").write_text("# Summary of run `smoke`\n")
    with pytest.raises(wb.WorkbookError):
        run(tmp_path, FakeExecutor(fail_at="03_probe"), overrides={"eval.bootstrap": 50})
    head = (run_dir / "params.yaml").read_text().splitlines()[0]
    assert "NOT FINISHED" in head
    assert wb.load_params(run_dir / "params.yaml").eval.bootstrap == 50  # the comment does not disturb YAML
    text = (run_dir / "summary.md").read_text()
    assert text.startswith(wb.OUT_OF_DATE) and "stopped at 03_probe" in text and text.endswith("`smoke`\n")
    with pytest.raises(wb.WorkbookError):  # stopped again: one notice, not two
        run(tmp_path, FakeExecutor(fail_at="03_probe"), overrides={"eval.bootstrap": 50})
    assert (run_dir / "summary.md").read_text().count(wb.OUT_OF_DATE) == 1


def test_kernels_are_quiet_when_the_runner_writes_to_a_file(tmp_path):
    class Stream:
        def __init__(self, tty):
            self.tty = tty

        def isatty(self):
            return self.tty

    assert nbs.quiet_progress(Stream(False)) and not nbs.quiet_progress(Stream(True))
    assert nbs.kernel_env(quiet=True)["TQDM_DISABLE"] == "1" and "TQDM_DISABLE" not in nbs.kernel_env(quiet=False)


CHATTY = """
import sys
from pathlib import Path
import nbformat
from nbformat.v4 import new_code_cell, new_notebook
from jepa_core.study import notebooks as study_notebooks
from jepa_core.study import steps as workbook_steps
from jepa_core.study import workbook as wb

nbs, out, loud = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "loud"
body = '''
import subprocess, sys
from tqdm.auto import tqdm
for i in tqdm(range(20), mininterval=0):
    pass
subprocess.run([sys.executable, "-c", "from tqdm import tqdm\\\\nfor i in tqdm(range(20), mininterval=0): pass"],
               check=True)
'''
nbs.mkdir(exist_ok=True)
for step in workbook_steps.STEPS:
    nb = new_notebook(cells=[new_code_cell('params_file = ""\\nrun_dir = None\\noverrides = {}',
                                           metadata={"tags": ["parameters"]}),
                             new_code_cell(body if step == "01_data_prep" else "print('ok')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, nbs / f"{step}.ipynb")
if loud:  # the control: progress bars on, as before
    study_notebooks.quiet_progress = lambda *a: False
wb.run(sys.argv[4], outputs_dir=out, notebooks_dir=nbs, html=False)
"""


@pytest.mark.slow
def test_a_redirected_run_logs_no_progress_bar_frames(tmp_path):
    """stdout and stderr to a file, as `make run > log` or a batch scheduler: the log holds the runner's lines,
    no carriage-return frames from the kernels' workers (the control, with progress bars on, has them)."""
    logs = {}
    for mode in ("quiet", "loud"):
        log = tmp_path / f"{mode}.log"
        with open(log, "wb") as f:
            subprocess.run([sys.executable, "-c", CHATTY, str(tmp_path / "nbs"), str(tmp_path / mode), mode,
                            str(SMOKE)], stdout=f, stderr=subprocess.STDOUT, cwd=REPO, check=True, timeout=300)
        logs[mode] = log.read_bytes()
    assert b"\r" in logs["loud"]  # the test can see frames
    assert b"\r" not in logs["quiet"] and b"it/s" not in logs["quiet"]
    assert b"[1/5] 01_data_prep: done" in logs["quiet"]


def test_checkpoints_moved_aside_during_a_step_are_said_on_the_console(tmp_path):
    import io

    from jepa_core import progress

    (tmp_path / "checkpoints" / "mlm.stale-20260101-000000").mkdir(parents=True)  # before this step: not news
    out = io.StringIO()
    watcher = progress.Watcher(tmp_path, ["hybrid"], 10, 1, progress.Board(out, tty=False))
    (tmp_path / "checkpoints" / "hybrid.stale-20260102-030405").mkdir()
    (tmp_path / "checkpoints" / "hybrid").mkdir()
    watcher.poll()
    watcher.poll()
    lines = out.getvalue().splitlines()
    assert lines == [f"[pretrain] hybrid: its previous checkpoint (other weight-changing parameters or data, or "
                     f"--force) was moved aside to {tmp_path / 'checkpoints' / 'hybrid.stale-20260102-030405'}, "
                     "nothing deleted: trains from scratch"]


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("terminal", [False, True])
def test_the_training_bar_draws_frames_only_on_a_terminal(monkeypatch, tmp_path, terminal):
    """The pool workers of a redirected `make run` write to a file: the training bar must stay out of it
    (an explicit disable=False once overrode both tqdm's terminal check and the kernels' TQDM_DISABLE)."""
    from _train_helpers import tiny_data, tiny_params

    import jepa_core.pretrain.train as T

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    err = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    T.train(tiny_params(train__steps=3, train__warmup_steps=1), "mlm", tmp_path, data=tiny_data())
    assert ("\r" in err.getvalue() and "mlm" in err.getvalue()) == terminal, err.getvalue()[:500]
