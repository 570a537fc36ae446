"""One workbook run per run folder: an OS file lock (the `filelock` library) on `<run>/.lock`.

The lock is taken before anything in the folder is written and held until the run ends; the OS releases it
when the process dies, however it dies. Next to it, `<run>/.lock.json` says who holds it (PID, host, start
time, command), so that a second run on the same folder is refused at once with a message naming the holder.
A `.lock.json` left behind by a run that no longer exists (a stale lock: its PID is dead, or the lock itself is
free) is taken over with a message.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

from filelock import FileLock, Timeout

LOCK_FILE, INFO_FILE = ".lock", ".lock.json"


class RunLocked(RuntimeError):
    """Another run holds the run folder's lock; the message names it."""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def _read(info: Path) -> dict:
    try:
        data = json.loads(info.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _holder(data: dict) -> str:
    if not data:
        return "a process that has not written its details yet"
    return (f"PID {data.get('pid', '?')} on {data.get('host', '?')}, started {data.get('started', '?')}"
            + (f" ({data['command']})" if data.get("command") else ""))


@contextlib.contextmanager
def run_lock(run_dir: Path, echo: Callable[[str], None] = print, wait_for_details: float = 2.0) -> Iterator[Path]:
    """Hold `run_dir`'s lock for the duration of the block; raise RunLocked at once when another run holds it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    info = run_dir / INFO_FILE
    lock = FileLock(run_dir / LOCK_FILE)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        # the holder writes its details right after taking the lock: give it a moment
        deadline = time.monotonic() + wait_for_details
        data = _read(info)
        while (not data or not pid_alive(int(data.get("pid", 0) or 0))) and time.monotonic() < deadline:
            time.sleep(0.1)
            data = _read(info)
        raise RunLocked(f"{run_dir} is in use by another run: {_holder(data)}. One run per folder: wait for it to "
                        f"finish (or stop it), or choose another folder with --run-name") from None
    try:
        previous = _read(info)
        if previous and previous.get("pid") != os.getpid():  # we hold the lock: whoever wrote this does not
            pid = int(previous.get("pid", 0) or 0)
            dead = previous.get("host") == socket.gethostname() and not pid_alive(pid)
            echo(f"taking over a stale lock of {run_dir}: {_holder(previous)} no longer holds it"
                 + (" (that process is gone)" if dead else ""))
        info.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                    "command": " ".join(sys.argv)}, indent=1))
        yield run_dir
    finally:
        with contextlib.suppress(Exception):  # never hide the run's own outcome behind the clean-up
            if _read(info).get("pid") == os.getpid():
                info.unlink()
        with contextlib.suppress(Exception):
            lock.release()
