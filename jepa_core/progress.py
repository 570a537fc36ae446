"""Live progress for `python -m jepa_core.study.workbook run`: tail the run folder's JSONL files while a notebook runs.

Pre-training and evaluation run inside a papermill kernel, often in processes it spawns, so their
console output never reaches the runner. What does reach it are files: the trainer's per-step log
(`logs/<model>.jsonl`) and evaluation's progress file (`progress/evaluate.jsonl`, written by
`note()` below). `Watcher` tails both in a background thread of the runner and prints one line
per active model: on a terminal the lines are redrawn in place; otherwise (a log file, CI) a
model's line is printed when it changes, at most once every `interval` seconds, so a 40-minute
run writes a few hundred lines, not one per step.

The estimate of the whole pre-training is printed once per objective, after ESTIMATE_STEPS steps
observed in this invocation: seconds per step from the log's `elapsed_s`, times the planned
steps of every run of that objective, divided by the runs trained at once. It ignores the load
imbalance of parallel runs and the tail when fewer runs are left than slots, so it is a rough figure.
"""
from __future__ import annotations

import json
import re
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, TextIO

EVAL_PROGRESS = Path("progress") / "evaluate.jsonl"
# a checkpoint moved aside by the trainer (pretrain.checkpoint.set_aside): checkpoints/<name>.<tag>-<time>[-n]/
SET_ASIDE = re.compile(r"^(?P<name>.+)\.(?P<tag>stale|corrupt)-\d{8}-\d{6}(-\d+)?$")
ESTIMATE_STEPS = 20  # steps seen before the pre-training estimate: the first few include start-up costs


def note(run_dir: str | Path, **record: Any) -> None:
    """Append one progress record to run_dir/progress/evaluate.jsonl (from any process). One short
    write in append mode per record, so lines from concurrent workers do not interleave."""
    path = Path(run_dir) / EVAL_PROGRESS
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


class JsonlTail:
    """New complete JSON lines of a file that another process appends to. A trailing line without
    its newline is kept back until it is complete; a file that shrinks or is replaced (a resumed log
    rewritten, a stale one moved aside) is read again from its start; unparsable lines are skipped."""

    def __init__(self, path: str | Path, from_end: bool = False):
        self.path, self.offset, self.inode, self.partial = Path(path), 0, None, b""
        if from_end and self.path.exists():
            st = self.path.stat()
            self.offset, self.inode = st.st_size, st.st_ino

    def read(self) -> list[dict]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return []
        if st.st_ino != self.inode or st.st_size < self.offset:
            self.offset, self.inode, self.partial = 0, st.st_ino, b""
        if st.st_size == self.offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        self.offset += len(chunk)
        *lines, self.partial = (self.partial + chunk).split(b"\n")
        out = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                out.append(record)
        return out


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def _num(v: Any, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


class TrainingModel:
    """One pre-training run's latest state, from its log records."""

    def __init__(self, name: str, total_steps: int | None):
        self.name, self.total = name, total_steps
        self.last: dict | None = None
        self.first: dict | None = None  # first step record seen in this invocation: the rate's origin
        self.validation: dict | None = None
        self.error: str | None = None

    def update(self, record: dict) -> None:
        if "error" in record:
            self.error = str(record["error"])
        elif record.get("split") == "validation":
            self.validation = record
        elif "step" in record and "elapsed_s" in record:
            if self.first is None or record["step"] <= self.first["step"]:
                self.first = record
            self.last = record

    def seconds_per_step(self) -> float | None:
        if self.first is None or self.last is None or self.last["step"] <= self.first["step"]:
            return None
        return (self.last["elapsed_s"] - self.first["elapsed_s"]) / (self.last["step"] - self.first["step"])

    def steps_seen(self) -> int:
        return 0 if self.first is None else self.last["step"] - self.first["step"]

    def line(self) -> str:
        if self.error:
            return f"pretrain {self.name}: failed: {self.error.splitlines()[0]}"
        r = self.last
        if r is None:
            return f"pretrain {self.name}: starting"
        step = f"step {r['step']:,}" + (f"/{self.total:,}" if self.total else "")
        text = (f"pretrain {self.name}: {step}  loss {_num(r.get('loss'), '.3f')}  mlm {_num(r.get('mlm_loss'), '.3f')}"
                f"  λ {_num(r.get('lambda'), '.3f')}  {_num(r.get('tokens_per_s'), ',.0f')} tok/s")
        rate = self.seconds_per_step()
        if self.total and rate is not None:
            text += f"  ETA {_duration(rate * max(0, self.total - r['step']))}"
        if self.validation is not None:
            text += f"  (val mlm {_num(self.validation.get('mlm_loss'), '.3f')} at {self.validation.get('step')})"
        return text

    def done(self) -> bool:
        return self.error is not None or bool(self.total and self.last and self.last["step"] >= self.total)


def eval_line(record: dict) -> str:
    """One evaluation unit's latest progress record as a console line."""
    phase = record.get("phase")
    if phase == "encode":
        what = f"encoding {record.get('split')} ({_num(record.get('n'), ',')} texts)"
    elif phase == "pooling":
        what = f"pooling {record.get('pooling')} ({record.get('i')}/{record.get('of')}): probe and geometry"
    else:
        what = str(phase)
    return f"evaluate {record.get('unit')}: {what}"


class Board:
    """Prints progress lines. TTY: one line per key, redrawn in place below the events. Otherwise: a
    key's line is printed when it changed and `interval` seconds have passed since that key's last
    line (or when forced), so a log file gets a few lines per minute per model."""

    def __init__(self, stream: TextIO, tty: bool | None = None, interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        self.stream, self.interval, self.clock = stream, interval, clock
        self.tty = stream.isatty() if tty is None else tty
        self.lines: dict[str, str] = {}
        self.printed: dict[str, tuple[str, float]] = {}  # non-TTY: key -> (line, when)
        self.drawn = 0  # TTY: lines of the block currently on screen
        self.last_write = clock()  # when anything was last written (quiet_for)
        self.lock = threading.Lock()

    def quiet_for(self) -> float:
        """Seconds since anything was written."""
        return self.clock() - self.last_write

    def _clear(self) -> None:
        if self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F\x1b[J")
            self.drawn = 0

    def _draw(self) -> None:
        width = shutil.get_terminal_size().columns - 1  # a wrapped line would break the cursor-up count
        for line in self.lines.values():
            self.stream.write(line[:width] + "\x1b[K\n")
        self.drawn = len(self.lines)
        self.stream.flush()

    def event(self, text: str) -> None:
        """A message printed once (an estimate, a finished model), above the live block."""
        with self.lock:
            if self.tty:
                self._clear()
                self.stream.write(text + "\n")
                self._draw()
            else:
                self.stream.write(text + "\n")
                self.stream.flush()
            self.last_write = self.clock()

    def status(self, key: str, line: str, force: bool = False) -> None:
        with self.lock:
            self.lines[key] = line
            if self.tty:
                self._clear()
                self._draw()
                self.last_write = self.clock()
                return
            last, when = self.printed.get(key, (None, None))
            now = self.clock()
            if line != last and (force or when is None or now - when >= self.interval):
                self.stream.write(line + "\n")
                self.stream.flush()
                self.printed[key] = (line, now)
                self.last_write = now

    def remove(self, key: str) -> None:
        with self.lock:
            self.lines.pop(key, None)

    def finish(self, key: str) -> None:
        """A key's work is done: its last line stays on screen (TTY) or is printed if it was held back."""
        if self.tty:
            line = self.lines.get(key)
            self.remove(key)
            if line is not None:
                self.event(line)
        else:
            line = self.lines.get(key)
            if line is not None:
                self.status(key, line, force=True)
            self.remove(key)

    def flush(self) -> None:
        """Non-TTY: print every line that changed since it was last printed; TTY: leave the block as it is."""
        for key, line in list(self.lines.items()):
            self.status(key, line, force=True)


class Watcher:
    """Tails a run folder's training logs and evaluation progress; `poll()` once, or `running()` to poll
    every `period` seconds in a background thread while a notebook executes."""

    def __init__(self, run_dir: str | Path, models: list[str], total_steps: int | None, parallel: int,
                 board: Board, from_end: bool = True, label: str | None = None, eval_dir: str | Path | None = None):
        self.run_dir, self.board, self.parallel = Path(run_dir), board, max(1, parallel)
        # `label` (e.g. "[3/5] 03_probe"): printed with the elapsed time whenever the console has been
        # quiet for the board's interval (kernel start-up, a notebook's closing cells), so a log never
        # goes silent for long even where no model or evaluation unit reports
        self.label, self.started = label, board.clock()
        self.models = {name: TrainingModel(name, total_steps) for name in models}
        self.tails = {name: JsonlTail(self.run_dir / "logs" / f"{name}.jsonl", from_end) for name in models}
        # eval_dir: the folder whose evaluation this step reports (default the run; notebook 05 evaluates
        # into <run>/ablations/, which has its own progress file)
        self.eval_tail = JsonlTail(Path(eval_dir or run_dir) / EVAL_PROGRESS, from_end)
        self.eval_units: dict[str, dict] = {}
        self.eval_since: dict[str, float] = {}  # unit -> board clock when its latest record was read
        self.eval_total: int | None = None
        self.estimated: dict[str, float] = {}  # objective -> s/step
        self.finished: set[str] = set()
        self.broken = False  # a display error stopped the polling
        # checkpoints set aside during this step are said on the console (the trainer says it in the kernel,
        # whose output the runner does not show)
        self.checkpoints = self.run_dir / "checkpoints"
        self.set_aside = set(self._set_aside())

    def _set_aside(self) -> list[str]:
        try:
            return [p.name for p in self.checkpoints.iterdir() if SET_ASIDE.match(p.name)]
        except OSError:
            return []

    def _report_set_aside(self) -> None:
        for name in sorted(set(self._set_aside()) - self.set_aside):
            self.set_aside.add(name)
            m, where = SET_ASIDE.match(name), self.checkpoints / name
            if m["tag"] == "stale":
                self.board.event(f"[pretrain] {m['name']}: its previous checkpoint (other weight-changing parameters "
                                 f"or data, or --force) was moved aside to {where}, nothing deleted: trains from "
                                 "scratch")
            else:
                self.board.event(f"[pretrain] {m['name']}: a checkpoint that failed verification was moved aside to "
                                 f"{where}, nothing deleted")

    def poll(self) -> None:
        self._report_set_aside()
        for name, tail in self.tails.items():
            records = tail.read()
            if not records:
                continue
            model = self.models[name]
            for record in records:
                model.update(record)
            if name in self.finished:
                continue
            self.board.status(name, model.line())
            self._estimate(name)
            if model.done():
                self.board.finish(name)
                self.finished.add(name)
        for record in self.eval_tail.read():
            if record.get("phase") == "start":
                self.eval_total = record.get("units")
                self.eval_units.clear()
                continue
            unit = str(record.get("unit"))
            self.eval_units[unit] = record
            self.eval_since[unit] = self.board.clock()
            if record.get("phase") == "done":
                self.board.remove(unit)
                done = sum(r.get("phase") == "done" for r in self.eval_units.values())
                self.board.event(f"evaluate {unit}: done ({done}/{self.eval_total or '?'} units)")
        # A probe can run for tens of seconds without a new record: the time spent in the current phase
        # keeps each active unit's line changing, so a log file still gets a line every `interval`.
        now = self.board.clock()
        for unit, record in self.eval_units.items():
            if record.get("phase") != "done":
                self.board.status(unit, f"{eval_line(record)}  ({now - self.eval_since[unit]:.0f} s)")
        if self.label and self.board.quiet_for() >= self.board.interval:
            self.board.event(f"{self.label}: running ({_duration(self.board.clock() - self.started)})")

    def _estimate(self, name: str) -> None:
        """Once per objective: the whole pre-training's duration from this model's first steps."""
        objective = name.split("-s")[0]
        model = self.models[name]
        rate = model.seconds_per_step()
        if objective in self.estimated or rate is None or not model.total:
            return
        if model.steps_seen() < min(ESTIMATE_STEPS, model.total - 1):
            return
        self.estimated[objective] = rate
        self.board.event(f"[estimate] {objective}: {rate:.2f} s/step over {model.steps_seen()} steps → "
                         f"{_duration(rate * model.total)} per run of {model.total:,} steps")
        objectives = {m.name.split("-s")[0] for m in self.models.values()}
        if objectives <= set(self.estimated):
            work = sum(self.estimated[m.name.split("-s")[0]] * m.total for m in self.models.values())
            slots = min(self.parallel, len(self.models))
            self.board.event(f"[estimate] pre-training ≈ {_duration(work / slots)} for {len(self.models)} run(s), "
                             f"{slots} at a time (rough: ignores load imbalance and any runs already finished)")

    def last_lines(self) -> list[str]:
        """The latest line of every model and evaluation unit that reported anything."""
        out = [m.line() for m in self.models.values() if m.last is not None or m.error]
        out += [eval_line(r) for r in self.eval_units.values() if r.get("phase") != "done"]
        return out

    def safe_poll(self) -> bool:
        """poll(), but a display error is reported once and never breaks the run it reports on."""
        if self.broken:
            return False
        try:
            self.poll()
            return True
        except Exception as exc:
            self.broken = True
            self.board.event(f"(progress display stopped: {type(exc).__name__}: {exc})")
            return False

    def _loop(self, stop: threading.Event, period: float) -> None:
        while not stop.wait(period):
            if not self.safe_poll():
                return

    def running(self, period: float = 1.0) -> "_Running":
        return _Running(self, period)


class _Running:
    def __init__(self, watcher: Watcher, period: float):
        self.watcher, self.period, self.stop = watcher, period, threading.Event()
        self.thread = threading.Thread(target=watcher._loop, args=(self.stop, period), daemon=True)

    def __enter__(self) -> Watcher:
        self.thread.start()
        return self.watcher

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        if self.watcher.safe_poll():
            self.watcher.board.flush()


def peak_memory() -> dict[str, float]:
    """Peak resident memory in GB: of the runner itself, and of the largest single process among its
    finished descendants (kernels, and the training/evaluation workers they spawned and waited for).
    getrusage reports per-process maxima: processes that ran side by side may together have used
    more than either figure."""
    import resource  # deferred: POSIX only

    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return {"runner_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e9,
            "largest_child_gb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale / 1e9}

