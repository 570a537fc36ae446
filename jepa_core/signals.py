"""SIGINT and SIGTERM routed to a handler of ours for the length of a block: the trainer's `StopFlag`
(finish the step, then checkpoint) and the workbook runner's `Interrupts` (forward to the kernel)."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def install(handler: Callable[[int, Any], None]) -> dict[int, Any]:
    """Route SIGINT and SIGTERM to `handler`; returns the handlers it replaced. Python installs signal
    handlers only in the main thread: elsewhere nothing changes and the result is empty."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, handler) for s in STOP_SIGNALS}


def restore(previous: dict[int, Any]) -> None:
    for s, h in previous.items():
        signal.signal(s, h)


@contextmanager
def handled_by(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """`install` for the block; the previous handlers come back after it."""
    previous = install(handler)
    try:
        yield
    finally:
        restore(previous)
